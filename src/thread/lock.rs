//! Python's locks: [`Lock`] (`threading.Lock`, with `acquire(timeout=)`),
//! [`RLock`] (reentrant: the thread that holds it may take it again) and
//! [`Condition`] (a lock with waits and notifications, here around the
//! data it guards).
//!
//! For data, use [`Mutex`](super::Mutex) (a [`Lock`] with the data behind
//! it) or `std::sync::Mutex`, which is what [`Condition`] holds. [`Lock`]
//! and [`RLock`] exist for what a `std::sync::Mutex` cannot do: give up
//! after a timeout (which is how a demo detects a deadlock instead of
//! hanging in it), and be taken again by the thread that holds it.

use std::cell::Cell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::wait_until;
use crate::process::deadline_after;
use crate::sys::sem::futex;
use nix::errno::Errno;

/// Python's `threading.Lock`, with `acquire(timeout=…)`: one 32-bit word
/// taken with a compare-and-swap, and slept on with futex(2) only when it
/// stays taken. Released when its [`LockGuard`] is dropped, by whichever
/// thread holds the guard.
///
/// A lock that is taken is first looked at again a few times with a
/// growing pause (about 10 µs, only where this process may run on more
/// than one CPU), then slept on; a release wakes one sleeper, and makes a
/// system call only when a thread may be asleep on it.
///
/// # Panics
/// A wait panics if futex(2) fails other than by being woken, interrupted
/// or timed out (only a seccomp filter that refuses futex can do that),
/// rather than spin on the CPU for ever.
///
/// ```
/// use posixkit::thread::Lock;
/// use std::time::Duration;
/// let lock = Lock::new();
/// let held = lock.acquire();
/// assert!(lock.locked());
/// // A second acquire, even by the same thread, waits: here it gives up.
/// assert!(lock.acquire_timeout(Duration::from_millis(1)).is_none());
/// drop(held);
/// assert!(lock.try_acquire().is_some());
/// ```
#[derive(Debug, Default)]
pub struct Lock {
    /// [`FREE`], [`HELD`], or [`SLEEPERS`] (held, and someone may sleep on
    /// it: the release must wake one).
    state: AtomicU32,
}

const FREE: u32 = 0;
const HELD: u32 = 1;
const SLEEPERS: u32 = 2;
const HOUR: Duration = Duration::from_secs(3600);

/// A held [`Lock`]; dropping it releases the lock.
#[must_use = "the lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct LockGuard<'a> {
    lock: &'a Lock,
}

impl Lock {
    /// An unlocked lock.
    pub const fn new() -> Lock {
        Lock {
            state: AtomicU32::new(FREE),
        }
    }

    /// Take the lock, waiting as long as it takes: `acquire()`.
    pub fn acquire(&self) -> LockGuard<'_> {
        match self.try_acquire() {
            Some(g) => g,
            None => self.take(None).expect("no deadline"),
        }
    }

    /// Take the lock, waiting at most `timeout`: `acquire(timeout=t)`.
    /// `None` when the time ran out (Python's `False`).
    pub fn acquire_timeout(&self, timeout: Duration) -> Option<LockGuard<'_>> {
        if let Some(g) = self.try_acquire() {
            return Some(g);
        }
        if timeout.is_zero() {
            return None;
        }
        match deadline_after(timeout) {
            Some(d) => self.take(Some(d)),
            None => Some(self.acquire()),
        }
    }

    /// Take the lock only if it is free: `acquire(blocking=False)`.
    pub fn try_acquire(&self) -> Option<LockGuard<'_>> {
        self.state
            .compare_exchange(FREE, HELD, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            .then(|| LockGuard { lock: self })
    }

    /// The slow path: spin a little, then sleep on the word until it is
    /// released or `deadline` passes.
    #[cold]
    fn take(&self, deadline: Option<Instant>) -> Option<LockGuard<'_>> {
        let free = || {
            self.state.load(Ordering::Relaxed) == FREE
                && self
                    .state
                    .compare_exchange(FREE, HELD, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
        };
        if crate::sem::spin_until(free) {
            return Some(LockGuard { lock: self });
        }
        loop {
            // Taken as SLEEPERS: we cannot tell whether another sleeper
            // remains, so our own release must wake one. Done before the
            // deadline is checked: a release may have woken this waiter
            // rather than another one asleep here, and that wake-up must
            // not be lost when this waiter gives up. Either it takes the
            // lock as SLEEPERS (its release wakes the next), or it leaves
            // the word at SLEEPERS under the holder (whose release does).
            if self.state.swap(SLEEPERS, Ordering::Acquire) == FREE {
                return Some(LockGuard { lock: self });
            }
            let at = match deadline {
                None => None,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    // An hour at most per sleep (the loop checks the
                    // deadline itself); a clock that cannot be read (it
                    // always can) makes the sleep return at once.
                    match crate::sem::Deadline::after(Some(left.min(HOUR))) {
                        Ok(crate::sem::Deadline::At(t)) => Some(t),
                        _ => Some(nix::sys::time::TimeSpec::new(0, 0)),
                    }
                }
            };
            match futex::wait_private(&self.state, SLEEPERS, at) {
                // Woken, released before we slept, a signal, or the
                // sleep's end: look again (the deadline is checked above).
                Ok(()) | Err(Errno::EAGAIN | Errno::EINTR | Errno::ETIMEDOUT) => {}
                // Any other error (a futex(2) that a seccomp filter
                // refuses, say) would turn every wait into a busy loop.
                Err(e) => panic!("futex(FUTEX_WAIT_BITSET) on a thread::Lock failed: {e}"),
            }
        }
    }

    /// Whether some thread holds it: `locked()`.
    pub fn locked(&self) -> bool {
        self.state.load(Ordering::Relaxed) != FREE
    }
}

