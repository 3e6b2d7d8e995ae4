//! The workers as forked processes: the [`Backend`] a [`super::Pool`]
//! runs on. Each worker gets its own task pipe and result pipe; the parent
//! waits on every result pipe at once with poll(2) (or, with one worker
//! busy and no deadline, in the read itself), after a short look that
//! does not sleep ([`crate::spin`]), and reaps exactly the pid of
//! a worker that is gone (never `waitpid(-1)`).

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::signal::Signal;

use super::arena::{self, Arenas, Side};
use super::inbox::Inbox;
use super::registry::Registry;
use super::scheduler::{Backend, Slot, Started};
use super::worker::worker_main;
use crate::error::{Error, Result};
use crate::pipe::{self, Piece, Reader, Writer};
use crate::process::{self, Fork, Pid};
use crate::spin;
use crate::status::Status;

/// Workers forked from this process.
#[derive(Debug)]
pub(crate) struct Forked {
    /// The tasks; every worker inherits them.
    pub(crate) registry: Arc<Registry>,
    /// How a worker is forked: [`process::fork_named`] (checked), or the
    /// unchecked fork [`super::Pool::new_unchecked`]'s caller vouched for.
    pub(crate) fork: fn(&str) -> Result<Fork>,
    /// Readable when waiting should stop (see [`super::Pool::interrupt_on`]).
    pub(crate) interrupt: Option<OwnedFd>,
    /// The workers' arenas ([`arena`]), mapped before the first fork.
    pub(crate) arenas: Option<Arenas>,
}

/// A worker's pipe ends, as the parent holds them.
#[derive(Debug)]
pub(crate) struct Ends {
    tasks: Writer,
    /// Read once each time poll(2) says it has bytes, so a worker that
    /// stops in the middle of a frame cannot hold up a wait with a
    /// deadline; read until a frame is whole only by a wait with none
    /// ([`Backend::recv_blocking`]).
    results: Reader,
    inbox: Inbox,
    /// The arena that carries the bytes of its large frames ([`arena`]);
    /// `None`: every frame goes through the pipes.
    arena: Option<usize>,
    /// The arena slot of each batch sent and not yet answered, oldest
    /// first (`None`: it went through the pipe whole).
    flight: VecDeque<Option<usize>>,
}

/// At most this many workers are polled from an array on the stack.
const STACK_POLL: usize = 16;

impl Backend for Forked {
    type Ends = Ends;

    fn start(&mut self, others: &mut Vec<Slot<Ends>>) -> Result<Started<Ends>> {
        let (task_r, task_w) = pipe::pipe()?;
        let (result_r, result_w) = pipe::pipe()?;
        let arena = self.arenas.as_mut().and_then(Arenas::claim);
        let forked = (self.fork)("pool worker");
        if let (Err(_), Some(a), Some(arenas)) = (&forked, arena, self.arenas.as_mut()) {
            arenas.unclaim(a);
        }
        // The child never returns: worker_main ends in _exit.
        match forked? {
            Fork::Child => {
                drop(task_w);
                drop(result_r);
                // Close every other worker's pipe ends, so that a worker's
                // end of file really means its parent closed the task pipe.
                others.clear();
                self.interrupt = None;
                // A worker ends by the signals that end a process, whatever
                // handlers the parent program installed (they would write
                // to the parent's self-pipe, not stop the worker).
                for sig in [
                    Signal::SIGINT,
                    Signal::SIGTERM,
                    Signal::SIGHUP,
                    Signal::SIGQUIT,
                ] {
                    let _ = process::restore_default(sig);
                }
                worker_main(&self.registry, task_r, result_w, self.arena(arena))
            }
            Fork::Parent(pid) => {
                if let (Some(a), Some(arenas)) = (arena, self.arenas.as_mut()) {
                    arenas.hold(pid, a);
                }
                // Linux shrinks new pipes to one page when a user holds too
                // many pipe pages, so ask instead of assuming 64 KiB.
                let capacity =
                    nix::fcntl::fcntl(task_w.as_fd(), nix::fcntl::FcntlArg::F_GETPIPE_SZ)
                        .map_or(pipe::PIPE_BUF, |n| {
                            usize::try_from(n).unwrap_or(pipe::PIPE_BUF)
                        });
                Ok(Started {
                    pid,
                    ends: Ends {
                        tasks: task_w,
                        results: result_r,
                        inbox: Inbox::new(),
                        arena,
                        flight: VecDeque::with_capacity(arena::SLOTS),
                    },
                    capacity,
                })
            }
        }
    }

    fn send(&mut self, ends: &mut Ends, frame: &[u8]) -> Result<()> {
        // A large frame goes through a slot that no unanswered batch uses.
        let slot = (frame.len() >= arena::MIN && ends.arena.is_some())
            .then(|| (0..arena::SLOTS).find(|k| !ends.flight.contains(&Some(*k))))
            .flatten();
        let note = slot
            .zip(self.arena(ends.arena))
            .and_then(|(k, arena)| arena.put(k, Side::Task, &[frame]));
        match note {
            Some(note) => ends.tasks.send(&note)?,
            None => ends.tasks.send(frame)?,
        }
        ends.flight.push_back(note.and(slot));
        Ok(())
    }

    fn pipe_bytes(&self, ends: &Ends, len: usize) -> usize {
        // With fewer than DEPTH batches out, a slot is free: a frame the
        // arena carries puts only its note in the pipe.
        if ends.arena.is_some() && (arena::MIN..=arena::AREA).contains(&len) {
            arena::NOTE + pipe::HEADER
        } else {
            len + pipe::HEADER
        }
    }

