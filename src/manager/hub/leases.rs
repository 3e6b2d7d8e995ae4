//! Connections and their leases: who holds what, and what goes back when
//! a connection closes or falls silent.

use std::collections::VecDeque;
use std::time::Instant;

use super::{ConnId, ConnRec, DeliveryLimit, Event, Hub, Peer, State};
use crate::manager::python::pickle::Value;

/// What became of an item a connection lost.
pub(super) enum Released {
    /// It was not that connection's (settled, or held by another).
    NotHeld,
    /// Back in its queue.
    Requeued,
    /// Lost too often: failed, its failure result on the dead-letter queue
    /// (named here).
    Failed(String),
}

impl Hub {
    /// Register an authenticated connection.
    pub fn register(&self, peer: Peer) -> ConnId {
        let mut st = self.lock();
        let id = st.next_conn;
        st.next_conn += 1;
        st.conns.insert(
            id,
            ConnRec {
                peer,
                last_heard: Instant::now(),
                leases: VecDeque::new(),
                asked: false,
            },
        );
        id
    }

    /// The connection said something: its leases are fresh again.
    pub fn heard(&self, conn: ConnId) {
        if let Some(c) = self.lock().conns.get_mut(&conn) {
            c.last_heard = Instant::now();
        }
    }

    /// The connection is gone: what it held goes back to its queues, then
    /// `last` is reported, then the connection stops counting (so a caller
    /// waiting for the count to drop finds every event already queued).
    pub fn unregister(&self, conn: ConnId, last: impl FnOnce(&Peer) -> Option<Event>) {
        let mut st = self.lock();
        let Some(rec) = st.conns.get(&conn) else {
            return;
        };
        let (peer, leases, asked) = (rec.peer.clone(), rec.leases.clone(), rec.asked);
        for id in &leases {
            self.released(&mut st, *id, conn, &peer, Event::Requeued);
        }
        if let Some(ev) = last(&peer) {
            self.emit(ev);
        }
        st.conns.remove(&conn);
        if asked {
            st.askers -= 1;
        }
        drop(st);
        self.changed.notify_all();
    }

    /// `conn` lost item `id`: release it and report what became of it
    /// (`requeued`: the event for an item back in its queue). True when
    /// anything changed.
    fn released(
        &self,
        st: &mut State,
        id: u64,
        conn: ConnId,
        peer: &Peer,
        requeued: fn(Peer, u64) -> Event,
    ) -> bool {
        match Self::release(st, id, conn, self.limit) {
            Released::NotHeld => false,
            Released::Requeued => {
                self.emit(requeued(peer.clone(), id));
                true
            }
            Released::Failed(queue) => {
                let lost = self.limit.map_or(0, |l| l.max);
                self.emit(Event::Failed(peer.clone(), id, lost, queue));
                true
            }
        }
    }

    /// Put item `id` back at the end of its queue if `conn` holds it, or,
    /// once its lease has been lost `limit` times, settle it and put its
    /// failure result on the dead-letter queue.
    pub(super) fn release(
        st: &mut State,
        id: u64,
        conn: ConnId,
        limit: Option<DeliveryLimit>,
    ) -> Released {
        let Some(e) = st.items.get_mut(&id) else {
            return Released::NotHeld;
        };
        if e.holder != Some(conn) {
            return Released::NotHeld;
        }
        e.holder = None;
        e.lost = e.lost.saturating_add(1);
        let (lost, from) = (e.lost, e.queue);
        st.queues[from].leased -= 1;
        match limit {
            Some(l) if lost >= l.max => {
                let e = st.items.remove(&id).expect("held above");
                let failed = failure(e.value, l.python);
                Self::push(st, l.dead_letters, failed);
                Released::Failed(st.queues[l.dead_letters].name.clone())
            }
            _ => {
                st.queues[from].pending.push_back(id);
                Released::Requeued
            }
        }
    }

    /// Settle item `id` for good, wherever it is; false if it was already.
    pub(super) fn settle(st: &mut State, id: u64) -> bool {
        let Some(e) = st.items.remove(&id) else {
            return false;
        };
        let q = &mut st.queues[e.queue];
        match e.holder {
            Some(_) => q.leased -= 1,
            None => q.pending.retain(|&p| p != id),
        }
        true
    }

    /// Hand every lease of a connection silent for longer than the lease
    /// back to its queue. The server calls this a few times per lease.
    pub fn expire(&self) {
        let now = Instant::now();
        let mut st = self.lock();
        let silent: Vec<ConnId> = st
            .conns
            .iter()
            .filter(|(_, c)| !c.leases.is_empty() && now.duration_since(c.last_heard) > self.lease)
            .map(|(id, _)| *id)
            .collect();
        let mut any = false;
        for conn in silent {
            let (peer, leases) = {
                let c = &st.conns[&conn];
                (c.peer.clone(), c.leases.clone())
            };
            for id in &leases {
                any |= self.released(&mut st, *id, conn, &peer, Event::Expired);
            }
        }
        drop(st);
        if any {
            self.changed.notify_all();
        }
    }
}

/// The failure result for an item that lost its lease too often, in the
/// form a worker gives a task it cannot run: `65 <item>` and a newline
/// (pk-manager), or `(item, 65, '')` (CPython's managers).
fn failure(item: Value, python: bool) -> Value {
    if python {
        return Value::Tuple(vec![item, Value::Int(65), Value::Str(String::new())]);
    }
    let shown = match &item {
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        other => other.to_text(),
    };
    let shown = shown.replace('\n', "\\n").replace('\0', "\\0");
    Value::Bytes(format!("65 {shown}\n").into_bytes())
}
