//! The scheduler on mock workers: no fork, no pipe, no sleep. A mock
//! worker runs the batches it is sent with the real worker code
//! ([`run_batch`]) when the scheduler reads its result, and has a fate: it
//! works, dies while running its n-th batch, is gone before it reads its
//! first one, or never answers. Every start, send, read, kill and reap is
//! counted.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::signal::Signal;

use super::*;
use crate::pool::frame::{Values, encode_task};
use crate::pool::registry::Registry;
use crate::pool::results::Batch;
use crate::pool::results::TaskError;
use crate::pool::worker::run_batch;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fate {
    Works,
    /// Answers this many batches, then dies running the next one.
    DiesAfter(usize),
    /// Gone before it reads anything: sending to it fails with EPIPE.
    DeadOnArrival,
    /// Takes batches and never answers.
    Hangs,
    /// Answers with a frame whose length does not match its header.
    Garbles,
    /// Sends a length over the frame limit.
    Oversized,
    /// Sends the first bytes of a frame, then nothing more.
    Stalls,
}

#[derive(Debug)]
struct MockEnds {
    pid: Pid,
    fate: Fate,
    inbox: VecDeque<Vec<u8>>,
    answered: usize,
    /// A `Stalls` worker sent its first bytes.
    stalled: bool,
}

#[derive(Debug, Default)]
struct Counts {
    started: usize,
    sent: usize,
    refused: usize,
    recvs: usize,
    killed: Vec<Pid>,
    reaped: Vec<Pid>,
    /// The most batches one worker held at once.
    peak: usize,
}

#[derive(Debug)]
struct Mock {
    registry: Registry,
    fates: VecDeque<Fate>,
    capacity: usize,
    next_pid: i32,
    ended: HashMap<Pid, Status>,
    counts: Counts,
    /// When not empty, the slots whose results come back, one per wait, in
    /// this order: tasks that finish out of order, certainly.
    order: VecDeque<usize>,
    /// When set, the bytes any frame puts in a task pipe: a backend that
    /// carries frames' bytes some other way (as the arenas do).
    note: Option<usize>,
}

const KILLED: Status = Status::Signaled {
    signal: Signal::SIGKILL as i32,
    core_dumped: false,
};

impl Backend for Mock {
    type Ends = MockEnds;

    fn start(&mut self, _others: &mut Vec<Slot<MockEnds>>) -> Result<Started<MockEnds>> {
        self.counts.started += 1;
        self.next_pid += 1;
        Ok(Started {
            pid: Pid::from_raw(self.next_pid),
            ends: MockEnds {
                pid: Pid::from_raw(self.next_pid),
                fate: self.fates.pop_front().unwrap_or(Fate::Works),
                inbox: VecDeque::new(),
                answered: 0,
                stalled: false,
            },
            capacity: self.capacity,
        })
    }

    fn pipe_bytes(&self, _ends: &MockEnds, len: usize) -> usize {
        self.note.unwrap_or(len + crate::pipe::HEADER)
    }

    fn send(&mut self, ends: &mut MockEnds, frame: &[u8]) -> Result<()> {
        if ends.fate == Fate::DeadOnArrival {
            self.counts.refused += 1;
            self.ended.insert(ends.pid, KILLED);
            return Err(Error::sys("write", "pipe", Errno::EPIPE));
        }
        self.counts.sent += 1;
        ends.inbox.push_back(frame.to_vec());
        self.counts.peak = self.counts.peak.max(ends.inbox.len());
        Ok(())
    }

    fn wait(
        &mut self,
        slots: &[Slot<MockEnds>],
        deadline: Option<Instant>,
        ready: &mut Vec<usize>,
    ) -> Result<bool> {
        if let Some(slot) = self.order.pop_front() {
            assert!(
                !slots[slot].ends.inbox.is_empty(),
                "slot {slot} is scripted to answer but holds nothing"
            );
            ready.push(slot);
            return Ok(true);
        }
        ready.extend(
            slots
                .iter()
                .enumerate()
                .filter(|(_, s)| {
                    !s.ends.inbox.is_empty() && s.ends.fate != Fate::Hangs && !s.ends.stalled
                })
                .map(|(i, _)| i),
        );
        if ready.is_empty() {
            assert!(deadline.is_some(), "the scheduler would wait for ever");
            return Ok(false);
        }
        Ok(true)
    }

