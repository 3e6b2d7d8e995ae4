//! The pool's bookkeeping: which batch each worker holds, what is queued,
//! which results came back, and what happens when a worker dies. It is
//! generic over a [`Backend`] that starts, feeds, waits for and reaps
//! workers, so that the same logic runs on forked processes
//! ([`super::fork::Forked`]) and, in the tests below, on mocks that count
//! every start, send, wait, kill and reap, with no fork and no sleep.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::time::Instant;

use nix::errno::Errno;

use super::frame::{self, RESULT_HEAD};
use super::results::{Batch, Event, Lost, MapResults};
use super::wire::read;
use crate::error::{Error, Result};
use crate::pipe::{self, Piece};
use crate::process::Pid;
use crate::status::Status;

/// What the scheduler needs from the workers' side.
pub(crate) trait Backend {
    /// A live worker's ends (its task and result pipes).
    type Ends;

    /// Get ready to start `workers` workers (called once, before the
    /// first [`Backend::start`]).
    fn prepare(&mut self, _workers: usize) -> Result<()> {
        Ok(())
    }

    /// Start a worker. `others` are the other workers' slots: a forked
    /// child closes their ends before it starts working.
    fn start(&mut self, others: &mut Vec<Slot<Self::Ends>>) -> Result<Started<Self::Ends>>;

    /// Send a task frame; an error with EPIPE means the worker is gone.
    fn send(&mut self, ends: &mut Self::Ends, frame: &[u8]) -> Result<()>;

    /// The bytes a task frame of `len` bytes takes in the task pipe of the
    /// worker at `ends` when it is sent while that worker holds fewer than
    /// [`DEPTH`] batches: the whole frame and its length prefix, unless the
    /// backend carries its bytes some other way.
    fn pipe_bytes(&self, _ends: &Self::Ends, len: usize) -> usize {
        len + pipe::HEADER
    }

    /// Wait until `deadline` (`None`: for ever) for result ends to become
    /// readable (or closed), and put their slot numbers in `ready`.
    /// `Ok(false)`: the deadline passed first. `Ok(true)` with nothing
    /// ready: a signal interrupted the wait.
    fn wait(
        &mut self,
        slots: &[Slot<Self::Ends>],
        deadline: Option<Instant>,
        ready: &mut Vec<usize>,
    ) -> Result<bool>;

    /// Read what the result end holds now toward one result frame, into
    /// `frame` (the same buffer from call to call while the frame is
    /// partial), without blocking: [`Piece::Partial`] when the rest has not
    /// come yet, [`Piece::Eof`] when the worker is gone. An error means the
    /// bytes are not a frame (cut short, or a length over the limit).
    /// `expect`: the payload bytes this result should have, a hint.
    fn recv(&mut self, ends: &mut Self::Ends, frame: &mut Vec<u8>, expect: usize) -> Result<Piece>;

    /// Whether [`Backend::recv_blocking`] may be used.
    fn can_block(&self) -> bool {
        false
    }

    /// [`Backend::recv`], waiting until the frame is whole or the worker is
    /// gone: for a wait with no deadline on the one worker that has work,
    /// which then needs no poll(2) to sleep in, only a short look before
    /// the read (see `pool::spin`). [`Piece::Partial`] only when a signal
    /// interrupted it.
    fn recv_blocking(
        &mut self,
        ends: &mut Self::Ends,
        frame: &mut Vec<u8>,
        expect: usize,
    ) -> Result<Piece> {
        self.recv(ends, frame, expect)
    }

    /// Tell an idle worker to exit, before its ends are closed. End of
    /// file alone is not enough when other processes forked from this one
    /// hold a copy of its task pipe. Best effort: a worker already gone
    /// is reaped all the same.
    fn stop(&mut self, _ends: &mut Self::Ends) {}

    /// Wait for worker `pid` to end, and how it ended.
    fn reap(&mut self, pid: Pid) -> Result<Status>;

    /// Kill worker `pid` (SIGKILL).
    fn kill(&mut self, pid: Pid);
}

/// A started worker.
#[derive(Debug)]
pub(crate) struct Started<E> {
    pub(crate) pid: Pid,
    pub(crate) ends: E,
    /// Bytes its task pipe holds (F_GETPIPE_SZ).
    pub(crate) capacity: usize,
}

