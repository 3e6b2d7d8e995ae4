//! Shared memory that a forked child really shares: `Array('c', b'Hello')`
//! and `Value('i', 0)` done the POSIX way.
//!
//! The memory is a memfd (or a named `shm_open` object) mapped with
//! `mmap(MAP_SHARED)` through memmap2's `MmapMut::map_mut`. memmap2's
//! `map_anon()` is MAP_PRIVATE — after fork each process would get its own
//! copy on first write — so it is never used here.
//!
//! ```no_run
//! use posixkit::process::{self, Fork};
//! use posixkit::shm::SharedArray;
//! let arr = SharedArray::from_slice(b"Hello").unwrap();
//! match process::fork().unwrap() {
//!     Fork::Child => { arr.set(0, b'h'); process::_exit(0) }
//!     Fork::Parent(pid) => {
//!         process::waitpid(pid).unwrap();
//!         assert_eq!(arr.to_vec(), b"hello");
//!     }
//! }
//! ```
//!
//! Elements are read and written by value ([`SharedArray::get`],
//! [`SharedArray::set`]), each a relaxed atomic load or store of its cell;
//! integer cells also have atomic views ([`SharedArray::atomic`]) for
//! counters that several processes update at once. `set` and a
//! `fetch_add` on the same element from two threads or processes race in
//! the lesson's sense (one update may overwrite the other) but never in
//! the memory model's: every access is atomic. No `&T` or `&mut [T]` into the shared bytes is
//! ever handed out, since another process may change them at any moment.
//!
//! Named memory lives in `/dev/shm/<name>` with mode 0600 until unlinked,
//! so independent processes can share it: [`Segment`] (bytes and 64-bit
//! cells, every access checked: what `pk-shm` and Python's `SharedMemory`
//! use) and the typed [`SharedArray::create`] / [`SharedArray::open`].
//! Both create the object whole or not at all, allocate it with
//! `posix_fallocate`, and open only objects that are ours (owner, mode,
//! regular file); see the `object` module. An object found empty is
//! looked at again for 100 ms, since Python's `SharedMemory(create=True)`
//! and C programs size a new object with `ftruncate` only after
//! `shm_open` made it; still empty then, it is
//! [`ErrorKind::NotFound`](crate::ErrorKind::NotFound). A named mapping is guarded
//! against SIGBUS: if another process truncates the object, an access to
//! the lost pages reads zeroes instead of killing the process, and the
//! owner can tell ([`Segment::check`], [`SharedArray::truncated`]).

use std::ffi::CString;
use std::fs::File;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::sys::memfd::{MFdFlags, memfd_create};

use crate::error::{Context, Error, Result};
use crate::sys::shm::{Mapping, map_shared};

pub(crate) mod object;
mod segment;

pub use crate::sys::shm::{AtomicCell, AtomicInt, Pod};
pub use segment::{MAX_SEGMENT, Segment};

/// The longest name after the leading slash: Linux keeps semaphores as
/// `/dev/shm/sem.<name>`, so NAME_MAX (255) minus 4.
pub const NAME_MAX: usize = 251;

/// Check a POSIX IPC object name: `/name`, one leading slash and no other,
/// 1 to [`NAME_MAX`] bytes after it, no control character (a newline in
/// a name would break every line that shows it: `pk-queue stat`, `ls`),
/// not `.` or `..`. Returns the reason when it is refused.
pub fn check_name(name: &str) -> std::result::Result<CString, String> {
    let Some(rest) = name.strip_prefix('/') else {
        return Err(format!("'{name}' must start with '/' (like /jobs)"));
    };
    if rest.is_empty() || rest == "." || rest == ".." {
        return Err(format!("'{name}' needs a name after the '/' (like /jobs)"));
    }
    if rest.contains('/') {
        return Err(format!(
            "'{name}' may hold only its leading '/' (like /jobs)"
        ));
    }
    if let Some(c) = rest.chars().find(|c| c.is_control()) {
        return Err(format!(
            "a name may not contain a control character ({})",
            c.escape_default()
        ));
    }
    if rest.len() > NAME_MAX {
        return Err(format!(
            "a name of {} bytes is longer than the limit of {NAME_MAX} after the '/'",
            rest.len()
        ));
    }
    CString::new(name).map_err(|_| "a name may not contain a NUL byte".to_string())
}

/// [`check_name`] as a posixkit error (exit 2, naming the object).
pub(crate) fn valid_name(name: &str) -> Result<CString> {
    check_name(name).map_err(|why| Error::invalid("name", why))
}

