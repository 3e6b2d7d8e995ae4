//! A pre-forked process pool: Python's `multiprocessing.Pool`, on fork and
//! pipes, that never hangs when a worker dies.
//!
//! Closures cannot cross a process boundary, so tasks are plain functions
//! registered by name in a [`Registry`] before the pool forks; a task takes
//! its argument as bytes and appends its result to a buffer:
//!
//! ```no_run
//! use posixkit::pool::{Pool, Registry};
//! fn square(arg: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
//!     let n = i64::from_le_bytes(arg.try_into().map_err(|_| "want 8 bytes")?);
//!     out.extend_from_slice(&n.checked_mul(n).ok_or("overflow")?.to_le_bytes());
//!     Ok(())
//! }
//! let registry = Registry::new().register("square", square);
//! // SAFETY: this program is single-threaded.
//! let mut pool = unsafe { Pool::new(2, registry) }.unwrap();
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
//! Wire format (little-endian): a task frame is `id u64, func u16, count u32`
//! then `count` times `len u32, bytes`; a result frame is `id u64, count u32`
//! then `count` times `ok u8, len u32, bytes` (an error's bytes are its
//! message). Frames travel with [`crate::pipe`]'s length prefix.

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

/// The tasks a pool's workers can run, by name. Build it before the pool
/// forks: the workers inherit it.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    names: Vec<&'static str>,
    fns: Vec<TaskFn>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Add a task under `name` (a later registration of the same name wins).
    #[must_use]
    pub fn register(mut self, name: &'static str, f: TaskFn) -> Self {
        if let Some(i) = self.names.iter().position(|n| *n == name) {
            self.fns[i] = f;
        } else {
            self.names.push(name);
            self.fns.push(f);
        }
        self
    }

    fn index(&self, name: &str) -> Result<u16> {
        self.names
            .iter()
            .position(|n| *n == name)
            .and_then(|i| u16::try_from(i).ok())
            .ok_or_else(|| Error::usage("task", format!("no task named '{name}' is registered")))
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

/// The outcome of one batch: results in item order.
#[derive(Debug, Clone)]
struct Batch {
    task: &'static str,
    first: usize,
    /// The raw result frame (results are slices of it).
    frame: Vec<u8>,
    /// Where each item's header (`ok u8, len u32`) starts in `frame`.
    spans: Vec<u32>,
    /// Set when no result frame came: every item has this error.
    lost: Option<Lost>,
    /// Items in the batch.
    count: usize,
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
        let task = self.task.to_string();
        match self.lost {
            Some(Lost::Died(pid, status)) => {
                return Err(TaskError::WorkerDied {
                    task,
                    index,
                    pid,
                    status,
                });
            }
            Some(Lost::Cancelled) => return Err(TaskError::Cancelled { task, index }),
            None => {}
        }
        let at = self.spans[i] as usize;
        let ok = self.frame[at] == 1;
        let len =
            u32::from_le_bytes(self.frame[at + 1..at + 5].try_into().expect("4 bytes")) as usize;
        let bytes = &self.frame[at + 5..at + 5 + len];
        if ok {
            Ok(bytes)
        } else {
            Err(TaskError::Failed {
                task,
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
    /// Bytes of those batches' frames.
    in_flight: usize,
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
    /// Not Send: the pool forks from its methods, so it stays on the thread
    /// whose single-threadedness [`Pool::new`]'s caller vouched for.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Pool {
    /// Fork `workers` (1-1024) worker processes that can run the tasks in
    /// `registry`.
    ///
    /// # Safety
    ///
    /// The pool forks here and again whenever it replaces a dead worker
    /// (inside [`Pool::get`], [`Pool::map`], [`Pool::join`]). Every one of
    /// those calls must be made while the program is single-threaded, as
    /// for [`process::fork`]: the workers run ordinary Rust code.
    pub unsafe fn new(workers: usize, registry: Registry) -> Result<Pool> {
        if !(1..=1024).contains(&workers) {
            return Err(Error::usage("workers", "a pool has 1-1024 workers"));
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
    /// ([`Pool::get`], [`Pool::map`], [`Pool::join`]) returns an error for
    /// which [`Pool::is_interrupt`] is true, and the caller decides, usually
    /// [`Pool::terminate`]. Workers do not inherit the descriptor.
    pub fn interrupt_on(&mut self, fd: std::os::fd::OwnedFd) {
        self.interrupt = Some(fd);
    }

    /// Whether `e` is the error a wait returns once [`Pool::interrupt_on`]'s
    /// descriptor became readable.
    pub fn is_interrupt(e: &Error) -> bool {
        e.call() == "poll" && e.what() == "pool interrupt"
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
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(batch) = self.done.remove(&handle.id) {
                return Ok(Some(batch.get(0).map(<[u8]>::to_vec)));
            }
            if !self.is_pending(handle.id) {
                return Err(Error::usage(
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
        let mut ids = Vec::new();
        for (c, items) in args.chunks(chunk).enumerate() {
            ids.push(self.submit(task, c * chunk, items)?);
        }
        self.dispatch()?;
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
            return Err(Error::usage(
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
                spans: Vec::new(),
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
            return Err(Error::usage("apply", "the pool is closed"));
        }
        let func = self.registry.index(task)?;
        let id = self.next_id;
        self.next_id += 1;
        // Sized once: growing a frame of thousands of items by doubling
        // costs copies and, past the allocator's trim threshold, page faults.
        let mut frame = self.spare.pop().unwrap_or_default();
        frame.clear();
        frame.reserve(14 + args.iter().map(|a| 4 + a.as_ref().len()).sum::<usize>());
        frame.extend_from_slice(&id.to_le_bytes());
        frame.extend_from_slice(&func.to_le_bytes());
        frame.extend_from_slice(&0u32.to_le_bytes());
        let mut count = 0u32;
        for arg in args {
            let arg = arg.as_ref();
            let len = u32::try_from(arg.len())
                .map_err(|_| Error::usage("task", "an argument is over 4 GiB"))?;
            frame.extend_from_slice(&len.to_le_bytes());
            frame.extend_from_slice(arg);
            count += 1;
        }
        frame[10..14].copy_from_slice(&count.to_le_bytes());
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
                if w.busy.len() != depth
                    || (depth > 0 && w.in_flight + next.frame.len() + 2 * pipe::HEADER > w.capacity)
                {
                    continue;
                }
                let job = self.queue.pop_front().expect("queue is not empty");
                match self.workers[slot].tasks.send(&job.frame) {
                    Ok(()) => {
                        let w = &mut self.workers[slot];
                        w.in_flight += job.frame.len() + pipe::HEADER;
                        w.busy.push_back(job);
                    }
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
                    let w = &mut self.workers[slot];
                    let mut job = w.busy.pop_front();
                    if let Some(j) = &mut job {
                        w.in_flight -= j.frame.len() + pipe::HEADER;
                    }
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
    fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS {
            buf.clear();
            self.spare.push(buf);
        }
    }

    fn parse_results(&self, job: Option<&Job>, frame: Vec<u8>) -> Result<(u64, Batch)> {
        let bad = |why: &str| Error::data("recv", "pool worker", why.to_string());
        let job = job.ok_or_else(|| bad("a result came from an idle worker"))?;
        let id = u64::from_le_bytes(
            frame
                .get(0..8)
                .ok_or_else(|| bad("short result"))?
                .try_into()
                .expect("8 bytes"),
        );
        let count = u32::from_le_bytes(
            frame
                .get(8..12)
                .ok_or_else(|| bad("short result"))?
                .try_into()
                .expect("4 bytes"),
        );
        if id != job.id || count != job.count {
            return Err(bad("a result does not match its task"));
        }
        let mut spans = Vec::with_capacity(count as usize);
        if u32::try_from(frame.len()).is_err() {
            return Err(bad("a result frame over 4 GiB"));
        }
        let mut at = 12;
        for _ in 0..count {
            if !matches!(frame.get(at), Some(0 | 1)) {
                return Err(bad("a result's status byte is not 0 or 1"));
            }
            let len = u32::from_le_bytes(
                frame
                    .get(at + 1..at + 5)
                    .ok_or_else(|| bad("short result"))?
                    .try_into()
                    .expect("4 bytes"),
            ) as usize;
            let start = at + 5;
            if start + len > frame.len() {
                return Err(bad("short result"));
            }
            // The frame is under 4 GiB (checked above), so `at` fits.
            spans.push(at as u32);
            at = start + len;
        }
        let task = self.registry.names[usize::from(job.func)];
        Ok((
            id,
            Batch {
                task,
                first: job.first,
                frame,
                spans,
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
        // SAFETY: Pool::new's contract: the program is single-threaded when
        // a pool method runs. The child never returns: worker_main ends in _exit.
        match unsafe { process::fork() }.map_err(|e| Error::sys("fork", "pool worker", e))? {
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
                    in_flight: 0,
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
    let mut input = Vec::new();
    let mut output = Vec::new();
    loop {
        match tasks.recv_into(&mut input) {
            Ok(true) => {}
            Ok(false) => process::_exit(0),
            Err(_) => process::_exit(1),
        }
        if run_batch(registry, &input, &mut output).is_err() || results.send(&output).is_err() {
            process::_exit(1);
        }
    }
}

fn run_batch(
    registry: &Registry,
    input: &[u8],
    output: &mut Vec<u8>,
) -> std::result::Result<(), ()> {
    let id = input.get(0..8).ok_or(())?;
    let func = u16::from_le_bytes(input.get(8..10).ok_or(())?.try_into().map_err(drop)?);
    let count = u32::from_le_bytes(input.get(10..14).ok_or(())?.try_into().map_err(drop)?);
    let f = *registry.fns.get(usize::from(func)).ok_or(())?;
    output.clear();
    output.extend_from_slice(id);
    output.extend_from_slice(&count.to_le_bytes());
    let mut at = 14;
    for _ in 0..count {
        let len =
            u32::from_le_bytes(input.get(at..at + 4).ok_or(())?.try_into().map_err(drop)?) as usize;
        let arg = input.get(at + 4..at + 4 + len).ok_or(())?;
        at += 4 + len;
        let head = output.len();
        output.extend_from_slice(&[1, 0, 0, 0, 0]);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(arg, output)));
        let message = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(message)) => Some(message),
            Err(panic) => Some(format!(
                "panicked: {}",
                panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default()
            )),
        };
        if let Some(message) = message {
            output.truncate(head + 5);
            output[head] = 0;
            output.extend_from_slice(message.as_bytes());
        }
        let len = u32::try_from(output.len() - head - 5).map_err(drop)?;
        output[head + 1..head + 5].copy_from_slice(&len.to_le_bytes());
    }
    Ok(())
}
