//! Threads the way Python's `threading` module teaches them: named
//! threads, the current thread's name (the main thread is `MainThread`),
//! `is_alive`, join with a timeout, daemon and joined threads, a stop flag,
//! [`Event`] and thread-local values.
//!
//! Threads are started with pthread_create(3) itself
//! (in `src/sys/thread.rs`): std's spawn makes about ten more system calls
//! per thread. No `unsafe` here: threads share nothing but `Arc`s, atomics
//! and mutexes. A thread's name is its OS name too (prctl `PR_SET_NAME`,
//! cut to 15 bytes), so `ps -L` and `/proc/<pid>/task/*/comm` show it.
//!
//! ## Daemon and joined threads: Python's exit rule, made explicit
//!
//! Python waits for every non-daemon thread before the interpreter exits,
//! and kills daemon threads wherever they are. A Rust process ends as soon
//! as `main` returns, whatever its threads are doing. A [`Thread`] carries
//! the difference:
//!
//! - a joined (non-daemon) thread, from [`spawn`], is waited for: by
//!   [`Thread::join`], or at the latest when its handle is dropped (drop
//!   joins, as C++'s `std::jthread` does). Keep the handle in `main` and the
//!   process ends only after the thread has finished: Python's rule.
//! - a daemon thread, from [`spawn_daemon`], is never waited for: dropping
//!   its handle detaches it, and when `main` returns the process exits and
//!   the thread ends wherever it is, its later work never done.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::sys::thread::RawThread;

/// How many OS threads this process has now: `num_threads` in
/// `/proc/self/stat` (one read).
pub fn os_threads() -> Result<usize> {
    use crate::error::Context;
    let stat = std::fs::read_to_string("/proc/self/stat").ctx("read", "/proc/self/stat")?;
    // The fields after the command name's closing parenthesis start at
    // field 3 (state); num_threads is field 20.
    stat.rfind(')')
        .and_then(|end| stat.get(end + 2..))
        .and_then(|rest| rest.split(' ').nth(17))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| Error::data("read", "/proc/self/stat", "no thread count in it"))
}

/// The name [`current_name`] gives the main thread, as Python does.
pub const MAIN_THREAD: &str = "MainThread";

/// Whether the calling thread is the process's main thread (its thread id
/// is the process id).
pub fn is_main_thread() -> bool {
    nix::unistd::gettid() == nix::unistd::getpid()
}

/// The calling thread's name, Python's `threading.current_thread().name`:
/// `MainThread` for the main thread, the name given to [`spawn`] for ours,
/// and `Thread-<tid>` for an unnamed thread.
pub fn current_name() -> String {
    if is_main_thread() {
        return MAIN_THREAD.to_string();
    }
    if let Some(name) = NAME.with(|n| n.borrow().clone()) {
        return name;
    }
    match std::thread::current().name() {
        Some(name) => name.to_string(),
        None => format!("Thread-{}", nix::unistd::gettid()),
    }
}

