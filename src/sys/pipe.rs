//! Pipe calls nix does not wrap: how many bytes a pipe holds unread.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

/// ioctl(FIONREAD) on either end of a pipe: the bytes written to it and
/// not yet read (pipe(7)).
pub fn unread(fd: BorrowedFd<'_>) -> Result<usize, Errno> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through its pointer argument;
    // `n` is a valid, writable c_int for the duration of the call, and
    // the descriptor is borrowed, so open.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    if r == -1 {
        return Err(Errno::last());
    }
    usize::try_from(n).map_err(|_| Errno::EINVAL)
}

/// vmsplice(2) `bytes` into the pipe `fd` (no flags): the pipe takes
/// references to the pages that hold them rather than a copy, and blocks
/// while it is full, as write(2) does. Returns how many bytes it took.
/// Until the reader has read them, the pipe shows whatever those pages
/// hold: [`crate::pipe::PageWriter`] keeps them unchanged until then.
pub fn vmsplice(fd: BorrowedFd<'_>, bytes: &[u8]) -> Result<usize, Errno> {
    let iov = libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    };
    // SAFETY: one iovec describing `bytes`, valid and readable for the
    // call; without SPLICE_F_GIFT the kernel only reads the pages (it
    // never writes to them), and the references it keeps are its own
    // page references, valid after the call whatever happens to our
    // mapping, so no Rust reference is read or written behind our back.
    let r = unsafe { libc::vmsplice(fd.as_raw_fd(), &iov, 1, 0) };
    if r < 0 {
        return Err(Errno::last());
    }
    usize::try_from(r).map_err(|_| Errno::EINVAL)
}
