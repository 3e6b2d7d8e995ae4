//! A pre-forked process pool: Python's `multiprocessing.Pool`, on fork and
//! pipes, that never hangs when a worker dies.
//!
//! Code cannot cross a pipe, so tasks are registered before the pool forks
//! and the workers inherit them. [`Registry::task`] takes a closure over
//! the task's own types (numbers, `String`, `Vec<u8>`, tuples: [`Wire`])
//! and returns a typed [`Task`] handle; [`Pool::map`] and
//! [`Pool::apply_async`] take that handle and hand back the task's own
//! result type. Nothing is looked up by name, and no bytes are written by
//! hand:
//!
//! ```no_run
//! use posixkit::pool::{Pool, Registry};
//! let mut registry = Registry::new();
//! let square = registry.task("square", |n: i64| n.checked_mul(n).ok_or("overflow"));
//! let shout = registry.task("shout", |s: String| s.to_uppercase());
//! let mut pool = Pool::new(2, registry).unwrap();
//!
//! let squares = pool.map(square, &[1, 2, 3, 4, 5], 2).unwrap();
//! assert_eq!(squares.get(4), Ok(25));
//! let h = pool.apply_async(shout, "hello".to_string()).unwrap();
//! assert_eq!(pool.get(&h, None).unwrap(), Some(Ok("HELLO".to_string())));
//! pool.close();
//! pool.join().unwrap();
//! ```
//!
//! Raw tasks ([`Registry::register`]: `fn(&[u8], &mut Vec<u8>)`) are run
//! by name with byte arguments, for tasks that are about bytes.
//!
//! Python's calls, one for one:
//!
//! | Python | here |
//! |---|---|
//! | `apply(f, (x,))` (blocks) | [`Pool::apply`] |
//! | `apply_async(f, (x,))`, `.get(timeout)`, `.ready()`, `.wait(timeout)` | [`Pool::apply_async`], [`Pool::get`], [`Pool::ready`], [`Pool::wait`] |
//! | `apply_async(f, (x,), callback, error_callback)` | [`Pool::apply_async_with`]: the callbacks run in the calling thread, inside the pool call that sees the result come back |
//! | `map(f, xs, chunksize)`, `map_async(...)` | [`Pool::map`], [`Pool::map_async`] (then [`Pool::get`]) |
//! | `imap(f, xs)`, `imap_unordered(f, xs)` | [`Pool::imap`] (argument order), [`Pool::imap_unordered`] (as they come back, with the index) |
//! | `starmap(f, [(a, b), ...])` | [`Pool::starmap`], with a task that takes the tuple |
//! | `close()`, `join()`, `terminate()` | [`Pool::close`], [`Pool::join`], [`Pool::terminate`] |
//!
//! How it works:
//! - Each worker has its own task pipe and result pipe, so the pool always
//!   knows which task each worker holds. A worker runs one batch at a time
//!   (one task from `apply_async`, or one chunk of `map`) and may hold a
//!   second in its pipe, so it never waits for the parent between batches;
//!   the second is sent only when both fit in the pipe's capacity
//!   (F_GETPIPE_SZ), so parent and worker can never block on each other.
//! - Frames of 4 KiB to 1 MiB (a chunk of `map` over numbers, say) do not
//!   cross the pipes: the pool maps one memfd (MAP_SHARED, unnamed) before
//!   it forks, gives each worker an arena in it, and a frame is copied
//!   into a slot of the arena while the pipe carries a 12-byte note of
//!   where it is. The pipe copies cost the kernel a page allocation and
//!   two copies per 4 KiB; this costs one copy in user space at each end.
//!   The pipe is still the only signal (end of file, the order of
//!   results), a slot is reused only once its batch's result is read, and
//!   an arena goes to a new worker only once its old one is reaped. A note
//!   that names a slot its batch did not use is a bad result like any
//!   other. Smaller and larger frames go through the pipe whole, and so
//!   does everything when the mapping cannot be made (an address-space
//!   limit, or a file-size limit under the memfd's size). Pages of an
//!   arena stay allocated once touched, until the pool is dropped: up to
//!   4 MiB per worker after chunks of 1 MiB.
//! - The parent waits with poll(2) on every worker's result pipe; when
//!   one worker alone has work and the wait has no deadline, the read of
//!   its result pipe is the wait. Either way it first looks for up to
//!   50 µs without sleeping (poll(2) with a zero timeout and
//!   sched_yield(2)), as a worker does before it sleeps on its task pipe:
//!   a write to the pipe of a reader that is not asleep wakes no one,
//!   which is most of a round trip's cost on a VM. A worker that dies
//!   (killed, crashed) closes its result pipe: the pool reaps
//!   exactly that pid, reports the batch it was running as
//!   [`TaskError::WorkerDied`] with the decoded status, queues the batch
//!   that had not started again, forks a replacement and goes on. Python's Pool hangs
//!   in this case; this one cannot, because no result is awaited from a
//!   worker that is gone.
//! - A result frame is read in one call where the pipe holds it whole
//!   (its length and the payload the batch should produce, together);
//!   with a deadline, or several workers to watch, a result pipe is read
//!   once each time poll(2) says it has bytes, so a worker stopped in the
//!   middle of a result frame holds up no `get` past its timeout. Memory
//!   grows with the bytes that came, not with a frame's claimed length. A
//!   worker that sends what is not a result frame for its batch (cut
//!   short, a length over the limit, a table that does not add up) is
//!   killed and replaced; its batch alone fails with
//!   [`TaskError::BadResult`].
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
//! - A typed task's batch loop is compiled for it. When its arguments and
//!   results have a fixed width (numbers, tuples of numbers), a batch
//!   travels packed, with no per-item framing, as a C pool sends an array,
//!   and the worker writes the results in place into an output sized once.
//!
//! The files, by concern: `registry` (tasks and handles), `wire` (how a
//! value is bytes), `frame` (the task and result frames, inside
//! [`crate::pipe`]'s frames), `worker` (the worker's loop), `scheduler`
//! (dispatch, dead workers, results: tested with mocks, no fork),
//! `fork` (the workers as forked processes), `arena` (the shared memory
//! that carries large frames), `results`.

