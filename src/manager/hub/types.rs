//! The hub's public types: who a peer is, what happens, what a get or a
//! put comes back with.

use std::fmt;
use std::time::Duration;

use crate::manager::python::pickle::Value;

/// Who is at the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The address it connected from.
    pub addr: String,
    /// The pid it reported (pk-manager workers do, once authenticated).
    pub pid: Option<u32>,
    /// Whether it speaks CPython's manager protocol.
    pub python: bool,
}

impl Peer {
    /// A peer known by its address only.
    pub fn at(addr: impl Into<String>, python: bool) -> Peer {
        Peer {
            addr: addr.into(),
            pid: None,
            python,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.pid, self.python) {
            (Some(pid), _) => write!(f, "{} (pid {pid})", self.addr),
            (None, true) => write!(f, "{} (python)", self.addr),
            (None, false) => f.write_str(&self.addr),
        }
    }
}

/// A result of the `i*i` lesson as the server recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The task's number, 1..=N.
    pub id: u64,
    /// Its input.
    pub n: i128,
    /// `n * n`, as the worker computed it.
    pub value: i128,
    /// The worker whose result was counted.
    pub by: Peer,
}

/// What happens on the server, in order, for the caller to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A worker proved it knows the key.
    Authenticated(Peer),
    /// A peer's proof was wrong (or it could not check ours); it was closed.
    Refused(Peer),
    /// A connection was closed because of an error; the reason is one line.
    Closed(Peer, String),
    /// A connection that had not authenticated was dropped to make room
    /// (too many at once) or because the server ran out of descriptors.
    Dropped(String, &'static str),
    /// accept(2) failed for lack of descriptors; the server waits before
    /// trying again instead of spinning.
    Backoff(String, Duration),
    /// The lesson handed a task to a worker.
    Assigned(Peer, u64),
    /// The lesson counted a result.
    Result(Outcome),
    /// A result for an item that was settled already: dropped.
    Late(Peer, u64),
    /// A CPython client's put, made after its lease on item `id` had run
    /// out and the item was settled by another: it settles nothing, but
    /// is stored all the same (the client was told it was put).
    LateKept(Peer, u64),
    /// A connection closed while it held an item: the item is back at the
    /// end of its queue.
    Requeued(Peer, u64),
    /// A connection was silent for the whole lease while it held an item:
    /// the item is back at the end of its queue.
    Expired(Peer, u64),
    /// An item lost its lease this many times (the last holder is the
    /// peer): it failed, and its failure result is on the named queue.
    Failed(Peer, u64, u32, String),
    /// A worker was told there is nothing left and left.
    Left(Peer),
    /// A client hung up holding nothing.
    Gone(Peer),
    /// Every result of the lesson is in.
    Finished,
}

/// How a get holds what it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Leased until settled (pk-manager clients; Python workers on the
    /// task queue).
    Lease,
    /// Leased, and the connection's earlier leases settled first: a Python
    /// client that gets again without a put between consumed what it had.
    LeaseAfterSettling,
    /// Taken for good (Python clients on other queues).
    Final,
}

/// Which item a put settles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// None: a plain put.
    Nothing,
    /// This one (pk-manager workers name it).
    Item(u64),
    /// The oldest item the connection holds, if any (Python workers, whose
    /// `put` names nothing).
    Oldest,
}

/// What a get found.
#[derive(Debug, Clone, PartialEq)]
pub enum Got {
    /// An item and its id.
    Item(u64, Value),
    /// Nothing within the wait.
    Empty,
    /// The queue is closed and drained.
    Done,
}

/// How a put ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// Added.
    Ok,
    /// It settles an item settled already; dropped.
    Stale,
    /// No room within the wait: nothing added, and what it settles is
    /// still held (a later put may settle it).
    Full,
}

/// A request that cannot be served, in one line (no such queue, a closed
/// queue, a wrong lesson result).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

/// A queue to create: its name and how many items it holds at most
/// (queued and out on lease together).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    /// The name.
    pub name: String,
    /// The bound.
    pub capacity: usize,
}
