//! Shared mappings: a memfd or shm_open object mapped MAP_SHARED, reached
//! only through a raw pointer with atomic loads and stores and sem_t
//! addresses, never through a Rust reference to its bytes.
//!
//! Why a raw pointer: another process (a forked child, or an independent one
//! that opened the same name) or another thread writes these bytes at any
//! time. A `&[u8]` or `&mut [u8]` over them would promise the compiler that
//! nobody else does, so none is ever created. Atomics (`&AtomicU64` …) are
//! fine to hand out: they are interior-mutable by design.
//!
//! Why atomics for every access, even plain `get`/`set` and byte copies:
//! the same bytes may be read or written at the same instant by an atomic
//! `fetch_add` in another thread, or by another process. Two accesses to
//! one location where one is a non-atomic write are a data race, undefined
//! behaviour in Rust's memory model, volatile or not. Relaxed atomic loads
//! and stores compile to the same plain moves on x86-64 and aarch64, so
//! they cost nothing, and every access is race-free by construction. The
//! one place they cost something is a long copy, which the compiler will
//! not turn into vector moves of atomics: on x86-64 a copy of 256 bytes or
//! more of a message or a frame (`read_bulk`, `write_bulk`) is one `rep
//! movsb` instead (see [`string_copy`]); byte copies that must not tear
//! an 8-byte word another process stores (`read_bytes`, `write_bytes`)
//! keep the word loop, and reach the bytes at either end through their
//! whole aligned words too: 8-byte cells (a segment's counters) and byte
//! copies meet on the same bytes, and racing atomic accesses of
//! different sizes are undefined behaviour in Rust's memory model.

use std::fs::File;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{self, Ordering::Relaxed};

use memmap2::MmapMut;

mod sealed {
    pub trait Sealed {}
}

/// Plain old data that may live in shared memory: integers and floats,
/// for which every bit pattern (including all zeroes) is a valid value.
/// Sealed: implemented by posixkit for exactly those types. Each is loaded
/// and stored as an atomic of the same size, so a value is never torn and
/// never races with an atomic view of the same bytes.
pub trait Pod: sealed::Sealed + Copy + Send + Sync + 'static {
    /// The atomic with the same size and alignment, through which every
    /// load and store goes.
    #[doc(hidden)]
    type Cell: AtomicCell;
    #[doc(hidden)]
    fn load(cell: &Self::Cell) -> Self;
    #[doc(hidden)]
    fn store(cell: &Self::Cell, v: Self);
}

/// An atomic integer type ([`atomic::AtomicU64`] …) that can be viewed in
/// shared memory. Sealed.
pub trait AtomicCell: sealed::Sealed + Send + Sync + 'static {}

/// A [`Pod`] integer with an atomic counterpart of the same size and
/// alignment (`u64` ↔ `AtomicU64`).
pub trait AtomicInt: Pod {
    /// The atomic type with the same layout.
    type Atomic: AtomicCell;
}

macro_rules! atomic_int {
    ($($t:ty => $a:ty),*) => { $(
        impl sealed::Sealed for $t {}
        impl sealed::Sealed for $a {}
        impl AtomicCell for $a {}
        impl Pod for $t {
            type Cell = $a;
            #[inline]
            fn load(cell: &$a) -> $t { cell.load(Relaxed) }
            #[inline]
            fn store(cell: &$a, v: $t) { cell.store(v, Relaxed) }
        }
        impl AtomicInt for $t { type Atomic = $a; }
        const _: () = assert!(
            std::mem::size_of::<$t>() == std::mem::size_of::<$a>()
                && std::mem::align_of::<$t>() == std::mem::align_of::<$a>()
        );
    )* };
}
atomic_int!(
    u8 => atomic::AtomicU8, i8 => atomic::AtomicI8,
    u16 => atomic::AtomicU16, i16 => atomic::AtomicI16,
    u32 => atomic::AtomicU32, i32 => atomic::AtomicI32,
    u64 => atomic::AtomicU64, i64 => atomic::AtomicI64,
    usize => atomic::AtomicUsize, isize => atomic::AtomicIsize
);

macro_rules! atomic_float {
    ($($t:ty => $a:ty),*) => { $(
        impl sealed::Sealed for $t {}
        impl Pod for $t {
            type Cell = $a;
            #[inline]
            fn load(cell: &$a) -> $t { <$t>::from_bits(cell.load(Relaxed)) }
            #[inline]
            fn store(cell: &$a, v: $t) { cell.store(v.to_bits(), Relaxed) }
        }
        const _: () = assert!(
            std::mem::size_of::<$t>() == std::mem::size_of::<$a>()
                && std::mem::align_of::<$t>() == std::mem::align_of::<$a>()
        );
    )* };
}
atomic_float!(f32 => atomic::AtomicU32, f64 => atomic::AtomicU64);

