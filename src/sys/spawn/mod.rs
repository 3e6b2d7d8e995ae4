//! Starting a program for [`crate::spawn`]: clone(2) with `CLONE_VM |
//! CLONE_VFORK` on a stack of the child's own, and everything the child does
//! between clone and execve(2), with nothing but async-signal-safe calls.
//!
//! Why not fork: fork copies the parent's page tables, so its cost grows with
//! the parent's memory (160 ms from a 4 GiB parent, where this takes well
//! under a millisecond). With `CLONE_VM` the child runs in the parent's
//! memory instead, and `CLONE_VFORK` suspends the calling thread until the
//! child has called execve or `_exit`; posix_spawn(3) in glibc and
//! `std::process::Command` start programs the same way.
//!
//! Sharing the parent's memory sets the rules for the child:
//! - The parent prepares every byte the child needs before the clone (argv,
//!   envp, the paths execvp(3)'s PATH search would try, the `/bin/sh`
//!   fallback argv, the directory to change to) in an [`ExecPlan`], so the
//!   child never allocates, never takes a lock and never reads the
//!   environment. Other threads of the parent keep running meanwhile, in the
//!   same memory: a lock they hold would never be released for the child.
//! - The child runs on a stack of its own (mapped once per thread and
//!   reused, with a guard page), not on the parent's, which the suspended
//!   parent still needs.
//! - Signals: a handler of the parent's running in the child would run in
//!   the parent's memory. So the parent blocks every signal around the
//!   clone; the child puts every caught signal back to its default action
//!   (and SIGPIPE, which Rust programs ignore, and which exec would keep
//!   ignored), and only *then* empties its signal mask, just before exec. A
//!   signal that arrives in between finds the default action, never a
//!   handler of ours.
//! - A failure is reported in the plan itself (`[stage, errno]` in an
//!   atomic), then `_exit(127)`, as glibc's posix_spawn reports into
//!   memory it shares with its child. Since the parent only
//!   resumes once the child has exec'd or exited, the report is there (or
//!   will never come) when clone returns: no pipe to make, read and close
//!   for every start, and none that a copy in some other child could hold
//!   open (see [`fds`]).

use std::ffi::{CStr, CString, c_char, c_void};
use std::os::fd::RawFd;
use std::os::raw::c_int;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::unistd::Pid;

pub mod fds;

/// Stage of a failure, as the child reports it: dup2 onto 0, 1 or 2.
pub const STAGE_DUP2: i32 = 1;
/// The exec itself failed (every candidate path was tried).
pub const STAGE_EXEC: i32 = 2;
/// Resetting the signal dispositions or the mask failed.
pub const STAGE_SIGNALS: i32 = 3;
/// setpgid(0, 0) for a process group of its own failed.
pub const STAGE_SETPGID: i32 = 4;
/// chdir to the requested directory failed.
pub const STAGE_CHDIR: i32 = 5;
/// PR_SET_PDEATHSIG failed, or the parent was already gone.
pub const STAGE_DEATH_SIGNAL: i32 = 6;
/// setsid() for a session of its own failed.
pub const STAGE_SETSID: i32 = 7;

/// Size of the child's stack. The child runs a few small frames of our own
/// and libc's system call wrappers; 64 KiB leaves ample room, and a guard
/// page below it turns an overflow into a SIGSEGV of the child alone.
const STACK_SIZE: usize = 64 * 1024;

