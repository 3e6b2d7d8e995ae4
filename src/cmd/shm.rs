//! `pk-shm`: shared memory. `bytes` is `Array('c', b'Hello')` changed by a
//! child; `counter` is ten processes adding 1 fifty times to a shared
//! `Value`: without a lock, with a lock around each access on its own (what
//! `v.value += 1` does on `Value('i', 0)`, whose lock=True is the default),
//! with one lock around the whole increment (`with v.get_lock():`), and
//! with an atomic add. The named
//! subcommands (`create`, `read`, `write`, `add`, `get`, `set`, `cas`,
//! `unlink`) work on a segment in `/dev/shm` that any process of the same
//! user can open by name, Python's `SharedMemory(name=...)` included.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering;
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};

use crate::cmd::Out;
use crate::cmd::Result;
use crate::cmd::exit;
use crate::error::{Context, Error};
use crate::process::{self, Child, Children, Fork};
use crate::sem::Semaphore;
use crate::shm::{self, Segment, SharedArray, SharedValue};
use crate::{note, outln};

const AFTER_HELP: &str = "\
Output of `bytes` (<pid> is a process id):
  parent <pid>: array=b'Hello' (5 bytes, memfd mapped MAP_SHARED)
  child <pid>: arr[<i>]=<byte> '<char>'        (one line per byte)
  child <pid>: set arr[0]=<byte> '<char>'      (the first byte, lowercased)
  child <pid> exited, status=0
  parent <pid>: array=b'hello'
  value=hello                                   (the result line)

Output of `counter`:
  parent <pid>: <N> processes x <M> increments, sync=<mode>[, yield]
  expected=<N*M> got=<count> lost=<N*M-count>  (the result line)
  elapsed=<seconds>s ns_per_op=<ns>             (timing, not a result)
With --sync lock or atomic, got == expected, always. With --sync none the
read-modify-write is split into an atomic load and a later atomic store, so
two processes can read the same value and one update is lost; --yield calls
sched_yield between the two, which makes losses all but certain.
--sync lock-each locks the load and, separately, the store: what
`v.value += 1` does on a Python Value('i', 0), whose lock=True (the
default) guards each get and each set on its own. It loses updates just
as `none` does. The lesson's fix is one lock around the whole
read-modify-write: `with v.get_lock(): v.value += 1` (or `with lock:`),
which is --sync lock.
  --sync     Python                                 loses updates
  none       Value('i', 0, lock=False); v.value += 1   yes
  lock-each  Value('i', 0); v.value += 1               yes
  lock       with v.get_lock(): v.value += 1           no
  atomic     (no Python peer: one fetch_add)           no

--quiet keeps only the result lines (value=..., expected=...).

