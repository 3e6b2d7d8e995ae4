//! The `i*i` lesson on the hub: tasks 1..=N, and results checked as they
//! settle their tasks.

use std::collections::BTreeMap;
use std::sync::mpsc::Sender;
use std::time::Duration;

use super::{ConnId, Entry, Event, Hub, Lesson, Outcome, Peer, Put, QueueSpec, Refusal, State};
use crate::manager::python::pickle::Value;

impl Hub {
    /// The lesson: queue `tasks` holds 1..=`tasks` (task `i` is the int
    /// `i`, and its id is `i`) and is closed; results put on `results`
    /// must each settle a task and read `n * n = n²`.
    pub fn lesson(tasks: u32, lease: Duration, min_workers: usize, events: Sender<Event>) -> Hub {
        let n = tasks as usize;
        let hub = Hub::new(
            &[
                QueueSpec {
                    name: "tasks".into(),
                    capacity: n,
                },
                QueueSpec {
                    name: "results".into(),
                    capacity: n,
                },
            ],
            lease,
            min_workers,
            events,
        );
        {
            let mut st = hub.lock();
            for i in 1..=u64::from(tasks) {
                st.items.insert(
                    i,
                    Entry {
                        queue: 0,
                        value: Value::Int(i.into()),
                        holder: None,
                        lost: 0,
                    },
                );
                st.queues[0].pending.push_back(i);
            }
            st.next_id = u64::from(tasks) + 1;
            st.queues[0].closed = true;
            st.lesson = Some(Lesson {
                total: n,
                results: BTreeMap::new(),
            });
        }
        hub
    }

    pub(super) fn lesson_result(
        &self,
        st: &mut State,
        conn: ConnId,
        target: Option<u64>,
        value: &Value,
    ) -> Result<Put, Refusal> {
        let peer = st
            .conns
            .get(&conn)
            .map(|c| c.peer.clone())
            .unwrap_or_else(|| Peer::at("?", false));
        let Some(id) = target else {
            return Err(Refusal("a result that settles no task".into()));
        };
        // A refused result leaves the task leased to this connection, which
        // hands it back when it closes or falls silent.
        let n = match st.items.get(&id) {
            Some(Entry {
                queue: 0,
                value: Value::Int(n),
                ..
            }) => *n,
            Some(_) => return Err(Refusal(format!("item {id} is not a task"))),
            None => {
                Self::forget(st, conn, id);
                self.emit(Event::Late(peer, id));
                return Ok(Put::Stale);
            }
        };
        let text = value.to_text();
        let want = n.wrapping_mul(n);
        if text != format!("{n} * {n} = {want}") {
            return Err(Refusal(format!(
                "a wrong result for task {id} (n={n}): {text:?}"
            )));
        }
        Self::forget(st, conn, id);
        Self::settle(st, id);
        let outcome = Outcome {
            id,
            n,
            value: want,
            by: peer,
        };
        let lesson = st.lesson.as_mut().expect("lesson mode");
        lesson.results.insert(id, outcome.clone());
        self.emit(Event::Result(outcome));
        if Self::done(st) {
            self.emit(Event::Finished);
        }
        self.changed.notify_all();
        Ok(Put::Ok)
    }
}