    fn recv(&mut self, ends: &mut MockEnds, frame: &mut Vec<u8>, _expect: usize) -> Result<Piece> {
        self.counts.recvs += 1;
        match ends.fate {
            Fate::DiesAfter(n) if n == ends.answered => {
                self.ended.insert(ends.pid, KILLED);
                return Ok(Piece::Eof);
            }
            Fate::Oversized => {
                return Err(Error::data(
                    "recv",
                    "pipe",
                    "frame length 4294967295 is over the limit",
                ));
            }
            Fate::Stalls => {
                ends.stalled = true;
                frame.clear();
                frame.extend_from_slice(&[0; 5]);
                return Ok(Piece::Partial);
            }
            _ => {}
        }
        let task = ends.inbox.pop_front().expect("ready means a batch");
        let (mut out, mut table) = (Vec::new(), Vec::new());
        run_batch(&self.registry, &task, &mut out, &mut table).expect("a well-formed batch");
        frame.clear();
        frame.extend_from_slice(&out[..RESULT_HEAD]);
        frame.extend_from_slice(&table);
        frame.extend_from_slice(&out[RESULT_HEAD..]);
        if ends.fate == Fate::Garbles {
            frame.push(0);
        }
        ends.answered += 1;
        Ok(Piece::Frame)
    }

    fn reap(&mut self, pid: Pid) -> Result<Status> {
        self.counts.reaped.push(pid);
        Ok(self.ended.remove(&pid).unwrap_or(Status::Exited(0)))
    }

    fn kill(&mut self, pid: Pid) {
        self.counts.killed.push(pid);
        self.ended.insert(pid, KILLED);
    }
}

/// A scheduler of `workers` mock workers with these fates (then `Works`),
/// whose task 0 squares an i64.
fn pool(workers: usize, fates: &[Fate]) -> Scheduler<Mock> {
    pool_with(workers, fates, 64 * 1024).unwrap()
}

/// [`pool`] with task pipes of `capacity` bytes.
fn pool_with(workers: usize, fates: &[Fate], capacity: usize) -> Result<Scheduler<Mock>> {
    let mut registry = Registry::new();
    registry.task("square", |n: i64| n * n);
    let mock = Mock {
        registry,
        fates: fates.iter().copied().collect(),
        capacity,
        next_pid: 100,
        ended: HashMap::new(),
        counts: Counts::default(),
        order: VecDeque::new(),
        note: None,
    };
    Scheduler::new(mock, workers)
}

fn map(
    s: &mut Scheduler<Mock>,
    args: &[i64],
    chunk: usize,
) -> Vec<std::result::Result<i64, TaskError>> {
    let mut results = MapResults::default();
    s.map(
        "square",
        Some(8),
        args.len(),
        chunk,
        &mut results,
        |frame, id, items| encode_task::<Values<i64>>(frame, id, 0, &args[items]),
    )
    .unwrap();
    (0..args.len())
        .map(|i| {
            let b = results
                .batches
                .iter()
                .find(|b| (b.first..b.first + b.count).contains(&i))
                .unwrap();
            b.decode(i - b.first)
        })
        .collect()
}

fn submit(s: &mut Scheduler<Mock>, n: i64) -> u64 {
    let id = s
        .submit("square", 0, |frame, id| {
            encode_task::<Values<i64>>(frame, id, 0, &[n])
        })
        .unwrap();
    s.dispatch().unwrap();
    id
}

fn pid(n: i32) -> Pid {
    Pid::from_raw(n)
}

#[test]
fn a_map_sends_each_chunk_once_and_a_worker_holds_at_most_two() {
    let mut s = pool(2, &[]);
    let args: Vec<i64> = (0..10).collect();
    let got = map(&mut s, &args, 1);
    assert_eq!(got, (0..10).map(|i| Ok(i * i)).collect::<Vec<_>>());
    let c = &s.backend.counts;
    assert_eq!((c.started, c.sent, c.recvs, c.refused), (2, 10, 10, 0));
    assert_eq!(c.peak, 2);
    assert!(c.killed.is_empty() && c.reaped.is_empty());
    s.close();
    let statuses = s.join().unwrap();
    assert_eq!(
        statuses,
        [(pid(101), Status::Exited(0)), (pid(102), Status::Exited(0))]
    );
    assert_eq!(s.backend.counts.reaped, [pid(101), pid(102)]);
    assert!(s.backend.counts.killed.is_empty());
    assert!(s.take_events().is_empty());
}

