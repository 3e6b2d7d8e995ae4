//! `pk-pipe`: the Pipe lesson. Many writers into one pipe with frames that
//! never tear (fan-in), a two-way socketpair (duplex), and what happens to a
//! writer whose reader has gone (sigpipe).

use clap::{Args as ClapArgs, Parser, Subcommand};
use nix::sys::signal::Signal;

use crate::cmd::Out;
use crate::cmd::Result;
use crate::cmd::exit;
use crate::error::{Error, ErrorKind};
use crate::pipe::{self, Duplex, FrameReader, PIPE_BUF, Reader, Writer};
use crate::process::{self, Child, Children, Fork};
use crate::status::Status;
use crate::{note, outln};

/// Bytes at the start of every fan-in payload: writer index and sequence
/// number, both u32 little-endian.
const STAMP: usize = 8;

/// The smallest fan-in frame: length prefix plus stamp.
const MIN_SIZE: usize = pipe::HEADER + STAMP;

const AFTER_HELP: &str = "\
A frame is a 4-byte length and its payload; a frame of at most PIPE_BUF
(4096) bytes is one write(2), which the kernel never interleaves with
another writer's.

Output of fan-in:
  parent <pid>: <N> writers x <M> frames of <B> bytes into one pipe
  frame from writer <i> (child <pid>): seq=<k> bytes=<B> whole
  frame from writer <i> (child <pid>): seq=<k> bytes=<n> TORN
  frame cut short at end of file: <reason>          (counted as torn)
  child <pid> exited, status=<K>
  frames=<total> torn=<T>                    (the summary; kept by --quiet)
Output of duplex:
  parent <pid>: <R> rounds over a socketpair with child <pid>
  child <pid> got 'ping <r>'
  parent <pid> got 'pong <r>'
  child <pid> got end of file
  child <pid> exited, status=0
  rounds=<R>                                  (the summary; kept by --quiet)
Output of sigpipe:
  parent <pid>: writer child <pid>, SIGPIPE <default|ignored> in the writer
  parent <pid> got frame 1, closing the read end
  child <pid> got EPIPE from write(2) after <n> frames   (--ignore)
  child <pid> killed by signal 13 (SIGPIPE)     or     child <pid> exited, status=1
  writer killed by SIGPIPE   or   writer got EPIPE      (the summary)

Exit status: 0 when the demo ran as the lesson says (fan-in: every frame
arrived whole; duplex: every reply matched; sigpipe: the writer ended by
SIGPIPE, or by EPIPE with --ignore); 2 for a bad flag; 65 when a frame was
torn, lost or wrong; 71 when a system call (fork, pipe2, socketpair) failed.

Examples:
  pk-pipe fan-in                          # 5 writers, one frame each
  pk-pipe fan-in --writers 16 --messages 10000 --size 4096 --quiet
  pk-pipe duplex --rounds 3
  pk-pipe sigpipe; pk-pipe sigpipe --ignore";

/// Pipes between processes: many writers to one reader, two-way socket
/// pairs, and SIGPIPE.
#[derive(Debug, Parser)]
#[command(name = "pk-pipe", version, after_help = AFTER_HELP, arg_required_else_help = false)]
pub struct Args {
    #[command(subcommand)]
    pub demo: Demo,

    /// Print only the results (summary and `child <pid> ...` status lines).
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// Which lesson to run.
#[derive(Debug, Subcommand)]
pub enum Demo {
    /// N writers send frames into one pipe; the parent checks each one.
    FanIn(FanIn),
    /// Ping-pong between parent and child over a socketpair.
    Duplex(DuplexArgs),
    /// The reader closes early: the writer gets SIGPIPE or EPIPE.
    Sigpipe(Sigpipe),
}

/// `fan-in` flags.
#[derive(Debug, ClapArgs)]
pub struct FanIn {
    /// Writer children (1-1024).
    #[arg(short = 'w', long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub writers: u32,

    /// Frames each writer sends (1-1000000).
    #[arg(short = 'm', long, value_name = "M", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub messages: u32,

