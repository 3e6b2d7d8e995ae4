//! Where each job's output goes, and when it reaches ours.
//!
//! - Grouped (default, GNU parallel's `--group`): a job's stdout and
//!   stderr are pipes that the run reads as the job writes. What comes is
//!   kept ([`Kept`]) in memory up to [`KEEP_IN_MEMORY`] bytes per stream
//!   (and [`MEMORY_BUDGET`] for all jobs), past that in an unlinked file of
//!   its own (`O_TMPFILE` in `$TMPDIR`), and copied whole to ours when the
//!   job ends, so two jobs' lines never mix. A job that prints nothing
//!   costs no file, and a file is never given to a later job: a
//!   background process a job left behind writes into the pipe of the job
//!   that started it, which is read and dropped once that job has ended
//!   (its output is lost, as in parallel, never passed off as another
//!   job's).
//! - `--line-buffer`: pipes too; every complete line is written as soon
//!   as it is read, whole. A line is gathered in memory up to
//!   [`LONG_LINE`] bytes, then in a file of its own.
//! - `-u/--ungroup`: the jobs write to our stdout and stderr directly.
//! - `-k/--keep-order`: output in input order. A job that ends before the
//!   ones ahead of it has its output copied into one spill file and
//!   printed when its turn comes; with `--line-buffer`, the oldest job
//!   streams its lines and the others are kept until they are oldest.
//!
//! Our own writes to a pipe, socket or terminal wait for the reader, but
//! never past a stop signal: [`Sink`] polls the reader together with a
//! signalfd of SIGINT, SIGTERM and SIGHUP, so a run whose reader stopped
//! reading (`| less` left on its first page) still stops its jobs at once.
//! After such a signal, output the reader does not take within a moment
//! (or by the end of the kill-after grace) is dropped.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;

use crate::error::{Error, Result};

/// How job output reaches ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Group,
    Line,
    Ungroup,
}

/// One stream of a job's output, kept until it can be printed: in memory
/// while it is small, in an unlinked file of its own past
/// [`KEEP_IN_MEMORY`] (or once the run holds [`MEMORY_BUDGET`] in memory).
#[derive(Debug, Default)]
pub struct Kept {
    mem: Vec<u8>,
    file: Option<File>,
}

/// The most bytes of one stream of one job kept in memory.
pub const KEEP_IN_MEMORY: usize = 64 * 1024;

/// The most bytes of job output kept in memory by a run, all jobs
/// together; past it, more goes to files.
pub const MEMORY_BUDGET: usize = 16 * 1024 * 1024;

/// Where one running job's output is going.
#[derive(Debug)]
pub enum Capture {
    /// Grouped: stdout and stderr, kept until the job ends.
    Group([Kept; 2]),
    /// Line-buffered: the line each stream has begun, and, with
    /// `--keep-order`, its output kept until it is the oldest.
    Line {
        partial: [Vec<u8>; 2],
        /// Per stream, a begun line longer than [`LONG_LINE`]: gathered in
        /// a file instead of memory (`partial` is empty then).
        long: [Option<File>; 2],
        held: Option<[Kept; 2]>,
    },
    /// Straight through.
    Direct,
}

/// The longest begun line `--line-buffer` holds in memory per stream of a
/// job; a longer one is gathered in a file, so memory stays bounded and
/// the line still comes out whole.
pub const LONG_LINE: usize = 64 * 1024;

/// Stdout bytes of a finished job (the joblog's Receive).
pub type Received = u64;

#[derive(Debug)]
enum Held {
    /// Stdout and stderr in memory (counted in `in_memory`).
    Mem([Vec<u8>; 2]),
    /// (offset, length) in the spill file, stdout then stderr.
    Spilled([(u64, u64); 2]),
}

/// The output side of a run.
#[derive(Debug)]
pub struct Output {
    pub mode: Mode,
    keep_order: bool,
    tmpdir: PathBuf,
    /// With keep-order: the next sequence number to print.
    next: u64,
    held: BTreeMap<u64, Held>,
    spill: Option<File>,
    spill_len: u64,
    /// Bytes of [`Kept`] output in memory, all jobs together.
    in_memory: usize,
    buf: Vec<u8>,
    /// Our stdout and stderr.
    pub sink: Sink,
}

/// Why writing our own output failed.
#[derive(Debug)]
pub enum WriteError {
    /// The reader of our stdout or stderr went away (EPIPE).
    Closed,
    /// Anything else.
    Other(Error),
}

