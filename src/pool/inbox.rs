//! The parent's side of one worker's result pipe: a frame in one read(2)
//! where the pipe holds all of it, and never a read that could block
//! unless the caller asks for one.
//!
//! [`crate::pipe::PartialFrame`] reads a frame's 4-byte length, then its
//! payload: two system calls for every result, and it never reads past a
//! frame's end. Here the length and the payload come in one readv(2),
//! the payload part sized to what the parent expects of that result (it
//! built the batch, so it knows the size of a batch of fixed-width
//! successes). A frame shorter than expected (a failed item's message)
//! can bring the next frame's first bytes along; they wait in
//! [`Inbox::carry`] and are taken before the pipe is read again, and
//! [`Inbox::has_buffered`] tells the caller not to wait on the pipe while
//! they do.
//!
//! The pipe end is blocking. A caller that must not block (a deadline, or
//! several workers to watch) calls [`Inbox::read`] only after poll(2) said
//! the end is readable: each call makes at most one read, which then
//! returns at once. A caller with nothing else to wait for calls it until
//! a frame is whole ([`Inbox::read_blocking`]), and so sleeps in the read
//! itself, not in a poll(2) (the pool looks at the end for a moment first,
//! without sleeping: `pool::spin`).

use std::io::IoSliceMut;
use std::os::fd::BorrowedFd;

use nix::errno::Errno;

use crate::pipe::{self, HEADER, Piece, RecvError};

/// The most payload asked for before a frame's length is known: what a
/// default pipe can hold. The buffer then grows with the bytes that come
/// (doubling), never to the length a header claims.
const FIRST_READ: usize = 64 * 1024;

/// Payloads up to this size are read whole into a buffer on the stack.
const SMALL: usize = 252;

/// One worker's result stream, between frames or inside one.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    /// The current frame's length prefix, as far as it has come.
    head: [u8; HEADER],
    /// Bytes of the current frame received, its length prefix included.
    got: usize,
    /// Bytes that came past the end of the last frame: the start of the
    /// next ones, taken before the pipe is read again.
    carry: Vec<u8>,
    /// How much of `carry` has been taken.
    taken: usize,
}

impl Inbox {
    /// A stream between frames.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Whether bytes read earlier wait to be taken: the caller must take
    /// them ([`Inbox::read`]) before it waits for the pipe.
    pub(crate) fn has_buffered(&self) -> bool {
        self.taken < self.carry.len()
    }

    /// The next piece of a frame, into `buf` (the same buffer from call to
    /// call until the frame is whole; its old bytes are overwritten, never
    /// zeroed): from the bytes read earlier when there are some, else with
    /// one read(2) from `fd`, asking for up to `expect` bytes of payload
    /// when the frame has not begun. Blocks only if `fd` has nothing to
    /// read (call it after poll(2) said it has). EINTR is retried.
    /// [`Piece::Partial`]: the rest of the frame is still to come.
    pub(crate) fn read(
        &mut self,
        fd: BorrowedFd<'_>,
        buf: &mut Vec<u8>,
        expect: usize,
    ) -> Result<Piece, RecvError> {
        if self.has_buffered() {
            return self.take_carried(buf);
        }
        if self.got < HEADER {
            // The length prefix (or its rest) and as much payload as this
            // result is expected to have, in one call.
            let want = expect.min(FIRST_READ);
            if buf.len() < want {
                buf.resize(want, 0);
            }
            let n = if want <= SMALL {
                // A small frame comes whole into a stack buffer and is
                // copied apart: read(2) costs less than readv(2)'s vector.
                let mut small = [0u8; HEADER + SMALL];
                let room = HEADER - self.got + want;
                let n = pipe::read(fd, &mut small[..room]).map_err(RecvError::Sys)?;
                let h = n.min(HEADER - self.got);
                self.head[self.got..self.got + h].copy_from_slice(&small[..h]);
                buf[..n - h].copy_from_slice(&small[h..n]);
                n
            } else {
                let mut parts = [
                    IoSliceMut::new(&mut self.head[self.got..]),
                    IoSliceMut::new(&mut buf[..want]),
                ];
                loop {
                    match nix::sys::uio::readv(fd, &mut parts) {
                        Err(Errno::EINTR) => continue,
                        r => break r.map_err(RecvError::Sys)?,
                    }
                }
            };
            if n == 0 {
                return match self.got {
                    0 => Ok(Piece::Eof),
                    got => Err(pipe::torn_header(got)),
                };
            }
            let head_part = n.min(HEADER - self.got);
            self.got += head_part;
            if self.got < HEADER {
                return Ok(Piece::Partial);
            }
            let len = pipe::frame_len(self.head)?;
            let mut body = n - head_part;
            if body > len {
                // The frame was shorter than expected: what came after it
                // belongs to the next one.
                self.carry.clear();
                self.carry.extend_from_slice(&buf[len..body]);
                self.taken = 0;
                body = len;
            }
            self.got += body;
            return Ok(self.finish_if_whole(buf, len));
        }
        let len = pipe::frame_len(self.head)?;
        let have = self.got - HEADER;
        let room = len.min(have.saturating_mul(2).max(FIRST_READ));
        if buf.len() < room {
            buf.resize(room, 0);
        }
        let end = buf.len().min(len);
        let n = pipe::read(fd, &mut buf[have..end]).map_err(RecvError::Sys)?;
        if n == 0 {
            return Err(pipe::torn_frame(have, len));
        }
        self.got += n;
        Ok(self.finish_if_whole(buf, len))
    }

