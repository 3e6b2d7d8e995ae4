//! What a pool hands back: results in argument order, typed
//! ([`Results`]) or as bytes ([`MapResults`]), the handle of an
//! `apply_async` ([`AsyncResult`]), why an item has no result
//! ([`TaskError`]), and what the pool did on its own ([`Event`]).

use std::fmt;
use std::marker::PhantomData;

use super::frame::{self, Layout};
use super::wire::Wire;
use crate::error::{Error, ErrorKind};
use crate::process::Pid;
use crate::status::Status;

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
    /// The worker running it sent something that is not a result frame
    /// for its batch (a frame cut short, a length over the limit, a table
    /// that does not add up); the pool killed and replaced the worker.
    /// `error` is of kind [`ErrorKind::BadData`].
    BadResult {
        /// The task's name.
        task: String,
        /// Its position.
        index: usize,
        /// The worker's pid.
        pid: Pid,
        /// How it ended (killed by the pool, or dead already).
        status: Status,
        /// What was wrong with its result.
        error: Error,
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
            TaskError::BadResult {
                task,
                index,
                pid,
                status,
                error,
            } => write!(
                f,
                "task {task}[{index}] lost: worker {pid} sent a bad result, {status}: {error}"
            ),
            TaskError::Cancelled { task, index } => {
                write!(f, "task {task}[{index}] cancelled: the pool was terminated")
            }
        }
    }
}

impl TaskError {
    /// What kind of failure it is: [`ErrorKind::BadData`] for a bad
    /// result, [`ErrorKind::Other`] otherwise.
    pub fn kind(&self) -> ErrorKind {
        match self {
            TaskError::BadResult { error, .. } => error.kind(),
            _ => ErrorKind::Other,
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

/// A task submitted with [`Pool::apply_async`](super::Pool::apply_async),
/// whose result is an `R`; redeem it with [`Pool::get`](super::Pool::get).
pub struct AsyncResult<R> {
    pub(crate) id: u64,
    _result: PhantomData<fn() -> R>,
}

impl<R> AsyncResult<R> {
    pub(crate) fn new(id: u64) -> Self {
        AsyncResult {
            id,
            _result: PhantomData,
        }
    }
}

impl<R> Clone for AsyncResult<R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for AsyncResult<R> {}

impl<R> PartialEq for AsyncResult<R> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl<R> Eq for AsyncResult<R> {}

impl<R> fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AsyncResult({})", self.id)
    }
}

/// Why a batch has no result frame.
#[derive(Debug, Clone)]
pub(crate) enum Lost {
    Died(Pid, Status),
    /// The worker sent a bad result frame and was killed.
    BadResult(Pid, Status, Error),
    Cancelled,
}

/// The outcome of one batch: results in item order.
#[derive(Debug, Clone)]
pub(crate) struct Batch {
    pub(crate) task: &'static str,
    pub(crate) first: usize,
    /// The raw result frame (results are slices of it).
    pub(crate) frame: Vec<u8>,
    /// Where each item is in `frame`.
    pub(crate) layout: Layout,
    /// Set when no result frame came: every item has this error.
    pub(crate) lost: Option<Lost>,
    /// Items in the batch.
    pub(crate) count: usize,
}

impl Batch {
    /// A batch that produced no results, and why.
    pub(crate) fn lost(task: &'static str, first: usize, count: usize, lost: Lost) -> Batch {
        Batch {
            task,
            first,
            frame: Vec::new(),
            layout: Layout::Fixed(0),
            lost: Some(lost),
            count,
        }
    }

