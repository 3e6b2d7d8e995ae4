//! `pk-manager`: named queues over TCP with an auth key and leases on work
//! (the `multiprocessing.managers` lesson), and CPython's manager protocol.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::cmd::Out;
use crate::cmd::Result;
use crate::cmd::duration::DurationArg;
use crate::error::Error;
use crate::manager::Key;

mod serve;
mod shell;
mod work;

const AFTER_HELP: &str = "\
`pk-manager serve` runs the i*i lesson (N tasks, task i computes i*i) or,
with --queue, named bounded queues; `pk-manager work` connects, takes tasks
and puts results; `pk-manager put` and `get` use the queues from a shell.
See each subcommand's --help for its output lines and exit statuses.

The key: --authkey-file FILE (a regular file, not a symbolic link, of mode
0600 or stricter; one trailing newline is dropped; `-` reads it from stdin,
a pipe or a file as strict as FILE), or PK_AUTHKEY in the environment.
--authkey KEY works too, but
other local users can read a command line (ps, /proc/PID/cmdline): it warns.

Protocol: 4-byte big-endian length frames (at most 256 bytes before
authentication). The server sends a nonce, the worker its own, and the
server proves the key first with HMAC-SHA256 over both; only then does the
worker prove it (so a fake server learns nothing to guess the key with).
Tags are compared in constant time. Every later frame carries an
HMAC-SHA256 under a session key derived from both nonces, with a sequence
number: an altered, replayed or reordered frame closes the connection.
Leases: a worker silent for --lease while it holds a task loses it to
another worker; a result is counted once. Garbage or oversized frames close
only that connection. --python speaks CPython's manager protocol instead
(multiprocessing.connection framing, its HMAC challenge, and a pickle subset
that never runs code: see serve --help).

Examples:
  echo \"$(head -c 24 /dev/urandom | base64)\" > key; chmod 600 key
  pk-manager serve --authkey-file key --tasks 10 &    # listening on 127.0.0.1:40123
  pk-manager work --connect 127.0.0.1:40123 --authkey-file key
  pass show pk-key | pk-manager work -c 127.0.0.1:40123 --authkey-file -
  pk-manager serve --authkey-file key --queue tasks --queue results &
  PK_AUTHKEY=... pk-manager put -c HOST:PORT --queue tasks a b c
  PK_AUTHKEY=... pk-manager work -c HOST:PORT -- sh -c 'echo {} | rev'
  PK_AUTHKEY=... pk-manager get -c HOST:PORT --queue results -n 3";

/// Named queues over TCP with an auth key, leases on work.
#[derive(Debug, Parser)]
#[command(name = "pk-manager", version, after_help = AFTER_HELP)]
pub struct Args {
    /// serve, work, put or get.
    #[command(subcommand)]
    pub role: Role,

    /// Print only the results: serve's address and final results, work's
    /// `task <id> done` lines (put and get print only results anyway).
    /// Before or after the role's name.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// Where the key comes from.
#[derive(Debug, Clone, clap::Args)]
pub struct KeyArgs {
    /// The shared secret, 1-1024 bytes, on the command line (warns: other
    /// users can read it; prefer --authkey-file or PK_AUTHKEY).
    #[arg(short = 'k', long, value_name = "KEY", conflicts_with = "authkey_file")]
    pub authkey: Option<String>,
    /// Read the shared secret from FILE, `-` for stdin (refused when group
    /// or others may read it, or when it is a FIFO, directory, device or
    /// symbolic link). Without either flag, PK_AUTHKEY from the environment.
    #[arg(long, value_name = "FILE")]
    pub authkey_file: Option<PathBuf>,
}

impl KeyArgs {
    /// Whether the key comes from stdin (`--authkey-file -`).
    fn reads_stdin(&self) -> bool {
        self.authkey_file
            .as_ref()
            .is_some_and(|p| p.as_os_str() == "-")
    }
}

/// The key on stdin (`--authkey-file -`): all of it, one trailing newline
/// removed, as from a named file. A regular file behind stdin (`<key`) is
/// refused when group or others may read it, as a named one is; a pipe
/// (`pass show key | ...`) is read as it is.
fn key_from_stdin() -> Result<Key> {
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let fd = crate::cmd::stdin_for_input()?
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| Error::io("dup", "stdin", &e))?;
    let mut f = std::fs::File::from(fd);
    let meta = f.metadata().map_err(|e| Error::io("fstat", "stdin", &e))?;
    let mode = meta.mode() & 0o777;
    if meta.is_file() && mode & 0o077 != 0 {
        return Err(Error::new(
            crate::error::ErrorKind::PermissionDenied,
            "open",
            "stdin",
            format!("group or others may read it (mode {mode:04o}); chmod 600 it"),
        )
        .into());
    }
    let mut bytes = Vec::new();
    f.by_ref()
        .take(crate::manager::auth::MAX_KEY as u64 + 3)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("read", "stdin", &e))?;
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    Ok(Key::new(bytes, "--authkey-file -")?)
}