/// `mmap(MAP_SHARED)` of the whole of `file`, read-write.
///
/// Never `MmapMut::map_anon`, which is MAP_PRIVATE: a forked child's writes
/// to it would never reach the parent.
pub fn map_shared(file: &File) -> io::Result<MmapMut> {
    // SAFETY: memmap2's contract is that the file is not truncated or
    // resized while it is mapped (touching a lost page raises SIGBUS). Our
    // memfds are never resized after this call and never leave the process
    // tree; a named object is sized once by its creator before anyone maps
    // it and posixkit never truncates it, and since another process of the
    // same user still could, every named mapping goes through
    // `Mapping::new_guarded`, which turns that SIGBUS into zero pages and a
    // flag (see `guard`). The bytes themselves are shared on purpose and
    // are only reached through `Mapping` (atomics), never through the
    // slice memmap2 offers.
    unsafe { MmapMut::map_mut(file) }
}

/// `mmap(MAP_SHARED)` of the first `len` bytes (at least 1) of `file`,
/// read-write: for a named object whose size was checked, so that a
/// truncation between that check and this call cannot change what is
/// mapped (the lost pages are then caught by the [`guard`]).
pub fn map_shared_len(file: &File, len: usize) -> io::Result<MmapMut> {
    assert!(len > 0, "posixkit never maps 0 bytes");
    // SAFETY: as for `map_shared`; the length is ours, not re-read from
    // the file, and every named mapping is guarded against SIGBUS.
    unsafe { memmap2::MmapOptions::new().len(len).map_mut(file) }
}

/// A MAP_SHARED mapping and the raw pointer to its first byte.
#[derive(Debug)]
pub struct Mapping {
    // Held to keep the mapping alive; unmapped on drop. Its Deref to [u8] is
    // never used.
    _map: MmapMut,
    ptr: NonNull<u8>,
    len: usize,
    // For a named object: its entry in the SIGBUS guard, cleared on drop
    // before the memory is unmapped.
    guard: Option<&'static guard::Entry>,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if let Some(g) = self.guard.take() {
            guard::unregister(g);
        }
    }
}

