//! Ticket files: a plain-text count of tickets left, sold one at a time
//! under flock(2), safe against other processes, shell scripts and crashes.
//!
//! ```no_run
//! use posixkit::ticket::{Sale, TicketFile};
//! let shop = TicketFile::init("product", 10).unwrap(); // echo 10 > product
//! match shop.buy().unwrap() {
//!     Sale::Bought(t) => println!("bought ticket {} ({} left)", t.number, t.left),
//!     Sale::SoldOut => println!("sold out"),
//! }
//! ```
//!
//! # The file
//!
//! A ticket file holds one decimal count: ASCII digits, optionally
//! surrounded by ASCII whitespace (`"10\n"`, `" 7 "`), at most
//! [`MAX_FILE_LEN`] bytes, with a value that fits in a `u64`. `echo 10 >
//! product` makes one, `cat product` reads it, and so does Python's
//! `int(open('product').read())`. Anything else (empty, `abc`, `-5`, `+5`,
//! `1e3`, a NUL byte, a value beyond `u64::MAX`) is rejected as bad data
//! (exit 65 in the binaries), and the file is left as it is. A directory,
//! FIFO or device is not a ticket file, and a symbolic link is refused: the
//! file is opened with `O_NOFOLLOW` (and `O_CLOEXEC`, so no child inherits
//! it, and `O_NONBLOCK`, so naming a FIFO cannot hang the open). A file that
//! [`TicketFile::init`] creates gets mode 0600 (less the umask).
//!
//! # Locking
//!
//! Each purchase takes an exclusive flock(2) lock on the file, reads the
//! count, writes the count less one, and releases the lock on every path
//! (a guard unlocks on drop; the kernel also drops the lock when the
//! process dies, so a killed buyer never leaves the file locked, unlike a
//! lock *file*). flock rather than fcntl(2) record locks, because flock is
//! what util-linux `flock(1)` takes: a script that runs
//! `flock product -c 'echo 50 > product'` excludes our buyers and we exclude
//! it. [`TicketFile::count`] takes a shared lock.
//!
//! flock locks belong to the *open file description*: every
//! [`TicketFile::open`] makes a new one, so two `TicketFile`s exclude each
//! other even inside one process, while a child that inherits a
//! `TicketFile` across fork shares its parent's lock. A process that forks
//! buyers therefore opens the file in each buyer, after the fork.
//!
//! flock has no timed form. [`TicketFile::buy_timeout`] polls with
//! `LOCK_NB`, sleeping between tries with a backoff that starts at 50 µs
//! and doubles up to 10 ms (never past the deadline), so it notices a
//! release at most 10 ms late and is not fair: a blocked `flock(LOCK_EX)`
//! waiter may get the lock first. The alternative, interrupting a blocking
//! flock with a SIGALRM timer as `flock(1)` does, needs a process-wide
//! signal handler, which a library should not install behind its caller's
//! back.
//!
//! # Write strategy: one same-length pwrite
//!
//! An update never tears. The count only goes down, so the new text is
//! never longer than the old one; a sale writes it with a **single
//! pwrite(2) at offset 0, padded with spaces to the old length** (`10\n`
//! becomes `9\n `), then, only when the text got shorter, ftruncate(2)s the
//! padding away. The write starts at offset 0 and is at most
//! [`MAX_FILE_LEN`] bytes (a few, in practice), so it stays inside the
//! file's first page, and Linux copies a buffered write into the page cache
//! page by page, checking for a fatal signal only between pages
//! (`generic_perform_write`): a buyer SIGKILLed at any instant
//! leaves the old count or the new one, and a kill between the pwrite and
//! the ftruncate leaves `9\n `, which still parses as 9 (the next sale
//! trims it). No ticket is sold twice, because the number is only reported
//! after the write. The common sale is four system calls: flock, pread,
//! pwrite, flock.
//!
//! # When a step fails
//!
//! A sale that is not reported leaves the count as it was. The pwrite is
//! the moment the new count is in the file, and nothing after it can fail
//! the sale unnoticed:
//! - the ftruncate only tidies (`9\n ` is as good a 9 as `9\n`), so its
//!   failure is ignored and the sale stands;
//! - a failed fdatasync (durable files) writes the old content back, and
//!   flushes it, before the lock is released; the error then says how far
//!   that got: the count is back, or back with the disk unknown (a second
//!   flush failed), or, when even the write back failed, the count the
//!   file holds and the ticket that was sold to nobody;
//! - a caller that must hand the ticket over before the sale counts (the
//!   `pk-ticket buy` line) uses [`TicketFile::buy_pending`]: the lock is
//!   kept until [`Pending::commit`], and a ticket that could not be handed
//!   over is put back by [`Pending::undo`].
//!
//! A buyer killed between its write and its report (or its commit) has
//! sold a ticket nobody received: no program can report and write as one
//! step. The file still holds a valid count.
//!
//! # Creating the file
//!
//! [`TicketFile::init`] writes a new file under a temporary name in the
//! same directory (`.pk-ticket.<pid>.<n>.tmp`, mode 0600) and then gives it
//! its name with renameat2(RENAME_NOREPLACE), so the name never shows an
//! empty or half-written file: an init that fails (a full filesystem)
//! removes its temporary file and leaves none; one killed before the
//! rename leaves only the temporary file. A file that exists already is
//! reset in place, under the lock, because buyers hold it open: a new
//! inode would not be the one they lock.
//!
//! Rejected alternatives:
//! - `open(O_TRUNC)` + write (Python's `open('product', 'w')`): a kill
//!   between the two leaves an empty file.
//! - write a temporary file + rename(2): the lock lives on the inode, and
//!   rename swaps the inode, so a buyer that opened the old file and one
//!   that opens the new one both "hold" the lock. Doing it right needs a
//!   separate lock file or an inode re-check after locking, plus a file
//!   creation and rename per sale: many times slower.
//!
//! Readers that skip the lock (`cat`) are not promised a whole value while a
//! sale is being written; `flock -s product cat product` is.
//!
//! # Durability
//!
//! By default a sale reaches the page cache only: it survives any crash of
//! the buyer (SIGKILL included) but not a power cut or kernel crash, after
//! which the file may hold an older count and the tickets sold since would
//! be sold again. [`TicketFile::set_durable`] adds fdatasync(2) after each
//! write, before the lock is released and before the ticket is reported, so
//! a reported ticket survives power loss too. It costs a device flush per
//! sale (milliseconds on a disk, tens of microseconds on fast SSDs), and
//! every other buyer waits for it because it happens under the lock.
//! [`TicketFile::init_durable`] flushes a new file before it gets its name
//! and then its directory (fsync), so the name survives a power cut too.
//!
//! # Ticket numbers
//!
//! The file holds only the count, so that `echo 10 > product` is a complete
//! ticket file and nothing else has to agree with it. A buyer's ticket
//! number is therefore the count it found: with a stock of 10 the buyers
//! get 10, 9, … 1, each number exactly once. The numbers sold are always
//! `1..=stock`, distinct, with `left` = number − 1.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sys::stat::{Mode, SFlag, fstat};

