//! A bounded multi-producer multi-consumer queue of byte messages in shared
//! memory: `multiprocessing.Queue` without its feeder thread, either shared
//! across fork ([`Queue::new`]) or named in `/dev/shm` for independent
//! processes ([`Queue::create`], [`Queue::open`], [`unlink`]).
//!
//! ## Crash safety
//!
//! Any participant may be SIGKILLed at any instant — inside or outside a
//! lock, in the middle of a copy — and no other participant's message is
//! lost, duplicated or stranded, the capacity never shrinks, and no later
//! call hangs. The design, step by step:
//!
//! ```text
//! put: lock(put) [owner died? mark consistent]; full? -> unlock, sleep;
//!      copy the message into ring[head]; publish head+1; unlock(put)
//! get: lock(get) [owner died? mark consistent]; empty? -> unlock, sleep;
//!      copy ring[tail] out; publish tail+1; unlock(get)
//! ```
//!
//! - The two locks are words of the shared memory that name their holder
//!   (thread id and start time): a waiter that finds the holder certainly
//!   dead (gone, a zombie, or its id reused) takes the lock over instead of
//!   waiting for good (see `lock.rs`; no pointer is kept in the shared
//!   memory, so no process that writes the file can make another write
//!   elsewhere). Where death cannot be told — a holder or a waiter in
//!   another pid namespace than the queue's, or without /proc — the lock
//!   is waited for: a holder that dies there leaves it held, and the calls
//!   with a timeout end with TimedOut.
//! - All the state is two 32-bit counters, `head` (messages ever put) and
//!   `tail` (messages ever taken), each changed by one atomic store under
//!   its lock. Nothing else needs repair after a death: a producer killed
//!   before its store leaves a half-written slot that is not yet part of the
//!   queue (its message was not put), one killed after it has put its
//!   message; a consumer killed before its store leaves the message for the
//!   next consumer, one killed after it has taken it.
//! - There are no counting semaphores to get out of step with the ring:
//!   free slots are `capacity - (head - tail)` and messages `head - tail`,
//!   computed from the counters, so no count can be lost between a copy
//!   and a post.
//! - Sleepers sleep on the counters themselves (futex(2) on `head` for
//!   consumers, on `tail` for producers). A process about to sleep raises a
//!   flag under the *other* side's lock, so the side that publishes sees it
//!   under its own lock, and then publishes and wakes in one system call
//!   (FUTEX_WAKE_OP adds 1 and wakes every sleeper atomically): no instant
//!   exists at which the counter has moved but a sleeper will not be woken.
//!   Without a sleeper the publish is a plain atomic store, no system call.
//!
//! `get` is **at-most-once**: a message belongs to the consumer from the
//! moment its `tail` store lands. A consumer killed after that, before it
//! did anything with the message (printed it, say), has lost it; one killed
//! before it leaves the message in the queue. Every message is delivered
//! once or, if its consumer died holding it, not at all — never twice.
//! `put` is atomic: a producer killed during a put has put its message
//! whole, or not at all. Messages from one producer come out in the order
//! it put them.
//!
//! Before sleeping, a wait spins (100 checks) then yields the CPU (50
//! times) watching the counter, without a lock and without a system call:
//! with one producer and one consumer on different CPUs, neither side
//! usually sleeps, and no message costs a system call.
//!
//! `put` copies the message into the shared ring before it returns, so a
//! child that exits right after `put` has already delivered its message,
//! and joining it never waits for a buffer to drain (the well-known
//! `multiprocessing.Queue` trap, where a feeder thread still holds data).
//!
//! [`Queue::qsize`], [`Queue::full`] and [`Queue::empty`] read head and tail
//! holding both locks, so they are exact at that instant.
//!
//! ## Named queues
//!
//! A named queue is a file in `/dev/shm` (mode 0600), created whole or not
//! at all and opened only when it is ours (see [`crate::shm`]): a header
//! page (magic, version, sizes, the pid namespace it was made in, the two
//! locks), a page of counters, then
//! the ring of [`slots`]`(capacity)` slots of `4 + max_message` bytes
//! rounded up to 8 (a slot is the message length, u32, then its bytes). A
//! file whose header or counters do not match is refused
//! ([`crate::ErrorKind::BadData`]). If another process truncates it, calls
//! fail with BadData instead of SIGBUS, and a call asleep on it wakes within
//! a second to say so. A queue made in another pid namespace (a container
//! that shares this `/dev/shm`) is refused: its locks name holders by pids
//! this process cannot check.
//!
//! ## The ring is a power of two
//!
//! Message `n` (counting from 0 since the queue was made, modulo 2^32)
//! lives in slot `n mod slots`. The counters wrap at 2^32, so that slot
//! index runs on without a jump across the wrap only when `slots` divides
//! 2^32: the ring has `capacity` rounded up to a power of two slots, and
//! `capacity` alone decides when the queue is full. A capacity of 100 takes
//! 128 slots of memory; a power of two takes exactly its own.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use nix::errno::Errno;

use crate::error::{Context, Error, Result};
use crate::sem::Deadline;
use crate::shm::anon_shared;
use crate::shm::object;
use crate::sys::sem::futex;
use crate::sys::shm::{Mapping, map_shared_len};