impl From<Error> for WriteError {
    fn from(e: Error) -> Self {
        WriteError::Other(e)
    }
}

pub type WResult<T> = std::result::Result<T, WriteError>;

impl Output {
    pub fn new(mode: Mode, keep_order: bool) -> Output {
        Output {
            mode,
            keep_order,
            tmpdir: std::env::var_os("TMPDIR")
                .filter(|d| !d.is_empty())
                .map_or_else(|| PathBuf::from("/tmp"), PathBuf::from),
            next: 1,
            held: BTreeMap::new(),
            spill: None,
            spill_len: 0,
            in_memory: 0,
            buf: Vec::new(),
            sink: Sink::default(),
        }
    }

    /// The capture for a job about to start (no file yet: files are made
    /// when output grows).
    pub fn capture(&self, seq: u64) -> Capture {
        match self.mode {
            Mode::Group => Capture::Group(Default::default()),
            Mode::Line => Capture::Line {
                partial: [Vec::new(), Vec::new()],
                long: [None, None],
                held: (self.keep_order && seq != self.next).then(Default::default),
            },
            Mode::Ungroup => Capture::Direct,
        }
    }

    /// Keep `bytes` at the end of `k`: in memory, or in its file once it
    /// has grown past what memory holds.
    fn keep(&mut self, k: &mut Kept, bytes: &[u8]) -> Result<()> {
        if k.file.is_none() {
            let fits = k.mem.len() + bytes.len() <= KEEP_IN_MEMORY
                && self.in_memory + bytes.len() <= MEMORY_BUDGET;
            if fits {
                k.mem.extend_from_slice(bytes);
                self.in_memory += bytes.len();
                return Ok(());
            }
            // Only ever written at its end: by write(2) here, splice(2)
            // in the loop.
            let f = tmpfile(&self.tmpdir, false)?;
            append(&f, &k.mem)?;
            self.forget(k);
            k.file = Some(f);
        }
        append(k.file.as_ref().expect("made above"), bytes)
    }

    /// `k`'s memory is given up (printed, moved, dropped).
    fn forget(&mut self, k: &mut Kept) {
        self.in_memory -= k.mem.len().min(self.in_memory);
        k.mem = Vec::new();
    }

    /// Write what `k` holds to stream 1 or 2, and empty it; its length.
    fn print_kept(&mut self, k: &mut Kept, stream: u8) -> WResult<u64> {
        let n = if let Some(f) = k.file.take() {
            self.copy_file(&f, stream)?
        } else {
            let mem = std::mem::take(&mut k.mem);
            self.in_memory -= mem.len().min(self.in_memory);
            if !mem.is_empty() {
                self.sink.write(stream, &mem)?;
            }
            mem.len() as u64
        };
        Ok(n)
    }

