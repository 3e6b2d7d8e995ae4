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

use std::cell::Cell;
use std::ffi::c_void;
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use nix::errno::Errno;

/// A thread started by [`spawn`]: joined by [`RawThread::join`], detached
/// when dropped unjoined.
#[derive(Debug)]
pub struct RawThread {
    id: libc::pthread_t,
    /// The [`Start`] block the thread was given (its `F` erased).
    start: *mut Header,
    /// Frees `start` (the `Box<Start<F>>` it is), once nobody uses it.
    free: unsafe fn(*mut Header),
    /// The process that started it. A forked child holds a copy of the
    /// handle but not the thread: there glibc has recycled the thread's
    /// descriptor (and stack) for the child's next thread, so the copy
    /// must never reach pthread_join, _detach or _setname_np.
    owner: u32,
}

// SAFETY: a RawThread is a pthread_t and a pointer to a block that only
// the started thread and this handle touch, through the atomic state
// (the handle frees it after a join, or when the thread has finished);
// moving the handle to another thread changes none of that. `F` itself
// is Send (spawn requires it).
unsafe impl Send for RawThread {}

// SAFETY: through `&RawThread` only the pthread_t is read (its id, and
// pthread_setname_np, which may be called from any thread); the block is
// touched only by `join` and `drop`, which take the handle whole.
unsafe impl Sync for RawThread {}

/// What a thread has been given, behind its body: the state that decides
/// who frees the block. First field of every [`Start`] (`repr(C)`), so a
/// pointer to one is a pointer to the other.
#[derive(Debug)]
#[repr(C)]
struct Header {
    state: AtomicU8,
}

/// The thread runs; its handle holds it.
const RUNNING: u8 = 0;
/// The thread has taken its body out and run it: it no longer touches the
/// block.
const FINISHED: u8 = 1;
/// The handle was dropped without a join: the thread frees the block.
const DETACHED: u8 = 2;

#[repr(C)]
struct Start<F> {
    header: Header,
    body: ManuallyDrop<F>,
}

/// Start a thread running `f`, with glibc's default attributes (the
/// stack size comes from `ulimit -s`, as in C). A panic that escapes `f`
/// is caught and dropped here, because unwinding out of the thread's
/// `extern "C"` entry point would abort the process.
///
/// The thread itself neither allocates nor frees (the block that carries
/// `f` is freed by the handle, after the join), so glibc never sets up a
/// malloc cache and an arena for a thread whose body does not allocate
/// either: what C's `pthread_create` of a function that returns costs.
///
/// Errors: pthread_create's, typically EAGAIN (too many threads).
pub fn spawn<F: FnOnce() + Send + 'static>(f: F) -> Result<RawThread, Errno> {
    let start: *mut Start<F> = Box::into_raw(Box::new(Start {
        header: Header {
            state: AtomicU8::new(RUNNING),
        },
        body: ManuallyDrop::new(f),
    }));
    let mut id: libc::pthread_t = 0;
    // SAFETY: `id` is a valid place for the new thread's id; a null
    // attribute pointer asks for the defaults; `entry::<F>` has the
    // signature pthread_create expects and is given `start`, a live block
    // whose body it alone takes (see `entry`).
    let rc = unsafe { libc::pthread_create(&mut id, std::ptr::null(), entry::<F>, start.cast()) };
    if rc != 0 {
        // SAFETY: no thread was started, so the block is ours alone, from
        // Box::into_raw above, its body never taken: drop both, once.
        unsafe {
            let mut block = Box::from_raw(start);
            ManuallyDrop::drop(&mut block.body);
        }
        return Err(Errno::from_raw(rc));
    }
    Ok(RawThread {
        id,
        start: start.cast(),
        free: free_start::<F>,
        owner: std::process::id(),
    })
}

/// Free a [`Start`] block whose body was taken.
///
/// # Safety
///
/// `start` came from `Box::into_raw` of a `Start<F>` in [`spawn`], its
/// body has been taken by the thread, and nothing uses the block any more.
unsafe fn free_start<F>(start: *mut Header) {
    // SAFETY: the caller's contract; the body is ManuallyDrop, so only the
    // block's memory is freed.
    drop(unsafe { Box::from_raw(start.cast::<Start<F>>()) });
}

extern "C" fn entry<F: FnOnce()>(arg: *mut c_void) -> *mut c_void {
    let start = arg.cast::<Start<F>>();
    // SAFETY: `arg` is the block spawn made for this thread; it stays
    // allocated until this thread marks it FINISHED (the handle frees it
    // only after that, or after a join); the body is taken exactly once,
    // here, and the handle never reads it.
    let body = unsafe { ManuallyDrop::take(&mut (*start).body) };
    // Unwinding out of an extern "C" function aborts: stop a panic here.
    let _ = catch_unwind(AssertUnwindSafe(body));
    // SAFETY: the block is still allocated (see above); after this swap
    // the thread touches it only to free it, when the handle let go first.
    let handle_gone = unsafe { (*start).header.state.swap(FINISHED, Ordering::AcqRel) } == DETACHED;
    if handle_gone {
        // SAFETY: the handle was dropped (DETACHED) before this swap, so
        // nothing else uses the block, and the body was taken above.
        unsafe { free_start::<F>(start.cast()) };
    }
    std::ptr::null_mut()
}

