//! Pipes and socket pairs as owned file descriptors, with length-prefixed
//! frames on top.
//!
//! ```no_run
//! use posixkit::pipe;
//! let (reader, writer) = pipe::pipe().unwrap();
//! writer.send(b"hello").unwrap();
//! drop(writer); // the last write end closed: the reader sees end of file
//! assert_eq!(reader.recv().unwrap(), Some(b"hello".to_vec()));
//! assert_eq!(reader.recv().unwrap(), None);
//! ```
//!
//! - [`pipe`] is pipe2(2) with `O_CLOEXEC`: a one-way [`Reader`] and
//!   [`Writer`]. Python's `Pipe(False)`.
//! - [`duplex`] is socketpair(2) (`AF_UNIX`, `SOCK_STREAM`, `SOCK_CLOEXEC`):
//!   two [`Duplex`] ends that both send and receive. Python's `Pipe()`.
//! - A frame is a 4-byte little-endian length followed by that many bytes.
//!   A frame of at most [`PIPE_BUF`] bytes in all (a payload of at most
//!   [`MAX_ATOMIC_PAYLOAD`]) goes out in one write(2), which POSIX makes
//!   atomic on a pipe: many writers sharing one pipe never interleave such
//!   frames. Larger frames are written in pieces and need one writer at a time.
//! - Every read and write retries EINTR and continues after a short count.
//!   End of file before a frame starts is a clean `Ok(None)`; end of file
//!   inside a frame is an error (exit code 65, bad data).
//! - Receiving reads exactly one frame and nothing after it (no read-ahead
//!   buffer), so processes that share a read end and take turns under a
//!   lock each get whole frames.
//!
//! - [`PageWriter`] lends the writer's own pages to the pipe with
//!   vmsplice(2) instead of copying into it (bulk data one way), and
//!   [`set_capacity`] asks for a larger pipe buffer. The library uses
//!   neither by itself.
//!
//! Every descriptor is `O_CLOEXEC`: a program started with exec does not
//! inherit it. A forked child does, so each side closes (drops) the ends it
//! does not use, or the reader never sees end of file.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::socket::{AddressFamily, SockFlag, SockType};

use crate::error::{Error, Result};

mod pages;
pub use pages::PageWriter;

/// The largest write a pipe performs atomically (POSIX `PIPE_BUF`; 4096 on Linux).
pub const PIPE_BUF: usize = libc::PIPE_BUF;

/// Bytes of the length prefix in front of every frame.
pub const HEADER: usize = 4;

/// The largest payload whose frame fits in [`PIPE_BUF`] and so is written
/// with one atomic write(2).
pub const MAX_ATOMIC_PAYLOAD: usize = PIPE_BUF - HEADER;

/// The largest payload [`send`] and [`recv`] accept (1 GiB): a length above
/// this in a received header means the stream is corrupt.
pub const MAX_FRAME: usize = 1 << 30;

/// A new pipe (pipe2(2) with `O_CLOEXEC`): bytes written to the [`Writer`]
/// come out of the [`Reader`].
pub fn pipe() -> Result<(Reader, Writer)> {
    let (r, w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe2", "O_CLOEXEC", e))?;
    Ok((Reader(r), Writer(w)))
}

/// A connected pair of stream sockets (socketpair(2), `AF_UNIX`,
/// `SOCK_STREAM`, `SOCK_CLOEXEC`): what one end sends, the other receives,
/// in both directions.
pub fn duplex() -> Result<(Duplex, Duplex)> {
    let (a, b) = nix::sys::socket::socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| Error::sys("socketpair", "AF_UNIX, SOCK_STREAM", e))?;
    Ok((Duplex(a), Duplex(b)))
}

/// The buffer size of the pipe `fd` belongs to, in bytes (fcntl
/// `F_GETPIPE_SZ`; 65 536 on a new Linux pipe).
pub fn capacity(fd: BorrowedFd<'_>) -> nix::Result<usize> {
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETPIPE_SZ).map(|n| n as usize)
}

