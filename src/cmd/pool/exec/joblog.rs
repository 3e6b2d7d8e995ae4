//! `--joblog FILE`: one tab-separated line per job as it ends, under GNU
//! parallel's header, so tools that read parallel's joblog read ours:
//!
//! `Seq Host Starttime JobRuntime Send Receive Exitval Signal Command`
//!
//! Starttime is seconds since the epoch and JobRuntime seconds, both with
//! three decimals; Send is the bytes sent to a remote host for the job,
//! Receive the bytes of its stdout; Exitval and Signal are parallel's: a
//! job killed by signal N has Exitval 0 and Signal N, one that ran out of
//! time Exitval -1; a command that could not run has 126 or 127. Host is
//! `:` for this machine. Each line is one write(2), so `tail -f` never
//! sees half a line.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::wire::How;
use crate::error::{Error, Result};

pub const HEADER: &str =
    "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n";

/// An open joblog.
#[derive(Debug)]
pub struct Joblog {
    file: File,
    name: String,
    /// `--joblog -`: a copy of standard output.
    stdout: bool,
}

/// A regular file the items are read from, known by its device and inode
/// (see [`Joblog::create`]).
#[derive(Debug)]
pub struct InputFile {
    pub name: String,
    pub dev: libc::dev_t,
    pub ino: libc::ino_t,
}

impl InputFile {
    /// `fd`, if it is a regular file (a pipe or a terminal cannot be
    /// emptied by a joblog).
    pub fn of(name: &str, fd: std::os::fd::BorrowedFd<'_>) -> Option<InputFile> {
        use nix::sys::stat::SFlag;
        let st = nix::sys::stat::fstat(fd).ok()?;
        let regular = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
        regular.then(|| InputFile {
            name: name.to_string(),
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }
}

/// One finished job, as the joblog records it.
#[derive(Debug)]
pub struct Entry<'a> {
    pub seq: u64,
    pub host: &'a str,
    pub start: SystemTime,
    pub runtime: Duration,
    pub send: u64,
    pub receive: u64,
    pub how: How,
    pub timed_out: bool,
    pub command: &'a [u8],
}

impl Joblog {
    /// Open the joblog `path` names, as GNU parallel does: `-` is standard
    /// output, `+FILE` appends to FILE (the header only where it is
    /// empty), and any other FILE is created or emptied. The file gets the
    /// permissions a shell's `> FILE` gives (0666 less the umask); only a
    /// regular file is emptied: /dev/null, a FIFO or a `>(…)` pipe is just
    /// written. A file that is one of the `inputs` (the same file, under
    /// any name) is left as it is, and the answer is a usage error:
    /// writing the joblog into it would empty it, or grow the items while
    /// they are read.
    pub fn create(path: &Path, inputs: &[InputFile]) -> Result<Joblog> {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::OpenOptionsExt;
        let bytes = path.as_os_str().as_bytes();
        let stdout = bytes == b"-";
        let (path, append) = match bytes.strip_prefix(b"+") {
            Some(rest) if !rest.is_empty() => (Path::new(std::ffi::OsStr::from_bytes(rest)), true),
            _ => (path, false),
        };
        let name = path.display().to_string();
        let file = if stdout {
            let fd = std::io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| Error::io("dup", "standard output", &e))?;
            File::from(fd)
        } else {
            // Not O_TRUNC: it is emptied only once it is known not to be an
            // input.
            std::fs::OpenOptions::new()
                .write(true)
                .append(append)
                .create(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(path)
                .map_err(|e| super::output::failed_call(Error::io("open", &name, &e)))?
        };
        let st = nix::sys::stat::fstat(file.as_fd()).map_err(|e| Error::sys("fstat", &name, e))?;
        if let Some(input) = inputs
            .iter()
            .find(|i| i.dev == st.st_dev && i.ino == st.st_ino)
        {
            return Err(Error::invalid(
                "--joblog",
                format!(
                    "{name} is also the input ({}): writing the joblog into it would {}",
                    input.name,
                    if append {
                        "grow the items as they are read"
                    } else {
                        "empty it"
                    }
                ),
            ));
        }
        use nix::sys::stat::SFlag;
        let regular = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
        let log = Joblog { file, name, stdout };
        if regular && !stdout && !append {
            log.file
                .set_len(0)
                .map_err(|e| Error::io("ftruncate", &log.name, &e))?;
        }
        if !(append && regular && st.st_size > 0) {
            log.write(HEADER.as_bytes())?;
        }
        Ok(log)
    }

    fn write(&self, line: &[u8]) -> Result<()> {
        crate::pipe::write_all(self.file.as_fd(), line)
            .map_err(|e| Error::sys("write", &self.name, e))
    }

    /// Whether this is `--joblog -`, standard output.
    pub fn is_stdout(&self) -> bool {
        self.stdout
    }

    /// Append `e`'s line.
    pub fn record(&self, e: &Entry<'_>) -> Result<()> {
        self.write(&line(e))
    }
}

/// The joblog line of `e`, newline included; the command as its bytes.
pub fn line(e: &Entry<'_>) -> Vec<u8> {
    let start = e
        .start
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let (exitval, signal) = match e.how {
        How::Signaled(s) if e.timed_out => (-1, s),
        How::Signaled(s) => (0, s),
        // Caught by its --timeout, it failed however it ended (it may have
        // survived the SIGTERM and exited 0): -1, as for one killed.
        How::Exited(_) if e.timed_out => (-1, 0),
        How::Exited(c) => (i32::from(c), 0),
        How::CannotRun => (126, 0),
        How::NotFound => (127, 0),
        How::Lost => (-1, 0),
    };
    // The command on one line: a newline or tab in an argument would
    // break the format.
    let mut line = format!(
        "{}\t{}\t{start:.3}\t{:10.3}\t{}\t{}\t{exitval}\t{signal}\t",
        e.seq,
        e.host,
        e.runtime.as_secs_f64(),
        e.send,
        e.receive
    )
    .into_bytes();
    line.extend(
        e.command
            .iter()
            .map(|&b| if b == b'\n' || b == b'\t' { b' ' } else { b }),
    );
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_follow_gnu_parallel() {
        let e = Entry {
            seq: 3,
            host: ":",
            start: SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_018_607_683),
            runtime: Duration::from_millis(10),
            send: 0,
            receive: 4,
            how: How::Exited(0),
            timed_out: false,
            command: b"echo err >&2; echo out",
        };
        assert_eq!(
            line(&e),
            b"3\t:\t1796018607.683\t     0.010\t0\t4\t0\t0\techo err >&2; echo out\n"
        );
        let killed = Entry {
            how: How::Signaled(15),
            timed_out: true,
            command: b"a\tb\nc\xff",
            ..e
        };
        assert!(
            line(&killed).ends_with(b"\t-1\t15\ta b c\xff\n"),
            "{:?}",
            String::from_utf8_lossy(&line(&killed))
        );
        // Caught by its --timeout, it survived the SIGTERM and exited 0:
        // it failed all the same, and the joblog says so.
        let survived = Entry {
            how: How::Exited(0),
            timed_out: true,
            ..e
        };
        assert!(line(&survived).ends_with(
            b"	-1	0	echo err >&2; echo out
"
        ));
    }
}