// SAFETY: the mapping is plain memory shared with other processes anyway;
// every access goes through atomic loads and stores (byte copies
// included) or sem_* calls on `ptr`, never through references to the
// bytes, so sharing the handle between threads adds nothing the other
// processes do not already do.
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
            guard: None,
        }
    }

    /// Take over `map`, the mapping of a named object that another process
    /// may truncate, and guard it against SIGBUS (see [`guard`]): touching
    /// a page the object no longer has then reads zeroes and sets
    /// [`Mapping::truncated`] instead of killing the process.
    pub fn new_guarded(map: MmapMut) -> Mapping {
        let mut m = Mapping::new(map);
        m.guard = Some(guard::register(m.ptr.as_ptr() as usize, m.len));
        m
    }

    /// Whether a SIGBUS on this (guarded) mapping showed that its object
    /// was truncated: from then on the mapping is private zeroes, cut off
    /// from the object. Always `false` for an unguarded mapping.
    pub fn truncated(&self) -> bool {
        self.guard.is_some_and(guard::hit)
    }

    /// The mapping's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The address of the `T` at byte offset `off`, after checking that it
    /// lies inside the mapping and is aligned for `T`. Panics otherwise:
    /// callers compute offsets from their own layout, so a failure is a bug.
    fn at<T>(&self, off: usize) -> *mut T {
        self.at_n::<T>(off, 1)
    }

    /// [`Mapping::at`] for `n` consecutive `T`s: the address of the first,
    /// after one check that all of them lie inside the mapping.
    fn at_n<T>(&self, off: usize, n: usize) -> *mut T {
        let size = std::mem::size_of::<T>()
            .checked_mul(n)
            .expect("a size inside the mapping");
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

    /// Copy the `T` at byte offset `off` out: one relaxed atomic load of
    /// its cell, never torn.
    pub fn read<T: Pod>(&self, off: usize) -> T {
        T::load(self.atomic::<T::Cell>(off))
    }

    /// Store `v` at byte offset `off`: one relaxed atomic store.
    pub fn write<T: Pod>(&self, off: usize, v: T) {
        T::store(self.atomic::<T::Cell>(off), v)
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

    /// The `n` 8-byte cells from byte offset `off` (a multiple of 8), as
    /// atomics: one check of bounds and alignment for a whole copy, where
    /// [`Mapping::atomic`] checks each cell (a loop of 10 KiB then spent
    /// more on the checks than on the moves).
    fn words(&self, off: usize, n: usize) -> &[atomic::AtomicU64] {
        if n == 0 {
            return &[];
        }
        let first = self.at_n::<atomic::AtomicU64>(off, n);
        // SAFETY: `at_n` checked that the n cells lie inside the mapping
        // (one allocation of at most isize::MAX bytes) and are aligned for
        // AtomicU64; the memory stays mapped for the lifetime of `&self`,
        // which bounds the slice; atomics are interior-mutable, so other
        // processes writing the same bytes is their intended use; any bit
        // pattern is a valid AtomicU64.
        unsafe { std::slice::from_raw_parts(first, n) }
    }

    /// The aligned 8-byte word at byte offset `base` (a multiple of 8
    /// inside the mapping), whole even where the mapping's length ends
    /// inside it: for the bytes at either end of a byte copy.
    fn word(&self, base: usize) -> &atomic::AtomicU64 {
        assert!(
            base % 8 == 0 && base < self.len,
            "word {base} outside a mapping of {} bytes",
            self.len
        );
        // SAFETY: `base` is 8-aligned (the mapping starts on a page
        // boundary) and below `len`; the kernel maps whole pages and a
        // page is a multiple of 8 bytes, so all 8 bytes of the word are
        // mapped, for the lifetime of `&self`. Atomics are
        // interior-mutable, so other processes writing these bytes is
        // their intended use; any bit pattern is a valid AtomicU64.
        unsafe { &*self.ptr.as_ptr().add(base).cast::<atomic::AtomicU64>() }
    }

    /// Store `bytes` at byte offset `at`, all within one aligned 8-byte
    /// word: a compare-and-swap of the whole word that changes only those
    /// bytes, so a store to the rest of the word meanwhile is kept.
    fn splice(&self, at: usize, bytes: &[u8]) {
        let base = at - at % 8;
        let from = at - base;
        let word = self.word(base);
        let mut old = word.load(Relaxed);
        loop {
            let mut b = old.to_ne_bytes();
            b[from..from + bytes.len()].copy_from_slice(bytes);
            match word.compare_exchange_weak(old, u64::from_ne_bytes(b), Relaxed, Relaxed) {
                Ok(_) => return,
                Err(now) => old = now,
            }
        }
    }

    /// Copy out the bytes at byte offset `at`, all within one aligned
    /// 8-byte word: one load of the whole word.
    fn peek(&self, at: usize, dst: &mut [u8]) {
        let base = at - at % 8;
        let from = at - base;
        let b = self.word(base).load(Relaxed).to_ne_bytes();
        dst.copy_from_slice(&b[from..from + dst.len()]);
    }

    /// Copy `src` into the mapping at byte offset `off`, with relaxed
    /// 8-byte atomics only: whole aligned words stored, and the bytes
    /// before the first and after the last one spliced into their words
    /// ([`Mapping::splice`]). Race-free whatever another process does to
    /// the same bytes meanwhile: no aligned 8-byte word is ever torn for
    /// an atomic load of it (a counter in a segment), and no access here
    /// is of another size than the cells' (racing atomic accesses of
    /// different sizes to the same bytes are undefined behaviour in
    /// Rust's memory model). Callers that need the copy whole to a reader
    /// order it with a lock or a release store. [`Mapping::write_bulk`] is
    /// faster for long data that nobody reads while it is written.
    pub fn write_bytes(&self, off: usize, src: &[u8]) {
        let end = off.checked_add(src.len());
        assert!(end.is_some_and(|e| e <= self.len), "write outside mapping");
        let (head, words, tail) = split_words(off, src.len());
        if head > 0 {
            self.splice(off, &src[..head]);
        }
        let at = off + head;
        let cells = self.words(at, words);
        for (cell, chunk) in cells
            .iter()
            .zip(src[head..head + words * 8].chunks_exact(8))
        {
            cell.store(
                u64::from_ne_bytes(chunk.try_into().expect("8 bytes")),
                Relaxed,
            );
        }
        if tail > 0 {
            self.splice(at + words * 8, &src[src.len() - tail..]);
        }
    }

    /// Copy `dst.len()` bytes out of the mapping from byte offset `off`,
    /// with relaxed 8-byte atomic loads only, of whole aligned words (the
    /// first and the last may hold bytes outside the range): an aligned
    /// 8-byte word that another process stores meanwhile is read whole,
    /// old or new, never half of each, and never with an access of
    /// another size than its own. [`Mapping::read_bulk`] is faster for
    /// long data that nobody writes while it is read.
    pub fn read_bytes(&self, off: usize, dst: &mut [u8]) {
        let end = off.checked_add(dst.len());
        assert!(end.is_some_and(|e| e <= self.len), "read outside mapping");
        let (head, words, tail) = split_words(off, dst.len());
        let len = dst.len();
        if head > 0 {
            self.peek(off, &mut dst[..head]);
        }
        let at = off + head;
        let cells = self.words(at, words);
        for (cell, chunk) in cells
            .iter()
            .zip(dst[head..head + words * 8].chunks_exact_mut(8))
        {
            chunk.copy_from_slice(&cell.load(Relaxed).to_ne_bytes());
        }
        if tail > 0 {
            self.peek(at + words * 8, &mut dst[len - tail..]);
        }
    }

    /// [`Mapping::write_bytes`] for a message or a frame that no other
    /// process reads until a lock, a release store or a system call after
    /// this copy publishes it: race-free all the same, but from 256 bytes
    /// on x86-64 one string copy (see [`string_copy`]) at memcpy speed, its
    /// atomicity per byte only, so a concurrent atomic load of an 8-byte
    /// word may see it torn.
    pub fn write_bulk(&self, off: usize, src: &[u8]) {
        if src.len() < STRING_COPY {
            return self.write_bytes(off, src);
        }
        let end = off.checked_add(src.len());
        assert!(end.is_some_and(|e| e <= self.len), "write outside mapping");
        // SAFETY: the destination range lies inside the mapping (asserted
        // above), which stays mapped while `&self` lives; `src` is a live
        // slice of `src.len()` bytes in this process's private memory, so
        // the two ranges cannot overlap.
        unsafe { string_copy(self.ptr.as_ptr().add(off), src.as_ptr(), src.len()) };
    }

    /// [`Mapping::read_bytes`] for a message or a frame that no other
    /// process writes while it is read (a lock, or a slot the protocol
    /// gives to this reader): from 256 bytes on x86-64 one string copy at
    /// memcpy speed, atomic per byte only, so a word stored meanwhile may
    /// be read torn.
    pub fn read_bulk(&self, off: usize, dst: &mut [u8]) {
        if dst.len() < STRING_COPY {
            return self.read_bytes(off, dst);
        }
        let end = off.checked_add(dst.len());
        assert!(end.is_some_and(|e| e <= self.len), "read outside mapping");
        // SAFETY: the source range lies inside the mapping (asserted
        // above), which stays mapped while `&self` lives; `dst` is an
        // exclusive slice of `dst.len()` bytes of private memory, so the
        // two ranges cannot overlap and nothing else reads `dst` meanwhile.
        unsafe { string_copy(dst.as_mut_ptr(), self.ptr.as_ptr().add(off), dst.len()) };
    }

    /// The address of a `sem_t` at byte offset `off` (bounds and alignment
    /// checked), for [`crate::sys::sem`].
    pub(crate) fn sem_addr(&self, off: usize) -> NonNull<libc::sem_t> {
        NonNull::new(self.at::<libc::sem_t>(off)).expect("non-null inside a mapping")
    }
}

/// A SIGBUS guard for mappings of named objects.
///
/// A MAP_SHARED mapping of a file stays as long as it was mapped, but the
/// pages past the file's end are gone once another process truncates it
/// (`ftruncate`, `truncate -s 0 /dev/shm/NAME`): touching one raises SIGBUS,
/// whose default action kills the process. Checking the size before each
/// access narrows that window but cannot close it. So every mapping of a
/// named object is registered here, and a SIGBUS handler (installed once,
/// by the first registration, with `SA_SIGINFO | SA_ONSTACK`) looks up the
/// faulting address: inside a registered mapping, it maps private
/// anonymous zero pages over the whole of it (`mmap(MAP_FIXED)`) and marks
/// it truncated; the faulting access is then retried and reads zeroes or
/// writes into memory no one else sees, and the owner of the mapping
/// reports the truncation. Anywhere else, the signal goes on to the handler
/// that was there before (Rust's own, or the default action), exactly as if
/// there were no guard. This is what Wayland compositors do for client
/// buffers.
///
/// The handler only loads atomics, calls mmap(2) and sigaction(2) (plain
/// system calls) and stores an atomic flag. The registry is a list of
/// entries that are never freed (a dropped mapping's entry is reused), so
/// the handler can walk it at any moment without a lock; a sequence word
/// in each entry keeps it from pairing the start of one registration
/// with the length of the next (see `Entry`).
///
/// A program that installs its own SIGBUS handler after the first named
/// mapping replaces the guard; it should chain to the previous handler as
/// this one does.
pub mod guard {
    use std::ptr;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering, fence};

    /// One registered mapping.
    ///
    /// Its start and length are two words that a reuse of the entry
    /// changes one after the other, so they are read and written under
    /// `seq`, a sequence lock: odd while the pair changes, moved on by 2
    /// by each change. The handler takes a pair only when `seq` was even
    /// and did not move while it read both words: then the two come from
    /// one registration. An entry whose pair is changing, or changed
    /// under the read, is never the faulting mapping's (a mapping is
    /// registered before its owner touches it and unregistered after),
    /// so the handler passes it over rather than wait.
    #[derive(Debug)]
    pub struct Entry {
        next: AtomicPtr<Entry>,
        used: AtomicBool,
        seq: AtomicUsize,
        start: AtomicUsize,
        len: AtomicUsize,
        hit: AtomicBool,
    }

    impl Entry {
        /// Set the pair: only by the thread that holds the entry (`used`
        /// claimed by it), so there is one writer at a time.
        fn set(&self, start: usize, len: usize) {
            let seq = self.seq.load(Ordering::Relaxed);
            self.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
            // The odd value is seen before either word of the new pair.
            fence(Ordering::Release);
            self.start.store(start, Ordering::Relaxed);
            self.len.store(len, Ordering::Relaxed);
            self.seq.store(seq.wrapping_add(2), Ordering::Release);
        }

        /// The pair, when it was read whole from one registration.
        fn pair(&self) -> Option<(usize, usize)> {
            let before = self.seq.load(Ordering::Acquire);
            if before % 2 == 1 {
                return None;
            }
            let start = self.start.load(Ordering::Relaxed);
            let len = self.len.load(Ordering::Relaxed);
            // Both words are read before `seq` is looked at again.
            fence(Ordering::Acquire);
            (self.seq.load(Ordering::Relaxed) == before).then_some((start, len))
        }
    }

    static HEAD: AtomicPtr<Entry> = AtomicPtr::new(ptr::null_mut());
    /// The SIGBUS action that was installed before ours.
    static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

    /// Register the mapping at `start`, `len` bytes long.
    pub fn register(start: usize, len: usize) -> &'static Entry {
        install();
        let mut e = HEAD.load(Ordering::Acquire);
        while !e.is_null() {
            // SAFETY: entries are leaked boxes, never freed: `e` is valid
            // for the life of the process.
            let entry: &'static Entry = unsafe { &*e };
            if entry
                .used
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                entry.hit.store(false, Ordering::Relaxed);
                entry.set(start, len);
                return entry;
            }
            e = entry.next.load(Ordering::Acquire);
        }
        let entry: &'static Entry = Box::leak(Box::new(Entry {
            next: AtomicPtr::new(ptr::null_mut()),
            used: AtomicBool::new(true),
            seq: AtomicUsize::new(0),
            start: AtomicUsize::new(start),
            len: AtomicUsize::new(len),
            hit: AtomicBool::new(false),
        }));
        let mut head = HEAD.load(Ordering::Acquire);
        loop {
            entry.next.store(head, Ordering::Relaxed);
            match HEAD.compare_exchange(
                head,
                entry as *const Entry as *mut Entry,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return entry,
                Err(now) => head = now,
            }
        }
    }

    /// Forget a mapping that is about to be unmapped.
    pub fn unregister(entry: &'static Entry) {
        entry.set(0, 0);
        entry.used.store(false, Ordering::Release);
    }

    /// Whether the handler found this mapping's object truncated.
    pub fn hit(entry: &'static Entry) -> bool {
        entry.hit.load(Ordering::Acquire)
    }

    fn install() {
        PREVIOUS.get_or_init(|| {
            // SAFETY: both sigaction structs are plain C data, zeroed then
            // filled in; `on_sigbus` has the SA_SIGINFO signature and only
            // makes async-signal-safe calls (see the module comment).
            unsafe {
                let mut act: libc::sigaction = std::mem::zeroed();
                act.sa_sigaction = on_sigbus as *const () as usize;
                act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut act.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(libc::SIGBUS, &act, &mut old) != 0 {
                    // Could not install: keep the default, unguarded.
                    old.sa_sigaction = libc::SIG_DFL;
                }
                old
            }
        });
    }

    /// The registered mapping that holds `addr`: its entry, start and
    /// length. Loads atomics only: called from the signal handler.
    pub(super) fn find(addr: usize) -> Option<(&'static Entry, usize, usize)> {
        let mut e = HEAD.load(Ordering::Acquire);
        while !e.is_null() {
            // SAFETY: entries are never freed.
            let entry: &'static Entry = unsafe { &*e };
            if let Some((start, len)) = entry.pair() {
                if start != 0 && addr >= start && addr - start < len {
                    return Some((entry, start, len));
                }
            }
            e = entry.next.load(Ordering::Acquire);
        }
        None
    }

    extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid siginfo_t for SA_SIGINFO.
        let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
        // Only a fault the kernel raised (BUS_ADRERR: a page past the end
        // of the file) says the object shrank. A SIGBUS some process sent
        // (kill, sigqueue: a code of 0 or less, an address it chose) is
        // passed on, never taken for a truncation.
        if code <= 0 || code >= libc::SI_KERNEL {
            return chain(sig, info, ctx);
        }
        if let Some((entry, start, len)) = find(addr) {
            // The whole mapping, without reserving swap for it (a
            // mapping larger than memory and swap is refused
            // otherwise); if even that is refused, the faulting page
            // alone (each later fault on the rest comes here again).
            let page = addr & !4095;
            for (at, n) in [(start, len), (page, 4096)] {
                // SAFETY: [at, at+n) lies inside [start, start+len), a
                // live mapping of ours (registered, not yet
                // unregistered: the owner is touching it; `find` took
                // start and len from one registration, see `Entry`,
                // never one's start with another's length); replacing it
                // with anonymous pages of the same size keeps every
                // address valid, and nothing in this process holds a
                // Rust reference to its bytes (only atomics).
                let p = unsafe {
                    libc::mmap(
                        at as *mut libc::c_void,
                        n,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE
                            | libc::MAP_ANONYMOUS
                            | libc::MAP_FIXED
                            | libc::MAP_NORESERVE,
                        -1,
                        0,
                    )
                };
                if p != libc::MAP_FAILED {
                    entry.hit.store(true, Ordering::Release);
                    return;
                }
            }
        }
        chain(sig, info, ctx);
    }

    /// Hand the signal to the action that was there before ours.
    fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid siginfo_t for SA_SIGINFO.
        let sent = unsafe { (*info).si_code } <= 0;
        let Some(prev) = PREVIOUS.get() else {
            return default(sig, sent);
        };
        let h = prev.sa_sigaction;
        if h == libc::SIG_IGN && sent {
            return;
        }
        if h == libc::SIG_DFL || h == libc::SIG_IGN {
            return default(sig, sent);
        }
        if prev.sa_flags & libc::SA_SIGINFO != 0 {
            // SAFETY: the previous handler was installed with SA_SIGINFO,
            // so it has this signature; we pass it what the kernel gave us.
            let f = unsafe {
                std::mem::transmute::<
                    usize,
                    extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void),
                >(h)
            };
            f(sig, info, ctx)
        } else {
            // SAFETY: a handler installed without SA_SIGINFO takes the
            // signal number alone.
            let f = unsafe { std::mem::transmute::<usize, extern "C" fn(libc::c_int)>(h) };
            f(sig)
        }
        // A handler that treats every SIGBUS as a fault (Rust's own, for
        // stack overflows, does) puts the default action back and returns,
        // counting on the instruction to fault again: a sent signal would
        // vanish. Raised once more, it ends the process as it should.
        if sent {
            // SAFETY: sigaction only reads the current action into `now`
            // (zeroed C data); raise is async-signal-safe.
            unsafe {
                let mut now: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, std::ptr::null(), &mut now) == 0
                    && now.sa_sigaction == libc::SIG_DFL
                {
                    libc::raise(sig);
                }
            }
        }
    }

    /// Put the default action back and return: the faulting instruction
    /// runs again and the kernel ends the process with SIGBUS, as it
    /// would have without the guard. A signal another process `sent` has
    /// no instruction to run again: it is raised once more, and ends the
    /// process as soon as the handler returns.
    fn default(sig: libc::c_int, sent: bool) {
        // SAFETY: installing SIG_DFL runs no code; the struct is zeroed C
        // data; raise is async-signal-safe (the signal stays blocked until
        // the handler returns).
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = libc::SIG_DFL;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, std::ptr::null_mut());
            if sent {
                libc::raise(sig);
            }
        }
    }
}