impl LockGuard<'_> {
    /// The lock this guard holds.
    pub(crate) fn lock(&self) -> &Lock {
        self.lock
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        if self.lock.state.swap(FREE, Ordering::Release) == SLEEPERS {
            // Cannot fail on a live, aligned word of ours.
            let _ = futex::wake_private(&self.lock.state, 1);
        }
    }
}

/// This thread's identity for [`RLock`]: a number drawn once per thread
/// from a process-wide counter, never 0 and never given to another thread
/// of this process, and read without a system call. (The address of a
/// thread-local is not one: glibc gives a joined thread's stack, and the
/// thread-locals in it, to the next thread it starts, which then owned
/// every RLock the dead thread had kept. A forked child's one thread is a
/// copy of the thread that forked, and keeps its number, as it keeps the
/// locks that thread held.)
fn me() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static ME: Cell<u64> = const { Cell::new(0) };
    }
    ME.with(|me| {
        if me.get() == 0 {
            me.set(NEXT.fetch_add(1, Ordering::Relaxed));
        }
        me.get()
    })
}

/// Python's `threading.RLock`: a lock the thread holding it may take
/// again (a function that holds it can call another that takes it too).
/// It is free once every [`RLockGuard`] of its owner is dropped. A
/// [`Lock`] taken twice by one thread waits for itself for ever.
///
/// ```
/// use posixkit::thread::RLock;
/// let lock = RLock::new();
/// let outer = lock.acquire();
/// let inner = lock.acquire(); // the owner again: no wait
/// assert_eq!((outer.depth(), inner.depth()), (1, 2));
/// drop(inner);
/// assert!(lock.is_owned());
/// drop(outer);
/// assert!(!lock.is_owned());
/// ```
#[derive(Debug, Default)]
pub struct RLock {
    state: Mutex<Owner>,
    cond: Condvar,
}

#[derive(Debug, Default)]
struct Owner {
    /// [`me`] of the holder; 0 when free.
    thread: u64,
    /// How many times the holder has taken it.
    depth: usize,
}

/// One level of a held [`RLock`]; dropping it releases that level. Not
/// `Send`: only the owner releases.
#[must_use = "the level is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
    depth: usize,
    _owner_only: PhantomData<*const ()>,
}

impl RLock {
    /// A free reentrant lock.
    pub const fn new() -> RLock {
        RLock {
            state: Mutex::new(Owner {
                thread: 0,
                depth: 0,
            }),
            cond: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Owner> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Take it (again, if this thread holds it), waiting as long as it takes.
    pub fn acquire(&self) -> RLockGuard<'_> {
        self.take(None).expect("no deadline")
    }

    /// Take it, waiting at most `timeout` for another thread to free it.
    pub fn acquire_timeout(&self, timeout: Duration) -> Option<RLockGuard<'_>> {
        match deadline_after(timeout) {
            Some(d) => self.take(Some(d)),
            None => Some(self.acquire()),
        }
    }