    /// [`Inbox::read`] until the frame is whole or the stream ends: for a
    /// caller with no deadline and nothing else to watch. A signal that
    /// interrupts the wait (a handler without SA_RESTART) returns
    /// [`Piece::Partial`], as poll(2)'s EINTR wakes the caller.
    pub(crate) fn read_blocking(
        &mut self,
        fd: BorrowedFd<'_>,
        buf: &mut Vec<u8>,
        expect: usize,
    ) -> Result<Piece, RecvError> {
        loop {
            match self.read(fd, buf, expect) {
                Ok(Piece::Partial) => continue,
                Err(RecvError::Sys(Errno::EINTR)) => return Ok(Piece::Partial),
                r => return r,
            }
        }
    }

    /// Take the next piece of a frame from `carry`, with no system call.
    fn take_carried(&mut self, buf: &mut Vec<u8>) -> Result<Piece, RecvError> {
        let mut rest = &self.carry[self.taken..];
        if self.got < HEADER {
            let n = rest.len().min(HEADER - self.got);
            self.head[self.got..self.got + n].copy_from_slice(&rest[..n]);
            self.got += n;
            self.taken += n;
            rest = &rest[n..];
            if self.got < HEADER {
                self.drop_carry_if_taken();
                return Ok(Piece::Partial);
            }
        }
        let len = pipe::frame_len(self.head)?;
        let have = self.got - HEADER;
        let n = rest.len().min(len - have);
        if buf.len() < have + n {
            buf.resize(have + n, 0);
        }
        buf[have..have + n].copy_from_slice(&rest[..n]);
        self.got += n;
        self.taken += n;
        self.drop_carry_if_taken();
        Ok(self.finish_if_whole(buf, len))
    }

    fn drop_carry_if_taken(&mut self) {
        if self.taken == self.carry.len() {
            self.carry.clear();
            self.taken = 0;
        }
    }

