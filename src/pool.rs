//! A pre-forked process pool: Python's `multiprocessing.Pool`, on fork and
//! pipes, that never hangs when a worker dies.
//!
//! A task is named, not sent: tasks are registered by name in a
//! [`Registry`] before the pool forks, and the workers inherit it. A task
//! takes its argument as bytes and appends its result to a buffer
//! ([`Registry::register`], a plain function), or, typed, takes and returns
//! fixed-width values ([`Registry::register_typed`], any `Fn`, closures that
//! capture included, with [`Wire`] values) in a loop compiled for it:
//!
//! ```no_run
//! use posixkit::pool::{Pool, Registry};
//! fn square(arg: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
//!     let n = i64::from_le_bytes(arg.try_into().map_err(|_| "want 8 bytes")?);
//!     out.extend_from_slice(&n.checked_mul(n).ok_or("overflow")?.to_le_bytes());
//!     Ok(())
//! }
//! let registry = Registry::new().register("square", square);
//! let mut pool = Pool::new(2, registry).unwrap();
//! let args: Vec<[u8; 8]> = (1..=5i64).map(i64::to_le_bytes).collect();
//! let results = pool.map("square", &args, 2).unwrap();
//! pool.close();
//! pool.join().unwrap();
//! ```
//!
//! How it works:
//! - Each worker has its own task pipe and result pipe, so the pool always
//!   knows which task each worker holds. A worker runs one batch at a time
//!   (one task from `apply_async`, or one chunk of `map`) and may hold a
//!   second in its pipe, so it never waits for the parent between batches;
//!   the second is sent only when both fit in the pipe's capacity
//!   (F_GETPIPE_SZ), so parent and worker can never block on each other.
//! - The parent waits with poll(2) on every worker's result pipe. A worker
//!   that dies (killed, crashed) closes its result pipe: the pool reaps
//!   exactly that pid, reports the batch it was running as
//!   [`TaskError::WorkerDied`] with the decoded status, queues the batch
//!   that had not started again, forks a replacement and goes on. Python's Pool hangs
//!   in this case; this one cannot, because no result is awaited from a
//!   worker that is gone.
//! - A task that returns `Err` or panics fails alone
//!   ([`TaskError::Failed`]); its worker lives on.
//! - `close` then `join` lets the queued work finish, closes the task pipes
//!   (end of file tells each worker to `_exit(0)`) and reaps every worker;
//!   `terminate` kills them with SIGKILL and reaps them. Dropping a pool
//!   that was not joined terminates it: no worker outlives its pool, and no
//!   zombie is left.
//! - Writes to a worker that died before reading its task fail with EPIPE;
//!   that batch had not started, so it is queued again. This relies on
//!   SIGPIPE being ignored, which is the default in Rust programs.
//!
//! Wire format (little-endian), in frames with [`crate::pipe`]'s length
//! prefix. Items of one width, the common case (`map` over numbers), travel
//! packed with no per-item framing, as a C pool sends an array:
//! - A task frame is `id u64, func u16, count u32, width u32`, then either
//!   `count × width` bytes (every argument is `width` bytes long), or, when
//!   `width` is `0xFFFF_FFFF`, `count` times `len u32, bytes`.
//! - A result frame is `id u64, count u32, width u32`, then either
//!   `count × width` bytes (every task succeeded with a result of `width`
//!   bytes), or, when `width` is `0xFFFF_FFFF`, a table of `count` entries
//!   `len u32` (bit 31 set: the task failed and its bytes are the message)
//!   followed by the items' bytes, back to back.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::signal::Signal;

use crate::error::{Error, Result};
use crate::pipe::{self, Reader, Writer};
use crate::process::{self, Fork, Pid};
use crate::status::Status;

/// A task: reads its argument, appends its result to `out`, or returns an
/// error message. It runs in a worker process.
pub type TaskFn = fn(arg: &[u8], out: &mut Vec<u8>) -> std::result::Result<(), String>;

/// A value that crosses the pipes as fixed-width little-endian bytes: the
/// argument and result types of a typed task ([`Registry::register_typed`]).
pub trait Wire: Sized + Send + 'static {
    /// Its width in bytes.
    const WIDTH: usize;
    /// Write its [`Wire::WIDTH`] bytes to `out`, which is that long.
    fn put(&self, out: &mut [u8]);
    /// Read it from `bytes`, or `None` when they are not [`Wire::WIDTH`] long.
    fn get(bytes: &[u8]) -> Option<Self>;
}

macro_rules! wire_numbers {
    ($($t:ty),*) => {$(
        impl Wire for $t {
            const WIDTH: usize = std::mem::size_of::<$t>();
            #[inline]
            fn put(&self, out: &mut [u8]) {
                out.copy_from_slice(&self.to_le_bytes());
            }
            #[inline]
            fn get(bytes: &[u8]) -> Option<Self> {
                Some(<$t>::from_le_bytes(bytes.try_into().ok()?))
            }
        }
    )*};
}
wire_numbers!(i8, u8, i16, u16, i32, u32, i64, u64, i128, u128, f32, f64);

impl<const N: usize> Wire for [u8; N] {
    const WIDTH: usize = N;
    #[inline]
    fn put(&self, out: &mut [u8]) {
        out.copy_from_slice(self);
    }
    #[inline]
    fn get(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok()
    }
}

/// How a worker runs a task's items.
#[derive(Clone)]
enum Runner {
    /// A [`TaskFn`], called through a pointer for each item.
    Bytes(TaskFn),
    /// A typed task: its whole batch loop is compiled for it.
    Typed(std::sync::Arc<dyn Batched>),
}

impl fmt::Debug for Runner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Runner::Bytes(_) => f.write_str("Runner::Bytes"),
            Runner::Typed(_) => f.write_str("Runner::Typed"),
        }
    }
}

/// A typed task's batch loop, behind one dynamic call per batch.
trait Batched: Send + Sync {
    fn run(&self, input: &[u8], width: u32, count: usize, out: &mut Output<'_>) -> Step;
}

struct Typed<A, R, F> {
    f: F,
    _types: std::marker::PhantomData<fn(A) -> R>,
}

impl<A, R, F> Batched for Typed<A, R, F>
where
    A: Wire,
    R: Wire,
    F: Fn(A) -> std::result::Result<R, String> + Send + Sync + 'static,
{
    fn run(&self, input: &[u8], width: u32, count: usize, out: &mut Output<'_>) -> Step {
        // `count` comes from the frame: never reserve past what its
        // arguments could need.
        out.data
            .reserve(count.min(input.len()).saturating_mul(R::WIDTH));
        if width as usize == A::WIDTH && A::WIDTH > 0 && R::WIDTH > 0 {
            self.run_packed(input, count, out)?;
        }
        run_items(input, width, count, out, |arg, data| {
            let r = (self.f)(decode::<A>(arg)?)?;
            let at = data.len();
            data.resize(at + R::WIDTH, 0);
            r.put(&mut data[at..]);
            Ok(())
        })
    }
}

impl<A, R, F> Typed<A, R, F>
where
    A: Wire,
    R: Wire,
    F: Fn(A) -> std::result::Result<R, String> + Send + Sync + 'static,
{
    /// The common case, arguments packed at the task's width: a loop with
    /// no cursor and no table to keep, from the first item up to the first
    /// one that fails (an error or a panic). That item is recorded as
    /// [`run_items`] would, and the cursor left after it, for
    /// [`run_items`] to go on with the rest.
    #[inline(never)]
    fn run_packed(&self, input: &[u8], count: usize, out: &mut Output<'_>) -> Step {
        let size = count.checked_mul(A::WIDTH).ok_or(())?;
        let args = input
            .get(TASK_HEAD..TASK_HEAD.checked_add(size).ok_or(())?)
            .ok_or(())?;
        let base = out.data.len();
        // Sized once, results written in place: no length to keep per item.
        out.data.resize(
            base.checked_add(count.checked_mul(R::WIDTH).ok_or(())?)
                .ok_or(())?,
            0,
        );
        let results = &mut out.data[base..];
        // Items done: read after a panic, so kept where the unwinding sees it.
        let mut done = 0usize;
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let pairs = args
                .chunks_exact(A::WIDTH)
                .zip(results.chunks_exact_mut(R::WIDTH));
            for (arg, result) in pairs {
                match decode::<A>(arg).and_then(&self.f) {
                    Ok(r) => r.put(result),
                    Err(message) => return Some(message),
                }
                done += 1;
            }
            None
        }));
        let failure = match run {
            Ok(None) => None,
            Ok(Some(message)) => Some(message.into_bytes()),
            Err(panic) => Some(panic_bytes(&*panic)),
        };
        if done > 0 {
            out.shape.record(out.table, 0, R::WIDTH, true)?;
        }
        out.cursor = Cursor {
            next: done,
            at: TASK_HEAD + done * A::WIDTH,
            head: base + done * R::WIDTH,
        };
        out.data.truncate(out.cursor.head);
        if let Some(message) = failure {
            // Past the failed item's argument, as the general loop leaves it.
            out.cursor.at += A::WIDTH;
            out.fail(&message)?;
        }
        Ok(())
    }
}