#[test]
fn chunks_split_the_items_and_zero_means_four_per_worker() {
    let mut s = pool(2, &[]);
    let args: Vec<i64> = (0..100).collect();
    assert_eq!(map(&mut s, &args, 0).len(), 100);
    assert_eq!(s.backend.counts.sent, 8, "100 items, 2 workers: 8 chunks");
    assert_eq!(map(&mut s, &args, 30).len(), 100);
    assert_eq!(s.backend.counts.sent, 8 + 4, "chunks of 30: 4");
    assert!(map(&mut s, &[], 0).is_empty());
    assert_eq!(s.backend.counts.sent, 12, "nothing to send");
}

#[test]
fn a_worker_that_dies_mid_batch_loses_that_batch_alone_and_is_replaced() {
    // Worker 101 answers one batch and dies running its second; the
    // batch queued behind that one goes to the replacement.
    let mut s = pool(2, &[Fate::DiesAfter(1)]);
    let args: Vec<i64> = (0..6).collect();
    let got = map(&mut s, &args, 1);
    for (i, r) in got.iter().enumerate() {
        if i == 2 {
            assert_eq!(
                r,
                &Err(TaskError::WorkerDied {
                    task: "square".into(),
                    index: 2,
                    pid: pid(101),
                    status: KILLED,
                })
            );
        } else {
            assert_eq!(r, &Ok(i as i64 * i as i64), "item {i}");
        }
    }
    let c = &s.backend.counts;
    assert_eq!(c.started, 3, "two workers and one replacement");
    assert_eq!(c.reaped, [pid(101)], "exactly the dead worker, once");
    assert!(c.killed.is_empty());
    // Six batches, and item 4's sent again after 101 died holding it.
    assert_eq!(c.sent, 7);
    assert_eq!(
        s.take_events(),
        [Event::Replaced {
            old: pid(101),
            status: KILLED,
            new: pid(103),
        }]
    );
    assert_eq!(
        s.pids(),
        [pid(103), pid(102)],
        "the replacement takes the slot"
    );
}

#[test]
fn a_batch_sent_to_a_worker_already_gone_runs_on_its_replacement() {
    let mut s = pool(2, &[Fate::DeadOnArrival]);
    let args: Vec<i64> = (0..4).collect();
    let got = map(&mut s, &args, 1);
    assert_eq!(got, [Ok(0), Ok(1), Ok(4), Ok(9)], "nothing is lost");
    let c = &s.backend.counts;
    assert_eq!((c.started, c.refused, c.sent), (3, 1, 4));
    assert_eq!(c.reaped, [pid(101)]);
    assert_eq!(s.take_events().len(), 1);
}

#[test]
fn a_second_batch_goes_out_only_when_both_fit_in_the_pipe() {
    let args: Vec<i64> = (0..40).collect();
    // A 10-item frame is 18 + 80 bytes, 102 with its length: two need 204.
    for (capacity, peak) in [(203, 1), (204, 2)] {
        let mut s = pool_with(2, &[], capacity).unwrap();
        assert_eq!(map(&mut s, &args, 10).len(), 40);
        assert_eq!(s.backend.counts.peak, peak, "capacity {capacity}");
    }
    // A backend that puts only a 16-byte note in the pipe for each frame:
    // the same frames go out two at a time in a pipe of 32 bytes, not 31.
    for (capacity, peak) in [(31, 1), (32, 2)] {
        let mut s = pool_with(2, &[], capacity).unwrap();
        s.backend.note = Some(16);
        assert_eq!(map(&mut s, &args, 10).len(), 40);
        assert_eq!(s.backend.counts.peak, peak, "capacity {capacity}, notes");
    }
}

#[test]
fn get_with_a_deadline_returns_none_and_the_result_stays_pending() {
    let mut s = pool(1, &[Fate::Hangs]);
    let id = submit(&mut s, 3);
    let soon = Some(Instant::now());
    assert!(s.wait_for(id, soon).unwrap().is_none());
    assert!(s.wait_for(id, soon).unwrap().is_none(), "still pending");
    s.terminate().unwrap();
    let lost = s
        .wait_for(id, soon)
        .unwrap()
        .expect("cancelled is a result");
    assert_eq!(
        lost.decode::<i64>(0),
        Err(TaskError::Cancelled {
            task: "square".into(),
            index: 0
        })
    );
    let e = s.wait_for(id, soon).unwrap_err();
    assert!(e.to_string().contains("already taken"), "{e}");
}