mod lock;
use lock::Locked;

/// The longest single sleep of a wait (see [`Queue::wait_until_moved`]).
const SLICE: Duration = Duration::from_secs(1);
/// How many times a wait checks the counter, spinning, before it yields.
const SPINS: u32 = 100;
/// How many times it then yields the CPU (sched_yield) and checks before
/// it sleeps in futex(2).
const YIELDS: u32 = 50;

/// The page size the layout assumes (the header and the counters each
/// start a 4 KiB page; larger pages only make them share one).
const PAGE: usize = 4096;

// Layout: the header page.
const MAGIC: usize = 0; // [u8; 8]
const VERSION: usize = 8; // u32
const CAPACITY: usize = 16; // u64
const MAX_MESSAGE: usize = 24; // u64
const STRIDE: usize = 32; // u64
const SIZE: usize = 40; // u64: the whole object, bytes
const PIDNS: usize = 48; // u64: the pid namespace it was made in (0: unknown)
const PUT_LOCK: usize = 64; // u64 lock word: producers (head)
const GET_LOCK: usize = 128; // u64 lock word: consumers (tail)
// The counters page: the producers' line, then the consumers' line.
const HEAD: usize = PAGE; // u32: messages ever put (wrapping); futex
const GET_WAITING: usize = PAGE + 4; // u32: a consumer sleeps on HEAD
const TAIL: usize = PAGE + 64; // u32: messages ever taken (wrapping); futex
const PUT_WAITING: usize = PAGE + 68; // u32: a producer sleeps on TAIL
/// Where the ring starts, in bytes.
pub const RING: usize = 2 * PAGE;
const LEN: usize = 4; // each slot starts with the message length, u32

const MAGIC_BYTES: [u8; 8] = *b"pkqueue\0";
/// Format 3: the locks are lock words (format 2 had robust pthread
/// mutexes); the ring has [`slots`] slots (format 1 had `capacity`, which
/// lost and duplicated messages when the counters wrapped).
const FORMAT: u32 = 3;

/// The largest capacity (the 32-bit counters wrap safely far above it).
pub const MAX_CAPACITY: usize = 1 << 24;
/// The largest message.
pub const MAX_MESSAGE_SIZE: usize = 1 << 20;
/// The largest ring, in bytes.
pub const MAX_RING_BYTES: usize = 1 << 30;

/// The byte size of one slot for messages of up to `max_message` bytes
/// (`usize::MAX` for sizes no memory could hold).
pub fn stride(max_message: usize) -> usize {
    (LEN.saturating_add(max_message))
        .checked_next_multiple_of(8)
        .unwrap_or(usize::MAX)
}

/// How many slots the ring of a queue of `capacity` has: `capacity`
/// rounded up to a power of two (see the module docs; `usize::MAX` past
/// the largest power of two).
pub fn slots(capacity: usize) -> usize {
    capacity.checked_next_power_of_two().unwrap_or(usize::MAX)
}

/// The largest capacity whose ring of messages up to `max_message` bytes
/// fits [`MAX_RING_BYTES`] (at most [`MAX_CAPACITY`]).
pub fn max_capacity(max_message: usize) -> usize {
    let fit = MAX_RING_BYTES / stride(max_message);
    // The largest power of two not above `fit`: every capacity up to it
    // rounds up to a ring that fits.
    let pow = if fit == 0 { 0 } else { 1 << fit.ilog2() };
    pow.min(MAX_CAPACITY)
}

/// A bounded MPMC queue of byte messages in shared memory.
#[derive(Debug)]
pub struct Queue {
    map: Mapping,
    capacity: u32,
    /// Slots in the ring, less one: a message's slot is its number masked.
    mask: u32,
    max_message: usize,
    stride: usize,
    name: Option<String>,
    /// The pid namespace it was made in (0: unknown), as its header says.
    pidns: u64,
    /// A named queue's file, for the size check of a waiter that wakes
    /// from a slice (a truncation that spares the pages it touches raises
    /// no SIGBUS for it to notice).
    file: Option<std::fs::File>,
    // What this process last saw of the other side's counter: a lower
    // bound (the counters only grow), so deciding "full" or "empty" from it
    // is re-checked against the real counter before it counts. Every
    // value here came from an Acquire load of the counter (in `attach`, or
    // under the lock of the side that reads it), so the slot bytes it
    // vouches for are seen as the other side left them.
    seen_tail: AtomicU32,
    seen_head: AtomicU32,
}

fn check_sizes(capacity: usize, max_message: usize) -> Result<usize> {
    if capacity == 0 || capacity > MAX_CAPACITY {
        return Err(Error::invalid(
            "capacity",
            format!("{capacity} is not in 1..={MAX_CAPACITY}"),
        ));
    }
    if max_message > MAX_MESSAGE_SIZE {
        return Err(Error::invalid(
            "message size",
            format!("{max_message} is more than the limit of {MAX_MESSAGE_SIZE}"),
        ));
    }
    slots(capacity)
        .checked_mul(stride(max_message))
        .filter(|&b| b <= MAX_RING_BYTES)
        .map(|ring| RING + ring)
        .ok_or_else(|| {
            Error::invalid(
                "capacity",
                format!(
                    "{capacity} messages of {max_message} bytes take a ring over {MAX_RING_BYTES} \
                     bytes (at most {} at this size)",
                    max_capacity(max_message)
                ),
            )
        })
}