/// Ask the kernel for a pipe buffer of at least `bytes` (fcntl
/// `F_SETPIPE_SZ`) and return the size it gave, a power-of-two number of
/// pages. A larger buffer lets a writer run further ahead of its reader,
/// so each side sleeps and wakes less often, but its pages no longer fit
/// the CPU caches: whether bandwidth rises depends on the machine and the
/// write size (`make bench-plot`, curve `pipe_bw_size`, draws both).
/// [`PageWriter`] gains more: it saves a copy. An unprivileged process is held to
/// `/proc/sys/fs/pipe-max-size` (1 MiB by default; EPERM above it) and to
/// a per-user total (EPERM).
///
/// The library never resizes a pipe by itself: every pipe it makes keeps
/// the kernel's default until this is called on it.
pub fn set_capacity(fd: BorrowedFd<'_>, bytes: usize) -> nix::Result<usize> {
    let want = i32::try_from(bytes).map_err(|_| Errno::EINVAL)?;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(want)).map(|n| n as usize)
}

// ---------------------------------------------------------------------------
// Raw reads and writes on any descriptor.

/// read(2) once into `buf`, retrying EINTR. `Ok(0)` is end of file (or an
/// empty `buf`).
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> nix::Result<usize> {
    loop {
        match nix::unistd::read(fd, buf) {
            Err(Errno::EINTR) => continue,
            r => return r,
        }
    }
}

/// write(2) once from `buf`, retrying EINTR; may write fewer bytes than asked.
pub fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> nix::Result<usize> {
    loop {
        match nix::unistd::write(fd, buf) {
            Err(Errno::EINTR) => continue,
            r => return r,
        }
    }
}

/// Write all of `buf`, retrying EINTR and continuing after short writes.
pub fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> nix::Result<()> {
    while !buf.is_empty() {
        match write(fd, buf)? {
            0 => return Err(Errno::EIO),
            n => buf = &buf[n..],
        }
    }
    Ok(())
}

