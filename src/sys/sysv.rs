//! System V semaphore sets (semget(2), semctl(2), semtimedop(2)): the
//! kernel keeps, per process, the adjustments of every operation made
//! with SEM_UNDO and applies them when the process exits, however it
//! exits. That is what makes [`crate::sem::RobustSemaphore`] heal.

use std::ffi::{CStr, c_char};

use nix::errno::Errno;
use nix::sys::signal::SigSet;
use nix::unistd::Pid;

unsafe extern "C" {
    // glibc and musl: int semtimedop(int, struct sembuf *, size_t,
    // const struct timespec *); the libc crate does not declare it.
    fn semtimedop(
        semid: libc::c_int,
        sops: *mut libc::sembuf,
        nsops: libc::size_t,
        timeout: *const libc::timespec,
    ) -> libc::c_int;
}

/// What IPC_STAT tells about a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// The owner's uid.
    pub uid: u32,
    /// The creator's uid.
    pub cuid: u32,
    /// The permission bits.
    pub mode: u32,
    /// How many semaphores the set has.
    pub nsems: u64,
}

/// semget(key, nsems, IPC_CREAT | mode): the set of `key`, made (all
/// zero) if there is none. EINVAL when one exists with fewer semaphores.
pub fn get(key: i32, nsems: i32, mode: u32) -> Result<i32, Errno> {
    // SAFETY: semget takes integers only.
    let id = unsafe {
        libc::semget(
            key as libc::key_t,
            nsems,
            libc::IPC_CREAT | (mode & 0o777) as libc::c_int,
        )
    };
    Errno::result(id)
}

/// Whether a set with `key` exists (semget without IPC_CREAT).
pub fn exists(key: i32) -> Result<bool, Errno> {
    // SAFETY: semget takes integers only.
    match Errno::result(unsafe { libc::semget(key as libc::key_t, 0, 0) }) {
        Ok(_) => Ok(true),
        Err(Errno::ENOENT) => Ok(false),
        // Someone's set, not readable by us: taken all the same.
        Err(Errno::EACCES) => Ok(true),
        Err(e) => Err(e),
    }
}

/// semctl(GETVAL) of semaphore `num`.
pub fn get_val(id: i32, num: i32) -> Result<i32, Errno> {
    // SAFETY: GETVAL takes no fourth argument.
    Errno::result(unsafe { libc::semctl(id, num, libc::GETVAL) })
}

/// semctl(GETNCNT) of semaphore `num`: how many wait for it to grow.
pub fn get_ncnt(id: i32, num: i32) -> Result<i32, Errno> {
    // SAFETY: GETNCNT takes no fourth argument.
    Errno::result(unsafe { libc::semctl(id, num, libc::GETNCNT) })
}

/// semctl(IPC_STAT): owner, creator, mode and size of the set.
pub fn stat(id: i32) -> Result<Stat, Errno> {
    // SAFETY: IPC_STAT writes one struct semid_ds through the pointer
    // (the `buf` member of union semun); ours is zeroed, writable, and
    // lives through the call.
    unsafe {
        let mut ds: libc::semid_ds = std::mem::zeroed();
        Errno::result(libc::semctl(
            id,
            0,
            libc::IPC_STAT,
            &mut ds as *mut libc::semid_ds,
        ))?;
        Ok(Stat {
            uid: ds.sem_perm.uid,
            cuid: ds.sem_perm.cuid,
            mode: u32::from(ds.sem_perm.mode),
            nsems: ds.sem_nsems as u64,
        })
    }
}

/// semctl(IPC_RMID): remove the set now; its waiters fail with EIDRM.
pub fn remove(id: i32) -> Result<(), Errno> {
    // SAFETY: IPC_RMID takes no fourth argument.
    Errno::result(unsafe { libc::semctl(id, 0, libc::IPC_RMID) }).map(drop)
}

/// One operation of a [`op`] call: add `delta` to semaphore `num`,
/// with SEM_UNDO when `undo` (the kernel reverts it when the process
/// exits), without waiting when `nowait` (EAGAIN instead).
#[derive(Debug, Clone, Copy)]
pub struct Op {
    /// Which semaphore of the set.
    pub num: u16,
    /// What to add (negative: wait until it can be taken).
    pub delta: i16,
    /// Undo at exit.
    pub undo: bool,
    /// Fail with EAGAIN rather than wait.
    pub nowait: bool,
}

