//! A worker's arena: shared memory that carries the bytes of its large
//! frames, so that the pipes carry only a 12-byte note of where they are
//! (16 bytes in the pipe, with the frame's length prefix).
//!
//! Through a pipe, a frame of 10 KiB costs the writer a copy into pages
//! the kernel allocates and charges for it, and the reader a copy out and
//! the freeing of those pages: in a warm map over 10 000 ints those pipe
//! copies were the largest item of the profile, in the parent and in the
//! workers. Through the arena the same frame costs one copy in user space
//! at each end, into and out of pages that stay mapped.
//!
//! The pool maps one memfd (MAP_SHARED, nothing named) before it forks
//! its first worker, and cuts it into arenas, one per worker and a spare:
//! every worker inherits the one mapping, so a pool of 1 024 workers adds
//! one mapping to each fork, not 1 024 to unmap. A worker's arena is
//! [`SLOTS`] slots, each a task area and a result area of [`AREA`] bytes.
//! When the mapping cannot be made (an address-space limit: a pool of
//! 1 024 workers reserves 4 GiB; a file-size limit, `ulimit -f`, under
//! the memfd's size), the pool runs on the pipes alone.
//!
//! The protocol, for one worker:
//! - The parent copies a task frame of at least [`MIN`] bytes into the
//!   task area of a slot that none of the worker's unanswered batches
//!   uses (there is always one: a worker holds at most [`SLOTS`]
//!   batches, and a second is only sent while it holds one), and sends
//!   the note `magic, slot, length`.
//! - The worker copies the frame out before it runs it. When its result
//!   frame fits an area, it copies it into the result area of the same
//!   slot and sends a note back; otherwise the result goes through the
//!   pipe whole.
//! - The parent copies the result out as soon as the note is read, and
//!   only then counts the slot free: so no area is written while the
//!   other side may still read it.
//! - Everything else (small frames, frames over an area) goes through the
//!   pipe whole, as before.
//!
//! The pipe stays the only signal, and its write and read order the
//! copies: the writer's relaxed stores come before its write(2), the
//! reader's loads after its read(2) of the note, and the kernel's pipe
//! lock orders the two calls. End of file still means the worker is gone;
//! a worker killed while it writes its result area never sent the note,
//! so the parent never reads what it left there. A note that names a
//! slot its batch did not use, no slot, or more than an area is a bad
//! result like any other malformed frame.
//!
//! An arena goes back to the free list only once its worker is reaped, so
//! a replacement never shares one with a worker that may still run: the
//! spare is what the replacement takes while the worker it replaces is
//! reaped. A worker whose reaping fails (its status lost to an ignored
//! SIGCHLD) keeps its arena held; the replacement after it then runs on
//! the pipes.
//!
//! Memory: pages are allocated as a frame first touches them, and stay
//! until the pool is dropped. A pool that moved chunks of 1 MiB holds up
//! to 4 MiB of shared memory per worker from then on, beside the frame
//! buffers each side already keeps for reuse (the same order of size).
//! Every worker maps every other worker's arena too; only code with
//! memory-corrupting `unsafe` could reach them.

use crate::error::{Error, Result};
use crate::process::Pid;
use crate::shm::anon_shared;
use crate::sys::shm::Mapping;

/// A note's length. No real frame is this short: a task frame has 18
/// bytes of header, a result frame 16.
pub(crate) const NOTE: usize = 12;
/// "PKar", little-endian: the first word of a note.
const MAGIC: u32 = u32::from_le_bytes(*b"PKar");
/// Frames shorter than this go through the pipe whole: one write(2)
/// costs less than a note plus two copies.
pub(crate) const MIN: usize = 4096;
/// Bytes of one area: the largest frame an arena carries.
pub(crate) const AREA: usize = 1 << 20;
/// Slots per arena: as many batches as a worker is ever given at once
/// (the scheduler's depth).
pub(crate) const SLOTS: usize = super::scheduler::DEPTH;

/// Which area of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// Written by the parent, read by the worker.
    Task,
    /// Written by the worker, read by the parent.
    Result,
}

/// Bytes of one worker's arena.
const ARENA: usize = 2 * SLOTS * AREA;

/// A pool's arenas: one mapping, and which worker holds which arena.
#[derive(Debug)]
pub(crate) struct Arenas {
    map: Mapping,
    /// Arenas no worker holds.
    free: Vec<usize>,
    /// The arena each live (unreaped) worker holds.
    held: Vec<(Pid, usize)>,
}

impl Arenas {
    /// Arenas for a pool of `workers` and one replacement.
    pub(crate) fn new(workers: usize) -> Result<Arenas> {
        let count = workers.saturating_add(1);
        let len = count
            .checked_mul(ARENA)
            .ok_or_else(|| Error::invalid("workers", "too many for their arenas"))?;
        Ok(Arenas {
            map: anon_shared(len)?,
            free: (0..count).rev().collect(),
            held: Vec::with_capacity(count),
        })
    }

    /// A free arena for a worker about to be forked; `None` when every one
    /// is held (the worker then uses the pipes alone).
    pub(crate) fn claim(&mut self) -> Option<usize> {
        self.free.pop()
    }

    /// Arena `index`, claimed for a worker not forked after all: free again.
    pub(crate) fn unclaim(&mut self, index: usize) {
        self.free.push(index);
    }

    /// Worker `pid` holds arena `index`.
    pub(crate) fn hold(&mut self, pid: Pid, index: usize) {
        self.held.push((pid, index));
    }