Named segments: a NAME is /name (one leading slash, no other, 1-251 bytes
after it, no control character) and lives in /dev/shm/name, mode 0600,
until `unlink`. `create` allocates every byte at once (posix_fallocate),
so a full /dev/shm fails there and then; the segment appears whole or not at all. Only a segment
owned by you and writable by no other user is opened, and only one of
yours is unlinked (root too is refused another user's). A cell is a
signed 64-bit integer in the machine's byte order (little-endian on x86-64 and
arm64: Python's struct format '<q'), at an --offset that is a multiple
of 8; add wraps around. If another process truncates the segment, the
access fails with one line and exit 65, never a crash (SIGBUS). A
segment made sparse (Python's SharedMemory, C's ftruncate) gets its
pages when they are first touched: `write`, `add`, `set` and `cas`
allocate theirs first (fallocate), so on a full /dev/shm they fail with
ENOSPC (71) and write nothing; a `read` or `get` that needs a page there
fails with ENOSPC too, printing nothing of that piece. A segment
found empty (0 bytes) is looked at again for 100 ms before it is used:
Python's SharedMemory(create=True) and C programs make a segment with
shm_open and size it with ftruncate only after, so an empty one may still
be being created; once sized, it is used at its size. Still empty after
100 ms, it counts as not there yet: one line, exit 66.
Output: `read` the bytes as they are; `add` the new value; `get` the
value; `cas` the value found before (swapped or not); create, write,
set and unlink print nothing. `add` and `cas` look at their stdout
before they change the cell: closed (`>&-`) or a pipe whose reader has
gone, they fail and change nothing.

Exit status: 0 when done (a demo ran: lost updates are the lesson, not an
error); 1 when `cas` found another value; 2 for a bad flag, or an offset
or length outside the segment or a misaligned cell; 65 when the segment
is not usable (not a regular file, truncated under us); 66 when it does
not exist, or is still empty after 100 ms (not sized yet); 71 when a
system call fails (ENOSPC at create or, for a sparse segment, when a
page cannot be allocated; EFBIG for a size past `ulimit -f`;
EEXIST when the name is taken) or a demo child fails; 77 when it belongs
to another user or others may write it; 141 when stdout closed early
(`pk-shm read /stats | head -c 10`).

Examples:
  pk-shm bytes --text Hello
  pk-shm counter --procs 10 --iters 50 --sync none --yield
  pk-shm counter --procs 10 --iters 50 --sync lock-each --yield  # loses, as v.value += 1
  pk-shm counter --procs 10 --iters 50 --sync lock   # expected=500 got=500 lost=0
  pk-shm create /stats --size 4096
  pk-shm add /stats --offset 8          # 1, then 2, ... from any shell
  printf hello | pk-shm write /stats --offset 100
  pk-shm read /stats --offset 100 --len 5
  python3 -c 'from multiprocessing import shared_memory as s; print(bytes(s.SharedMemory(\"stats\", track=False).buf[100:105]))'
  pk-shm unlink /stats
(Python before 3.13 has no track=False: its resource tracker unlinks even a
segment it only attached, when it exits; unregister it there.)";

/// Shared memory: a byte array and a counter across fork; named segments.
#[derive(Debug, Parser)]
#[command(name = "pk-shm", version, after_help = AFTER_HELP)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Cmd,

    /// Print only the result lines.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// What to show.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// A child prints each byte of a shared array and lowercases the first;
    /// the parent sees the change.
    Bytes {
        /// The array's initial bytes (1-4096 bytes).
        #[arg(long, value_name = "TEXT", default_value = "Hello", value_parser = text)]
        text: String,
    },
    /// N processes each add 1 to a shared counter M times.
    Counter {
        /// Number of processes (1-1024).
        #[arg(short = 'n', long, value_name = "N", default_value_t = 10,
              value_parser = clap::value_parser!(u32).range(1..=1024))]
        procs: u32,
        /// Increments per process (1-100000000).
        #[arg(short = 'i', long, value_name = "M", default_value_t = 50,
              value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
        iters: u64,
        /// none: load then store (updates get lost); lock-each: the load and
        /// the store each locked on their own, as `v.value += 1` on Python's
        /// `Value('i', 0)` (updates still get lost); lock: one process-shared
        /// semaphore around the load and store (`with v.get_lock():`);
        /// atomic: fetch_add.
        #[arg(short, long, value_enum, default_value = "none")]
        sync: Sync,
        /// sched_yield between the load and the store (with --sync none,
        /// lock-each or lock), so other processes run in between.
        #[arg(short = 'y', long = "yield")]
        yield_: bool,
    },
    /// Create the named segment NAME of --size zeroed bytes (mode 0600).
    Create {
        /// The segment: /name.
        #[arg(value_name = "NAME", value_parser = name)]
        name: String,
        /// Its size in bytes (1 to 1099511627776).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=shm::MAX_SEGMENT))]
        size: u64,
    },
    /// Print --len bytes of NAME from --offset, raw (default: to the end).
    Read {
        /// The segment: /name.
        #[arg(value_name = "NAME", value_parser = name)]
        name: String,
        /// Where to start, in bytes.
        #[arg(long, value_name = "O", default_value_t = 0)]
        offset: u64,
        /// How many bytes (default: up to the end).
        #[arg(long, value_name = "L")]
        len: Option<u64>,
    },
    /// Write DATA (or stdin, with `-` or no DATA) into NAME at --offset.
    Write {
        /// The segment: /name.
        #[arg(value_name = "NAME", value_parser = name)]
        name: String,
        /// Where to start, in bytes.
        #[arg(long, value_name = "O", default_value_t = 0)]
        offset: u64,
        /// The bytes to write; `-` or nothing reads them from stdin.
        #[arg(value_name = "DATA")]
        data: Option<OsString>,
    },
    /// Add --by to the 64-bit cell at --offset, atomically; print the new value.
    Add {
        /// The segment: /name.
        #[arg(value_name = "NAME", value_parser = name)]
        name: String,
        /// The cell's byte offset (a multiple of 8).
        #[arg(long, value_name = "O", default_value_t = 0)]
        offset: u64,
        /// How much to add (may be negative).
        #[arg(
            long,
            value_name = "N",
            default_value_t = 1,
            allow_negative_numbers = true
        )]
        by: i64,
    },
    /// Print the 64-bit cell at --offset.
    Get {
        /// The segment: /name.
        #[arg(value_name = "NAME", value_parser = name)]
        name: String,
        /// The cell's byte offset (a multiple of 8).
        #[arg(long, value_name = "O", default_value_t = 0)]
        offset: u64,
    },
    /// Store VALUE in the 64-bit cell at --offset.
    Set {
        /// The segment: /name.
        #[arg(value_name = "NAME", value_parser = name)]
        name: String,
        /// The cell's byte offset (a multiple of 8).
        #[arg(long, value_name = "O", default_value_t = 0)]
        offset: u64,
        /// The value (a signed 64-bit integer).
        #[arg(value_name = "VALUE", allow_negative_numbers = true)]
        value: i64,
    },
    /// Store NEW in the cell at --offset if it holds EXPECTED; print the
    /// value found; exit 1 when it was not EXPECTED.
    Cas {
        /// The segment: /name.
        #[arg(value_name = "NAME", value_parser = name)]
        name: String,
        /// The cell's byte offset (a multiple of 8).
        #[arg(long, value_name = "O", default_value_t = 0)]
        offset: u64,
        /// The value the cell must hold.
        #[arg(value_name = "EXPECTED", allow_negative_numbers = true)]
        expected: i64,
        /// The value to store.
        #[arg(value_name = "NEW", allow_negative_numbers = true)]
        new: i64,
    },
    /// Remove the named segment NAME (mappings keep it until they end).
    Unlink {
        /// The segment: /name.
        #[arg(value_name = "NAME", value_parser = name)]
        name: String,
    },
}

