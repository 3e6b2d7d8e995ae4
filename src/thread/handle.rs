//! Starting a thread and the handle that joins it: [`spawn`],
//! [`spawn_daemon`], [`Builder`] and [`Thread`], with a name that the
//! thread and its handle share, so either may change it while it runs.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::Event;
use crate::error::{Error, ErrorKind, Result};
use crate::sys::thread::{ArcSlot, RawThread};

thread_local! {
    /// The name of a thread [`spawn`] started, from its start to its end.
    /// A slot with no destructor: a thread of ours that allocates nothing
    /// never makes glibc set up an arena for it (see [`ArcSlot`]).
    static OURS: ArcSlot<NameCell> = const { ArcSlot::new() };
    /// The name [`super::set_current_name`] gave a thread started some
    /// other way (the main thread, a std thread), freed when it ends.
    static OTHER: RefCell<Option<Arc<NameCell>>> = const { RefCell::new(None) };
}

/// The calling thread's name cell, when it has one: set by the thread
/// [`spawn`] starts, or by [`super::set_current_name`].
pub(super) fn current_cell() -> Option<Arc<NameCell>> {
    OURS.with(ArcSlot::get)
        .or_else(|| OTHER.with(|c| c.borrow().clone()))
}

/// Give a thread not started by [`spawn`] the name cell `cell`.
pub(super) fn set_other_cell(cell: Arc<NameCell>) {
    OTHER.with(|c| *c.borrow_mut() = Some(cell));
}

/// Python's counter behind `Thread-1`, `Thread-2`, …: one per process,
/// shared by every unnamed thread and [`super::Timer`].
static COUNTER: AtomicU64 = AtomicU64::new(1);

/// The next automatic name, `Thread-<N>`, N counting from 1 in the order
/// threads are created, as Python names threads started without a name
/// (Python 3.10+ adds the target's name, `Thread-1 (f)`; a Rust closure has
/// none to add).
pub fn next_name() -> String {
    format!("Thread-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A thread's name, shared by the thread and its handle.
#[derive(Debug)]
pub(super) struct NameCell(Mutex<NameState>);

#[derive(Debug)]
struct NameState {
    name: String,
    /// Whether the thread runs our code now: from its start until its
    /// function has returned. Only then does a rename reach its OS name.
    running: bool,
}

impl NameCell {
    pub(super) fn new(name: String) -> Arc<NameCell> {
        Arc::new(NameCell(Mutex::new(NameState {
            name,
            running: false,
        })))
    }

    // The state is two plain fields written whole: a poisoned lock still
    // holds a valid one.
    fn lock(&self) -> MutexGuard<'_, NameState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn get(&self) -> String {
        self.lock().name.clone()
    }

    /// Change the name, from the thread itself (its OS name follows, but
    /// never the main thread's: that is the process's command name).
    pub(super) fn set_own(&self, name: String) {
        let mut state = self.lock();
        state.name = name;
        if !super::is_main_thread() {
            set_own_os_name(&state.name);
        }
    }

    /// The thread itself, at its start (`running`) and at its end. Under
    /// the lock, so a rename from outside at that moment cannot leave the
    /// OS name behind, nor reach a thread that has ended.
    fn mark(&self, running: bool) {
        let mut state = self.lock();
        state.running = running;
        if running {
            set_own_os_name(&state.name);
        }
    }
}

/// The calling thread's OS name (prctl PR_SET_NAME; the kernel keeps 15
/// bytes, cut at a NUL byte). Best effort: a failure changes nothing else.
/// Built on the stack: a thread of ours allocates nothing of its own.
fn set_own_os_name(name: &str) {
    let mut buf = [0u8; 16];
    for (dst, &b) in buf[..15].iter_mut().zip(name.as_bytes()) {
        *dst = b;
    }
    if let Ok(c) = std::ffi::CStr::from_bytes_until_nul(&buf) {
        let _ = nix::sys::prctl::set_name(c);
    }
}

/// What a thread's function returned, or the panic that ended it.
type Outcome<T> = std::result::Result<T, Box<dyn Any + Send>>;

/// A running (or finished) thread with a name: Python's `threading.Thread`
/// after `start()`. See the [module documentation](super) for what
/// dropping it does.
pub struct Thread<T> {
    name: Arc<NameCell>,
    ident: u64,
    daemon: bool,
    shared: Arc<Shared<T>>,
    handle: Option<RawThread>,
}

/// What a thread and its [`Thread`] handle share: one allocation per thread.
struct Shared<T> {
    /// Set when the thread's function has returned or panicked.
    done: Event,
    /// Where the thread leaves its outcome before it sets `done`.
    outcome: Mutex<Option<Outcome<T>>>,
}

impl<T> fmt::Debug for Thread<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Thread")
            .field("name", &self.name())
            .field("ident", &self.ident)
            .field("daemon", &self.daemon)
            .field("alive", &self.is_alive())
            .field("joined", &self.handle.is_none())
            .finish()
    }
}