    /// Worker `pid` is reaped: its arena, if it held one, is free.
    pub(crate) fn release(&mut self, pid: Pid) {
        if let Some(i) = self.held.iter().position(|(p, _)| *p == pid) {
            let (_, index) = self.held.swap_remove(i);
            self.free.push(index);
        }
    }

    /// Arena `index`.
    pub(crate) fn arena(&self, index: usize) -> Arena<'_> {
        assert!(index < self.map.len() / ARENA, "arena {index} out of range");
        Arena {
            map: &self.map,
            base: index * ARENA,
        }
    }
}

/// One worker's arena.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arena<'a> {
    map: &'a Mapping,
    base: usize,
}

impl Arena<'_> {
    fn offset(&self, slot: usize, side: Side) -> usize {
        self.base + slot * 2 * AREA + if side == Side::Result { AREA } else { 0 }
    }

    /// Copy `parts`, back to back, into `side` of `slot`, and return the
    /// note that names them; `None` when they are over an area (they go
    /// through the pipe then).
    pub(crate) fn put(&self, slot: usize, side: Side, parts: &[&[u8]]) -> Option<[u8; NOTE]> {
        assert!(slot < SLOTS, "arena slot {slot} out of range");
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > AREA {
            return None;
        }
        let mut at = self.offset(slot, side);
        for p in parts {
            self.map.write_bulk(at, p);
            at += p.len();
        }
        let mut note = [0u8; NOTE];
        note[..4].copy_from_slice(&MAGIC.to_le_bytes());
        note[4..8].copy_from_slice(&(slot as u32).to_le_bytes());
        note[8..].copy_from_slice(&(len as u32).to_le_bytes());
        Some(note)
    }

    /// The frame a `note` names, copied out of `side` of its slot into
    /// `out` (its length set to the frame's; its old bytes overwritten,
    /// never zeroed first).
    pub(crate) fn take(&self, note: Note, side: Side, out: &mut Vec<u8>) {
        if out.len() < note.len {
            out.resize(note.len, 0);
        }
        out.truncate(note.len);
        self.map.read_bulk(self.offset(note.slot, side), out);
    }
}

/// A note, checked: its slot is in range and its length fits an area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Note {
    pub(crate) slot: usize,
    pub(crate) len: usize,
}

/// Whether `frame` is a note rather than a frame; `Err` for one that names
/// no slot or more than an area.
pub(crate) fn note(frame: &[u8]) -> Option<std::result::Result<Note, &'static str>> {
    let word = |at: usize| u32::from_le_bytes(frame[at..at + 4].try_into().expect("4 bytes"));
    if frame.len() != NOTE || word(0) != MAGIC {
        return None;
    }
    let (slot, len) = (word(4) as usize, word(8) as usize);
    Some(if slot >= SLOTS {
        Err("an arena note names no slot")
    } else if len > AREA {
        Err("an arena note is over an area")
    } else {
        Ok(Note { slot, len })
    })
}

/// The error of a worker whose note does not match what it was given.
pub(crate) fn bad_note(why: &'static str) -> Error {
    Error::data("recv", "pool worker's result pipe", why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_put_in_a_slot_comes_back_whole_through_its_note() {
        let arenas = Arenas::new(2).unwrap();
        let arena = arenas.arena(1);
        let head = [7u8; 5];
        let body: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let n = arena.put(1, Side::Result, &[&head, &body]).unwrap();
        let got = note(&n).unwrap().unwrap();
        assert_eq!(
            got,
            Note {
                slot: 1,
                len: 10_005
            }
        );
        let mut out = vec![9u8; 3];
        arena.take(got, Side::Result, &mut out);
        assert_eq!(&out[..5], &head);
        assert_eq!(&out[5..], &body[..]);
        // The other side of the slot, and the other arenas, are untouched.
        arena.take(got, Side::Task, &mut out);
        assert!(out.iter().all(|&b| b == 0));
        for other in [0, 2] {
            arenas.arena(other).take(got, Side::Result, &mut out);
            assert!(out.iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn an_arena_is_free_again_only_once_its_worker_is_reaped() {
        let mut arenas = Arenas::new(1).unwrap();
        let (a, b) = (arenas.claim().unwrap(), arenas.claim().unwrap());
        assert_ne!(a, b);
        assert_eq!(arenas.claim(), None, "one worker and a spare");
        arenas.hold(Pid::from_raw(10), a);
        arenas.hold(Pid::from_raw(11), b);
        arenas.release(Pid::from_raw(12));
        assert_eq!(arenas.claim(), None, "not a worker of this pool");
        arenas.release(Pid::from_raw(10));
        assert_eq!(arenas.claim(), Some(a));
        arenas.unclaim(a);
        assert_eq!(arenas.claim(), Some(a));
    }

    #[test]
    fn frames_over_an_area_are_not_put_and_bad_notes_are_refused() {
        let arenas = Arenas::new(1).unwrap();
        let arena = arenas.arena(0);
        let big = vec![0u8; AREA + 1];
        assert_eq!(arena.put(0, Side::Task, &[&big]), None);
        let mut n = arena.put(0, Side::Task, &[b"x"]).unwrap();
        assert!(note(&n).unwrap().is_ok());
        assert_eq!(note(&n[..11]), None, "not a note: too short");
        assert_eq!(note(b"PKaR\0\0\0\0\0\0\0\0"), None, "not a note: magic");
        n[4] = SLOTS as u8;
        assert!(note(&n).unwrap().is_err(), "no such slot");
        n[4] = 0;
        n[8..].copy_from_slice(&(AREA as u32 + 1).to_le_bytes());
        assert!(note(&n).unwrap().is_err(), "over an area");
    }
}