/// Fill `buf` completely, retrying EINTR and continuing after short reads.
/// Returns how many bytes were read: `buf.len()`, or less at end of file.
pub fn read_full(fd: BorrowedFd<'_>, buf: &mut [u8]) -> nix::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match read(fd, &mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

// ---------------------------------------------------------------------------
// Frames.

/// Send `payload` as one frame on `fd`. A frame of at most [`PIPE_BUF`]
/// bytes in all is copied behind its length and written with a single
/// write(2); a longer one goes out as [`send_parts`] sends it. EINTR is
/// retried.
///
/// Fails with `EMSGSIZE` for a payload over [`MAX_FRAME`].
pub fn send(fd: BorrowedFd<'_>, payload: &[u8]) -> nix::Result<()> {
    // Small frames are the common case (and the latency case): build them
    // in a small buffer rather than zeroing a whole PIPE_BUF one.
    if payload.len() <= SMALL - HEADER {
        send_copied::<SMALL>(fd, payload)
    } else if payload.len() <= MAX_ATOMIC_PAYLOAD {
        send_copied::<PIPE_BUF>(fd, payload)
    } else {
        send_parts(fd, &[payload])
    }
}

/// The stack buffer for small frames.
const SMALL: usize = 128;

/// Write the frame of `payload` (at most `N - HEADER` bytes) from an
/// `N`-byte stack buffer, in one write(2) when the pipe takes it all.
fn send_copied<const N: usize>(fd: BorrowedFd<'_>, payload: &[u8]) -> nix::Result<()> {
    let mut frame = [0u8; N];
    frame[..HEADER].copy_from_slice(&header(payload.len())?);
    frame[HEADER..HEADER + payload.len()].copy_from_slice(payload);
    write_all(fd, &frame[..HEADER + payload.len()])
}

/// Send the concatenation of `parts` as one frame on `fd`, with one
/// writev(2) when the pipe takes it all (no copy into a single buffer).
/// A frame of at most [`PIPE_BUF`] bytes in all is atomic on a pipe, as with
/// [`send`]. EINTR is retried and short writes continued.
///
/// Fails with `EMSGSIZE` when the parts add up to more than [`MAX_FRAME`],
/// and with `EINVAL` for more than 1023 non-empty parts (IOV_MAX, 1024
/// slices, counting the length prefix).
pub fn send_parts(fd: BorrowedFd<'_>, parts: &[&[u8]]) -> nix::Result<()> {
    let total = parts
        .iter()
        .try_fold(0usize, |sum, p| sum.checked_add(p.len()))
        .ok_or(Errno::EMSGSIZE)?;
    let header = header(total)?;
    // A frame of a few parts (the usual case: a pool's header and body)
    // keeps its iovec array on the stack: no allocation per frame.
    let mut stack = [IoSlice::new(&[]); 8];
    let mut heap: Vec<IoSlice<'_>>;
    let slices: &mut [IoSlice<'_>] = if parts.len() < stack.len() {
        stack[0] = IoSlice::new(&header);
        let mut n = 1;
        for p in parts.iter().filter(|p| !p.is_empty()) {
            stack[n] = IoSlice::new(p);
            n += 1;
        }
        &mut stack[..n]
    } else {
        heap = Vec::with_capacity(parts.len() + 1);
        heap.push(IoSlice::new(&header));
        heap.extend(
            parts
                .iter()
                .filter(|p| !p.is_empty())
                .map(|p| IoSlice::new(p)),
        );
        &mut heap[..]
    };
    let mut rest = slices;
    while !rest.is_empty() {
        let n = match nix::sys::uio::writev(fd, rest) {
            Err(Errno::EINTR) => continue,
            Ok(0) => return Err(Errno::EIO),
            r => r?,
        };
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

/// Why [`recv_into`] failed: a system call, or a stream that is not frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecvError {
    /// read(2) failed.
    Sys(Errno),
    /// End of file inside a frame, or a length over [`MAX_FRAME`].
    Torn(String),
}

/// Receive one frame from `fd` into `buf` (replacing its contents; after
/// an error they are unspecified). `Ok(false)` is a clean end of file
/// before the frame's first byte.
/// EINTR is retried and short reads continued.
pub fn recv_into(fd: BorrowedFd<'_>, buf: &mut Vec<u8>) -> std::result::Result<bool, RecvError> {
    let mut header = [0u8; HEADER];
    let got = read_full(fd, &mut header).map_err(RecvError::Sys)?;
    if got == 0 {
        return Ok(false);
    }
    if got < HEADER {
        return Err(torn_header(got));
    }
    let len = frame_len(header)?;
    // The buffer grows with the bytes that come (64 KiB, then doubling),
    // not to the length the header claims: a writer that announces a
    // gigabyte and stops costs little. Only bytes past the buffer's old
    // length are zeroed: read_full overwrites the rest, so a reused buffer
    // costs no memset.
    let mut got = 0;
    while got < len {
        let room = len.min(got.saturating_mul(2).max(64 * 1024));
        if buf.len() < room {
            buf.resize(room, 0);
        }
        let end = buf.len().min(len);
        let n = read_full(fd, &mut buf[got..end]).map_err(RecvError::Sys)?;
        got += n;
        if got < end {
            buf.truncate(got);
            return Err(torn_frame(got, len));
        }
    }
    buf.truncate(len);
    Ok(true)
}

/// The header of a frame of `len` payload bytes; `EMSGSIZE` over
/// [`MAX_FRAME`]. With [`frame_len`], the one place a frame's length is
/// written and read.
fn header(len: usize) -> nix::Result<[u8; HEADER]> {
    if len > MAX_FRAME {
        return Err(Errno::EMSGSIZE);
    }
    u32::try_from(len)
        .map(u32::to_le_bytes)
        .map_err(|_| Errno::EMSGSIZE)
}

/// A frame's payload length from its header, if within [`MAX_FRAME`].
pub(crate) fn frame_len(header: [u8; HEADER]) -> std::result::Result<usize, RecvError> {
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(RecvError::Torn(format!(
            "frame length {len} is over the limit of {MAX_FRAME} bytes"
        )));
    }
    Ok(len)
}

/// End of file after `got` bytes of a frame header.
pub(crate) fn torn_header(got: usize) -> RecvError {
    RecvError::Torn(format!(
        "end of file inside a frame header ({got} of {HEADER} bytes)"
    ))
}

/// End of file after `got` bytes of a `len`-byte payload.
pub(crate) fn torn_frame(got: usize, len: usize) -> RecvError {
    RecvError::Torn(format!("end of file inside a frame ({got} of {len} bytes)"))
}

/// Receive one frame: `Ok(None)` at a clean end of file. See [`recv_into`].
pub fn recv(fd: BorrowedFd<'_>) -> std::result::Result<Option<Vec<u8>>, RecvError> {
    let mut buf = Vec::new();
    Ok(recv_into(fd, &mut buf)?.then_some(buf))
}

pub(crate) fn recv_error(what: &'static str, e: RecvError) -> Error {
    match e {
        RecvError::Sys(errno) => Error::sys("read", what, errno),
        RecvError::Torn(why) => Error::data("recv", what, why),
    }
}

// ---------------------------------------------------------------------------
// The typed ends.

macro_rules! fd_type {
    ($name:ident) => {
        impl AsFd for $name {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.0.as_fd()
            }
        }
        impl AsRawFd for $name {
            fn as_raw_fd(&self) -> RawFd {
                self.0.as_raw_fd()
            }
        }
        impl From<OwnedFd> for $name {
            fn from(fd: OwnedFd) -> Self {
                $name(fd)
            }
        }
        impl From<$name> for OwnedFd {
            fn from(end: $name) -> OwnedFd {
                end.0
            }
        }
        impl IntoRawFd for $name {
            fn into_raw_fd(self) -> RawFd {
                self.0.into_raw_fd()
            }
        }
    };
}