/// Refuse to size a file of `what` to `len` bytes past the process's
/// file-size limit (`ulimit -f`), with EFBIG: the kernel answers an
/// ftruncate(2) or posix_fallocate(3) past it with SIGXFSZ as well, whose
/// default action kills the process.
pub(crate) fn within_file_size_limit(len: u64, call: &'static str, what: &str) -> Result<()> {
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit};
    match getrlimit(Resource::RLIMIT_FSIZE) {
        Ok((soft, _)) if soft != RLIM_INFINITY && len > soft => Err(Error::sys(
            call,
            format_args!("{what}: {len} bytes, over the file-size limit of {soft} (ulimit -f)"),
            Errno::EFBIG,
        )),
        _ => Ok(()),
    }
}

/// A fresh anonymous memfd of `len` bytes (zero-filled), close-on-exec.
fn memfd(len: usize) -> Result<File> {
    within_file_size_limit(len as u64, "ftruncate", "posixkit-shm")?;
    let fd: OwnedFd =
        memfd_create(c"posixkit-shm", MFdFlags::MFD_CLOEXEC).ctx("memfd_create", "posixkit-shm")?;
    let file = File::from(fd);
    file.set_len(len as u64)
        .ctx("ftruncate", format_args!("memfd of {len} bytes"))?;
    Ok(file)
}

/// A zero-filled MAP_SHARED mapping of `len` bytes (at least 1) backed by a
/// memfd. The fd is closed once mapped; the mapping keeps the memory alive,
/// and a forked child inherits it.
pub(crate) fn anon_shared(len: usize) -> Result<Mapping> {
    let len = len.max(1);
    let file = memfd(len)?;
    let map = map_shared(&file).ctx("mmap", format_args!("memfd of {len} bytes"))?;
    Ok(Mapping::new(map))
}

fn bytes_for<T>(len: usize) -> Result<usize> {
    len.checked_mul(std::mem::size_of::<T>())
        .filter(|&b| b <= isize::MAX as usize)
        .ok_or_else(|| Error::invalid("len", format!("{len} elements do not fit in memory")))
}

/// An array of `T` in memory shared with forked children (or, when named,
/// with any process that opens the name).
#[derive(Debug)]
pub struct SharedArray<T: Pod> {
    map: Mapping,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Pod> SharedArray<T> {
    /// `len` zeroed elements in a fresh memfd mapped MAP_SHARED.
    pub fn new(len: usize) -> Result<Self> {
        let map = anon_shared(bytes_for::<T>(len)?)?;
        Ok(SharedArray {
            map,
            len,
            _t: PhantomData,
        })
    }

    /// A shared copy of `items`.
    pub fn from_slice(items: &[T]) -> Result<Self> {
        let a = Self::new(items.len())?;
        a.copy_from_slice(items);
        Ok(a)
    }

    /// Create the named object `name` (`/name`), mode 0600, holding `len`
    /// zeroed elements, allocated at once. Fails with EEXIST if it exists:
    /// names are claimed, never silently reused. It stays in `/dev/shm`
    /// until [`unlink`].
    pub fn create(name: &str, len: usize) -> Result<Self> {
        let bytes = bytes_for::<T>(len)?.max(1);
        // Mapped before the name appears: an mmap that fails leaves nothing.
        let mut mapped = None;
        object::create("", name, bytes as u64, |file| {
            mapped = Some(crate::sys::shm::map_shared_len(file, bytes).ctx("mmap", name)?);
            Ok(())
        })?;
        Ok(SharedArray {
            map: Mapping::new_guarded(mapped.expect("init ran")),
            len,
            _t: PhantomData,
        })
    }

    /// Open the existing named object `name` (ours: owned by us, writable by
    /// no other user, a regular file); its
    /// length is its size in bytes divided by the size of `T`. An empty
    /// object is waited for as [`Segment::open`] does (100 ms, for a
    /// creator between `shm_open` and `ftruncate`), then
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound).
    pub fn open(name: &str) -> Result<Self> {
        let (file, size) = object::open("", name)?;
        let size = object::sized(&file, name, size)?;
        let len = usize::try_from(size).unwrap_or(0) / std::mem::size_of::<T>();
        if len == 0 {
            return Err(Error::data(
                "shm_open",
                name,
                format!("{size} bytes hold no {}", std::any::type_name::<T>()),
            ));
        }
        Self::map_named(file, name, len)
    }

    fn map_named(file: File, name: &str, len: usize) -> Result<Self> {
        let bytes = len * std::mem::size_of::<T>();
        let map = crate::sys::shm::map_shared_len(&file, bytes).ctx("mmap", name)?;
        Ok(SharedArray {
            map: Mapping::new_guarded(map),
            len,
            _t: PhantomData,
        })
    }