/// A typed task's argument, or the message that fails its item.
#[inline]
fn decode<A: Wire>(arg: &[u8]) -> std::result::Result<A, String> {
    A::get(arg).ok_or_else(|| {
        format!(
            "the argument is {} bytes, the task takes {}",
            arg.len(),
            A::WIDTH
        )
    })
}

/// The tasks a pool's workers can run, by name. Build it before the pool
/// forks: the workers inherit it.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    names: Vec<&'static str>,
    fns: Vec<Runner>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Add a task under `name` (a later registration of the same name wins).
    #[must_use]
    pub fn register(self, name: &'static str, f: TaskFn) -> Self {
        self.add(name, Runner::Bytes(f))
    }

    /// Add a typed task under `name`: `f` takes an `A` and returns an `R`,
    /// both fixed-width values ([`Wire`]), or an error message. Its items
    /// are decoded, run and encoded in a loop compiled for `f`, with no
    /// call through a pointer per item: the fast way to `map` over numbers.
    /// An argument of the wrong width fails that item alone.
    ///
    /// ```
    /// use posixkit::pool::Registry;
    /// fn square(n: i64) -> Result<i64, String> {
    ///     n.checked_mul(n).ok_or_else(|| format!("{n} squared overflows"))
    /// }
    /// let registry = Registry::new().register_typed("square", square);
    /// ```
    #[must_use]
    pub fn register_typed<A, R, F>(self, name: &'static str, f: F) -> Self
    where
        A: Wire,
        R: Wire,
        F: Fn(A) -> std::result::Result<R, String> + Send + Sync + 'static,
    {
        let typed = Typed {
            f,
            _types: std::marker::PhantomData,
        };
        self.add(name, Runner::Typed(std::sync::Arc::new(typed)))
    }

    fn add(mut self, name: &'static str, runner: Runner) -> Self {
        if let Some(i) = self.names.iter().position(|n| *n == name) {
            self.fns[i] = runner;
        } else {
            self.names.push(name);
            self.fns.push(runner);
        }
        self
    }

    fn index(&self, name: &str) -> Result<u16> {
        self.names
            .iter()
            .position(|n| *n == name)
            .and_then(|i| u16::try_from(i).ok())
            .ok_or_else(|| Error::invalid("task", format!("no task named '{name}' is registered")))
    }
}

/// Why one task produced no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskError {
    /// The task returned an error or panicked; its worker lives on.
    Failed {
        /// The task's name.
        task: String,
        /// Its position: 0 for `apply_async`, the item's index for `map`.
        index: usize,
        /// What the task said.
        message: String,
    },
    /// The worker running it died; the pool replaced the worker.
    WorkerDied {
        /// The task's name.
        task: String,
        /// Its position.
        index: usize,
        /// The dead worker's pid.
        pid: Pid,
        /// How it died.
        status: Status,
    },
    /// The pool was terminated before the task ran or finished.
    Cancelled {
        /// The task's name.
        task: String,
        /// Its position.
        index: usize,
    },
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Failed {
                task,
                index,
                message,
            } => write!(f, "task {task}[{index}] failed: {message}"),
            TaskError::WorkerDied {
                task,
                index,
                pid,
                status,
            } => {
                write!(f, "task {task}[{index}] lost: worker {pid} {status}")
            }
            TaskError::Cancelled { task, index } => {
                write!(f, "task {task}[{index}] cancelled: the pool was terminated")
            }
        }
    }
}

impl std::error::Error for TaskError {}

/// Something the pool did on its own that a caller may want to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A worker died and a new one took its place.
    Replaced {
        /// The dead worker.
        old: Pid,
        /// How it died.
        status: Status,
        /// The new worker.
        new: Pid,
    },
}

/// A task submitted with [`Pool::apply_async`]; redeem it with [`Pool::get`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AsyncResult {
    id: u64,
}

/// `width` on the wire when items differ in length (or some failed).
const VARIABLE: u32 = u32::MAX;
/// Bytes before the items in a task frame: id, func, count, width.
const TASK_HEAD: usize = 18;
/// Bytes before the items in a result frame: id, count, width.
const RESULT_HEAD: usize = 16;
/// Bit 31 of a result's table entry: the task failed.
const FAILED: u32 = 1 << 31;

/// The outcome of one batch: results in item order.
#[derive(Debug, Clone)]
struct Batch {
    task: &'static str,
    first: usize,
    /// The raw result frame (results are slices of it).
    frame: Vec<u8>,
    /// Where each item is in `frame`.
    layout: Layout,
    /// Set when no result frame came: every item has this error.
    lost: Option<Lost>,
    /// Items in the batch.
    count: usize,
}

/// Where a result frame's items are.
#[derive(Debug, Clone)]
enum Layout {
    /// Every item succeeded with `width` bytes, packed after the header.
    Fixed(usize),
    /// Item `i` starts at `starts[i]`; its table entry gives its length and
    /// whether it failed.
    Table(Vec<u32>),
}

#[derive(Debug, Clone, Copy)]
enum Lost {
    Died(Pid, Status),
    Cancelled,
}

impl Batch {
    fn len(&self) -> usize {
        self.count
    }

    fn get(&self, i: usize) -> std::result::Result<&[u8], TaskError> {
        let index = self.first + i;
        let task = || self.task.to_string();
        match self.lost {
            Some(Lost::Died(pid, status)) => {
                return Err(TaskError::WorkerDied {
                    task: task(),
                    index,
                    pid,
                    status,
                });
            }
            Some(Lost::Cancelled) => {
                return Err(TaskError::Cancelled {
                    task: task(),
                    index,
                });
            }
            None => {}
        }
        let (bytes, ok) = match &self.layout {
            Layout::Fixed(width) => {
                let at = RESULT_HEAD + i * width;
                (&self.frame[at..at + width], true)
            }
            Layout::Table(starts) => {
                let entry =
                    read::<u32>(&self.frame, RESULT_HEAD + 4 * i).expect("checked on arrival");
                let at = starts[i] as usize;
                let len = (entry & !FAILED) as usize;
                (&self.frame[at..at + len], entry & FAILED == 0)
            }
        };
        if ok {
            Ok(bytes)
        } else {
            Err(TaskError::Failed {
                task: task(),
                index,
                message: String::from_utf8_lossy(bytes).into_owned(),
            })
        }
    }
}