/// A worker and the batches it holds.
#[derive(Debug)]
pub(crate) struct Slot<E> {
    pub(crate) pid: Pid,
    pub(crate) ends: E,
    /// Batches sent and not yet answered, oldest first. The worker runs
    /// them in this order, so only the first can have started.
    busy: VecDeque<Job>,
    capacity: usize,
    /// A result frame begun and not yet complete.
    partial: Option<Vec<u8>>,
}

/// A batch waiting for a worker.
#[derive(Debug)]
struct Job {
    id: u64,
    task: &'static str,
    first: usize,
    count: u32,
    /// The size its result frame's payload should have (a hint for the
    /// read: a batch of fixed-width successes has exactly this size).
    expect: usize,
    /// The encoded task frame.
    frame: Vec<u8>,
}

/// The id of the next batch of any pool of this process.
static NEXT_BATCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Batches a worker may hold at once: the next is already in its pipe when
/// it finishes one, so it never waits for the parent.
pub(crate) const DEPTH: usize = 2;

/// Frame buffers a pool keeps for reuse.
const SPARE_BUFFERS: usize = 64;

/// The pool's state, whatever its workers are.
#[derive(Debug)]
pub(crate) struct Scheduler<B: Backend> {
    pub(crate) backend: B,
    workers: Vec<Slot<B::Ends>>,
    queue: VecDeque<Job>,
    done: HashMap<u64, Batch, IdHash>,
    events: Vec<Event>,
    /// The process that made the pool: a forked copy is not its owner.
    owner: crate::process::Owner,
    closed: bool,
    /// Frame buffers to reuse (see [`Scheduler::recycle`]).
    spare: Vec<Vec<u8>>,
    /// Slots with something to read, from the last wait.
    ready: Vec<usize>,
    /// What to do with a batch when it comes back, instead of keeping it
    /// for [`Scheduler::wait_for`]: a caller's callbacks, the queue of an
    /// `imap_unordered`, or nothing (a result no one will ask for).
    callbacks: HashMap<u64, Callback, IdHash>,
}

/// Batch ids are a counter that no one outside the pool chooses: a hash
/// of them needs no defence against collisions picked on purpose, only
/// to spread them (SipHash cost about a tenth of an apply_async round
/// trip, in three lookups).
type IdHash = std::hash::BuildHasherDefault<IdHasher>;

/// The hasher of [`IdHash`]: one multiplication (Fibonacci hashing).
#[derive(Debug, Default)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A batch's destination when it comes back (or is lost): called once,
/// with the batch, as soon as the scheduler sees it.
pub(crate) struct Callback(Box<dyn FnOnce(Batch)>);

impl Callback {
    pub(crate) fn new(f: impl FnOnce(Batch) + 'static) -> Callback {
        Callback(Box::new(f))
    }
}

impl std::fmt::Debug for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Callback")
    }
}

impl<B: Backend> Scheduler<B> {
    /// Start `workers` (1-1024) workers on `backend`.
    pub(crate) fn new(backend: B, workers: usize) -> Result<Self> {
        if !(1..=1024).contains(&workers) {
            return Err(Error::invalid("workers", "a pool has 1-1024 workers"));
        }
        let mut backend = backend;
        backend.prepare(workers)?;
        let mut s = Scheduler {
            backend,
            workers: Vec::with_capacity(workers),
            queue: VecDeque::new(),
            done: HashMap::default(),
            events: Vec::new(),
            owner: crate::process::Owner::me(),
            closed: false,
            spare: Vec::new(),
            ready: Vec::new(),
            callbacks: HashMap::default(),
        };
        for _ in 0..workers {
            match s.start() {
                Ok(w) => s.workers.push(w),
                Err(e) => {
                    // No pool is returned, so nothing else would ever kill
                    // and reap the workers already started: they would
                    // stay as zombies (or run on) for the life of this
                    // process.
                    let _ = s.terminate();
                    return Err(e);
                }
            }
        }
        Ok(s)
    }

    fn start(&mut self) -> Result<Slot<B::Ends>> {
        let Started {
            pid,
            ends,
            capacity,
        } = self.backend.start(&mut self.workers)?;
        Ok(Slot {
            pid,
            ends,
            busy: VecDeque::new(),
            capacity,
            partial: None,
        })
    }