    /// The file where what job `cap` writes to `stream` goes now, if its
    /// output has grown past memory (grouped output): the loop may splice
    /// its pipe straight into it.
    pub fn file_of<'a>(&self, cap: &'a Capture, stream: u8) -> Option<BorrowedFd<'a>> {
        match cap {
            Capture::Group(kept) => kept[usize::from(stream == 2)]
                .file
                .as_ref()
                .map(AsFd::as_fd),
            _ => None,
        }
    }

    /// Bytes a job wrote to `stream` (1 or 2), read from its pipe or
    /// received from its host.
    pub fn data(&mut self, cap: &mut Capture, stream: u8, bytes: &[u8]) -> WResult<()> {
        let i = usize::from(stream == 2);
        match cap {
            Capture::Group(kept)
            | Capture::Line {
                held: Some(kept), ..
            } => {
                self.keep(&mut kept[i], bytes)?;
            }
            Capture::Line {
                partial,
                long,
                held: None,
            } => {
                let (lines, rest) = match bytes.iter().rposition(|&b| b == b'\n') {
                    Some(last_nl) => bytes.split_at(last_nl + 1),
                    None => (&[][..], bytes),
                };
                if lines.is_empty() {
                    // No line ends here.
                } else if let Some(f) = long[i].take() {
                    // The long line ends here: out whole, then the lines after it.
                    let first = lines.iter().position(|&b| b == b'\n').unwrap_or(0);
                    append(&f, &lines[..=first])?;
                    self.copy_file(&f, stream)?;
                    if first + 1 < lines.len() {
                        self.sink.write(stream, &lines[first + 1..])?;
                    }
                } else if partial[i].is_empty() {
                    self.sink.write(stream, lines)?;
                } else {
                    partial[i].extend_from_slice(lines);
                    let whole = std::mem::take(&mut partial[i]);
                    self.sink.write(stream, &whole)?;
                }
                // What follows the last newline begins the next line.
                if let Some(f) = &long[i] {
                    append(f, rest)?;
                } else if partial[i].len() + rest.len() > LONG_LINE {
                    let f = tmpfile(&self.tmpdir, true)?;
                    append(&f, &partial[i])?;
                    append(&f, rest)?;
                    partial[i] = Vec::new();
                    long[i] = Some(f);
                } else {
                    partial[i].extend_from_slice(rest);
                }
            }
            Capture::Direct => self.sink.write(stream, bytes)?,
        }
        Ok(())
    }

    /// A running line-buffered job has become the oldest: print what it
    /// held and let it stream.
    pub fn promote(&mut self, cap: &mut Capture) -> WResult<()> {
        // What the files end with, a line without its newline yet, is
        // printed too: the pipe continues that line, and no other job
        // prints while this one is the oldest.
        if let Capture::Line { held, .. } = cap {
            if let Some(mut kept) = held.take() {
                self.print_kept(&mut kept[0], 1)?;
                self.print_kept(&mut kept[1], 2)?;
            }
        }
        Ok(())
    }

    /// The next sequence number to print (keep-order).
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// A job ended for good: its output goes out now, or is held until
    /// the jobs before it are done (keep-order). Returns its stdout bytes.
    pub fn finish(&mut self, seq: u64, cap: Capture) -> WResult<Received> {
        let in_turn = !self.keep_order || seq == self.next;
        let received = match cap {
            Capture::Group(mut kept)
            | Capture::Line {
                held: Some(mut kept),
                ..
            } => {
                if in_turn {
                    let out = self.print_kept(&mut kept[0], 1)?;
                    self.print_kept(&mut kept[1], 2)?;
                    out
                } else {
                    self.hold(seq, &mut kept)?
                }
            }
            Capture::Line {
                partial,
                long,
                held: None,
            } => {
                for (i, (p, l)) in partial.iter().zip(long).enumerate() {
                    if let Some(f) = l {
                        self.copy_file(&f, i as u8 + 1)?;
                    }
                    if !p.is_empty() {
                        self.sink.write(i as u8 + 1, p)?;
                    }
                }
                0
            }
            Capture::Direct => {
                if !in_turn {
                    // Nothing to hold, but its turn must still pass.
                    self.held.insert(seq, Held::Mem(Default::default()));
                }
                0
            }
        };
        if self.keep_order && in_turn {
            self.next = seq + 1;
            self.flush_held(false)?;
        }
        Ok(received)
    }

    /// A failed attempt that will run again: its output is dropped.
    pub fn discard(&mut self, cap: Capture) -> Result<()> {
        if let Capture::Group(mut kept)
        | Capture::Line {
            held: Some(mut kept),
            ..
        } = cap
        {
            for k in &mut kept {
                self.forget(k);
            }
        }
        Ok(())
    }

    /// The end of the run: whatever is still held goes out, in order.
    pub fn end(&mut self) -> WResult<()> {
        self.flush_held(true)
    }

    fn flush_held(&mut self, all: bool) -> WResult<()> {
        while let Some(entry) = self.held.first_entry() {
            if !all && *entry.key() != self.next {
                break;
            }
            let (seq, held) = entry.remove_entry();
            match held {
                Held::Mem(mem) => {
                    for (i, m) in mem.iter().enumerate() {
                        self.in_memory -= m.len().min(self.in_memory);
                        if !m.is_empty() {
                            self.sink.write(i as u8 + 1, m)?;
                        }
                    }
                }
                Held::Spilled(ranges) if ranges.iter().any(|&(_, len)| len > 0) => {
                    let Some(spill) = self.spill.take() else {
                        break;
                    };
                    let r = (|| -> WResult<()> {
                        for (i, &(at, len)) in ranges.iter().enumerate() {
                            self.copy_range(&spill, at, len, i as u8 + 1)?;
                        }
                        Ok(())
                    })();
                    self.spill = Some(spill);
                    r?;
                }
                Held::Spilled(_) => {}
            }
            self.next = seq + 1;
        }
        if self.held.is_empty() && self.spill_len > 0 {
            if let Some(s) = &self.spill {
                s.set_len(0)
                    .map_err(|e| Error::io("ftruncate", "spill file", &e))?;
                self.spill_len = 0;
            }
        }
        Ok(())
    }

    /// Keep a finished job's output until its turn: where it is, when it
    /// is all in memory, else at the end of the spill file.
    fn hold(&mut self, seq: u64, kept: &mut [Kept; 2]) -> WResult<Received> {
        if kept.iter().all(|k| k.file.is_none()) {
            let mem = kept.each_mut().map(|k| std::mem::take(&mut k.mem));
            let out = mem[0].len() as u64;
            self.held.insert(seq, Held::Mem(mem));
            return Ok(out);
        }
        let mut ranges = [(0, 0); 2];
        for (i, k) in kept.iter_mut().enumerate() {
            let at = self.spill_len;
            let done = match k.file.take() {
                None if k.mem.is_empty() => 0,
                None => {
                    let mem = std::mem::take(&mut k.mem);
                    self.in_memory -= mem.len().min(self.in_memory);
                    append(self.spill()?, &mem)?;
                    mem.len() as u64
                }
                Some(f) => {
                    let len = size(&f)?;
                    let mut done = 0;
                    while done < len {
                        let n = read_at(&f, &mut self.buf, done)?;
                        if n == 0 {
                            break;
                        }
                        let buf = std::mem::take(&mut self.buf);
                        let r = self.spill().and_then(|s| append(s, &buf[..n]));
                        self.buf = buf;
                        r?;
                        done += n as u64;
                    }
                    done
                }
            };
            self.spill_len += done;
            ranges[i] = (at, done);
        }
        self.held.insert(seq, Held::Spilled(ranges));
        Ok(ranges[0].1)
    }

    /// The spill file, made at its first use.
    fn spill(&mut self) -> Result<&File> {
        if self.spill.is_none() {
            // Emptied with ftruncate and written again: O_APPEND writes
            // at its new end.
            self.spill = Some(tmpfile(&self.tmpdir, true)?);
        }
        Ok(self.spill.as_ref().expect("made above"))
    }

    /// Write a file's whole content to stream 1 or 2; its length.
    fn copy_file(&mut self, f: &File, stream: u8) -> WResult<u64> {
        let len = size(f)?;
        if len > 0 {
            self.copy_range(f, 0, len, stream)?;
        }
        Ok(len)
    }

    fn copy_range(&mut self, f: &File, at: u64, len: u64, stream: u8) -> WResult<()> {
        let mut done = 0;
        while done < len {
            let n = read_at(f, &mut self.buf, at + done)?;
            if n == 0 {
                break;
            }
            let n = n.min((len - done) as usize);
            self.sink.write(stream, &self.buf[..n])?;
            done += n as u64;
        }
        Ok(())
    }
}

