//! Named objects in `/dev/shm`: created whole or not at all, opened only
//! when they are ours.
//!
//! Any local user can create a file in `/dev/shm` (it is world-writable and
//! sticky), so a name may already be taken by someone else's object, or
//! by a file that is empty, short or garbage. Every named object of
//! posixkit (a [`Segment`](super::Segment), a named
//! [`SharedArray`](super::SharedArray), a named
//! [`Queue`](crate::queue::Queue), a
//! [`RobustSemaphore`](crate::sem::RobustSemaphore)'s name file) goes
//! through the two functions here:
//!
//! - [`create`]: a new file, mode 0600 whatever the umask, sized with
//!   `posix_fallocate` (so a full `/dev/shm` fails now with ENOSPC rather
//!   than with SIGBUS on a later write), filled in by the caller, and only
//!   then given its name, with `linkat` of an `O_TMPFILE`: a creator killed
//!   at any instant leaves no half-made object behind, and an existing name
//!   is never replaced (EEXIST). Where `O_TMPFILE` or `/proc` is missing it
//!   falls back to `O_CREAT | O_EXCL` under the final name, removed again if
//!   a later step fails.
//! - [`open`]: `O_NOFOLLOW`, then `fstat`: a regular file, owned by the
//!   effective user, that no other user may write. Anything else is refused
//!   with [`ErrorKind::PermissionDenied`] (another user's object) or
//!   [`ErrorKind::BadData`] (not a regular file, a symbolic link), never
//!   used. [`sized`] then waits a little for an empty object that its
//!   creator has not sized yet.
//!
//! `shm_open(3)` is `open("/dev/shm/NAME")` with `O_NOFOLLOW | O_CLOEXEC` in
//! glibc, so objects made here are the same objects Python's
//! `multiprocessing.shared_memory` and C programs see.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::{AT_FDCWD, OFlag};
use nix::sys::stat::Mode;

use crate::error::{Context, Error, ErrorKind, Result};

/// Where POSIX shared memory lives on Linux (glibc's `shm_open` directory).
pub(crate) const DIR: &str = "/dev/shm";

/// The file of `name` (`/jobs`) under [`DIR`], with `prefix` before it
/// (`""` for shared memory, `"pk-sem."` for a robust semaphore). The name is
/// checked first ([`super::check_name`]), and the file name must fit in 255
/// bytes.
pub(crate) fn path(prefix: &str, name: &str) -> Result<PathBuf> {
    super::valid_name(name)?;
    let file = format!("{prefix}{}", &name[1..]);
    if file.len() > 255 {
        return Err(Error::invalid(
            "name",
            format!(
                "a name of {} bytes is longer than the limit of {} after the '/'",
                name.len() - 1,
                255 - prefix.len()
            ),
        ));
    }
    Ok(PathBuf::from(DIR).join(file))
}

/// The call an error names: `shm_open` for shared memory, `open` for a
/// self-healing semaphore's name file (it is not a POSIX semaphore, so
/// naming sem_open would send a reader to the wrong man page).
fn call(prefix: &str) -> &'static str {
    if prefix.is_empty() {
        "shm_open"
    } else {
        "open"
    }
}

fn rw_0600() -> Mode {
    Mode::S_IRUSR | Mode::S_IWUSR
}

/// Create `name` (file `prefix` + name), `size` bytes allocated, mode 0600;
/// `init` fills it in before the name appears. EEXIST
/// ([`ErrorKind::AlreadyExists`]) if the name is taken. Returns the open
/// file (read-write, close-on-exec).
pub(crate) fn create(
    prefix: &str,
    name: &str,
    size: u64,
    init: impl FnOnce(&File) -> Result<()>,
) -> Result<File> {
    let dest = path(prefix, name)?;
    let len = libc::off_t::try_from(size)
        .map_err(|_| Error::invalid("size", format!("{size} bytes is too large")))?;
    match nix::fcntl::open(
        DIR,
        OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC,
        rw_0600(),
    ) {
        Ok(fd) => {
            // Unnamed until linked: a failure below leaves nothing behind.
            let file = prepare(fd, name, len, init)?;
            link(&file, &dest, name, call(prefix))?;
            Ok(file)
        }
        // No O_TMPFILE here (an old kernel, a filesystem without it).
        Err(Errno::EOPNOTSUPP | Errno::EISDIR | Errno::EINVAL) => {
            let fd = nix::fcntl::open(
                &dest,
                OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_RDWR
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                rw_0600(),
            )
            .ctx(call(prefix), name)?;
            prepare(fd, name, len, init).inspect_err(|_| {
                let _ = std::fs::remove_file(&dest);
            })
        }
        Err(e) => Err(Error::sys(call(prefix), name, e)),
    }
}