impl RawThread {
    /// Wait for the thread to end (pthread_join).
    /// When the join fails (EDEADLK: the thread joining itself), the
    /// handle is dropped and so detaches the thread, which then frees its
    /// stack when it ends.
    pub fn join(self) -> Result<(), Errno> {
        if !self.owned() {
            // Not this process's thread: no such thread here. The copy
            // is let go without a call on the descriptor.
            std::mem::forget(self);
            return Err(Errno::ESRCH);
        }
        // SAFETY: `id` names a thread this handle started and has neither
        // joined nor detached (join takes the handle by value, and a
        // joined handle is forgotten, never dropped); a null result
        // pointer is allowed.
        let rc = unsafe { libc::pthread_join(self.id, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(Errno::from_raw(rc));
        }
        // SAFETY: the thread has ended, so it took its body and no longer
        // touches the block; this handle is forgotten below and never
        // frees it again.
        unsafe { (self.free)(self.start) };
        // Joined: nothing left to detach.
        std::mem::forget(self);
        Ok(())
    }
}

/// A thread-local slot holding one `Arc<T>` that needs no destructor when
/// the thread ends: a `thread_local!` of a type with `Drop` registers one
/// on its first use, and that registration allocates in the new thread
/// (glibc's list node, std's list), which then sets up a malloc cache and
/// an arena of its own. Whoever fills the slot empties it before the
/// thread ends ([`ArcSlot::replace`] with `None`); an `Arc` left in it is
/// leaked, never freed twice.
#[derive(Debug)]
pub(crate) struct ArcSlot<T>(Cell<*const T>);

impl<T> ArcSlot<T> {
    /// An empty slot.
    pub(crate) const fn new() -> Self {
        ArcSlot(Cell::new(std::ptr::null()))
    }

    /// Put `value` in the slot and give back what was there.
    pub(crate) fn replace(&self, value: Option<Arc<T>>) -> Option<Arc<T>> {
        let new = value.map_or(std::ptr::null(), Arc::into_raw);
        let old = self.0.replace(new);
        // SAFETY: the slot holds null or a pointer from Arc::into_raw that
        // owns one strong count (the only values ever stored); that count
        // moves to the Arc returned, and the slot no longer holds it.
        (!old.is_null()).then(|| unsafe { Arc::from_raw(old) })
    }

    /// A clone of the `Arc` in the slot.
    pub(crate) fn get(&self) -> Option<Arc<T>> {
        let p = self.0.get();
        if p.is_null() {
            return None;
        }
        // SAFETY: `p` came from Arc::into_raw and the slot owns one strong
        // count, so the allocation is alive; the slot is not Sync, so no
        // other thread can empty it meanwhile, and nothing runs between
        // these two calls. The count added is the returned Arc's.
        unsafe {
            Arc::increment_strong_count(p);
            Some(Arc::from_raw(p))
        }
    }
}

impl RawThread {
    /// Set the thread's OS name (what `ps -L` and
    /// `/proc/<pid>/task/<tid>/comm` show) with pthread_setname_np(3),
    /// cut to the 15 bytes the kernel keeps (and at a NUL byte). A thread
    /// that has already ended is not renamed (glibc then names no task:
    /// ENOENT).
    pub fn set_os_name(&self, name: &[u8]) -> Result<(), Errno> {
        if !self.owned() {
            return Err(Errno::ESRCH);
        }
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

    /// Whether this process started the thread (see [`RawThread::owner`]).
    fn owned(&self) -> bool {
        std::process::id() == self.owner
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
        if !self.owned() {
            // A forked child's copy: the thread is not here (see `owner`).
            return;
        }
        // SAFETY: `id` names a thread this handle started, not joined (a
        // joined handle is forgotten) and not yet detached: Drop runs once.
        unsafe { libc::pthread_detach(self.id) };
        // SAFETY: the block is allocated until both sides are done with it:
        // the thread frees it only after seeing DETACHED, which only this
        // swap writes.
        let state = unsafe { &(*self.start).state };
        if state.swap(DETACHED, Ordering::AcqRel) == FINISHED {
            // SAFETY: the thread has finished with the block (FINISHED) and
            // will not free it (it saw no DETACHED); this runs once.
            unsafe { (self.free)(self.start) };
        }
    }
}