fn name(s: &str) -> std::result::Result<String, String> {
    shm::check_name(s).map(|_| s.to_string())
}

/// How the counter's increments are protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Sync {
    /// Nothing: an atomic load, then an atomic store of the value plus one.
    None,
    /// The load under the lock, then the store under the lock again:
    /// Python's `v.value += 1` on a `Value` with its default lock.
    LockEach,
    /// A process-shared semaphore used as a lock around the load and store.
    Lock,
    /// One atomic fetch_add per increment.
    Atomic,
}

fn text(s: &str) -> std::result::Result<String, String> {
    match s.len() {
        0 => Err("the text needs at least 1 byte".into()),
        1..=4096 => Ok(s.to_string()),
        n => Err(format!("{n} bytes is more than the limit of 4096")),
    }
}

/// Run pk-shm.
pub fn run(args: Args, out: &mut Out) -> Result<u8> {
    out.set_quiet(args.quiet);
    named(args.cmd, out).map_err(|f| {
        // The library names its parameter (`offset: ...`); name the flag.
        let e = f.error();
        match e.to_string().strip_prefix("offset: ") {
            Some(why) if e.kind() == crate::ErrorKind::InvalidInput => {
                Error::invalid("--offset", why.to_string()).into()
            }
            _ => f,
        }
    })
}

