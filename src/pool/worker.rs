//! A worker's side: read a task frame, run each item, send one result
//! frame. Raw tasks are called through a pointer per item; a typed task's
//! whole batch loop is compiled for it ([`Typed`]), with a packed fast path
//! when its arguments and results have fixed widths.

use std::marker::PhantomData;
use std::os::fd::AsFd;

use super::arena::{self, Arena, Side};
use super::frame::{BLOCK, RESULT_HEAD, TASK_HEAD, VARIABLE};
use super::registry::{Outcome, Registry, Runner};
use super::wire::{Wire, read};
use crate::pipe::{self, Reader, Writer};
use crate::process;
use crate::spin;

/// A typed task's batch loop, behind one dynamic call per batch.
pub(crate) trait Batched: Send + Sync {
    fn run(&self, input: &[u8], width: u32, count: usize, out: &mut Output<'_>) -> Step;
}

/// A typed task: `f` takes an `A` and returns an [`Outcome`].
pub(crate) struct Typed<A, O, F> {
    f: F,
    _types: PhantomData<fn(A) -> O>,
}

impl<A, O, F> Typed<A, O, F> {
    pub(crate) fn new(f: F) -> Self {
        Typed {
            f,
            _types: PhantomData,
        }
    }
}

impl<A, O, F> Typed<A, O, F>
where
    A: Wire,
    O: Outcome + 'static,
    F: Fn(A) -> O + Send + Sync + 'static,
{
    /// One item: decoded, run, its result or message.
    #[inline(always)]
    fn call(&self, arg: &[u8]) -> std::result::Result<O::Value, String> {
        (self.f)(decode::<A>(arg)?).into_result()
    }

    /// The common case, arguments packed at the task's width and results
    /// of a fixed width: a loop with no cursor and no table to keep, from
    /// the first item up to the first one that fails (an error or a
    /// panic). That item is recorded as [`run_items`] would, and the cursor
    /// left after it, for [`run_items`] to go on with the rest.
    #[inline(never)]
    pub(crate) fn run_packed(&self, input: &[u8], count: usize, out: &mut Output<'_>) -> Step {
        let (Some(a_width @ 1..), Some(r_width @ 1..)) = (A::WIDTH, O::Value::WIDTH) else {
            return Ok(());
        };
        let size = count.checked_mul(a_width).ok_or(())?;
        let args = input
            .get(TASK_HEAD..TASK_HEAD.checked_add(size).ok_or(())?)
            .ok_or(())?;
        let base = out.data.len();
        // Results are appended (run() reserved the room) with no length
        // per item, not written over a zero-filled area (a memset of the
        // whole batch first). Small ones are written a block at a time
        // into a block on the stack, appended in one copy: appending each
        // result stores and reloads the vector's length through memory
        // once an item, which held the loop to about 4 ns an item (perf
        // annotate of a warm map over 10 000 ints), and a loop over the
        // block's slots needs no check that the block is full.
        // Items done, and how many of them wait in the block: read after
        // a panic, so kept where the unwinding sees them.
        let mut done = 0usize;
        let mut block = [0u8; BLOCK];
        let mut waiting = 0usize;
        let data = &mut *out.data;
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if r_width > BLOCK {
                for arg in args.chunks_exact(a_width) {
                    match self.call(arg) {
                        Ok(r) if r.size() != r_width => return Err(()),
                        Ok(r) => r.encode(data),
                        Err(message) => return Ok(Some(message)),
                    }
                    done += 1;
                }
                return Ok(None);
            }
            for group in args.chunks(BLOCK / r_width * a_width) {
                for (slot, arg) in block
                    .chunks_exact_mut(r_width)
                    .zip(group.chunks_exact(a_width))
                {
                    match self.call(arg) {
                        // A value whose size is not its type's WIDTH
                        // breaks the Wire contract: stop here, and the
                        // batch is refused below.
                        Ok(r) if r.size() != r_width => return Err(()),
                        Ok(r) => r.put(slot),
                        Err(message) => return Ok(Some(message)),
                    }
                    done += 1;
                    waiting += 1;
                }
                data.extend_from_slice(&block[..waiting * r_width]);
                waiting = 0;
            }
            Ok(None)
        }));
        out.data.extend_from_slice(&block[..waiting * r_width]);
        // Each result is `r_width` bytes (the Wire contract); a type that
        // broke it would shift every later item: refuse the batch.
        if out.data.len() != base + done * r_width || matches!(run, Ok(Err(()))) {
            return Err(());
        }
        let failure = match run {
            Ok(Err(())) | Ok(Ok(None)) => None,
            Ok(Ok(Some(message))) => Some(message.into_bytes()),
            Err(panic) => Some(panic_bytes(&*panic)),
        };
        if done > 0 {
            out.shape.record(out.table, 0, r_width, true)?;
        }
        out.cursor = Cursor {
            next: done,
            at: TASK_HEAD + done * a_width,
            head: base + done * r_width,
        };
        out.data.truncate(out.cursor.head);
        if let Some(message) = failure {
            // Past the failed item's argument, as the general loop leaves it.
            out.cursor.at += a_width;
            out.fail(&message)?;
        }
        Ok(())
    }
}