thread_local! {
    /// The name [`spawn`] gave the calling thread.
    static NAME: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// What a thread's function returned, or the panic that ended it.
type Outcome<T> = std::result::Result<T, Box<dyn Any + Send>>;

/// A running (or finished) thread with a name: Python's `threading.Thread`
/// after `start()`. See the [module documentation](self) for what dropping
/// it does.
pub struct Thread<T> {
    name: String,
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
            .field("name", &self.name)
            .field("daemon", &self.daemon)
            .field("alive", &self.is_alive())
            .field("joined", &self.handle.is_none())
            .finish()
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

/// Sets `done` when dropped: at the end of the thread's function,
/// whether it returned or panicked.
struct SetOnDrop<T>(Arc<Shared<T>>);

impl<T> Drop for SetOnDrop<T> {
    fn drop(&mut self) {
        self.0.done.set();
    }
}

fn start<F, T>(name: String, daemon: bool, f: F) -> Result<Thread<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if name.contains('\0') {
        return Err(Error::invalid("thread name", "must not contain a NUL byte"));
    }
    let shared = Arc::new(Shared {
        done: Event::new(),
        outcome: Mutex::new(None),
    });
    let guard = SetOnDrop(Arc::clone(&shared));
    let thread_name = name.clone();
    let main = Box::new(move || {
        let guard = guard;
        // The OS name (what ps and /proc show) is best effort: the kernel
        // keeps 15 bytes, and a failure changes nothing else.
        if let Ok(c) = std::ffi::CString::new(thread_name.as_bytes()) {
            let _ = nix::sys::prctl::set_name(&c);
        }
        NAME.with(|n| *n.borrow_mut() = Some(thread_name));
        let result = catch_unwind(AssertUnwindSafe(f));
        *guard
            .0
            .outcome
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(result);
    });
    let handle = crate::sys::thread::spawn(main)
        .map_err(|e| Error::sys("pthread_create", name.clone(), e))?;
    Ok(Thread {
        name,
        daemon,
        shared,
        handle: Some(handle),
    })
}

impl<T> Thread<T> {
    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
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
        let handle = self.handle.take().ok_or_else(|| {
            Error::io(
                "join",
                &self.name,
                &std::io::Error::other("the thread was already joined"),
            )
        })?;
        handle
            .join()
            .map_err(|e| Error::sys("pthread_join", self.name.clone(), e))?;
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
                &self.name,
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

/// `threading.Event`: a flag that threads wait on, on a `Mutex` and a
/// `Condvar`. `set` wakes every waiter; the flag stays set until `clear`.
/// The mutex also counts the waiters, so `set` with nobody waiting (every
/// thread's end sets one) makes no futex wake-up call.
#[derive(Debug, Default)]
pub struct Event {
    state: Mutex<EventState>,
    cond: Condvar,
}

#[derive(Debug, Default)]
struct EventState {
    set: bool,
    /// Threads blocked in `cond.wait`.
    waiters: usize,
}

impl Event {
    /// A new event, not set.
    pub fn new() -> Self {
        Event::default()
    }

    // Nothing panics while holding the lock, and the state is two plain
    // fields written whole, so a poisoned lock still holds a valid state.
    fn lock(&self) -> MutexGuard<'_, EventState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Set the flag and wake every thread waiting for it.
    pub fn set(&self) {
        let mut state = self.lock();
        state.set = true;
        if state.waiters > 0 {
            self.cond.notify_all();
        }
    }

    /// Reset the flag; later waits block until the next [`Event::set`].
    pub fn clear(&self) {
        self.lock().set = false;
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.lock().set
    }

    /// Block until the flag is set. Spurious wakeups are absorbed.
    pub fn wait(&self) {
        let mut state = self.lock();
        while !state.set {
            state.waiters += 1;
            state = self
                .cond
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.waiters -= 1;
        }
    }

    /// Block until the flag is set or `timeout` has passed on the monotonic
    /// clock; return the flag (false: timed out). Python's `wait(timeout)`.
    /// Spurious wakeups are absorbed: the wait resumes for the time left. A
    /// timeout too large for the clock waits without limit.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let Some(deadline) = Instant::now().checked_add(timeout) else {
            self.wait();
            return true;
        };
        let mut state = self.lock();
        while !state.set {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state.waiters += 1;
            state = self
                .cond
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            state.waiters -= 1;
        }
        true
    }
}

