//! `pk-spawn`: the subprocess lesson. Run a command with fork + dup2 +
//! exec, optionally feed its stdin and capture its output, and pass its exit
//! status through.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;

use crate::cmd::Out;
use crate::cmd::Result;
use crate::error::Error;
use crate::note;
use crate::spawn::{Spawn, Stdin};
use crate::status::Status;

const AFTER_HELP: &str = "\
Without --capture the command writes straight to our stdout and stderr
(subprocess.call); with --capture both go through pipes that one poll(2)
loop drains (Popen.communicate), and are printed afterwards, stdout first:
  stdout: <line>                  (one per line the command wrote)
  stderr: <line>
  captured stdout=<N> bytes, stderr=<M> bytes
A last line without a newline gets one. Then, in both modes:
  exit status <N>                                 (the command exited with N)
  exit status <128+N>: killed by signal <N> (<NAME>)
--quiet drops the `captured ...` and `exit status ...` lines, so without
--capture pk-spawn adds nothing to the command's output.

The child empties its signal mask and sets SIGPIPE back to its default
before exec (Rust programs ignore SIGPIPE, and exec keeps ignored signals
ignored); between fork and exec it makes only async-signal-safe calls.

Exit status: the command's own (N, or 128+N when signal N killed it);
127 when the command is not found, 126 when it is found but cannot be
executed (with one line: pk-spawn: execvp(CMD): <reason>); 2 for a bad
flag or a missing CMD; 66 when --input-file does not exist, 77 when it
cannot be read; 71 when a system call (pipe2, fork, poll, read) failed.

Examples:
  pk-spawn -- ls -l /tmp                          # subprocess.call
  pk-spawn --input 'hello' --capture -- tr a-z A-Z   # communicate(input)
  pk-spawn --input-file notes.txt -- wc -l
  pk-spawn -q -- false; echo $?                   # 1";

/// Run a command the POSIX way (fork, dup2, exec, poll), feed its stdin,
/// capture its output, and exit with its status.
#[derive(Debug, Parser)]
#[command(name = "pk-spawn", version, after_help = AFTER_HELP)]
pub struct Args {
    /// Write STR to the command's stdin, then end of file.
    #[arg(short, long, value_name = "STR", conflicts_with = "input_file")]
    pub input: Option<OsString>,

    /// Read file F and write its bytes to the command's stdin, then end of file.
    #[arg(short = 'f', long, value_name = "F")]
    pub input_file: Option<PathBuf>,

    /// Capture stdout and stderr through pipes and print them labelled.
    #[arg(short, long)]
    pub capture: bool,

    /// Print only the command's output (no `captured`/`exit status` lines).
    #[arg(short, long)]
    pub quiet: bool,

    /// The command and its arguments; CMD is looked up in PATH unless it contains a '/'.
    #[arg(value_name = "CMD", trailing_var_arg = true)]
    pub cmd: Vec<OsString>,
}

/// Run the command and pass its status through.
pub fn run(args: Args, out: &mut Out) -> Result<u8> {
    out.set_quiet(args.quiet);
    let stdin = if let Some(s) = args.input {
        Stdin::Bytes(s.into_encoded_bytes())
    } else if let Some(path) = &args.input_file {
        Stdin::Bytes(std::fs::read(path).map_err(|e| Error::io("read", path.display(), &e))?)
    } else {
        Stdin::Inherit
    };
    if args.cmd.is_empty() {
        return Err(Error::invalid(
            "CMD",
            "no command given: pk-spawn [OPTIONS] -- CMD [ARGS]... (see --help)",
        )
        .into());
    }
    let output = Spawn::new(&args.cmd)?
        .stdin(stdin)
        .capture(args.capture)
        .run()?;
    if args.capture {
        let mut text = Vec::with_capacity(output.stdout.len() + output.stderr.len() + 64);
        label(&mut text, "stdout: ", &output.stdout);
        label(&mut text, "stderr: ", &output.stderr);
        out.bytes(&text)?;
        note!(
            out,
            "captured stdout={} bytes, stderr={} bytes",
            output.stdout.len(),
            output.stderr.len()
        )?;
    }
    match output.status {
        Status::Exited(code) => note!(out, "exit status {code}")?,
        status => note!(out, "exit status {}: {}", status.shell_code(), status)?,
    }
    Ok(output.status.shell_code())
}

/// Append each line of `bytes` to `text` with `prefix` in front; a last line
/// without a newline gets one.
fn label(text: &mut Vec<u8>, prefix: &str, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    for line in body.split(|&b| b == b'\n') {
        text.extend_from_slice(prefix.as_bytes());
        text.extend_from_slice(line);
        text.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_every_line() {
        let mut t = Vec::new();
        label(&mut t, "o: ", b"a\n\nb");
        assert_eq!(t, b"o: a\no: \no: b\n");
        let mut t = Vec::new();
        label(&mut t, "o: ", b"a\n");
        assert_eq!(t, b"o: a\n");
        let mut t = Vec::new();
        label(&mut t, "o: ", b"");
        assert!(t.is_empty());
    }
}