    fn wait(
        &mut self,
        slots: &[Slot<Ends>],
        deadline: Option<Instant>,
        ready: &mut Vec<usize>,
    ) -> Result<bool> {
        // Bytes read earlier wait in an inbox: take them before any wait.
        ready.extend(
            slots
                .iter()
                .enumerate()
                .filter(|(_, w)| w.ends.inbox.has_buffered())
                .map(|(i, _)| i),
        );
        if !ready.is_empty() {
            return Ok(true);
        }
        let n = slots.len() + usize::from(self.interrupt.is_some());
        let fd_of = |i: usize| match slots.get(i) {
            Some(w) => w.ends.results.as_fd(),
            None => self
                .interrupt
                .as_ref()
                .map_or(slots[0].ends.results.as_fd(), |fd| fd.as_fd()),
        };
        // A pool of a few workers polls from the stack: no allocation
        // per wait.
        let mut stack: [PollFd<'_>; STACK_POLL];
        let mut heap: Vec<PollFd<'_>>;
        let fds: &mut [PollFd<'_>] = if n <= STACK_POLL {
            stack = std::array::from_fn(|i| PollFd::new(fd_of(i.min(n - 1)), PollFlags::POLLIN));
            &mut stack[..n]
        } else {
            heap = (0..n)
                .map(|i| PollFd::new(fd_of(i), PollFlags::POLLIN))
                .collect();
            &mut heap
        };
        let polled = match spin::ready(fds, deadline, spin::POOL) {
            Ok(true) => Ok(1),
            Ok(false) => poll(fds, process::poll_timeout(deadline)),
            Err(e) => Err(e),
        };
        match polled {
            Ok(0) if process::deadline_passed(deadline) => return Ok(false),
            // A wait past what one poll takes (24.8 days), cut short: the
            // caller waits again for the rest, as after a signal.
            Ok(0) | Err(Errno::EINTR) => return Ok(true),
            Ok(_) => {}
            Err(e) => return Err(Error::sys("poll", "pool workers", e)),
        }
        let woke = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
        if fds.get(slots.len()).is_some_and(woke) {
            return Err(Error::sys("poll", "pool interrupt", Errno::EINTR));
        }
        ready.extend(
            fds.iter()
                .enumerate()
                .filter(|(_, f)| woke(f))
                .map(|(i, _)| i),
        );
        Ok(true)
    }

    fn recv(&mut self, ends: &mut Ends, frame: &mut Vec<u8>, expect: usize) -> Result<Piece> {
        let expect = ends.expect(expect);
        let piece = ends
            .inbox
            .read(ends.results.as_fd(), frame, expect)
            .map_err(|e| pipe::recv_error("pool worker's result pipe", e))?;
        self.arrived(ends, piece, frame)
    }

    fn can_block(&self) -> bool {
        // A wait that an interrupt descriptor may end is a poll(2).
        self.interrupt.is_none()
    }

    fn recv_blocking(
        &mut self,
        ends: &mut Ends,
        frame: &mut Vec<u8>,
        expect: usize,
    ) -> Result<Piece> {
        let expect = ends.expect(expect);
        if !ends.inbox.has_buffered() {
            spin::readable(ends.results.as_fd(), None, spin::POOL);
        }
        let piece = ends
            .inbox
            .read_blocking(ends.results.as_fd(), frame, expect)
            .map_err(|e| pipe::recv_error("pool worker's result pipe", e))?;
        self.arrived(ends, piece, frame)
    }

    fn prepare(&mut self, workers: usize) -> Result<()> {
        // No arenas (an address-space limit, no memfd): the pipes alone,
        // as a pool worked before it had them.
        self.arenas = Arenas::new(workers).ok();
        Ok(())
    }

    fn stop(&mut self, ends: &mut Ends) {
        // An empty frame: no task frame is shorter than its header.
        let _ = ends.tasks.send(&[]);
    }

    fn reap(&mut self, pid: Pid) -> Result<Status> {
        let status = process::waitpid(pid)?;
        // Gone for good: its arena may go to a new worker.
        if let Some(arenas) = self.arenas.as_mut() {
            arenas.release(pid);
        }
        Ok(status)
    }

    fn kill(&mut self, pid: Pid) {
        let _ = process::kill(pid, Signal::SIGKILL);
    }
}

impl Ends {
    /// The payload to ask for in the read of the next result: a note's,
    /// when its batch went through the arena and a result of the size the
    /// parent expects would come back the same way.
    fn expect(&self, expect: usize) -> usize {
        match self.flight.front() {
            Some(Some(_)) if expect <= arena::AREA => arena::NOTE,
            _ => expect,
        }
    }
}

impl Forked {
    /// Arena `index` of this pool, when a worker has one.
    fn arena(&self, index: Option<usize>) -> Option<arena::Arena<'_>> {
        Some(self.arenas.as_ref()?.arena(index?))
    }

    /// A piece read from the result pipe: a whole frame answers the oldest
    /// batch sent, and a note is replaced by the frame it names, copied
    /// out of that batch's slot.
    fn arrived(&self, ends: &mut Ends, piece: Piece, frame: &mut Vec<u8>) -> Result<Piece> {
        if piece != Piece::Frame {
            return Ok(piece);
        }
        let slot = ends.flight.pop_front().flatten();
        match arena::note(frame) {
            None => {}
            Some(Err(why)) => return Err(arena::bad_note(why)),
            Some(Ok(note)) => match self.arena(ends.arena) {
                Some(arena) if slot == Some(note.slot) => {
                    arena.take(note, Side::Result, frame);
                }
                _ => {
                    return Err(arena::bad_note(
                        "an arena note names a slot its batch did not use",
                    ));
                }
            },
        }
        Ok(piece)
    }
}