impl KeyArgs {
    /// The key: --authkey-file, --authkey (with a warning), or PK_AUTHKEY.
    pub fn load(&self) -> Result<Key> {
        if self.reads_stdin() {
            return key_from_stdin();
        }
        if let Some(path) = &self.authkey_file {
            return Ok(Key::from_file(path)?);
        }
        if let Some(k) = &self.authkey {
            crate::cmd::eprintln_one(
                "pk-manager",
                &"warning: --authkey puts the key where other local users can read it (ps, /proc/PID/cmdline); use --authkey-file FILE or PK_AUTHKEY",
            );
            return Ok(Key::new(k.as_bytes(), "--authkey")?);
        }
        if let Some(k) = std::env::var_os("PK_AUTHKEY") {
            use std::os::unix::ffi::OsStringExt;
            return Ok(Key::new(k.into_vec(), "PK_AUTHKEY")?);
        }
        Err(Error::invalid(
            "--authkey-file",
            "no key given: use --authkey-file FILE, PK_AUTHKEY=KEY in the environment, or --authkey KEY",
        )
        .into())
    }
}

/// The roles.
#[derive(Debug, Subcommand)]
pub enum Role {
    /// The master: the i*i lesson, or named queues with --queue.
    #[command(after_help = serve::HELP)]
    Serve(serve::ServeArgs),
    /// A worker: take tasks, run them (the lesson's i*i, or CMD), put results.
    #[command(after_help = work::HELP)]
    Work(work::WorkArgs),
    /// Put messages on a queue (each argument, or each line of stdin with -).
    #[command(after_help = shell::PUT_HELP)]
    Put(shell::PutArgs),
    /// Take messages from a queue and print them.
    #[command(after_help = shell::GET_HELP)]
    Get(shell::GetArgs),
}

/// Address flags every client shares.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// The server's address (host:port).
    #[arg(short, long, value_name = "HOST:PORT")]
    pub connect: String,
    /// Give up connecting or authenticating after DURATION.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub connect_timeout: DurationArg,
}

impl ConnectArgs {
    fn timeout(&self) -> Result<std::time::Duration> {
        if self.connect_timeout.0.is_zero() {
            return Err(Error::invalid("--connect-timeout", "must be more than 0").into());
        }
        Ok(self.connect_timeout.0)
    }
}

/// Run a role.
pub fn run(args: Args, out: &mut Out) -> Result<u8> {
    out.set_quiet(args.quiet);
    match args.role {
        Role::Serve(a) => serve::run(a, out),
        Role::Work(a) => work::run(a, out),
        Role::Put(a) => shell::put(a, out),
        Role::Get(a) => shell::get(a, out),
    }
}

/// This process's pid as the protocol carries it.
fn my_pid() -> u32 {
    u32::try_from(crate::process::getpid().as_raw()).unwrap_or(0)
}

/// The default bind address.
fn default_bind() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}
