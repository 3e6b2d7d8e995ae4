//! fork + exec for [`crate::spawn`]: everything the child does between
//! fork(2) and execve(2), with nothing but async-signal-safe calls.
//!
//! The parent prepares every byte the child needs (argv, envp, the list of
//! paths that execvp(3)'s PATH search would try, the `/bin/sh` fallback
//! argv) before it forks, so the child never allocates, never takes a lock
//! and never reads the environment. That makes [`fork_exec`] sound even in a
//! multi-threaded program, where a forked child must not touch a lock
//! another thread might have held at the instant of the fork.

use std::ffi::{CStr, c_char};
use std::os::fd::RawFd;
use std::os::raw::c_int;

use nix::errno::Errno;
use nix::unistd::Pid;

/// The failing step, as the child reports it on the error pipe.
pub const STAGE_DUP2: i32 = 1;
/// The exec itself failed (every candidate path was tried).
pub const STAGE_EXEC: i32 = 2;
/// Resetting the signal mask or SIGPIPE failed.
pub const STAGE_SIGNALS: i32 = 3;

/// What the child needs, prepared by the parent. Every pointer points into
/// memory the parent keeps alive (and unchanged) until [`fork_exec`] returns;
/// the child has its own copy of that memory.
#[derive(Debug)]
pub struct ExecPlan {
    /// The descriptors to put on 0, 1 and 2 (`None`: inherit). Each is 3 or
    /// above, so no dup2 overwrites another source.
    pub redirect: [Option<RawFd>; 3],
    /// The CLOEXEC pipe's write end: the child writes `[stage, errno]` (two
    /// native-endian i32) there if it cannot exec. A successful exec closes it.
    pub err_fd: RawFd,
    /// NULL-terminated argv.
    pub argv: Vec<*const c_char>,
    /// NULL-terminated environment, `NAME=value` strings.
    pub envp: Vec<*const c_char>,
    /// Paths to try, in order (execvp's PATH search, done before fork).
    pub candidates: Vec<*const c_char>,
    /// NULL-terminated `["/bin/sh", <path>, argv[1..]...]` for a file the
    /// kernel cannot execute (ENOEXEC: a script without `#!`), as execvp
    /// does. Slot 1 is filled in by the child.
    pub sh_argv: Vec<*const c_char>,
    /// A signal the child gets when the process that forked it dies
    /// (PR_SET_PDEATHSIG), with the pid of that process, checked again after
    /// arming so a parent that died first is not missed.
    pub death_signal: Option<(c_int, libc::pid_t)>,
}

const SH: &CStr = c"/bin/sh";

/// The path of the shell used for the ENOEXEC fallback.
pub fn sh_path() -> *const c_char {
    SH.as_ptr()
}

/// fork(2), then in the child: empty signal mask, SIGPIPE back to default,
/// dup2 the redirections onto 0/1/2, and execve each candidate in turn.
/// Returns the child's pid in the parent. If the child cannot exec, it
/// writes `[stage, errno]` to `plan.err_fd` and ends with `_exit(127)`.
///
/// Sound from any thread: the child calls only async-signal-safe functions
/// (sigprocmask, sigaction, dup2, fcntl, execve, write, `_exit`) and touches
/// only memory prepared before the fork.
pub fn fork_exec(plan: &mut ExecPlan) -> Result<Pid, Errno> {
    assert_eq!(
        plan.argv.last(),
        Some(&std::ptr::null()),
        "argv ends with NULL"
    );
    assert_eq!(
        plan.envp.last(),
        Some(&std::ptr::null()),
        "envp ends with NULL"
    );
    assert!(
        plan.sh_argv.len() >= 3,
        "sh_argv has sh, a path slot and NULL"
    );
    assert_eq!(
        plan.sh_argv.last(),
        Some(&std::ptr::null()),
        "sh_argv ends with NULL"
    );
    // SAFETY: the child branch below calls only async-signal-safe functions
    // and never returns (it execs or calls _exit), so no lock held by
    // another thread at fork time is ever needed in the child.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(Errno::last()),
        0 => child(plan),
        pid => Ok(Pid::from_raw(pid)),
    }
}

