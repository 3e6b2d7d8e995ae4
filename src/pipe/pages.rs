//! [`PageWriter`]: a pipe writer that lends its own pages to the pipe
//! with vmsplice(2) instead of copying bytes into it.

use std::collections::VecDeque;
use std::os::fd::AsFd;

use memmap2::MmapMut;
use nix::errno::Errno;

use super::Writer;
use crate::error::{Error, Result};

/// The page size buffers are rounded up to.
fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| n.is_power_of_two())
        .unwrap_or(4096)
}

/// A pipe writer that lends buffers it owns to the pipe with vmsplice(2)
/// instead of copying bytes into it.
///
/// write(2) on a pipe allocates kernel pages and copies every byte into
/// them, and read(2) copies them out again: two copies and a page
/// allocation per 4 KiB. vmsplice(2) puts references to the writer's
/// pages in the pipe instead, so the reader's copy is the only one; one
/// way between two processes that roughly doubles the bandwidth of a
/// pipe (`pk-bench --only pipe_bw_vmsplice_GBps`, beside the C limit's
/// write/read `pipe_bw_GBps`).
///
/// The catch is that the pipe then holds the writer's memory, not a copy
/// of it, until the reader has read it: bytes changed before that are the
/// bytes the reader gets. A `PageWriter` therefore owns its buffers, hands
/// one out ([`PageWriter::buffer`]) to be filled, lends it to the pipe on
/// [`PageWriter::commit`], and hands it out again only once every byte of
/// it has been read, which it learns from the pipe itself (ioctl
/// FIONREAD: the bytes still unread; the pipe is first in, first out).
/// It maps new buffers until they hold twice the pipe's capacity, and
/// then reuses the ones read; it never holds more than the pipe's page
/// count plus one (each buffer still in the pipe takes at least one of
/// its slots, so with that many the oldest has been read), and never
/// waits for the reader except where write(2) would (a full pipe).
///
/// The reader must copy the bytes out: read(2), readv(2), or anything
/// built on them. splice(2) and tee(2) *from* the pipe pass the page
/// references on (to another pipe, a socket) instead of copying, and the
/// bytes they forward would change when this writer reuses the buffer.
///
/// The library uses it nowhere by itself: it is for a program that moves
/// bulk data one way through a pipe it controls both ends of.
///
/// ```no_run
/// use posixkit::pipe::{self, PageWriter};
/// let (reader, writer) = pipe::pipe().unwrap();
/// let mut pages = PageWriter::new(writer, 64 * 1024).unwrap();
/// let buf = pages.buffer().unwrap();
/// buf[..5].copy_from_slice(b"hello");
/// pages.commit(5).unwrap();
/// let mut got = [0u8; 5];
/// assert_eq!(reader.read_full(&mut got).unwrap(), 5);
/// assert_eq!(&got, b"hello");
/// ```
#[derive(Debug)]
pub struct PageWriter {
    pipe: Writer,
    /// Bytes per buffer, a whole number of pages.
    size: usize,
    /// The pipe's capacity in bytes.
    capacity: usize,
    /// The most buffers it holds at once: the pipe's pages plus one.
    most: usize,
    /// The buffer handed out by [`PageWriter::buffer`], not committed yet.
    current: Option<MmapMut>,
    /// Buffers lent to the pipe, oldest first, each with the count of
    /// bytes committed up to its end.
    lent: VecDeque<(u64, MmapMut)>,
    /// Buffers every byte of which has been read.
    free: Vec<MmapMut>,
    /// Bytes committed since the start.
    committed: u64,
}

impl PageWriter {
    /// A writer on `pipe` whose buffers hold `size` bytes (rounded up to
    /// whole pages; 1 byte to 1 GiB). A buffer as large as the pipe's
    /// capacity (64 KiB unless [`Writer::set_capacity`] changed it) is a
    /// good choice. Errors: `size` out of range; fcntl(F_GETPIPE_SZ) when
    /// `pipe` is not a pipe.
    pub fn new(pipe: Writer, size: usize) -> Result<PageWriter> {
        if size == 0 || size > super::MAX_FRAME {
            return Err(Error::invalid("buffer size", "must be 1 byte to 1 GiB"));
        }
        let page = page_size();
        let size = size.div_ceil(page) * page;
        let capacity =
            super::capacity(pipe.as_fd()).map_err(|e| Error::sys("fcntl", "F_GETPIPE_SZ", e))?;
        Ok(PageWriter {
            pipe,
            size,
            capacity,
            most: capacity / page + 1,
            current: None,
            lent: VecDeque::new(),
            free: Vec::new(),
            committed: 0,
        })
    }