#[test]
fn terminate_kills_and_reaps_every_worker_and_cancels_the_rest() {
    let mut s = pool(2, &[Fate::Hangs, Fate::Hangs]);
    let ids: Vec<u64> = (0..6).map(|n| submit(&mut s, n)).collect();
    assert_eq!(s.backend.counts.sent, 4, "two each; two still queued");
    s.terminate().unwrap();
    let c = &s.backend.counts;
    assert_eq!(c.killed, [pid(101), pid(102)]);
    assert_eq!(c.reaped, [pid(101), pid(102)]);
    for id in ids {
        let b = s.wait_for(id, None).unwrap().unwrap();
        assert!(matches!(
            b.decode::<i64>(0),
            Err(TaskError::Cancelled { .. })
        ));
    }
    assert!(!s.has_workers());
    let e = s.submit("square", 0, |_, _| Ok(0)).unwrap_err();
    assert_eq!(e.to_string(), "apply: the pool is closed");
}

#[test]
fn join_waits_for_queued_work_and_refuses_before_close() {
    let mut s = pool(2, &[]);
    let ids: Vec<u64> = (0..5).map(|n| submit(&mut s, n)).collect();
    let e = s.join().unwrap_err();
    assert!(e.to_string().contains("call close() before join()"), "{e}");
    s.close();
    s.join().unwrap();
    let c = &s.backend.counts;
    assert_eq!((c.sent, c.recvs), (5, 5));
    assert!(c.killed.is_empty());
    for (n, id) in ids.into_iter().enumerate() {
        let b = s.wait_for(id, None).unwrap().unwrap();
        assert_eq!(b.decode::<i64>(0), Ok((n * n) as i64));
    }
}

#[test]
fn a_pool_has_1_to_1024_workers() {
    for n in [0, 1025] {
        let e = pool_with(n, &[], 4096).unwrap_err();
        assert_eq!(e.to_string(), "workers: a pool has 1-1024 workers");
        let e = pool_with(n, &[], 4096).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
    }
}

/// A callback that records the square each task returned (or -1 for an
/// error) in `log`, in the order the callbacks run.
fn record(log: &std::rc::Rc<std::cell::RefCell<Vec<(usize, i64)>>>) -> Callback {
    let log = std::rc::Rc::clone(log);
    Callback::new(move |batch: Batch| {
        let v = batch.decode::<i64>(0).unwrap_or(-1);
        log.borrow_mut().push((batch.first, v));
    })
}

/// Submit `n` squared, as item `first` of a caller's arguments.
fn submit_at(s: &mut Scheduler<Mock>, first: usize, n: i64) -> u64 {
    let id = s
        .submit("square", first, |frame, id| {
            encode_task::<Values<i64>>(frame, id, 0, &[n])
        })
        .unwrap();
    s.dispatch().unwrap();
    id
}

#[test]
fn callbacks_run_in_the_order_results_come_back_not_of_submission() {
    let mut s = pool(3, &[]);
    let log = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    // One task per worker (slot i holds task i); they finish 2, 0, 1.
    let ids: Vec<u64> = (0..3).map(|i| submit_at(&mut s, i, i as i64 + 1)).collect();
    for &id in &ids {
        s.on_done(id, record(&log));
    }
    s.backend.order = [2, 0, 1].into();
    while log.borrow().len() < 3 {
        assert!(s.progress(None).unwrap());
    }
    assert_eq!(*log.borrow(), [(2, 9), (0, 1), (1, 4)]);
    // A batch given to a callback is not kept for wait_for.
    assert!(ids.iter().all(|&id| !s.is_done(id) && !s.is_pending(id)));
}

#[test]
fn a_callback_set_after_the_result_came_back_runs_at_once() {
    let mut s = pool(1, &[]);
    let id = submit_at(&mut s, 0, 5);
    s.progress(None).unwrap();
    assert!(s.is_done(id));
    let log = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    s.on_done(id, record(&log));
    assert_eq!(*log.borrow(), [(0, 25)]);
    assert!(!s.is_done(id));
}

#[test]
fn a_lost_or_cancelled_batch_reaches_its_callback_as_an_error() {
    let mut s = pool(2, &[Fate::DiesAfter(0), Fate::Hangs]);
    let got = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    for (first, n) in [(0, 3), (1, 4)] {
        let id = submit_at(&mut s, first, n);
        let got = std::rc::Rc::clone(&got);
        s.on_done(
            id,
            Callback::new(move |b: Batch| got.borrow_mut().push(b.decode::<i64>(0))),
        );
    }
    // Worker 101 dies running task 0; worker 102 hangs on task 1.
    s.backend.order = [0].into();
    s.progress(None).unwrap();
    assert_eq!(
        got.borrow()[0],
        Err(TaskError::WorkerDied {
            task: "square".into(),
            index: 0,
            pid: pid(101),
            status: KILLED,
        })
    );
    s.terminate().unwrap();
    assert_eq!(
        got.borrow()[1],
        Err(TaskError::Cancelled {
            task: "square".into(),
            index: 1
        })
    );
    assert_eq!(got.borrow().len(), 2, "each callback once");
}