    /// Whether another process truncated this named array's object under
    /// it (its mapping is then private zeroes: reopen it). Always `false`
    /// for an unnamed array.
    pub fn truncated(&self) -> bool {
        self.map.truncated()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn off(&self, i: usize) -> usize {
        assert!(
            i < self.len,
            "index {i} out of range for a shared array of {}",
            self.len
        );
        i * std::mem::size_of::<T>()
    }

    /// Element `i`, copied out.
    ///
    /// # Panics
    /// If `i >= len()`, as slice indexing does.
    pub fn get(&self, i: usize) -> T {
        self.map.read(self.off(i))
    }

    /// Store `v` as element `i`; every process sharing the memory sees it.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn set(&self, i: usize, v: T) {
        self.map.write(self.off(i), v)
    }

    /// All elements, copied out.
    pub fn to_vec(&self) -> Vec<T> {
        (0..self.len).map(|i| self.get(i)).collect()
    }

    /// Overwrite the first `items.len()` elements.
    ///
    /// # Panics
    /// If `items` is longer than the array.
    pub fn copy_from_slice(&self, items: &[T]) {
        for (i, &v) in items.iter().enumerate() {
            self.set(i, v);
        }
    }
}

impl<T: AtomicInt> SharedArray<T> {
    /// Element `i` as an atomic (`&AtomicU64` for a `SharedArray<u64>`):
    /// `fetch_add` from many processes at once loses no update.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn atomic(&self, i: usize) -> &T::Atomic {
        self.map.atomic(self.off(i))
    }
}

/// Remove the named shared memory object `name` from `/dev/shm`. Processes
/// that have it mapped keep their mapping. Another user's object is
/// refused ([`ErrorKind::PermissionDenied`](crate::ErrorKind::PermissionDenied)),
/// even for root, as opening it is.
pub fn unlink(name: &str) -> Result<()> {
    object::unlink_ours("", name)
}

/// One `T` in shared memory: `multiprocessing.Value` without its lock (use
/// [`crate::sem::Semaphore`] as the lock, or the atomic view).
#[derive(Debug)]
pub struct SharedValue<T: Pod> {
    cell: SharedArray<T>,
}

impl<T: Pod> SharedValue<T> {
    /// A shared cell holding `v`.
    pub fn new(v: T) -> Result<Self> {
        let cell = SharedArray::new(1)?;
        cell.set(0, v);
        Ok(SharedValue { cell })
    }

    /// Create the named cell `name` (mode 0600), holding zero.
    pub fn create(name: &str) -> Result<Self> {
        Ok(SharedValue {
            cell: SharedArray::create(name, 1)?,
        })
    }

    /// Open the named cell `name`.
    pub fn open(name: &str) -> Result<Self> {
        Ok(SharedValue {
            cell: SharedArray::open(name)?,
        })
    }

    /// The value, copied out.
    pub fn get(&self) -> T {
        self.cell.get(0)
    }

    /// Store `v`.
    pub fn set(&self, v: T) {
        self.cell.set(0, v)
    }
}

impl<T: AtomicInt> SharedValue<T> {
    /// The cell as an atomic.
    pub fn atomic(&self) -> &T::Atomic {
        self.cell.atomic(0)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn unique(tag: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        format!(
            "/pk-unit-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn in_dev_shm(name: &str) -> bool {
        std::path::Path::new("/dev/shm").join(&name[1..]).exists()
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("/jobs").is_ok());
        for bad in [
            "jobs", "/a/b", "/", "", "/.", "/..", "//x", "/a\0b", "/a\nb", "/\t", "/x\u{7f}",
            "/x\u{85}",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&format!("/{}", "x".repeat(251))).is_ok());
        assert!(check_name(&format!("/{}", "x".repeat(252))).is_err());
    }

    #[test]
    fn named_memory_is_created_0600_opened_and_unlinked() {
        use std::os::unix::fs::PermissionsExt;
        let name = unique("shm");
        let a = SharedArray::<u32>::create(&name, 4).unwrap();
        assert!(in_dev_shm(&name));
        let mode = std::fs::metadata(format!("/dev/shm{name}"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        a.set(3, 42);
        let b = SharedArray::<u32>::open(&name).unwrap();
        assert_eq!(b.len(), 4);
        assert_eq!(b.get(3), 42);
        assert_eq!(
            SharedArray::<u32>::create(&name, 4).unwrap_err().errno(),
            Some(nix::errno::Errno::EEXIST)
        );
        unlink(&name).unwrap();
        assert!(!in_dev_shm(&name));
        assert_eq!(b.get(3), 42, "a mapping outlives its name");
        assert_eq!(
            SharedArray::<u32>::open(&name).unwrap_err().kind(),
            crate::ErrorKind::NotFound
        );
        assert_eq!(
            unlink("nope").unwrap_err().kind(),
            crate::ErrorKind::InvalidInput
        );
    }
}