    /// The buffer to fill next, all of it this writer's: no reader can see
    /// its bytes until [`PageWriter::commit`]. The same buffer until then.
    /// Its contents are whatever it last held (zeroes when new).
    pub fn buffer(&mut self) -> Result<&mut [u8]> {
        if self.current.is_none() {
            let buf = self.take()?;
            self.current = Some(buf);
        }
        Ok(&mut self.current.as_mut().expect("set above")[..])
    }

    /// Lend the first `len` bytes of the buffer from [`PageWriter::buffer`]
    /// to the pipe; blocks while the pipe is full, as write(2) does. A
    /// reader that has gone gives EPIPE. `len` 0 sends nothing. Errors:
    /// `len` over the buffer size, or no buffer taken.
    pub fn commit(&mut self, len: usize) -> Result<()> {
        if len > self.size {
            return Err(Error::invalid(
                "commit",
                format!("{len} bytes is more than the buffer's {}", self.size),
            ));
        }
        let Some(buf) = self.current.take() else {
            return Err(Error::invalid("commit", "no buffer: call buffer() first"));
        };
        let mut done = 0;
        while done < len {
            match crate::sys::pipe::vmsplice(self.pipe.as_fd(), &buf[done..len]) {
                Ok(0) => return Err(Error::sys("vmsplice", "pipe", Errno::EIO)),
                Ok(n) => done += n,
                Err(Errno::EINTR) => {}
                Err(e) => {
                    // Some of it may be in the pipe already: keep the
                    // buffer out of use until that part has been read.
                    self.lend(buf, done);
                    return Err(Error::sys("vmsplice", "pipe", e));
                }
            }
        }
        self.lend(buf, len);
        Ok(())
    }