    /// [`Piece::Frame`] (and a stream between frames) once the `len`
    /// payload bytes have all come, the buffer cut to them.
    fn finish_if_whole(&mut self, buf: &mut Vec<u8>, len: usize) -> Piece {
        if self.got - HEADER < len {
            return Piece::Partial;
        }
        buf.truncate(len);
        self.got = 0;
        Piece::Frame
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_le_bytes().to_vec();
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn a_frame_of_the_expected_size_is_one_read() {
        let (r, w) = pipe::pipe().unwrap();
        w.write_all(&frame(b"0123456789")).unwrap();
        w.write_all(&frame(b"abc")).unwrap();
        let mut inbox = Inbox::new();
        let mut buf = Vec::new();
        assert_eq!(inbox.read(r.as_fd(), &mut buf, 10), Ok(Piece::Frame));
        assert_eq!(buf, b"0123456789");
        assert!(!inbox.has_buffered(), "nothing read past the frame");
        assert_eq!(inbox.read(r.as_fd(), &mut buf, 3), Ok(Piece::Frame));
        assert_eq!(buf, b"abc");
        drop(w);
        assert_eq!(inbox.read(r.as_fd(), &mut buf, 3), Ok(Piece::Eof));
    }

    #[test]
    fn bytes_past_a_short_frame_are_the_next_frames() {
        let (r, w) = pipe::pipe().unwrap();
        let mut all = frame(b"ab");
        all.extend(frame(b"cdefgh"));
        all.extend(frame(b""));
        all.extend(frame(b"ij"));
        w.write_all(&all).unwrap();
        drop(w);
        let mut inbox = Inbox::new();
        let mut buf = vec![9; 3];
        // Expecting far more than the first frame: one read takes all four.
        assert_eq!(inbox.read(r.as_fd(), &mut buf, 100), Ok(Piece::Frame));
        assert_eq!(buf, b"ab");
        assert!(inbox.has_buffered());
        let mut got = Vec::new();
        while inbox.has_buffered() {
            assert_eq!(inbox.read(r.as_fd(), &mut buf, 100), Ok(Piece::Frame));
            got.push(buf.clone());
        }
        assert_eq!(got, [b"cdefgh".to_vec(), b"".to_vec(), b"ij".to_vec()]);
        assert_eq!(inbox.read(r.as_fd(), &mut buf, 100), Ok(Piece::Eof));
    }

    #[test]
    fn a_frame_split_across_the_carry_and_the_pipe_comes_out_whole() {
        let (r, w) = pipe::pipe().unwrap();
        let second = frame(b"0123456789");
        let mut first = frame(b"x");
        first.extend_from_slice(&second[..3]); // half a length prefix
        w.write_all(&first).unwrap();
        let mut inbox = Inbox::new();
        let mut buf = Vec::new();
        assert_eq!(inbox.read(r.as_fd(), &mut buf, 50), Ok(Piece::Frame));
        assert_eq!(buf, b"x");
        assert_eq!(inbox.read(r.as_fd(), &mut buf, 50), Ok(Piece::Partial));
        assert!(!inbox.has_buffered());
        w.write_all(&second[3..8]).unwrap();
        assert_eq!(inbox.read(r.as_fd(), &mut buf, 50), Ok(Piece::Partial));
        w.write_all(&second[8..]).unwrap();
        assert_eq!(inbox.read(r.as_fd(), &mut buf, 50), Ok(Piece::Frame));
        assert_eq!(buf, b"0123456789");
    }

    #[test]
    fn a_long_frame_comes_in_reads_that_stop_at_its_end() {
        let (r, w) = pipe::pipe().unwrap();
        let payload: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let writer = std::thread::spawn(move || {
            w.write_all(&frame(&payload)).unwrap();
            w.write_all(&frame(b"next")).unwrap();
            payload
        });
        let mut inbox = Inbox::new();
        let mut buf = Vec::new();
        assert_eq!(
            inbox.read_blocking(r.as_fd(), &mut buf, 200_000),
            Ok(Piece::Frame)
        );
        let payload = writer.join().unwrap();
        assert!(buf == payload, "the long frame, whole");
        assert!(!inbox.has_buffered(), "no read went past its end");
        assert_eq!(inbox.read(r.as_fd(), &mut buf, 4), Ok(Piece::Frame));
        assert_eq!(buf, b"next");
    }

    #[test]
    fn a_stream_cut_inside_a_frame_is_torn() {
        let (r, w) = pipe::pipe().unwrap();
        w.write_all(&frame(b"0123456789")[..7]).unwrap();
        drop(w);
        let mut inbox = Inbox::new();
        let mut buf = Vec::new();
        assert_eq!(inbox.read(r.as_fd(), &mut buf, 2), Ok(Piece::Partial));
        assert!(matches!(
            inbox.read_blocking(r.as_fd(), &mut buf, 2),
            Err(RecvError::Torn(_))
        ));
        let (r, w) = pipe::pipe().unwrap();
        w.write_all(&[1, 0]).unwrap();
        drop(w);
        let mut inbox = Inbox::new();
        assert_eq!(inbox.read(r.as_fd(), &mut buf, 2), Ok(Piece::Partial));
        assert!(matches!(
            inbox.read(r.as_fd(), &mut buf, 2),
            Err(RecvError::Torn(_))
        ));
    }

    #[test]
    fn a_length_over_the_limit_is_refused_before_allocating() {
        let (r, w) = pipe::pipe().unwrap();
        w.write_all(&u32::MAX.to_le_bytes()).unwrap();
        let mut inbox = Inbox::new();
        let mut buf = Vec::new();
        assert!(matches!(
            inbox.read(r.as_fd(), &mut buf, 0),
            Err(RecvError::Torn(_))
        ));
        assert!(buf.capacity() < 1 << 20);
    }
}