use crate::error::{Error, ErrorKind, Result};
use crate::sys::flock::{self, Op};

mod init;
mod pending;
pub use pending::{Pending, Purchase};

/// The longest ticket file accepted, in bytes.
pub const MAX_FILE_LEN: usize = 4096;

/// The first pause between tries of [`TicketFile::buy_timeout`].
const FIRST_BACKOFF: Duration = Duration::from_micros(50);
/// The longest pause between tries of [`TicketFile::buy_timeout`].
const MAX_BACKOFF: Duration = Duration::from_millis(10);
/// A sale's text is written from a stack buffer this long (more only when
/// padding over a long file).
const SMALL: usize = 64;

/// One ticket sold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket {
    /// The ticket number: the count the buyer found, in `1..=stock`.
    pub number: u64,
    /// Tickets left after this sale (`number - 1`).
    pub left: u64,
}

/// What a purchase came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sale {
    /// A ticket was sold.
    Bought(Ticket),
    /// The count was 0: nothing sold, the file unchanged.
    SoldOut,
}

/// How long a purchase waits for the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Block until the lock is free (`flock(LOCK_EX)`).
    Block,
    /// Try once (`LOCK_NB`): a busy lock gives up at once.
    NoWait,
    /// Poll with `LOCK_NB` and a backoff until this much time has passed.
    Timeout(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    ReadWrite,
}