/// A flag one thread raises to ask others to stop: each worker checks
/// [`StopFlag::is_stopped`] between steps. Clones share the flag.
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// A new flag, not raised.
    pub fn new() -> Self {
        StopFlag::default()
    }

    /// Ask every holder to stop. Release ordering: what this thread wrote
    /// before is visible to a thread that sees the flag.
    pub fn stop(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether [`StopFlag::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The gate of a [`Group`], as each of its threads sees it: wait at it,
/// open it, and ask or check whether to stop. Clones share the gate.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    go: Arc<Event>,
    stop: StopFlag,
}

impl Gate {
    /// Block until the gate is open. Every thread waiting here starts at
    /// once when it opens.
    pub fn wait(&self) {
        self.go.wait();
    }

    /// Open the gate: every thread waiting at it goes, and later waits
    /// return at once.
    pub fn open(&self) {
        self.go.set();
    }

    /// Ask the threads to stop (they check [`Gate::is_stopped`]).
    pub fn stop(&self) {
        self.stop.stop();
    }

    /// Whether [`Gate::stop`] was called, or the group was dropped or a
    /// thread of it could not be started.
    pub fn is_stopped(&self) -> bool {
        self.stop.is_stopped()
    }
}

/// Threads started behind one [`Gate`] and joined together: the lessons'
/// "start N threads, let them go at once, join them all".
///
/// Each thread gets the gate and waits at it where it should; the caller
/// opens it once every thread is started (or a thread opens it, when the
/// last one arrives). Nothing can hang: when a thread cannot be started,
/// or the group is dropped before it was joined, the group asks its
/// threads to stop and opens the gate before it joins them.
///
/// ```
/// use posixkit::thread::Group;
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// let total = Arc::new(AtomicU64::new(0));
/// let mut group = Group::new();
/// for i in 0..4u64 {
///     let total = Arc::clone(&total);
///     group.spawn(format!("Thread-{i}"), move |gate| {
///         gate.wait();
///         total.fetch_add(i, Ordering::Relaxed);
///         i * 10
///     })?;
/// }
/// group.open();
/// assert_eq!(group.join()?, [0, 10, 20, 30]);
/// assert_eq!(total.load(Ordering::Relaxed), 6);
/// # Ok::<(), posixkit::Error>(())
/// ```
#[derive(Debug)]
pub struct Group<T> {
    gate: Gate,
    threads: Vec<Thread<T>>,
}

impl<T> Default for Group<T> {
    fn default() -> Self {
        Group {
            gate: Gate::default(),
            threads: Vec::new(),
        }
    }
}

impl<T: Send + 'static> Group<T> {
    /// An empty group with a closed gate.
    pub fn new() -> Self {
        Group::default()
    }

    /// Start a joined thread called `name` running `f` with the gate.
    /// When the thread cannot be started, the threads already started are
    /// asked to stop and the gate opens (so joining them cannot hang), and
    /// the error is returned. Errors as for [`spawn`].
    pub fn spawn<F>(&mut self, name: impl Into<String>, f: F) -> Result<()>
    where
        F: FnOnce(&Gate) -> T + Send + 'static,
    {
        let gate = self.gate.clone();
        match spawn(name, move || f(&gate)) {
            Ok(t) => {
                self.threads.push(t);
                Ok(())
            }
            Err(e) => {
                self.release();
                Err(e)
            }
        }
    }

    /// The gate, to open it, or to ask the threads to stop.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// Open the gate: every thread waiting at it goes.
    pub fn open(&self) {
        self.gate.open();
    }

    /// How many threads the group started.
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// Whether it started none.
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// Open the gate if it is still closed, join every thread, and return
    /// their values in the order they were started. When a thread
    /// panicked, the error of the first one that did, once all are joined.
    pub fn join(mut self) -> Result<Vec<T>> {
        self.gate.open();
        let mut values = Vec::with_capacity(self.threads.len());
        let mut first_error = None;
        for t in std::mem::take(&mut self.threads) {
            match t.join() {
                Ok(v) => values.push(v),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(values), Err)
    }

    /// Stop, and let every thread past the gate.
    fn release(&self) {
        self.gate.stop();
        self.gate.open();
    }
}

impl<T> Drop for Group<T> {
    /// Threads not joined are asked to stop and let past the gate, then
    /// joined (each [`Thread`]'s drop waits for it).
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.gate.stop();
            self.gate.open();
        }
    }
}