fn size(f: &File) -> Result<u64> {
    nix::sys::stat::fstat(f.as_fd())
        .map(|st| st.st_size as u64)
        .map_err(|e| Error::sys("fstat", "output file", e))
}

fn read_at(f: &File, buf: &mut Vec<u8>, at: u64) -> Result<usize> {
    if buf.len() < 64 * 1024 {
        buf.resize(64 * 1024, 0);
    }
    loop {
        match f.read_at(buf, at) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("pread", "output file", &e)),
        }
    }
}

fn append(f: &File, bytes: &[u8]) -> Result<()> {
    crate::pipe::write_all(f.as_fd(), bytes).map_err(|e| Error::sys("write", "output file", e))
}

/// An unlinked file in `dir`, read-write, close-on-exec, `O_APPEND` if
/// `append` (splice(2) refuses to write to such a file; one that is only
/// ever written at its end needs no O_APPEND): `O_TMPFILE` where the file
/// system has it, else a named file removed at once.
pub fn tmpfile(dir: &PathBuf, append: bool) -> Result<File> {
    use nix::fcntl::{OFlag, open};
    use nix::sys::stat::Mode as Perm;
    let mut flags = OFlag::O_RDWR | OFlag::O_CLOEXEC;
    if append {
        flags |= OFlag::O_APPEND;
    }
    match open(
        dir,
        flags | OFlag::O_TMPFILE,
        Perm::from_bits_truncate(0o600),
    ) {
        Ok(fd) => return Ok(File::from(fd)),
        Err(Errno::EOPNOTSUPP | Errno::EISDIR | Errno::EINVAL) => {}
        Err(e) => {
            return Err(failed_call(Error::sys(
                "open",
                format!("{} (O_TMPFILE)", dir.display()),
                e,
            )));
        }
    }
    for _ in 0..100 {
        let path = dir.join(format!(
            ".pk-pool-exec-{}-{:016x}",
            std::process::id(),
            fastrand_u64()
        ));
        match open(
            &path,
            flags | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW,
            Perm::from_bits_truncate(0o600),
        ) {
            Ok(fd) => {
                let _ = std::fs::remove_file(&path);
                return Ok(File::from(fd));
            }
            Err(Errno::EEXIST) => continue,
            Err(e) => return Err(failed_call(Error::sys("open", path.display(), e))),
        }
    }
    Err(Error::sys("open", dir.display(), Errno::EEXIST))
}

