//! The server's state: named bounded queues whose items are leased to the
//! connection that took them, the connections that hold them, and the
//! `i*i` lesson's results.
//!
//! An item taken by a get is *leased*: it stays counted against its queue
//! and belongs to that connection until the connection settles it (a put
//! that carries its result, or an ack), or until the connection closes or
//! stays silent for the lease — then it goes back to the end of its queue
//! for another worker, behind the items already waiting (the worker that
//! lost it may have died *of* it: the others are not held up behind it).
//! An item whose lease has been lost [`Hub::with_delivery_limit`] times is
//! not handed out again: it fails, and a failure result (`65 <item>`, as a
//! worker's for a task that cannot be run) goes on the dead-letter queue. A result that settles an item already settled
//! (a worker whose lease ran out came back late, after another worker's
//! result was counted) is dropped: every item is settled exactly once.
//!
//! Waits (a get on an empty queue, a put on a full one) release the lock
//! now and then to run the caller's `tick`, which sends keepalives and
//! notices a peer that hung up; nothing that can block on the network ever
//! runs under the lock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::mpsc::Sender;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::python::pickle::Value;
use crate::error::Result;

mod leases;
mod lesson;
mod types;

pub use types::{Event, Got, Hold, Outcome, Peer, Put, QueueSpec, Refusal, Settle};

/// A connection's number on this server.
pub type ConnId = u64;

/// How often a wait comes out from under the lock to run its tick.
const TICK: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct Queue {
    name: String,
    capacity: usize,
    pending: VecDeque<u64>,
    leased: usize,
    closed: bool,
}

impl Queue {
    fn len(&self) -> usize {
        self.pending.len() + self.leased
    }
}

#[derive(Debug)]
struct Entry {
    queue: usize,
    value: Value,
    holder: Option<ConnId>,
    /// How many times a lease on it was lost (its holder closed or fell
    /// silent).
    lost: u32,
}

#[derive(Debug)]
struct ConnRec {
    peer: Peer,
    last_heard: Instant,
    /// Items this connection took, oldest first (kept after a lease runs
    /// out, so a late result still finds what it settles).
    leases: VecDeque<u64>,
    asked: bool,
}

#[derive(Debug)]
struct Lesson {
    total: usize,
    results: BTreeMap<u64, Outcome>,
}

#[derive(Debug)]
struct State {
    queues: Vec<Queue>,
    items: HashMap<u64, Entry>,
    next_id: u64,
    conns: HashMap<ConnId, ConnRec>,
    next_conn: ConnId,
    lesson: Option<Lesson>,
    askers: usize,
    gate_open: bool,
}

/// The queues, their leases and the connections that hold them.
#[derive(Debug)]
pub struct Hub {
    st: Mutex<State>,
    changed: Condvar,
    events: Mutex<Sender<Event>>,
    lease: Duration,
    min_workers: usize,
    limit: Option<DeliveryLimit>,
}

/// Where items go that lost their lease too often.
#[derive(Debug, Clone, Copy)]
struct DeliveryLimit {
    /// Lost leases that make an item fail.
    max: u32,
    /// The queue its failure result goes on.
    dead_letters: usize,
    /// Results in CPython's form (a tuple) rather than pk-manager's bytes.
    python: bool,
}

impl Hub {
    /// Named queues, empty.
    pub fn new(
        queues: &[QueueSpec],
        lease: Duration,
        min_workers: usize,
        events: Sender<Event>,
    ) -> Hub {
        let queues = queues
            .iter()
            .map(|q| Queue {
                name: q.name.clone(),
                capacity: q.capacity,
                pending: VecDeque::new(),
                leased: 0,
                closed: false,
            })
            .collect();
        Hub {
            st: Mutex::new(State {
                queues,
                items: HashMap::new(),
                next_id: 1,
                conns: HashMap::new(),
                next_conn: 1,
                lesson: None,
                askers: 0,
                gate_open: min_workers <= 1,
            }),
            changed: Condvar::new(),
            events: Mutex::new(events),
            lease,
            min_workers,
            limit: None,
        }
    }

    /// Give up on an item whose lease has been lost `max` times (its
    /// holders died, disconnected or fell silent: a task that crashes its
    /// worker would otherwise go from worker to worker for ever): it is
    /// settled, and a failure result goes on queue `dead_letters` —
    /// `65 <item>` (newlines and NULs shown as `\n`, `\0`), or with
    /// `python` the tuple `(item, 65, '')`, as a worker reports a task it
    /// cannot run. The result is added even to a full queue (the failed
    /// item stops counting against its own). `max` 0: no limit (the
    /// default).
    #[must_use]
    pub fn with_delivery_limit(mut self, max: u32, dead_letters: usize, python: bool) -> Hub {
        self.limit =
            (max > 0 && dead_letters < self.lock().queues.len()).then_some(DeliveryLimit {
                max,
                dead_letters,
                python,
            });
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a connection thread panicked (a bug); every
        // update is one step under the lock, so the state is consistent.
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, ev: Event) {
        let tx = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let _ = tx.send(ev);
    }