/// Lay out a fresh queue in `map` (all zeroes, `size` bytes).
fn init(map: &Mapping, capacity: usize, max_message: usize, size: usize) -> Result<()> {
    map.write::<u32>(VERSION, FORMAT);
    map.write::<u64>(CAPACITY, capacity as u64);
    map.write::<u64>(MAX_MESSAGE, max_message as u64);
    map.write::<u64>(STRIDE, stride(max_message) as u64);
    map.write::<u64>(SIZE, size as u64);
    map.write::<u64>(PIDNS, lock::pid_namespace());
    // The magic last: an object with a magic is a complete queue.
    map.atomic::<AtomicU64>(MAGIC)
        .store(u64::from_ne_bytes(MAGIC_BYTES), Ordering::Release);
    Ok(())
}

/// The fields of a queue's header page that say what the file is.
struct Header {
    magic: u64,
    format: u32,
    capacity: u64,
    max_message: u64,
    stride: u64,
    size: u64,
}

impl Header {
    /// The header in the first bytes of a queue's file.
    fn parse(first: &[u8; PUT_LOCK]) -> Header {
        let field = |off: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&first[off..off + 8]);
            u64::from_ne_bytes(b)
        };
        let mut format = [0u8; 4];
        format.copy_from_slice(&first[VERSION..VERSION + 4]);
        Header {
            magic: field(MAGIC),
            format: u32::from_ne_bytes(format),
            capacity: field(CAPACITY),
            max_message: field(MAX_MESSAGE),
            stride: field(STRIDE),
            size: field(SIZE),
        }
    }

    /// Why a file of `size` bytes with this header is not a queue.
    fn check(&self, size: usize) -> std::result::Result<(), String> {
        if self.magic != u64::from_ne_bytes(MAGIC_BYTES) {
            return Err("not a queue (no pkqueue header)".into());
        }
        if self.format != FORMAT {
            return Err(format!(
                "a queue of format {}, not {FORMAT}: unlink it and create it again",
                self.format
            ));
        }
        let (capacity, max) = (self.capacity, self.max_message);
        let ok = usize::try_from(capacity)
            .ok()
            .zip(usize::try_from(max).ok())
            .and_then(|(c, m)| check_sizes(c, m).ok().map(|need| (m, need)))
            .is_some_and(|(m, need)| {
                need == size && self.size == size as u64 && self.stride == stride(m) as u64
            });
        if !ok {
            return Err(format!(
                "a header (capacity {capacity}, max size {max}) that does not match its {size} bytes"
            ));
        }
        Ok(())
    }
}

impl Queue {
    /// A queue of `capacity` messages (1 to [`MAX_CAPACITY`]), each up to
    /// `max_message` bytes (0 to [`MAX_MESSAGE_SIZE`]), in a memfd mapping
    /// that children forked afterwards share.
    pub fn new(capacity: usize, max_message: usize) -> Result<Queue> {
        let size = check_sizes(capacity, max_message)?;
        let map = anon_shared(size)?;
        init(&map, capacity, max_message, size)?;
        Ok(Self::attach(map, None, None))
    }

    /// Create the named queue `name` (`/jobs`) in `/dev/shm`, mode 0600,
    /// whole or not at all; [`crate::ErrorKind::AlreadyExists`] if the name is
    /// taken.
    pub fn create(name: &str, capacity: usize, max_message: usize) -> Result<Queue> {
        let size = check_sizes(capacity, max_message)?;
        let mut made = None;
        object::create("", name, size as u64, |file| {
            let map = Mapping::new_guarded(map_shared_len(file, size).ctx("mmap", name)?);
            init(&map, capacity, max_message, size)?;
            made = Some((map, file.try_clone().ctx("dup", name)?));
            Ok(())
        })?;
        let (map, file) = made.expect("init ran");
        Ok(Self::attach(map, Some(name), Some(file)))
    }

    /// Open the named queue `name`, or create it with `capacity` and
    /// `max_message` if there is none; `true` when this call created it.
    /// A name that another process unlinks between the two (or creates
    /// between them) is tried again, so the call never fails because the
    /// name came or went under it. An existing queue keeps its own sizes:
    /// compare [`Queue::capacity`] and [`Queue::max_message`].
    pub fn open_or_create(
        name: &str,
        capacity: usize,
        max_message: usize,
    ) -> Result<(Queue, bool)> {
        object::open_or_create(
            || Queue::create(name, capacity, max_message),
            || Queue::open(name),
        )
    }