/// A file of pk-pool's own that cannot be made (a missing `$TMPDIR`, a
/// `--joblog` in a missing directory) is a failed system call (71), not
/// a missing input (66, which is for `-a FILE`).
pub fn failed_call(e: Error) -> Error {
    if e.is_not_found() {
        e.with_kind(crate::error::ErrorKind::Os)
    } else {
        e
    }
}

/// A name-picking number: the clock's nanoseconds mixed with a counter.
fn fastrand_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (t ^ N.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)).rotate_left(17)
}

/// How long, once a stop signal is pending (or the grace after one has
/// passed), a write waits for the reader to take more.
const STALL: Duration = Duration::from_millis(100);

/// What a write that waits on the reader may take at once: PIPE_BUF, which
/// a pipe that polls writable always has room for, so the write never
/// blocks where poll(2) cannot see a signal.
const GATED_CHUNK: usize = libc::PIPE_BUF;

/// Our stdout and stderr as the job output reaches them (see the module
/// documentation).
#[derive(Debug, Default)]
pub struct Sink {
    /// Readable while INT, TERM or HUP is pending.
    stop: Option<SignalFd>,
    /// After the first stop signal: when the reader's time is up.
    give_up_at: Option<Instant>,
    /// Per stream (stdout, stderr): whether a write may wait on a reader
    /// (a pipe, a socket, a terminal); learnt at the first write.
    may_block: [Option<bool>; 2],
    /// Per stream: the reader did not take the output in time; the rest
    /// of it is dropped.
    dropped: [bool; 2],
}

/// Why a write that waits on the reader stopped.
enum Gated {
    /// A stop signal (or the end of the grace), and the reader not reading.
    GaveUp,
    Errno(Errno),
}

impl Sink {
    /// Watch these stop signals (already blocked, read by the caller's
    /// own signalfd) while waiting on a reader.
    pub fn watch(&mut self, signals: &[Signal]) -> Result<()> {
        let mut set = nix::sys::signal::SigSet::empty();
        for &s in signals {
            set.add(s);
        }
        let flags =
            nix::sys::signalfd::SfdFlags::SFD_NONBLOCK | nix::sys::signalfd::SfdFlags::SFD_CLOEXEC;
        self.stop = Some(
            SignalFd::with_flags(&set, flags).map_err(|e| Error::sys("signalfd", "output", e))?,
        );
        Ok(())
    }

    /// A stop signal has been handled: from `at` on, output the reader
    /// does not take is dropped.
    pub fn give_up_at(&mut self, at: Option<Instant>) {
        self.give_up_at = at;
    }

    /// Write all of `bytes` to our stdout (1) or stderr (2); EPIPE is
    /// [`WriteError::Closed`].
    pub fn write(&mut self, stream: u8, bytes: &[u8]) -> WResult<()> {
        let i = usize::from(stream == 2);
        if self.dropped[i] {
            return Ok(());
        }
        let (out, err) = (std::io::stdout(), std::io::stderr());
        let fd = if stream == 2 {
            err.as_fd()
        } else {
            out.as_fd()
        };
        let may_block = *self.may_block[i].get_or_insert_with(|| {
            use nix::sys::stat::SFlag;
            nix::sys::stat::fstat(fd).is_ok_and(|st| {
                let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
                kind == SFlag::S_IFIFO || kind == SFlag::S_IFSOCK || kind == SFlag::S_IFCHR
            })
        });
        let r = if stream == 1 && crate::sys::proc::stdout_closed_at_start() {
            // Closed when we started: the runtime's stand-in /dev/null is
            // not a place to send output to.
            Err(Gated::Errno(Errno::EBADF))
        } else if may_block && self.stop.is_some() {
            write_gated(
                fd,
                bytes,
                self.stop.as_ref().map(AsFd::as_fd),
                self.give_up_at,
            )
        } else {
            write_fd(fd, bytes).map_err(Gated::Errno)
        };
        match r {
            Ok(()) => Ok(()),
            Err(Gated::GaveUp) => {
                self.dropped[i] = true;
                Ok(())
            }
            Err(Gated::Errno(Errno::EPIPE)) => Err(WriteError::Closed),
            Err(Gated::Errno(e)) => Err(WriteError::Other(Error::sys(
                "write",
                if stream == 2 { "stderr" } else { "stdout" },
                e,
            ))),
        }
    }
}