thread_local! {
    static LOCAL: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Thread-local values, Python's `local = threading.local()` with one
/// attribute: each thread sees only what it stored itself.
pub mod local {
    use super::LOCAL;

    /// Store `value` in the calling thread's slot (`local.student = value`).
    pub fn set(value: impl Into<String>) {
        let value = value.into();
        LOCAL.with(|slot| *slot.borrow_mut() = Some(value));
    }

    /// The calling thread's value, `None` when this thread stored nothing.
    pub fn get() -> Option<String> {
        LOCAL.with(|slot| slot.borrow().clone())
    }

    /// Empty the calling thread's slot.
    pub fn clear() {
        LOCAL.with(|slot| *slot.borrow_mut() = None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_thread_is_named_main_thread_only_in_main() {
        // The test harness runs tests on spawned threads.
        let name = spawn("Worker-7", current_name).unwrap().join().unwrap();
        assert_eq!(name, "Worker-7");
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
        let t = spawn("Boom", || -> u8 { panic!("boom") }).unwrap();
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
    }

    #[test]
    fn event_set_clear_wait() {
        let e = Event::new();
        assert!(!e.is_set());
        assert!(!e.wait_timeout(Duration::from_millis(1)));
        assert!(!e.wait_timeout(Duration::ZERO));
        e.set();
        assert!(e.is_set());
        assert!(e.wait_timeout(Duration::ZERO));
        e.wait();
        e.clear();
        assert!(!e.is_set());
        // A timeout beyond the clock's range waits for the flag.
        e.set();
        assert!(e.wait_timeout(Duration::MAX));
    }

    #[test]
    fn event_wakes_a_waiting_thread() {
        let e = Arc::new(Event::new());
        let e2 = Arc::clone(&e);
        let t = spawn("Waiter", move || e2.wait_timeout(Duration::from_secs(60))).unwrap();
        e.set();
        assert!(t.join().unwrap());
    }

    #[test]
    fn stop_flag_is_shared_by_clones() {
        let s = StopFlag::new();
        let s2 = s.clone();
        assert!(!s2.is_stopped());
        s.stop();
        assert!(s2.is_stopped());
    }

    #[test]
    fn a_group_starts_its_threads_at_the_gate_and_joins_them_in_order() {
        let arrived = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut group = Group::new();
        for i in 0..5usize {
            let arrived = Arc::clone(&arrived);
            group
                .spawn(format!("G-{i}"), move |gate| {
                    arrived.fetch_add(1, Ordering::SeqCst);
                    gate.wait();
                    (i, current_name())
                })
                .unwrap();
        }
        assert_eq!(group.len(), 5);
        // Everyone reaches the gate and nobody passes it until it opens.
        while arrived.load(Ordering::SeqCst) < 5 {
            std::thread::yield_now();
        }
        assert!(group.threads.iter().all(Thread::is_alive));
        let got = group.join().unwrap();
        let want: Vec<_> = (0..5).map(|i| (i, format!("G-{i}"))).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_group_dropped_unjoined_stops_and_releases_its_threads() {
        let stopped = Arc::new(AtomicBool::new(false));
        let mut group = Group::new();
        let s = Arc::clone(&stopped);
        group
            .spawn("Waiting", move |gate| {
                gate.wait();
                s.store(gate.is_stopped(), Ordering::SeqCst);
            })
            .unwrap();
        drop(group); // would hang if the gate stayed closed
        assert!(stopped.load(Ordering::SeqCst), "told to stop");
    }

    #[test]
    fn a_failed_start_releases_the_group_and_a_panic_is_an_error_after_all_joined() {
        let mut group = Group::new();
        let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let r = Arc::clone(&ran);
        group
            .spawn("First", move |gate| {
                gate.wait();
                r.fetch_add(1, Ordering::SeqCst);
                assert!(gate.is_stopped(), "released by the failed start");
            })
            .unwrap();
        // A name with a NUL byte cannot be started.
        assert!(group.spawn("bad\0name", |_| ()).is_err());
        assert!(group.gate().is_stopped());
        group.join().unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 1);

        let mut group = Group::new();
        let after = Arc::new(AtomicBool::new(false));
        let a = Arc::clone(&after);
        group.spawn("Boom", |_| panic!("boom")).unwrap();
        group
            .spawn("After", move |_| a.store(true, Ordering::SeqCst))
            .unwrap();
        let e = group.join().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Panicked);
        assert!(e.to_string().starts_with("join(Boom)"), "{e}");
        assert!(after.load(Ordering::SeqCst), "the other thread was joined");
    }

    #[test]
    fn locals_are_per_thread() {
        local::set("Alice");
        let other = spawn("Other", || {
            let before = local::get();
            local::set("Bob");
            (before, local::get())
        })
        .unwrap()
        .join()
        .unwrap();
        assert_eq!(other, (None, Some("Bob".to_string())));
        assert_eq!(local::get().as_deref(), Some("Alice"));
        local::clear();
        assert_eq!(local::get(), None);
    }
}