    /// Bytes per frame on the wire, length prefix included: 12 to PIPE_BUF (4096).
    #[arg(short = 's', long, value_name = "B", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(MIN_SIZE as i64..=PIPE_BUF as i64))]
    pub size: u32,
}

/// `duplex` flags.
#[derive(Debug, ClapArgs)]
pub struct DuplexArgs {
    /// Ping-pong rounds (1-100000).
    #[arg(short = 'r', long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rounds: u32,
}

/// `sigpipe` flags.
#[derive(Debug, ClapArgs)]
pub struct Sigpipe {
    /// The writer keeps SIGPIPE ignored, so write(2) fails with EPIPE instead.
    #[arg(long)]
    pub ignore: bool,
}

/// Run the chosen pipe lesson.
pub fn run(args: Args, out: &mut Out) -> Result<u8> {
    out.set_quiet(args.quiet);
    match args.demo {
        Demo::FanIn(a) => fan_in(&a, out),
        Demo::Duplex(a) => duplex(&a, out),
        Demo::Sigpipe(a) => sigpipe(&a, out),
    }
}

// ---------------------------------------------------------------------------
// fan-in

/// A frame's sender as a line names it: `child <pid>`, or `unknown` for a
/// stamp that names no writer.
struct Sender(Option<nix::unistd::Pid>);

impl std::fmt::Display for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(pid) => write!(f, "child {pid}"),
            None => f.write_str("unknown"),
        }
    }
}

/// Writer `w`'s frame `seq`: the stamp (w, seq) repeated over the whole
/// payload, so a byte from any other frame shows as a mismatch. Built by
/// doubling copies, cheap even in a debug build.
fn make_payload(buf: &mut [u8], w: u32, seq: u32) {
    let mut stamp = [0u8; STAMP];
    stamp[..4].copy_from_slice(&w.to_le_bytes());
    stamp[4..].copy_from_slice(&seq.to_le_bytes());
    let first = buf.len().min(STAMP);
    buf[..first].copy_from_slice(&stamp[..first]);
    let mut filled = first;
    while filled < buf.len() {
        let n = filled.min(buf.len() - filled);
        buf.copy_within(..n, filled);
        filled += n;
    }
}

/// Check one received fan-in payload: its writer and sequence number (as
/// stamped, `u32::MAX` where missing), and whether it is whole: the right
/// length, a known writer, that writer's next sequence number, and every
/// byte as the writer made it. `expect` is scratch space of `payload_len`.
fn check_frame(
    buf: &[u8],
    payload_len: usize,
    next_seq: &[u32],
    expect: &mut [u8],
) -> (u32, u32, bool) {
    let stamp = |at: usize| {
        buf.get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map_or(u32::MAX, u32::from_le_bytes)
    };
    let (w, seq) = (stamp(0), stamp(4));
    let whole = buf.len() == payload_len && next_seq.get(w as usize) == Some(&seq) && {
        make_payload(expect, w, seq);
        buf == &expect[..]
    };
    (w, seq, whole)
}

fn fan_in(a: &FanIn, out: &mut Out) -> Result<u8> {
    let payload_len = a.size as usize - pipe::HEADER;
    let me = process::getpid();
    note!(
        out,
        "parent {me}: {} writers x {} frames of {} bytes into one pipe",
        a.writers,
        a.messages,
        a.size
    )?;
    let (reader, writer) = pipe::pipe()?;
    // On an error, dropping `children` kills and reaps the writers
    // already forked.
    let mut children = Children::new();
    for w in 0..a.writers {
        // The child never returns from fan_in_writer: it ends with _exit.
        match children.fork(format_args!("writer {} of {}", w + 1, a.writers))? {
            Fork::Child => fan_in_writer(reader, &writer, w, a.messages, payload_len),
            Fork::Parent(_) => {}
        }
    }
    // Only the children write: the reader sees end of file once they end.
    drop(writer);

    let mut next_seq = vec![0u32; a.writers as usize];
    let (mut frames, mut torn) = (0u64, 0u64);
    let mut expect = vec![0u8; payload_len];
    // The parent is the only reader: a buffered reader takes many frames
    // per read(2).
    let mut incoming = FrameReader::new(reader);
    loop {
        let buf = match incoming.recv() {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) if e.kind() == ErrorKind::BadData => {
                torn += 1;
                note!(out, "frame cut short at end of file: {e}")?;
                break;
            }
            Err(e) => return Err(e.into()),
        };
        frames += 1;
        let (w, seq, whole) = check_frame(buf, payload_len, &next_seq, &mut expect);
        // Formatted only when the line is printed (not under --quiet).
        let who = Sender(children.get(w as usize).map(Child::pid));
        if whole {
            next_seq[w as usize] += 1;
        } else {
            torn += 1;
        }
        note!(
            out,
            "frame from writer {} ({who}): seq={seq} bytes={} {}",
            // A torn frame's stamp can be anything, u32::MAX included.
            u64::from(w) + 1,
            buf.len() + pipe::HEADER,
            if whole { "whole" } else { "TORN" }
        )?;
    }
    drop(incoming);

    let mut failed = false;
    for child in &mut children {
        let status = child.wait()?;
        failed |= !status.success();
        outln!(out, "child {} {}", child.pid(), status)?;
    }
    outln!(out, "frames={frames} torn={torn}")?;
    let want = u64::from(a.writers) * u64::from(a.messages);
    if torn > 0 || frames != want {
        return Err(Error::data(
            "recv",
            "pipe",
            format!("{frames} of {want} frames arrived, {torn} torn"),
        )
        .into());
    }
    Ok(if failed { exit::OS_ERR } else { exit::OK })
}

