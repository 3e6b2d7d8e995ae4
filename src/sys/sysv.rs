//! System V semaphore sets (semget(2), semctl(2), semtimedop(2)): the
//! kernel keeps, per process, the adjustments of every operation made
//! with SEM_UNDO and applies them when the process exits, however it
//! exits. That is what makes [`crate::sem::RobustSemaphore`] heal.

use nix::errno::Errno;

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
