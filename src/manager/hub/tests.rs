//! The hub without a network: connections are ids, a peer that hangs up
//! is a `tick` that fails.

use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use super::*;
use crate::error::{Error, ErrorKind};

fn queues(specs: &[(&str, usize)]) -> (Hub, Receiver<Event>) {
    let (tx, rx) = channel();
    let specs: Vec<QueueSpec> = specs
        .iter()
        .map(|&(name, capacity)| QueueSpec {
            name: name.into(),
            capacity,
        })
        .collect();
    (Hub::new(&specs, Duration::from_secs(30), 1, tx), rx)
}

fn ok() -> Result<()> {
    Ok(())
}

fn hung_up() -> Result<()> {
    Err(Error::new(ErrorKind::PeerClosed, "read", "peer", "closed"))
}

fn bytes(s: &str) -> Value {
    Value::Bytes(s.as_bytes().to_vec())
}

/// Take the next item of queue `q` for `conn`, leased.
fn take(hub: &Hub, conn: ConnId, q: usize) -> (u64, Value) {
    match hub
        .get(conn, q, Some(Duration::ZERO), Hold::Lease, &mut ok)
        .unwrap()
    {
        Got::Item(id, v) => (id, v),
        other => panic!("no item: {other:?}"),
    }
}

/// Take the next item of queue `q` for good, as a consumer does.
fn consume(hub: &Hub, conn: ConnId, q: usize) -> Value {
    match hub
        .get(conn, q, Some(Duration::ZERO), Hold::Final, &mut ok)
        .unwrap()
    {
        Got::Item(_, v) => v,
        other => panic!("no item: {other:?}"),
    }
}

#[test]
fn a_worker_that_dies_waiting_for_room_keeps_its_task_for_another() {
    let (hub, events) = queues(&[("tasks", 10), ("results", 1)]);
    let shell = hub.register(Peer::at("shell", false));
    for m in [("tasks", "t1"), ("results", "r0")] {
        let q = hub.queue(m.0).unwrap();
        let put = hub.put(shell, q, bytes(m.1), Settle::Nothing, None, &mut ok);
        assert_eq!(put.unwrap(), Ok(Put::Ok));
    }
    let a = hub.register(Peer::at("a", false));
    let (id, _) = take(&hub, a, 0);
    // The results queue is full: the put waits, and the worker dies.
    let mut ticks = 0;
    let mut tick = || {
        ticks += 1;
        hung_up()
    };
    let put = hub.put(a, 1, bytes("r1"), Settle::Item(id), None, &mut tick);
    assert_eq!(put.unwrap_err().kind(), ErrorKind::PeerClosed);
    assert_eq!(ticks, 1);
    assert_eq!(hub.sizes(0), (0, 1, 10), "still leased to the dead worker");
    hub.unregister(a, |_| None);
    assert_eq!(hub.sizes(0), (1, 0, 10), "back on the queue");
    assert!(
        events
            .try_iter()
            .any(|e| e == Event::Requeued(Peer::at("a", false), id))
    );
    // Another worker does it; once there is room its result goes in.
    let b = hub.register(Peer::at("b", false));
    let (again, v) = take(&hub, b, 0);
    assert_eq!((again, v), (id, bytes("t1")));
    assert_eq!(consume(&hub, shell, 1), bytes("r0"));
    let put = hub.put(b, 1, bytes("r1"), Settle::Item(id), None, &mut ok);
    assert_eq!(put.unwrap(), Ok(Put::Ok));
    assert_eq!(hub.sizes(0), (0, 0, 10));
    assert_eq!(consume(&hub, shell, 1), bytes("r1"));
}

#[test]
fn a_put_that_finds_no_room_in_time_leaves_its_task_held() {
    let (hub, _events) = queues(&[("tasks", 10), ("results", 1)]);
    let shell = hub.register(Peer::at("shell", false));
    for (q, m) in [(0, "t1"), (1, "r0")] {
        let put = hub.put(shell, q, bytes(m), Settle::Nothing, None, &mut ok);
        assert_eq!(put.unwrap(), Ok(Put::Ok));
    }
    let a = hub.register(Peer::at("a", false));
    let (id, _) = take(&hub, a, 0);
    let wait = Some(Duration::from_millis(20));
    let put = hub.put(a, 1, bytes("r1"), Settle::Item(id), wait, &mut ok);
    assert_eq!(put.unwrap(), Ok(Put::Full));
    assert_eq!(hub.sizes(0), (0, 1, 10), "neither settled nor lost");
    assert_eq!(consume(&hub, shell, 1), bytes("r0"));
    let put = hub.put(a, 1, bytes("r1"), Settle::Item(id), wait, &mut ok);
    assert_eq!(put.unwrap(), Ok(Put::Ok));
    assert_eq!(hub.sizes(0), (0, 0, 10));
    // Settled once: the same result again is stale.
    let put = hub.put(a, 1, bytes("r1"), Settle::Item(id), wait, &mut ok);
    assert_eq!(put.unwrap(), Ok(Put::Stale));
}