    fn take(&self, deadline: Option<std::time::Instant>) -> Option<RLockGuard<'_>> {
        let me = me();
        let (mut owner, free) = wait_until(&self.cond, self.lock(), deadline, |o| {
            o.thread == 0 || o.thread == me
        });
        if !free {
            return None;
        }
        owner.thread = me;
        owner.depth += 1;
        Some(RLockGuard {
            lock: self,
            depth: owner.depth,
            _owner_only: PhantomData,
        })
    }

    /// Whether the calling thread holds it (Python's `_is_owned()`).
    pub fn is_owned(&self) -> bool {
        self.lock().thread == me()
    }
}

impl RLockGuard<'_> {
    /// How many times the owner held the lock when this guard was taken:
    /// 1 for the outermost.
    pub fn depth(&self) -> usize {
        self.depth
    }
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        let mut owner = self.lock.lock();
        owner.depth -= 1;
        if owner.depth == 0 {
            owner.thread = 0;
            drop(owner);
            self.lock.cond.notify_one();
        }
    }
}

/// Python's `threading.Condition`, around the data it guards: `lock()`
/// (`with cond:`) gives a guard that reads and writes the data, waits
/// (releasing the lock while it sleeps) and notifies.
///
/// The producer/consumer of the lesson:
/// ```
/// use posixkit::thread::{Condition, spawn};
/// use std::collections::VecDeque;
/// use std::sync::Arc;
/// let items = Arc::new(Condition::new(VecDeque::new()));
/// let c = Arc::clone(&items);
/// let consumer = spawn("Consumer", move || {
///     let mut q = c.lock();
///     q.wait_for(|q| !q.is_empty()); // cond.wait_for(lambda: items)
///     q.pop_front()
/// })?;
/// let mut q = items.lock();
/// q.push_back(42);
/// q.notify(1);
/// drop(q);
/// assert_eq!(consumer.join()?, Some(42));
/// # Ok::<(), posixkit::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct Condition<T> {
    data: Mutex<T>,
    cond: Condvar,
    /// Threads inside a wait, counted under `data`'s lock: `notify(n)`
    /// wakes at most that many, not `n` (one call per thread woken, not
    /// per `n`: `notify(usize::MAX)` is `notify_all`).
    waiters: AtomicUsize,
}

/// `notify(n)` for `cond`, whose waiters `waiters` counts: `notify_one`
/// for each of the first `n`, or `notify_all` when `n` covers them all.
fn notify_some(cond: &Condvar, waiters: &AtomicUsize, n: usize) {
    let w = waiters.load(Ordering::Relaxed);
    if n >= w {
        if w > 0 {
            cond.notify_all();
        }
    } else {
        for _ in 0..n {
            cond.notify_one();
        }
    }
}

/// The held lock of a [`Condition`]: the data (through `Deref`), and the
/// waits and notifications.
#[must_use = "the lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct ConditionGuard<'a, T> {
    /// Always `Some` except inside a wait.
    guard: Option<MutexGuard<'a, T>>,
    cond: &'a Condvar,
    waiters: &'a AtomicUsize,
}

impl<T> Condition<T> {
    /// A condition guarding `value`.
    pub const fn new(value: T) -> Self {
        Condition {
            data: Mutex::new(value),
            cond: Condvar::new(),
            waiters: AtomicUsize::new(0),
        }
    }