/// A fan-in writer: send `m` stamped frames, then `_exit`. Never returns.
fn fan_in_writer(reader: Reader, writer: &Writer, w: u32, m: u32, len: usize) -> ! {
    // This copy of the read end would keep the pipe open for nobody.
    drop(reader);
    let mut payload = vec![0u8; len];
    for seq in 0..m {
        make_payload(&mut payload, w, seq);
        if writer.send(&payload).is_err() {
            process::_exit(i32::from(exit::OS_ERR));
        }
    }
    process::_exit(0)
}

// ---------------------------------------------------------------------------
// duplex

fn duplex(a: &DuplexArgs, out: &mut Out) -> Result<u8> {
    let me = process::getpid();
    let (parent_end, child_end) = pipe::duplex()?;
    // Fork: pk-pipe is single-threaded, and the child never returns from
    // duplex_child: it ends with _exit.
    let mut child = match crate::cmd::fork("duplex child")? {
        Fork::Child => duplex_child(parent_end, child_end, out),
        Fork::Parent(pid) => Child::new(pid),
    };
    drop(child_end);
    note!(
        out,
        "parent {me}: {} rounds over a socketpair with child {}",
        a.rounds,
        child.pid()
    )?;
    let mut replies = FrameReader::new(&parent_end);
    for r in 1..=a.rounds {
        parent_end.send(format!("ping {r}").as_bytes())?;
        let Some(reply) = replies.recv()? else {
            return Err(
                Error::data("recv", "socket", format!("end of file before 'pong {r}'")).into(),
            );
        };
        let text = String::from_utf8_lossy(reply);
        note!(out, "parent {me} got '{text}'")?;
        if text != format!("pong {r}") {
            return Err(Error::data(
                "recv",
                "socket",
                format!("expected 'pong {r}', got '{text}'"),
            )
            .into());
        }
    }
    // Closing our end is the child's end of file.
    drop(replies);
    drop(parent_end);
    let status = child.wait()?;
    outln!(out, "child {} {}", child.pid(), status)?;
    outln!(out, "rounds={}", a.rounds)?;
    Ok(if status.success() {
        exit::OK
    } else {
        exit::DATA
    })
}

/// The duplex child: answer every `ping N` with `pong N` until end of file.
fn duplex_child(parent_end: Duplex, end: Duplex, out: &mut Out) -> ! {
    drop(parent_end);
    let me = process::getpid();
    let mut incoming = FrameReader::new(&end);
    loop {
        let msg = match incoming.recv() {
            Ok(Some(msg)) => msg,
            Ok(None) => {
                let _ = note!(out, "child {me} got end of file");
                process::_exit(0);
            }
            Err(_) => process::_exit(i32::from(exit::OS_ERR)),
        };
        let text = String::from_utf8_lossy(msg).into_owned();
        let _ = note!(out, "child {me} got '{text}'");
        let reply = text.replacen("ping", "pong", 1);
        if end.send(reply.as_bytes()).is_err() {
            process::_exit(i32::from(exit::OS_ERR));
        }
    }
}

