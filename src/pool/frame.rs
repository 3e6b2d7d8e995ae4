//! The pool's two frames, task and result, inside [`crate::pipe`]'s
//! length-prefixed frames (the one frame codec of the crate: the pool adds
//! no framing of its own, only the layout of a frame's payload).
//!
//! Little-endian throughout. Items of one width, the common case (`map`
//! over numbers), travel packed with no per-item framing, as a C pool sends
//! an array:
//! - A task frame is `id u64, func u16, count u32, width u32`, then either
//!   `count × width` bytes (every argument is `width` bytes long), or, when
//!   `width` is [`VARIABLE`], `count` times `len u32, bytes`.
//! - A result frame is `id u64, count u32, width u32`, then either
//!   `count × width` bytes (every task succeeded with a result of `width`
//!   bytes), or, when `width` is [`VARIABLE`], a table of `count` entries
//!   `len u32` (bit 31, [`FAILED`], set: the task failed and its bytes are
//!   the message) followed by the items' bytes, back to back.

use std::marker::PhantomData;

use super::wire::{Wire, read};
use crate::error::{Error, Result};
use crate::pipe;

/// `width` on the wire when items differ in length (or some failed).
pub(crate) const VARIABLE: u32 = u32::MAX;
/// Bytes before the items in a task frame: id, func, count, width.
pub(crate) const TASK_HEAD: usize = 18;
/// Bytes before the items in a result frame: id, count, width.
pub(crate) const RESULT_HEAD: usize = 16;
/// Bit 31 of a result's table entry: the task failed.
pub(crate) const FAILED: u32 = 1 << 31;

/// How the items of a task frame are written: raw bytes ([`AsBytes`]) or
/// typed values ([`Values`]).
pub(crate) trait Codec {
    /// One argument.
    type Item;
    /// `Some(n)` when every item is `n` bytes, known without looking.
    const WIDTH: Option<usize>;
    /// The item's length on the wire.
    fn size(item: &Self::Item) -> usize;
    /// Write the item into `out`, exactly [`Codec::size`] bytes.
    fn put(item: &Self::Item, out: &mut [u8]);
    /// Append the item's bytes to `out`.
    fn append(item: &Self::Item, out: &mut Vec<u8>);
}

/// Arguments that are bytes already (the raw, by-name tasks).
pub(crate) struct AsBytes<B>(PhantomData<B>);

impl<B: AsRef<[u8]>> Codec for AsBytes<B> {
    type Item = B;
    const WIDTH: Option<usize> = None;
    #[inline]
    fn size(item: &B) -> usize {
        item.as_ref().len()
    }
    #[inline]
    fn put(item: &B, out: &mut [u8]) {
        out.copy_from_slice(item.as_ref());
    }
    #[inline]
    fn append(item: &B, out: &mut Vec<u8>) {
        out.extend_from_slice(item.as_ref());
    }
}

/// Typed arguments, written by their [`Wire`] encoding.
pub(crate) struct Values<A>(PhantomData<A>);

impl<A: Wire> Codec for Values<A> {
    type Item = A;
    const WIDTH: Option<usize> = A::WIDTH;
    #[inline]
    fn size(item: &A) -> usize {
        item.size()
    }
    #[inline]
    fn put(item: &A, out: &mut [u8]) {
        item.put(out);
    }
    #[inline]
    fn append(item: &A, out: &mut Vec<u8>) {
        item.encode(out);
    }
}