/// Mode 0600 whatever the umask, the space allocated, then `init`.
fn prepare(
    fd: OwnedFd,
    name: &str,
    len: libc::off_t,
    init: impl FnOnce(&File) -> Result<()>,
) -> Result<File> {
    nix::sys::stat::fchmod(&fd, rw_0600()).ctx("fchmod", name)?;
    if len > 0 {
        super::within_file_size_limit(len as u64, "posix_fallocate", name)?;
        nix::fcntl::posix_fallocate(&fd, 0, len).map_err(|e| match e {
            Errno::ENOSPC => Error::new(
                ErrorKind::Os,
                "posix_fallocate",
                name,
                format!("no room for {len} bytes in {DIR} (No space left on device)"),
            ),
            e => Error::sys("posix_fallocate", name, e),
        })?;
    }
    let file = File::from(fd);
    init(&file)?;
    Ok(file)
}

/// Give the unnamed `file` its name `dest`: `linkat` through
/// `/proc/self/fd`, or with `AT_EMPTY_PATH` where `/proc` is missing.
fn link(file: &File, dest: &PathBuf, name: &str, call: &'static str) -> Result<()> {
    let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
    let r = nix::unistd::linkat(
        AT_FDCWD,
        proc_path.as_str(),
        AT_FDCWD,
        dest,
        AtFlags::AT_SYMLINK_FOLLOW,
    );
    let r = match r {
        Err(Errno::ENOENT) if !std::path::Path::new("/proc/self/fd").exists() => {
            nix::unistd::linkat(file, "", AT_FDCWD, dest, AtFlags::AT_EMPTY_PATH)
        }
        r => r,
    };
    r.ctx(call, name)
}

/// Open the existing object `name` (file `prefix` + name) read-write, and
/// check that it is ours: a regular file, owned by the effective user,
/// writable by no other user. Returns the file and its size in bytes.
/// ENOENT is [`ErrorKind::NotFound`].
pub(crate) fn open(prefix: &str, name: &str) -> Result<(File, u64)> {
    let p = path(prefix, name)?;
    let fd = nix::fcntl::open(
        &p,
        OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::ELOOP => Error::data(call(prefix), name, "a symbolic link: refusing to follow it"),
        Errno::EISDIR => Error::data(call(prefix), name, "not a regular file (a directory)"),
        // open(2) gives ENXIO for a socket, and for a device with no
        // driver: neither is an object, as a FIFO is not.
        Errno::ENXIO => {
            use std::os::unix::fs::FileTypeExt;
            let socket = std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_socket());
            let what = if socket {
                "a socket"
            } else {
                "No such device or address"
            };
            Error::data(call(prefix), name, format!("not a regular file ({what})"))
        }
        e => Error::sys(call(prefix), name, e),
    })?;
    let file = File::from(fd);
    let size = check_ours(&file, name, call(prefix))?;
    Ok((file, size))
}

/// The checks of [`open`] on an open file: its size when it passes.
pub(crate) fn check_ours(file: &File, name: &str, call: &'static str) -> Result<u64> {
    let meta = file.metadata().ctx("fstat", name)?;
    if !meta.file_type().is_file() {
        return Err(Error::data(call, name, "not a regular file"));
    }
    owned_by_me(&meta, name, call)?;
    if meta.mode() & 0o022 != 0 {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            call,
            name,
            format!(
                "mode {:04o} lets other users write it: refusing it",
                meta.mode() & 0o7777
            ),
        ));
    }
    Ok(meta.len())
}