    /// Take its lock (`with cond:`).
    pub fn lock(&self) -> ConditionGuard<'_, T> {
        ConditionGuard {
            guard: Some(self.data.lock().unwrap_or_else(PoisonError::into_inner)),
            cond: &self.cond,
            waiters: &self.waiters,
        }
    }

    /// Wake up to `n` waiting threads: `notify(n)`. Python requires the
    /// lock to be held; here it may be, or not (without it, a thread just
    /// beginning its wait may be missed, as in any condition variable).
    /// It costs one call per thread woken, whatever `n`.
    pub fn notify(&self, n: usize) {
        notify_some(&self.cond, &self.waiters, n);
    }

    /// Wake every waiting thread: `notify_all()`.
    pub fn notify_all(&self) {
        self.cond.notify_all();
    }

    /// The data, once no thread can use the condition any more.
    pub fn into_inner(self) -> T {
        self.data
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T> ConditionGuard<'_, T> {
    /// Release the lock, sleep until notified, take the lock again:
    /// `wait()`. It may also return without a notification (a spurious
    /// wakeup), so check the data again, or use
    /// [`ConditionGuard::wait_for`].
    pub fn wait(&mut self) {
        let g = self.guard.take().expect("held outside a wait");
        self.waiters.fetch_add(1, Ordering::Relaxed);
        let g = self.cond.wait(g).unwrap_or_else(PoisonError::into_inner);
        self.waiters.fetch_sub(1, Ordering::Relaxed);
        self.guard = Some(g);
    }

    /// [`ConditionGuard::wait`] for at most `timeout`: `wait(timeout)`.
    /// False when the time ran out.
    pub fn wait_timeout(&mut self, timeout: Duration) -> bool {
        let g = self.guard.take().expect("held outside a wait");
        self.waiters.fetch_add(1, Ordering::Relaxed);
        let (g, t) = self
            .cond
            .wait_timeout(g, timeout)
            .unwrap_or_else(PoisonError::into_inner);
        self.waiters.fetch_sub(1, Ordering::Relaxed);
        self.guard = Some(g);
        !t.timed_out()
    }

    /// Wait until `ready(&data)` holds: `wait_for(predicate)`. Checked
    /// first, then after every wakeup.
    pub fn wait_for(&mut self, ready: impl FnMut(&T) -> bool) {
        self.wait_for_deadline(ready, None);
    }

    /// [`ConditionGuard::wait_for`] for at most `timeout`:
    /// `wait_for(predicate, timeout)`. Returns the predicate's last value
    /// (false: the time ran out first).
    pub fn wait_for_timeout(&mut self, ready: impl FnMut(&T) -> bool, timeout: Duration) -> bool {
        self.wait_for_deadline(ready, deadline_after(timeout))
    }

    fn wait_for_deadline(
        &mut self,
        mut ready: impl FnMut(&T) -> bool,
        deadline: Option<std::time::Instant>,
    ) -> bool {
        let g = self.guard.take().expect("held outside a wait");
        // Counted for the whole wait, its checks of the predicate too
        // (a notify then wakes this thread once more than needed).
        self.waiters.fetch_add(1, Ordering::Relaxed);
        let (g, ok) = wait_until(self.cond, g, deadline, |t| ready(t));
        self.waiters.fetch_sub(1, Ordering::Relaxed);
        self.guard = Some(g);
        ok
    }

    /// Wake up to `n` waiting threads: `notify(n)`; one call per thread
    /// woken, whatever `n`.
    pub fn notify(&self, n: usize) {
        notify_some(self.cond, self.waiters, n);
    }

    /// Wake every waiting thread: `notify_all()`.
    pub fn notify_all(&self) {
        self.cond.notify_all();
    }
}

impl<T> Deref for ConditionGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.guard.as_deref().expect("held outside a wait")
    }
}