/// The results of [`Pool::map`], in the order of the arguments.
#[derive(Debug, Clone)]
pub struct MapResults {
    batches: Vec<Batch>,
    len: usize,
}

impl MapResults {
    /// How many results.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The result of item `i`: its bytes, or why it has none.
    ///
    /// # Panics
    /// If `i` is out of range.
    pub fn get(&self, i: usize) -> std::result::Result<&[u8], TaskError> {
        assert!(
            i < self.len,
            "index {i} out of range for {} results",
            self.len
        );
        let b = self.batches.partition_point(|b| b.first + b.len() <= i);
        self.batches[b].get(i - self.batches[b].first)
    }

    /// Every result in order.
    pub fn iter(&self) -> impl Iterator<Item = std::result::Result<&[u8], TaskError>> + '_ {
        self.batches
            .iter()
            .flat_map(|b| (0..b.len()).map(move |i| b.get(i)))
    }
}

/// A batch waiting for a worker.
#[derive(Debug)]
struct Job {
    id: u64,
    func: u16,
    first: usize,
    count: u32,
    /// The encoded task frame.
    frame: Vec<u8>,
}

#[derive(Debug)]
struct Worker {
    pid: Pid,
    tasks: Writer,
    results: Reader,
    /// Batches sent and not yet answered, oldest first. The worker runs
    /// them in this order, so only the first can have started.
    busy: VecDeque<Job>,
    /// The task pipe's capacity (F_GETPIPE_SZ).
    capacity: usize,
}

/// Batches a worker may hold at once: the next is already in its pipe when
/// it finishes one, so it never waits for the parent.
const DEPTH: usize = 2;

/// Frame buffers a pool keeps for reuse.
const SPARE_BUFFERS: usize = 64;