// ---------------------------------------------------------------------------
// sigpipe

/// The frame the sigpipe writer sends, over and over.
const SIGPIPE_FRAME: &[u8] = b"a frame nobody will read";

fn sigpipe(a: &Sigpipe, out: &mut Out) -> Result<u8> {
    let me = process::getpid();
    let (reader, writer) = pipe::pipe()?;
    // Fork: pk-pipe is single-threaded, and the child never returns from
    // sigpipe_writer: it ends with _exit (or dies of SIGPIPE).
    let mut child = match crate::cmd::fork("writer")? {
        Fork::Child => sigpipe_writer(reader, &writer, a.ignore, out),
        Fork::Parent(pid) => Child::new(pid),
    };
    drop(writer);
    note!(
        out,
        "parent {me}: writer child {}, SIGPIPE {} in the writer",
        child.pid(),
        if a.ignore { "ignored" } else { "default" }
    )?;
    if reader.recv()?.is_none() {
        return Err(Error::data("recv", "pipe", "the writer sent nothing").into());
    }
    note!(out, "parent {me} got frame 1, closing the read end")?;
    drop(reader);
    let status = child.wait()?;
    outln!(out, "child {} {}", child.pid(), status)?;
    let expected = match (a.ignore, status) {
        (false, Status::Signaled { signal, .. }) if signal == libc::SIGPIPE => {
            outln!(out, "writer killed by SIGPIPE")?;
            true
        }
        (true, Status::Exited(1)) => {
            outln!(out, "writer got EPIPE")?;
            true
        }
        _ => {
            outln!(out, "writer ended unexpectedly")?;
            false
        }
    };
    Ok(if expected { exit::OK } else { exit::DATA })
}

/// The sigpipe writer: send frames until the reader is gone. Dies of
/// SIGPIPE, or with `ignore` reports EPIPE and exits 1. Never returns.
fn sigpipe_writer(reader: Reader, writer: &Writer, ignore: bool, out: &mut Out) -> ! {
    drop(reader);
    let me = process::getpid();
    // Rust starts every program with SIGPIPE ignored and a forked child
    // inherits that: put the default back so the lesson's death can happen.
    let set = if ignore {
        process::ignore(Signal::SIGPIPE)
    } else {
        process::restore_default(Signal::SIGPIPE)
    };
    if set.is_err() {
        process::_exit(i32::from(exit::OS_ERR));
    }
    let mut sent: u64 = 0;
    loop {
        match writer.send(SIGPIPE_FRAME) {
            Ok(()) => sent += 1,
            Err(e) if e.errno() == Some(nix::errno::Errno::EPIPE) => {
                let _ = note!(
                    out,
                    "child {me} got EPIPE from write(2) after {sent} frames"
                );
                process::_exit(1);
            }
            Err(_) => process::_exit(i32::from(exit::OS_ERR)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_frames_pass_and_torn_ones_do_not() {
        let len = 100;
        let mut scratch = vec![0u8; len];
        let (mut a, mut b) = (vec![0u8; len], vec![0u8; len]);
        make_payload(&mut a, 0, 0);
        make_payload(&mut b, 1, 0);
        let next = [0u32, 0];
        assert_eq!(check_frame(&a, len, &next, &mut scratch), (0, 0, true));
        assert_eq!(check_frame(&b, len, &next, &mut scratch), (1, 0, true));
        // Half of one frame and half of another: torn.
        let mixed: Vec<u8> = a[..50].iter().chain(&b[50..]).copied().collect();
        assert!(!check_frame(&mixed, len, &next, &mut scratch).2);
        // A repeat, a skipped frame, a short one, an unknown writer.
        assert!(!check_frame(&a, len, &[1, 0], &mut scratch).2);
        assert!(!check_frame(&a[..60], len, &next, &mut scratch).2);
        assert_eq!(
            check_frame(&a[..3], len, &next, &mut scratch),
            (u32::MAX, u32::MAX, false)
        );
        let mut c = vec![0u8; len];
        make_payload(&mut c, 7, 0);
        assert!(!check_frame(&c, len, &next, &mut scratch).2);
    }
}
