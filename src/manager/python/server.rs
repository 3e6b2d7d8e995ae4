//! The server side of CPython's manager protocol, over the hub's queues.
//!
//! A CPython client opens a new connection for each of `connect()`
//! (`dummy`), `create`, `incref` and `decref`, and one long-lived
//! connection per thread (`accept_connection`) on which its proxies call
//! methods: `(ident, method, args, kwds)` answered by `('#RETURN', value)`,
//! `('#ERROR', exception)` or `('#TRACEBACK', text)`. A registered type id
//! `get_NAME_queue` reaches the queue `NAME` (or `NAMEs`): the lesson's
//! `get_task_queue` and `get_result_queue` reach `tasks` and `results`.
//! The queue answers `put`, `put_nowait`, `get`, `get_nowait`, `qsize`,
//! `empty`, `full`, `task_done` and `join`.
//!
//! Every request is decoded with the whitelisted pickle subset
//! ([`super::pickle`]); a request outside it, or not shaped like a request,
//! closes the connection — nothing a peer sends is ever run.
//!
//! Leases: an item a Python client gets from the first queue (the task
//! queue) is leased to its connection until that connection's next `put`
//! (its result, which settles it) or its next `get` (it consumed the item);
//! if the connection closes or stays silent for the lease first, the item
//! goes back to the queue. Gets from the other queues are final.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::conn::{answer_challenge, deliver_challenge, recv, send};
use super::pickle::{Value, dumps, loads};
use crate::error::{Error, Result};
use crate::manager::auth::Key;
use crate::manager::hub::{ConnId, Got, Hold, Hub, Peer, Put, Settle};
use crate::manager::wire::MAX_BODY;

/// The methods a queue exposes, as CPython's `public_methods(queue.Queue())`.
const EXPOSED: [&str; 9] = [
    "empty",
    "full",
    "get",
    "get_nowait",
    "join",
    "put",
    "put_nowait",
    "qsize",
    "task_done",
];

/// How a Python connection ended.
#[derive(Debug)]
pub enum End {
    /// Its one request was answered (connect, create, incref, decref …).
    Answered,
    /// Its key was wrong.
    Refused,
    /// A long-lived client hung up.
    Gone,
    /// A long-lived connection was closed for an error, reported already.
    Closed,
}

fn exposed() -> Value {
    Value::Tuple(EXPOSED.iter().map(|m| Value::str(*m)).collect())
}

fn reply(kind: &str, v: Value) -> Vec<u8> {
    dumps(&Value::Tuple(vec![Value::str(kind), v]))
}

fn traceback(text: String) -> Vec<u8> {
    reply("#TRACEBACK", Value::Str(text))
}

/// The builtin exception `name(text)` that a queue method raised: CPython
/// answers `('#ERROR', exception)`, and the client raises that very
/// class (a `#TRACEBACK` would reach it as a RemoteError).
fn raised(name: &str, text: String) -> Value {
    Value::exception("builtins", name, vec![Value::Str(text)])
}

/// A request: (ident, method, args, kwds).
/// A request's parts: (ident, method, args, kwds).
type Request = (Value, String, Vec<Value>, Vec<(Value, Value)>);

fn request(v: Value, peer: &str) -> Result<Request> {
    if let Value::Tuple(t) = v {
        if let Ok(
            [
                ident,
                Value::Str(method),
                Value::Tuple(args),
                Value::Dict(kwds),
            ],
        ) = <[Value; 4]>::try_from(t)
        {
            return Ok((ident, method, args, kwds));
        }
    }
    Err(Error::data(
        "unpickle",
        peer,
        "a message that is not a manager request",
    ))
}

/// The queue a type id reaches: `get_NAME_queue` → `NAME` or `NAMEs`.
fn queue_of(hub: &Hub, typeid: &str) -> Option<String> {
    let name = typeid.strip_prefix("get_")?.strip_suffix("_queue")?;
    let names = hub.queue_names();
    [name.to_string(), format!("{name}s")]
        .into_iter()
        .find(|n| names.contains(n))
}

/// The two challenges of a connection from a CPython client, by
/// `deadline`: true when both sides proved the key, false when the peer
/// answered wrong (it heard `#FAILURE#`).
pub fn challenge(key: &Key, stream: &mut TcpStream, peer: &str, deadline: Instant) -> Result<bool> {
    if !deliver_challenge(stream, peer, key, Some(deadline))? {
        return Ok(false);
    }
    answer_challenge(stream, peer, key, Some(deadline))?;
    Ok(true)
}