    /// Item `i`'s bytes, or why it has none.
    pub(crate) fn get(&self, i: usize) -> std::result::Result<&[u8], TaskError> {
        let index = self.first + i;
        let task = || self.task.to_string();
        match &self.lost {
            Some(Lost::Died(pid, status)) => {
                return Err(TaskError::WorkerDied {
                    task: task(),
                    index,
                    pid: *pid,
                    status: *status,
                });
            }
            Some(Lost::BadResult(pid, status, error)) => {
                return Err(TaskError::BadResult {
                    task: task(),
                    index,
                    pid: *pid,
                    status: *status,
                    error: error.clone(),
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
        match frame::result_item(&self.frame, &self.layout, i) {
            (bytes, true) => Ok(bytes),
            (bytes, false) => Err(TaskError::Failed {
                task: task(),
                index,
                message: String::from_utf8_lossy(bytes).into_owned(),
            }),
        }
    }

    /// Item `i` as an `R`, or why it has none.
    #[inline]
    pub(crate) fn decode<R: Wire>(&self, i: usize) -> std::result::Result<R, TaskError> {
        let bytes = self.get(i)?;
        R::get(bytes).ok_or_else(|| self.not_a::<R>(i, bytes))
    }

    /// The error for item `i`, whose `bytes` are not an `R`.
    pub(crate) fn not_a<R: Wire>(&self, i: usize, bytes: &[u8]) -> TaskError {
        TaskError::Failed {
            task: self.task.to_string(),
            index: self.first + i,
            message: format!(
                "a result of {} bytes is not a {}",
                bytes.len(),
                std::any::type_name::<R>()
            ),
        }
    }
}

/// The results of [`Pool::map`](super::Pool::map) for a raw task, as
/// bytes, in the order of the arguments.
#[derive(Debug, Clone, Default)]
pub struct MapResults {
    pub(crate) batches: Vec<Batch>,
    pub(crate) len: usize,
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

    /// The batch holding item `i`, and `i`'s place in it.
    fn locate(&self, i: usize) -> (&Batch, usize) {
        assert!(
            i < self.len,
            "index {i} out of range for {} results",
            self.len
        );
        let b = self.batches.partition_point(|b| b.first + b.count <= i);
        (&self.batches[b], i - self.batches[b].first)
    }

    /// The result of item `i`: its bytes, or why it has none.
    ///
    /// # Panics
    /// If `i` is out of range.
    pub fn get(&self, i: usize) -> std::result::Result<&[u8], TaskError> {
        let (batch, at) = self.locate(i);
        batch.get(at)
    }

    /// Every result in order.
    pub fn iter(&self) -> impl Iterator<Item = std::result::Result<&[u8], TaskError>> + '_ {
        self.batches
            .iter()
            .flat_map(|b| (0..b.count).map(move |i| b.get(i)))
    }
}

/// The results of [`Pool::map`](super::Pool::map) for a [`Task<A,
/// R>`](super::Task): one `Result<R, TaskError>` per argument, in the
/// order of the arguments, decoded when asked for.
///
/// ```no_run
/// # use posixkit::pool::{Pool, Registry};
/// # let mut registry = Registry::new();
/// # let square = registry.task("square", |n: i64| n * n);
/// # let mut pool = Pool::new(2, registry).unwrap();
/// let results = pool.map(square, &[1, 2, 3], 0).unwrap();
/// let squares: Vec<i64> = results.iter().collect::<Result<_, _>>().unwrap();
/// assert_eq!(squares, [1, 4, 9]);
/// ```
pub struct Results<R> {
    raw: MapResults,
    _result: PhantomData<fn() -> R>,
}

impl<R> Default for Results<R> {
    fn default() -> Self {
        Results {
            raw: MapResults::default(),
            _result: PhantomData,
        }
    }
}

impl<R> fmt::Debug for Results<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Results")
            .field("type", &std::any::type_name::<R>())
            .field("len", &self.raw.len)
            .finish()
    }
}

impl<R: Wire> Results<R> {
    /// How many results.
    pub fn len(&self) -> usize {
        self.raw.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.raw.len == 0
    }

    /// The result of item `i`, or why it has none.
    ///
    /// # Panics
    /// If `i` is out of range.
    pub fn get(&self, i: usize) -> std::result::Result<R, TaskError> {
        let (batch, at) = self.raw.locate(i);
        batch.decode(at)
    }

    /// Every result in order.
    pub fn iter(&self) -> impl Iterator<Item = std::result::Result<R, TaskError>> + '_ {
        self.raw
            .batches
            .iter()
            .flat_map(|b| (0..b.count).map(move |i| b.decode(i)))
    }

    /// Every result in order, in a `Vec`.
    pub fn to_vec(&self) -> Vec<std::result::Result<R, TaskError>> {
        self.iter().collect()
    }

    /// Every result in order, or the first item's error: Python's `map`,
    /// which returns the list or raises the first task's exception.
    /// [`Results::values_into`] reuses a `Vec`.
    pub fn values(&self) -> std::result::Result<Vec<R>, TaskError> {
        let mut out = Vec::new();
        self.values_into(&mut out)?;
        Ok(out)
    }

    /// [`Results::values`] into `out` (cleared first), reusing its
    /// allocation. On an error `out` holds the results before that item.
    ///
    /// Much quicker than [`Results::iter`] when every item succeeded: the
    /// results of a batch packed at `R`'s width are read straight from
    /// its frame, with no `Result<R, TaskError>` (a large value, since the
    /// error holds strings) made and moved per item; about 1 ns an
    /// `i64` against 45 ns through `iter()`.
    pub fn values_into(&self, out: &mut Vec<R>) -> std::result::Result<(), TaskError> {
        out.clear();
        out.reserve(self.raw.len);
        for b in &self.raw.batches {
            match (&b.layout, &b.lost, R::WIDTH) {
                (Layout::Fixed(w), None, Some(width)) if *w == width && width > 0 => {
                    let end = frame::RESULT_HEAD + b.count * width;
                    let items = b.frame[frame::RESULT_HEAD..end].chunks_exact(width);
                    if R::ANY_BYTES {
                        // Appended through an iterator of known length:
                        // one length update for the batch, not a push
                        // (and a length stored to memory) per item. For
                        // numbers the `expect` compiles away.
                        out.extend(items.map(|bytes| {
                            R::get(bytes).expect("Wire::ANY_BYTES: every WIDTH bytes are a value")
                        }));
                    } else {
                        for (i, bytes) in items.enumerate() {
                            match R::get(bytes) {
                                Some(v) => out.push(v),
                                None => return Err(b.not_a::<R>(i, bytes)),
                            }
                        }
                    }
                }
                _ => {
                    for i in 0..b.count {
                        out.push(b.decode(i)?);
                    }
                }
            }
        }
        Ok(())
    }

    /// The same results as bytes.
    pub fn as_bytes(&self) -> &MapResults {
        &self.raw
    }
}

impl<R> Results<R> {
    pub(crate) fn raw_mut(&mut self) -> &mut MapResults {
        &mut self.raw
    }
}