macro_rules! read_methods {
    ($what:literal) => {
        /// read(2) once, retrying EINTR; `Ok(0)` is end of file.
        pub fn read(&self, buf: &mut [u8]) -> Result<usize> {
            read(self.as_fd(), buf).map_err(|e| Error::sys("read", $what, e))
        }

        /// Read until `buf` is full or end of file; returns the count.
        pub fn read_full(&self, buf: &mut [u8]) -> Result<usize> {
            read_full(self.as_fd(), buf).map_err(|e| Error::sys("read", $what, e))
        }

        /// Receive one frame; `Ok(None)` at a clean end of file. A frame cut
        /// short by end of file is an [`Error::data`] (exit 65).
        pub fn recv(&self) -> Result<Option<Vec<u8>>> {
            recv(self.as_fd()).map_err(|e| recv_error($what, e))
        }

        /// Receive one frame into `buf`, reusing its allocation; `Ok(false)`
        /// at a clean end of file.
        pub fn recv_into(&self, buf: &mut Vec<u8>) -> Result<bool> {
            recv_into(self.as_fd(), buf).map_err(|e| recv_error($what, e))
        }
    };
}

macro_rules! write_methods {
    ($what:literal) => {
        /// write(2) once, retrying EINTR; may write fewer bytes than asked.
        pub fn write(&self, buf: &[u8]) -> Result<usize> {
            write(self.as_fd(), buf).map_err(|e| Error::sys("write", $what, e))
        }

        /// Write all of `buf`, retrying EINTR and short writes.
        pub fn write_all(&self, buf: &[u8]) -> Result<()> {
            write_all(self.as_fd(), buf).map_err(|e| Error::sys("write", $what, e))
        }

        /// Send `payload` as one frame (one write(2) when the frame fits in
        /// [`PIPE_BUF`]). A reader that has gone gives EPIPE, or kills the
        /// process with SIGPIPE where SIGPIPE is not ignored.
        pub fn send(&self, payload: &[u8]) -> Result<()> {
            send(self.as_fd(), payload).map_err(|e| Error::sys("write", $what, e))
        }

        /// Send the concatenation of `parts` as one frame, without copying
        /// them together first (writev(2)); see [`send_parts`].
        pub fn send_parts(&self, parts: &[&[u8]]) -> Result<()> {
            send_parts(self.as_fd(), parts).map_err(|e| Error::sys("writev", $what, e))
        }
    };
}

/// The read end of a pipe. Dropping it closes the descriptor.
#[derive(Debug)]
pub struct Reader(OwnedFd);
fd_type!(Reader);

impl Reader {
    read_methods!("pipe");

    /// Set the pipe's buffer size: see [`set_capacity`].
    pub fn set_capacity(&self, bytes: usize) -> Result<usize> {
        set_capacity(self.as_fd(), bytes).map_err(|e| Error::sys("fcntl", "F_SETPIPE_SZ", e))
    }
}

/// The write end of a pipe. Dropping it closes the descriptor; once every
/// copy of the write end is closed, the reader sees end of file.
#[derive(Debug)]
pub struct Writer(OwnedFd);
fd_type!(Writer);

impl Writer {
    write_methods!("pipe");

    /// Set the pipe's buffer size: see [`set_capacity`].
    pub fn set_capacity(&self, bytes: usize) -> Result<usize> {
        set_capacity(self.as_fd(), bytes).map_err(|e| Error::sys("fcntl", "F_SETPIPE_SZ", e))
    }
}

/// One end of a socket pair: it both sends and receives.
#[derive(Debug)]
pub struct Duplex(OwnedFd);
fd_type!(Duplex);

impl Duplex {
    read_methods!("socket");
    write_methods!("socket");
}