/// Serve one connection from a CPython client past its [`challenge`]:
/// the first request by `deadline`, then `authed()`, then the requests.
/// The end of a long-lived connection is reported by the hub (an error
/// included, as [`End::Closed`]). A connection asked to become long-lived
/// (`accept_connection`) first takes its place with `stay()`; its error
/// closes the connection instead.
pub fn serve(
    hub: &Hub,
    stream: &mut TcpStream,
    peer: &str,
    deadline: Instant,
    authed: &mut dyn FnMut(),
    stay: &mut dyn FnMut() -> Result<()>,
) -> Result<End> {
    let first = loads(&recv(stream, peer, MAX_BODY, Some(deadline))?)?;
    authed();
    let _ = stream.set_read_timeout(None);
    let (_, func, args, _) = request(first, peer)?;
    let answer = match (func.as_str(), args.as_slice()) {
        ("dummy", []) => reply("#RETURN", Value::None),
        ("create", [Value::Str(typeid), ..]) => match queue_of(hub, typeid) {
            Some(q) => reply("#RETURN", Value::Tuple(vec![Value::Str(q), exposed()])),
            None => traceback(format!(
                "KeyError: {typeid:?}: this server has no such type id"
            )),
        },
        ("incref" | "decref", [_]) => reply("#RETURN", Value::None),
        ("get_methods", [_]) => reply("#RETURN", exposed()),
        ("number_of_objects", []) => reply("#RETURN", Value::Int(hub.queue_names().len() as i128)),
        ("accept_connection", [_]) => {
            stay()?;
            send(stream, peer, &reply("#RETURN", Value::None))?;
            return Ok(serve_client(hub, stream, peer));
        }
        (f, _) => traceback(format!("AssertionError: {f:?} is not served by pk-manager")),
    };
    send(stream, peer, &answer)?;
    Ok(End::Answered)
}

/// The long-lived connection of one client thread; its end, an error
/// included, is reported as the hub hands back what it held.
fn serve_client(hub: &Hub, stream: &mut TcpStream, addr: &str) -> End {
    let conn = hub.register(Peer::at(addr, true));
    let result = client_loop(hub, conn, stream, addr);
    hub.unregister(conn, |p| match &result {
        Ok(_) => None,
        Err(e) => Some(crate::manager::hub::Event::Closed(p.clone(), e.to_string())),
    });
    match result {
        Ok(end) => end,
        Err(_) => End::Closed,
    }
}

fn client_loop(hub: &Hub, conn: ConnId, stream: &mut TcpStream, peer: &str) -> Result<End> {
    loop {
        let payload = match recv(stream, peer, MAX_BODY, None) {
            Ok(p) => p,
            Err(e) if e.kind() == crate::ErrorKind::PeerClosed => return Ok(End::Gone),
            Err(e) => return Err(e),
        };
        let (ident, method, args, kwds) = request(loads(&payload)?, peer)?;
        hub.heard(conn);
        let q = match &ident {
            Value::Str(name) => hub.queue(name).ok(),
            _ => None,
        };
        let Some(q) = q else {
            send(stream, peer, &traceback(format!("KeyError: {ident}")))?;
            continue;
        };
        let answer = call(hub, conn, stream, peer, q, &method, args, kwds)?;
        send(stream, peer, &answer)?;
    }
}

/// An argument by position or by keyword.
fn arg(args: &[Value], kwds: &[(Value, Value)], pos: usize, name: &str) -> Option<Value> {
    args.get(pos).cloned().or_else(|| {
        kwds.iter()
            .find(|(k, _)| matches!(k, Value::Str(s) if s == name))
            .map(|(_, v)| v.clone())
    })
}

/// `block` and `timeout` as a wait: `Some(ZERO)` for a non-blocking call,
/// `None` for no limit.
fn wait_of(
    block: Option<Value>,
    timeout: Option<Value>,
) -> std::result::Result<Option<Duration>, Value> {
    if matches!(block, Some(Value::Bool(false)) | Some(Value::Int(0))) {
        return Ok(Some(Duration::ZERO));
    }
    let secs = match timeout {
        None | Some(Value::None) => return Ok(None),
        Some(Value::Int(i)) => i as f64,
        Some(Value::Float(f)) => f,
        Some(other) => {
            return Err(raised(
                "TypeError",
                format!("timeout {other} is not a number"),
            ));
        }
    };
    if secs.is_nan() || secs < 0.0 {
        return Err(raised(
            "ValueError",
            "'timeout' must be a non-negative number".into(),
        ));
    }
    Ok(Some(
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX),
    ))
}

