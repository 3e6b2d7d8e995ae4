//! Which process a handle belongs to, told without a system call.
//!
//! A handle (a pool, a `Process`) made in one process reaches a forked
//! child as a copy of its memory, where using it would act on the
//! parent's children and pipes. Comparing pids tells the two apart only
//! while no pid is recycled: once the maker is gone, a descendant may get
//! its pid. And getpid(2) is a system call on every use.
//!
//! So each process takes a *generation*: a random number kept in a page
//! that every fork hands to the child zeroed (MADV_WIPEONFORK), however it
//! forks (`fork`, `_Fork`, a raw clone). A process that finds the page
//! zero draws its own and keeps it there (the queue lock's identities
//! use the same number). A handle records its maker's generation; a copy of it in any
//! descendant finds another one. Where the kernel lacks the advice
//! (before Linux 4.14), the pid is compared instead.

use nix::unistd::Pid;

/// This process's generation, `None` where the kernel has no fork-wiped
/// page. The same in every thread, and never one an ancestor had.
pub(crate) fn generation() -> Option<u64> {
    crate::sys::proc::fork_generation()
}

/// The process a handle was made in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner {
    pid: Pid,
    generation: Option<u64>,
}

impl Owner {
    /// The calling process.
    pub(crate) fn me() -> Owner {
        Owner {
            pid: nix::unistd::getpid(),
            generation: generation(),
        }
    }

    /// Whether the calling process is this one: by generation (no system
    /// call), or by pid where there is none.
    pub(crate) fn is_me(&self) -> bool {
        match self.generation {
            Some(g) => generation() == Some(g),
            None => nix::unistd::getpid() == self.pid,
        }
    }

    /// Its pid (for messages, and keys that live as long as it does).
    pub(crate) fn pid(&self) -> Pid {
        self.pid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_maker_is_its_owner_in_every_thread() {
        // (A forked child's copy is refused: tests/fork_check.rs, which
        // may fork, checks that through the pool and Process.)
        let me = Owner::me();
        assert!(me.is_me());
        let seen: Vec<(bool, Option<u64>)> = (0..4)
            .map(|_| std::thread::spawn(move || (me.is_me(), generation())))
            .map(|t| t.join().unwrap())
            .collect();
        assert!(seen.iter().all(|&(mine, g)| mine && g == generation()));
    }
}