/// [`ErrorKind::PermissionDenied`] for an object of another user.
fn owned_by_me(meta: &std::fs::Metadata, name: &str, call: &'static str) -> Result<()> {
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            call,
            name,
            format!(
                "owned by uid {}, not by uid {me}: refusing another user's object",
                meta.uid()
            ),
        ));
    }
    Ok(())
}

/// How long [`sized`] keeps looking at an empty object: ample for a
/// creator between its `shm_open(O_CREAT | O_EXCL)` and its `ftruncate`,
/// two system calls apart.
pub(crate) const SIZE_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

/// The size of the just opened `file` (`size` bytes at [`open`]), waiting
/// for it when it is empty. A creator that makes an object the POSIX way,
/// `shm_open(O_CREAT | O_EXCL)` and then `ftruncate` (Python's
/// `SharedMemory(create=True)`, C programs), shows an empty object in
/// between: an empty one is looked at again (fstat, with pauses growing
/// from 250 µs to 10 ms) for [`SIZE_GRACE`]. Still empty then, it is
/// [`ErrorKind::NotFound`]: not there yet as an object of any size, rather
/// than damaged.
pub(crate) fn sized(file: &File, name: &str, size: u64) -> Result<u64> {
    if size > 0 {
        return Ok(size);
    }
    let deadline = std::time::Instant::now() + SIZE_GRACE;
    let mut pause = std::time::Duration::from_micros(250);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        std::thread::sleep(pause.min(left));
        let now = size_now(file, name)?;
        if now > 0 {
            return Ok(now);
        }
        if left <= pause {
            return Err(Error::new(
                ErrorKind::NotFound,
                "shm_open",
                name,
                format!(
                    "empty (0 bytes) for {} ms: not sized yet (it may still be being created)",
                    SIZE_GRACE.as_millis()
                ),
            ));
        }
        pause = (pause * 2).min(std::time::Duration::from_millis(10));
    }
}

/// The current size of an open object, for the check before an access.
pub(crate) fn size_now(file: &File, name: &str) -> Result<u64> {
    Ok(file.metadata().ctx("fstat", name)?.len())
}

/// Make a named object with `create`, or, when the name is taken, open
/// the one there with `open`; `true` when this call made it. A name that
/// another process unlinks between the two (or creates between them) is
/// tried again, so the caller never fails because the name came or went
/// under it: each turn of the loop means another process changed the
/// name meanwhile.
pub(crate) fn open_or_create<T>(
    mut create: impl FnMut() -> Result<T>,
    mut open: impl FnMut() -> Result<T>,
) -> Result<(T, bool)> {
    loop {
        match create() {
            Ok(t) => return Ok((t, true)),
            Err(e) if e.kind() == crate::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        match open() {
            Ok(t) => return Ok((t, false)),
            Err(e) if e.kind() == crate::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
}

/// [`unlink`], only for an object of ours (whatever its kind or mode):
/// another user's is [`ErrorKind::PermissionDenied`], as every [`open`]
/// of it is. Root could remove it, and every other command refuses it.
pub(crate) fn unlink_ours(prefix: &str, name: &str) -> Result<()> {
    let p = path(prefix, name)?;
    let call = unlink_call(prefix);
    let meta = std::fs::symlink_metadata(&p).ctx(call, name)?;
    owned_by_me(&meta, name, call)?;
    unlink(prefix, name)
}

/// Remove the name `name` (file `prefix` + name). Processes that have the
/// object open or mapped keep it.
pub(crate) fn unlink(prefix: &str, name: &str) -> Result<()> {
    let p = path(prefix, name)?;
    nix::unistd::unlink(&p).ctx(unlink_call(prefix), name)
}

/// The call an error of unlinking names: shm_unlink for what shm_open
/// makes; a pk-sem name file is no POSIX semaphore, and glibc's
/// sem_unlink is not what removes it.
fn unlink_call(prefix: &str) -> &'static str {
    if prefix.is_empty() {
        "shm_unlink"
    } else {
        "unlink"
    }
}