fn named(cmd: Cmd, out: &mut Out) -> Result<u8> {
    match cmd {
        Cmd::Bytes { text } => bytes(text.as_bytes(), out),
        Cmd::Counter {
            procs,
            iters,
            sync,
            yield_,
        } => counter(procs, iters, sync, yield_, out),
        Cmd::Create { name, size } => {
            Segment::create(&name, size)?;
            Ok(exit::OK)
        }
        Cmd::Read { name, offset, len } => {
            let seg = Segment::open(&name)?;
            let size = seg.len() as u64;
            let len = len.unwrap_or(size.saturating_sub(offset));
            // Checked before allocating: the segment says how much fits.
            if offset.checked_add(len).is_none_or(|end| end > size) {
                return Err(Error::invalid(
                    "--len",
                    format!("{len} bytes at offset {offset} do not fit in {name} ({size} bytes)"),
                )
                .into());
            }
            // In pieces: a segment may be far larger than the memory this
            // process may allocate (a sparse 64 GiB file, `ulimit -v`).
            let mut buf = vec![0u8; len.min(READ_PIECE) as usize];
            let end = offset + len;
            let mut at = offset;
            while at < end {
                let n = (end - at).min(READ_PIECE) as usize;
                seg.read(at, &mut buf[..n])?;
                out.bytes(&buf[..n])?;
                at += n as u64;
            }
            Ok(exit::OK)
        }
        Cmd::Write { name, offset, data } => {
            let seg = Segment::open(&name)?;
            let room = (seg.len() as u64).saturating_sub(offset);
            let bytes = match data {
                Some(d) if d != "-" => d.as_bytes().to_vec(),
                _ => read_stdin(room, &name, offset)?,
            };
            seg.write(offset, &bytes)?;
            Ok(exit::OK)
        }
        Cmd::Add { name, offset, by } => {
            let seg = Segment::open(&name)?;
            // The new value must be printed: a stdout that cannot take it
            // (closed, its reader gone) fails before the cell changes.
            crate::cmd::stdout_writable()?;
            let v = seg.add(offset, by)?;
            outln!(out, "{v}")?;
            Ok(exit::OK)
        }
        Cmd::Get { name, offset } => {
            let v = Segment::open(&name)?.load(offset)?;
            outln!(out, "{v}")?;
            Ok(exit::OK)
        }
        Cmd::Set {
            name,
            offset,
            value,
        } => {
            Segment::open(&name)?.store(offset, value)?;
            Ok(exit::OK)
        }
        Cmd::Cas {
            name,
            offset,
            expected,
            new,
        } => {
            let seg = Segment::open(&name)?;
            crate::cmd::stdout_writable()?;
            let r = seg.compare_exchange(offset, expected, new)?;
            let (found, code) = match r {
                Ok(v) => (v, exit::OK),
                Err(v) => (v, exit::DECLINED),
            };
            outln!(out, "{found}")?;
            Ok(code)
        }
        Cmd::Unlink { name } => {
            shm::unlink(&name)?;
            Ok(exit::OK)
        }
    }
}

/// All of stdin, refused (before anything is written) when it holds more
/// than the `room` bytes left in the segment after `offset`.
/// How many bytes `read` copies out and prints at a time.
const READ_PIECE: u64 = 1 << 20;

fn read_stdin(room: u64, name: &str, offset: u64) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    crate::cmd::stdin_for_input()?
        .lock()
        .take(room.saturating_add(1))
        .read_to_end(&mut buf)
        .ctx("read", "stdin")?;
    if buf.len() as u64 > room {
        return Err(Error::invalid(
            "DATA",
            format!("stdin holds more than the {room} bytes left in {name} after offset {offset}"),
        )
        .into());
    }
    Ok(buf)
}

fn show(b: &[u8]) -> String {
    format!("b'{}'", b.escape_ascii())
}

fn byte_char(b: u8) -> String {
    std::ascii::escape_default(b).to_string()
}