/// The child's side of [`fork_exec`]. Never returns.
fn child(plan: &mut ExecPlan) -> ! {
    // SAFETY: `set` is a local sigset_t initialised by sigemptyset before
    // sigprocmask reads it; a null old-set pointer is allowed.
    let r = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut())
    };
    if r != 0 {
        report(plan.err_fd, STAGE_SIGNALS, Errno::last());
    }
    // SAFETY: `act` is a zeroed sigaction with SIG_DFL as handler and an
    // empty mask; installing SIG_DFL runs no code of ours in signal context.
    let r = unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaction(libc::SIGPIPE, &act, std::ptr::null_mut())
    };
    if r != 0 {
        report(plan.err_fd, STAGE_SIGNALS, Errno::last());
    }
    if let Some((sig, parent)) = plan.death_signal {
        if !super::proc::arm_death_signal(sig, parent) {
            // SAFETY: _exit is async-signal-safe and never returns.
            unsafe { libc::_exit(128 + sig) };
        }
    }
    for (target, src) in plan.redirect.iter().enumerate() {
        let Some(src) = *src else { continue };
        let target = target as RawFd;
        loop {
            // SAFETY: dup2 on plain integers; a bad descriptor is an error
            // return, not undefined behaviour.
            if unsafe { libc::dup2(src, target) } != -1 {
                break;
            }
            let e = Errno::last();
            if e != Errno::EINTR {
                report(plan.err_fd, STAGE_DUP2, e);
            }
        }
    }
    let mut eacces = false;
    let mut last = Errno::ENOENT;
    for i in 0..plan.candidates.len() {
        let path = plan.candidates[i];
        // SAFETY: `path`, `argv` and `envp` are NUL-terminated strings and
        // NULL-terminated arrays the parent built before the fork; execve
        // only reads them.
        unsafe { libc::execve(path, plan.argv.as_ptr(), plan.envp.as_ptr()) };
        let mut e = Errno::last();
        if e == Errno::ENOEXEC {
            // Not a binary the kernel knows and no `#!`: run it with
            // /bin/sh, as execvp does.
            plan.sh_argv[1] = path;
            // SAFETY: as above; sh_argv is NULL-terminated and slot 1 now
            // points at the candidate path, which lives as long as the plan.
            unsafe { libc::execve(SH.as_ptr(), plan.sh_argv.as_ptr(), plan.envp.as_ptr()) };
            e = Errno::last();
            report(plan.err_fd, STAGE_EXEC, e);
        }
        match e {
            Errno::EACCES => eacces = true,
            Errno::ENOENT | Errno::ENOTDIR | Errno::ESTALE | Errno::ENODEV | Errno::ETIMEDOUT => {}
            other => {
                last = other;
                break;
            }
        }
    }
    report(
        plan.err_fd,
        STAGE_EXEC,
        if eacces && last == Errno::ENOENT {
            Errno::EACCES
        } else {
            last
        },
    )
}

/// Tell the parent why the child could not exec, then `_exit(127)`.
fn report(fd: RawFd, stage: i32, errno: Errno) -> ! {
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&stage.to_ne_bytes());
    msg[4..].copy_from_slice(&(errno as i32).to_ne_bytes());
    loop {
        // SAFETY: `msg` is a valid 8-byte buffer; 8 bytes is below PIPE_BUF,
        // so the write is all-or-nothing.
        let r = unsafe { libc::write(fd, msg.as_ptr().cast(), msg.len()) };
        if r != -1 || Errno::last() != Errno::EINTR {
            break;
        }
    }
    crate::sys::proc::_exit(127)
}

/// A close-on-exec duplicate of `fd` numbered 3 or above
/// (fcntl(F_DUPFD_CLOEXEC, 3)).
pub fn dup_above_stdio(fd: std::os::fd::BorrowedFd<'_>) -> Result<std::os::fd::OwnedFd, Errno> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: fcntl on a descriptor we borrow, with an int argument; it
    // touches no memory of ours.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if new == -1 {
        return Err(Errno::last());
    }
    // SAFETY: `new` is a fresh descriptor fcntl just created; nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(new) })
}