/// Encode a task frame for `args` into `frame`; returns the item count.
/// A batch over the frame limit is refused before anything is allocated.
pub(crate) fn encode_task<C: Codec>(
    frame: &mut Vec<u8>,
    id: u64,
    func: u16,
    args: &[C::Item],
) -> Result<u32> {
    let count = u32::try_from(args.len())
        .map_err(|_| Error::invalid("task", "a batch holds at most 2^32-1 items"))?;
    let (fixed, width, mut size) = match C::WIDTH {
        // Known widths need no look at the items.
        Some(w) => (true, w, w.saturating_mul(args.len())),
        None => {
            let first = args.first().map_or(0, |a| C::size(a));
            let mut fixed = true;
            let mut size = 0usize;
            for a in args {
                let len = C::size(a);
                if len > pipe::MAX_FRAME {
                    return Err(Error::invalid("task", "an argument is over 1 GiB"));
                }
                fixed &= len == first;
                size = size.saturating_add(len);
            }
            (fixed, first, size)
        }
    };
    if !fixed {
        size = size.saturating_add(4usize.saturating_mul(args.len()));
    }
    // The whole frame must fit a pipe frame; refused here, before anything
    // is queued or allocated.
    if TASK_HEAD.saturating_add(size) > pipe::MAX_FRAME {
        return Err(Error::invalid(
            "task",
            format!(
                "a batch of {} arguments is over {} MiB on the wire: use smaller chunks",
                args.len(),
                pipe::MAX_FRAME >> 20
            ),
        ));
    }
    let wire_width = if fixed {
        u32::try_from(width).expect("at most MAX_FRAME")
    } else {
        VARIABLE
    };
    frame.clear();
    // Sized once: growing a frame of thousands of items by doubling costs
    // copies and, past the allocator's trim threshold, page faults.
    frame.reserve(TASK_HEAD + size);
    frame.extend_from_slice(&id.to_le_bytes());
    frame.extend_from_slice(&func.to_le_bytes());
    frame.extend_from_slice(&count.to_le_bytes());
    frame.extend_from_slice(&wire_width.to_le_bytes());
    if fixed {
        // The usual widths get a loop of their own with the width known,
        // which copies each item with one move instead of a call to memcpy,
        // and appends it: no zero-fill of the body first.
        match width {
            0 => {}
            1 => append::<C, 1>(frame, args),
            2 => append::<C, 2>(frame, args),
            4 => append::<C, 4>(frame, args),
            8 => append::<C, 8>(frame, args),
            16 => append::<C, 16>(frame, args),
            w => {
                frame.resize(TASK_HEAD + size, 0);
                pack::<C>(&mut frame[TASK_HEAD..], args, w);
            }
        }
    } else {
        for a in args {
            let len = u32::try_from(C::size(a)).expect("at most MAX_FRAME");
            frame.extend_from_slice(&len.to_le_bytes());
            C::append(a, frame);
        }
    }
    Ok(count)
}

/// Bytes of items gathered on the stack before they are appended to a
/// frame in one copy.
pub(crate) const BLOCK: usize = 512;

/// Append `args`, each `W` bytes long, to `frame`, back to back (room
/// for them reserved already). The items are written into a block on the
/// stack and the block appended in one copy: appending item by item
/// stores and reloads the vector's length through memory at each item, a
/// chain of dependent loads that held this loop to about 2.5 ns an item
/// (perf annotate of a warm map over 10 000 ints).
#[inline(always)]
fn append<C: Codec, const W: usize>(frame: &mut Vec<u8>, args: &[C::Item]) {
    let mut block = [0u8; BLOCK];
    for group in args.chunks(BLOCK / W) {
        let n = group.len() * W;
        for (dst, a) in block[..n].chunks_exact_mut(W).zip(group) {
            C::put(a, dst);
        }
        frame.extend_from_slice(&block[..n]);
    }
}

/// Write `args`, each `width` (not 0) bytes long, into `body`, back to
/// back. Always inlined, so that a constant width compiles to its own loop.
#[inline(always)]
fn pack<C: Codec>(body: &mut [u8], args: &[C::Item], width: usize) {
    for (dst, a) in body.chunks_exact_mut(width).zip(args) {
        C::put(a, dst);
    }
}

/// Where a result frame's items are.
#[derive(Debug, Clone)]
pub(crate) enum Layout {
    /// Every item succeeded with `width` bytes, packed after the header.
    Fixed(usize),
    /// Item `i` starts at `starts[i]`; its table entry gives its length and
    /// whether it failed.
    Table(Vec<u32>),
}

/// Check a result frame's items against its header and find them.
pub(crate) fn parse_layout(
    frame: &[u8],
    count: u32,
    width: u32,
) -> std::result::Result<Layout, &'static str> {
    if u32::try_from(frame.len()).is_err() {
        return Err("a result frame over 4 GiB");
    }
    let count = count as usize;
    if width != VARIABLE {
        let width = width as usize;
        return match count
            .checked_mul(width)
            .and_then(|n| n.checked_add(RESULT_HEAD))
        {
            Some(n) if n == frame.len() => Ok(Layout::Fixed(width)),
            _ => Err("a result frame's length does not match its header"),
        };
    }
    let data = count
        .checked_mul(4)
        .and_then(|n| n.checked_add(RESULT_HEAD))
        .filter(|&n| n <= frame.len())
        .ok_or("short result")?;
    let mut starts = Vec::with_capacity(count);
    let mut at = data;
    for i in 0..count {
        let len =
            (read::<u32>(frame, RESULT_HEAD + 4 * i).expect("table in range") & !FAILED) as usize;
        // The frame is under 4 GiB (checked above), so `at` fits.
        starts.push(at as u32);
        at += len;
        if at > frame.len() {
            return Err("short result");
        }
    }
    if at != frame.len() {
        return Err("a result frame's length does not match its table");
    }
    Ok(Layout::Table(starts))
}

