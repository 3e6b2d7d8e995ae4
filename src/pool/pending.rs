//! Work handed to the pool whose results come later: the handles
//! [`Pool::get`] redeems ([`AsyncResult`], [`MapAsync`]), and the
//! iterators of [`Pool::imap`] (in argument order) and
//! [`Pool::imap_unordered`] (as the results come back).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::rc::Rc;
use std::time::Instant;

use super::Pool;
use super::results::{AsyncResult, Batch, MapResults, Results, TaskError};
use super::scheduler::Callback;
use super::wire::Wire;
use crate::error::{Error, Result};

mod sealed {
    pub trait Sealed {}
}

/// The batches of a handle, in order (opaque outside the pool).
#[doc(hidden)]
#[derive(Debug)]
pub struct Batches(pub(crate) Vec<Batch>);

/// One batch, for a handle that waits for one (opaque outside the pool).
#[doc(hidden)]
#[derive(Debug)]
pub struct OneBatch(pub(crate) Batch);

/// A handle [`Pool::get`] and [`Pool::ready`] take: an [`AsyncResult`]
/// (one result) or a [`MapAsync`] (all the results of a `map_async`).
pub trait Handle: sealed::Sealed {
    /// What [`Pool::get`] returns for it.
    type Output;
    /// The batches it waits for.
    #[doc(hidden)]
    fn ids(&self) -> &[u64];
    /// The output, from its batches in order.
    #[doc(hidden)]
    fn assemble(&self, batches: Batches) -> Self::Output;
    /// The output of a handle of one batch, read from it in place (its
    /// buffer is then kept for the next result); `None` to have it
    /// [`Handle::assemble`]d.
    #[doc(hidden)]
    fn assemble_one(&self, _batch: &OneBatch) -> Option<Self::Output> {
        None
    }
}

impl<R> sealed::Sealed for AsyncResult<R> {}

impl<R: Wire> Handle for AsyncResult<R> {
    type Output = std::result::Result<R, TaskError>;
    fn ids(&self) -> &[u64] {
        std::slice::from_ref(&self.id)
    }
    fn assemble(&self, batches: Batches) -> Self::Output {
        batches.0[0].decode(0)
    }
    fn assemble_one(&self, batch: &OneBatch) -> Option<Self::Output> {
        Some(batch.0.decode(0))
    }
}

/// The results of a [`Pool::map_async`] still on their way: redeem them
/// with [`Pool::get`] (a [`Results`] in argument order), or ask
/// [`Pool::ready`].
pub struct MapAsync<R> {
    ids: Vec<u64>,
    len: usize,
    _result: PhantomData<fn() -> R>,
}

impl<R> MapAsync<R> {
    pub(crate) fn new(ids: Vec<u64>, len: usize) -> Self {
        MapAsync {
            ids,
            len,
            _result: PhantomData,
        }
    }

    /// How many results it will hold.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it will hold none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<R> fmt::Debug for MapAsync<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MapAsync({} items, {} batches)",
            self.len,
            self.ids.len()
        )
    }
}

impl<R> sealed::Sealed for MapAsync<R> {}

impl<R: Wire> Handle for MapAsync<R> {
    type Output = Results<R>;
    fn ids(&self) -> &[u64] {
        &self.ids
    }
    fn assemble(&self, batches: Batches) -> Results<R> {
        let mut results = Results::default();
        let raw: &mut MapResults = results.raw_mut();
        raw.batches = batches.0;
        raw.len = self.len;
        results
    }
}

impl Pool {
    /// Wait for `handle`'s results, at most `timeout` (`None`: for ever),
    /// and hand them out: Python's `AsyncResult.get(timeout)`. For an
    /// [`AsyncResult`] one `Result<R, TaskError>`, for a [`MapAsync`] a
    /// [`Results`] in argument order. `Ok(None)`: the timeout passed first;
    /// the handle stays valid. Results are handed out once; asking again is
    /// an error, as is a handle of another pool.
    pub fn get<H: Handle>(
        &mut self,
        handle: &H,
        timeout: Option<std::time::Duration>,
    ) -> Result<Option<H::Output>> {
        // A timeout too large for the clock waits for ever.
        let deadline = timeout.and_then(crate::process::deadline_after);
        for &id in handle.ids() {
            if !self.sched.is_done(id) && !self.sched.is_pending(id) {
                return Err(Error::invalid(
                    "get",
                    "this result was already taken, or belongs to another pool",
                ));
            }
        }
        while !handle.ids().iter().all(|&id| self.sched.is_done(id)) {
            if !self.sched.progress(deadline)? {
                return Ok(None);
            }
        }
        if let [id] = handle.ids() {
            let one = OneBatch(self.sched.take_done(*id).expect("checked: done"));
            if let Some(out) = handle.assemble_one(&one) {
                // An apply_async result is one item, decoded: its frame's
                // buffer serves the next result (no allocation per round
                // trip).
                self.sched.recycle(one.0.frame);
                return Ok(Some(out));
            }
            return Ok(Some(handle.assemble(Batches(vec![one.0]))));
        }
        let batches = handle
            .ids()
            .iter()
            .map(|&id| self.sched.take_done(id).expect("checked: done"))
            .collect();
        Ok(Some(handle.assemble(Batches(batches))))
    }