use std::sync::Arc;

use crate::error::Result;
use crate::process::{self, Fork, Pid};
use crate::status::Status;

mod arena;
mod fork;
mod frame;
mod inbox;
mod pending;
mod registry;
mod results;
mod scheduler;
mod wire;
mod worker;

#[cfg(test)]
mod tests;

pub use pending::{Handle, Imap, ImapUnordered, MapAsync};
pub use registry::{Outcome, Registry, Target, Task, TaskFn, Tuple};
pub use results::{AsyncResult, Event, MapResults, Results, TaskError};
pub use wire::Wire;

use fork::Forked;
use scheduler::Scheduler;

/// A pool of pre-forked worker processes. See the [module docs](self).
#[derive(Debug)]
pub struct Pool {
    registry: Arc<Registry>,
    sched: Scheduler<Forked>,
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
    /// Refused too, with [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput),
    /// while SIGCHLD is ignored (the kernel would reap the workers).
    ///
    /// The pool belongs to this process: a forked child's copy refuses
    /// every call, and its drop leaves the workers alone.
    pub fn new(workers: usize, registry: Registry) -> Result<Pool> {
        Pool::with_fork(workers, registry, |what| process::fork_named(what))
    }

    /// [`Pool::new`] with `fork` as the way every worker is forked.
    pub(crate) fn with_fork(
        workers: usize,
        registry: Registry,
        fork: fn(&str) -> Result<Fork>,
    ) -> Result<Pool> {
        // With SIGCHLD ignored the kernel reaps a worker as it ends: its
        // status is lost (a dead worker could not be told from a busy
        // one), and its pid may name another process by the time the pool
        // would signal it.
        if crate::sys::proc::sigchld_reaping() == Ok(crate::sys::proc::Reaping::Kernel) {
            return Err(crate::Error::new(
                crate::ErrorKind::InvalidInput,
                "Pool::new",
                "SIGCHLD",
                "SIGCHLD is ignored (or SA_NOCLDWAIT is set), so the kernel would reap the \
                 workers itself: restore its default action first",
            ));
        }
        let registry = Arc::new(registry);
        let backend = Forked {
            registry: Arc::clone(&registry),
            fork,
            interrupt: None,
            arenas: None,
        };
        Ok(Pool {
            registry,
            sched: Scheduler::new(backend, workers)?,
            _not_send: std::marker::PhantomData,
        })
    }

    /// The workers' pids, in slot order.
    pub fn pids(&self) -> Vec<Pid> {
        self.sched.pids()
    }

