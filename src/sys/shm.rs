//! Shared mappings: a memfd or shm_open object mapped MAP_SHARED, reached
//! only through a raw pointer with volatile copies, atomics and sem_t
//! addresses, never through a Rust reference to its bytes.
//!
//! Why a raw pointer: another process (a forked child, or an independent one
//! that opened the same name) writes these bytes at any time. A `&[u8]` or
//! `&mut [u8]` over them would promise the compiler that nobody else does, so
//! none is ever created. Atomics (`&AtomicU64` …) are fine to hand out: they
//! are interior-mutable by design.

use std::fs::File;
use std::io;
use std::ptr::NonNull;

use memmap2::MmapMut;

use crate::shm::{AtomicCell, Pod};

/// `mmap(MAP_SHARED)` of the whole of `file`, read-write.
///
/// Never `MmapMut::map_anon`, which is MAP_PRIVATE: a forked child's writes
/// to it would never reach the parent.
pub fn map_shared(file: &File) -> io::Result<MmapMut> {
    // SAFETY: memmap2's contract is that the file is not truncated or
    // resized by anyone while it is mapped (a truncation would make touching
    // the lost pages raise SIGBUS). Our memfds are never resized after this
    // call and never leave the process tree; a named object is sized once
    // by its creator before anyone maps it, and posixkit never truncates it
    // afterwards. The bytes themselves are shared on purpose and are only
    // reached through `Mapping` (volatile copies and atomics).
    unsafe { MmapMut::map_mut(file) }
}

/// A MAP_SHARED mapping and the raw pointer to its first byte.
#[derive(Debug)]
pub struct Mapping {
    // Held to keep the mapping alive; unmapped on drop. Its Deref to [u8] is
    // never used.
    _map: MmapMut,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory shared with other processes anyway;
// every access goes through volatile copies, atomics or sem_* calls on
// `ptr`, never through references to the bytes, so sharing the handle
// between threads adds nothing the other processes do not already do.
unsafe impl Send for Mapping {}
// SAFETY: as for Send: `&Mapping` gives no access that is not already
// designed for concurrent use by other processes.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Take over `map`. Panics if it is empty (posixkit never maps 0 bytes).
    pub fn new(mut map: MmapMut) -> Mapping {
        let len = map.len();
        assert!(len > 0, "posixkit never maps 0 bytes");
        let ptr = NonNull::new(map.as_mut_ptr()).expect("mmap returned a null pointer");
        Mapping {
            _map: map,
            ptr,
            len,
        }
    }

    /// The address of the `T` at byte offset `off`, after checking that it
    /// lies inside the mapping and is aligned for `T`. Panics otherwise:
    /// callers compute offsets from their own layout, so a failure is a bug.
    fn at<T>(&self, off: usize) -> *mut T {
        let size = std::mem::size_of::<T>();
        assert!(
            off.checked_add(size).is_some_and(|end| end <= self.len),
            "offset {off}+{size} outside a mapping of {} bytes",
            self.len
        );
        // The mapping starts on a page boundary, so aligning the offset
        // aligns the address.
        assert!(
            off % std::mem::align_of::<T>() == 0,
            "offset {off} misaligned"
        );
        // SAFETY: off + size <= len was checked above, so the result stays
        // inside the mapping.
        unsafe { self.ptr.as_ptr().add(off) }.cast()
    }

    /// Copy the `T` at byte offset `off` out (a volatile read: the compiler
    /// never caches it, since another process may change it at any time).
    pub fn read<T: Pod>(&self, off: usize) -> T {
        let p = self.at::<T>(off);
        // SAFETY: `at` checked bounds and alignment; the memory is mapped
        // for as long as `self` lives; every bit pattern is a valid `T`
        // (Pod is sealed to integers and floats).
        unsafe { p.read_volatile() }
    }

    /// Store `v` at byte offset `off` (a volatile write).
    pub fn write<T: Pod>(&self, off: usize, v: T) {
        let p = self.at::<T>(off);
        // SAFETY: `at` checked bounds and alignment; the memory is mapped
        // read-write; no Rust reference to these bytes exists (see the
        // module comment), so writing through `&self` aliases nothing.
        unsafe { p.write_volatile(v) }
    }

    /// The atomic integer `A` at byte offset `off`.
    pub fn atomic<A: AtomicCell>(&self, off: usize) -> &A {
        let p = self.at::<A>(off);
        // SAFETY: `at` checked bounds and alignment for `A`; the memory is
        // mapped for the lifetime of `&self`, which bounds the reference;
        // atomics are interior-mutable, so other processes writing the same
        // bytes through their own atomics is exactly their intended use; a
        // zeroed (or any) bit pattern is a valid integer atomic.
        unsafe { &*p }
    }

    /// Copy `src` into the mapping at byte offset `off`. The caller makes
    /// sure nobody else writes or reads those bytes meanwhile (a lock).
    pub fn write_bytes(&self, off: usize, src: &[u8]) {
        if src.is_empty() {
            return;
        }
        let end = off.checked_add(src.len());
        assert!(end.is_some_and(|e| e <= self.len), "write outside mapping");
        // SAFETY: bounds checked above; `src` is ordinary process memory,
        // so it cannot overlap the shared mapping we never hand out.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(off), src.len())
        }
    }

    /// Copy `dst.len()` bytes out of the mapping from byte offset `off`.
    pub fn read_bytes(&self, off: usize, dst: &mut [u8]) {
        if dst.is_empty() {
            return;
        }
        let end = off.checked_add(dst.len());
        assert!(end.is_some_and(|e| e <= self.len), "read outside mapping");
        // SAFETY: bounds checked above; `dst` is an exclusive borrow of
        // ordinary memory, distinct from the mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(off), dst.as_mut_ptr(), dst.len())
        }
    }

    /// The address of a `sem_t` at byte offset `off` (bounds and alignment
    /// checked), for [`crate::sys::sem`].
    pub(crate) fn sem_addr(&self, off: usize) -> NonNull<libc::sem_t> {
        NonNull::new(self.at::<libc::sem_t>(off)).expect("non-null inside a mapping")
    }
}
