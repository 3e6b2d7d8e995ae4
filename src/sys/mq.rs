//! POSIX message queues (mq_overview(7)), only as a peer for pk-bench:
//! the kernel's own bounded queue of messages between processes.

use std::ffi::CStr;

use nix::errno::Errno;

/// An open message queue descriptor, closed on drop.
#[derive(Debug)]
pub struct Mq(libc::mqd_t);

impl Mq {
    /// mq_open(name, O_CREAT | O_EXCL | O_RDWR, 0600) with room for
    /// `maxmsg` messages of `msgsize` bytes.
    pub fn create(name: &CStr, maxmsg: i64, msgsize: i64) -> Result<Mq, Errno> {
        // SAFETY: mq_attr is plain C data, zeroed then filled in.
        let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
        attr.mq_maxmsg = maxmsg;
        attr.mq_msgsize = msgsize;
        // SAFETY: `name` is NUL-terminated and `attr` valid for the call;
        // with O_CREAT mq_open reads a mode and an attr pointer, passed.
        let d = unsafe {
            libc::mq_open(
                name.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
                &attr as *const libc::mq_attr,
            )
        };
        Errno::result(d).map(Mq)
    }

    /// mq_open(name, O_RDWR) of an existing queue.
    pub fn open(name: &CStr) -> Result<Mq, Errno> {
        // SAFETY: `name` is NUL-terminated; no variadic argument is read.
        let d = unsafe { libc::mq_open(name.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        Errno::result(d).map(Mq)
    }

    /// mq_send, waiting while full.
    pub fn send(&self, msg: &[u8]) -> Result<(), Errno> {
        // SAFETY: `msg` is valid for its length during the call.
        let r = unsafe { libc::mq_send(self.0, msg.as_ptr().cast(), msg.len(), 0) };
        Errno::result(r).map(drop)
    }

    /// mq_receive into `buf` (at least the queue's message size), waiting
    /// while empty; returns the message length.
    pub fn receive(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        // SAFETY: `buf` is writable for its length during the call; a null
        // priority pointer is allowed.
        let r = unsafe {
            libc::mq_receive(
                self.0,
                buf.as_mut_ptr().cast(),
                buf.len(),
                std::ptr::null_mut(),
            )
        };
        Errno::result(r).map(|n| n as usize)
    }

    /// mq_unlink.
    pub fn unlink(name: &CStr) -> Result<(), Errno> {
        // SAFETY: `name` is NUL-terminated.
        Errno::result(unsafe { libc::mq_unlink(name.as_ptr()) }).map(drop)
    }
}

impl Drop for Mq {
    fn drop(&mut self) {
        // SAFETY: the descriptor came from mq_open and is closed once.
        unsafe { libc::mq_close(self.0) };
    }
}