/// Everything the child needs, prepared by the parent. It owns every string
/// its pointer arrays point into, so the arrays stay valid as long as the
/// plan lives.
#[derive(Debug)]
pub struct ExecPlan {
    _strings: Vec<CString>,
    argv: Vec<*const c_char>,
    /// The environment built for the child, always a copy: `environ`
    /// itself could be reallocated by a `setenv` on another thread while
    /// the child's execve reads it (std's `set_var` is a safe function
    /// for edition-2021 code, and std's lock around it is not ours to
    /// take).
    envp: Vec<*const c_char>,
    candidates: Vec<*const c_char>,
    sh_argv: Vec<*const c_char>,
    cwd: Option<CString>,
    /// The descriptors to put on 0, 1 and 2 (`None`: inherit). Each must be
    /// 3 or above, so that no dup2 overwrites another source.
    pub redirect: [Option<RawFd>; 3],
    /// Where the child writes `stage << 32 | errno` if it cannot exec (0:
    /// nothing to report). Read with [`ExecPlan::report`].
    report: AtomicU64,
    /// A signal the child gets when the thread that started it dies
    /// (PR_SET_PDEATHSIG), with the pid of the parent, checked again after
    /// arming so a parent that died first is not missed.
    pub death_signal: Option<(c_int, libc::pid_t)>,
    /// Make the child the leader of a new process group (setpgid(0, 0)).
    pub new_group: bool,
    /// Make the child the leader of a new session, without a controlling
    /// terminal (setsid(); the new process group comes with it).
    pub new_session: bool,
    /// A pipe the child writes its own pid to (4 bytes, little-endian)
    /// once it leads its group, before it runs anything of the command's;
    /// and minus its pid if it then cannot exec. A supervisor reading it
    /// knows every group before the group can do anything.
    pub announce: Option<RawFd>,
    /// Close descriptor 1 after the redirections (the shell's `>&-`).
    pub close_stdout: bool,
    /// Close descriptor 0 after the redirections (the shell's `<&-`).
    pub close_stdin: bool,
    /// Close descriptor 2 after the redirections (the shell's `2>&-`).
    pub close_stderr: bool,
    /// Share this process's System V semaphore undo list with the child
    /// (CLONE_SYSVSEM): SEM_UNDO adjustments are applied only when both
    /// have exited.
    pub share_sysv_undo: bool,
    /// Signals the child sets to their default action even when they are
    /// ignored here: bit `n - 1` for signal `n` (env(1)'s
    /// `--default-signal`).
    pub default_signals: u64,
    /// The highest signal number, for the disposition reset.
    max_signal: c_int,
}

const SH: &CStr = c"/bin/sh";

impl ExecPlan {
    /// A plan to run `argv` with environment `env` (`NAME=value` strings), trying
    /// each of `candidates` in turn as execvp would, in directory `cwd`
    /// (`None`: the parent's). Panics if `argv` is empty.
    pub fn new(
        argv: Vec<CString>,
        env: Vec<CString>,
        candidates: Vec<CString>,
        cwd: Option<CString>,
    ) -> ExecPlan {
        assert!(!argv.is_empty(), "argv holds at least the program");
        let n_args = argv.len();
        let n_env = env.len();
        let strings: Vec<CString> = argv.into_iter().chain(env).chain(candidates).collect();
        let ptrs = |range: std::ops::Range<usize>| -> Vec<*const c_char> {
            strings[range]
                .iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        let argv = ptrs(0..n_args);
        let env_end = n_args + n_env;
        let envp = ptrs(n_args..env_end);
        let mut candidates = ptrs(env_end..strings.len());
        candidates.pop(); // a list, not a NULL-terminated array
        // ["/bin/sh", <path>, argv[1..]..., NULL]; slot 1 is filled in by
        // the child for the candidate that turned out to be a script.
        let mut sh_argv = vec![SH.as_ptr(), std::ptr::null()];
        sh_argv.extend(argv[1..].iter().copied());
        ExecPlan {
            _strings: strings,
            argv,
            envp,
            candidates,
            sh_argv,
            cwd,
            redirect: [None; 3],
            report: AtomicU64::new(0),
            death_signal: None,
            new_group: false,
            new_session: false,
            announce: None,
            close_stdout: false,
            close_stdin: false,
            close_stderr: false,
            share_sysv_undo: false,
            default_signals: 0,
            max_signal: libc::SIGRTMAX(),
        }
    }

    /// What the child reported after [`spawn`] returned: the stage that
    /// failed and its errno, or `None` when it exec'd (or was killed
    /// before it could do either).
    pub fn report(&self) -> Option<(i32, Errno)> {
        match self.report.load(Ordering::Acquire) {
            0 => None,
            r => Some(((r >> 32) as i32, Errno::from_raw(r as u32 as i32))),
        }
    }
}

/// The child's stack: an anonymous private mapping with a PROT_NONE guard
/// page at its low end, unmapped on drop.
struct ChildStack {
    base: *mut c_void,
    len: usize,
}

impl ChildStack {
    fn new() -> Result<ChildStack, Errno> {
        // SAFETY: sysconf takes and returns plain integers.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let len = STACK_SIZE + page;
        // SAFETY: a new anonymous mapping at an address of the kernel's
        // choosing; it overlaps nothing of ours.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        let stack = ChildStack { base, len };
        // SAFETY: the first page of the mapping just made, ours alone.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } == -1 {
            return Err(Errno::last());
        }
        Ok(stack)
    }

