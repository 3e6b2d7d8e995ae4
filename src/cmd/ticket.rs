//! `pk-ticket`: the file-locked ticket purchase. `init`, `buy` and `show`
//! for shell scripts; `rush`, the lesson: N forked buyers racing for the
//! tickets in one file, with flock(2) or (`--no-lock`) without it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand};
use nix::errno::Errno;

use crate::cmd::Out;
use crate::cmd::duration::DurationArg;
use crate::cmd::exit;
use crate::cmd::{Failure, Result};
use crate::error::Error;
use crate::pipe::{self, Reader, Writer};
use crate::process::{self, Children, Fork};
use crate::ticket::{self, Purchase, Sale, TicketFile, Wait};
use crate::{note, outln};

/// What `--yield` adds between the read and the write: a sched_yield and
/// this sleep. Long enough that buyers released together all read before
/// any of them writes, even on a loaded machine.
const YIELD_PAUSE: Duration = Duration::from_millis(10);

const AFTER_HELP: &str = "\
A ticket file is plain text holding one decimal count (`echo 10 > product`
makes one, `cat product` reads it). Every purchase takes an exclusive
flock(2) lock, so a script's `flock product -c '...'` excludes pk-ticket
buyers and they exclude it. A sale is one same-length pwrite: a buyer
killed at any instant leaves the old count or the new one. A buy that does
not report a sale leaves the count as it was: a failed step after the
write is undone under the lock, and the error says so. Ticket numbers
are the count each buyer found: with 10 tickets buyers get 10, 9, ... 1.

Exit status: 0 done; 1 sold out, or the lock was busy (--no-wait) or stayed
busy (--timeout); 2 bad flag or value; 65 the file is not a ticket count, or
is a directory, FIFO or symbolic link; 66 the file does not exist; 71 a
system call failed; 77 permission denied. Run `pk-ticket <command> --help`
for each command's flags and output lines.

Examples:
  pk-ticket init product 10
  pk-ticket buy product              # bought ticket 10 (9 left)
  pk-ticket buy product --no-wait || echo 'no ticket'
  pk-ticket rush product --buyers 10 --no-lock --yield
  pk-ticket show product             # 9";

const INIT_HELP: &str = "\
Output:
  <file>: <N> tickets
A new FILE is written under a temporary name in its directory and then
renamed into place, so an init that fails (a full filesystem) leaves no
file, never an empty one; an existing FILE is reset in place under the lock
(buyers hold it open) and keeps its old content when that fails. --durable
flushes the file before it gets its name, then the directory.
Exit status: 0 done; 2 bad N; 65 FILE is a directory, FIFO or symbolic link;
71 a system call failed; 77 permission denied.";

const BUY_HELP: &str = "\
Output (at most one line):
  bought ticket <T> (<L> left)      exit 0
  sold out                          exit 1
  (nothing)                         exit 1 or -E when busy (--no-wait); with -v,
                                    `pk-ticket: busy: <file> is locked` on stderr
  timed out after <D>: <file> is locked   exit 1 or -E (with --timeout)
The line is written before the lock is released: when it cannot be (stdout
on a full device, closed, or a reader gone), the sale is undone and the
ticket stays on sale. With --durable a failed fdatasync undoes the sale too;
the one-line error says how far the undo got (`nothing sold: the count is
back to T`, or that the disk's count is unknown).
Exit status: as above; 2 bad flag; 65 the file is not a ticket count (it is
left unchanged); 66 no such file; 71 a system call failed (nothing sold
unless the message says otherwise); 77 permission denied; 141 stdout closed
by its reader (nothing sold).

Examples:
  if pk-ticket buy product; then echo 'got one'; fi
  pk-ticket buy product --timeout 2s -E 75";

const RUSH_HELP: &str = "\
Output:
  rush: <N> buyers, <S> tickets in <file>, <with flock(2)|without a lock>
  buyer <i> (pid <p>): bought ticket <T>     (one line per buyer, as they finish)
  buyer <i> (pid <p>): sold out
  buyer <i> (pid <p>): killed by signal <N> (<NAME>)   (a buyer killed from outside)
  summary: stock <S>, sold <n>, left <L>, oversold <O>
  duplicates: ticket <T> x<k>, ...          (only when a ticket was sold twice)
  <one sentence on what happened>
oversold = sold + left - stock: tickets handed out, or still on offer,
beyond the stock. With the lock it is always 0. With --quiet only the
summary and duplicates lines are printed.

Every buyer opens the file itself (its own open file description, so the
flock locks exclude each other), then all are released together through a
pipe the parent closes once every buyer is forked.

Exit status: 0 when the rush ran (oversold or not); 2 bad flag; 65/66/77 as
for buy; 71 a fork or another system call failed (every buyer forked is
still reaped).";

/// Sell tickets from a plain-text count file, locked with flock(2).
#[derive(Debug, Parser)]
#[command(name = "pk-ticket", version, after_help = AFTER_HELP)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,

    /// Print only the summary lines (`rush`'s; the other commands print
    /// only results anyway). Before or after the command's name.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create FILE holding N tickets (mode 0600), or reset it to N under the lock.
    #[command(after_help = INIT_HELP)]
    Init {
        /// The ticket file.
        file: PathBuf,
        /// How many tickets (decimal digits, 0 to 18446744073709551615).
        #[arg(value_name = "N", value_parser = parse_count_arg)]
        count: u64,
        /// fdatasync the file after writing it, and a new file's directory.
        #[arg(long)]
        durable: bool,
    },
    /// Buy one ticket: for shell scripts.
    #[command(after_help = BUY_HELP)]
    Buy(BuyArgs),
    /// The lesson: fork N buyers that race for the tickets.
    #[command(after_help = RUSH_HELP)]
    Rush(RushArgs),
    /// Print the count (read under a shared lock, checked like a purchase).
    #[command(after_help = "Output: <count>\nExit status: 0; 65/66/77 as for buy.")]
    Show {
        /// The ticket file.
        file: PathBuf,
    },
}