    /// Copy all of `data` into buffers and commit them: one copy, by this
    /// process, into pages it reuses, instead of write(2)'s copy into
    /// pages the kernel allocates for each write.
    pub fn write_all(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let buf = self.buffer()?;
            let n = buf.len().min(data.len());
            buf[..n].copy_from_slice(&data[..n]);
            self.commit(n)?;
            data = &data[n..];
        }
        Ok(())
    }

    /// The pipe it writes to.
    pub fn get_ref(&self) -> &Writer {
        &self.pipe
    }

    /// Bytes per buffer.
    pub fn buffer_size(&self) -> usize {
        self.size
    }

    /// How many buffers it holds now (handed out, lent, free).
    pub fn buffers(&self) -> usize {
        usize::from(self.current.is_some()) + self.lent.len() + self.free.len()
    }

    /// Give the pipe back. Bytes still unread stay valid for the reader:
    /// the pipe holds references to their pages, which outlive this
    /// writer's mappings.
    pub fn into_inner(self) -> Writer {
        self.pipe
    }

    /// Note `buf` as lent with `len` bytes in the pipe (free at once when 0).
    fn lend(&mut self, buf: MmapMut, len: usize) {
        if len == 0 {
            self.free.push(buf);
            return;
        }
        self.committed += len as u64;
        self.lent.push_back((self.committed, buf));
    }

    /// A buffer nobody reads: a free one, a new one while the buffers lent
    /// hold less than twice the pipe's capacity, one the reader has
    /// finished with, or else a new one. Asking the pipe (one ioctl) only
    /// once that much is lent lets one call give back many buffers.
    fn take(&mut self) -> Result<MmapMut> {
        if let Some(buf) = self.free.pop() {
            return Ok(buf);
        }
        let held = self.buffers();
        if held < self.most && (held + 1) * self.size <= 2 * self.capacity {
            return self.map();
        }
        if !self.lent.is_empty() {
            let unread = crate::sys::pipe::unread(self.pipe.as_fd())
                .map_err(|e| Error::sys("ioctl", "FIONREAD", e))?;
            let read = self.committed.saturating_sub(unread as u64);
            while self.lent.front().is_some_and(|(end, _)| *end <= read) {
                let (_, buf) = self.lent.pop_front().expect("checked");
                self.free.push(buf);
            }
            if let Some(buf) = self.free.pop() {
                return Ok(buf);
            }
        }
        // Every lent buffer still holds at least one unread byte, so at
        // least one of the pipe's slots: with `most` of them lent the
        // oldest would have been read already.
        debug_assert!(self.lent.len() < self.most);
        self.map()
    }

    /// A new buffer.
    fn map(&self) -> Result<MmapMut> {
        MmapMut::map_anon(self.size).map_err(|e| Error::io("mmap", "a pipe buffer", &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_arrive_in_order_and_buffers_are_reused_once_read() {
        let (r, w) = super::super::pipe().unwrap();
        let capacity = super::super::capacity(w.as_fd()).unwrap();
        let mut pages = PageWriter::new(w, capacity - 1).unwrap();
        assert_eq!(pages.buffer_size(), capacity, "whole pages");
        // Rounds of a full buffer, each read back before the next: two
        // buffers (twice the pipe's capacity) serve them all, and each
        // round's bytes are its own.
        for round in 0..6u8 {
            let buf = pages.buffer().unwrap();
            buf.fill(b'a' + round);
            pages.commit(capacity).unwrap();
            let mut got = vec![0u8; capacity];
            assert_eq!(r.read_full(&mut got).unwrap(), capacity);
            assert!(got.iter().all(|&b| b == b'a' + round), "round {round}");
        }
        assert_eq!(pages.buffers(), 2);
    }

    #[test]
    fn a_buffer_still_in_the_pipe_is_never_handed_out() {
        let (r, w) = super::super::pipe().unwrap();
        // Four pages of pipe: at most five buffers of a page.
        assert_eq!(w.set_capacity(4 * 4096).unwrap(), 4 * 4096);
        let mut pages = PageWriter::new(w, 4096).unwrap();
        // Fill the next buffer's first byte with `letter`; what it held.
        let fill = |pages: &mut PageWriter, letter: u8| {
            let buf = pages.buffer().unwrap();
            std::mem::replace(&mut buf[0], letter)
        };
        for letter in *b"abcd" {
            assert_eq!(fill(&mut pages, letter), 0, "a new buffer");
            pages.commit(1).unwrap();
        }
        // The pipe's four slots are full. Reading "a" frees a slot and
        // the first buffer; a fifth is mapped still, then the pipe is
        // full again and the next buffer must be the one read, "a",
        // never one of b, c, d, e still in the pipe.
        let mut one = [0u8; 1];
        assert_eq!(r.read_full(&mut one).unwrap(), 1);
        assert_eq!(&one, b"a");
        assert_eq!(fill(&mut pages, b'e'), 0, "a new buffer");
        pages.commit(1).unwrap();
        assert_eq!(pages.buffers(), 5);
        assert_eq!(fill(&mut pages, b'z'), b'a', "the buffer already read");
        assert_eq!(pages.buffers(), 5);
        let mut four = [0u8; 4];
        assert_eq!(r.read_full(&mut four).unwrap(), 4);
        assert_eq!(&four, b"bcde", "the bytes in the pipe, unchanged");
        pages.commit(1).unwrap();
        assert_eq!(r.read_full(&mut one).unwrap(), 1);
        assert_eq!(&one, b"z");
    }

    #[test]
    fn write_all_and_a_reader_that_is_gone() {
        let (r, w) = super::super::pipe().unwrap();
        let mut pages = PageWriter::new(w, 4096).unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        pages.write_all(&data).unwrap();
        let mut got = vec![0u8; data.len()];
        assert_eq!(r.read_full(&mut got).unwrap(), data.len());
        assert_eq!(got, data);
        drop(r);
        pages.buffer().unwrap();
        let e = pages.commit(1).unwrap_err();
        assert!(e.to_string().contains("vmsplice"), "{e}");
        assert!(pages.commit(1).is_err(), "no buffer taken");
        pages.buffer().unwrap();
        assert!(pages.commit(pages.buffer_size() + 1).is_err());
        assert!(PageWriter::new(pages.into_inner(), 0).is_err());
    }
}