/// How to start a thread: Python's `Thread(name=..., daemon=...)`. With no
/// name the thread is called `Thread-<N>` ([`next_name`]).
///
/// ```
/// use posixkit::thread::{Builder, current_name};
/// let t = Builder::new().spawn(current_name)?;
/// let name = t.name();
/// assert!(name.starts_with("Thread-"));
/// assert_eq!(t.join()?, name);
/// # Ok::<(), posixkit::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Builder {
    name: Option<String>,
    daemon: bool,
}

impl Builder {
    /// A joined (non-daemon) thread with an automatic name.
    pub fn new() -> Self {
        Builder::default()
    }

    /// Call the thread `name`.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Make it a daemon (`daemon=True`): not waited for when its handle is
    /// dropped.
    #[must_use]
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = daemon;
        self
    }

    /// Start the thread running `f`. Errors as for [`spawn`].
    pub fn spawn<F, T>(self, f: F) -> Result<Thread<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let name = self.name.unwrap_or_else(next_name);
        start(name, self.daemon, f)
    }
}

/// Start a joined (non-daemon) thread called `name` running `f`: Python's
/// `Thread(target=f, name=name).start()`. The thread is waited for by
/// [`Thread::join`] or when the handle is dropped.
///
/// Errors: `pthread_create(<name>)` when the system cannot start a thread
/// (EAGAIN: too many threads, exit 71); a name with a NUL byte is a usage
/// error.
pub fn spawn<F, T>(name: impl Into<String>, f: F) -> Result<Thread<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    start(name.into(), false, f)
}

/// Start a daemon thread called `name` running `f`: Python's
/// `Thread(target=f, name=name, daemon=True).start()`. Never waited for on
/// drop; the process may end while it runs. Errors as for [`spawn`].
pub fn spawn_daemon<F, T>(name: impl Into<String>, f: F) -> Result<Thread<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    start(name.into(), true, f)
}

/// At the end of the thread's function, whether it returned or panicked:
/// forget the thread's kernel id, then set `done`.
struct EndGuard<T> {
    shared: Arc<Shared<T>>,
    name: Arc<NameCell>,
}

impl<T> Drop for EndGuard<T> {
    fn drop(&mut self) {
        // The slot's Arc is another count of `name`: dropping it here
        // frees nothing (the guard holds one).
        drop(OURS.with(|s| s.replace(None)));
        self.name.mark(false);
        self.shared.done.set();
    }
}

/// A name a thread may have: no NUL byte (the OS name is a C string).
pub(super) fn check_name(name: &str) -> Result<()> {
    if name.contains('\0') {
        return Err(Error::invalid("thread name", "must not contain a NUL byte"));
    }
    Ok(())
}

fn start<F, T>(name: String, daemon: bool, f: F) -> Result<Thread<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    check_name(&name)?;
    let shared = Arc::new(Shared {
        done: Event::new(),
        outcome: Mutex::new(None),
    });
    let cell = NameCell::new(name);
    let guard = EndGuard {
        shared: Arc::clone(&shared),
        name: Arc::clone(&cell),
    };
    let main = move || {
        let guard = guard;
        guard.name.mark(true);
        OURS.with(|s| s.replace(Some(Arc::clone(&guard.name))));
        let result = catch_unwind(AssertUnwindSafe(f));
        *guard
            .shared
            .outcome
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(result);
    };
    let handle =
        crate::sys::thread::spawn(main).map_err(|e| Error::sys("pthread_create", cell.get(), e))?;
    Ok(Thread {
        ident: handle.id(),
        name: cell,
        daemon,
        shared,
        handle: Some(handle),
    })
}

impl<T> Thread<T> {
    /// The thread's name now: the one given at spawn, or the last one set
    /// by [`Thread::set_name`] or, on the thread, by
    /// [`super::set_current_name`].
    pub fn name(&self) -> String {
        self.name.get()
    }

