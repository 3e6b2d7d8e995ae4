//! [`Segment`]: a named segment of shared bytes for independent processes,
//! the object behind Python's `multiprocessing.shared_memory.SharedMemory`.

use std::fs::File;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::error::{Context, Error, Result};
use crate::sys::shm::{Mapping, map_shared_len};

use super::object;

/// The largest segment [`Segment::create`] makes: 1 TiB.
pub const MAX_SEGMENT: u64 = 1 << 40;

/// A named shared memory segment (`/dev/shm/NAME`), mapped MAP_SHARED:
/// bytes that any process of the same user can open by name, from a
/// shell (`pk-shm`), from Python (`SharedMemory(name="NAME")`) or from C
/// (`shm_open("/NAME")`).
///
/// Every access is checked: an offset or length outside the segment is
/// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput), a
/// 64-bit cell must be 8-byte aligned, and a segment that another process
/// has truncated below the mapped size is
/// [`ErrorKind::BadData`](crate::ErrorKind::BadData) (the size is checked
/// with fstat before each access, and an access that races with a
/// truncation is caught by the mapping's SIGBUS guard, so the process
/// never dies of it). A change allocates its pages first (a sparse
/// segment gets them only then), so on a full `/dev/shm` it fails with
/// ENOSPC ([`ErrorKind::Os`](crate::ErrorKind::Os)) before a byte is
/// written; a read that needs a page there fails the same way.
///
/// ```no_run
/// use posixkit::shm::Segment;
/// let seg = Segment::create("/counters", 64).unwrap();
/// assert_eq!(seg.add(8, 5).unwrap(), 5);
/// let other = Segment::open("/counters").unwrap(); // any process
/// assert_eq!(other.load(8).unwrap(), 5);
/// posixkit::shm::unlink("/counters").unwrap();
/// ```
#[derive(Debug)]
pub struct Segment {
    map: Mapping,
    file: File,
    name: String,
}

impl Segment {
    /// Create the segment `name`, `size` zeroed bytes (1 to
    /// [`MAX_SEGMENT`]), mode 0600, allocated at once (ENOSPC now, not
    /// SIGBUS later). [`ErrorKind::AlreadyExists`](crate::ErrorKind::AlreadyExists)
    /// if the name is taken.
    pub fn create(name: &str, size: u64) -> Result<Segment> {
        if size == 0 || size > MAX_SEGMENT {
            return Err(Error::invalid(
                "size",
                format!("{size} is not in 1..={MAX_SEGMENT} bytes"),
            ));
        }
        if usize::try_from(size).is_err() {
            return Err(Error::invalid(
                "size",
                format!("{size} bytes do not fit in memory"),
            ));
        }
        // Mapped before the name appears: an mmap that fails leaves nothing.
        let mut mapped = None;
        let file = object::create("", name, size, |file| {
            mapped = Some(map_shared_len(file, size as usize).ctx("mmap", name)?);
            Ok(())
        })?;
        Ok(Segment {
            map: Mapping::new_guarded(mapped.expect("init ran")),
            file,
            name: name.to_string(),
        })
    }

