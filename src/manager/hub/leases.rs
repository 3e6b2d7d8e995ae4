//! Connections and their leases: who holds what, and what goes back when
//! a connection closes or falls silent.

use std::collections::VecDeque;
use std::time::Instant;

use super::{ConnId, ConnRec, Event, Hub, Peer, State};

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
        for id in leases.iter().rev() {
            if Self::release(&mut st, *id, conn) {
                self.emit(Event::Requeued(peer.clone(), *id));
            }
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

    /// Put item `id` back at the front of its queue if `conn` holds it.
    pub(super) fn release(st: &mut State, id: u64, conn: ConnId) -> bool {
        let Some(e) = st.items.get_mut(&id) else {
            return false;
        };
        if e.holder != Some(conn) {
            return false;
        }
        e.holder = None;
        let q = &mut st.queues[e.queue];
        q.leased -= 1;
        q.pending.push_front(id);
        true
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
            for id in leases.iter().rev() {
                if Self::release(&mut st, *id, conn) {
                    any = true;
                    self.emit(Event::Expired(peer.clone(), *id));
                }
            }
        }
        drop(st);
        if any {
            self.changed.notify_all();
        }
    }
}