impl<A, O, F> Batched for Typed<A, O, F>
where
    A: Wire,
    O: Outcome + 'static,
    F: Fn(A) -> O + Send + Sync + 'static,
{
    fn run(&self, input: &[u8], width: u32, count: usize, out: &mut Output<'_>) -> Step {
        // `count` comes from the frame: never reserve past what its
        // arguments could need.
        let per_item = O::Value::WIDTH.unwrap_or(0);
        out.data
            .reserve(count.min(input.len()).saturating_mul(per_item));
        let packed = A::WIDTH.is_some_and(|w| w > 0 && width as usize == w);
        if packed && O::Value::WIDTH.is_some_and(|w| w > 0) {
            self.run_packed(input, count, out)?;
        }
        run_items(input, width, count, out, |arg, data| {
            self.call(arg)?.encode(data);
            Ok(())
        })
    }
}

/// A typed task's argument, or the message that fails its item.
#[inline]
fn decode<A: Wire>(arg: &[u8]) -> std::result::Result<A, String> {
    A::get(arg).ok_or_else(|| match A::WIDTH {
        Some(w) => format!("the argument is {} bytes, the task takes {w}", arg.len()),
        None => format!(
            "the argument ({} bytes) is not a {}",
            arg.len(),
            std::any::type_name::<A>()
        ),
    })
}

/// The worker's loop: read a task frame, run each item, send the results;
/// exit 0 at end of file, 1 if the parent is gone.
pub(crate) fn worker_main(
    registry: &Registry,
    tasks: Reader,
    results: Writer,
    arena: Option<Arena<'_>>,
) -> ! {
    // A task's panic is its own failure, reported to the parent: keep the
    // binary's panic hook (which calls it a bug) quiet in workers.
    std::panic::set_hook(Box::new(|_| {}));
    // Tasks' panics are caught per item; anything that still unwinds (a
    // panic payload whose drop panics, say) must end the worker here, not
    // unwind into the code of the parent it was forked from.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // The worker is its task pipe's only reader: a FrameReader may read
        // ahead, and a frame costs one read(2) instead of two.
        let mut tasks = pipe::FrameReader::new(tasks);
        let mut output = Vec::new();
        let mut table = Vec::new();
        let mut from_arena = Vec::new();
        loop {
            if tasks.is_drained() {
                // Look for the next batch a moment before sleeping on the
                // pipe (see `spin`).
                spin::readable(tasks.get_ref().as_fd(), None, spin::POOL);
            }
            let input = match tasks.recv() {
                // An empty frame is the pool's join: stop, as at end of
                // file (which a copy of the task pipe in another process
                // the parent forked would hold off).
                Ok(Some([])) | Ok(None) => process::_exit(0),
                Ok(Some(input)) => input,
                Err(_) => process::_exit(1),
            };
            // A note: the frame is in the task area of its slot, and the
            // result may go back through the result area of the same one.
            let (input, slot) = match (arena::note(input), arena) {
                (None, _) => (input, None),
                (Some(Ok(note)), Some(arena)) => {
                    arena.take(note, Side::Task, &mut from_arena);
                    (&from_arena[..], Some(note.slot))
                }
                // A note it cannot follow: the parent broke the protocol.
                (Some(_), _) => process::_exit(1),
            };
            let sent = run_batch(registry, input, &mut output, &mut table).is_ok_and(|()| {
                let parts: [&[u8]; 3] = if table.is_empty() {
                    [&output, &[], &[]]
                } else {
                    let (head, data) = output.split_at(RESULT_HEAD);
                    [head, &table, data]
                };
                let note = slot
                    .zip(arena)
                    .and_then(|(k, arena)| arena.put(k, Side::Result, &parts));
                if let Some(note) = note {
                    return results.send(&note).is_ok();
                }
                if table.is_empty() {
                    // Header and items are one buffer: a small frame is
                    // one write(2), with no vector for the kernel to read.
                    return results.send(&output).is_ok();
                }
                let (head, data) = output.split_at(RESULT_HEAD);
                results.send_parts(&[head, &table, data]).is_ok()
            });
            if !sent {
                process::_exit(1);
            }
        }
    }));
    process::_exit(1)
}