    /// Whether `handle`'s work has all finished (its results are back, or
    /// were handed to callbacks), collecting what is back without waiting:
    /// Python's `AsyncResult.ready()`.
    pub fn ready<H: Handle>(&mut self, handle: &H) -> Result<bool> {
        if self.pending(handle) {
            self.sched.progress(Some(Instant::now()))?;
        }
        Ok(!self.pending(handle))
    }

    /// Wait until `handle`'s work has all finished, at most `timeout`
    /// (`None`: for ever): Python's `AsyncResult.wait(timeout)`. True when
    /// it has; its results then wait for [`Pool::get`], or went to the
    /// callbacks of [`Pool::apply_async_with`]. Callbacks of other tasks
    /// run meanwhile, as their results come back.
    pub fn wait<H: Handle>(
        &mut self,
        handle: &H,
        timeout: Option<std::time::Duration>,
    ) -> Result<bool> {
        let deadline = timeout.and_then(crate::process::deadline_after);
        while self.pending(handle) {
            if !self.sched.progress(deadline)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn pending<H: Handle>(&self, handle: &H) -> bool {
        handle.ids().iter().any(|&id| self.sched.is_pending(id))
    }
}

/// The results of [`Pool::imap`], in argument order, each as soon as it
/// and every one before it are back. Ends after the last item, or after
/// the first error of the pool itself (a worker that could not be
/// replaced, an interrupted wait). Dropping it early drops the results
/// still to come.
pub struct Imap<'p, R> {
    pub(crate) pool: &'p mut Pool,
    /// Batches not yet taken, in order.
    pub(crate) ids: VecDeque<u64>,
    pub(crate) current: Option<(Batch, usize)>,
    pub(crate) _result: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for Imap<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Imap({} batches to come)", self.ids.len())
    }
}

impl<R: Wire> Iterator for Imap<'_, R> {
    type Item = Result<std::result::Result<R, TaskError>>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((batch, i)) = &mut self.current {
                if *i < batch.count {
                    let item = batch.decode(*i);
                    *i += 1;
                    return Some(Ok(item));
                }
                let (done, _) = self.current.take().expect("checked: some");
                self.pool.sched.recycle(done.frame);
            }
            let id = self.ids.pop_front()?;
            match self.pool.sched.wait_for(id, None) {
                Ok(Some(batch)) => self.current = Some((batch, 0)),
                Ok(None) => unreachable!("no deadline"),
                Err(e) => {
                    self.forget_rest();
                    return Some(Err(e));
                }
            }
        }
    }
}

impl<R> Imap<'_, R> {
    fn forget_rest(&mut self) {
        for id in self.ids.drain(..) {
            self.pool.sched.forget(id);
        }
    }
}

impl<R> Drop for Imap<'_, R> {
    fn drop(&mut self) {
        self.forget_rest();
    }
}

/// The results of [`Pool::imap_unordered`] as they come back, each with
/// its argument's index: `(index, result)`. Python's `imap_unordered`
/// yields the results alone; the index says which argument each answers.
/// A batch of several items (chunksize > 1) comes back whole, its items in
/// order. Ends after the last item, or after the first error of the pool
/// itself. Dropping it early drops the results still to come.
pub struct ImapUnordered<'p, R> {
    pub(crate) pool: &'p mut Pool,
    /// Batches back and not yet handed out, in the order they came back.
    pub(crate) arrived: Rc<RefCell<VecDeque<Batch>>>,
    /// Batches not yet back.
    pub(crate) outstanding: usize,
    pub(crate) current: Option<(Batch, usize)>,
    pub(crate) _result: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for ImapUnordered<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ImapUnordered({} batches to come)",
            self.outstanding + self.arrived.borrow().len()
        )
    }
}

/// The callback that queues a batch for an [`ImapUnordered`].
pub(crate) fn queue_into(arrived: &Rc<RefCell<VecDeque<Batch>>>) -> Callback {
    let arrived = Rc::clone(arrived);
    Callback::new(move |batch| arrived.borrow_mut().push_back(batch))
}

impl<R: Wire> Iterator for ImapUnordered<'_, R> {
    type Item = Result<(usize, std::result::Result<R, TaskError>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((batch, i)) = &mut self.current {
                if *i < batch.count {
                    let item = (batch.first + *i, batch.decode(*i));
                    *i += 1;
                    return Some(Ok(item));
                }
                self.current = None;
            }
            let next = self.arrived.borrow_mut().pop_front();
            if let Some(batch) = next {
                self.outstanding -= 1;
                self.current = Some((batch, 0));
                continue;
            }
            if self.outstanding == 0 {
                return None;
            }
            if let Err(e) = self.pool.sched.progress(None) {
                // Nothing more will come: the batches still out are dropped
                // by their callbacks when they do.
                self.outstanding = 0;
                return Some(Err(e));
            }
        }
    }
}