    pub(crate) fn pids(&self) -> Vec<Pid> {
        self.workers.iter().map(|w| w.pid).collect()
    }

    pub(crate) fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// [`Scheduler::submit_for`] of a task of results of no known width.
    #[cfg(test)]
    pub(crate) fn submit(
        &mut self,
        task: &'static str,
        first: usize,
        encode: impl FnOnce(&mut Vec<u8>, u64) -> Result<u32>,
    ) -> Result<u64> {
        self.submit_for(task, first, None, encode)
    }

    /// Queue one batch of task `task`, whose first item is item `first` of
    /// the caller's arguments, and whose results are `width` bytes each
    /// when they have a fixed width (then the size of the batch's result
    /// is known, and it is read in one call); `encode` writes its frame
    /// for the id given.
    pub(crate) fn submit_for(
        &mut self,
        task: &'static str,
        first: usize,
        width: Option<usize>,
        encode: impl FnOnce(&mut Vec<u8>, u64) -> Result<u32>,
    ) -> Result<u64> {
        self.owned("apply")?;
        self.queue_batch("apply", task, first, width, encode)
    }

    /// [`Scheduler::submit_for`] in the pool's own process; `call` names
    /// the caller's call in an error.
    fn queue_batch(
        &mut self,
        call: &'static str,
        task: &'static str,
        first: usize,
        width: Option<usize>,
        encode: impl FnOnce(&mut Vec<u8>, u64) -> Result<u32>,
    ) -> Result<u64> {
        if self.closed {
            return Err(Error::invalid(call, "the pool is closed"));
        }
        // Unique among all the pools of this process, so that a handle
        // given to the wrong pool names no batch of it.
        let id = NEXT_BATCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut frame = self.spare.pop().unwrap_or_default();
        let count = match encode(&mut frame, id) {
            Ok(count) => count,
            Err(e) => {
                self.recycle(frame);
                return Err(e);
            }
        };
        self.queue.push_back(Job {
            id,
            task,
            first,
            count,
            expect: expected_result(count, width),
            frame,
        });
        Ok(id)
    }