    /// Report an event that happened outside the hub (a handshake, a
    /// dropped connection).
    pub fn report(&self, ev: Event) {
        self.emit(ev);
    }

    /// The lease.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// The index of queue `name`.
    pub fn queue(&self, name: &str) -> Result<usize, Refusal> {
        self.lock()
            .queues
            .iter()
            .position(|q| q.name == name)
            .ok_or_else(|| Refusal(format!("no queue named '{name}' on this server")))
    }

    /// The queue names, in order.
    pub fn queue_names(&self) -> Vec<String> {
        self.lock().queues.iter().map(|q| q.name.clone()).collect()
    }

    /// (queued, out on lease, capacity) of queue `q`.
    pub fn sizes(&self, q: usize) -> (usize, usize, usize) {
        let st = self.lock();
        let q = &st.queues[q];
        (q.pending.len(), q.leased, q.capacity)
    }

    /// Whether the lesson (if any) has every result.
    pub fn finished(&self) -> bool {
        Self::done(&self.lock())
    }

    fn done(st: &State) -> bool {
        st.lesson
            .as_ref()
            .is_some_and(|l| l.results.len() == l.total)
    }

    /// The lesson's results so far, by task id.
    pub fn results(&self) -> Vec<Outcome> {
        self.lock()
            .lesson
            .as_ref()
            .map(|l| l.results.values().cloned().collect())
            .unwrap_or_default()
    }

    /// How many connections are registered (authenticated and serving).
    pub fn connected(&self) -> usize {
        self.lock().conns.len()
    }

    /// Wait until `cond` no longer holds or `timeout` passes.
    pub fn wait_while(&self, timeout: Duration, mut cond: impl FnMut(&Hub) -> bool) {
        let deadline = crate::process::deadline_after(timeout);
        loop {
            if !cond(self) {
                return;
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => TICK,
            };
            if left.is_zero() {
                return;
            }
            let st = self.lock();
            let _ = self.changed.wait_timeout(st, left.min(TICK));
        }
    }