/// `pk-ticket buy`.
#[derive(Debug, ClapArgs)]
pub struct BuyArgs {
    /// The ticket file.
    pub file: PathBuf,
    /// Give up after waiting this long for the lock (2, 1.5s, 250ms).
    #[arg(long, value_name = "DURATION", conflicts_with = "no_wait")]
    pub timeout: Option<DurationArg>,
    /// Give up at once if another process holds the lock.
    #[arg(short = 'n', long)]
    pub no_wait: bool,
    /// Exit with N (0-255) instead of 1 when the lock was busy or timed out.
    #[arg(short = 'E', long, value_name = "N", default_value_t = exit::DECLINED)]
    pub conflict_exit_code: u8,
    /// fdatasync after the sale, before reporting it (survives power loss; slower).
    #[arg(long)]
    pub durable: bool,
    /// Say on stderr that the lock was busy (--no-wait is otherwise silent, as flock -n).
    #[arg(short, long)]
    pub verbose: bool,
    /// sched_yield and sleep 10ms between reading and writing the count, with
    /// the lock held: a wider critical section for crash and race tests.
    #[arg(long = "yield")]
    pub yield_: bool,
}

/// `pk-ticket rush`.
#[derive(Debug, ClapArgs)]
pub struct RushArgs {
    /// The ticket file.
    pub file: PathBuf,
    /// How many buyer processes to fork (1-4096).
    #[arg(short = 'b', long, value_name = "N", required = true,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub buyers: u32,
    /// Buy without the lock: read, then write, unprotected (the race).
    #[arg(long)]
    pub no_lock: bool,
    /// sched_yield and sleep 10ms between each buyer's read and write, so
    /// the race without the lock shows every time.
    #[arg(long = "yield")]
    pub yield_: bool,
    /// fdatasync after every sale.
    #[arg(long)]
    pub durable: bool,
}

/// A count on the command line, as strict as in a file.
fn parse_count_arg(s: &str) -> std::result::Result<u64, String> {
    ticket::parse_count(s.as_bytes()).map_err(|_| {
        format!(
            "'{s}' is not a ticket count (decimal digits, 0 to {})",
            u64::MAX
        )
    })
}

/// Run `pk-ticket`.
pub fn run(args: Args, out: &mut Out) -> Result<u8> {
    out.set_quiet(args.quiet);
    match args.command {
        Command::Init {
            file,
            count,
            durable,
        } => {
            if durable {
                TicketFile::init_durable(&file, count)?;
            } else {
                TicketFile::init(&file, count)?;
            }
            outln!(out, "{}: {} tickets", file.display(), count)?;
            Ok(exit::OK)
        }
        Command::Buy(b) => buy(b, out),
        Command::Rush(r) => rush(r, out),
        Command::Show { file } => {
            let shop = TicketFile::open_read_only(&file)?;
            outln!(out, "{}", shop.count()?)?;
            Ok(exit::OK)
        }
    }
}

fn pause(yield_: bool) -> impl FnMut() {
    move || {
        if yield_ {
            std::thread::yield_now();
            std::thread::sleep(YIELD_PAUSE);
        }
    }
}