/// An open ticket file. See the [module documentation](self) for the file
/// format, the locking and the write strategy.
///
/// A flock(2) lock belongs to the open file, not to a thread: a second
/// flock through the same descriptor succeeds at once and converts the
/// lock, and its unlock ends the first holder's too. So each handle also
/// has a lock of its own that every purchase, count and
/// [`TicketFile::lock_exclusive`] takes first: threads sharing one handle
/// take turns, as processes do, and a thread that asks again while a
/// [`Locked`] or [`Pending`] of its own is alive gets an error (EDEADLK)
/// instead of giving its lock up unseen. A [`Locked`] or [`Pending`] stays
/// on the thread that took it. Open a handle in each process: a copy a
/// fork made while the handle was locked keeps that lock taken for good.
#[derive(Debug)]
pub struct TicketFile {
    fd: OwnedFd,
    name: String,
    durable: bool,
    /// Held while this handle holds the flock.
    turn: crate::thread::Lock,
    /// The thread holding `turn` (see [`this_thread`]), or 0.
    holder: std::sync::atomic::AtomicUsize,
}

/// A number that tells the running thread from every other live one
/// without a system call: the address of a thread-local (never 0).
fn this_thread() -> usize {
    thread_local! {
        static ME: u8 = const { 0 };
    }
    ME.with(|me| std::ptr::from_ref(me) as usize)
}

/// Holds a flock lock on a ticket file; releases it (LOCK_UN) on drop.
/// Get one from [`TicketFile::lock_exclusive`]. It stays on the thread
/// that took it (not `Send`, as a `MutexGuard`): the handle knows its
/// holder by thread, and a guard moved to another thread would leave a
/// stale holder behind.
///
/// ```compile_fail
/// fn on_another_thread<T: Send>(_: T) {}
/// let shop = posixkit::ticket::TicketFile::open("product").unwrap();
/// on_another_thread(shop.lock_exclusive().unwrap()); // Locked is not Send
/// ```
#[derive(Debug)]
pub struct Locked<'a> {
    fd: BorrowedFd<'a>,
    holder: &'a std::sync::atomic::AtomicUsize,
    /// Released after the flock (fields drop after `drop` ran).
    _turn: crate::thread::LockGuard<'a>,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // An unlock can fail only for a bad descriptor, which a borrowed
        // OwnedFd is not; closing the descriptor would release it anyway.
        let _ = flock::flock(self.fd, Op::Unlock, false);
        self.holder.store(0, std::sync::atomic::Ordering::Relaxed);
    }
}