    /// Rename the thread, running or not: Python's `t.name = name`. The
    /// thread's [`super::current_name`] returns the new name from now on;
    /// its OS name (`ps -L`, 15 bytes) follows while it runs. A name with a
    /// NUL byte is refused.
    pub fn set_name(&self, name: impl Into<String>) -> Result<()> {
        let name = name.into();
        check_name(&name)?;
        let mut state = self.name.lock();
        state.name = name;
        if state.running {
            if let Some(handle) = &self.handle {
                // Best effort, as at the start: the name itself is set.
                let _ = handle.set_os_name(state.name.as_bytes());
            }
        }
        Ok(())
    }

    /// Python's `t.ident`: the thread's pthread_t, what
    /// [`super::get_ident`] returns on it. Known as soon as the thread is
    /// started.
    pub fn ident(&self) -> u64 {
        self.ident
    }

    /// Whether this is a daemon thread (not waited for).
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    /// Python's `is_alive()`: true until the thread's function has returned
    /// (or panicked).
    pub fn is_alive(&self) -> bool {
        !self.shared.done.is_set()
    }

    /// Wait for the thread to finish and return its function's value:
    /// Python's `join()`. Errors: `join(<name>)` with exit 101 when the
    /// thread panicked (a bug; the panic was already reported), or when the
    /// thread was already joined by [`Thread::join_timeout`].
    pub fn join(mut self) -> Result<T> {
        self.join_handle()
    }

    /// Python's `join(timeout)`: wait at most `timeout` for the thread to
    /// finish. `Ok(Some(value))` when it did (the thread is now joined),
    /// `Ok(None)` when it is still running; it can be joined again later.
    /// Spurious wakeups are absorbed; the wait is measured on the monotonic
    /// clock. Errors as for [`Thread::join`].
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<Option<T>> {
        if !self.shared.done.wait_timeout(timeout) {
            return Ok(None);
        }
        self.join_handle().map(Some)
    }

    fn join_handle(&mut self) -> Result<T> {
        let name = self.name();
        let handle = self.handle.take().ok_or_else(|| {
            Error::io(
                "join",
                &name,
                &std::io::Error::other("the thread was already joined"),
            )
        })?;
        handle
            .join()
            .map_err(|e| Error::sys("pthread_join", name.clone(), e))?;
        let outcome = self
            .shared
            .outcome
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match outcome {
            Some(Ok(value)) => Ok(value),
            _ => Err(Error::new(
                ErrorKind::Panicked,
                "join",
                &name,
                "the thread panicked",
            )),
        }
    }
}