/// Run one task frame. `output` gets the result header and the items'
/// bytes; `table` gets the per-item table when the results are not all
/// successes of one width, and is left empty when they are.
pub(crate) fn run_batch(
    registry: &Registry,
    input: &[u8],
    output: &mut Vec<u8>,
    table: &mut Vec<u8>,
) -> Step {
    let id = read::<u64>(input, 0).ok_or(())?;
    let func: u16 = read(input, 8).ok_or(())?;
    let count = read::<u32>(input, 10).ok_or(())? as usize;
    let width = read::<u32>(input, 14).ok_or(())?;
    let runner = registry.runner(func).ok_or(())?;
    output.clear();
    table.clear();
    output.extend_from_slice(&id.to_le_bytes());
    output.extend_from_slice(&u32::try_from(count).map_err(drop)?.to_le_bytes());
    output.extend_from_slice(&VARIABLE.to_le_bytes());
    let mut out = Output {
        data: output,
        table,
        shape: Shape::default(),
        cursor: Cursor {
            next: 0,
            at: TASK_HEAD,
            head: RESULT_HEAD,
        },
    };
    match runner {
        Runner::Bytes(f) => run_items(input, width, count, &mut out, f)?,
        Runner::Typed(t) => t.run(input, width, count, &mut out)?,
    }
    if out.cursor.at != input.len() {
        return Err(());
    }
    if out.table.is_empty() {
        let packed = out.shape.packed.unwrap_or(0);
        out.data[12..16].copy_from_slice(&packed.to_le_bytes());
    }
    Ok(())
}

/// A worker's step: `Err` means the task frame is malformed (or a result
/// too large), and the worker exits.
pub(crate) type Step = std::result::Result<(), ()>;

/// A batch's results as the worker builds them.
pub(crate) struct Output<'a> {
    /// The result header, then each item's bytes.
    pub(crate) data: &'a mut Vec<u8>,
    /// The per-item table, once the results stop packing.
    pub(crate) table: &'a mut Vec<u8>,
    pub(crate) shape: Shape,
    pub(crate) cursor: Cursor,
}

impl Output<'_> {
    /// Fail the item at the cursor with `message`, in place of whatever it
    /// wrote, and move the cursor past it.
    fn fail(&mut self, message: &[u8]) -> Step {
        let Cursor { next, head, .. } = self.cursor;
        self.data.truncate(head);
        self.data.extend_from_slice(message);
        self.shape
            .record(self.table, next, self.data.len() - head, false)?;
        self.cursor.next += 1;
        self.cursor.head = self.data.len();
        Ok(())
    }
}