/// A pool of pre-forked worker processes. See the [module docs](self).
#[derive(Debug)]
pub struct Pool {
    registry: Registry,
    workers: Vec<Worker>,
    queue: VecDeque<Job>,
    done: HashMap<u64, Batch>,
    events: Vec<Event>,
    next_id: u64,
    closed: bool,
    /// Frame buffers to reuse (see [`Pool::recycle`]).
    spare: Vec<Vec<u8>>,
    /// Readable when waiting should stop (see [`Pool::interrupt_on`]).
    interrupt: Option<std::os::fd::OwnedFd>,
    /// How a worker is forked: [`process::fork_named`] (checked), or the
    /// unchecked fork [`Pool::new_unchecked`]'s caller vouched for.
    fork: fn(&str) -> Result<Fork>,
    /// Not Send: the pool forks from its methods, so it stays on the thread
    /// that created it (for an unchecked pool, the thread whose
    /// single-threadedness the caller vouched for).
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Pool {
    /// Fork `workers` (1-1024) worker processes that can run the tasks in
    /// `registry`.
    ///
    /// The pool forks here and again whenever it replaces a dead worker
    /// (inside [`Pool::get`], [`Pool::map`], [`Pool::join`]); every one of
    /// those forks is [`process::fork`]'s, refused with
    /// [`ErrorKind::ThreadsRunning`](crate::ErrorKind::ThreadsRunning) while
    /// other threads run. [`Pool::new_unchecked`] skips the check.
    pub fn new(workers: usize, registry: Registry) -> Result<Pool> {
        Pool::with_fork(workers, registry, |what| process::fork_named(what))
    }

    /// [`Pool::new`] with `fork` as the way every worker is forked.
    pub(crate) fn with_fork(
        workers: usize,
        registry: Registry,
        fork: fn(&str) -> Result<Fork>,
    ) -> Result<Pool> {
        if !(1..=1024).contains(&workers) {
            return Err(Error::invalid("workers", "a pool has 1-1024 workers"));
        }
        let mut pool = Pool {
            registry,
            workers: Vec::with_capacity(workers),
            queue: VecDeque::new(),
            done: HashMap::new(),
            events: Vec::new(),
            next_id: 1,
            closed: false,
            spare: Vec::new(),
            interrupt: None,
            fork,
            _not_send: std::marker::PhantomData,
        };
        for _ in 0..workers {
            let w = pool.fork_worker()?;
            pool.workers.push(w);
        }
        Ok(pool)
    }

    /// The workers' pids, in slot order.
    pub fn pids(&self) -> Vec<Pid> {
        self.workers.iter().map(|w| w.pid).collect()
    }

    /// Stop waiting as soon as `fd` becomes readable: the read end of a
    /// self-pipe that a signal handler writes to, for instance
    /// (`signal_hook::low_level::pipe`). From then on every wait
    /// ([`Pool::get`], [`Pool::map`], [`Pool::join`]) returns an error of
    /// kind [`ErrorKind::Interrupted`](crate::ErrorKind::Interrupted), and
    /// the caller decides, usually
    /// [`Pool::terminate`]. Workers do not inherit the descriptor.
    pub fn interrupt_on(&mut self, fd: std::os::fd::OwnedFd) {
        self.interrupt = Some(fd);
    }

    /// Workers replaced since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Queue `task` with `arg`; the result comes from [`Pool::get`].
    pub fn apply_async(&mut self, task: &str, arg: &[u8]) -> Result<AsyncResult> {
        let id = self.submit(task, 0, &[arg])?;
        self.dispatch()?;
        Ok(AsyncResult { id })
    }

    /// Wait for an [`Pool::apply_async`] result, at most `timeout` (forever
    /// with `None`). `Ok(None)`: the timeout passed first, and the handle
    /// stays valid. A result is handed out once.
    pub fn get(
        &mut self,
        handle: &AsyncResult,
        timeout: Option<Duration>,
    ) -> Result<Option<std::result::Result<Vec<u8>, TaskError>>> {
        // A timeout too large for the clock waits for ever.
        let deadline = timeout.and_then(process::deadline_after);
        loop {
            if let Some(batch) = self.done.remove(&handle.id) {
                return Ok(Some(batch.get(0).map(<[u8]>::to_vec)));
            }
            if !self.is_pending(handle.id) {
                return Err(Error::invalid(
                    "get",
                    "this result was already taken, or belongs to another pool",
                ));
            }
            if !self.pump(deadline)? {
                return Ok(None);
            }
        }
    }

    /// Run `task` on every argument, in chunks of `chunksize` items (0: an
    /// even split, four chunks per worker), and wait for all results, in
    /// argument order.
    pub fn map<A: AsRef<[u8]>>(
        &mut self,
        task: &str,
        args: &[A],
        chunksize: usize,
    ) -> Result<MapResults> {
        let mut results = MapResults {
            batches: Vec::new(),
            len: 0,
        };
        self.map_into(task, args, chunksize, &mut results)?;
        Ok(results)
    }

    /// [`Pool::map`] into `results`, reusing its buffers: in a loop of maps
    /// this allocates nothing once warm.
    pub fn map_into<A: AsRef<[u8]>>(
        &mut self,
        task: &str,
        args: &[A],
        chunksize: usize,
        results: &mut MapResults,
    ) -> Result<()> {
        for b in results.batches.drain(..) {
            self.recycle(b.frame);
        }
        results.len = 0;
        let chunk = if chunksize == 0 {
            args.len().div_ceil(self.workers.len() * 4).max(1)
        } else {
            chunksize
        };
        let mut ids = Vec::with_capacity(args.len().div_ceil(chunk));
        for (c, items) in args.chunks(chunk).enumerate() {
            ids.push(self.submit(task, c * chunk, items)?);
            // Hand each chunk out as soon as it is encoded, so the workers
            // start while the rest is encoded. Once the queue holds more
            // than this chunk, every worker is full: skip the scan.
            if self.queue.len() == 1 {
                self.dispatch()?;
            }
        }
        // Chunks still queued go out from pump, which dispatches first.
        for id in ids {
            loop {
                if let Some(b) = self.done.remove(&id) {
                    results.batches.push(b);
                    break;
                }
                self.pump(None)?;
            }
        }
        results.len = args.len();
        Ok(())
    }

    /// Accept no more tasks (Python's `close`); queued tasks still run.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// After [`Pool::close`]: wait for every queued task, then let each
    /// worker exit and reap it. Results of earlier `apply_async` calls stay
    /// available from [`Pool::get`].
    pub fn join(&mut self) -> Result<Vec<(Pid, Status)>> {
        if !self.closed {
            return Err(Error::invalid(
                "join",
                "call close() before join(), as in Python",
            ));
        }
        while !self.queue.is_empty() || self.workers.iter().any(|w| !w.busy.is_empty()) {
            self.pump(None)?;
        }
        let mut statuses = Vec::with_capacity(self.workers.len());
        let mut first_error = None;
        let workers = std::mem::take(&mut self.workers);
        // Close every task pipe first (end of file: each worker's loop ends
        // with _exit(0)), then reap them all, even past an error.
        let pids: Vec<Pid> = workers.into_iter().map(|w| w.pid).collect();
        for pid in pids {
            match process::waitpid(pid) {
                Ok(status) => statuses.push((pid, status)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(statuses), Err)
    }

    /// Kill every worker with SIGKILL and reap it; tasks not finished are
    /// reported as [`TaskError::Cancelled`].
    pub fn terminate(&mut self) -> Result<()> {
        self.closed = true;
        let mut first_error = None;
        for w in std::mem::take(&mut self.workers) {
            for job in &w.busy {
                self.cancel(job);
            }
            let _ = process::kill(w.pid, Signal::SIGKILL);
            if let Err(e) = process::waitpid(w.pid) {
                first_error.get_or_insert(e);
            }
        }
        for job in std::mem::take(&mut self.queue) {
            self.cancel(&job);
        }
        first_error.map_or(Ok(()), Err)
    }

    fn cancel(&mut self, job: &Job) {
        self.fail(job, Lost::Cancelled);
    }

    /// Record that `job` produced no results, and why.
    fn fail(&mut self, job: &Job, lost: Lost) {
        let task = self.registry.names[usize::from(job.func)];
        self.done.insert(
            job.id,
            Batch {
                task,
                first: job.first,
                frame: Vec::new(),
                layout: Layout::Fixed(0),
                lost: Some(lost),
                count: job.count as usize,
            },
        );
    }

    fn is_pending(&self, id: u64) -> bool {
        self.queue.iter().any(|j| j.id == id)
            || self
                .workers
                .iter()
                .any(|w| w.busy.iter().any(|j| j.id == id))
    }

    fn submit<A: AsRef<[u8]>>(&mut self, task: &str, first: usize, args: &[A]) -> Result<u64> {
        if self.closed {
            return Err(Error::invalid("apply", "the pool is closed"));
        }
        let func = self.registry.index(task)?;
        let id = self.next_id;
        self.next_id += 1;
        let mut frame = self.spare.pop().unwrap_or_default();
        let count = encode_task(&mut frame, id, func, args)?;
        self.queue.push_back(Job {
            id,
            func,
            first,
            count,
            frame,
        });
        Ok(id)
    }

    /// Give queued batches to workers: one to each idle worker, then a
    /// second to a busy one when both frames fit in its task pipe at once.
    /// That bound keeps the parent from ever blocking on a full task pipe
    /// while the worker blocks on a full result pipe.
    fn dispatch(&mut self) -> Result<()> {
        for depth in 0..DEPTH {
            for slot in 0..self.workers.len() {
                let Some(next) = self.queue.front() else {
                    return Ok(());
                };
                let w = &self.workers[slot];
                // Bytes of the frames it holds, and of the next one.
                let in_flight = w
                    .busy
                    .iter()
                    .map(|j| j.frame.len() + pipe::HEADER)
                    .sum::<usize>();
                if w.busy.len() != depth
                    || (depth > 0 && in_flight + next.frame.len() + 2 * pipe::HEADER > w.capacity)
                {
                    continue;
                }
                let job = self.queue.pop_front().expect("queue is not empty");
                match self.workers[slot].tasks.send(&job.frame) {
                    Ok(()) => self.workers[slot].busy.push_back(job),
                    Err(e) if e.errno() == Some(Errno::EPIPE) => {
                        // The worker died before reading it: the batch never ran.
                        self.queue.push_front(job);
                        self.replace(slot)?;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Wait for results until something finishes or `deadline` passes;
    /// false when the deadline passed with nothing done.
    fn pump(&mut self, deadline: Option<Instant>) -> Result<bool> {
        self.dispatch()?;
        let timeout = process::poll_timeout(deadline);
        let ready: Vec<usize> = {
            let mut fds: Vec<PollFd<'_>> = self
                .workers
                .iter()
                .map(|w| PollFd::new(w.results.as_fd(), PollFlags::POLLIN))
                .collect();
            if let Some(fd) = &self.interrupt {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(0) => return Ok(false),
                Ok(_) => {}
                Err(Errno::EINTR) => return Ok(true),
                Err(e) => return Err(Error::sys("poll", "pool workers", e)),
            }
            fds.iter()
                .enumerate()
                .filter(|(_, f)| f.revents().is_some_and(|r| !r.is_empty()))
                .map(|(i, _)| i)
                .collect()
        };
        if ready.contains(&self.workers.len()) {
            return Err(Error::sys("poll", "pool interrupt", Errno::EINTR));
        }
        for slot in ready {
            let mut frame = self.spare.pop().unwrap_or_default();
            match self.workers[slot].results.recv_into(&mut frame) {
                Ok(true) => {
                    let job = self.workers[slot].busy.pop_front();
                    let batch = self.parse_results(job.as_ref(), frame)?;
                    if let Some(j) = job {
                        self.recycle(j.frame);
                    }
                    self.done.insert(batch.0, batch.1);
                }
                Ok(false) | Err(_) => {
                    self.recycle(frame);
                    self.replace(slot)?;
                }
            }
        }
        self.dispatch()?;
        Ok(true)
    }

    /// Keep a buffer for the next frame: allocating and freeing frames of
    /// tens of KiB on every batch makes the allocator give memory back and
    /// fault it in again (page faults cost more than the whole batch).
    /// A buffer keeps its length: receiving into it then zeroes nothing.
    fn recycle(&mut self, buf: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS {
            self.spare.push(buf);
        }
    }

    fn parse_results(&self, job: Option<&Job>, frame: Vec<u8>) -> Result<(u64, Batch)> {
        let bad = |why: &str| Error::data("recv", "pool worker", why.to_string());
        let job = job.ok_or_else(|| bad("a result came from an idle worker"))?;
        let (id, count, width) = match (
            read::<u64>(&frame, 0),
            read::<u32>(&frame, 8),
            read::<u32>(&frame, 12),
        ) {
            (Some(id), Some(count), Some(width)) => (id, count, width),
            _ => return Err(bad("short result")),
        };
        if id != job.id || count != job.count {
            return Err(bad("a result does not match its task"));
        }
        let layout = parse_layout(&frame, count, width).map_err(bad)?;
        let task = self.registry.names[usize::from(job.func)];
        Ok((
            id,
            Batch {
                task,
                first: job.first,
                frame,
                layout,
                lost: None,
                count: count as usize,
            },
        ))
    }

    /// The worker in `slot` is gone: reap it, fail its batch, fork a new one.
    fn replace(&mut self, slot: usize) -> Result<()> {
        let new = self.fork_worker()?;
        let old = std::mem::replace(&mut self.workers[slot], new);
        let Worker {
            pid,
            tasks,
            results,
            mut busy,
            ..
        } = old;
        drop(tasks);
        drop(results);
        // Its result pipe is closed, so it has exited or is exiting.
        let status = process::waitpid(pid)?;
        // Batches behind the first never started: queue them again, in order.
        while busy.len() > 1 {
            self.queue.push_front(busy.pop_back().expect("len > 1"));
        }
        if let Some(job) = busy.pop_front() {
            self.fail(&job, Lost::Died(pid, status));
        }
        self.events.push(Event::Replaced {
            old: pid,
            status,
            new: self.workers[slot].pid,
        });
        Ok(())
    }

    fn fork_worker(&mut self) -> Result<Worker> {
        let (task_r, task_w) = pipe::pipe()?;
        let (result_r, result_w) = pipe::pipe()?;
        // The child never returns: worker_main ends in _exit.
        match (self.fork)("pool worker")? {
            Fork::Child => {
                drop(task_w);
                drop(result_r);
                // Close every other worker's pipe ends, so that a worker's
                // end of file really means its parent closed the task pipe.
                self.workers.clear();
                self.interrupt = None;
                // A worker ends by the signals that end a process, whatever
                // handlers the parent program installed (they would write
                // to the parent's self-pipe, not stop the worker).
                for sig in [
                    Signal::SIGINT,
                    Signal::SIGTERM,
                    Signal::SIGHUP,
                    Signal::SIGQUIT,
                ] {
                    let _ = process::restore_default(sig);
                }
                worker_main(&self.registry, task_r, result_w)
            }
            Fork::Parent(pid) => {
                // Linux shrinks new pipes to one page when a user holds too
                // many pipe pages, so ask instead of assuming 64 KiB.
                let capacity =
                    nix::fcntl::fcntl(task_w.as_fd(), nix::fcntl::FcntlArg::F_GETPIPE_SZ)
                        .map_or(pipe::PIPE_BUF, |n| {
                            usize::try_from(n).unwrap_or(pipe::PIPE_BUF)
                        });
                Ok(Worker {
                    pid,
                    tasks: task_w,
                    results: result_r,
                    busy: VecDeque::new(),
                    capacity,
                })
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if !self.workers.is_empty() {
            let _ = self.terminate();
        }
    }
}

/// The worker's loop: read a task frame, run each item, send the results;
/// exit 0 at end of file, 1 if the parent is gone.
fn worker_main(registry: &Registry, tasks: Reader, results: Writer) -> ! {
    // A task's panic is its own failure, reported to the parent: keep the
    // binary's panic hook (which calls it a bug) quiet in workers.
    std::panic::set_hook(Box::new(|_| {}));
    // Tasks' panics are caught per item; anything that still unwinds (a
    // panic payload whose drop panics, say) must end the worker here, not
    // unwind into the code of the parent it was forked from.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // The worker is its task pipe's only reader: a FrameReader may read
        // ahead, and a frame costs one read(2) instead of two.
        let mut tasks = pipe::FrameReader::new(tasks);
        let mut output = Vec::new();
        let mut table = Vec::new();
        loop {
            let input = match tasks.recv() {
                Ok(Some(input)) => input,
                Ok(None) => process::_exit(0),
                Err(_) => process::_exit(1),
            };
            let sent = run_batch(registry, input, &mut output, &mut table).is_ok_and(|()| {
                let (head, data) = output.split_at(RESULT_HEAD);
                results.send_parts(&[head, &table, data]).is_ok()
            });
            if !sent {
                process::_exit(1);
            }
        }
    }));
    process::_exit(1)
}

/// Encode a task frame for `args` into `frame`; returns the item count.
fn encode_task<A: AsRef<[u8]>>(frame: &mut Vec<u8>, id: u64, func: u16, args: &[A]) -> Result<u32> {
    let count = u32::try_from(args.len())
        .map_err(|_| Error::invalid("task", "a batch holds at most 2^32-1 items"))?;
    let first = args.first().map_or(0, |a| a.as_ref().len());
    let mut fixed = true;
    let mut size = 0usize;
    for a in args {
        let len = a.as_ref().len();
        if len > pipe::MAX_FRAME {
            return Err(Error::invalid("task", "an argument is over 1 GiB"));
        }
        fixed &= len == first;
        size = size.saturating_add(len);
    }
    let width = if fixed {
        u32::try_from(first).expect("at most MAX_FRAME")
    } else {
        size = size.saturating_add(4usize.saturating_mul(args.len()));
        VARIABLE
    };
    // The whole frame must fit a pipe frame; refused here, before anything
    // is queued or allocated.
    if TASK_HEAD.saturating_add(size) > pipe::MAX_FRAME {
        return Err(Error::invalid(
            "task",
            format!(
                "a batch of {} arguments is over {} MiB on the wire: use smaller chunks",
                args.len(),
                pipe::MAX_FRAME >> 20
            ),
        ));
    }
    frame.clear();
    // Sized once: growing a frame of thousands of items by doubling costs
    // copies and, past the allocator's trim threshold, page faults.
    frame.reserve(TASK_HEAD.saturating_add(size));
    frame.extend_from_slice(&id.to_le_bytes());
    frame.extend_from_slice(&func.to_le_bytes());
    frame.extend_from_slice(&count.to_le_bytes());
    frame.extend_from_slice(&width.to_le_bytes());
    if fixed {
        frame.resize(TASK_HEAD + size, 0);
        let body = &mut frame[TASK_HEAD..];
        // The usual widths get a loop of their own with the width known,
        // which copies each item with one move instead of a call to memcpy.
        match first {
            0 => {}
            1 => pack(body, args, 1),
            2 => pack(body, args, 2),
            4 => pack(body, args, 4),
            8 => pack(body, args, 8),
            16 => pack(body, args, 16),
            w => pack(body, args, w),
        }
    } else {
        for a in args {
            let a = a.as_ref();
            let len = u32::try_from(a.len()).expect("at most MAX_FRAME");
            frame.extend_from_slice(&len.to_le_bytes());
            frame.extend_from_slice(a);
        }
    }
    Ok(count)
}

/// Copy `args`, each `width` (not 0) bytes long, into `body`, back to
/// back. Always inlined, so that a constant width compiles to its own loop.
#[inline(always)]
fn pack<A: AsRef<[u8]>>(body: &mut [u8], args: &[A], width: usize) {
    for (dst, a) in body.chunks_exact_mut(width).zip(args) {
        dst.copy_from_slice(a.as_ref());
    }
}

/// Check a result frame's items against its header and find them.
fn parse_layout(frame: &[u8], count: u32, width: u32) -> std::result::Result<Layout, &'static str> {
    if u32::try_from(frame.len()).is_err() {
        return Err("a result frame over 4 GiB");
    }
    let count = count as usize;
    if width != VARIABLE {
        let width = width as usize;
        return match count
            .checked_mul(width)
            .and_then(|n| n.checked_add(RESULT_HEAD))
        {
            Some(n) if n == frame.len() => Ok(Layout::Fixed(width)),
            _ => Err("a result frame's length does not match its header"),
        };
    }
    let data = count
        .checked_mul(4)
        .and_then(|n| n.checked_add(RESULT_HEAD))
        .filter(|&n| n <= frame.len())
        .ok_or("short result")?;
    let mut starts = Vec::with_capacity(count);
    let mut at = data;
    for i in 0..count {
        let len =
            (read::<u32>(frame, RESULT_HEAD + 4 * i).expect("table in range") & !FAILED) as usize;
        // The frame is under 4 GiB (checked above), so `at` fits.
        starts.push(at as u32);
        at += len;
        if at > frame.len() {
            return Err("short result");
        }
    }
    if at != frame.len() {
        return Err("a result frame's length does not match its table");
    }
    Ok(Layout::Table(starts))
}

/// Run one task frame. `output` gets the result header and the items'
/// bytes; `table` gets the per-item table when the results are not all
/// successes of one width, and is left empty when they are.
fn run_batch(registry: &Registry, input: &[u8], output: &mut Vec<u8>, table: &mut Vec<u8>) -> Step {
    let id = read::<u64>(input, 0).ok_or(())?;
    let func: u16 = read(input, 8).ok_or(())?;
    let count = read::<u32>(input, 10).ok_or(())? as usize;
    let width = read::<u32>(input, 14).ok_or(())?;
    let runner = registry.fns.get(usize::from(func)).ok_or(())?;
    output.clear();
    table.clear();
    output.extend_from_slice(&id.to_le_bytes());
    output.extend_from_slice(&u32::try_from(count).map_err(drop)?.to_le_bytes());
    output.extend_from_slice(&VARIABLE.to_le_bytes());
    let mut out = Output {
        data: output,
        table,
        shape: Shape::default(),
        cursor: Cursor {
            next: 0,
            at: TASK_HEAD,
            head: RESULT_HEAD,
        },
    };
    match runner {
        Runner::Bytes(f) => run_items(input, width, count, &mut out, f)?,
        Runner::Typed(t) => t.run(input, width, count, &mut out)?,
    }
    if out.cursor.at != input.len() {
        return Err(());
    }
    if out.table.is_empty() {
        let packed = out.shape.packed.unwrap_or(0);
        out.data[12..16].copy_from_slice(&packed.to_le_bytes());
    }
    Ok(())
}

/// A worker's step: `Err` means the task frame is malformed (or a result
/// too large), and the worker exits.
type Step = std::result::Result<(), ()>;

/// A batch's results as the worker builds them.
struct Output<'a> {
    /// The result header, then each item's bytes.
    data: &'a mut Vec<u8>,
    /// The per-item table, once the results stop packing.
    table: &'a mut Vec<u8>,
    shape: Shape,
    cursor: Cursor,
}

impl Output<'_> {
    /// Fail the item at the cursor with `message`, in place of whatever it
    /// wrote, and move the cursor past it.
    fn fail(&mut self, message: &[u8]) -> Step {
        let Cursor { next, head, .. } = self.cursor;
        self.data.truncate(head);
        self.data.extend_from_slice(message);
        self.shape
            .record(self.table, next, self.data.len() - head, false)?;
        self.cursor.next += 1;
        self.cursor.head = self.data.len();
        Ok(())
    }
}

/// Where a batch's run of items is: kept up to date before each task
/// runs, so that after a panic it names the item that panicked.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    /// The item running or to run next.
    next: usize,
    /// Where the argument after it starts in the task frame.
    at: usize,
    /// Where its result starts in the output.
    head: usize,
}

/// Run every item of a batch through `task`, which appends one item's
/// result to the buffer it is given or returns an error message. One
/// catch_unwind covers a run of items, not each item: a panic ends the run
/// at the item that panicked, which fails alone, and a new run starts
/// after it. Generic over `task`, so a typed task's loop is compiled with
/// the task inlined.
fn run_items<G>(input: &[u8], width: u32, count: usize, out: &mut Output<'_>, mut task: G) -> Step
where
    G: FnMut(&[u8], &mut Vec<u8>) -> std::result::Result<(), String>,
{
    while out.cursor.next < count {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_from_cursor(input, width, count, out, &mut task)
        }));
        match run {
            Ok(done) => done?,
            Err(panic) => out.fail(&panic_bytes(&*panic))?,
        }
    }
    Ok(())
}

/// What a task that panicked reports for its item.
fn panic_bytes(panic: &(dyn std::any::Any + Send)) -> Vec<u8> {
    format!("panicked: {}", crate::error::panic_message(panic)).into_bytes()
}

/// The loop of [`run_items`]: from `out.cursor` to `count`, on local
/// copies (kept in registers), storing the cursor once per item.
#[inline(always)]
fn run_from_cursor<G>(
    input: &[u8],
    width: u32,
    count: usize,
    out: &mut Output<'_>,
    task: &mut G,
) -> Step
where
    G: FnMut(&[u8], &mut Vec<u8>) -> std::result::Result<(), String>,
{
    let Cursor {
        mut next, mut at, ..
    } = out.cursor;
    while next < count {
        let (start, len) = if width == VARIABLE {
            (
                at.checked_add(4).ok_or(())?,
                read::<u32>(input, at).ok_or(())? as usize,
            )
        } else {
            (at, width as usize)
        };
        let after = start.checked_add(len).ok_or(())?;
        let arg = input.get(start..after).ok_or(())?;
        at = after;
        let head = out.data.len();
        out.cursor = Cursor { next, at, head };
        let ok = match task(arg, out.data) {
            Ok(()) => true,
            Err(message) => {
                out.data.truncate(head);
                out.data.extend_from_slice(message.as_bytes());
                false
            }
        };
        out.shape
            .record(out.table, next, out.data.len() - head, ok)?;
        next += 1;
    }
    out.cursor = Cursor {
        next,
        at,
        head: out.data.len(),
    };
    Ok(())
}

/// The results of a batch so far: packed while every item succeeded with
/// one width, a table from the first item that breaks that on.
#[derive(Debug, Default)]
struct Shape {
    /// The width of every result so far, while they pack (`table` is
    /// empty); `None` before the first result and once the table started.
    packed: Option<u32>,
}

impl Shape {
    /// Record the result of item `i` (every item before it is recorded):
    /// `len` bytes, a success or a failure.
    #[inline]
    fn record(&mut self, table: &mut Vec<u8>, i: usize, len: usize, ok: bool) -> Step {
        let len = u32::try_from(len)
            .ok()
            .filter(|l| l & FAILED == 0)
            .ok_or(())?;
        if ok && self.packed == Some(len) {
            return Ok(());
        }
        self.record_slow(table, i, len, ok);
        Ok(())
    }