    /// Open the existing named queue `name`: ours (owner, mode), and a
    /// header that matches its size, or [`crate::ErrorKind::BadData`].
    pub fn open(name: &str) -> Result<Queue> {
        let (file, size) = object::open("", name)?;
        let bad = |why: String| Error::data("queue", name, why);
        if size < RING as u64 {
            return Err(bad(format!("{size} bytes is too small to be a queue")));
        }
        let size = usize::try_from(size).map_err(|_| bad(format!("{size} bytes is too large")))?;
        // The header first, read with pread(2): a file that is not a
        // queue of its size is refused before it is mapped, however large
        // it is (a sparse petabyte failed the mmap with ENOMEM, 71).
        let mut first = [0u8; PUT_LOCK];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut first, 0).map_err(|e| {
            match e.kind() {
                std::io::ErrorKind::UnexpectedEof => {
                    bad("its file was truncated by another process".into())
                }
                _ => Error::io("read", name, &e),
            }
        })?;
        Header::parse(&first).check(size).map_err(bad)?;
        let map = Mapping::new_guarded(map_shared_len(&file, size).ctx("mmap", name)?);
        // Again as mapped (the file may have changed meanwhile), the magic
        // first: a queue's other fields are stored before it.
        let magic = map.atomic::<AtomicU64>(MAGIC).load(Ordering::Acquire);
        map.read_bytes(0, &mut first);
        let header = Header {
            magic,
            ..Header::parse(&first)
        };
        header.check(size).map_err(bad)?;
        let capacity = header.capacity;
        let (made_in, here) = (map.read::<u64>(PIDNS), lock::pid_namespace());
        if made_in != 0 && here != 0 && made_in != here {
            return Err(bad(
                "made in another pid namespace: the holders of its locks cannot be checked from here"
                    .into(),
            ));
        }
        for off in [PUT_LOCK, GET_LOCK] {
            let word = map.atomic::<AtomicU64>(off).load(Ordering::Relaxed);
            if !lock::plausible(word) {
                return Err(bad(format!(
                    "a lock word ({word:#x}) that is not a queue's"
                )));
            }
        }
        if let Some((head, tail)) = overfull(&map, capacity) {
            return Err(bad(format!(
                "counters (put {head}, taken {tail}) that say it holds more than its capacity"
            )));
        }
        Ok(Self::attach(map, Some(name), Some(file)))
    }

    fn attach(map: Mapping, name: Option<&str>, file: Option<std::fs::File>) -> Queue {
        let capacity = map.read::<u64>(CAPACITY) as u32;
        let max_message = map.read::<u64>(MAX_MESSAGE) as usize;
        let pidns = map.read::<u64>(PIDNS);
        lock::prepare();
        // Acquire: a get trusts a head it has seen without loading it
        // again and reads the messages below it; a put trusts a tail and
        // overwrites the slots of the messages below it. Either view must
        // order those reads or writes after what the other side did to
        // the slots before the Release store of its counter: on arm64 a
        // Relaxed load does not.
        let seen = |off| map.atomic::<AtomicU32>(off).load(Ordering::Acquire);
        let (seen_tail, seen_head) = (seen(TAIL), seen(HEAD));
        Queue {
            capacity,
            mask: (slots(capacity as usize) - 1) as u32,
            max_message,
            stride: stride(max_message),
            seen_tail: AtomicU32::new(seen_tail),
            seen_head: AtomicU32::new(seen_head),
            map,
            name: name.map(str::to_string),
            pidns,
            file,
        }
    }

    /// How many messages it holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// The longest message it takes.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// The name of a named queue.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn what(&self) -> &str {
        self.name.as_deref().unwrap_or("queue")
    }

    /// Whether another process truncated this named queue's file under us
    /// (every call fails from then on).
    pub fn truncated(&self) -> bool {
        self.map.truncated()
    }

    fn intact(&self) -> Result<()> {
        if self.map.truncated() {
            return Err(self.truncated_error());
        }
        Ok(())
    }

    fn truncated_error(&self) -> Error {
        Error::data(
            "queue",
            self.what(),
            "its file was truncated by another process",
        )
    }

    /// Whether the named queue's file is now smaller than its mapping
    /// (truncated by another process, perhaps sparing the pages this
    /// process touches). One fstat(2): asked only where a wait wakes up.
    fn shrunk(&self) -> bool {
        self.file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .is_some_and(|m| m.len() < self.map.len() as u64)
    }

    fn counter(&self, off: usize) -> &AtomicU32 {
        self.map.atomic(off)
    }

    /// Take lock `m`, waiting until `deadline`, but never less than
    /// [`crate::sem::LOCK_GRACE`]: a lock is held for the time of a copy (longer only
    /// when its holder is preempted), so one that stays held that long has
    /// a holder that is stopped (^Z, a debugger, a frozen cgroup) or stuck,
    /// and the caller's timeout ends the wait: an error of kind
    /// [`crate::ErrorKind::TimedOut`]. Without a deadline it waits for ever.
    fn lock(&self, off: usize, what: &str, deadline: Deadline) -> Result<Held<'_>> {
        let word = self.map.atomic::<AtomicU64>(off);
        match lock::lock(word, self.pidns, deadline.for_lock()?) {
            // The last holder died holding it. Its one change to the state
            // (a counter store) is atomic, so there is nothing to undo.
            Ok((Locked::Clean | Locked::OwnerDied, token)) => Ok(Held(word, token)),
            Err(Errno::ETIMEDOUT) => Err(Error::new(
                crate::ErrorKind::TimedOut,
                "lock",
                self.what(),
                format!("another process held the {what} past the timeout (is it stopped?)"),
            )),
            Err(e) => Err(Error::sys("futex", what, e)),
        }
    }

    fn slot(&self, n: u32) -> usize {
        RING + (n & self.mask) as usize * self.stride
    }

    /// Publish a new value of the counter at `off` (one more than now): a
    /// plain store, or add-and-wake in one system call when the flag at
    /// `waiting` says someone sleeps on it. Called with the counter's lock
    /// held.
    fn publish(&self, off: usize, waiting: usize, now: u32) -> Result<()> {
        let flag = self.counter(waiting);
        if flag.load(Ordering::Relaxed) != 0 {
            futex::add_one_and_wake_all(self.counter(off))
                .map_err(|e| Error::sys("futex", self.what(), e))?;
            flag.store(0, Ordering::Relaxed);
        } else {
            self.counter(off)
                .store(now.wrapping_add(1), Ordering::Release);
        }
        Ok(())
    }

    /// Copy `msg` and its length into the slot at `off`, the slot ours
    /// (the put lock held, the slot not yet published). A short message
    /// goes in with its length as whole 8-byte words, zero-padded to the
    /// next word inside the slot: a byte copy that starts or ends inside
    /// a word splices those bytes in with a compare-and-swap each, which
    /// cost a tenth of the messages a second for 16-byte messages. A long
    /// one takes the string copy, which a staging copy would only slow.
    fn fill(&self, off: usize, msg: &[u8]) {
        const SHORT: usize = 256;
        if LEN + msg.len() <= SHORT {
            let mut staged = [0u8; SHORT];
            staged[..LEN].copy_from_slice(&(msg.len() as u32).to_ne_bytes());
            staged[LEN..LEN + msg.len()].copy_from_slice(msg);
            // Within the slot: its stride is LEN + max_message rounded up to 8.
            let whole = (LEN + msg.len()).next_multiple_of(8);
            self.map.write_bytes(off, &staged[..whole]);
        } else {
            self.map.write::<u32>(off, msg.len() as u32);
            self.map.write_bulk(off + LEN, msg);
        }
    }

    /// Put `msg` before `deadline`; `false` when it passed with the queue
    /// still full.
    pub fn put_until(&self, msg: &[u8], deadline: Deadline) -> Result<bool> {
        if msg.len() > self.max_message {
            return Err(Error::invalid(
                "message",
                format!(
                    "{} bytes is more than this queue's limit of {}",
                    msg.len(),
                    self.max_message
                ),
            ));
        }
        loop {
            self.intact()?;
            let held = self.lock(PUT_LOCK, "queue put lock", deadline)?;
            let head = self.counter(HEAD).load(Ordering::Relaxed);
            let mut tail = self.seen_tail.load(Ordering::Relaxed);
            // A stale tail only makes the queue look fuller (the real one
            // is further on), so a view that shows room is a true one,
            // unless it is some 2^32 messages old.
            if head.wrapping_sub(tail) >= self.capacity {
                tail = self.counter(TAIL).load(Ordering::Acquire);
                self.seen_tail.store(tail, Ordering::Relaxed);
            }
            if head.wrapping_sub(tail) < self.capacity {
                self.fill(self.slot(head), msg);
                let r = self.publish(HEAD, GET_WAITING, head);
                drop(held);
                r?;
                self.intact()?;
                return Ok(true);
            }
            drop(held);
            if !self.wait_until_moved(TAIL, tail, deadline)? {
                return Ok(false);
            }
        }
    }

    /// Wait until the counter at `off` (TAIL for a producer, HEAD for a
    /// consumer) is no longer `seen`, or the deadline passes (`false`).
    /// `seen` is the value the caller found the queue full (or empty) at:
    /// while the counter still holds it, the queue still is.
    fn wait_until_moved(&self, off: usize, seen: u32, deadline: Deadline) -> Result<bool> {
        if deadline == Deadline::Now {
            return Ok(false);
        }
        let word = self.counter(off);
        for i in 0..SPINS + YIELDS {
            if word.load(Ordering::Acquire) != seen {
                return Ok(true);
            }
            if i < SPINS {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        // Raise the flag under the lock of the side that moves the counter,
        // so its next publish sees the flag or we see its publish.
        let (lock, what, waiting) = if off == TAIL {
            (GET_LOCK, "queue get lock", PUT_WAITING)
        } else {
            (PUT_LOCK, "queue put lock", GET_WAITING)
        };
        let held = self.lock(lock, what, deadline)?;
        let now = word.load(Ordering::Relaxed);
        // Still full (or empty) exactly when the counter has not moved.
        // Not `head - tail >= capacity` from the head the producer saw:
        // while it was off the CPU, consumers may have taken past that
        // head, the difference wraps, the queue looks full for ever, and
        // the producer sleeps on a counter nobody will move again (seen
        // under load: four producers, two consumers, all asleep on an
        // empty queue).
        let still = now == seen;
        if still {
            self.counter(waiting).store(1, Ordering::Relaxed);
        }
        drop(held);
        if !still {
            return Ok(true);
        }
        // Sleep a second at most: a process that truncates the file wakes
        // no one (the counter's page is gone), so a sleeper looks again
        // each second, and the caller's loop finds the truncation.
        let (at, sliced) = match (deadline, Deadline::after(Some(SLICE))?) {
            (Deadline::At(t), Deadline::At(slice)) if t <= slice => (Some(t), false),
            (_, Deadline::At(slice)) => (Some(slice), true),
            (Deadline::At(t), _) => (Some(t), false),
            _ => (None, false),
        };
        match futex::wait(word, now, at) {
            Ok(()) | Err(Errno::EAGAIN) | Err(Errno::EINTR) => Ok(true),
            // The slice is over: the caller checks the file and looks
            // again. A truncation that left the pages a sleeper touches
            // raised no SIGBUS: the file's size tells.
            Err(Errno::ETIMEDOUT) if sliced && self.shrunk() => Err(self.truncated_error()),
            Err(Errno::ETIMEDOUT) if sliced => Ok(true),
            // One more look after the deadline: the caller's own check.
            Err(Errno::ETIMEDOUT) => Ok(word.load(Ordering::Acquire) != now),
            Err(e) => {
                self.intact()?;
                Err(Error::sys("futex", self.what(), e))
            }
        }
    }

    /// Put `msg`, waiting while the queue is full. EINTR is retried.
    pub fn put(&self, msg: &[u8]) -> Result<()> {
        self.put_until(msg, Deadline::Never).map(drop)
    }

    /// Put `msg`, waiting at most `timeout`; `false` if still full then.
    pub fn put_timeout(&self, msg: &[u8], timeout: Duration) -> Result<bool> {
        self.put_until(msg, Deadline::after(Some(timeout))?)
    }

    /// Put `msg` if there is room now; `false` when full.
    pub fn try_put(&self, msg: &[u8]) -> Result<bool> {
        self.put_until(msg, Deadline::Now)
    }

    /// Take the oldest message into `buf` (replacing its contents) before
    /// `deadline`; `false` when it passed with the queue still empty.
    pub fn get_into_until(&self, buf: &mut Vec<u8>, deadline: Deadline) -> Result<bool> {
        self.get_into_until_ready(buf, deadline, || Ok::<(), Error>(()))
    }

    /// [`Queue::get_into_until`], asking `ready` just before a message is
    /// taken (the message there, the get lock held): an `Err` from it ends
    /// the call with nothing taken. For a consumer that must not take a
    /// message it cannot pass on, whose check comes then, after any wait
    /// for the message (`pk-queue get` looks whether its reader has gone).
    /// Other consumers wait for the lock meanwhile: `ready` should be
    /// quick.
    pub fn get_into_until_ready<E: From<Error>>(
        &self,
        buf: &mut Vec<u8>,
        deadline: Deadline,
        mut ready: impl FnMut() -> std::result::Result<(), E>,
    ) -> std::result::Result<bool, E> {
        loop {
            self.intact()?;
            let held = self.lock(GET_LOCK, "queue get lock", deadline)?;
            let tail = self.counter(TAIL).load(Ordering::Relaxed);
            let mut head = self.seen_head.load(Ordering::Relaxed);
            // A stale view of head may even lie behind tail (other
            // consumers moved on), by any amount: only a head ahead by at
            // most the capacity (as a true one always is) is trusted, the
            // rest re-read. ("Ahead" alone, as a signed difference, took
            // a head 2^31 messages old for 2^31 messages to take.)
            let ahead = head.wrapping_sub(tail);
            if ahead == 0 || ahead > self.capacity {
                head = self.counter(HEAD).load(Ordering::Acquire);
                self.seen_head.store(head, Ordering::Relaxed);
            }
            if head != tail {
                let off = self.slot(tail);
                // A put never stores more than the limit: a longer one is
                // a damaged file, not a message to cut down to size.
                let len = self.map.read::<u32>(off) as usize;
                if len > self.max_message {
                    self.intact()?;
                    return Err(Error::data(
                        "queue",
                        self.what(),
                        format!(
                            "message {tail} says it has {len} bytes, more than the limit of {}: \
                             the queue is damaged (unlink it and create it again)",
                            self.max_message
                        ),
                    )
                    .into());
                }
                ready()?;
                buf.clear();
                buf.resize(len, 0);
                self.map.read_bulk(off + LEN, buf);
                let r = self.publish(TAIL, PUT_WAITING, tail);
                drop(held);
                r?;
                self.intact()?;
                return Ok(true);
            }
            drop(held);
            if !self.wait_until_moved(HEAD, head, deadline)? {
                return Ok(false);
            }
        }
    }

    /// Take the oldest message into `buf`, waiting while the queue is
    /// empty. Reuses `buf`'s allocation. EINTR is retried.
    pub fn get_into(&self, buf: &mut Vec<u8>) -> Result<()> {
        self.get_into_until(buf, Deadline::Never).map(drop)
    }

    /// Take the oldest message, waiting while the queue is empty.
    pub fn get(&self) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.get_into(&mut buf)?;
        Ok(buf)
    }

    /// Take the oldest message, waiting at most `timeout`; `None` if the
    /// queue stayed empty.
    pub fn get_timeout(&self, timeout: Duration) -> Result<Option<Vec<u8>>> {
        let mut buf = Vec::new();
        let got = self.get_into_until(&mut buf, Deadline::after(Some(timeout))?)?;
        Ok(got.then_some(buf))
    }

    /// Take the oldest message if there is one now.
    pub fn try_get(&self) -> Result<Option<Vec<u8>>> {
        let mut buf = Vec::new();
        let got = self.get_into_until(&mut buf, Deadline::Now)?;
        Ok(got.then_some(buf))
    }

    /// The number of messages in the queue, exactly: head and tail are
    /// read while holding both locks (always put lock first, so two callers
    /// cannot deadlock; no other path holds both).
    pub fn qsize(&self) -> Result<usize> {
        self.qsize_until(Deadline::Never)
    }

    /// [`Queue::qsize`], giving up on a lock still held at `deadline` (and
    /// never sooner than the lock grace, 1 s): a holder that is
    /// stopped (^Z, a debugger) ends it with [`crate::ErrorKind::TimedOut`]
    /// instead of a wait for ever.
    pub fn qsize_until(&self, deadline: Deadline) -> Result<usize> {
        self.intact()?;
        let n = {
            let _put = self.lock(PUT_LOCK, "queue put lock", deadline)?;
            let _get = self.lock(GET_LOCK, "queue get lock", deadline)?;
            let head = self.counter(HEAD).load(Ordering::Relaxed);
            let tail = self.counter(TAIL).load(Ordering::Relaxed);
            head.wrapping_sub(tail) as usize
        };
        self.intact()?;
        Ok(n)
    }

    /// Whether it holds no message.
    pub fn empty(&self) -> Result<bool> {
        Ok(self.qsize()? == 0)
    }

    /// Whether it holds `capacity` messages.
    pub fn full(&self) -> Result<bool> {
        Ok(self.qsize()? == self.capacity())
    }
}