fn buy(args: BuyArgs, out: &mut Out) -> Result<u8> {
    let mut shop = TicketFile::open(&args.file)?;
    shop.set_durable(args.durable);
    let wait = match (args.no_wait, args.timeout) {
        (true, _) => Wait::NoWait,
        (false, Some(d)) => Wait::Timeout(d.0),
        (false, None) => Wait::Block,
    };
    match shop.buy_pending(wait, &mut pause(args.yield_))? {
        // The line is written while the lock is held: a sale whose line
        // cannot be written is undone, so a ticket nobody was told of
        // stays on sale.
        Some(Purchase::Pending(sale)) => {
            let t = sale.ticket();
            match outln!(out, "bought ticket {} ({} left)", t.number, t.left) {
                Ok(()) => {
                    sale.commit();
                    Ok(exit::OK)
                }
                Err(e) => Err(undone(e, sale.undo(), t)),
            }
        }
        Some(Purchase::SoldOut) => {
            outln!(out, "sold out")?;
            Ok(exit::DECLINED)
        }
        None => {
            match args.timeout {
                Some(d) if !args.no_wait => outln!(
                    out,
                    "timed out after {d}: {} is locked",
                    args.file.display()
                )?,
                // Silent, as flock -n is: a busy lock is an expected
                // conflict for a script (or cron), not an error.
                _ if args.verbose => crate::cmd::eprintln_one(
                    "pk-ticket",
                    &format_args!("busy: {} is locked", args.file.display()),
                ),
                _ => {}
            }
            Ok(args.conflict_exit_code)
        }
    }
}

/// A sale whose line could not be written, after `undo`: the write's
/// error, and what the undo left.
fn undone(e: Failure, undo: crate::error::Result<()>, t: ticket::Ticket) -> Failure {
    match undo {
        // Nothing sold and nothing to say on a closed stdout: a quiet stop.
        Ok(()) if e.is_closed_stdout() => e,
        Ok(()) => append(
            e,
            &format!("nothing sold: the count is back to {}", t.number),
        ),
        Err(u) => append(e, &format!("and undoing the sale failed: {u}")).with_code(exit::OS_ERR),
    }
}

/// `e` with `; more` after its reason, same kind and exit code.
fn append(e: Failure, more: &str) -> Failure {
    let err = e.error();
    let reason = err
        .errno()
        .map_or_else(|| err.to_string(), crate::error::strerror);
    Failure::from(Error::new(
        err.kind(),
        err.call().to_string(),
        err.what(),
        format!("{reason}; {more}"),
    ))
    .with_code(e.code())
}

/// What one buyer reported through the results pipe.
#[derive(Debug)]
enum Report {
    Bought(u64),
    SoldOut,
    Failed(u8, String),
}