/// A buffered frame reader for a stream with exactly one reader: it reads
/// as much as the pipe holds and hands out frames from its buffer, so a
/// small frame costs one read(2) instead of two (length, then payload).
///
/// Use it only where no other process or thread reads the same end: bytes
/// it has read ahead belong to it. Where readers share an end (under a
/// lock), use [`Reader::recv`], which never reads past its frame.
///
/// ```no_run
/// use posixkit::pipe::{self, FrameReader};
/// let (r, w) = pipe::pipe().unwrap();
/// w.send(b"one").unwrap();
/// w.send(b"two").unwrap();
/// drop(w);
/// let mut frames = FrameReader::new(r);
/// while let Some(frame) = frames.recv().unwrap() {
///     println!("{}", String::from_utf8_lossy(frame));
/// }
/// ```
#[derive(Debug)]
pub struct FrameReader<E> {
    end: E,
    /// "pipe" or "socket", for error messages.
    what: &'static str,
    buf: Vec<u8>,
    start: usize,
    filled: usize,
}

impl<E: AsFd> FrameReader<E> {
    /// Read frames from `end` (a [`Reader`], a [`Duplex`], or a reference
    /// to one) through a 64 KiB buffer that grows for larger frames.
    pub fn new(end: E) -> Self {
        let is_socket = nix::sys::stat::fstat(end.as_fd())
            .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFSOCK);
        FrameReader {
            end,
            what: if is_socket { "socket" } else { "pipe" },
            buf: vec![0; 64 * 1024],
            start: 0,
            filled: 0,
        }
    }

    /// The end it reads from.
    pub fn get_ref(&self) -> &E {
        &self.end
    }

    /// Give back the end; frames already read ahead are dropped.
    pub fn into_inner(self) -> E {
        self.end
    }

    /// Whether every byte read so far has been returned: the next
    /// [`FrameReader::recv`] reads from the descriptor.
    pub(crate) fn is_drained(&self) -> bool {
        self.filled == self.start
    }

    /// The next frame, `Ok(None)` at a clean end of file. EINTR is retried;
    /// end of file inside a frame is an [`Error::data`] (exit 65).
    pub fn recv(&mut self) -> Result<Option<&[u8]>> {
        loop {
            let have = self.filled - self.start;
            let mut need = HEADER;
            if have >= HEADER {
                let mut h = [0u8; HEADER];
                h.copy_from_slice(&self.buf[self.start..self.start + HEADER]);
                let len = frame_len(h).map_err(|e| recv_error(self.what, e))?;
                need = HEADER + len;
                if have >= need {
                    let at = self.start + HEADER;
                    self.start += need;
                    return Ok(Some(&self.buf[at..at + len]));
                }
            }
            if have == 0 {
                (self.start, self.filled) = (0, 0);
            }
            if self.start + need > self.buf.len() {
                // The frame would run past the buffer's end: move its
                // first bytes to the front, and grow the buffer to hold a
                // few frames of this size so that this copy stays rare. A
                // frame over 1 MiB gets room as its bytes come (doubling),
                // not the length its header claims at once.
                self.buf.copy_within(self.start..self.filled, 0);
                (self.start, self.filled) = (0, have);
                if self.buf.len() < need {
                    let room = if need <= 1 << 20 {
                        4 * need
                    } else {
                        need.min(self.buf.len().max(have).saturating_mul(2))
                    };
                    self.buf.resize(room, 0);
                }
            }
            let n = read(self.end.as_fd(), &mut self.buf[self.filled..])
                .map_err(|e| Error::sys("read", self.what, e))?;
            if n == 0 {
                return match have {
                    0 => Ok(None),
                    _ if have < HEADER => Err(recv_error(self.what, torn_header(have))),
                    _ => Err(recv_error(
                        self.what,
                        torn_frame(have - HEADER, need - HEADER),
                    )),
                };
            }
            self.filled += n;
        }
    }
}

/// Make reads (and writes) on `fd` return `EAGAIN` instead of blocking
/// (`O_NONBLOCK` on its open file description: the other end of a pipe,
/// a description of its own, keeps blocking).
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> nix::Result<()> {
    use nix::fcntl::{FcntlArg, fcntl};
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(drop)
}

/// What [`PartialFrame::read`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// The frame is complete: its payload is the buffer.
    Frame,
    /// The end has nothing more for now (`EAGAIN`): wait until it is
    /// readable and read again.
    Partial,
    /// End of file before the frame's first byte.
    Eof,
}