    /// Stop waiting as soon as `fd` becomes readable: the read end of a
    /// self-pipe that a signal handler writes to, for instance
    /// (`signal_hook::low_level::pipe`). From then on every wait
    /// ([`Pool::get`], [`Pool::map`], [`Pool::join`]) returns an error of
    /// kind [`ErrorKind::Interrupted`](crate::ErrorKind::Interrupted), and
    /// the caller decides, usually
    /// [`Pool::terminate`]. Workers do not inherit the descriptor.
    pub fn interrupt_on(&mut self, fd: std::os::fd::OwnedFd) {
        self.sched.backend.interrupt = Some(fd);
    }

    /// Workers replaced since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        self.sched.take_events()
    }

    /// Queue `task` with `arg`; the result comes from [`Pool::get`].
    /// `task` is a [`Task`] handle (or, for a raw task, its name with `arg`
    /// as bytes).
    pub fn apply_async<A, T: Target<A>>(
        &mut self,
        task: T,
        arg: A,
    ) -> Result<AsyncResult<T::Output>> {
        let (func, name) = task.resolve(&self.registry)?;
        let id = self
            .sched
            .submit_for(name, 0, <T::Output as Wire>::WIDTH, |frame, id| {
                T::encode(frame, id, func, std::slice::from_ref(&arg))
            })?;
        self.sched.dispatch()?;
        Ok(AsyncResult::new(id))
    }

    /// Run `task` on `arg` and wait for its result: Python's `apply`, which
    /// blocks. [`Pool::apply_async`] then [`Pool::get`] with no timeout.
    pub fn apply<A, T: Target<A>>(
        &mut self,
        task: T,
        arg: A,
    ) -> Result<std::result::Result<T::Output, TaskError>> {
        let h = self.apply_async(task, arg)?;
        Ok(self.get(&h, None)?.expect("no timeout was given"))
    }

    /// Queue `task` with `arg`, and hand its result to `callback`, or its
    /// error to `error_callback`: Python's `apply_async(f, args, callback,
    /// error_callback)`. Exactly one of them is called, once, in the
    /// calling thread, inside whichever pool call sees the result come back
    /// ([`Pool::get`], [`Pool::join`], [`Pool::map`], an iterator's `next`,
    /// [`Pool::ready`] …): so in the order results come back, which is not
    /// the order of submission. A task still running at
    /// [`Pool::terminate`] reaches its `error_callback` as
    /// [`TaskError::Cancelled`]. A callback should be quick (no pool call
    /// runs while it does) and must not panic.
    ///
    /// The handle returned is for [`Pool::wait`] and [`Pool::ready`]: the
    /// result goes to the callbacks, so [`Pool::get`] on it is an error.
    pub fn apply_async_with<A, T, F, E>(
        &mut self,
        task: T,
        arg: A,
        callback: F,
        error_callback: E,
    ) -> Result<AsyncResult<T::Output>>
    where
        T: Target<A>,
        F: FnOnce(T::Output) + 'static,
        E: FnOnce(TaskError) + 'static,
    {
        let h = self.apply_async(task, arg)?;
        self.sched.on_done(
            h.id,
            scheduler::Callback::new(move |batch| match batch.decode(0) {
                Ok(v) => callback(v),
                Err(e) => error_callback(e),
            }),
        );
        Ok(h)
    }

    /// Run `task` on every argument, in chunks of `chunksize` items (0: an
    /// even split, four chunks per worker), and wait for all results, in
    /// argument order: a [`Results`] of the task's result type for a
    /// [`Task`] handle ([`MapResults`] of bytes for a raw task's name).
    pub fn map<A, T: Target<A>>(
        &mut self,
        task: T,
        args: &[A],
        chunksize: usize,
    ) -> Result<T::Results> {
        let mut results = T::Results::default();
        self.map_into(task, args, chunksize, &mut results)?;
        Ok(results)
    }

    /// [`Pool::map`] into `results`, reusing its buffers: in a loop of maps
    /// this allocates nothing once warm.
    pub fn map_into<A, T: Target<A>>(
        &mut self,
        task: T,
        args: &[A],
        chunksize: usize,
        results: &mut T::Results,
    ) -> Result<()> {
        let (func, name) = task.resolve(&self.registry)?;
        self.sched.map(
            name,
            <T::Output as Wire>::WIDTH,
            args.len(),
            chunksize,
            T::raw(results),
            |frame, id, items| T::encode(frame, id, func, &args[items]),
        )
    }

    /// Queue `task` on every argument, in chunks as [`Pool::map`] makes
    /// them, and return at once: Python's `map_async`. [`Pool::get`] gives
    /// the results in argument order; [`Pool::ready`] says whether they are
    /// all back.
    pub fn map_async<A, R: Wire>(
        &mut self,
        task: Task<A, R>,
        args: &[A],
        chunksize: usize,
    ) -> Result<MapAsync<R>>
    where
        Task<A, R>: Target<A>,
    {
        let ids = self.submit_chunks(task, args, chunksize)?;
        Ok(MapAsync::new(ids, args.len()))
    }

    /// Python's `imap`: queue `task` on every argument (chunks as in
    /// [`Pool::map`]) and iterate over the results in argument order, each
    /// as soon as it and those before it are back. Each item is
    /// `Ok(result)`, or `Err` once if the pool itself fails.
    pub fn imap<A, R: Wire>(
        &mut self,
        task: Task<A, R>,
        args: &[A],
        chunksize: usize,
    ) -> Result<Imap<'_, R>>
    where
        Task<A, R>: Target<A>,
    {
        let ids = self.submit_chunks(task, args, chunksize)?;
        Ok(Imap {
            pool: self,
            ids: ids.into(),
            current: None,
            _result: std::marker::PhantomData,
        })
    }

    /// Python's `imap_unordered`: queue `task` on every argument and
    /// iterate over the results as they come back, each with its argument's
    /// index, `(index, result)`. With tasks that take different times, the
    /// quick ones come first.
    pub fn imap_unordered<A, R: Wire>(
        &mut self,
        task: Task<A, R>,
        args: &[A],
        chunksize: usize,
    ) -> Result<ImapUnordered<'_, R>>
    where
        Task<A, R>: Target<A>,
    {
        let ids = self.submit_chunks(task, args, chunksize)?;
        let arrived = std::rc::Rc::new(std::cell::RefCell::new(std::collections::VecDeque::new()));
        for &id in &ids {
            self.sched.on_done(id, pending::queue_into(&arrived));
        }
        Ok(ImapUnordered {
            pool: self,
            arrived,
            outstanding: ids.len(),
            current: None,
            _result: std::marker::PhantomData,
        })
    }

    /// Python's `starmap(f, [(a, b), ...])`, which calls `f(a, b)`: here a
    /// task takes the tuple and destructures it
    /// (`registry.task("add", |(a, b): (i64, i64)| a + b)`), so this is
    /// [`Pool::map`] over tuples, and only tuples.
    pub fn starmap<A: Tuple, R: Wire>(
        &mut self,
        task: Task<A, R>,
        args: &[A],
        chunksize: usize,
    ) -> Result<Results<R>>
    where
        Task<A, R>: Target<A, Results = Results<R>>,
    {
        self.map(task, args, chunksize)
    }

    /// Queue `args` in chunks of `chunksize` (0: four per worker) and hand
    /// them out; the chunks' ids in order.
    fn submit_chunks<A, T: Target<A>>(
        &mut self,
        task: T,
        args: &[A],
        chunksize: usize,
    ) -> Result<Vec<u64>> {
        let (func, name) = task.resolve(&self.registry)?;
        let chunk = self.sched.chunk_size(args.len(), chunksize);
        let mut ids = Vec::with_capacity(args.len().div_ceil(chunk));
        for first in (0..args.len()).step_by(chunk) {
            let items = first..args.len().min(first + chunk);
            match self
                .sched
                .submit_for(name, first, <T::Output as Wire>::WIDTH, |frame, id| {
                    T::encode(frame, id, func, &args[items])
                }) {
                Ok(id) => ids.push(id),
                Err(e) => {
                    for id in ids {
                        self.sched.forget(id);
                    }
                    return Err(e);
                }
            }
            self.sched.dispatch()?;
        }
        Ok(ids)
    }

    /// Accept no more tasks (Python's `close`); queued tasks still run.
    pub fn close(&mut self) {
        self.sched.close();
    }

    /// After [`Pool::close`]: wait for every queued task, then let each
    /// worker exit and reap it. Results of earlier `apply_async` calls stay
    /// available from [`Pool::get`].
    pub fn join(&mut self) -> Result<Vec<(Pid, Status)>> {
        self.sched.join()
    }

    /// Kill every worker with SIGKILL and reap it; tasks not finished are
    /// reported as [`TaskError::Cancelled`].
    pub fn terminate(&mut self) -> Result<()> {
        self.sched.terminate()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if !self.sched.is_owner() {
            // A forked child's copy: the workers are its parent's.
            self.sched.disown();
        } else if self.sched.has_workers() {
            let _ = self.sched.terminate();
        }
    }
}