/// A lock of the queue, held: given back when dropped, on every path out
/// of the code that holds it (an error, a panic).
struct Held<'a>(&'a AtomicU64, lock::Token);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        lock::unlock(self.0, self.1);
    }
}

/// The counters of a queue that says it holds more than `capacity`
/// messages (a damaged file); `None` for a sound one.
///
/// head - tail is how many messages it holds, and a queue's own calls
/// keep it at most the capacity at every instant, whoever dies when. But
/// the two counters cannot be read at one instant without the locks, and
/// others may be putting and taking meanwhile: a tail read after the head
/// may already be past it. So the tail is read on both sides of the head;
/// when it did not move, it was the tail at the instant the head was
/// read. A tail that moves on every try belongs to a queue in use, which
/// is not judged.
fn overfull(map: &Mapping, capacity: u64) -> Option<(u32, u32)> {
    let counter = |off| map.atomic::<AtomicU32>(off);
    for _ in 0..64 {
        let tail = counter(TAIL).load(Ordering::Acquire);
        let head = counter(HEAD).load(Ordering::Acquire);
        if counter(TAIL).load(Ordering::Acquire) == tail {
            return (u64::from(head.wrapping_sub(tail)) > capacity).then_some((head, tail));
        }
        std::hint::spin_loop();
    }
    None
}

