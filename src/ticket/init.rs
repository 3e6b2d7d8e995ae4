//! Making a ticket file: [`TicketFile::init`] writes a new file whole under
//! a temporary name and then gives it its name, so a failed init leaves no
//! file (never an empty one); an existing file is reset in place, under
//! the lock.

use std::os::fd::OwnedFd;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;

use super::{Access, SMALL, TicketFile, format_count};
use crate::error::{Error, ErrorKind, Result};

impl TicketFile {
    /// Create a ticket file holding `count` (mode 0600 less the umask), or
    /// reset an existing one to `count` under the exclusive lock, keeping
    /// its mode. Whatever the file held before need not parse.
    ///
    /// A new file is written whole under a temporary name in the same
    /// directory and then given its name (renameat2 with RENAME_NOREPLACE,
    /// or link(2) where that is missing): an init that fails (a full
    /// filesystem) leaves no file behind, never an empty one. An existing
    /// file is reset in place, under the lock, so buyers that have it open
    /// see the new count; one that fails leaves the old content.
    pub fn init(path: impl AsRef<Path>, count: u64) -> Result<Self> {
        Self::init_with(path.as_ref(), count, false)
    }

    /// [`init`](Self::init), durably: the file's content is flushed with
    /// fdatasync(2) before it gets its name (or after the reset), and a
    /// new file's directory with fsync(2) after, so the file and its count
    /// survive a power cut once this returns. The file stays durable
    /// ([`set_durable`](Self::set_durable)).
    pub fn init_durable(path: impl AsRef<Path>, count: u64) -> Result<Self> {
        Self::init_with(path.as_ref(), count, true)
    }

    fn init_with(path: &Path, count: u64, durable: bool) -> Result<Self> {
        match Self::open_with(path, Access::ReadWrite) {
            Ok(mut file) => {
                file.durable = durable;
                file.set(count)?;
                return Ok(file);
            }
            Err(e) if e.errno() == Some(Errno::ENOENT) => {}
            Err(e) => return Err(e),
        }
        match Self::create_new(path, count, durable)? {
            Some(file) => Ok(file),
            // Another process created it meanwhile: reset theirs.
            None => Self::init_with(path, count, durable),
        }
    }

    /// Write `count` to a new file under a temporary name in `path`'s
    /// directory, then give it `path` unless that exists by now (`None`
    /// then). On any error the temporary file is removed.
    fn create_new(path: &Path, count: u64, durable: bool) -> Result<Option<Self>> {
        let name = path.display().to_string();
        let Some(base) = path.file_name() else {
            return Err(Error::sys("open", &name, Errno::EISDIR));
        };
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir = open(
            parent,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::sys("open", parent.display(), e))?;
        let mut tmp = None;
        for n in 0..100u32 {
            let tmp_name = format!(".pk-ticket.{}.{n}.tmp", std::process::id());
            match nix::fcntl::openat(
                &dir,
                tmp_name.as_str(),
                OFlag::O_RDWR
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_CLOEXEC
                    | OFlag::O_NOFOLLOW,
                Mode::S_IRUSR | Mode::S_IWUSR,
            ) {
                Ok(fd) => {
                    tmp = Some((tmp_name, fd));
                    break;
                }
                Err(Errno::EEXIST | Errno::EINTR) => continue,
                Err(e) => return Err(Error::sys("open", &name, e)),
            }
        }
        let Some((tmp_name, fd)) = tmp else {
            return Err(Error::sys("open", &name, Errno::EEXIST));
        };
        let file = TicketFile::from_parts(fd, name.clone(), durable);
        let remove_tmp = || {
            let _ = nix::unistd::unlinkat(
                &dir,
                tmp_name.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        };
        let placed = file
            .write_new(count)
            .and_then(|()| place(&dir, &tmp_name, base, &name));
        match placed {
            Ok(true) => {}
            Ok(false) => {
                remove_tmp();
                return Ok(None);
            }
            Err(e) => {
                remove_tmp();
                return Err(e);
            }
        }
        if durable {
            // The new name is in the directory, which needs its own flush.
            nix::unistd::fsync(&dir).map_err(|e| {
                Error::new(
                    ErrorKind::from_errno(e),
                    "fsync",
                    parent.display(),
                    format!(
                        "{}: {name} holds {count}, but whether the disk has its name yet is unknown",
                        crate::error::strerror(e)
                    ),
                )
            })?;
        }
        Ok(Some(file))
    }

    /// The content of a new file: `count`, flushed when durable.
    fn write_new(&self, count: u64) -> Result<()> {
        let mut small = [b' '; SMALL];
        let len = format_count(count, &mut small);
        self.pwrite_all(&small[..len])?;
        if self.durable {
            nix::unistd::fdatasync(&self.fd).map_err(|e| Error::sys("fdatasync", &self.name, e))?;
        }
        Ok(())
    }
}

/// Give the temporary file `tmp` in `dir` the name `base`, unless `base`
/// exists (false then): renameat2(RENAME_NOREPLACE), or where the
/// filesystem lacks it, link(2) and unlink(2).
fn place(dir: &OwnedFd, tmp: &str, base: &std::ffi::OsStr, name: &str) -> Result<bool> {
    use nix::fcntl::{RenameFlags, renameat2};
    match renameat2(dir, tmp, dir, base, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => return Ok(true),
        Err(Errno::EEXIST) => return Ok(false),
        Err(Errno::EINVAL | Errno::ENOSYS) => {}
        Err(e) => return Err(Error::sys("rename", name, e)),
    }
    match nix::unistd::linkat(dir, tmp, dir, base, nix::fcntl::AtFlags::empty()) {
        Ok(()) => {
            let _ = nix::unistd::unlinkat(dir, tmp, nix::unistd::UnlinkatFlags::NoRemoveDir);
            Ok(true)
        }
        Err(Errno::EEXIST) => Ok(false),
        Err(e) => Err(Error::sys("link", name, e)),
    }
}