    #[cold]
    fn record_slow(&mut self, table: &mut Vec<u8>, i: usize, len: u32, ok: bool) {
        if i == 0 && ok {
            self.packed = Some(len);
            return;
        }
        if let Some(w) = self.packed.take() {
            // The first item that breaks the packing: the ones before it
            // all succeeded with width `w`.
            for _ in 0..i {
                table.extend_from_slice(&w.to_le_bytes());
            }
        }
        let entry = if ok { len } else { len | FAILED };
        table.extend_from_slice(&entry.to_le_bytes());
    }
}

/// The little-endian `T` at byte `at` of `b`, if it is all there.
fn read<T: Wire>(b: &[u8], at: usize) -> Option<T> {
    T::get(b.get(at..at.checked_add(T::WIDTH)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo(arg: &[u8], out: &mut Vec<u8>) -> std::result::Result<(), String> {
        out.extend_from_slice(arg);
        Ok(())
    }

    /// The first byte picks the outcome: 0 echo the rest, 1 fail, 2 panic
    /// with a String, 3 panic with a &str (after writing some bytes).
    fn pick(arg: &[u8], out: &mut Vec<u8>) -> std::result::Result<(), String> {
        match arg.split_first() {
            Some((0, rest)) => echo(rest, out),
            Some((1, rest)) => Err(format!("refused {}", rest.len())),
            Some((2, rest)) => panic!("boom {}", rest.len()),
            Some((3, _)) => {
                out.extend_from_slice(b"half-written");
                panic!("static boom")
            }
            _ => Err("empty".into()),
        }
    }

    fn registry() -> Registry {
        Registry::new()
            .register("echo", echo)
            .register("pick", pick)
            .register_typed("square", |n: i64| {
                n.checked_mul(n).ok_or_else(|| format!("{n} overflows"))
            })
            .register_typed("halve", |n: u16| -> std::result::Result<u8, String> {
                assert!(n % 2 == 0, "odd {n}");
                u8::try_from(n / 2).map_err(|e| e.to_string())
            })
    }

    #[test]
    fn typed_tasks_decode_run_and_encode_each_item() {
        let args: Vec<Vec<u8>> = (0..100i64).map(|i| i.to_le_bytes().to_vec()).collect();
        let (_, width, results) = round_trip("square", &args);
        assert_eq!(width, 8);
        let want: Vec<Outcome> = (0..100i64)
            .map(|i| Ok((i * i).to_le_bytes().to_vec()))
            .collect();
        assert_eq!(results, want);
    }

    #[test]
    fn a_typed_task_fails_one_item_on_an_error_a_panic_or_a_wrong_width() {
        let mut args: Vec<Vec<u8>> = (0..10u16).map(|i| (2 * i).to_le_bytes().to_vec()).collect();
        args[2] = 7u16.to_le_bytes().to_vec(); // panics
        args[4] = 600u16.to_le_bytes().to_vec(); // 300 does not fit in a u8
        args[6] = vec![1, 2, 3]; // not a u16
        let (task_width, width, results) = round_trip("halve", &args);
        assert_eq!((task_width, width), (VARIABLE, VARIABLE));
        assert_eq!(results[2], Err("panicked: odd 7".to_string()));
        assert!(results[4].as_ref().unwrap_err().contains("out of range"));
        assert_eq!(
            results[6],
            Err("the argument is 3 bytes, the task takes 2".to_string())
        );
        for i in [0, 1, 3, 5, 7, 8, 9] {
            assert_eq!(results[i], Ok(vec![i as u8]), "item {i}");
        }
        let big = vec![i64::MAX.to_le_bytes().to_vec(), 3i64.to_le_bytes().to_vec()];
        let (_, _, results) = round_trip("square", &big);
        assert_eq!(results[0], Err(format!("{} overflows", i64::MAX)));
        assert_eq!(results[1], Ok(9i64.to_le_bytes().to_vec()));
    }

    #[test]
    fn a_packed_typed_batch_fails_any_item_alone_and_goes_on_after_it() {
        // 7 panics (odd), 600 fails (300 is not a u8): alone, in pairs,
        // first, last, and every item.
        let cases: Vec<Vec<usize>> = vec![
            vec![0],
            vec![1],
            vec![5],
            vec![9],
            vec![0, 1],
            vec![4, 5],
            vec![8, 9],
            vec![0, 3, 9],
            (0..10).collect(),
        ];
        for bad in &cases {
            for (arg, want) in [
                (7u16, Err("panicked: odd 7".to_string())),
                (
                    600u16,
                    Err("out of range integral type conversion attempted".to_string()),
                ),
            ] {
                let mut args: Vec<Vec<u8>> =
                    (0..10u16).map(|i| (2 * i).to_le_bytes().to_vec()).collect();
                for &i in bad {
                    args[i] = arg.to_le_bytes().to_vec();
                }
                let (task_width, width, results) = round_trip("halve", &args);
                assert_eq!((task_width, width), (2, VARIABLE), "{bad:?}");
                for (i, r) in results.iter().enumerate() {
                    if bad.contains(&i) {
                        assert_eq!(r, &want, "item {i} of {bad:?}");
                    } else {
                        assert_eq!(r, &Ok(vec![i as u8]), "item {i} of {bad:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_packed_loop_runs_up_to_the_first_failure_and_leaves_the_cursor_after_it() {
        let halve = Typed {
            f: |n: u16| -> std::result::Result<u8, String> {
                assert!(n % 2 == 0, "odd {n}");
                Ok((n / 2) as u8)
            },
            _types: std::marker::PhantomData,
        };
        for bad in [None, Some(0usize), Some(3), Some(5)] {
            let args: Vec<[u8; 2]> = (0..6u16)
                .map(|i| {
                    if Some(usize::from(i)) == bad {
                        7u16
                    } else {
                        2 * i
                    }
                })
                .map(u16::to_le_bytes)
                .collect();
            let mut frame = Vec::new();
            encode_task(&mut frame, 1, 0, &args).unwrap();
            let (mut data, mut table) = (vec![0xAA; RESULT_HEAD], Vec::new());
            let mut out = Output {
                data: &mut data,
                table: &mut table,
                shape: Shape::default(),
                cursor: Cursor {
                    next: 0,
                    at: TASK_HEAD,
                    head: RESULT_HEAD,
                },
            };
            halve.run_packed(&frame, 6, &mut out).unwrap();
            let ran = bad.map_or(6, |k| k + 1);
            assert_eq!(out.cursor.next, ran, "{bad:?}");
            assert_eq!(out.cursor.at, TASK_HEAD + 2 * ran, "{bad:?}");
            let ok = bad.unwrap_or(6);
            let want: Vec<u8> = (0..ok as u8).collect();
            assert_eq!(
                &out.data[RESULT_HEAD..RESULT_HEAD + ok],
                &want[..],
                "{bad:?}"
            );
            if bad.is_some() {
                assert_eq!(&out.data[RESULT_HEAD + ok..], b"panicked: odd 7");
                assert_eq!(table.len(), 4 * (ok + 1), "{bad:?}");
            } else {
                assert_eq!(out.data.len(), RESULT_HEAD + 6);
                assert_eq!(out.shape.packed, Some(1));
                assert!(table.is_empty());
            }
        }
    }

    #[test]
    fn wire_values_round_trip_little_endian() {
        let mut out = [0u8; 15];
        (-2i32).put(&mut out[..4]);
        1.5f64.put(&mut out[4..12]);
        [7u8, 8, 9].put(&mut out[12..]);
        assert_eq!(&out[..4], &(-2i32).to_le_bytes());
        assert_eq!(i32::get(&out[..4]), Some(-2));
        assert_eq!(f64::get(&out[4..12]), Some(1.5));
        assert_eq!(<[u8; 3]>::get(&out[12..]), Some([7, 8, 9]));
        assert_eq!(i32::get(&out[..3]), None);
        assert_eq!(<[u8; 3]>::WIDTH, 3);
    }

    /// Encode, run and decode one batch as a worker and the pool would:
    /// (the task frame's width, the result frame's width, the results).
    type Outcome = std::result::Result<Vec<u8>, String>;

    fn round_trip(name: &'static str, args: &[Vec<u8>]) -> (u32, u32, Vec<Outcome>) {
        let reg = registry();
        let mut task = Vec::new();
        let count = encode_task(&mut task, 42, reg.index(name).unwrap(), args).unwrap();
        assert_eq!(count as usize, args.len());
        let (mut out, mut table) = (Vec::new(), Vec::new());
        run_batch(&reg, &task, &mut out, &mut table).unwrap();
        // What send_parts puts on the wire.
        let mut frame = out[..RESULT_HEAD].to_vec();
        frame.extend_from_slice(&table);
        frame.extend_from_slice(&out[RESULT_HEAD..]);
        assert_eq!(read::<u64>(&frame, 0), Some(42));
        assert_eq!(read::<u32>(&frame, 8), Some(count));
        let width = read::<u32>(&frame, 12).unwrap();
        let layout = parse_layout(&frame, count, width).unwrap();
        let batch = Batch {
            task: name,
            first: 0,
            frame,
            layout,
            lost: None,
            count: count as usize,
        };
        let results = (0..args.len())
            .map(|i| {
                batch.get(i).map(<[u8]>::to_vec).map_err(|e| match e {
                    TaskError::Failed { message, index, .. } => {
                        assert_eq!(index, i);
                        message
                    }
                    other => panic!("unexpected {other}"),
                })
            })
            .collect();
        (read::<u32>(&task, 14).unwrap(), width, results)
    }

    #[test]
    fn items_of_one_width_travel_packed_both_ways() {
        let args: Vec<Vec<u8>> = (0..1000u64).map(|i| i.to_le_bytes().to_vec()).collect();
        let (task_width, result_width, results) = round_trip("echo", &args);
        assert_eq!((task_width, result_width), (8, 8));
        let want: Vec<_> = args.iter().cloned().map(Ok).collect();
        assert_eq!(results, want);
        // Packed means no per-item bytes at all.
        let mut task = Vec::new();
        encode_task(&mut task, 1, 0, &args).unwrap();
        assert_eq!(task.len(), TASK_HEAD + 8 * 1000);
    }

    #[test]
    fn items_of_mixed_widths_are_framed_one_by_one() {
        let args: Vec<Vec<u8>> = vec![
            vec![],
            b"a".to_vec(),
            b"bcd".to_vec(),
            vec![],
            b"ef".to_vec(),
        ];
        let (task_width, result_width, results) = round_trip("echo", &args);
        assert_eq!((task_width, result_width), (VARIABLE, VARIABLE));
        let want: Vec<_> = args.iter().cloned().map(Ok).collect();
        assert_eq!(results, want);
    }

    #[test]
    fn empty_results_and_empty_batches_pack() {
        let args = vec![Vec::new(); 5];
        let (task_width, result_width, results) = round_trip("echo", &args);
        assert_eq!((task_width, result_width), (0, 0));
        assert_eq!(results, vec![Ok(Vec::new()); 5]);
        let (_, result_width, results) = round_trip("echo", &[]);
        assert_eq!(result_width, 0);
        assert!(results.is_empty());
    }

    #[test]
    fn a_failure_or_panic_anywhere_fails_that_item_alone() {
        let ok = |b: u8| vec![0, b, b];
        let outcomes: [(&[u8], Outcome); 4] = [
            (&[1, 9], Err("refused 1".into())),
            (&[2, 9, 9], Err("panicked: boom 2".into())),
            (&[3], Err("panicked: static boom".into())),
            (&[], Err("empty".into())),
        ];
        for (bad, want) in &outcomes {
            for at in [0usize, 1, 5, 9] {
                let mut args: Vec<Vec<u8>> = (0..10).map(|i| ok(i as u8)).collect();
                args[at] = bad.to_vec();
                let (_, width, results) = round_trip("pick", &args);
                assert_eq!(width, VARIABLE, "a failure is never packed");
                for (i, r) in results.iter().enumerate() {
                    if i == at {
                        assert_eq!(r, want, "item {i} of {bad:?}");
                    } else {
                        assert_eq!(r, &Ok(vec![i as u8, i as u8]), "item {i} of {bad:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn panics_in_a_row_and_a_batch_of_panics_each_fail_once() {
        let args: Vec<Vec<u8>> = vec![vec![2], vec![3], vec![0, 7], vec![2, 0], vec![2]];
        let (_, _, results) = round_trip("pick", &args);
        assert_eq!(
            results,
            vec![
                Err("panicked: boom 0".into()),
                Err("panicked: static boom".into()),
                Ok(vec![7]),
                Err("panicked: boom 1".into()),
                Err("panicked: boom 0".into()),
            ]
        );
        let (_, _, results) = round_trip("pick", &vec![vec![2u8]; 50]);
        assert_eq!(results, vec![Err("panicked: boom 0".to_string()); 50]);
    }

    #[test]
    fn results_of_a_new_width_late_in_a_batch_switch_to_a_table() {
        let mut args: Vec<Vec<u8>> = (0..100u8).map(|i| vec![0, i]).collect();
        args[99] = vec![0, 1, 2, 3];
        let (task_width, result_width, results) = round_trip("pick", &args);
        assert_eq!((task_width, result_width), (VARIABLE, VARIABLE));
        assert_eq!(results[98], Ok(vec![98]));
        assert_eq!(results[99], Ok(vec![1, 2, 3]));
    }

    #[test]
    fn result_frames_that_do_not_add_up_are_refused() {
        let mut frame = vec![0u8; RESULT_HEAD];
        frame.extend_from_slice(&[0; 16]);
        assert!(parse_layout(&frame, 2, 8).is_ok());
        assert!(parse_layout(&frame, 3, 8).is_err(), "too short");
        assert!(parse_layout(&frame, 1, 8).is_err(), "too long");
        assert!(
            parse_layout(&frame, u32::MAX - 1, u32::MAX - 1).is_err(),
            "overflow"
        );
        // A table: two entries of 2 and 2|FAILED, then 4 bytes of data.
        let mut frame = vec![0u8; RESULT_HEAD];
        frame.extend_from_slice(&2u32.to_le_bytes());
        frame.extend_from_slice(&(2 | FAILED).to_le_bytes());
        frame.extend_from_slice(b"okno");
        assert!(parse_layout(&frame, 2, VARIABLE).is_ok());
        frame.push(0);
        assert!(parse_layout(&frame, 2, VARIABLE).is_err(), "trailing byte");
        frame.truncate(frame.len() - 2);
        assert!(parse_layout(&frame, 2, VARIABLE).is_err(), "data cut short");
        assert!(
            parse_layout(&frame[..RESULT_HEAD + 4], 2, VARIABLE).is_err(),
            "table cut short"
        );
    }

    #[test]
    fn a_batch_over_the_frame_limit_is_refused_before_it_is_built() {
        let mib = vec![0u8; 1 << 20];
        let args: Vec<&[u8]> = vec![&mib[..]; 1024];
        let mut frame = Vec::new();
        let e = encode_task(&mut frame, 1, 0, &args).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("use smaller chunks"), "{e}");
        assert_eq!(frame.capacity(), 0, "nothing was allocated");
    }

    #[test]
    fn a_typed_worker_refuses_a_frame_that_lies_about_its_count() {
        let reg = registry();
        let mut task = Vec::new();
        encode_task(
            &mut task,
            1,
            reg.index("square").unwrap(),
            &[7i64.to_le_bytes()],
        )
        .unwrap();
        task[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
        let (mut out, mut table) = (Vec::new(), Vec::new());
        assert!(run_batch(&reg, &task, &mut out, &mut table).is_err());
        assert!(out.capacity() < 1 << 20, "no huge reservation");
    }

    #[test]
    fn a_worker_refuses_a_torn_task_frame() {
        let reg = registry();
        let (mut out, mut table) = (Vec::new(), Vec::new());
        // A byte task's framed items, and a typed task's packed ones.
        let mut framed = Vec::new();
        encode_task(&mut framed, 1, 0, &[b"abc".to_vec(), b"de".to_vec()]).unwrap();
        let mut packed = Vec::new();
        let square = reg.index("square").unwrap();
        encode_task(
            &mut packed,
            2,
            square,
            &[3i64.to_le_bytes(), 4i64.to_le_bytes()],
        )
        .unwrap();
        for task in [&framed, &packed] {
            assert!(run_batch(&reg, task, &mut out, &mut table).is_ok());
            for cut in [0, 5, TASK_HEAD, TASK_HEAD + 1, task.len() - 1] {
                assert!(
                    run_batch(&reg, &task[..cut], &mut out, &mut table).is_err(),
                    "cut at {cut}"
                );
            }
            let mut long = task.clone();
            long.push(0);
            assert!(
                run_batch(&reg, &long, &mut out, &mut table).is_err(),
                "trailing byte"
            );
        }
        let task = framed;
        let mut unknown = task;
        unknown[8] = 9;
        assert!(
            run_batch(&reg, &unknown, &mut out, &mut table).is_err(),
            "no such task"
        );
    }
}