/// Where a batch's run of items is: kept up to date before each task
/// runs, so that after a panic it names the item that panicked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cursor {
    /// The item running or to run next.
    pub(crate) next: usize,
    /// Where the argument after it starts in the task frame.
    pub(crate) at: usize,
    /// Where its result starts in the output.
    pub(crate) head: usize,
}

/// Run every item of a batch through `task`, which appends one item's
/// result to the buffer it is given or returns an error message. One
/// catch_unwind covers a run of items, not each item: a panic ends the run
/// at the item that panicked, which fails alone, and a new run starts
/// after it. Generic over `task`, so a typed task's loop is compiled with
/// the task inlined.
fn run_items<G>(input: &[u8], width: u32, count: usize, out: &mut Output<'_>, mut task: G) -> Step
where
    G: FnMut(&[u8], &mut Vec<u8>) -> std::result::Result<(), String>,
{
    while out.cursor.next < count {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_from_cursor(input, width, count, out, &mut task)
        }));
        match run {
            Ok(done) => done?,
            Err(panic) => out.fail(&panic_bytes(&*panic))?,
        }
    }
    Ok(())
}

/// What a task that panicked reports for its item.
fn panic_bytes(panic: &(dyn std::any::Any + Send)) -> Vec<u8> {
    format!("panicked: {}", crate::error::panic_message(panic)).into_bytes()
}

/// The loop of [`run_items`]: from `out.cursor` to `count`, on local
/// copies (kept in registers), storing the cursor once per item.
#[inline(always)]
fn run_from_cursor<G>(
    input: &[u8],
    width: u32,
    count: usize,
    out: &mut Output<'_>,
    task: &mut G,
) -> Step
where
    G: FnMut(&[u8], &mut Vec<u8>) -> std::result::Result<(), String>,
{
    let Cursor {
        mut next, mut at, ..
    } = out.cursor;
    while next < count {
        let (start, len) = if width == VARIABLE {
            (
                at.checked_add(4).ok_or(())?,
                read::<u32>(input, at).ok_or(())? as usize,
            )
        } else {
            (at, width as usize)
        };
        let after = start.checked_add(len).ok_or(())?;
        let arg = input.get(start..after).ok_or(())?;
        at = after;
        let head = out.data.len();
        out.cursor = Cursor { next, at, head };
        let ok = match task(arg, out.data) {
            Ok(()) => true,
            Err(message) => {
                out.data.truncate(head);
                out.data.extend_from_slice(message.as_bytes());
                false
            }
        };
        out.shape
            .record(out.table, next, out.data.len() - head, ok)?;
        next += 1;
    }
    out.cursor = Cursor {
        next,
        at,
        head: out.data.len(),
    };
    Ok(())
}

/// The results of a batch so far: packed while every item succeeded with
/// one width, a table from the first item that breaks that on.
#[derive(Debug, Default)]
pub(crate) struct Shape {
    /// The width of every result so far, while they pack (`table` is
    /// empty); `None` before the first result and once the table started.
    pub(crate) packed: Option<u32>,
}

impl Shape {
    /// Record the result of item `i` (every item before it is recorded):
    /// `len` bytes, a success or a failure.
    #[inline]
    fn record(&mut self, table: &mut Vec<u8>, i: usize, len: usize, ok: bool) -> Step {
        let len = u32::try_from(len)
            .ok()
            .filter(|l| l & super::frame::FAILED == 0)
            .ok_or(())?;
        if ok && self.packed == Some(len) {
            return Ok(());
        }
        self.record_slow(table, i, len, ok);
        Ok(())
    }

    #[cold]
    fn record_slow(&mut self, table: &mut Vec<u8>, i: usize, len: u32, ok: bool) {
        if i == 0 && ok {
            self.packed = Some(len);
            return;
        }
        if let Some(w) = self.packed.take() {
            // The first item that breaks the packing: the ones before it
            // all succeeded with width `w`.
            for _ in 0..i {
                table.extend_from_slice(&w.to_le_bytes());
            }
        }
        let entry = if ok { len } else { len | super::frame::FAILED };
        table.extend_from_slice(&entry.to_le_bytes());
    }
}