/// Remove the named queue `name` from `/dev/shm`. Processes that have it
/// open keep using it. A file under that name that holds bytes but is not
/// a queue (no `pkqueue` header: a shared-memory segment, another
/// program's file) is left alone, with [`crate::ErrorKind::BadData`]; an
/// empty one (a queue truncated to nothing) is removed.
pub fn unlink(name: &str) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let (file, size) = object::open("", name)?;
    let mut magic = [0u8; 8];
    let queue = size == 0 || (file.read_exact_at(&mut magic, 0).is_ok() && magic == MAGIC_BYTES);
    if !queue {
        return Err(Error::data(
            "shm_unlink",
            name,
            "not a queue (no pkqueue header): refusing to remove it",
        ));
    }
    object::unlink("", name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_full_empty_and_timeouts() {
        let q = Queue::new(3, 16).unwrap();
        assert!(q.empty().unwrap());
        for m in [b"a".as_slice(), b"bb", b""] {
            q.put(m).unwrap();
        }
        assert!(q.full().unwrap());
        assert_eq!(q.qsize().unwrap(), 3);
        assert!(!q.try_put(b"x").unwrap());
        assert!(!q.put_timeout(b"x", Duration::from_millis(10)).unwrap());
        assert_eq!(q.get().unwrap(), b"a");
        assert_eq!(q.get().unwrap(), b"bb");
        assert_eq!(q.get().unwrap(), b"");
        assert!(q.empty().unwrap());
        assert_eq!(q.try_get().unwrap(), None);
        assert_eq!(q.get_timeout(Duration::from_millis(10)).unwrap(), None);
        // Wrap around the ring a few times.
        for i in 0..10u8 {
            q.put(&[i; 16]).unwrap();
            assert_eq!(q.get().unwrap(), vec![i; 16]);
        }
        assert_eq!(
            q.put(&[0; 17]).unwrap_err().kind(),
            crate::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(Queue::new(0, 8).is_err());
        assert!(Queue::new(MAX_CAPACITY + 1, 8).is_err());
        assert!(Queue::new(8, MAX_MESSAGE_SIZE + 1).is_err());
        assert!(Queue::new(MAX_CAPACITY, MAX_MESSAGE_SIZE).is_err());
    }

    #[test]
    fn sleepers_on_both_sides_are_woken() {
        // Threads stand in for processes: a consumer asleep on an empty
        // queue, then producers asleep on a full one.
        let q = std::sync::Arc::new(Queue::new(1, 8).unwrap());
        let c = {
            let q = std::sync::Arc::clone(&q);
            std::thread::spawn(move || q.get().unwrap())
        };
        std::thread::sleep(Duration::from_millis(50));
        q.put(b"one").unwrap();
        assert_eq!(c.join().unwrap(), b"one");
        q.put(b"two").unwrap();
        let p = {
            let q = std::sync::Arc::clone(&q);
            std::thread::spawn(move || q.put(b"three").unwrap())
        };
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(q.get().unwrap(), b"two");
        p.join().unwrap();
        assert_eq!(q.get().unwrap(), b"three");
    }

    #[test]
    fn counters_wrap_around_u32() {
        let q = Queue::new(4, 8).unwrap();
        q.counter(HEAD).store(u32::MAX - 2, Ordering::Relaxed);
        q.counter(TAIL).store(u32::MAX - 2, Ordering::Relaxed);
        let q = Queue::attach(q.map, None, None);
        for i in 0..20u8 {
            q.put(&[i]).unwrap();
            q.put(&[i, i]).unwrap();
            assert_eq!(q.qsize().unwrap(), 2);
            assert_eq!(q.get().unwrap(), [i]);
            assert_eq!(q.get().unwrap(), [i, i]);
        }
        assert!(q.empty().unwrap());
    }

    #[test]
    fn a_full_queue_of_any_capacity_comes_out_whole_across_the_wrap() {
        // Capacities that do not divide 2^32: with a slot of `n % capacity`
        // the slot index jumped at the wrap, and one message was lost and
        // another came out twice.
        for capacity in [3usize, 5, 100, 1000] {
            let q = Queue::new(capacity, 8).unwrap();
            let start = u32::MAX - capacity as u32 / 2;
            q.counter(HEAD).store(start, Ordering::Relaxed);
            q.counter(TAIL).store(start, Ordering::Relaxed);
            let q = Queue::attach(q.map, None, None);
            for round in 0..3u32 {
                for i in 0..capacity as u32 {
                    assert!(q.try_put(&(round * 10_000 + i).to_le_bytes()).unwrap());
                }
                assert!(!q.try_put(b"over").unwrap(), "capacity {capacity} is full");
                for i in 0..capacity as u32 {
                    let got = q.try_get().unwrap().expect("a message");
                    assert_eq!(
                        got,
                        (round * 10_000 + i).to_le_bytes(),
                        "capacity {capacity}"
                    );
                }
                assert!(q.empty().unwrap());
            }
        }
    }

    #[test]
    fn the_ring_is_a_power_of_two_and_its_limit_is_exact() {
        assert_eq!(slots(1), 1);
        assert_eq!(slots(100), 128);
        assert_eq!(slots(MAX_CAPACITY), MAX_CAPACITY);
        for size in [0, 8, 4096, MAX_MESSAGE_SIZE] {
            let most = max_capacity(size);
            assert!(check_sizes(most, size).is_ok(), "{most} × {size}");
            if most < MAX_CAPACITY {
                assert!(
                    check_sizes(most + 1, size).is_err(),
                    "{} × {size}",
                    most + 1
                );
            }
        }
        assert_eq!(max_capacity(MAX_MESSAGE_SIZE), 512);
        // Sizes past any memory saturate instead of overflowing.
        assert_eq!(slots(usize::MAX), usize::MAX);
        assert_eq!(stride(usize::MAX), usize::MAX);
        assert_eq!(max_capacity(usize::MAX), 0);
    }

    #[test]
    fn opening_a_queue_in_use_never_finds_it_damaged() {
        // open() checks that head - tail is at most the capacity. Read one
        // counter after the other while others put and take, the two
        // values come from different moments: a tail read after the head
        // may already be past it, and a sound queue looked damaged (a
        // `pk-queue get` exited 65 in a storm of puts and gets).
        let name = format!("/pk-test-open-race-{}", std::process::id());
        let q = std::sync::Arc::new(Queue::create(&name, 2, 8).unwrap());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let movers: Vec<_> = (0..2)
            .map(|_| {
                let (q, stop) = (q.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        q.put(b"m").unwrap();
                        q.get().unwrap();
                    }
                })
            })
            .collect();
        let t0 = std::time::Instant::now();
        let mut bad = None;
        let mut opens = 0;
        while t0.elapsed() < Duration::from_millis(1500) && bad.is_none() {
            if let Err(e) = Queue::open(&name) {
                bad = Some(e.to_string());
            }
            opens += 1;
        }
        stop.store(true, Ordering::Relaxed);
        for m in movers {
            m.join().unwrap();
        }
        unlink(&name).unwrap();
        assert_eq!(bad, None, "after {opens} opens");
    }
}