/// One frame received in pieces from a non-blocking end (see
/// [`set_nonblocking`]) by one reader: what [`recv_into`] does in one
/// blocking call, stopped wherever the end has nothing more to give, so
/// that the caller can wait with a deadline (poll(2)) between pieces and
/// never blocks in the middle of a frame a writer left unfinished.
///
/// A header over [`MAX_FRAME`] is refused before anything is allocated,
/// and the buffer grows with the bytes that arrive (at most twice what has
/// come, and 64 KiB to start), never ahead of them to the length a header
/// claims: a writer that announces a gigabyte and sends nothing costs
/// nothing. Reads never go past the frame's end.
#[derive(Debug, Default)]
pub struct PartialFrame {
    header: [u8; HEADER],
    /// Bytes of the frame received, its header included.
    got: usize,
}

impl PartialFrame {
    /// A frame not yet begun.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether some of a frame has arrived and not the rest.
    pub fn is_started(&self) -> bool {
        self.got > 0
    }

    /// Read what `fd` holds now toward the frame, into `buf` (keep the same
    /// buffer from call to call until the frame is complete; its old bytes
    /// past what has arrived are overwritten, never zeroed). EINTR is
    /// retried. End of file inside the frame, or a header over
    /// [`MAX_FRAME`], is an error; after one, the stream is not frames.
    pub fn read(
        &mut self,
        fd: BorrowedFd<'_>,
        buf: &mut Vec<u8>,
    ) -> std::result::Result<Piece, RecvError> {
        loop {
            if self.got < HEADER {
                match read(fd, &mut self.header[self.got..]) {
                    Ok(0) if self.got == 0 => return Ok(Piece::Eof),
                    Ok(0) => return Err(torn_header(self.got)),
                    Ok(n) => self.got += n,
                    Err(Errno::EAGAIN) => return Ok(Piece::Partial),
                    Err(e) => return Err(RecvError::Sys(e)),
                }
                continue;
            }
            let len = frame_len(self.header)?;
            let have = self.got - HEADER;
            if have == len {
                buf.truncate(len);
                self.got = 0;
                return Ok(Piece::Frame);
            }
            let room = len.min(have.saturating_mul(2).max(64 * 1024));
            if buf.len() < room {
                buf.resize(room, 0);
            }
            let end = buf.len().min(len);
            match read(fd, &mut buf[have..end]) {
                Ok(0) => return Err(torn_frame(have, len)),
                Ok(n) => self.got += n,
                Err(Errno::EAGAIN) => return Ok(Piece::Partial),
                Err(e) => return Err(RecvError::Sys(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_eof_is_none() {
        let (r, w) = pipe().unwrap();
        w.send(b"").unwrap();
        w.send(b"abc").unwrap();
        drop(w);
        assert_eq!(r.recv().unwrap(), Some(Vec::new()));
        assert_eq!(r.recv().unwrap(), Some(b"abc".to_vec()));
        assert_eq!(r.recv().unwrap(), None);
        assert_eq!(r.recv().unwrap(), None);
    }

    #[test]
    fn a_frame_of_pipe_buf_is_one_write() {
        let (r, w) = pipe().unwrap();
        let payload = vec![7u8; MAX_ATOMIC_PAYLOAD];
        w.send(&payload).unwrap();
        let mut raw = vec![0u8; PIPE_BUF + 1];
        // One read sees the whole frame at once: it was one write.
        assert_eq!(r.read(&mut raw).unwrap(), PIPE_BUF);
        assert_eq!(&raw[..HEADER], &(MAX_ATOMIC_PAYLOAD as u32).to_le_bytes());
    }

    #[test]
    fn large_frames_cross_a_full_pipe() {
        let (a, b) = duplex().unwrap();
        let big: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
        let t = std::thread::spawn(move || {
            a.send(&big).unwrap();
            big
        });
        let got = b.recv().unwrap().unwrap();
        assert_eq!(got, t.join().unwrap());
    }

    #[test]
    fn send_parts_is_one_frame_of_the_parts_together() {
        let (a, b) = duplex().unwrap();
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let t = std::thread::spawn(move || {
            a.send_parts(&[b"head", b"", &big, b"tail"]).unwrap();
            a.send_parts(&[]).unwrap();
            a.send_parts(&[b"x", b"yz"]).unwrap();
            big
        });
        let big = {
            let got = b.recv().unwrap().unwrap();
            let big = t.join().unwrap();
            assert_eq!(got.len(), 8 + big.len());
            assert_eq!(&got[..4], b"head");
            assert_eq!(&got[4..4 + big.len()], &big[..]);
            assert_eq!(&got[4 + big.len()..], b"tail");
            big
        };
        assert_eq!(b.recv().unwrap(), Some(Vec::new()));
        assert_eq!(b.recv().unwrap(), Some(b"xyz".to_vec()));
        drop(big);
    }

    #[test]
    fn a_small_send_parts_frame_is_one_write() {
        let (r, w) = pipe().unwrap();
        let half = vec![1u8; MAX_ATOMIC_PAYLOAD / 2];
        w.send_parts(&[&half, &half]).unwrap();
        let mut raw = vec![0u8; PIPE_BUF + 1];
        assert_eq!(r.read(&mut raw).unwrap(), HEADER + 2 * half.len());
    }

    #[test]
    fn recv_into_replaces_a_longer_buffer() {
        let (r, w) = pipe().unwrap();
        w.send(b"abc").unwrap();
        w.send(b"0123456789").unwrap();
        w.send(b"").unwrap();
        let mut buf = b"stale stale stale".to_vec();
        assert!(r.recv_into(&mut buf).unwrap());
        assert_eq!(buf, b"abc");
        assert!(r.recv_into(&mut buf).unwrap());
        assert_eq!(buf, b"0123456789");
        assert!(r.recv_into(&mut buf).unwrap());
        assert_eq!(buf, b"");
    }

    #[test]
    fn a_frame_cut_short_is_bad_data() {
        let (r, w) = pipe().unwrap();
        w.write_all(&10u32.to_le_bytes()).unwrap();
        w.write_all(b"abc").unwrap();
        drop(w);
        let e = r.recv().unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::BadData);
        assert_eq!(
            e.to_string(),
            "recv(pipe): end of file inside a frame (3 of 10 bytes)"
        );
        let (r, w) = pipe().unwrap();
        w.write_all(&[1, 0]).unwrap();
        drop(w);
        assert!(r.recv().unwrap_err().to_string().contains("header (2 of 4"));
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_before_anything_is_written() {
        let (r, w) = pipe().unwrap();
        // Zeroed pages are mapped lazily: this touches no memory.
        let half = vec![0u8; MAX_FRAME / 2 + 1];
        let e = w.send_parts(&[&half, &half]).unwrap_err();
        assert_eq!(e.errno(), Some(Errno::EMSGSIZE));
        assert_eq!(header(MAX_FRAME), Ok((MAX_FRAME as u32).to_le_bytes()));
        assert_eq!(header(MAX_FRAME + 1), Err(Errno::EMSGSIZE));
        drop(w);
        assert_eq!(r.recv().unwrap(), None, "nothing was written");
    }

    #[test]
    fn a_huge_length_is_refused() {
        let (r, w) = pipe().unwrap();
        w.write_all(&u32::MAX.to_le_bytes()).unwrap();
        assert!(r.recv().unwrap_err().to_string().contains("over the limit"));
    }

    #[test]
    fn descriptors_are_close_on_exec() {
        let (r, w) = pipe().unwrap();
        let (a, _b) = duplex().unwrap();
        for fd in [r.as_fd(), w.as_fd(), a.as_fd()] {
            let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
            assert_ne!(flags & libc::FD_CLOEXEC, 0);
        }
    }

    #[test]
    fn frame_reader_hands_out_frames_of_any_size() {
        let (a, b) = duplex().unwrap();
        let sizes = [0usize, 1, 5, 4092, 70_000, 3, 200_000, 5_000_000, 7, 0];
        let t = std::thread::spawn(move || {
            for (i, &n) in sizes.iter().enumerate() {
                a.send(&vec![i as u8; n]).unwrap();
            }
        });
        let mut r = FrameReader::new(&b);
        for (i, &n) in sizes.iter().enumerate() {
            assert_eq!(
                r.recv().unwrap().unwrap(),
                &vec![i as u8; n][..],
                "frame {i}"
            );
        }
        t.join().unwrap();
        assert_eq!(r.recv().unwrap(), None);
    }

    #[test]
    fn frame_reader_reports_a_cut_frame() {
        let (r, w) = pipe().unwrap();
        w.send(b"whole").unwrap();
        w.write_all(&9u32.to_le_bytes()).unwrap();
        w.write_all(b"half").unwrap();
        drop(w);
        let mut fr = FrameReader::new(r);
        assert_eq!(fr.recv().unwrap(), Some(&b"whole"[..]));
        let e = fr.recv().unwrap_err();
        assert_eq!(
            e.to_string(),
            "recv(pipe): end of file inside a frame (4 of 9 bytes)"
        );
        assert_eq!(e.kind(), crate::ErrorKind::BadData);
    }

    #[test]
    fn a_frame_reader_allocates_only_what_arrives() {
        let (r, w) = pipe().unwrap();
        w.write_all(&(MAX_FRAME as u32).to_le_bytes()).unwrap();
        w.write_all(b"abc").unwrap();
        drop(w);
        let mut frames = FrameReader::new(r);
        let e = frames.recv().unwrap_err();
        assert!(e.to_string().contains("end of file inside a frame"), "{e}");
        assert!(frames.buf.len() <= 128 * 1024, "{} bytes", frames.buf.len());
    }

    #[test]
    fn a_claimed_length_allocates_only_what_arrives() {
        let (r, w) = pipe().unwrap();
        w.write_all(&(MAX_FRAME as u32).to_le_bytes()).unwrap();
        w.write_all(b"abc").unwrap();
        drop(w);
        let mut buf = Vec::new();
        let e = recv_into(r.as_fd(), &mut buf).unwrap_err();
        assert_eq!(
            e,
            RecvError::Torn(format!(
                "end of file inside a frame (3 of {MAX_FRAME} bytes)"
            ))
        );
        assert_eq!(buf, b"abc");
        assert!(buf.capacity() <= 64 * 1024, "{} bytes", buf.capacity());
    }

    /// Read `r` (non-blocking) with `p` until a frame is complete, waiting
    /// with poll(2) between pieces.
    fn next_piece(p: &mut PartialFrame, r: &Reader, buf: &mut Vec<u8>) -> Piece {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        loop {
            match p.read(r.as_fd(), buf).unwrap() {
                Piece::Partial => {
                    let mut fds = [PollFd::new(r.as_fd(), PollFlags::POLLIN)];
                    poll(&mut fds, PollTimeout::NONE).unwrap();
                }
                piece => return piece,
            }
        }
    }

    #[test]
    fn a_partial_frame_comes_in_pieces_and_allocates_as_they_come() {
        let (r, w) = pipe().unwrap();
        set_nonblocking(r.as_fd()).unwrap();
        let mut p = PartialFrame::new();
        let mut buf = Vec::new();
        assert_eq!(p.read(r.as_fd(), &mut buf), Ok(Piece::Partial));
        assert!(!p.is_started());
        // A header that claims the largest frame, in two pieces, then 3 bytes.
        let len = (MAX_FRAME as u32).to_le_bytes();
        w.write_all(&len[..2]).unwrap();
        assert_eq!(p.read(r.as_fd(), &mut buf), Ok(Piece::Partial));
        assert!(p.is_started());
        w.write_all(&len[2..]).unwrap();
        w.write_all(b"abc").unwrap();
        assert_eq!(p.read(r.as_fd(), &mut buf), Ok(Piece::Partial));
        assert_eq!(&buf[..3], b"abc");
        assert!(buf.capacity() <= 64 * 1024, "{} bytes", buf.capacity());
        drop(w);
        let e = p.read(r.as_fd(), &mut buf).unwrap_err();
        assert_eq!(
            e,
            RecvError::Torn(format!(
                "end of file inside a frame (3 of {MAX_FRAME} bytes)"
            ))
        );
    }

    #[test]
    fn partial_frames_come_out_whole_one_at_a_time() {
        let (r, w) = pipe().unwrap();
        set_nonblocking(r.as_fd()).unwrap();
        let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let sent = big.clone();
        let writer = std::thread::spawn(move || {
            w.send(b"hello").unwrap();
            w.send(b"").unwrap();
            w.send(&sent).unwrap();
            w.send(b"bye").unwrap();
        });
        let mut p = PartialFrame::new();
        // A reused buffer longer than the frames: only the frame is kept.
        let mut buf = vec![7u8; 10];
        for want in [&b"hello"[..], b"", &big, b"bye"] {
            assert_eq!(next_piece(&mut p, &r, &mut buf), Piece::Frame);
            assert!(buf == want, "a frame of {} bytes", want.len());
        }
        writer.join().unwrap();
        assert_eq!(next_piece(&mut p, &r, &mut buf), Piece::Eof);
    }

    #[test]
    fn a_partial_frame_over_the_limit_is_refused_before_allocating() {
        let (r, w) = pipe().unwrap();
        set_nonblocking(r.as_fd()).unwrap();
        w.write_all(&(MAX_FRAME as u32 + 1).to_le_bytes()).unwrap();
        let mut buf = Vec::new();
        let e = PartialFrame::new().read(r.as_fd(), &mut buf).unwrap_err();
        assert!(
            matches!(&e, RecvError::Torn(why) if why.contains("over the limit")),
            "{e:?}"
        );
        assert_eq!(buf.capacity(), 0);
    }
}