impl<T> DerefMut for ConditionGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.guard.as_deref_mut().expect("held outside a wait")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::thread::{Event, Group, spawn};

    #[test]
    fn a_lock_is_not_reentrant_and_times_out() {
        let lock = Lock::new();
        assert!(!lock.locked());
        let g = lock.acquire();
        assert!(lock.try_acquire().is_none());
        assert!(lock.acquire_timeout(Duration::from_millis(5)).is_none());
        drop(g);
        assert!(!lock.locked());
        let _g = lock.acquire_timeout(Duration::MAX).expect("free");
    }

    #[test]
    fn a_lock_excludes_other_threads() {
        let lock = Arc::new(Lock::new());
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut group = Group::new();
        for i in 0..4 {
            let (lock, inside, most) = (Arc::clone(&lock), Arc::clone(&inside), Arc::clone(&most));
            group
                .spawn(format!("L-{i}"), move |gate| {
                    gate.wait();
                    for _ in 0..200 {
                        let _g = lock.acquire();
                        let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
                .unwrap();
        }
        group.join().unwrap();
        assert_eq!(most.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_lock_loses_no_update_when_its_takers_spin_and_sleep() {
        // Short holds (taken mostly by spinning) and, every 1000th time,
        // a long one (the others sleep on the word and must be woken).
        use std::sync::atomic::AtomicU64;
        let lock = Arc::new(Lock::new());
        let counter = Arc::new(AtomicU64::new(0));
        let mut group = Group::new();
        for i in 0..4 {
            let (lock, counter) = (Arc::clone(&lock), Arc::clone(&counter));
            group
                .spawn(format!("L-{i}"), move |gate| {
                    gate.wait();
                    for n in 0..20_000 {
                        let _g = lock.acquire();
                        let v = counter.load(Ordering::Relaxed);
                        if n % 1000 == 0 {
                            std::thread::sleep(Duration::from_micros(200));
                        }
                        counter.store(v + 1, Ordering::Relaxed);
                    }
                })
                .unwrap();
        }
        group.join().unwrap();
        assert_eq!(counter.load(Ordering::Relaxed), 80_000);
        assert!(!lock.locked());
    }

    #[test]
    fn a_guard_released_by_another_thread_wakes_a_sleeper() {
        // threading.Lock may be released by a thread that did not take it.
        // The waiter makes a plain acquire(): it must have slept on the
        // word (100 ms is far past the spin) and been woken by the release.
        let lock = Arc::new(Lock::new());
        let guard = lock.acquire();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let lock = Arc::clone(&lock);
            std::thread::spawn(move || {
                let t0 = std::time::Instant::now();
                drop(lock.acquire());
                tx.send(t0.elapsed()).unwrap();
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        std::thread::scope(|s| {
            s.spawn(move || drop(guard));
        });
        let waited = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the sleeper was never woken");
        assert!(
            waited >= Duration::from_millis(90),
            "took the lock while held: {waited:?}"
        );
        waiter.join().unwrap();
        assert!(!lock.locked());
    }

    #[test]
    fn a_timed_acquire_gives_up_on_time_and_leaves_the_lock_usable() {
        let lock = Arc::new(Lock::new());
        let guard = lock.acquire();
        let t0 = std::time::Instant::now();
        assert!(lock.acquire_timeout(Duration::from_millis(30)).is_none());
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(30),
            "gave up early: {waited:?}"
        );
        assert!(waited < Duration::from_secs(20), "gave up late: {waited:?}");
        drop(guard);
        assert!(!lock.locked());
        assert!(lock.try_acquire().is_some());
    }

    #[test]
    fn a_timed_waiter_that_gives_up_does_not_strand_a_plain_one() {
        // B waits with a deadline, A without; the holder lets go around
        // B's deadline, so the release may wake B just as B gives up. A
        // must still get the lock: a timed waiter that took the wake-up
        // and then took the lock, or left, without handing it on, left A
        // asleep on a free lock for ever (58 rounds in 68 before the fix).
        let lock = Arc::new(Lock::new());
        let patience = Duration::from_millis(3);
        for round in 0..40u32 {
            let held = lock.acquire();
            let (started_tx, started) = std::sync::mpsc::channel();
            let b = {
                let lock = Arc::clone(&lock);
                std::thread::spawn(move || {
                    started_tx.send(Instant::now()).unwrap();
                    lock.acquire_timeout(patience).is_some()
                })
            };
            let b_started = started.recv().unwrap();
            // B is past its spin and asleep before A comes.
            std::thread::sleep(Duration::from_micros(500));
            let (got_tx, got) = std::sync::mpsc::channel();
            let a = {
                let lock = Arc::clone(&lock);
                std::thread::spawn(move || {
                    drop(lock.acquire());
                    got_tx.send(()).unwrap();
                })
            };
            // Release from 40 µs before to 120 µs after B's deadline.
            let when = b_started + patience - Duration::from_micros(40)
                + Duration::from_micros(u64::from(round % 17) * 10);
            while Instant::now() < when {
                std::hint::spin_loop();
            }
            drop(held);
            b.join().unwrap();
            got.recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("round {round}: A was never woken"));
            a.join().unwrap();
            assert!(!lock.locked());
        }
    }

    #[test]
    fn an_rlock_is_reentrant_for_its_owner_only() {
        let lock = Arc::new(RLock::new());
        let a = lock.acquire();
        let b = lock.acquire();
        assert_eq!((a.depth(), b.depth()), (1, 2));
        let l = Arc::clone(&lock);
        let other = spawn("Other", move || {
            let blocked = l.acquire_timeout(Duration::from_millis(5)).is_none();
            let owned = l.is_owned();
            (blocked, owned)
        })
        .unwrap();
        assert_eq!(other.join().unwrap(), (true, false));
        drop(b);
        assert!(lock.is_owned(), "one level still held");
        let l = Arc::clone(&lock);
        let started = Arc::new(Event::new());
        let s = Arc::clone(&started);
        let waiter = spawn("Waiter", move || {
            s.set();
            let g = l.acquire(); // waits for the last level
            g.depth()
        })
        .unwrap();
        started.wait();
        drop(a);
        assert_eq!(waiter.join().unwrap(), 1);
        assert!(!lock.is_owned());
    }

    #[test]
    fn an_rlock_kept_by_a_thread_that_ended_is_no_later_threads() {
        // Python's RLock stays held for ever once its owner ends without
        // releasing it. glibc gives a joined thread's stack, and so the
        // addresses of its thread-locals, to the next thread it starts:
        // ownership keyed on such an address passed to that thread.
        let lock = Arc::new(RLock::new());
        let l = Arc::clone(&lock);
        spawn("Holder", move || std::mem::forget(l.acquire()))
            .unwrap()
            .join()
            .unwrap();
        for i in 0..8 {
            let l = Arc::clone(&lock);
            let later = spawn(format!("Later-{i}"), move || {
                let owned = l.is_owned();
                let taken = l
                    .acquire_timeout(Duration::from_millis(1))
                    .map(|g| g.depth());
                (owned, taken)
            })
            .unwrap();
            assert_eq!(later.join().unwrap(), (false, None), "thread {i}");
        }
        assert!(!lock.is_owned());
    }

    #[test]
    fn a_condition_hands_every_item_to_exactly_one_consumer() {
        // Producer/consumer: items 1..=100, a 0 per consumer to stop.
        let q = Arc::new(Condition::new(VecDeque::new()));
        let mut consumers = Vec::new();
        for i in 0..3 {
            let q = Arc::clone(&q);
            consumers.push(
                spawn(format!("C-{i}"), move || {
                    let mut got = Vec::new();
                    loop {
                        let mut items = q.lock();
                        items.wait_for(|items| !items.is_empty());
                        let n = items.pop_front().unwrap();
                        if n == 0 {
                            return got;
                        }
                        got.push(n);
                    }
                })
                .unwrap(),
            );
        }
        for n in (1..=100).chain([0, 0, 0]) {
            let mut items = q.lock();
            items.push_back(n);
            items.notify(1);
        }
        let mut all: Vec<i32> = consumers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        all.sort_unstable();
        assert_eq!(all, (1..=100).collect::<Vec<_>>());
    }

    #[test]
    fn notify_costs_the_threads_woken_not_n() {
        // notify(n) made n futex calls, waiters or not: notify(usize::MAX)
        // never returned (Python's takes microseconds).
        let c = std::sync::Arc::new(Condition::new(0u32));
        let (done, finished) = std::sync::mpsc::channel();
        {
            let c = std::sync::Arc::clone(&c);
            std::thread::spawn(move || {
                c.notify(usize::MAX);
                c.lock().notify(usize::MAX);
                let _ = done.send(());
            });
        }
        assert!(
            finished.recv_timeout(Duration::from_secs(10)).is_ok(),
            "notify(usize::MAX) did not return"
        );
        // And it still wakes them: two waiters, notify(5) wakes both.
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let c = std::sync::Arc::clone(&c);
                std::thread::spawn(move || {
                    let mut g = c.lock();
                    *g += 1;
                    g.wait_for(|n| *n >= 100);
                })
            })
            .collect();
        loop {
            let mut g = c.lock();
            if *g == 2 && c.waiters.load(Ordering::Relaxed) == 2 {
                *g = 100;
                g.notify(5);
                break;
            }
            drop(g);
            std::thread::yield_now();
        }
        for w in waiters {
            w.join().unwrap();
        }
    }

    #[test]
    fn condition_waits_time_out() {
        let c = Condition::new(0);
        let mut g = c.lock();
        assert!(!g.wait_for_timeout(|n| *n > 0, Duration::from_millis(5)));
        *g = 1;
        assert!(g.wait_for_timeout(|n| *n > 0, Duration::ZERO));
        assert!(g.wait_for_timeout(|n| *n > 0, Duration::MAX));
        let _ = g.wait_timeout(Duration::from_millis(1));
        assert_eq!(*g, 1, "the data is still there after a wait");
        drop(g);
        c.notify_all();
        assert_eq!(c.into_inner(), 1);
    }
}