    /// The batch `id`, waiting for it until `deadline`; `Ok(None)` when the
    /// deadline passed first (the batch stays pending).
    pub(crate) fn wait_for(&mut self, id: u64, deadline: Option<Instant>) -> Result<Option<Batch>> {
        self.owned("get")?;
        loop {
            if let Some(batch) = self.done.remove(&id) {
                return Ok(Some(batch));
            }
            if !self.is_pending(id) {
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

    /// Run `n` items in chunks of `chunksize` (0: four chunks per worker)
    /// and wait for them all, into `results` (its buffers reused).
    /// `encode` writes the frame of the items in a range for an id.
    pub(crate) fn map(
        &mut self,
        task: &'static str,
        width: Option<usize>,
        n: usize,
        chunksize: usize,
        results: &mut MapResults,
        mut encode: impl FnMut(&mut Vec<u8>, u64, Range<usize>) -> Result<u32>,
    ) -> Result<()> {
        self.owned("map")?;
        for b in results.batches.drain(..) {
            self.recycle(b.frame);
        }
        results.len = 0;
        let chunk = self.chunk_size(n, chunksize);
        let mut ids = Vec::with_capacity(n.div_ceil(chunk));
        for first in (0..n).step_by(chunk) {
            let items = first..n.min(first + chunk);
            ids.push(self.queue_batch("map", task, first, width, |frame, id| {
                encode(frame, id, items)
            })?);
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
        results.len = n;
        Ok(())
    }

    /// Items per chunk for `n` items: `chunksize`, or with 0 four chunks
    /// per worker.
    pub(crate) fn chunk_size(&self, n: usize, chunksize: usize) -> usize {
        if chunksize == 0 {
            n.div_ceil(self.workers.len().max(1) * 4).max(1)
        } else {
            chunksize
        }
    }

    /// Accept no more tasks; queued tasks still run.
    pub(crate) fn close(&mut self) {
        self.closed = true;
    }

    /// After [`Scheduler::close`]: wait for every queued batch, then let
    /// each worker exit and reap it.
    pub(crate) fn join(&mut self) -> Result<Vec<(Pid, Status)>> {
        self.owned("join")?;
        if !self.closed {
            return Err(Error::invalid(
                "join",
                "call close() before join(), as in Python",
            ));
        }
        while !self.queue.is_empty() || self.workers.iter().any(|w| !w.busy.is_empty()) {
            self.pump(None)?;
        }
        // Tell every worker to stop and close its task pipe (end of file
        // ends its loop as well, with _exit(0)), then reap them all, even
        // past an error. The stop comes first: a child this process forked
        // later (a Process, another pool's worker) holds a copy of the
        // task pipe, and the end of file would wait for that child to end.
        let pids: Vec<Pid> = std::mem::take(&mut self.workers)
            .into_iter()
            .map(|mut w| {
                self.backend.stop(&mut w.ends);
                w.pid
            })
            .collect();
        let mut statuses = Vec::with_capacity(pids.len());
        let mut first_error = None;
        for pid in pids {
            match self.backend.reap(pid) {
                Ok(status) => statuses.push((pid, status)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(statuses), Err)
    }

    /// Kill every worker and reap it; batches not finished are cancelled.
    pub(crate) fn terminate(&mut self) -> Result<()> {
        self.owned("terminate")?;
        self.closed = true;
        let mut first_error = None;
        for w in std::mem::take(&mut self.workers) {
            for job in &w.busy {
                self.fail(job, Lost::Cancelled);
            }
            self.backend.kill(w.pid);
            drop(w.ends);
            if let Err(e) = self.backend.reap(w.pid) {
                first_error.get_or_insert(e);
            }
        }
        for job in std::mem::take(&mut self.queue) {
            self.fail(&job, Lost::Cancelled);
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Whether any worker is left (none after join or terminate).
    pub(crate) fn has_workers(&self) -> bool {
        !self.workers.is_empty()
    }

    /// Record that `job` produced no results, and why.
    fn fail(&mut self, job: &Job, lost: Lost) {
        let batch = Batch::lost(job.task, job.first, job.count as usize, lost);
        self.finish(job.id, batch);
    }

    /// Batch `id` is back (or lost): hand it to its callback, or keep it
    /// for [`Scheduler::wait_for`].
    fn finish(&mut self, id: u64, batch: Batch) {
        let callback = if self.callbacks.is_empty() {
            None
        } else {
            self.callbacks.remove(&id)
        };
        match callback {
            Some(Callback(f)) => f(batch),
            None => {
                self.done.insert(id, batch);
            }
        }
    }

    /// When batch `id` comes back (or is lost), call `f` with it instead of
    /// keeping it. A batch already back is handed over at once. Ids that
    /// are neither pending nor back are ignored.
    pub(crate) fn on_done(&mut self, id: u64, f: Callback) {
        if let Some(batch) = self.done.remove(&id) {
            (f.0)(batch);
        } else if self.is_pending(id) {
            self.callbacks.insert(id, f);
        }
    }

    /// Nobody will ask for batch `id`: drop it now if it is back, or when
    /// it comes back.
    pub(crate) fn forget(&mut self, id: u64) {
        if let Some(batch) = self.done.remove(&id) {
            self.recycle(batch.frame);
        } else if self.is_pending(id) {
            self.callbacks.insert(id, Callback::new(drop));
        }
    }

    /// Whether batch `id` is back and waiting to be taken.
    pub(crate) fn is_done(&self, id: u64) -> bool {
        self.done.contains_key(&id)
    }

    /// Whether batch `id` is queued or held by a worker.
    pub(crate) fn is_pending(&self, id: u64) -> bool {
        self.queue.iter().any(|j| j.id == id)
            || self
                .workers
                .iter()
                .any(|w| w.busy.iter().any(|j| j.id == id))
    }

    /// Take batch `id` if it is back.
    pub(crate) fn take_done(&mut self, id: u64) -> Option<Batch> {
        self.done.remove(&id)
    }

    /// Collect whatever results are back without waiting, or wait for one
    /// until `deadline` (`None`: until something comes back; only call it
    /// with work pending). False when the deadline passed first.
    pub(crate) fn progress(&mut self, deadline: Option<Instant>) -> Result<bool> {
        self.owned("get")?;
        self.pump(deadline)
    }

    /// `Ok` in the process that made the pool. A forked child's copy of
    /// the pool shares its workers' pipes: using it would mix its frames
    /// with the parent's, and read the parent's results.
    fn owned(&self, call: &'static str) -> Result<()> {
        if self.owner.is_me() {
            return Ok(());
        }
        let me = nix::unistd::getpid();
        Err(Error::new(
            crate::ErrorKind::InvalidInput,
            call,
            "pool",
            format!(
                "this pool belongs to process {}: process {me}, forked from it, cannot use its copy",
                self.owner.pid()
            ),
        ))
    }

    /// Whether this is the process that made the pool.
    pub(crate) fn is_owner(&self) -> bool {
        self.owner.is_me()
    }

    /// Forget the workers without signalling or waiting for them: what a
    /// forked child's copy of the pool does when dropped (they are its
    /// parent's). Their pipe ends in this process are closed.
    pub(crate) fn disown(&mut self) {
        self.workers.clear();
        self.queue.clear();
        self.closed = true;
    }

    /// Give queued batches to workers: one to each idle worker, then a
    /// second to a busy one when both frames fit in its task pipe at once
    /// (as [`Backend::pipe_bytes`] counts them: a frame that crosses
    /// through the worker's arena puts only a note in the pipe). That
    /// bound keeps the parent from ever blocking on a full task pipe while
    /// the worker blocks on a full result pipe.
    pub(crate) fn dispatch(&mut self) -> Result<()> {
        for depth in 0..DEPTH {
            for slot in 0..self.workers.len() {
                let Some(next) = self.queue.front() else {
                    return Ok(());
                };
                let w = &self.workers[slot];
                // Bytes of the frames it holds, with their length prefixes.
                let in_flight = w
                    .busy
                    .iter()
                    .map(|j| self.backend.pipe_bytes(&w.ends, j.frame.len()))
                    .sum::<usize>();
                if w.busy.len() != depth
                    || (depth > 0
                        && in_flight + self.backend.pipe_bytes(&w.ends, next.frame.len())
                            > w.capacity)
                {
                    continue;
                }
                let job = self.queue.pop_front().expect("queue is not empty");
                let w = &mut self.workers[slot];
                match self.backend.send(&mut w.ends, &job.frame) {
                    Ok(()) => w.busy.push_back(job),
                    Err(e) if e.errno() == Some(Errno::EPIPE) => {
                        // The worker died before reading it: the batch never ran.
                        self.queue.push_front(job);
                        self.replace(slot, None)?;
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
        if deadline.is_none() && self.backend.can_block() {
            if let Some(slot) = self.sole_busy() {
                // Nothing but this worker's result can come: wait for it
                // in the read itself, after a short look (pool::spin).
                let mut frame = self.frame_for(slot);
                let expect = self.workers[slot].busy.front().map_or(0, |j| j.expect);
                let piece =
                    self.backend
                        .recv_blocking(&mut self.workers[slot].ends, &mut frame, expect);
                self.take_piece(slot, piece, frame)?;
                self.dispatch()?;
                return Ok(true);
            }
        }
        let mut ready = std::mem::take(&mut self.ready);
        ready.clear();
        let woke = self.backend.wait(&self.workers, deadline, &mut ready);
        let result = match woke {
            Ok(true) => self.collect(&ready).map(|()| true),
            other => other,
        };
        self.ready = ready;
        if !result? {
            return Ok(false);
        }
        self.dispatch()?;
        Ok(true)
    }

    /// Read once from the result end of each `ready` slot (see
    /// [`Scheduler::take_piece`]).
    fn collect(&mut self, ready: &[usize]) -> Result<()> {
        for &slot in ready {
            let mut frame = self.frame_for(slot);
            let expect = self.workers[slot].busy.front().map_or(0, |j| j.expect);
            let piece = self
                .backend
                .recv(&mut self.workers[slot].ends, &mut frame, expect);
            self.take_piece(slot, piece, frame)?;
        }
        Ok(())
    }

    /// The one worker with batches, when every other is idle and nothing
    /// is queued.
    fn sole_busy(&self) -> Option<usize> {
        if !self.queue.is_empty() {
            return None;
        }
        let mut busy = self
            .workers
            .iter()
            .enumerate()
            .filter(|(_, w)| !w.busy.is_empty());
        match (busy.next(), busy.next()) {
            (Some((slot, _)), None) => Some(slot),
            _ => None,
        }
    }

    /// The buffer the next result of `slot` is read into: the frame it
    /// began, or a spare one.
    fn frame_for(&mut self, slot: usize) -> Vec<u8> {
        match self.workers[slot].partial.take() {
            Some(f) => f,
            None => self.spare.pop().unwrap_or_default(),
        }
    }

    /// What a read from `slot` gave: a whole frame finishes its batch, a
    /// partial one waits in its slot for the rest (the caller goes back to
    /// waiting, its deadline kept). A worker whose pipe closed is
    /// replaced; one that sent what is not a result frame for its batch is
    /// killed and replaced, and that batch alone fails.
    fn take_piece(&mut self, slot: usize, piece: Result<Piece>, frame: Vec<u8>) -> Result<()> {
        match piece {
            Ok(Piece::Frame) => {
                let job = self.workers[slot].busy.pop_front();
                match parse_results(job.as_ref(), frame) {
                    Ok((id, batch)) => {
                        if let Some(j) = job {
                            self.recycle(j.frame);
                        }
                        self.finish(id, batch);
                    }
                    Err(e) => {
                        if let Some(j) = job {
                            self.workers[slot].busy.push_front(j);
                        }
                        self.replace(slot, Some(e))?;
                    }
                }
            }
            Ok(Piece::Partial) => self.workers[slot].partial = Some(frame),
            Ok(Piece::Eof) => {
                self.recycle(frame);
                self.replace(slot, None)?;
            }
            Err(e) => {
                self.recycle(frame);
                self.replace(slot, Some(e))?;
            }
        }
        Ok(())
    }

    /// Keep a buffer for the next frame: allocating and freeing frames of
    /// tens of KiB on every batch makes the allocator give memory back and
    /// fault it in again (page faults cost more than the whole batch).
    /// A buffer keeps its length: receiving into it then zeroes nothing.
    pub(crate) fn recycle(&mut self, buf: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS {
            self.spare.push(buf);
        }
    }

    /// The worker in `slot` is gone, or (`bad`) broke the result protocol
    /// and is killed: reap it, fail its batch, start a new one.
    fn replace(&mut self, slot: usize, bad: Option<Error>) -> Result<()> {
        let new = self.start()?;
        let old = std::mem::replace(&mut self.workers[slot], new);
        let Slot {
            pid,
            ends,
            busy,
            partial,
            ..
        } = old;
        if bad.is_some() {
            // It may live on (a worker past its end of file is dead already,
            // and SIGKILL to a zombie changes nothing).
            self.backend.kill(pid);
        }
        drop(ends);
        if let Some(buf) = partial {
            self.recycle(buf);
        }
        // Its result pipe is closed or it is killed: it has exited or is
        // exiting.
        let status = self.backend.reap(pid)?;
        let mut busy = busy;
        // Batches behind the first never started: queue them again, in order.
        while busy.len() > 1 {
            self.queue.push_front(busy.pop_back().expect("len > 1"));
        }
        if let Some(job) = busy.pop_front() {
            let lost = match bad {
                Some(e) => Lost::BadResult(pid, status, e),
                None => Lost::Died(pid, status),
            };
            self.fail(&job, lost);
        }
        self.events.push(Event::Replaced {
            old: pid,
            status,
            new: self.workers[slot].pid,
        });
        Ok(())
    }
}

/// The payload size of a result frame for `count` items of `width` bytes
/// each, all successes; for results of no fixed width, a guess that reads
/// what the pipe holds.
fn expected_result(count: u32, width: Option<usize>) -> usize {
    match width {
        Some(w) => RESULT_HEAD.saturating_add((count as usize).saturating_mul(w)),
        None => usize::MAX,
    }
}

/// Check a result frame against the batch it answers.
fn parse_results(job: Option<&Job>, frame: Vec<u8>) -> Result<(u64, Batch)> {
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
    if id != job.id || count != job.count || frame.len() < RESULT_HEAD {
        return Err(bad("a result does not match its task"));
    }
    let layout = frame::parse_layout(&frame, count, width).map_err(bad)?;
    Ok((
        id,
        Batch {
            task: job.task,
            first: job.first,
            frame,
            layout,
            lost: None,
            count: count as usize,
        },
    ))
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