#[allow(clippy::too_many_arguments)]
fn call(
    hub: &Hub,
    conn: ConnId,
    stream: &TcpStream,
    peer: &str,
    q: usize,
    method: &str,
    args: Vec<Value>,
    kwds: Vec<(Value, Value)>,
) -> Result<Vec<u8>> {
    let mut tick = || peer_alive(stream, peer);
    Ok(match method {
        "get" | "get_nowait" => {
            let wait = if method == "get_nowait" {
                Ok(Some(Duration::ZERO))
            } else {
                wait_of(
                    arg(&args, &kwds, 0, "block"),
                    arg(&args, &kwds, 1, "timeout"),
                )
            };
            let wait = match wait {
                Ok(w) => w,
                Err(e) => return Ok(reply("#ERROR", e)),
            };
            let hold = if q == 0 {
                Hold::LeaseAfterSettling
            } else {
                Hold::Final
            };
            match hub.get(conn, q, wait, hold, &mut tick)? {
                Got::Item(_, v) => reply("#RETURN", v),
                Got::Empty | Got::Done => reply("#ERROR", Value::empty()),
            }
        }
        "put" | "put_nowait" => {
            let Some(item) = arg(&args, &kwds, 0, "item") else {
                return Ok(reply(
                    "#ERROR",
                    raised(
                        "TypeError",
                        "put() missing 1 required positional argument: 'item'".into(),
                    ),
                ));
            };
            let wait = if method == "put_nowait" {
                Ok(Some(Duration::ZERO))
            } else {
                wait_of(
                    arg(&args, &kwds, 1, "block"),
                    arg(&args, &kwds, 2, "timeout"),
                )
            };
            let wait = match wait {
                Ok(w) => w,
                Err(e) => return Ok(reply("#ERROR", e)),
            };
            match hub.put(conn, q, item, Settle::Oldest, wait, &mut tick)? {
                Ok(Put::Ok | Put::Stale) => reply("#RETURN", Value::None),
                Ok(Put::Full) => reply("#ERROR", Value::full()),
                Err(refusal) => return Err(Error::data("put", peer, refusal.0)),
            }
        }
        "qsize" => reply("#RETURN", Value::Int(hub.sizes(q).0 as i128)),
        "empty" => reply("#RETURN", Value::Bool(hub.sizes(q).0 == 0)),
        "full" => {
            let (p, l, c) = hub.sizes(q);
            reply("#RETURN", Value::Bool(p + l >= c))
        }
        "task_done" => reply("#RETURN", Value::None),
        "join" => {
            hub.wait_while(Duration::MAX, |h| {
                let (p, l, _) = h.sizes(q);
                p + l > 0 && peer_alive(stream, peer).is_ok()
            });
            reply("#RETURN", Value::None)
        }
        other => traceback(format!(
            "AttributeError: method {other:?} of a pk-manager queue is not in exposed={:?}",
            EXPOSED
        )),
    })
}

/// An error once the peer has hung up: its socket polls as hung up, or
/// reads as end of file (peeked, so nothing is consumed).
pub fn peer_alive(stream: &TcpStream, peer: &str) -> Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::socket::{MsgFlags, recv};
    use std::os::fd::{AsFd, AsRawFd};
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLIN)];
    let gone = match poll(&mut fds, PollTimeout::ZERO) {
        Ok(n) if n > 0 => {
            let r = fds[0].revents().unwrap_or(PollFlags::empty());
            let mut b = [0u8; 1];
            r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)
                || matches!(
                    recv(
                        stream.as_raw_fd(),
                        &mut b,
                        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT
                    ),
                    Ok(0) | Err(nix::errno::Errno::ECONNRESET)
                )
        }
        _ => false,
    };
    if gone {
        return Err(Error::new(
            crate::ErrorKind::PeerClosed,
            "read",
            peer,
            "connection closed by the peer",
        ));
    }
    Ok(())
}