    /// Wait on the condition variable for at most `slice`.
    fn nap<'a>(&self, st: MutexGuard<'a, State>, slice: Duration) -> MutexGuard<'a, State> {
        self.changed
            .wait_timeout(st, slice)
            .unwrap_or_else(|p| p.into_inner())
            .0
    }

    /// Take the next item of queue `q`, waiting up to `wait` (`None`: no
    /// limit). `tick` runs about every 100 ms of waiting, without the lock;
    /// its error ends the wait. Queue 0 waits for `min_workers` live
    /// askers before it hands out anything.
    pub fn get(
        &self,
        conn: ConnId,
        q: usize,
        wait: Option<Duration>,
        hold: Hold,
        tick: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Got> {
        let deadline = wait.and_then(crate::process::deadline_after);
        let mut st = self.lock();
        if hold == Hold::LeaseAfterSettling {
            let had: Vec<u64> = st
                .conns
                .get_mut(&conn)
                .map(|c| c.leases.drain(..).collect())
                .unwrap_or_default();
            for id in had {
                Self::settle(&mut st, id);
            }
        }
        if q == 0 {
            if let Some(c) = st.conns.get_mut(&conn) {
                if !c.asked {
                    c.asked = true;
                    st.askers += 1;
                    if st.askers >= self.min_workers {
                        st.gate_open = true;
                    }
                    self.changed.notify_all();
                }
            }
        }
        loop {
            let mut since_tick = Instant::now();
            loop {
                if q != 0 || st.gate_open {
                    if let Some(id) = st.queues[q].pending.pop_front() {
                        return Ok(self.take(&mut st, conn, q, id, hold));
                    }
                }
                let queue = &st.queues[q];
                if queue.closed && queue.len() == 0 {
                    return Ok(Got::Done);
                }
                let now = Instant::now();
                let left = match deadline {
                    Some(d) if d <= now => return Ok(Got::Empty),
                    Some(d) => d - now,
                    None => TICK,
                };
                st = self.nap(st, left.min(TICK));
                if since_tick.elapsed() >= TICK {
                    since_tick = Instant::now();
                    break;
                }
            }
            drop(st);
            tick()?;
            st = self.lock();
        }
    }

    /// Hand item `id`, just popped from queue `q`, to `conn`.
    fn take(&self, st: &mut State, conn: ConnId, q: usize, id: u64, hold: Hold) -> Got {
        let value = if hold == Hold::Final {
            st.items
                .remove(&id)
                .expect("a queued item has an entry")
                .value
        } else {
            st.queues[q].leased += 1;
            let e = st.items.get_mut(&id).expect("a queued item has an entry");
            e.holder = Some(conn);
            let v = e.value.clone();
            if let Some(c) = st.conns.get_mut(&conn) {
                c.leases.push_back(id);
                c.last_heard = Instant::now();
            }
            v
        };
        self.changed.notify_all();
        if st.lesson.is_some() && q == 0 {
            if let Some(c) = st.conns.get(&conn) {
                self.emit(Event::Assigned(c.peer.clone(), id));
            }
        }
        Got::Item(id, value)
    }

    /// Add `value` to queue `q`, settling what `settle` names in the same
    /// step, waiting up to `wait` for room. The item stays leased to its
    /// holder until there is room: settling and adding happen together
    /// under the lock, so a put that ends without adding (no room within
    /// `wait`, a closed queue, a `tick` error when the peer is gone) leaves
    /// the item held, to be settled by a later put or handed back when the
    /// connection closes or falls silent. While it waits, the connection
    /// counts as heard: it is not silent, it is waiting for us. In the
    /// lesson, a put on `results` is a result: it must settle a task and
    /// be right.
    pub fn put(
        &self,
        conn: ConnId,
        q: usize,
        value: Value,
        settle: Settle,
        wait: Option<Duration>,
        tick: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Result<Put, Refusal>> {
        let deadline = wait.and_then(crate::process::deadline_after);
        let mut st = self.lock();
        // A CPython client's put whose lease had run out (see below).
        let mut late = None;
        let mut target = match settle {
            Settle::Nothing => None,
            Settle::Item(id) => Some(id),
            Settle::Oldest => st.conns.get(&conn).and_then(|c| c.leases.front().copied()),
        };
        if st.lesson.is_some() && q == 1 {
            return Ok(self.lesson_result(&mut st, conn, target, &value));
        }
        loop {
            let mut since_tick = Instant::now();
            loop {
                if st.queues[q].closed {
                    return Ok(Err(Refusal(format!(
                        "queue '{}' is closed",
                        st.queues[q].name
                    ))));
                }
                // The item it settles, if that is still to be settled.
                let settles = match target {
                    Some(id) => match st.items.get(&id) {
                        Some(e) => Some((id, e.queue)),
                        None if settle == Settle::Oldest => {
                            // A CPython client's put, which was never
                            // told of leases: it is a put all the same,
                            // and goes in (dropped, it would be lost
                            // while the client heard it was put).
                            Self::forget(&mut st, conn, id);
                            late = Some(id);
                            target = None;
                            None
                        }
                        None => {
                            // Settled already (by a worker that took it
                            // over when this one's lease ran out).
                            Self::forget(&mut st, conn, id);
                            if let Some(c) = st.conns.get(&conn) {
                                self.emit(Event::Late(c.peer.clone(), id));
                            }
                            self.changed.notify_all();
                            return Ok(Ok(Put::Stale));
                        }
                    },
                    None => None,
                };
                // Settling an item of this very queue makes room for it.
                let freed = usize::from(settles.is_some_and(|(_, from)| from == q));
                let queue = &st.queues[q];
                if queue.len() - freed < queue.capacity {
                    if let Some((id, _)) = settles {
                        Self::forget(&mut st, conn, id);
                        Self::settle(&mut st, id);
                    }
                    Self::push(&mut st, q, value);
                    if let (Some(id), Some(c)) = (late, st.conns.get(&conn)) {
                        self.emit(Event::LateKept(c.peer.clone(), id));
                    }
                    self.changed.notify_all();
                    return Ok(Ok(Put::Ok));
                }
                let now = Instant::now();
                let left = match deadline {
                    Some(d) if d <= now => return Ok(Ok(Put::Full)),
                    Some(d) => d - now,
                    None => TICK,
                };
                st = self.nap(st, left.min(TICK));
                if since_tick.elapsed() >= TICK {
                    since_tick = Instant::now();
                    break;
                }
            }
            drop(st);
            tick()?;
            st = self.lock();
            if let Some(c) = st.conns.get_mut(&conn) {
                c.last_heard = Instant::now();
            }
        }
    }

    /// `conn` no longer holds item `id`.
    fn forget(st: &mut State, conn: ConnId, id: u64) {
        if let Some(c) = st.conns.get_mut(&conn) {
            c.leases.retain(|&l| l != id);
        }
    }

    fn push(st: &mut State, q: usize, value: Value) {
        let id = st.next_id;
        st.next_id += 1;
        st.items.insert(
            id,
            Entry {
                queue: q,
                value,
                holder: None,
                lost: 0,
            },
        );
        st.queues[q].pending.push_back(id);
    }

    /// Settle item `id` without a result (a consumer has it).
    pub fn ack(&self, conn: ConnId, id: u64) -> Put {
        let mut st = self.lock();
        Self::forget(&mut st, conn, id);
        let ok = Self::settle(&mut st, id);
        drop(st);
        self.changed.notify_all();
        if ok { Put::Ok } else { Put::Stale }
    }

    /// Close queue `q`: no more puts; gets see `Done` once it is drained.
    pub fn close(&self, q: usize) {
        self.lock().queues[q].closed = true;
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests;