    /// The initial stack pointer: the mapping's end (stacks grow down),
    /// 16-byte aligned as every Linux ABI wants.
    fn top(&self) -> *mut c_void {
        let end = self.base as usize + self.len;
        (end & !15) as *mut c_void
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer used: the child that
        // ran on it has exec'd (a new address space) or exited.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// Block every signal in the calling thread until dropped, then restore
/// the mask it had.
struct AllBlocked(libc::sigset_t);

impl AllBlocked {
    fn new() -> Result<AllBlocked, Errno> {
        // SAFETY: both sets are local and initialised by sigfillset /
        // pthread_sigmask before being read.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            match libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old) {
                0 => Ok(AllBlocked(old)),
                e => Err(Errno::from_raw(e)),
            }
        }
    }
}

impl Drop for AllBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `new`, a valid sigset_t.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}

/// Start the program: clone(`CLONE_VM | CLONE_VFORK`) onto a fresh stack;
/// the child prepares itself (see [`child`]) and execs. Returns the child's
/// pid once the child has exec'd or exited ([`ExecPlan::report`] tells
/// which). If the child cannot exec, it writes `[stage, errno]` into the
/// plan and ends with `_exit(127)`.
///
/// Sound from any thread: the child touches only the plan and its own
/// stack, and calls only async-signal-safe functions. (It runs with the
/// calling thread's thread-local storage, there being no CLONE_SETTLS, so
/// a failed call in the child writes that thread's `errno`; the parent
/// reads `errno` after clone only when clone itself failed, and the child
/// reports its own errors through the plan.)
pub fn spawn(plan: &mut ExecPlan) -> Result<Pid, Errno> {
    STACK.with(|cached| {
        // A spawn from inside a spawn on this thread (a signal handler)
        // finds the stack taken, and maps one of its own.
        match cached.try_borrow_mut() {
            Ok(mut slot) => {
                if slot.is_none() {
                    *slot = Some(ChildStack::new()?);
                }
                let stack = slot.as_ref().map_or(std::ptr::null_mut(), ChildStack::top);
                clone_onto(stack, plan)
            }
            Err(_) => {
                let own = ChildStack::new()?;
                clone_onto(own.top(), plan)
            }
        }
    })
}

thread_local! {
    /// This thread's child stack, mapped at its first spawn and reused: the
    /// child that ran on it has exec'd or exited by the time clone returns.
    static STACK: std::cell::RefCell<Option<ChildStack>> = const { std::cell::RefCell::new(None) };
}

fn clone_onto(stack_top: *mut c_void, plan: &mut ExecPlan) -> Result<Pid, Errno> {
    let blocked = AllBlocked::new()?;
    let mut flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
    if plan.share_sysv_undo {
        flags |= libc::CLONE_SYSVSEM;
    }
    // SAFETY: `child_entry` gets `plan`, which outlives the call: with
    // CLONE_VFORK this thread stays inside clone until the child has exec'd
    // or exited, so nothing of ours reads or moves the plan meanwhile. The
    // child runs on `stack_top`'s stack, which no one else uses until clone
    // returns; all signals are blocked for it until it has reset their
    // dispositions. It never returns (child_entry execs or _exits), so
    // glibc's clone never runs the parent's code on the child's stack.
    let pid = unsafe {
        libc::clone(
            child_entry,
            stack_top,
            flags,
            (plan as *mut ExecPlan).cast::<c_void>(),
        )
    };
    let err = Errno::last();
    drop(blocked);
    if pid == -1 {
        Err(err)
    } else {
        Ok(Pid::from_raw(pid))
    }
}

/// The child's entry point on its own stack.
extern "C" fn child_entry(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `&mut ExecPlan` that `spawn` passed, alive and
    // untouched by the suspended parent thread until this child has exec'd
    // or exited.
    let plan = unsafe { &mut *arg.cast::<ExecPlan>() };
    child(plan)
}

