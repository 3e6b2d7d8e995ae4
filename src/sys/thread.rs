//! pthread_create(3) and pthread_join(3), the calls a C program makes.
//!
//! `std::thread::spawn` adds about ten system calls to every thread (an
//! alternate signal stack mapped, guarded and unmapped again for its
//! stack-overflow message, the stack bounds read back through
//! sched_getaffinity, a gettid), which made a thread's start and join cost
//! 1.3× what C pays. [`spawn`] makes only the calls glibc's
//! pthread_create makes. Rust's thread-locals work on such a thread as on
//! any other (they are ELF TLS, with destructors registered through glibc),
//! and `std::thread::current()` gives it an unnamed handle. A stack
//! overflow on it ends the process with SIGSEGV rather than std's message.

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

use nix::errno::Errno;

/// The body a new thread runs.
pub type Main = Box<dyn FnOnce() + Send + 'static>;

/// A thread started by [`spawn`]: joined by [`RawThread::join`], detached
/// when dropped unjoined.
#[derive(Debug)]
pub struct RawThread {
    id: libc::pthread_t,
}

/// Start a thread running `main`, with glibc's default attributes (the
/// stack size comes from `ulimit -s`, as in C). `main` must not unwind:
/// a panic that escapes it is caught and dropped here, because unwinding
/// out of the thread's `extern "C"` entry point would abort the process.
///
/// Errors: pthread_create's, typically EAGAIN (too many threads).
pub fn spawn(main: Main) -> Result<RawThread, Errno> {
    let arg: *mut Main = Box::into_raw(Box::new(main));
    let mut id: libc::pthread_t = 0;
    // SAFETY: `id` is a valid place for the new thread's id; a null
    // attribute pointer asks for the defaults; `entry` has the signature
    // pthread_create expects and takes ownership of `arg`, a pointer from
    // Box::into_raw that nothing else uses once the thread has started.
    let rc = unsafe { libc::pthread_create(&mut id, std::ptr::null(), entry, arg.cast()) };
    if rc != 0 {
        // SAFETY: no thread was started, so `arg` is still ours alone; it
        // came from Box::into_raw above and is freed exactly once, here.
        drop(unsafe { Box::from_raw(arg) });
        return Err(Errno::from_raw(rc));
    }
    Ok(RawThread { id })
}

extern "C" fn entry(arg: *mut c_void) -> *mut c_void {
    // SAFETY: `arg` is the pointer spawn made with Box::into_raw and handed
    // to this thread alone; it is turned back into a Box exactly once.
    let main = unsafe { Box::from_raw(arg.cast::<Main>()) };
    // Unwinding out of an extern "C" function aborts: stop a panic here.
    let _ = catch_unwind(AssertUnwindSafe(main));
    std::ptr::null_mut()
}

impl RawThread {
    /// Wait for the thread to end (pthread_join).
    /// When the join fails (EDEADLK: the thread joining itself), the
    /// handle is dropped and so detaches the thread, which then frees its
    /// stack when it ends.
    pub fn join(self) -> Result<(), Errno> {
        // SAFETY: `id` names a thread this handle started and has neither
        // joined nor detached (join takes the handle by value, and a
        // joined handle is forgotten, never dropped); a null result
        // pointer is allowed.
        let rc = unsafe { libc::pthread_join(self.id, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(Errno::from_raw(rc));
        }
        // Joined: nothing left to detach.
        std::mem::forget(self);
        Ok(())
    }
}

impl RawThread {
    /// Set the thread's OS name (what `ps -L` and
    /// `/proc/<pid>/task/<tid>/comm` show) with pthread_setname_np(3),
    /// cut to the 15 bytes the kernel keeps (and at a NUL byte). A thread
    /// that has already ended is not renamed (glibc then names no task:
    /// ENOENT).
    pub fn set_os_name(&self, name: &[u8]) -> Result<(), Errno> {
        let mut buf = [0u8; 16];
        let name = name.split(|&b| b == 0).next().unwrap_or_default();
        let n = name.len().min(15);
        buf[..n].copy_from_slice(&name[..n]);
        // SAFETY: `id` names a thread this handle started and has neither
        // joined nor detached (join consumes the handle, drop detaches it),
        // so it is a valid pthread_t, even if the thread has ended; `buf` is
        // a NUL-terminated string of at most 15 bytes, as the call requires
        // (ERANGE otherwise), and outlives the call.
        let rc = unsafe { libc::pthread_setname_np(self.id, buf.as_ptr().cast()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(Errno::from_raw(rc))
        }
    }

    /// The thread's pthread_t, as a number: what [`current_id`] returns on
    /// that thread (Python's `Thread.ident`).
    #[allow(clippy::unnecessary_cast)] // pthread_t is not u64 everywhere
    pub fn id(&self) -> u64 {
        self.id as u64
    }
}

/// The calling thread's pthread_t, as a number: Python's
/// `threading.get_ident()`. Unique among the threads alive at once; a
/// finished thread's number may be given to a new one.
#[allow(clippy::unnecessary_cast)] // pthread_t is not u64 everywhere
pub fn current_id() -> u64 {
    // SAFETY: pthread_self has no preconditions and cannot fail.
    (unsafe { libc::pthread_self() }) as u64
}

impl Drop for RawThread {
    /// An unjoined thread is detached: it runs on, and its resources are
    /// freed when it ends.
    fn drop(&mut self) {
        // SAFETY: `id` names a thread this handle started, not joined (a
        // joined handle is forgotten) and not yet detached: Drop runs once.
        unsafe { libc::pthread_detach(self.id) };
    }
}
