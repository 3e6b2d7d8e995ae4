//! The client side of CPython's manager protocol: what a `BaseManager`
//! subclass's `connect()`, its registered `get_..._queue()` methods and
//! their proxies send, so `pk-manager work --python` can serve an
//! unmodified Python master (`manager.start()` or
//! `get_server().serve_forever()`).

use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::conn::{answer_challenge, deliver_challenge, recv, send};
use super::pickle::{Value, dumps, loads};
use crate::error::{Error, ErrorKind, Result};
use crate::manager::auth::Key;
use crate::manager::client::dial;
use crate::manager::wire::MAX_BODY;

/// What a method call came back with.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `#RETURN`: the value.
    Return(Value),
    /// `#ERROR`: the exception the method raised (`queue.Empty` …).
    Raised(Value),
    /// An answer read whole (the connection is still in step) whose
    /// pickle this subset does not take (a set, an int past 128 bits ...):
    /// why.
    Undecodable(Error),
}

/// A connection to a CPython manager server, with one long-lived
/// connection for method calls, as a proxy keeps per thread.
#[derive(Debug)]
pub struct PyClient {
    addr: String,
    key: Key,
    timeout: Duration,
    calls: TcpStream,
    created: Vec<String>,
}

impl PyClient {
    /// Connect and authenticate as `BaseManager.connect()` does, then open
    /// the connection method calls travel on. Each connection's handshake
    /// gives up after `timeout`.
    pub fn connect(addr: &str, key: &Key, timeout: Duration) -> Result<PyClient> {
        let mut c = open(addr, key, timeout)?;
        dispatch(&mut c, addr, None, "dummy", vec![])?;
        let mut calls = open(addr, key, timeout)?;
        dispatch(
            &mut calls,
            addr,
            None,
            "accept_connection",
            vec![Value::str("pk-manager")],
        )?;
        Ok(PyClient {
            addr: addr.to_string(),
            key: key.clone(),
            timeout,
            calls,
            created: Vec::new(),
        })
    }

    /// `manager.<typeid>()`: create the shared object; its ident.
    pub fn create(&mut self, typeid: &str) -> Result<String> {
        let mut c = open(&self.addr, &self.key, self.timeout)?;
        let v = dispatch(&mut c, &self.addr, None, "create", vec![Value::str(typeid)])?;
        match v {
            Value::Tuple(t) if matches!(t.first(), Some(Value::Str(_))) => {
                let Some(Value::Str(id)) = t.into_iter().next() else {
                    unreachable!("checked")
                };
                self.created.push(id.clone());
                Ok(id)
            }
            other => Err(Error::data(
                "create",
                &self.addr,
                format!("an answer that is no (id, exposed): {other}"),
            )),
        }
    }

    /// Call `method` on the object `ident` with these arguments; `wait` is
    /// how long the call itself may block on the server (the answer is
    /// awaited that long plus the handshake timeout).
    pub fn call(
        &mut self,
        ident: &str,
        method: &str,
        args: Vec<Value>,
        kwds: Vec<(Value, Value)>,
        wait: Option<Duration>,
    ) -> Result<Answer> {
        let limit = wait.map(|w| w.saturating_add(self.timeout));
        self.calls
            .set_read_timeout(limit)
            .map_err(|e| Error::io("setsockopt", &self.addr, &e))?;
        let req = Value::Tuple(vec![
            Value::str(ident),
            Value::str(method),
            Value::Tuple(args),
            Value::Dict(kwds),
        ]);
        send(&mut self.calls, &self.addr, &dumps(&req))?;
        answer(&mut self.calls, &self.addr, None)
    }
}

impl Drop for PyClient {
    /// Give back the references `create` took, as a proxy's finalizer does.
    fn drop(&mut self) {
        for id in std::mem::take(&mut self.created) {
            if let Ok(mut c) = open(&self.addr, &self.key, self.timeout) {
                let _ = dispatch(&mut c, &self.addr, None, "decref", vec![Value::Str(id)]);
            }
        }
    }
}

/// A new authenticated connection, as `multiprocessing.connection.Client`
/// makes one: answer the server's challenge, then challenge it.
fn open(addr: &str, key: &Key, timeout: Duration) -> Result<TcpStream> {
    let mut s = dial(addr, timeout)?;
    let deadline = crate::process::later(Instant::now(), timeout);
    answer_challenge(&mut s, addr, key, Some(deadline))?;
    if !deliver_challenge(&mut s, addr, key, Some(deadline))? {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            "auth",
            addr,
            "the python server did not prove it knows the authkey",
        ));
    }
    s.set_read_timeout(Some(timeout))
        .map_err(|e| Error::io("setsockopt", addr, &e))?;
    Ok(s)
}

/// `dispatch(c, id, method, args)`: one request on `c`, its `#RETURN`.
fn dispatch(
    c: &mut TcpStream,
    addr: &str,
    id: Option<&str>,
    method: &str,
    args: Vec<Value>,
) -> Result<Value> {
    let id = id.map_or(Value::None, Value::str);
    let req = Value::Tuple(vec![
        id,
        Value::str(method),
        Value::Tuple(args),
        Value::Dict(vec![]),
    ]);
    send(c, addr, &dumps(&req))?;
    match answer(c, addr, None)? {
        Answer::Return(v) => Ok(v),
        Answer::Raised(e) => Err(Error::new(
            ErrorKind::Other,
            method.to_string(),
            addr,
            format!("the server raised {e}"),
        )),
        Answer::Undecodable(e) => Err(e),
    }
}

fn answer(c: &mut TcpStream, addr: &str, deadline: Option<Instant>) -> Result<Answer> {
    let v = match loads(&recv(c, addr, MAX_BODY, deadline)?) {
        Ok(v) => v,
        Err(e) => return Ok(Answer::Undecodable(e)),
    };
    let Value::Tuple(t) = v else {
        return Err(Error::data(
            "read",
            addr,
            "an answer that is not (kind, result)",
        ));
    };
    match <[Value; 2]>::try_from(t) {
        Ok([Value::Str(kind), result]) => match kind.as_str() {
            "#RETURN" => Ok(Answer::Return(result)),
            "#ERROR" => Ok(Answer::Raised(result)),
            "#TRACEBACK" | "#UNSERIALIZABLE" => {
                let text = result.to_text();
                let last = text
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .trim()
                    .to_string();
                Err(Error::new(
                    ErrorKind::Other,
                    "python",
                    addr,
                    format!("the server failed: {last}"),
                ))
            }
            other => Err(Error::data(
                "read",
                addr,
                format!("an answer of kind {other:?}"),
            )),
        },
        _ => Err(Error::data(
            "read",
            addr,
            "an answer that is not (kind, result)",
        )),
    }
}