impl<T> Drop for Thread<T> {
    /// A joined thread is waited for here; a daemon is left to run.
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            if !self.daemon {
                // A panic in the thread was already reported by the hook.
                let _ = handle.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::super::{current_name, get_ident, get_native_id, set_current_name};
    use super::*;

    #[test]
    fn main_thread_is_named_main_thread_only_in_main() {
        // The test harness runs tests on spawned threads.
        let name = spawn("Worker-7", current_name).unwrap().join().unwrap();
        assert_eq!(name, "Worker-7");
    }

    #[test]
    fn unnamed_threads_are_numbered_in_creation_order() {
        let a = Builder::new().spawn(current_name).unwrap();
        let b = Builder::new().daemon(true).spawn(current_name).unwrap();
        let (na, nb) = (a.name(), b.name());
        let num = |n: &str| -> u64 { n.strip_prefix("Thread-").unwrap().parse().unwrap() };
        assert!(num(&na) < num(&nb), "{na} {nb}");
        assert!(b.is_daemon() && !a.is_daemon());
        assert_eq!(a.join().unwrap(), na);
        assert_eq!(b.join().unwrap(), nb);
    }

    #[test]
    fn a_running_thread_is_renamed_by_its_handle_and_by_itself() {
        let (ready, go) = (Arc::new(Event::new()), Arc::new(Event::new()));
        let (r, g) = (Arc::clone(&ready), Arc::clone(&go));
        let mut t = spawn("Before", move || {
            let first = current_name();
            r.set();
            g.wait();
            let renamed = current_name();
            let comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
            set_current_name("Self-Named").unwrap();
            let comm2 = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
            (first, renamed, comm, current_name(), comm2)
        })
        .unwrap();
        ready.wait();
        t.set_name("After").unwrap();
        assert_eq!(t.name(), "After");
        assert!(t.set_name("bad\0").is_err());
        go.set();
        // The handle sees the thread's own rename too.
        let (first, renamed, comm, own, comm2) = t
            .join_timeout(Duration::from_secs(60))
            .unwrap()
            .expect("finished");
        assert_eq!(t.name(), "Self-Named");
        assert_eq!(first, "Before");
        assert_eq!(renamed, "After");
        assert_eq!(comm, "After\n", "the OS name follows");
        assert_eq!(own, "Self-Named");
        assert_eq!(comm2, "Self-Named\n");
    }

    #[test]
    fn ident_and_native_id_match_the_thread() {
        let t = spawn("Ids", || (get_ident(), get_native_id())).unwrap();
        let ident = t.ident();
        let (inside, native) = t.join().unwrap();
        assert_eq!(inside, ident);
        assert_ne!(ident, get_ident(), "another thread's ident");
        assert_ne!(native, get_native_id());
        assert!(native > 0);
    }

    #[test]
    fn join_timeout_returns_none_while_running_then_the_value() {
        let go = Arc::new(Event::new());
        let g = Arc::clone(&go);
        let mut t = spawn("Blocked", move || {
            g.wait();
            42
        })
        .unwrap();
        assert!(t.is_alive());
        assert_eq!(t.join_timeout(Duration::from_millis(1)).unwrap(), None);
        assert!(t.is_alive());
        go.set();
        assert_eq!(t.join_timeout(Duration::from_secs(60)).unwrap(), Some(42));
        assert!(!t.is_alive());
        assert!(t.join().is_err(), "already joined");
    }

    #[test]
    fn a_panicking_thread_is_an_error_not_a_panic() {
        crate::testing::quiet_deliberate_panics();
        let t = spawn("Boom", || -> u8 {
            panic!("{}boom", crate::testing::DELIBERATE)
        })
        .unwrap();
        let e = t.join().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Panicked);
        assert!(e.to_string().starts_with("join(Boom): "), "{e}");
    }

    #[test]
    fn dropping_a_joined_thread_waits_for_it() {
        let ran = Arc::new(AtomicBool::new(false));
        let r = Arc::clone(&ran);
        let t = spawn("Slow", move || {
            std::thread::sleep(Duration::from_millis(20));
            r.store(true, Ordering::SeqCst);
        })
        .unwrap();
        drop(t);
        assert!(ran.load(Ordering::SeqCst));
    }

    #[test]
    fn dropping_a_daemon_does_not_wait() {
        let go = Arc::new(Event::new());
        let g = Arc::clone(&go);
        let t = spawn_daemon("Daemon", move || g.wait()).unwrap();
        assert!(t.is_daemon());
        drop(t); // would hang here if drop joined
        go.set();
    }

    #[test]
    fn the_name_is_the_os_thread_name_too() {
        let comm = |name: &'static str| {
            spawn(name, || {
                std::fs::read_to_string("/proc/thread-self/comm").unwrap()
            })
            .unwrap()
            .join()
            .unwrap()
        };
        assert_eq!(comm("Worker-1"), "Worker-1\n");
        // The kernel keeps 15 bytes; current_name keeps the whole name.
        assert_eq!(comm("a-very-long-thread-name"), "a-very-long-thr\n");
        let whole = spawn("a-very-long-thread-name", current_name).unwrap();
        assert_eq!(whole.join().unwrap(), "a-very-long-thread-name");
    }

    #[test]
    fn thread_local_destructors_run_when_a_thread_ends() {
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        thread_local! {
            static SLOT: RefCell<Option<Flag>> = const { RefCell::new(None) };
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let d = Arc::clone(&dropped);
        spawn("tls", move || {
            SLOT.with(|s| *s.borrow_mut() = Some(Flag(d)))
        })
        .unwrap()
        .join()
        .unwrap();
        // join returns after pthread_join, so the thread's exit has run.
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn a_thread_result_is_handed_out_once() {
        let mut t = spawn("once", || 7).unwrap();
        assert_eq!(t.join_timeout(Duration::from_secs(60)).unwrap(), Some(7));
        assert!(t.join_timeout(Duration::from_secs(60)).is_err());
    }

    #[test]
    fn nul_in_a_name_is_refused() {
        assert!(spawn("a\0b", || ()).is_err());
        assert!(Builder::new().name("a\0b").spawn(|| ()).is_err());
    }
}