/// What the child does, in this order: signal dispositions to default, the
/// death signal, a process group, the directory, dup2 onto 0/1/2, an
/// empty signal mask, then execve of each candidate. Never returns; never
/// panics (no indexing, no allocation, no formatting).
fn child(plan: &mut ExecPlan) -> ! {
    // 1. Every caught signal (and SIGPIPE, and each of `default_signals`)
    //    back to its default action, while all signals are still blocked.
    //    Other ignored signals stay ignored, as across any exec (nohup
    //    relies on it). glibc refuses its own two internal signals with
    //    EINVAL: they stay as they are, and no one sends them to this new
    //    thread id.
    for sig in 1..=plan.max_signal {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: `old` is a local sigaction (all-zero is a valid value)
        // that sigaction fills in; a null new-action pointer only reads.
        let got = unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            (libc::sigaction(sig, std::ptr::null(), &mut old) == 0).then_some(old)
        };
        let Some(old) = got else { continue };
        let caught = old.sa_sigaction != libc::SIG_IGN && old.sa_sigaction != libc::SIG_DFL;
        let asked = (1..=64).contains(&sig) && plan.default_signals & (1u64 << (sig - 1)) != 0;
        if caught || asked || sig == libc::SIGPIPE {
            // SAFETY: `dfl` is a zeroed sigaction with SIG_DFL and an empty
            // mask; installing SIG_DFL runs no code of ours in signal context.
            let r = unsafe {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigemptyset(&mut dfl.sa_mask);
                libc::sigaction(sig, &dfl, std::ptr::null_mut())
            };
            if r != 0 {
                report(plan, STAGE_SIGNALS, Errno::last());
            }
        }
    }
    // 2. The death signal, armed while the parent is certainly alive.
    if let Some((sig, parent)) = plan.death_signal {
        if !super::proc::arm_death_signal(sig, parent) {
            // The parent is gone already (or prctl refused the signal).
            report(plan, STAGE_DEATH_SIGNAL, Errno::ESRCH);
        }
    }
    // 3. A process group of its own, so the parent can signal the command
    //    and everything it starts at once.
    //    With a session of its own, the group comes with it, and no
    //    controlling terminal: the child cannot be stopped by SIGTTIN or
    //    SIGTTOU for using the caller's terminal from a background group.
    if plan.new_session {
        // SAFETY: setsid takes no arguments; the fresh child is no group
        // leader, so it can start a session.
        if unsafe { libc::setsid() } < 0 {
            report(plan, STAGE_SETSID, Errno::last());
        }
    } else if plan.new_group {
        // SAFETY: setpgid on plain integers.
        if unsafe { libc::setpgid(0, 0) } != 0 {
            report(plan, STAGE_SETPGID, Errno::last());
        }
    }
    if let Some(fd) = plan.announce {
        announce(fd, own_pid());
    }
    // 4. The working directory (relative candidates are then relative to it,
    //    as with `env -C DIR CMD`).
    if let Some(dir) = &plan.cwd {
        // SAFETY: `dir` is a NUL-terminated string the plan owns.
        if unsafe { libc::chdir(dir.as_ptr()) } != 0 {
            report(plan, STAGE_CHDIR, Errno::last());
        }
    }
    // 5. The redirections.
    for (target, src) in (0..).zip(plan.redirect) {
        let Some(src) = src else { continue };
        loop {
            // SAFETY: dup2 on plain integers; a bad descriptor is an error
            // return, not undefined behaviour.
            if unsafe { libc::dup2(src, target) } != -1 {
                break;
            }
            let e = Errno::last();
            if e != Errno::EINTR {
                report(plan, STAGE_DUP2, e);
            }
        }
    }
    for (close, fd) in [
        (plan.close_stdin, libc::STDIN_FILENO),
        (plan.close_stdout, libc::STDOUT_FILENO),
        (plan.close_stderr, libc::STDERR_FILENO),
    ] {
        if close {
            // SAFETY: close on a plain integer; async-signal-safe. EBADF
            // (not open) is as good as closed.
            unsafe { libc::close(fd) };
        }
    }
    // 6. Only now, with no handler of ours left, unblock every signal.
    // SAFETY: `set` is a local sigset_t initialised by sigemptyset before
    // sigprocmask reads it; a null old-set pointer is allowed.
    let r = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut())
    };
    if r != 0 {
        report(plan, STAGE_SIGNALS, Errno::last());
    }
    // 7. execve each candidate, as execvp's PATH search does.
    let mut eacces = false;
    let mut last = Errno::ENOENT;
    for &path in &plan.candidates {
        // SAFETY: `path` and `argv` are a NUL-terminated string and a
        // NULL-terminated array the plan owns, as is `envp`; execve only
        // reads them.
        unsafe { libc::execve(path, plan.argv.as_ptr(), plan.envp.as_ptr()) };
        let mut e = Errno::last();
        if e == Errno::ENOEXEC {
            // Not a binary the kernel knows and no `#!`: run it with
            // /bin/sh, as execvp does. Writing slot 1 writes the parent's
            // memory (CLONE_VM), which nothing reads until we are gone.
            if let Some(slot) = plan.sh_argv.get_mut(1) {
                *slot = path;
            }
            // SAFETY: as above; sh_argv is NULL-terminated and slot 1 now
            // points at the candidate path, which lives as long as the plan.
            unsafe { libc::execve(SH.as_ptr(), plan.sh_argv.as_ptr(), plan.envp.as_ptr()) };
            e = Errno::last();
            report(plan, STAGE_EXEC, e);
        }
        match e {
            Errno::EACCES => eacces = true,
            // The next candidate; the last one's error stands if none is
            // left (a path with a slash is the only candidate: its
            // ENOTDIR is the answer, as execvp gives it).
            Errno::ENOENT | Errno::ENOTDIR | Errno::ESTALE | Errno::ENODEV | Errno::ETIMEDOUT => {
                last = e;
            }
            other => {
                report(plan, STAGE_EXEC, other);
            }
        }
    }
    report(plan, STAGE_EXEC, if eacces { Errno::EACCES } else { last })
}