fn rush(args: RushArgs, out: &mut Out) -> Result<u8> {
    let shop = TicketFile::open(&args.file)?;
    let stock = shop.count()?;
    let n = args.buyers;
    note!(
        out,
        "rush: {n} buyers, {stock} tickets in {}, {}",
        args.file.display(),
        if args.no_lock {
            "without a lock"
        } else {
            "with flock(2)"
        }
    )?;

    // The start barrier: buyers block reading it until every buyer is
    // forked and the parent closes the write end. The results pipe carries
    // one short record per buyer, as one frame (atomic: shorter than
    // PIPE_BUF).
    let (barrier_r, barrier_w) = pipe::pipe()?;
    let (results_r, results_w) = pipe::pipe()?;
    let mut barrier_w = Some(barrier_w);
    let mut results_r = Some(results_r);

    // Buyer i (from 1) is the group's child i - 1.
    let mut buyers = Children::new();
    let mut fork_error = None;
    for i in 1..=n {
        // The child never returns from buyer_main: it ends with _exit.
        match buyers.fork(format_args!("buyer {i} of {n}")) {
            Ok(Fork::Child) => {
                drop(barrier_w.take());
                drop(results_r.take());
                buyer_main(i, &args, barrier_r, results_w)
            }
            Ok(Fork::Parent(_)) => {}
            Err(e) => {
                fork_error = Some(Failure::from(e));
                break;
            }
        }
    }
    // Go.
    drop(barrier_w);
    drop(barrier_r);
    drop(results_w);

    let mut reports: BTreeMap<u32, Report> = BTreeMap::new();
    if let Some(r) = results_r.take() {
        let mut records = pipe::FrameReader::new(r);
        while let Some(record) = records.recv()? {
            if let Some((i, pid, report)) = parse_record(record) {
                match &report {
                    Report::Bought(t) => note!(out, "buyer {i} (pid {pid}): bought ticket {t}")?,
                    Report::SoldOut => note!(out, "buyer {i} (pid {pid}): sold out")?,
                    Report::Failed(..) => {}
                }
                reports.insert(i, report);
            }
        }
    }

    let mut first_error = None;
    for (i, child) in (1u32..).zip(&mut buyers) {
        let status = child.wait()?;
        match reports.get(&i) {
            None => note!(out, "buyer {i} (pid {}): {status}", child.pid())?,
            Some(Report::Failed(code, msg)) if first_error.is_none() => {
                first_error = Some(
                    Failure::from(Error::data(
                        "buyer",
                        format!("{i}, pid {}", child.pid()),
                        msg.clone(),
                    ))
                    .with_code(*code),
                );
            }
            Some(_) => {}
        }
    }
    if let Some(e) = fork_error.or(first_error) {
        return Err(e);
    }

    let left = shop.count()?;
    let mut times: BTreeMap<u64, u32> = BTreeMap::new();
    for r in reports.values() {
        if let Report::Bought(t) = r {
            *times.entry(*t).or_default() += 1;
        }
    }
    let sold: u64 = times.values().map(|&k| u64::from(k)).sum();
    let oversold = sold.saturating_add(left).saturating_sub(stock);
    outln!(
        out,
        "summary: stock {stock}, sold {sold}, left {left}, oversold {oversold}"
    )?;
    let dups: Vec<String> = times
        .iter()
        .rev()
        .filter(|(_, k)| **k > 1)
        .map(|(t, k)| format!("ticket {t} x{k}"))
        .collect();
    if !dups.is_empty() {
        outln!(out, "duplicates: {}", dups.join(", "))?;
    }
    if oversold > 0 {
        note!(
            out,
            "oversold by {oversold}: buyers read the same count before any of them wrote it back"
        )?;
    } else if args.no_lock {
        note!(
            out,
            "no oversell this time, but nothing prevented it (try --yield)"
        )?;
    } else {
        note!(
            out,
            "exact: the lock made each read-decrement-write one step"
        )?;
    }
    Ok(exit::OK)
}

/// `<i> <pid> B <ticket>`, `<i> <pid> S`, `<i> <pid> E <code> <message>`.
fn parse_record(line: &[u8]) -> Option<(u32, i32, Report)> {
    let text = std::str::from_utf8(line).ok()?.trim_end_matches('\n');
    let mut f = text.splitn(4, ' ');
    let i = f.next()?.parse().ok()?;
    let pid = f.next()?.parse().ok()?;
    let report = match f.next()? {
        "B" => Report::Bought(f.next()?.parse().ok()?),
        "S" => Report::SoldOut,
        "E" => {
            let rest = f.next()?;
            let (code, msg) = rest.split_once(' ')?;
            Report::Failed(code.parse().ok()?, msg.to_string())
        }
        _ => return None,
    };
    Some((i, pid, report))
}

/// One buyer: open the file, wait at the barrier, buy once, report. Never
/// returns.
fn buyer_main(i: u32, args: &RushArgs, barrier: Reader, results: Writer) -> ! {
    let me = process::getpid();
    let (record, code) = match buyer(args, barrier) {
        Ok(Sale::Bought(t)) => (format!("{i} {me} B {}\n", t.number), exit::OK),
        Ok(Sale::SoldOut) => (format!("{i} {me} S\n"), exit::OK),
        Err(e) => {
            let mut msg = e.to_string().replace('\n', " ");
            // Cut on a character boundary: String::truncate panics inside one.
            let cut = (0..=msg.len().min(1000))
                .rev()
                .find(|&n| msg.is_char_boundary(n))
                .unwrap_or(0);
            msg.truncate(cut);
            (format!("{i} {me} E {} {msg}\n", e.code()), e.code())
        }
    };
    // A parent that is gone reads no record; the exit code still tells.
    let _ = results.send(record.as_bytes());
    process::_exit(i32::from(code))
}

fn buyer(args: &RushArgs, barrier: Reader) -> Result<Sale> {
    // Its own open: its own open file description, so its own flock lock.
    let mut shop = TicketFile::open(&args.file)?;
    shop.set_durable(args.durable);
    // Nothing is ever written to the barrier: its end of file is the start.
    while barrier.read_full(&mut [0u8; 1])? > 0 {}
    let mut pause = pause(args.yield_);
    if args.no_lock {
        return Ok(shop.buy_unlocked(&mut pause)?);
    }
    match shop.buy_paused(Wait::Block, &mut pause)? {
        Some(sale) => Ok(sale),
        // Wait::Block only returns once it holds the lock.
        None => Err(Error::sys("flock", shop.name(), Errno::EWOULDBLOCK).into()),
    }
}