    /// Open the existing segment `name`: it must be ours (see
    /// the checks of the [module](super)) and not empty.
    ///
    /// A segment found empty may be one that another process is still
    /// creating: Python's `SharedMemory(create=True)` and C programs call
    /// `shm_open(O_CREAT | O_EXCL)` and only then `ftruncate`. So an empty
    /// segment is looked at again (fstat, polling) for 100 ms, and used at
    /// the size it has once sized. Still empty after that, it is
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) (not yet a
    /// segment of any size), not damaged.
    pub fn open(name: &str) -> Result<Segment> {
        let (file, size) = object::open("", name)?;
        let size = object::sized(&file, name, size)?;
        Self::map(file, name, size)
    }

    fn map(file: File, name: &str, size: u64) -> Result<Segment> {
        if usize::try_from(size).is_err() {
            return Err(Error::data(
                "mmap",
                name,
                format!("{size} bytes do not fit in memory"),
            ));
        }
        let map = map_shared_len(&file, size as usize).ctx("mmap", name)?;
        Ok(Segment {
            map: Mapping::new_guarded(map),
            file,
            name: name.to_string(),
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its size in bytes, as mapped.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Never: a segment has at least one byte. (For clippy's `len`.)
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the object was seen truncated under this mapping (the
    /// SIGBUS guard tripped): every later access fails.
    pub fn truncated(&self) -> bool {
        self.map.truncated()
    }

    /// The error of an access that the SIGBUS guard caught: a truncation
    /// by another process, or, when the file still has its size and its
    /// file system has no page left, a page that could not be allocated
    /// (a sparse segment, as Python's SharedMemory makes them, on a full
    /// /dev/shm: a fault there raises SIGBUS too).
    fn caught(&self) -> Error {
        let size = object::size_now(&self.file, &self.name).ok();
        let full = nix::sys::statvfs::fstatvfs(&self.file)
            .is_ok_and(|v| v.blocks() > 0 && v.blocks_available() == 0);
        if full && size.is_some_and(|s| s >= self.len() as u64) {
            return Error::new(
                crate::ErrorKind::Os,
                "shm",
                &self.name,
                "no room in /dev/shm for a page of it (No space left on device): reopen it",
            );
        }
        self.cut(None)
    }

    fn cut(&self, now: Option<u64>) -> Error {
        let why = match now {
            Some(now) => format!(
                "truncated by another process to {now} bytes (mapped {}): reopen it",
                self.len()
            ),
            None => "truncated by another process during the access: reopen it".to_string(),
        };
        Error::data("shm", &self.name, why)
    }

    /// Fail if the object is now shorter than the mapping.
    pub fn check(&self) -> Result<()> {
        if self.map.truncated() {
            return Err(self.caught());
        }
        let now = object::size_now(&self.file, &self.name)?;
        if now < self.len() as u64 {
            return Err(self.cut(Some(now)));
        }
        Ok(())
    }

    fn after(&self) -> Result<()> {
        if self.map.truncated() {
            return Err(self.caught());
        }
        Ok(())
    }

    /// Allocate the pages of `len` bytes at `at` before they are written:
    /// a segment made sparse (ftruncate, as Python's SharedMemory and C
    /// programs make one) gets its pages at the first write, and on a
    /// full /dev/shm that write would die of SIGBUS half-way. fallocate(2)
    /// fails with ENOSPC instead, before a byte is written. KEEP_SIZE: a
    /// file that another process has just truncated is not grown back.
    /// A file system without fallocate leaves the pages to the write.
    fn allocate(&self, at: usize, len: usize) -> Result<()> {
        use nix::errno::Errno;
        use nix::fcntl::{FallocateFlags, fallocate};
        if len == 0 {
            return Ok(());
        }
        loop {
            match fallocate(
                &self.file,
                FallocateFlags::FALLOC_FL_KEEP_SIZE,
                at as libc::off_t,
                len as libc::off_t,
            ) {
                Ok(()) | Err(Errno::EOPNOTSUPP | Errno::ENOSYS) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    return Err(Error::sys(
                        "fallocate",
                        format_args!("{}: {len} bytes at offset {at}", self.name),
                        e,
                    ));
                }
            }
        }
    }

    fn range(&self, off: u64, len: u64) -> Result<usize> {
        let size = self.len() as u64;
        match off.checked_add(len) {
            Some(end) if end <= size => Ok(off as usize),
            _ => Err(Error::invalid(
                "offset",
                format!(
                    "{len} bytes at offset {off} do not fit in {} ({size} bytes)",
                    self.name
                ),
            )),
        }
    }

    fn cell(&self, off: u64) -> Result<&AtomicI64> {
        let at = self.range(off, 8)?;
        if at % 8 != 0 {
            return Err(Error::invalid(
                "offset",
                format!("{off} is not a multiple of 8: a 64-bit cell must be aligned"),
            ));
        }
        self.check()?;
        Ok(self.map.atomic(at))
    }

    /// [`Segment::cell`] for a change: its page allocated first.
    fn cell_to_change(&self, off: u64) -> Result<&AtomicI64> {
        let cell = self.cell(off)?;
        self.allocate(off as usize, 8)?;
        Ok(cell)
    }

    /// Copy `buf.len()` bytes out from byte `off`.
    pub fn read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        let at = self.range(off, buf.len() as u64)?;
        self.check()?;
        self.map.read_bytes(at, buf);
        self.after()
    }

    /// Copy `data` in at byte `off`. Other processes may see a copy in
    /// progress: order it with a cell ([`Segment::store`]) or a lock when a
    /// reader needs it whole.
    pub fn write(&self, off: u64, data: &[u8]) -> Result<()> {
        let at = self.range(off, data.len() as u64)?;
        self.check()?;
        self.allocate(at, data.len())?;
        self.map.write_bytes(at, data);
        self.after()
    }

    /// The signed 64-bit cell (native byte order) at byte `off`.
    pub fn load(&self, off: u64) -> Result<i64> {
        let v = self.cell(off)?.load(Ordering::SeqCst);
        self.after().map(|()| v)
    }

    /// Store `v` in the cell at `off`.
    pub fn store(&self, off: u64, v: i64) -> Result<()> {
        self.cell_to_change(off)?.store(v, Ordering::SeqCst);
        self.after()
    }

    /// Add `by` to the cell at `off` atomically (wrapping); returns the new
    /// value. Many processes adding at once lose no update.
    pub fn add(&self, off: u64, by: i64) -> Result<i64> {
        let old = self.cell_to_change(off)?.fetch_add(by, Ordering::SeqCst);
        self.after().map(|()| old.wrapping_add(by))
    }

    /// Compare and swap the cell at `off`: store `new` if it holds
    /// `expected`. `Ok(Ok(expected))` when it swapped, `Ok(Err(found))`
    /// with the value found when it did not.
    pub fn compare_exchange(&self, off: u64, expected: i64, new: i64) -> Result<Result<i64, i64>> {
        let r = self.cell_to_change(off)?.compare_exchange(
            expected,
            new,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        self.after().map(|()| r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn unique(tag: &str) -> String {
        use std::sync::atomic::AtomicU32;
        static N: AtomicU32 = AtomicU32::new(0);
        format!(
            "/pk-unit-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    #[test]
    fn create_read_write_cells_and_bounds() {
        let name = unique("seg");
        let s = Segment::create(&name, 64).unwrap();
        assert_eq!(s.len(), 64);
        s.write(3, b"hello").unwrap();
        let mut b = [0u8; 5];
        s.read(3, &mut b).unwrap();
        assert_eq!(&b, b"hello");
        assert_eq!(s.add(16, 5).unwrap(), 5);
        assert_eq!(s.add(16, -7).unwrap(), -2);
        s.store(56, i64::MAX).unwrap();
        assert_eq!(s.add(56, 1).unwrap(), i64::MIN, "wraps");
        assert_eq!(s.compare_exchange(16, -2, 9).unwrap(), Ok(-2));
        assert_eq!(s.compare_exchange(16, -2, 1).unwrap(), Err(9));
        let o = Segment::open(&name).unwrap();
        assert_eq!(o.load(16).unwrap(), 9);
        for e in [
            s.read(60, &mut [0u8; 5]).unwrap_err(),
            s.write(65, b"").unwrap_err(),
            s.write(u64::MAX, b"x").unwrap_err(),
            s.load(4).unwrap_err(),
            s.load(64).unwrap_err(),
        ] {
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        }
        assert_eq!(
            Segment::create(&name, 8).unwrap_err().kind(),
            ErrorKind::AlreadyExists
        );
        assert_eq!(
            Segment::create(&unique("z"), 0).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        super::super::unlink(&name).unwrap();
        assert_eq!(
            Segment::open(&name).unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }

    #[test]
    fn a_truncated_segment_is_an_error_not_a_crash() {
        let name = unique("cut");
        let s = Segment::create(&name, 3 * 4096).unwrap();
        s.store(2 * 4096, 7).unwrap();
        let path = format!("/dev/shm/{}", &name[1..]);
        // What another process of the same user could do at any moment.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(100)
            .unwrap();
        let e = s.load(2 * 4096).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadData);
        assert!(e.to_string().contains("truncated"), "{e}");
        // A reopen sees the new size and refuses what no longer fits.
        let o = Segment::open(&name).unwrap();
        assert_eq!(o.len(), 100);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn objects_are_0600_and_empty_or_foreign_files_refused() {
        use std::os::unix::fs::PermissionsExt;
        let name = unique("mode");
        drop(Segment::create(&name, 8).unwrap());
        let path = format!("/dev/shm/{}", &name[1..]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(
            Segment::open(&name).unwrap_err().kind(),
            ErrorKind::PermissionDenied
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, b"").unwrap();
        let e = Segment::open(&name).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        assert!(e.to_string().contains("being created"), "{e}");
        std::fs::remove_file(&path).unwrap();
    }
}