/// semtimedop(2): every op of `ops` at once, atomically, waiting at
/// most `timeout` (relative; `None`: as long as it takes). EAGAIN when
/// the time ran out or an op said nowait, EINTR on a signal handler,
/// EIDRM when the set was removed meanwhile.
pub fn op(id: i32, ops: &[Op], timeout: Option<std::time::Duration>) -> Result<(), Errno> {
    let mut bufs: Vec<libc::sembuf> = ops
        .iter()
        .map(|o| libc::sembuf {
            sem_num: o.num,
            sem_op: o.delta,
            sem_flg: ((if o.undo { libc::SEM_UNDO } else { 0 })
                | (if o.nowait { libc::IPC_NOWAIT } else { 0 }))
                as libc::c_short,
        })
        .collect();
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `bufs` is a live array of `bufs.len()` sembufs and `tsp`
    // null or a timespec on our stack, both for the call's duration.
    let r = unsafe { semtimedop(id, bufs.as_mut_ptr(), bufs.len(), tsp) };
    Errno::result(r).map(drop)
}

/// What the child of [`spawn_sharing_undo`] needs, prepared before the
/// clone: it runs in the parent's memory, so it must not allocate.
struct ChildArgs {
    argv: *const *const c_char,
    mask: libc::sigset_t,
    errno: std::sync::atomic::AtomicI32,
}

extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the ChildArgs the parent passed to clone; with
    // CLONE_VFORK the parent waits, unchanged, until we exec or exit.
    let args = unsafe { &*(arg as *const ChildArgs) };
    // SAFETY: every call below is async-signal-safe and touches only
    // memory the parent prepared (or our own stack): sigaction on
    // zeroed local structs, sigprocmask with the parent's saved mask,
    // execvp (which searches PATH on its stack), _exit.
    unsafe {
        // No handler of the parent's may run in the child (it would run
        // on the parent's data): every caught signal goes back to its
        // default before the mask opens. Ignored ones stay ignored,
        // but SIGPIPE, which Rust ignores, is given its default back.
        for sig in 1..libc::SIGRTMAX() {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            let h = old.sa_sigaction;
            if (h != libc::SIG_DFL && h != libc::SIG_IGN) || sig == libc::SIGPIPE {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        libc::sigprocmask(libc::SIG_SETMASK, &args.mask, std::ptr::null_mut());
        libc::execvp(*args.argv, args.argv);
        args.errno
            .store(Errno::last_raw(), std::sync::atomic::Ordering::SeqCst);
        libc::_exit(127)
    }
}

/// Start `argv[0]` (searched in PATH as execvp does) with `argv`, as a
/// child that shares this process's System V undo adjustments:
/// clone(CLONE_VM | CLONE_VFORK | CLONE_SYSVSEM). A count this process
/// holds with SEM_UNDO is then given back only when both have exited.
/// The child starts with signal mask `mask` and every caught signal at
/// its default (SIGPIPE too). Returns the child's pid, or the errno of
/// the exec that failed (the child has then exited 127 and been reaped).
pub fn spawn_sharing_undo(argv: &[&CStr], mask: &SigSet) -> Result<Pid, Errno> {
    let mut ptrs: Vec<*const c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let args = ChildArgs {
        argv: ptrs.as_ptr(),
        mask: *mask.as_ref(),
        errno: std::sync::atomic::AtomicI32::new(0),
    };
    // The child's stack: 64 KiB is plenty for execvp's PATH buffer.
    let mut stack = vec![0u128; 64 * 1024 / 16];
    // SAFETY: the stack grows down from the end of our buffer, which is
    // 16-byte aligned (u128) and outlives the child's use of it (with
    // CLONE_VFORK, clone returns only after the child has exec'd or
    // exited). All signals are blocked across the clone so no handler
    // runs in the child before it resets them; the previous mask is
    // restored right after.
    unsafe {
        let top = stack.as_mut_ptr().add(stack.len()) as *mut libc::c_void;
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_SYSVSEM | libc::SIGCHLD,
            &args as *const ChildArgs as *mut libc::c_void,
        );
        let e = Errno::last();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid == -1 {
            return Err(e);
        }
        let failed = args.errno.load(std::sync::atomic::Ordering::SeqCst);
        if failed != 0 {
            let mut st = 0;
            while libc::waitpid(pid, &mut st, 0) == -1 && Errno::last() == Errno::EINTR {}
            return Err(Errno::from_raw(failed));
        }
        Ok(Pid::from_raw(pid))
    }
}