fn bytes(text: &[u8], out: &mut Out) -> Result<u8> {
    let arr = SharedArray::from_slice(text)?;
    let me = process::getpid();
    note!(
        out,
        "parent {me}: array={} ({} bytes, memfd mapped MAP_SHARED)",
        show(&arr.to_vec()),
        arr.len()
    )?;
    // Fork: pk-shm is single-threaded, and the child ends with _exit.
    let pid = match crate::cmd::fork("child")? {
        Fork::Child => {
            let me = process::getpid();
            for i in 0..arr.len() {
                let b = arr.get(i);
                let _ = note!(out, "child {me}: arr[{i}]={b} '{}'", byte_char(b));
            }
            let first = arr.get(0).to_ascii_lowercase();
            arr.set(0, first);
            let _ = note!(out, "child {me}: set arr[0]={first} '{}'", byte_char(first));
            process::_exit(0)
        }
        Fork::Parent(pid) => pid,
    };
    let mut child = Child::new(pid);
    let status = child.wait()?;
    note!(out, "child {pid} {status}")?;
    let now = arr.to_vec();
    note!(out, "parent {me}: array={}", show(&now))?;
    outln!(out, "value={}", now.escape_ascii())?;
    Ok(exit::OK)
}

fn counter(procs: u32, iters: u64, sync: Sync, yield_: bool, out: &mut Out) -> Result<u8> {
    let count = SharedValue::<u64>::new(0)?;
    let lock = Semaphore::new(1)?;
    // Children wait at this gate until all are forked, so they really run
    // at the same time instead of one after another.
    let gate = Semaphore::new(0)?;
    let mode = match sync {
        Sync::None => "none",
        Sync::LockEach => "lock-each",
        Sync::Lock => "lock",
        Sync::Atomic => "atomic",
    };
    note!(
        out,
        "parent {}: {procs} processes x {iters} increments, sync={mode}{}",
        process::getpid(),
        if yield_ { ", yield" } else { "" }
    )?;

    // On an error, the group kills and reaps the children already made.
    let mut children = Children::new();
    for i in 1..=procs {
        // The child never returns from add: it ends with _exit.
        children.start(format_args!("child {i} of {procs}"), || {
            add(&gate, &lock, &count, iters, sync, yield_)
        })?;
    }
    let start = Instant::now();
    for _ in 0..procs {
        gate.post()?;
    }
    let failed = children.wait_all()?;
    let elapsed = start.elapsed();
    crate::cmd::fail_on_child(failed, "child")?;
    let expected = u64::from(procs) * iters;
    let got = count.get();
    outln!(
        out,
        "expected={expected} got={got} lost={}",
        expected.saturating_sub(got)
    )?;
    note!(
        out,
        "elapsed={:.3}s ns_per_op={:.1}",
        elapsed.as_secs_f64(),
        elapsed.as_nanos() as f64 / expected as f64
    )?;
    Ok(exit::OK)
}

/// A child's increments. Never returns.
fn add(
    gate: &Semaphore,
    lock: &Semaphore,
    count: &SharedValue<u64>,
    iters: u64,
    sync: Sync,
    yield_: bool,
) -> ! {
    if gate.wait().is_err() {
        process::_exit(i32::from(exit::OS_ERR));
    }
    let cell = count.atomic();
    for _ in 0..iters {
        match sync {
            Sync::Atomic => {
                cell.fetch_add(1, Ordering::Relaxed);
            }
            Sync::None => {
                // A read-modify-write split in two: another process may
                // store between our load and our store, and its update is
                // then overwritten. Atomic load/store keep it free of UB.
                let v = cell.load(Ordering::Relaxed);
                if yield_ {
                    std::thread::yield_now();
                }
                cell.store(v + 1, Ordering::Relaxed);
            }
            Sync::LockEach => {
                // Each access is atomic under the lock, the increment is
                // not: between the two, another process may store.
                let Ok(held) = lock.acquire() else {
                    process::_exit(i32::from(exit::OS_ERR));
                };
                let v = cell.load(Ordering::Relaxed);
                drop(held);
                if yield_ {
                    std::thread::yield_now();
                }
                let Ok(_held) = lock.acquire() else {
                    process::_exit(i32::from(exit::OS_ERR));
                };
                cell.store(v + 1, Ordering::Relaxed);
            }
            Sync::Lock => {
                let Ok(_held) = lock.acquire() else {
                    process::_exit(i32::from(exit::OS_ERR));
                };
                let v = cell.load(Ordering::Relaxed);
                if yield_ {
                    std::thread::yield_now();
                }
                cell.store(v + 1, Ordering::Relaxed);
            }
        }
    }
    process::_exit(0)
}