#[test]
fn settling_an_item_of_the_same_full_queue_makes_its_room() {
    let (hub, _events) = queues(&[("work", 1)]);
    let a = hub.register(Peer::at("a", false));
    let put = hub.put(a, 0, bytes("step 1"), Settle::Nothing, None, &mut ok);
    assert_eq!(put.unwrap(), Ok(Put::Ok));
    let (id, _) = take(&hub, a, 0);
    let put = hub.put(
        a,
        0,
        bytes("step 2"),
        Settle::Item(id),
        Some(Duration::ZERO),
        &mut ok,
    );
    assert_eq!(put.unwrap(), Ok(Put::Ok));
    assert_eq!(take(&hub, a, 0).1, bytes("step 2"));
}

#[test]
fn a_refused_lesson_result_leaves_the_task_to_be_handed_back() {
    let (tx, events) = channel();
    let hub = Hub::lesson(2, Duration::from_secs(30), 1, tx);
    let bad = hub.register(Peer::at("bad", true));
    let (id, n) = take(&hub, bad, 0);
    assert_eq!(n, Value::Int(1));
    let wrong = hub.put(
        bad,
        1,
        Value::str("1 * 1 = 2"),
        Settle::Oldest,
        None,
        &mut ok,
    );
    assert!(wrong.unwrap().is_err(), "a wrong result is refused");
    hub.unregister(bad, |_| None);
    assert!(
        events
            .try_iter()
            .any(|e| e == Event::Requeued(Peer::at("bad", true), id))
    );
    let good = hub.register(Peer::at("good", true));
    for _ in 0..2 {
        let (_, v) = take(&hub, good, 0);
        let Value::Int(n) = v else { panic!("{v}") };
        let r = Value::Str(format!("{n} * {n} = {}", n * n));
        let put = hub.put(good, 1, r, Settle::Oldest, None, &mut ok);
        assert_eq!(put.unwrap(), Ok(Put::Ok));
    }
    assert!(hub.finished());
}

/// A task whose holders keep dying goes behind the waiting tasks each
/// time, and after the limit fails onto the dead-letter queue with the
/// result a worker gives a task it cannot run; a full queue takes it too.
#[test]
fn a_task_that_kills_its_workers_fails_after_the_limit() {
    let (hub, events) = queues(&[("tasks", 10), ("results", 1)]);
    let hub = hub.with_delivery_limit(2, 1, false);
    let shell = hub.register(Peer::at("shell", false));
    for (q, m) in [(0, "bad\nline"), (0, "good"), (1, "r0")] {
        let put = hub.put(shell, q, bytes(m), Settle::Nothing, None, &mut ok);
        assert_eq!(put.unwrap(), Ok(Put::Ok));
    }
    let a = hub.register(Peer::at("a", false));
    let (bad, v) = take(&hub, a, 0);
    assert_eq!(v, bytes("bad\nline"));
    hub.unregister(a, |_| None);
    // Back behind "good", not in front of it.
    let b = hub.register(Peer::at("b", false));
    let (good, v) = take(&hub, b, 0);
    assert_eq!(v, bytes("good"));
    assert_eq!(hub.ack(b, good), Put::Ok);
    let (again, _) = take(&hub, b, 0);
    assert_eq!(again, bad);
    hub.unregister(b, |_| None);
    // Lost twice: settled, not queued again; its failure is on results.
    assert_eq!(hub.sizes(0), (0, 0, 10));
    assert_eq!(hub.sizes(1), (2, 0, 1), "added to a full queue");
    assert_eq!(consume(&hub, shell, 1), bytes("r0"));
    assert_eq!(consume(&hub, shell, 1), bytes("65 bad\\nline\n"));
    let ev: Vec<Event> = events.try_iter().collect();
    assert!(ev.contains(&Event::Requeued(Peer::at("a", false), bad)));
    assert!(ev.contains(&Event::Failed(
        Peer::at("b", false),
        bad,
        2,
        "results".into()
    )));
    assert!(!ev.contains(&Event::Requeued(Peer::at("b", false), bad)));
    // CPython's form: the tuple (task, 65, '').
    let (hub, _events) = queues(&[("tasks", 10), ("results", 10)]);
    let hub = hub.with_delivery_limit(1, 1, true);
    let shell = hub.register(Peer::at("shell", true));
    let put = hub.put(shell, 0, Value::Int(7), Settle::Nothing, None, &mut ok);
    assert_eq!(put.unwrap(), Ok(Put::Ok));
    let c = hub.register(Peer::at("c", true));
    take(&hub, c, 0);
    hub.unregister(c, |_| None);
    assert_eq!(
        consume(&hub, shell, 1),
        Value::Tuple(vec![
            Value::Int(7),
            Value::Int(65),
            Value::Str(String::new())
        ])
    );
}