/// The item `i` of a result frame laid out as `layout`: its bytes, and
/// whether the task succeeded. `i` is in range and the layout was checked
/// by [`parse_layout`].
pub(crate) fn result_item<'a>(frame: &'a [u8], layout: &Layout, i: usize) -> (&'a [u8], bool) {
    match layout {
        Layout::Fixed(width) => {
            let at = RESULT_HEAD + i * width;
            (&frame[at..at + width], true)
        }
        Layout::Table(starts) => {
            let entry = read::<u32>(frame, RESULT_HEAD + 4 * i).expect("checked on arrival");
            let at = starts[i] as usize;
            let len = (entry & !FAILED) as usize;
            (&frame[at..at + len], entry & FAILED == 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_frames_that_do_not_add_up_are_refused() {
        let mut frame = vec![0u8; RESULT_HEAD];
        frame.extend_from_slice(&[0; 16]);
        assert!(parse_layout(&frame, 2, 8).is_ok());
        assert!(parse_layout(&frame, 3, 8).is_err(), "too short");
        assert!(parse_layout(&frame, 1, 8).is_err(), "too long");
        assert!(
            parse_layout(&frame, u32::MAX - 1, u32::MAX - 1).is_err(),
            "overflow"
        );
        // A table: two entries of 2 and 2|FAILED, then 4 bytes of data.
        let mut frame = vec![0u8; RESULT_HEAD];
        frame.extend_from_slice(&2u32.to_le_bytes());
        frame.extend_from_slice(&(2 | FAILED).to_le_bytes());
        frame.extend_from_slice(b"okno");
        let layout = parse_layout(&frame, 2, VARIABLE).unwrap();
        assert_eq!(result_item(&frame, &layout, 0), (&b"ok"[..], true));
        assert_eq!(result_item(&frame, &layout, 1), (&b"no"[..], false));
        frame.push(0);
        assert!(parse_layout(&frame, 2, VARIABLE).is_err(), "trailing byte");
        frame.truncate(frame.len() - 2);
        assert!(parse_layout(&frame, 2, VARIABLE).is_err(), "data cut short");
        assert!(
            parse_layout(&frame[..RESULT_HEAD + 4], 2, VARIABLE).is_err(),
            "table cut short"
        );
    }

    #[test]
    fn a_batch_over_the_frame_limit_is_refused_before_it_is_built() {
        let mib = vec![0u8; 1 << 20];
        let args: Vec<&[u8]> = vec![&mib[..]; 1024];
        let mut frame = Vec::new();
        let e = encode_task::<AsBytes<&[u8]>>(&mut frame, 1, 0, &args).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("use smaller chunks"), "{e}");
        assert_eq!(frame.capacity(), 0, "nothing was allocated");
        let big = vec![0u64; (pipe::MAX_FRAME / 8) + 1];
        let e = encode_task::<Values<u64>>(&mut frame, 1, 0, &big).unwrap_err();
        assert!(e.to_string().contains("use smaller chunks"), "{e}");
        assert_eq!(frame.capacity(), 0, "nothing was allocated");
    }

    #[test]
    fn typed_and_raw_arguments_of_one_width_make_the_same_packed_frame() {
        let typed: Vec<i64> = (0..100).map(|i| i * 1000 - 7).collect();
        let raw: Vec<[u8; 8]> = typed.iter().map(|i| i.to_le_bytes()).collect();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        encode_task::<Values<i64>>(&mut a, 9, 3, &typed).unwrap();
        encode_task::<AsBytes<[u8; 8]>>(&mut b, 9, 3, &raw).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), TASK_HEAD + 8 * 100, "no per-item bytes");
        assert_eq!(read::<u32>(&a, 14), Some(8));
    }

    #[test]
    fn strings_of_one_length_pack_and_of_several_carry_lengths() {
        let same = ["ab".to_string(), "cd".to_string()];
        let mut frame = Vec::new();
        encode_task::<Values<String>>(&mut frame, 1, 0, &same).unwrap();
        assert_eq!(read::<u32>(&frame, 14), Some(2));
        assert_eq!(&frame[TASK_HEAD..], b"abcd");
        let mixed = ["a".to_string(), String::new()];
        encode_task::<Values<String>>(&mut frame, 1, 0, &mixed).unwrap();
        assert_eq!(read::<u32>(&frame, 14), Some(VARIABLE));
        assert_eq!(&frame[TASK_HEAD..], [1, 0, 0, 0, b'a', 0, 0, 0, 0]);
    }
}