impl TicketFile {
    /// Open an existing ticket file for buying (read-write).
    ///
    /// Errors: the file is missing (ENOENT, exit 66), not readable and
    /// writable (EACCES, 77), a directory, FIFO, device or symbolic link
    /// (bad data, 65). The content is checked at each purchase, not here.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path.as_ref(), Access::ReadWrite)
    }

    /// Open an existing ticket file for reading its count only.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path.as_ref(), Access::Read)
    }

    fn open_with(path: &Path, access: Access) -> Result<Self> {
        let name = path.display().to_string();
        let mut flags = OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK;
        flags |= match access {
            Access::Read => OFlag::O_RDONLY,
            Access::ReadWrite => OFlag::O_RDWR,
        };
        let fd = loop {
            match open(path, flags, Mode::S_IRUSR | Mode::S_IWUSR) {
                Ok(fd) => break fd,
                Err(Errno::EINTR) => continue,
                Err(Errno::EISDIR) => {
                    return Err(Error::data(
                        "open",
                        &name,
                        "is a directory, not a ticket file",
                    ));
                }
                Err(Errno::ELOOP) => {
                    return Err(Error::data(
                        "open",
                        &name,
                        "is a symbolic link; ticket files are opened with O_NOFOLLOW",
                    ));
                }
                Err(e) => return Err(Error::sys("open", &name, e)),
            }
        };
        let st = fstat(&fd).map_err(|e| Error::sys("fstat", &name, e))?;
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        if kind != SFlag::S_IFREG {
            let what = if kind == SFlag::S_IFDIR {
                "is a directory, not a ticket file"
            } else {
                "is not a regular file, so not a ticket file"
            };
            return Err(Error::data("open", &name, what));
        }
        Ok(TicketFile::from_parts(fd, name, false))
    }

    /// The path as given, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// fdatasync(2) after every write (off by default); see "Durability" in
    /// the [module documentation](self).
    pub fn set_durable(&mut self, durable: bool) {
        self.durable = durable;
    }

    /// Whether writes are followed by fdatasync.
    pub fn durable(&self) -> bool {
        self.durable
    }

    /// The count, read under a shared lock (blocks while a sale runs).
    pub fn count(&self) -> Result<u64> {
        let _lock = self.lock(Op::Shared, Wait::Block)?;
        Ok(self.read_count()?.0)
    }

    /// Replace the count with `count`, under the exclusive lock. The old
    /// content need not parse. Crash-safe like a sale when the old file is
    /// at most one page long. When durable, a failed fdatasync says that
    /// the file holds `count` but the disk may not.
    pub fn set(&self, count: u64) -> Result<()> {
        let _lock = self.lock(Op::Exclusive, Wait::Block)?;
        let old_len = self.file_len()?;
        self.write_padded(count, old_len)?;
        if self.durable {
            nix::unistd::fdatasync(&self.fd).map_err(|e| {
                self.unknown_on_disk(
                    e,
                    format!("the file holds {count}, but whether the disk does is unknown"),
                )
            })?;
        }
        Ok(())
    }

    /// Take the exclusive flock(2) lock on the file, waiting as long as it
    /// takes (EINTR retried), as `flock FILE` does in a shell: purchases by
    /// other processes wait until the guard is dropped.
    pub fn lock_exclusive(&self) -> Result<Locked<'_>> {
        Ok(self
            .lock(Op::Exclusive, Wait::Block)?
            .expect("a blocking lock always comes back with the lock"))
    }

    /// Buy one ticket, waiting for the lock as long as it takes.
    /// EINTR is retried.
    pub fn buy(&self) -> Result<Sale> {
        self.buy_inner(true, Wait::Block, &mut || {})
            .map(|sale| sale.unwrap_or(Sale::SoldOut))
    }

    /// Buy one ticket if the lock is free right now; `None` when another
    /// process holds it (nothing bought, file unchanged).
    pub fn try_buy(&self) -> Result<Option<Sale>> {
        self.buy_inner(true, Wait::NoWait, &mut || {})
    }

    /// Buy one ticket, waiting at most `timeout` for the lock; `None` when
    /// the lock stayed busy that long (nothing bought, file unchanged).
    /// Polls with `LOCK_NB` and a backoff of 50 µs doubling to 10 ms.
    pub fn buy_timeout(&self, timeout: Duration) -> Result<Option<Sale>> {
        self.buy_inner(true, Wait::Timeout(timeout), &mut || {})
    }

    /// Buy one ticket as [`buy`](Self::buy), [`try_buy`](Self::try_buy) or
    /// [`buy_timeout`](Self::buy_timeout) do, calling `pause` between the
    /// read and the write, with the lock held. A lesson knob: it widens the
    /// critical section (a yield and a sleep make races and crashes in it
    /// likely) without changing the result.
    pub fn buy_paused(&self, wait: Wait, pause: &mut dyn FnMut()) -> Result<Option<Sale>> {
        self.buy_inner(true, wait, pause)
    }

    /// The broken purchase, for the lesson only: read the count, call
    /// `pause`, write the count less one, all **without the lock**. Two
    /// buyers that read the same count both sell the same ticket.
    pub fn buy_unlocked(&self, pause: &mut dyn FnMut()) -> Result<Sale> {
        self.buy_inner(false, Wait::Block, pause)
            .map(|sale| sale.unwrap_or(Sale::SoldOut))
    }

    /// Sell one ticket but keep the lock: the new count is written (and
    /// flushed when durable), and the sale stands only once
    /// [`Pending::commit`] says so. Until then nobody who takes the lock
    /// has seen it, and [`Pending::undo`] (or dropping the [`Pending`])
    /// writes the old count back. For a caller that must hand the ticket
    /// over (print it, send it) before the sale counts: a ticket that
    /// could not be handed over stays on sale.
    ///
    /// `None` when `wait` gave up on the lock; `pause` runs between the read
    /// and the write, as for [`buy_paused`](Self::buy_paused).
    ///
    /// ```no_run
    /// use posixkit::ticket::{Purchase, TicketFile, Wait};
    /// let shop = TicketFile::open("product").unwrap();
    /// if let Some(Purchase::Pending(sale)) = shop.buy_pending(Wait::Block, &mut || {}).unwrap() {
    ///     let t = sale.ticket();
    ///     match std::fs::write("receipt", format!("ticket {}\n", t.number)) {
    ///         Ok(()) => sale.commit(),
    ///         Err(_) => sale.undo().unwrap(), // ticket t.number is for sale again
    ///     }
    /// }
    /// ```
    pub fn buy_pending(&self, wait: Wait, pause: &mut dyn FnMut()) -> Result<Option<Purchase<'_>>> {
        self.buy_pending_inner(true, wait, pause)
    }

    fn buy_inner(&self, locked: bool, wait: Wait, pause: &mut dyn FnMut()) -> Result<Option<Sale>> {
        let _lock = match self.lock_for_sale(locked, wait)? {
            Some(lock) => lock,
            None => return Ok(None),
        };
        Ok(Some(match self.sell(pause)? {
            Some((ticket, _)) => Sale::Bought(ticket),
            None => Sale::SoldOut,
        }))
    }

    fn buy_pending_inner(
        &self,
        locked: bool,
        wait: Wait,
        pause: &mut dyn FnMut(),
    ) -> Result<Option<Purchase<'_>>> {
        let lock = match self.lock_for_sale(locked, wait)? {
            Some(lock) => lock,
            None => return Ok(None),
        };
        Ok(Some(match self.sell(pause)? {
            Some((ticket, old)) => Purchase::Pending(Pending {
                shop: self,
                ticket,
                old,
                settled: false,
                _lock: lock,
            }),
            None => Purchase::SoldOut,
        }))
    }

    /// The exclusive lock for a sale (`Some(None)` for the lesson's sale
    /// without a lock); `None` when `wait` gave up.
    fn lock_for_sale(&self, locked: bool, wait: Wait) -> Result<Option<Option<Locked<'_>>>> {
        if !locked {
            return Ok(Some(None));
        }
        Ok(self.lock(Op::Exclusive, wait)?.map(Some))
    }

    /// Sell one ticket, the lock held (or not, for the lesson): read the
    /// count, call `pause`, write the count less one (and flush it when
    /// durable). The ticket and the file's former content, or `None` when
    /// sold out.
    fn sell(&self, pause: &mut dyn FnMut()) -> Result<Option<(Ticket, Text)>> {
        let (count, old) = self.read_count()?;
        if count == 0 {
            return Ok(None);
        }
        pause();
        let ticket = Ticket {
            number: count,
            left: count - 1,
        };
        self.write_padded(ticket.left, old.len())?;
        // From here on the new count is in the file: every failure must
        // put the old one back before the lock goes.
        if self.durable {
            if let Err(e) = nix::unistd::fdatasync(&self.fd) {
                let undone = self.restore(&old, ticket);
                return Err(Error::new(
                    ErrorKind::from_errno(e),
                    "fdatasync",
                    &self.name,
                    format!(
                        "{}; {}",
                        crate::error::strerror(e),
                        pending::undo_outcome(&undone, ticket)
                    ),
                ));
            }
        }
        Ok(Some((ticket, old)))
    }

    /// Take the lock; `None` when `wait` gave up. EINTR is retried.
    fn from_parts(fd: OwnedFd, name: String, durable: bool) -> TicketFile {
        TicketFile {
            fd,
            name,
            durable,
            turn: crate::thread::Lock::new(),
            holder: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// This handle's own lock (see [`TicketFile`]), then the flock.
    fn lock(&self, op: Op, wait: Wait) -> Result<Option<Locked<'_>>> {
        use std::sync::atomic::Ordering::Relaxed;
        let me = this_thread();
        if self.holder.load(Relaxed) == me {
            // A Locked or Pending of this thread is alive: a second flock
            // would convert it, and its unlock end it.
            return Err(Error::sys(
                "flock",
                format_args!("{}, held through this handle by this thread", self.name),
                Errno::EDEADLK,
            ));
        }
        // A deadline beyond what Instant can hold is no deadline.
        let deadline = match wait {
            Wait::Block => None,
            Wait::NoWait => Some(Instant::now()),
            Wait::Timeout(d) => Instant::now().checked_add(d),
        };
        let turn = match deadline {
            None => self.turn.acquire(),
            Some(end) => match self
                .turn
                .acquire_timeout(end.saturating_duration_since(Instant::now()))
            {
                Some(t) => t,
                None => return Ok(None),
            },
        };
        self.holder.store(me, Relaxed);
        let locked = |turn| Locked {
            fd: self.fd.as_fd(),
            holder: &self.holder,
            _turn: turn,
            _not_send: std::marker::PhantomData,
        };
        // Given up or failed below: the holder is cleared here, and the
        // turn is released as `lock` returns.
        let give_up = |r| {
            self.holder.store(0, Relaxed);
            r
        };
        let fd = self.fd.as_fd();
        let Some(end) = deadline else {
            return loop {
                match flock::flock(fd, op, false) {
                    Ok(()) => break Ok(Some(locked(turn))),
                    Err(Errno::EINTR) => continue,
                    Err(e) => break give_up(Err(Error::sys("flock", &self.name, e))),
                }
            };
        };
        let mut backoff = FIRST_BACKOFF;
        loop {
            match flock::flock(fd, op, true) {
                Ok(()) => return Ok(Some(locked(turn))),
                Err(Errno::EINTR) => continue,
                Err(Errno::EWOULDBLOCK) => {}
                Err(e) => return give_up(Err(Error::sys("flock", &self.name, e))),
            }
            let now = Instant::now();
            if now >= end {
                return give_up(Ok(None));
            }
            std::thread::sleep(backoff.min(end - now));
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn file_len(&self) -> Result<usize> {
        let st = fstat(&self.fd).map_err(|e| Error::sys("fstat", &self.name, e))?;
        Ok(usize::try_from(st.st_size).unwrap_or(usize::MAX))
    }

    /// Read and parse the count; also returns the file's whole content.
    fn read_count(&self) -> Result<(u64, Text)> {
        let mut small = [0u8; SMALL];
        let n = self.pread(&mut small)?;
        // A short read of a regular file means its end was reached.
        if n < small.len() {
            let text = Text::Small(small, n);
            return Ok((self.parsed(text.bytes())?, text));
        }
        let mut big = vec![0u8; MAX_FILE_LEN + 1];
        let n = self.pread(&mut big)?;
        if n > MAX_FILE_LEN {
            return Err(Error::data(
                "read",
                &self.name,
                format!("longer than {MAX_FILE_LEN} bytes: not a ticket count"),
            ));
        }
        big.truncate(n);
        Ok((self.parsed(&big)?, Text::Big(big)))
    }

    fn parsed(&self, text: &[u8]) -> Result<u64> {
        parse_count(text).map_err(|why| Error::data("read", &self.name, why))
    }

    /// One pread(2) at offset 0; EINTR retried.
    fn pread(&self, buf: &mut [u8]) -> Result<usize> {
        loop {
            match nix::sys::uio::pread(&self.fd, buf, 0) {
                Ok(n) => return Ok(n),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(Error::sys("read", &self.name, e)),
            }
        }
    }

    /// Write `count` over a file that is `old_len` bytes long: one pwrite
    /// of the new text padded with spaces to the old length (up to one
    /// page), which is the moment the new count is in the file; then an
    /// ftruncate of the padding when the text got shorter.
    ///
    /// When the padded text covers the whole old content (always for a
    /// file that held a count: it is at most [`MAX_FILE_LEN`] long) the
    /// ftruncate only tidies: `9\n ` is as good a 9 as `9\n`, so its failure
    /// is ignored and nothing can fail once the count is written. Over a
    /// longer file (only [`set`](Self::set) meets one) the ftruncate is
    /// what makes the file a count, and its failure is an error.
    fn write_padded(&self, count: u64, old_len: usize) -> Result<()> {
        let mut small = [b' '; SMALL];
        let text_len = format_count(count, &mut small);
        let write_len = old_len.clamp(text_len, MAX_FILE_LEN);
        let big;
        let bytes: &[u8] = if write_len <= SMALL {
            &small[..write_len]
        } else {
            let mut v = vec![b' '; write_len];
            v[..text_len].copy_from_slice(&small[..text_len]);
            big = v;
            &big
        };
        self.pwrite_all(bytes)?;
        if old_len > text_len {
            let len = i64::try_from(text_len).unwrap_or(i64::MAX);
            let trimmed = nix::unistd::ftruncate(&self.fd, len);
            if old_len > write_len {
                trimmed.map_err(|e| Error::sys("ftruncate", &self.name, e))?;
            }
        }
        Ok(())
    }

    /// pwrite(2) all of `bytes` at offset 0; EINTR and short writes retried.
    fn pwrite_all(&self, bytes: &[u8]) -> Result<()> {
        let mut done = 0;
        while done < bytes.len() {
            let at = i64::try_from(done).unwrap_or(i64::MAX);
            match nix::sys::uio::pwrite(&self.fd, &bytes[done..], at) {
                Ok(0) => return Err(Error::sys("write", &self.name, Errno::EIO)),
                Ok(n) => done += n,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(Error::sys("write", &self.name, e)),
            }
        }
        Ok(())
    }
}

/// A ticket file's content as read: on the stack when short.
#[derive(Debug)]
enum Text {
    Small([u8; SMALL], usize),
    Big(Vec<u8>),
}

impl Text {
    fn bytes(&self) -> &[u8] {
        match self {
            Text::Small(b, n) => &b[..*n],
            Text::Big(v) => v,
        }
    }

    fn len(&self) -> usize {
        self.bytes().len()
    }
}

/// Write `count` and a newline at the start of `buf`; returns the length.
fn format_count(count: u64, buf: &mut [u8; SMALL]) -> usize {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = count;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let n = digits.len() - i;
    buf[..n].copy_from_slice(&digits[i..]);
    buf[n] = b'\n';
    n + 1
}

/// Parse a ticket file's content strictly: ASCII digits, optionally
/// surrounded by ASCII whitespace, fitting a `u64`. The error says why not,
/// in words fit for a one-line message.
pub fn parse_count(text: &[u8]) -> std::result::Result<u64, String> {
    if text.is_empty() {
        return Err("empty file, not a ticket count (make one with: echo 10 > FILE)".into());
    }
    if text.contains(&0) {
        return Err("holds a NUL byte, not a ticket count".into());
    }
    let t = text.trim_ascii();
    if t.is_empty() {
        return Err("holds only whitespace, not a ticket count".into());
    }
    if !t.iter().all(u8::is_ascii_digit) {
        return Err(format!("not a ticket count: {}", Shown(t)));
    }
    t.iter()
        .try_fold(0u64, |v, d| {
            v.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or_else(|| format!("count beyond the limit of {}: {}", u64::MAX, Shown(t)))
}

/// Bytes quoted for a message: escaped, cut at 32 bytes.
struct Shown<'a>(&'a [u8]);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cut = self.0.len().min(32);
        write!(f, "\"{}", self.0[..cut].escape_ascii())?;
        if cut < self.0.len() {
            f.write_str("...")?;
        }
        f.write_str("\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counts_strictly() {
        for (s, v) in [
            ("10\n", 10),
            ("0", 0),
            (" 7 ", 7),
            ("\t42\r\n", 42),
            ("9\n ", 9),
            ("007", 7),
            ("18446744073709551615\n", u64::MAX),
        ] {
            assert_eq!(parse_count(s.as_bytes()), Ok(v), "{s:?}");
        }
        for s in [
            "",
            " \n",
            "abc",
            "-5",
            "+5",
            "1e3",
            "1 2",
            "5x",
            "0x10",
            "1\0",
            "18446744073709551616",
            "99999999999999999999999",
            "\u{0660}",
        ] {
            assert!(parse_count(s.as_bytes()).is_err(), "{s:?}");
        }
    }

    #[test]
    fn errors_quote_the_content_on_one_line() {
        let e = parse_count(b"a\nb\x01").unwrap_err();
        assert_eq!(e, "not a ticket count: \"a\\nb\\x01\"");
        let long = parse_count(&[b'x'; 100]).unwrap_err();
        assert!(long.ends_with("xxx...\""), "{long}");
    }

    #[test]
    fn formats_counts_with_a_newline() {
        let mut buf = [b' '; SMALL];
        for v in [0, 9, 10, 12345, u64::MAX] {
            let n = format_count(v, &mut buf);
            assert_eq!(&buf[..n], format!("{v}\n").as_bytes());
        }
    }

    #[test]
    fn a_sale_that_shortens_the_text_pads_then_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("product");
        std::fs::write(&path, "10\n").unwrap();
        let shop = TicketFile::open(&path).unwrap();
        assert_eq!(
            shop.buy().unwrap(),
            Sale::Bought(Ticket {
                number: 10,
                left: 9
            })
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "9\n");
        shop.set(0).unwrap();
        assert_eq!(shop.buy().unwrap(), Sale::SoldOut);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "0\n");
    }

    #[test]
    fn init_resets_any_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("product");
        std::fs::write(&path, vec![b'z'; 5000]).unwrap();
        let shop = TicketFile::init(&path, 3).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "3\n");
        assert_eq!(shop.count().unwrap(), 3);
    }

    #[test]
    fn a_handle_that_holds_its_lock_refuses_to_lock_again_instead_of_giving_it_up() {
        // A flock through the same descriptor converts the lock, and its
        // unlock ended the pending sale's: another buyer then sold the
        // same ticket again once the sale was undone.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("product");
        let shop = TicketFile::init(&path, 5).unwrap();
        let other = TicketFile::open(&path).unwrap();
        let Some(Purchase::Pending(sale)) = shop.buy_pending(Wait::Block, &mut || {}).unwrap()
        else {
            panic!("a pending sale");
        };
        assert!(other.try_buy().unwrap().is_none(), "the lock is held");
        for e in [
            shop.count().unwrap_err(),
            shop.try_buy().unwrap_err(),
            shop.lock_exclusive().unwrap_err(),
        ] {
            assert_eq!(e.errno(), Some(Errno::EDEADLK), "{e}");
        }
        assert!(other.try_buy().unwrap().is_none(), "still held");
        sale.undo().unwrap();
        assert_eq!(other.count().unwrap(), 5);
        // The same with a Locked guard; after it, the handle locks again.
        let held = shop.lock_exclusive().unwrap();
        assert_eq!(shop.buy().unwrap_err().errno(), Some(Errno::EDEADLK));
        assert!(other.try_buy().unwrap().is_none());
        drop(held);
        assert_eq!(
            shop.buy().unwrap(),
            Sale::Bought(Ticket { number: 5, left: 4 })
        );
    }

    #[test]
    fn threads_sharing_one_handle_take_turns() {
        // The flock alone let every thread of one handle "hold" it at once:
        // with a pause inside the sale, they sold the same tickets.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("product");
        let shop = TicketFile::init(&path, 40).unwrap();
        let sold = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10 {
                        let sale = shop
                            .buy_paused(Wait::Block, &mut || {
                                std::thread::sleep(Duration::from_micros(200))
                            })
                            .unwrap();
                        if let Some(Sale::Bought(t)) = sale {
                            sold.lock().unwrap().push(t.number);
                        }
                    }
                });
            }
        });
        let mut sold = sold.into_inner().unwrap();
        sold.sort_unstable();
        assert_eq!(sold, (1..=40).collect::<Vec<u64>>());
        assert_eq!(shop.count().unwrap(), 0);
    }

    #[test]
    fn a_pending_sale_stands_only_once_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("product");
        std::fs::write(&path, "10\n").unwrap();
        let shop = TicketFile::open(&path).unwrap();
        let other = TicketFile::open(&path).unwrap();
        fn pending(shop: &TicketFile) -> Pending<'_> {
            match shop.buy_pending(Wait::Block, &mut || {}) {
                Ok(Some(Purchase::Pending(p))) => p,
                other => panic!("{other:?}"),
            }
        }
        // Undone: the old text is back, and the lock was held until then.
        let sale = pending(&shop);
        assert_eq!(
            sale.ticket(),
            Ticket {
                number: 10,
                left: 9
            }
        );
        assert_eq!(other.try_buy().unwrap(), None, "still locked");
        sale.undo().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "10\n");
        // Dropped without a commit: undone too.
        drop(pending(&shop));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "10\n");
        // Committed: it stands, and the next buyer gets the next ticket.
        pending(&shop).commit();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "9\n");
        assert_eq!(
            other.try_buy().unwrap(),
            Some(Sale::Bought(Ticket { number: 9, left: 8 }))
        );
        shop.set(0).unwrap();
        assert!(matches!(
            shop.buy_pending(Wait::NoWait, &mut || {}).unwrap(),
            Some(Purchase::SoldOut)
        ));
    }

    #[test]
    fn two_opens_exclude_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("product");
        let a = TicketFile::init(&path, 2).unwrap();
        let b = TicketFile::open(&path).unwrap();
        let mut tried = None;
        let sale = a
            .buy_paused(Wait::Block, &mut || tried = Some(b.try_buy().unwrap()))
            .unwrap();
        assert_eq!(tried, Some(None), "b must find the lock busy");
        assert_eq!(sale, Some(Sale::Bought(Ticket { number: 2, left: 1 })));
        let mut timed = None;
        a.buy_paused(Wait::Block, &mut || {
            timed = Some(b.buy_timeout(Duration::from_millis(20)).unwrap());
        })
        .unwrap();
        assert_eq!(timed, Some(None));
        assert_eq!(b.try_buy().unwrap(), Some(Sale::SoldOut));
    }
}