/// Tell the parent why the child could not exec, then `_exit(127)`. The
/// store is a plain atomic store into memory the parent reads only after
/// this child has exited (it is suspended until then): no lock, no call.
fn report(plan: &ExecPlan, stage: i32, errno: Errno) -> ! {
    let r = (u64::from(stage as u32) << 32) | u64::from(errno as i32 as u32);
    // A stage is never 0, so neither is the report.
    plan.report.store(r, Ordering::Release);
    if let Some(fd) = plan.announce {
        // Its group ends here: take back what was announced (a pid that
        // was not announced yet is simply not there to take back).
        announce(fd, -own_pid());
    }
    crate::sys::proc::_exit(127)
}

/// The child's own pid, from the kernel (there is no cache to trust in a
/// child that shares its parent's memory).
fn own_pid() -> i32 {
    // SAFETY: getpid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_getpid) as i32 }
}

/// Write `pid` to `fd` as 4 little-endian bytes, all or nothing (below
/// PIPE_BUF), again on EINTR; a reader that has gone is no error.
fn announce(fd: RawFd, pid: i32) {
    let b = pid.to_le_bytes();
    loop {
        // SAFETY: `b` is a valid 4-byte buffer for the whole call.
        let r = unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
        if r != -1 {
            return;
        }
        match Errno::last() {
            Errno::EINTR => continue,
            Errno::EPIPE => {
                // No one reads any more (the guard has gone): not our
                // business. But the write raised SIGPIPE, at its default
                // action by now and held pending by the blocked mask: it
                // would kill the program the moment the mask empties.
                // Setting SIG_IGN discards a pending signal; then back to
                // SIG_DFL, as step 1 left it.
                discard_pending_sigpipe();
                return;
            }
            _ => return,
        }
    }
}

/// Drop a pending SIGPIPE (sigaction to SIG_IGN discards it), then put the
/// default action back.
fn discard_pending_sigpipe() {
    for action in [libc::SIG_IGN, libc::SIG_DFL] {
        // SAFETY: a zeroed sigaction with an empty mask and SIG_IGN or
        // SIG_DFL as its action runs no code of ours in signal context.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = action;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGPIPE, &sa, std::ptr::null_mut());
        }
    }
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

/// Whether `sig` is ignored (SIG_IGN) in this process right now.
pub fn is_ignored(sig: c_int) -> bool {
    // SAFETY: `old` is a local sigaction (all-zero is a valid value) that
    // sigaction fills in; a null new-action pointer only reads.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}