/// From this many bytes, [`Mapping::write_bulk`] and
/// [`Mapping::read_bulk`] copy with [`string_copy`] where there is one;
/// below it, the start-up of a string instruction costs more than the
/// loop of relaxed moves.
const STRING_COPY: usize = if cfg!(target_arch = "x86_64") {
    256
} else {
    usize::MAX
};

/// Copy `len` bytes from `src` to `dst` with one `rep movsb`: byte loads
/// and stores, each of them single-copy atomic on x86-64 (as every naturally
/// aligned access is), that the compiler cannot see into. That is what a
/// loop of relaxed atomic byte moves does in Rust's memory model, so a
/// process writing the same shared bytes meanwhile is no data race, only
/// a torn copy, torn down to the byte (where the 8-byte loop tears no
/// aligned word: hence only for bulk data that a lock or a system call
/// hands over whole); but where the compiler keeps an atomic loop to one
/// 8-byte move at a time, the processor runs the string
/// instruction at the speed of memcpy (fast-string microcode, ERMS/FSRM):
/// 10 KB, a pool chunk of 1 250 ints, in about 100 ns instead of 360
/// (`/proc/cpuinfo` with erms and fsrm, AMD EPYC). Its stores may be seen
/// out of order among themselves, but string operations are not reordered
/// with other stores, so a release store, a lock or a system call after
/// the copy still publishes it whole (Intel SDM vol. 3A, "Out-of-Order
/// Stores For String Operations"). A fault inside it (the SIGBUS the
/// guard of a truncated mapping catches) resumes the copy where it
/// stopped: the registers hold its progress.
///
/// # Safety
///
/// `src` must be valid for reads and `dst` for writes of `len` bytes, and
/// the two ranges must not overlap; any bytes of shared memory among them
/// must stay mapped during the call.
#[cfg(target_arch = "x86_64")]
unsafe fn string_copy(dst: *mut u8, src: *const u8, len: usize) {
    // SAFETY: the caller's contract covers the ranges rep movsb touches
    // (rdi..rdi+rcx written, rsi..rsi+rcx read); the direction flag is
    // clear on entry to an asm block (Rust's inline assembly rules), so
    // the copy runs upwards; the block uses no stack and leaves the
    // flags alone.
    unsafe {
        std::arch::asm!(
            "rep movsb",
            inout("rcx") len => _,
            inout("rdi") dst => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags),
        );
    }
}