#[test]
fn results_queued_for_imap_unordered_come_in_the_order_they_finish() {
    let mut s = pool(3, &[]);
    let arrived = std::rc::Rc::new(std::cell::RefCell::new(VecDeque::new()));
    let ids: Vec<u64> = (0..3)
        .map(|i| submit_at(&mut s, i, 10 + i as i64))
        .collect();
    for &id in &ids {
        s.on_done(id, crate::pool::pending::queue_into(&arrived));
    }
    s.backend.order = [1, 2, 0].into();
    for _ in 0..3 {
        s.progress(None).unwrap();
    }
    let order: Vec<(usize, i64)> = arrived
        .borrow()
        .iter()
        .map(|b: &Batch| (b.first, b.decode::<i64>(0).unwrap()))
        .collect();
    assert_eq!(order, [(1, 121), (2, 144), (0, 100)]);
}

#[test]
fn a_forgotten_batch_is_dropped_whether_it_is_back_or_not() {
    let mut s = pool(2, &[]);
    let back = submit_at(&mut s, 0, 2);
    let later = submit_at(&mut s, 1, 3);
    s.backend.order = [0].into();
    s.progress(None).unwrap();
    assert!(s.is_done(back) && s.is_pending(later));
    s.forget(back);
    s.forget(later);
    assert!(!s.is_done(back));
    s.backend.order = [1].into();
    s.progress(None).unwrap();
    assert!(
        !s.is_done(later) && !s.is_pending(later),
        "dropped on arrival"
    );
    s.close();
    s.join().unwrap();
}

#[test]
fn a_bad_result_frame_fails_its_batch_alone_and_its_worker_is_killed_and_replaced() {
    for (fate, why) in [
        (Fate::Garbles, "does not match its header"),
        (Fate::Oversized, "over the limit"),
    ] {
        // Worker 101 holds items 0 and 2 and answers item 0 with garbage.
        let mut s = pool(2, &[fate]);
        let args: Vec<i64> = (0..4).collect();
        let got = map(&mut s, &args, 1);
        match &got[0] {
            Err(
                e @ TaskError::BadResult {
                    index: 0,
                    pid: p,
                    status: KILLED,
                    error,
                    ..
                },
            ) if *p == pid(101) => {
                assert_eq!(e.kind(), crate::ErrorKind::BadData);
                assert!(error.to_string().contains(why), "{fate:?}: {error}");
            }
            other => panic!("{fate:?}: {other:?}"),
        }
        assert_eq!(&got[1..], [Ok(1), Ok(4), Ok(9)], "{fate:?}: the rest runs");
        let c = &s.backend.counts;
        assert_eq!(c.killed, [pid(101)], "{fate:?}");
        assert_eq!(c.reaped, [pid(101)], "{fate:?}");
        assert_eq!(c.started, 3, "{fate:?}: one replacement");
        assert_eq!(
            s.take_events(),
            [Event::Replaced {
                old: pid(101),
                status: KILLED,
                new: pid(103),
            }]
        );
        // The pool goes on.
        assert_eq!(map(&mut s, &[5, 6], 1), [Ok(25), Ok(36)], "{fate:?}");
        s.close();
        s.join().unwrap();
    }
}

#[test]
fn a_result_frame_left_partial_keeps_no_get_past_its_deadline() {
    let mut s = pool(1, &[Fate::Stalls]);
    let id = submit(&mut s, 3);
    let soon = Some(Instant::now());
    assert!(s.wait_for(id, soon).unwrap().is_none());
    assert!(s.wait_for(id, soon).unwrap().is_none(), "still pending");
    assert_eq!(s.backend.counts.recvs, 1, "read once, when its bytes came");
    assert!(
        s.backend.counts.killed.is_empty(),
        "a slow worker is not bad"
    );
    s.terminate().unwrap();
    let lost = s.wait_for(id, soon).unwrap().unwrap();
    assert!(matches!(
        lost.decode::<i64>(0),
        Err(TaskError::Cancelled { .. })
    ));
}