/// Write all of `buf` to `fd` (which may block), `GATED_CHUNK` bytes at a
/// time once poll(2) says there is room, and give up when the reader
/// takes nothing for [`STALL`] while `stop` is readable or after
/// `give_up_at`.
fn write_gated(
    fd: BorrowedFd<'_>,
    mut buf: &[u8],
    stop: Option<BorrowedFd<'_>>,
    give_up_at: Option<Instant>,
) -> std::result::Result<(), Gated> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let stall = PollTimeout::try_from(STALL).unwrap_or(PollTimeout::MAX);
    while !buf.is_empty() {
        let late = give_up_at.is_some_and(|t| Instant::now() >= t);
        let mut fds = vec![PollFd::new(fd, PollFlags::POLLOUT)];
        if let (Some(stop), false) = (stop, late) {
            fds.push(PollFd::new(stop, PollFlags::POLLIN));
        }
        let timeout = if late {
            stall
        } else {
            crate::process::poll_timeout(give_up_at)
        };
        let ready = match poll(&mut fds, timeout) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Gated::Errno(e)),
        };
        let writable = fds[0].revents().is_some_and(|r| !r.is_empty());
        let stopped = fds
            .get(1)
            .is_some_and(|f| f.revents().is_some_and(|r| !r.is_empty()));
        drop(fds);
        if !writable {
            if late && ready == 0 {
                return Err(Gated::GaveUp);
            }
            if !stopped {
                // The grace has just run out: look again, in a hurry.
                continue;
            }
            // A stop signal is pending: the reader gets a moment more.
            let mut one = [PollFd::new(fd, PollFlags::POLLOUT)];
            match poll(&mut one, stall) {
                Ok(0) => return Err(Gated::GaveUp),
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => return Err(Gated::Errno(e)),
            }
        }
        match nix::unistd::write(fd, &buf[..buf.len().min(GATED_CHUNK)]) {
            Ok(0) => return Err(Gated::Errno(Errno::EIO)),
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            Err(e) => return Err(Gated::Errno(e)),
        }
    }
    Ok(())
}

/// Write all of `bytes` to our stdout (1) or stderr (2): EINTR and short
/// writes retried, a non-blocking descriptor waited on, EPIPE reported as
/// [`WriteError::Closed`].
pub fn write_out(stream: u8, bytes: &[u8]) -> WResult<()> {
    let r = if stream == 2 {
        write_fd(std::io::stderr().as_fd(), bytes)
    } else if crate::sys::proc::stdout_closed_at_start() {
        // Closed when we started: the runtime's stand-in /dev/null is not
        // a place to send output to.
        Err(Errno::EBADF)
    } else {
        write_fd(std::io::stdout().as_fd(), bytes)
    };
    r.map_err(|e| match e {
        Errno::EPIPE => WriteError::Closed,
        e => WriteError::Other(Error::sys(
            "write",
            if stream == 2 { "stderr" } else { "stdout" },
            e,
        )),
    })
}

/// Whether our stdout is a pipe or socket whose reader has gone (poll(2)
/// reports POLLERR on it): with `-u` the jobs write there themselves, and
/// this is how pk-pool learns that their reader left.
pub fn stdout_broken() -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let out = std::io::stdout();
    let mut fds = [PollFd::new(out.as_fd(), PollFlags::empty())];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLERR))
}

/// write(2) all of `buf` to `fd` (EINTR, short writes and EAGAIN
/// handled): the binaries' one writer, [`crate::cmd::write_all_fd`].
pub(crate) use crate::cmd::write_all_fd as write_fd;