/// Never called: [`STRING_COPY`] is out of reach off x86-64.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn string_copy(_dst: *mut u8, _src: *const u8, _len: usize) {
    unreachable!("no string copy on this architecture")
}

/// A copy of `len` bytes at byte offset `off` in three parts: single bytes
/// up to an 8-byte boundary, whole 8-byte words, single bytes after. The
/// mapping starts on a page boundary, so offsets decide alignment.
fn split_words(off: usize, len: usize) -> (usize, usize, usize) {
    let head = ((8 - off % 8) % 8).min(len);
    let words = (len - head) / 8;
    (head, words, len - head - words * 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memfd(len: usize) -> File {
        let fd =
            nix::sys::memfd::memfd_create(c"t", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
        let file = File::from(fd);
        file.set_len(len as u64).unwrap();
        file
    }

    fn mapping(len: usize) -> Mapping {
        Mapping::new(map_shared(&memfd(len)).unwrap())
    }

    /// A guarded mapping of a memfd of `len` bytes, and the memfd, for a
    /// test to truncate.
    fn guarded(len: usize) -> (File, Mapping) {
        let file = memfd(len);
        let m = Mapping::new_guarded(map_shared(&file).unwrap());
        (file, m)
    }

    #[test]
    fn byte_copies_round_trip_at_every_offset_and_length() {
        let m = mapping(64);
        let src: Vec<u8> = (1..=40).collect();
        for off in 0..16 {
            for len in 0..=src.len() {
                m.write_bytes(off, &src[..len]);
                let mut back = vec![0u8; len];
                m.read_bytes(off, &mut back);
                assert_eq!(back, src[..len], "off {off} len {len}");
            }
        }
        assert_eq!(split_words(3, 2), (2, 0, 0));
        assert_eq!(split_words(3, 20), (5, 1, 7));
        assert_eq!(split_words(8, 16), (0, 2, 0));
    }

    #[test]
    fn byte_copies_change_exactly_their_bytes_up_to_an_unaligned_end() {
        // The bytes at either end of a copy go through their whole 8-byte
        // word (a load, or a compare-and-swap of it): the other bytes of
        // the word must come out as they were, at every offset and
        // length, up to a mapping whose length ends inside a word.
        let len = 61;
        let m = mapping(len);
        let background: Vec<u8> = (0..len).map(|i| 0xa0 ^ i as u8).collect();
        let src: Vec<u8> = (0..len).map(|i| i as u8 + 1).collect();
        for off in 0..=len {
            for n in 0..=len - off {
                m.write_bytes(0, &background);
                m.write_bytes(off, &src[..n]);
                let mut want = background.clone();
                want[off..off + n].copy_from_slice(&src[..n]);
                let mut all = vec![0u8; len];
                m.read_bytes(0, &mut all);
                assert_eq!(all, want, "off {off} len {n}");
                let mut back = vec![0u8; n];
                m.read_bytes(off, &mut back);
                assert_eq!(back, src[..n], "off {off} len {n}");
                for (i, &b) in want.iter().enumerate() {
                    assert_eq!(m.read::<u8>(i), b, "byte {i}, off {off} len {n}");
                }
            }
        }
    }

    #[test]
    fn a_truncated_guarded_mapping_reads_zeroes_instead_of_dying() {
        let (file, m) = guarded(3 * 4096);
        m.write::<u64>(2 * 4096, 7);
        assert_eq!(m.read::<u64>(2 * 4096), 7);
        assert!(!m.truncated());
        // Another process would do this: the pages are gone.
        file.set_len(4096).unwrap();
        assert_eq!(m.read::<u64>(2 * 4096), 0, "a SIGBUS, caught");
        assert!(m.truncated());
        m.write::<u64>(0, 1);
        let mut back = [0u8; 8];
        m.read_bytes(0, &mut back);
        assert_eq!(u64::from_ne_bytes(back), 1, "private memory now");
        drop(m);
        // The entry is reused, clean.
        let again = Mapping::new_guarded(map_shared(&file).unwrap());
        assert!(!again.truncated());
        assert_eq!(again.read::<u64>(0), 0, "the object never saw the write");
    }

    #[test]
    fn a_truncated_mapping_larger_than_memory_reads_zeroes_instead_of_dying() {
        // A sparse object of 1 TiB (Python's SharedMemory makes them so):
        // the zero pages that replace its mapping cannot be backed by
        // memory and swap, and used to be refused (ENOMEM), which let the
        // SIGBUS end the process.
        let (file, m) = guarded(1 << 40);
        file.set_len(4096).unwrap();
        assert_eq!(m.read::<u64>(1 << 39), 0, "a SIGBUS, caught");
        assert!(m.truncated());
    }

    #[test]
    fn long_copies_round_trip_at_odd_offsets_on_either_side_of_the_string_copy() {
        let m = mapping(4 * 4096);
        let src: Vec<u8> = (0..9000u32).map(|i| (i % 251) as u8 + 1).collect();
        type Write = fn(&Mapping, usize, &[u8]);
        type Read = fn(&Mapping, usize, &mut [u8]);
        let ways: [(Write, Read); 2] = [
            (Mapping::write_bytes, Mapping::read_bytes),
            (Mapping::write_bulk, Mapping::read_bulk),
        ];
        for (write, read) in ways {
            for len in [255, 256, 257, 4095, 4097, 9000] {
                for off in [0, 1, 7, 8, 4093] {
                    m.write_bytes(off, &vec![0u8; len]);
                    write(&m, off, &src[..len]);
                    let mut back = vec![0u8; len + 2];
                    read(&m, off, &mut back[1..=len]);
                    assert_eq!(back[0], 0, "nothing before the copy");
                    assert_eq!(back[len + 1], 0, "nothing after the copy");
                    assert_eq!(back[1..=len], src[..len], "off {off} len {len}");
                    if off > 0 {
                        m.write::<u8>(off - 1, 0xee);
                    }
                    write(&m, off, &src[..len]);
                    if off > 0 {
                        assert_eq!(m.read::<u8>(off - 1), 0xee, "the byte before is kept");
                    }
                }
            }
        }
    }

    #[test]
    fn a_byte_read_never_tears_an_aligned_word_stored_meanwhile() {
        // A segment's counters are 8-byte cells that other processes store
        // atomically while a script reads a block of them as bytes: every
        // whole cell read must be a value some store wrote. A string copy
        // tore them (per byte), at every offset not a multiple of 8.
        let m = std::sync::Arc::new(mapping(4096));
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flips = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let writer = {
            let (m, done, flips) = (m.clone(), done.clone(), flips.clone());
            std::thread::spawn(move || {
                let mut v = 0u64;
                while !done.load(Relaxed) {
                    v = !v;
                    for cell in (8..600).step_by(8) {
                        m.write::<u64>(cell, v);
                    }
                    flips.fetch_add(1, Relaxed);
                }
            })
        };
        let mut torn = Vec::new();
        // As many reads as it takes to overlap 20 000 rounds of stores.
        let mut i = 0;
        while i < 20_000 || flips.load(Relaxed) < 20_000 {
            i += 1;
            let off = 1 + i % 7;
            let mut buf = [0u8; 508];
            m.read_bytes(off, &mut buf);
            for cell in (8..off + 508 - 8).step_by(8).filter(|&c| c >= off) {
                let at = cell - off;
                let word = u64::from_ne_bytes(buf[at..at + 8].try_into().unwrap());
                if word != 0 && word != u64::MAX {
                    torn.push((off, cell, word));
                }
            }
        }
        done.store(true, Relaxed);
        writer.join().unwrap();
        assert!(torn.is_empty(), "{} torn, first {:x?}", torn.len(), torn[0]);
    }

    #[test]
    fn a_long_copy_over_a_truncation_resumes_after_the_sigbus() {
        let (file, m) = guarded(3 * 4096);
        let ones = vec![1u8; 3 * 4096];
        m.write_bulk(0, &ones);
        file.set_len(4096).unwrap();
        // One copy that starts on the page that is left and runs into the
        // ones cut off: the fault comes in the middle of the instruction.
        let mut back = vec![9u8; 2 * 4096];
        m.read_bulk(2048, &mut back);
        assert!(m.truncated());
        // What was copied before the fault stays; the rest is the private
        // zeroes that replaced the mapping.
        let cut = back.iter().position(|&b| b == 0).expect("a cut");
        assert!(cut <= 2048, "nothing past the page that is left: {cut}");
        assert!(
            back[cut..].iter().all(|&b| b == 0),
            "zeroes from the cut on"
        );
        m.write_bulk(100, &ones[..8000]);
        m.read_bulk(0, &mut back);
        assert_eq!(back[99], 0);
        assert!(back[100..8100].iter().all(|&b| b == 1));
    }

    #[test]
    fn the_guard_never_pairs_one_mappings_start_with_anothers_length() {
        // One thread registers and unregisters two ranges, A and B, again
        // and again, in what is mostly one reused entry; another looks up
        // an address that lies in neither range, only in [A's start, A's
        // start + B's length). A lookup that read A's start and then, the
        // entry reused meanwhile, B's length, found it: the SIGBUS handler
        // would have mapped zero pages over memory of no mapping of ours.
        // The ranges lie below 64 KiB (vm.mmap_min_addr), where no real
        // mapping is, so a real fault meanwhile never matches them.
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU64};
        const A: (usize, usize) = (0x1000, 0x1000);
        const B: (usize, usize) = (0x4000, 0x4000);
        const ADDR: usize = 0x3000;
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let writer = {
            let (stop, rounds) = (stop.clone(), rounds.clone());
            std::thread::spawn(move || {
                while !stop.load(Relaxed) {
                    for (start, len) in [A, B] {
                        guard::unregister(guard::register(start, len));
                    }
                    rounds.fetch_add(1, Relaxed);
                }
            })
        };
        let t0 = std::time::Instant::now();
        let mut found = None;
        let mut looks = 0u64;
        while found.is_none()
            && (t0.elapsed() < std::time::Duration::from_secs(1) || rounds.load(Relaxed) < 100_000)
            && t0.elapsed() < std::time::Duration::from_secs(20)
        {
            found = guard::find(ADDR).map(|(_, start, len)| (start, len));
            looks += 1;
        }
        stop.store(true, Relaxed);
        writer.join().unwrap();
        assert_eq!(
            found,
            None,
            "a torn (start, length) after {looks} looks and {} rounds",
            rounds.load(Relaxed)
        );
    }

    #[test]
    fn floats_are_stored_by_their_bits() {
        let m = mapping(16);
        m.write::<f64>(8, -1.5);
        assert_eq!(m.read::<f64>(8), -1.5);
        assert_eq!(m.read::<u64>(8), (-1.5f64).to_bits());
    }
}
