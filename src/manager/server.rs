//! The server: accepting, the handshake under one deadline, a cap on
//! connections that have not authenticated, and one thread per connection.
//!
//! - **One deadline per handshake.** Every read of a handshake is bounded
//!   by what is left of [`Config::handshake`], so a peer that trickles a
//!   byte at a time gets no more time than one that sends nothing.
//! - **A cap on the unauthenticated.** At most
//!   [`Config::max_unauthenticated`] connections may be in their handshake
//!   at once; a new one beyond that pushes out the *oldest*, once that one
//!   has had [`EVICTION_GRACE`] (until then the new one waits in the
//!   listen backlog). A flood of slow connections therefore keeps cycling
//!   while a real worker, whose handshake takes a round trip or two, gets
//!   through; and a burst of real clients (80 CPython threads connecting
//!   at once, each with a connection of its own) is served, not pushed
//!   out. Authenticated connections are never pushed out, and count
//!   against their own cap.
//! - **No spinning on EMFILE.** When accept(2) fails for lack of
//!   descriptors the server drops its oldest unauthenticated connection
//!   (freeing one) and waits, 10 ms doubling to 1 s, before accepting
//!   again.
//! - **TCP keepalive** on every connection, so a peer whose host vanished
//!   without a FIN is noticed even when it holds nothing.
//! - **Leases.** A thread wakes a few times per lease and hands the items
//!   of connections silent for the whole lease back to their queues; an
//!   item that lost its lease [`Config::max_deliveries`] times fails onto
//!   the dead-letter queue instead.

use std::collections::VecDeque;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::auth::{Direction, Key, Seal, Side, nonce, proof, verify};
use super::hub::{ConnId, Event, Got, Hold, Hub, Outcome, Peer, Put, QueueSpec, Settle};
use super::python;
use super::python::pickle::Value;
use super::wire::{FOREVER, MAX_FRAME, Msg, read_hello, read_payload, unexpected, write_payload};
use crate::error::{Error, ErrorKind, Result};

/// How a server behaves towards its peers.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long a worker may stay silent (no result, no heartbeat) while it
    /// holds an item before the item goes to another worker.
    pub lease: Duration,
    /// The deadline for a whole handshake.
    pub handshake: Duration,
    /// How many connections may be in their handshake at once.
    pub max_unauthenticated: usize,
    /// How many authenticated connections may be open at once: workers,
    /// and (with `python`) CPython's long-lived connections.
    pub max_workers: usize,
    /// Hand out nothing from the first queue before this many live
    /// workers have asked for it.
    pub min_workers: usize,
    /// Speak CPython's manager protocol instead of pk-manager's own.
    pub python: bool,
    /// Named queues: an item whose lease has been lost this many times
    /// fails (see [`Hub::with_delivery_limit`]); 0: no limit. The lesson
    /// has none.
    pub max_deliveries: u32,
    /// The queue failed items' results go on; without such a queue there
    /// is no limit.
    pub dead_letters: String,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            lease: Duration::from_secs(30),
            handshake: Duration::from_secs(5),
            max_unauthenticated: 64,
            max_workers: 1024,
            min_workers: 1,
            python: false,
            max_deliveries: 3,
            dead_letters: "results".into(),
        }
    }
}

/// What the server serves.
#[derive(Debug, Clone)]
pub enum Mode {
    /// The `i*i` lesson: tasks 1..=N, results checked and collected.
    Lesson(u32),
    /// Named bounded queues.
    Queues(Vec<QueueSpec>),
}

#[derive(Debug)]
struct Pending {
    id: u64,
    stream: TcpStream,
    addr: String,
    since: Instant,
}

/// How long a connection in its handshake is safe from being pushed out
/// by a newer one: time for a real client's round trips (a CPython one
/// included) even on a loaded machine. A flood still cycles, at up to
/// `max_unauthenticated` connections per grace.
pub const EVICTION_GRACE: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct Shared {
    key: Key,
    cfg: Config,
    hub: Hub,
    pending: Mutex<VecDeque<Pending>>,
    next: AtomicU64,
    /// Long-lived connections in CPython's protocol.
    python_conns: AtomicUsize,
}

/// A listening pk-manager server.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    sh: Arc<Shared>,
}

/// Turn on TCP keepalive: first probe after `idle` (at least 1 s), then
/// every third of it, three probes.
pub fn keepalive(s: &TcpStream, idle: Duration) {
    use nix::sys::socket::{setsockopt, sockopt};
    let idle = idle.as_secs().clamp(1, 3600) as u32;
    let _ = setsockopt(s, sockopt::KeepAlive, &true);
    let _ = setsockopt(s, sockopt::TcpKeepIdle, &idle);
    let _ = setsockopt(s, sockopt::TcpKeepInterval, &(idle / 3).max(1));
    let _ = setsockopt(s, sockopt::TcpKeepCount, &3);
}

impl Server {
    /// Bind `addr` and set up `mode`'s queues.
    pub fn bind(
        addr: SocketAddr,
        key: Key,
        mode: Mode,
        cfg: Config,
    ) -> Result<(Server, Receiver<Event>)> {
        if cfg.lease.is_zero() || cfg.handshake.is_zero() || cfg.max_unauthenticated == 0 {
            return Err(Error::invalid(
                "config",
                "lease, handshake and max_unauthenticated must be above 0",
            ));
        }
        let listener = TcpListener::bind(addr).map_err(|e| Error::io("bind", addr, &e))?;
        let (tx, rx) = mpsc::channel();
        let hub = match mode {
            Mode::Lesson(n) => Hub::lesson(n, cfg.lease, cfg.min_workers, tx),
            Mode::Queues(q) => {
                let dead = q.iter().position(|s| s.name == cfg.dead_letters);
                let hub = Hub::new(&q, cfg.lease, cfg.min_workers, tx);
                match dead {
                    Some(d) => hub.with_delivery_limit(cfg.max_deliveries, d, cfg.python),
                    None => hub,
                }
            }
        };
        let sh = Arc::new(Shared {
            key,
            cfg,
            hub,
            pending: Mutex::new(VecDeque::new()),
            next: AtomicU64::new(1),
            python_conns: AtomicUsize::new(0),
        });
        Ok((Server { listener, sh }, rx))
    }

    /// The address bound (with the port the kernel chose for port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| Error::io("getsockname", "listener", &e))
    }

    /// Start accepting, and the lease clock, in threads of their own; both
    /// run as long as the process.
    pub fn start(&self) -> Result<()> {
        let listener = self
            .listener
            .try_clone()
            .map_err(|e| Error::io("dup", "listener", &e))?;
        let sh = Arc::clone(&self.sh);
        std::thread::Builder::new()
            .name("accept".into())
            .spawn(move || accept_loop(listener, sh))
            .map_err(|e| Error::io("pthread_create", "accept thread", &e))?;
        let sh = Arc::clone(&self.sh);
        let every =
            (self.sh.cfg.lease / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
        std::thread::Builder::new()
            .name("leases".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(every);
                    sh.hub.expire();
                }
            })
            .map_err(|e| Error::io("pthread_create", "lease thread", &e))?;
        Ok(())
    }

    /// Wait until every result of the lesson is in, or `timeout` passes;
    /// true when done.
    pub fn wait_finished(&self, timeout: Duration) -> bool {
        self.sh.hub.wait_while(timeout, |h| !h.finished());
        self.sh.hub.finished()
    }

    /// Wait up to `timeout` for the authenticated connections to leave;
    /// how many are still open.
    pub fn drain(&self, timeout: Duration) -> usize {
        self.sh.hub.wait_while(timeout, |h| h.connected() > 0);
        self.sh.hub.connected()
    }

    /// The lesson's results so far, by task id.
    pub fn results(&self) -> Vec<Outcome> {
        self.sh.hub.results()
    }
}

fn accept_loop(listener: TcpListener, sh: Arc<Shared>) {
    use nix::poll::{PollFd, PollFlags, poll};
    let mut backoff = Duration::ZERO;
    // Accepting goes on after the lesson's last result: a worker that
    // comes late hears `done`, a Python client's closing `decref` an answer.
    loop {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, 200u16) {
            Ok(0) => {
                // Nothing waiting: whatever ran short has passed.
                backoff = Duration::ZERO;
                continue;
            }
            Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(_) => return,
        }
        if let Some(wait) = no_room_yet(&sh) {
            // Every handshake slot is taken by one still in its grace:
            // the new connection waits in the backlog, not them.
            std::thread::sleep(wait);
            continue;
        }
        match listener.accept() {
            Ok((stream, addr)) => admit(&sh, stream, addr.to_string()),
            Err(e)
                if matches!(
                    e.raw_os_error().map(Errno::from_raw),
                    Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)
                ) =>
            {
                let first = backoff.is_zero();
                backoff = if first {
                    Duration::from_millis(10)
                } else {
                    (backoff * 2).min(Duration::from_secs(1))
                };
                evict_oldest(&sh, "out of file descriptors");
                if first {
                    sh.hub.report(Event::Backoff(
                        Error::io("accept", "listener", &e).to_string(),
                        backoff,
                    ));
                }
                std::thread::sleep(backoff);
            }
            // ECONNABORTED and the like: that connection is lost, the
            // server is not.
            Err(_) => continue,
        }
    }
}

/// When every handshake slot is taken and the oldest is still within
/// [`EVICTION_GRACE`]: how long to wait before looking again (at most
/// 10 ms, so that a slot freed meanwhile is soon seen).
fn no_room_yet(sh: &Shared) -> Option<Duration> {
    let pending = sh.pending.lock().unwrap_or_else(|p| p.into_inner());
    if pending.len() < sh.cfg.max_unauthenticated {
        return None;
    }
    let left = EVICTION_GRACE.checked_sub(pending.front()?.since.elapsed())?;
    Some(left.clamp(Duration::from_millis(1), Duration::from_millis(10)))
}

/// Drop the oldest connection still in its handshake (its thread sees the
/// shutdown at once and ends, closing the descriptors).
fn evict_oldest(sh: &Shared, why: &'static str) {
    let old = sh
        .pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .pop_front();
    if let Some(old) = old {
        let _ = old.stream.shutdown(Shutdown::Both);
        sh.hub.report(Event::Dropped(old.addr, why));
    }
}

/// Take a new connection in: count it as unauthenticated (pushing out the
/// oldest if that makes too many) and give it a thread.
fn admit(sh: &Arc<Shared>, stream: TcpStream, addr: String) {
    let _ = stream.set_nodelay(true);
    keepalive(&stream, sh.cfg.lease);
    let handle = match stream.try_clone() {
        Ok(h) => h,
        Err(_) => {
            // Out of descriptors: make room by dropping the oldest
            // unauthenticated connection, then try once more.
            evict_oldest(sh, "out of file descriptors");
            match stream.try_clone() {
                Ok(h) => h,
                Err(_) => return,
            }
        }
    };
    let id = sh.next.fetch_add(1, Ordering::Relaxed);
    {
        let mut pending = sh.pending.lock().unwrap_or_else(|p| p.into_inner());
        while pending.len() >= sh.cfg.max_unauthenticated {
            let Some(old) = pending.pop_front() else {
                break;
            };
            let _ = old.stream.shutdown(Shutdown::Both);
            sh.hub.report(Event::Dropped(
                old.addr,
                "too many unauthenticated connections",
            ));
        }
        pending.push_back(Pending {
            id,
            stream: handle,
            addr: addr.clone(),
            since: Instant::now(),
        });
    }
    let sh2 = Arc::clone(sh);
    let spawned = std::thread::Builder::new()
        .name("conn".into())
        .stack_size(256 * 1024)
        .spawn(move || serve_connection(&sh2, stream, addr, id));
    if spawned.is_err() {
        authenticated(sh, id);
    }
}

/// The connection is past its handshake (or gone): it no longer counts as
/// unauthenticated.
fn authenticated(sh: &Shared, id: u64) {
    sh.pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|p| p.id != id);
}

fn serve_connection(sh: &Shared, mut stream: TcpStream, addr: String, id: u64) {
    let deadline = crate::process::later(Instant::now(), sh.cfg.handshake);
    let _ = stream.set_write_timeout(Some(sh.cfg.handshake));
    if sh.cfg.python {
        let end = serve_python(sh, &mut stream, &addr, deadline, id);
        authenticated(sh, id);
        match end {
            Ok(python::server::End::Refused) => sh.hub.report(Event::Refused(Peer::at(addr, true))),
            Ok(_) => {}
            Err(e) => sh.hub.report(Event::Closed(
                Peer::at(addr, true),
                handshake_why(e, sh.cfg.handshake),
            )),
        }
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }
    let hello = handshake(sh, &mut stream, &addr, deadline);
    authenticated(sh, id);
    match hello {
        Ok(Some((peer, seals))) => serve_worker(sh, stream, peer, seals),
        Ok(None) => {
            sh.hub.report(Event::Refused(Peer::at(addr, false)));
            let _ = stream.shutdown(Shutdown::Both);
        }
        Err(e) => {
            sh.hub.report(Event::Closed(
                Peer::at(addr, false),
                handshake_why(e, sh.cfg.handshake),
            ));
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// A connection in CPython's protocol: its challenges, then its requests;
/// a long-lived one within the cap on connections.
fn serve_python(
    sh: &Shared,
    stream: &mut TcpStream,
    addr: &str,
    deadline: Instant,
    id: u64,
) -> Result<python::server::End> {
    if !python::server::challenge(&sh.key, stream, addr, deadline)? {
        return Ok(python::server::End::Refused);
    }
    let mut slot = None;
    python::server::serve(
        &sh.hub,
        stream,
        addr,
        deadline,
        &mut || authenticated(sh, id),
        &mut || {
            slot = Some(PythonSlot::take(sh, addr)?);
            Ok(())
        },
    )
}

/// One of the [`Config::max_workers`] places for long-lived Python
/// connections (each decodes a pickle of up to a MiB per request), held
/// while it lives. A connection for one request needs none: it is counted
/// as unauthenticated until its request is read and decoded.
struct PythonSlot<'a>(&'a AtomicUsize);

impl<'a> PythonSlot<'a> {
    fn take(sh: &'a Shared, addr: &str) -> Result<PythonSlot<'a>> {
        if sh.python_conns.fetch_add(1, Ordering::AcqRel) >= sh.cfg.max_workers {
            sh.python_conns.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::new(
                ErrorKind::WouldBlock,
                "accept",
                addr,
                format!(
                    "too many python connections (at most {})",
                    sh.cfg.max_workers
                ),
            ));
        }
        Ok(PythonSlot(&sh.python_conns))
    }
}

impl Drop for PythonSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn handshake_why(e: Error, limit: Duration) -> String {
    if e.kind() == ErrorKind::TimedOut {
        format!("handshake not done within {limit:?}")
    } else {
        e.to_string()
    }
}

/// The server's side of the handshake (see [`super::auth`]): the peer and
/// the two seals, `None` for a wrong key.
fn handshake(
    sh: &Shared,
    s: &mut TcpStream,
    addr: &str,
    deadline: Instant,
) -> Result<Option<(Peer, (Seal, Seal))>> {
    let ns = nonce()?;
    write_payload(s, addr, &Msg::Hello(ns).encode())?;
    let nw = match read_hello(s, addr, deadline)? {
        Msg::Nonce(n) => n,
        other => return Err(unexpected(addr, &other, "a nonce")),
    };
    write_payload(
        s,
        addr,
        &Msg::ServerProof(proof(&sh.key, Side::Server, &ns, &nw, 0)).encode(),
    )?;
    let (pid, tag) = match read_hello(s, addr, deadline)? {
        Msg::WorkerProof { pid, tag } => (pid, tag),
        Msg::Mismatch => return Ok(None),
        other => return Err(unexpected(addr, &other, "the worker's proof")),
    };
    if !verify(&sh.key, Side::Worker, &ns, &nw, pid, &tag) {
        let _ = write_payload(s, addr, &Msg::Denied.encode());
        return Ok(None);
    }
    let peer = Peer {
        addr: addr.to_string(),
        pid: Some(pid),
        python: false,
    };
    let send = Seal::new(&sh.key, &ns, &nw, Direction::ToWorker);
    let open = Seal::new(&sh.key, &ns, &nw, Direction::ToServer);
    Ok(Some((peer, (send, open))))
}

/// How a worker's connection ended.
enum End {
    Left,
    Gone,
}

fn serve_worker(
    sh: &Shared,
    mut stream: TcpStream,
    peer: Peer,
    (mut send, mut open): (Seal, Seal),
) {
    let addr = peer.addr.clone();
    if sh.hub.connected() >= sh.cfg.max_workers {
        sh.hub.report(Event::Closed(
            peer,
            format!("too many workers (at most {})", sh.cfg.max_workers),
        ));
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }
    let lease = sh.cfg.lease;
    let lease_ms = u32::try_from(lease.as_millis()).unwrap_or(FOREVER - 1);
    let _ = stream.set_read_timeout(None);
    let _ = stream.set_write_timeout(Some(lease.max(Duration::from_secs(1))));
    let welcome = send.seal(&Msg::Welcome { lease_ms }.encode());
    if let Err(e) = write_payload(&mut stream, &addr, &welcome) {
        sh.hub.report(Event::Closed(peer, e.to_string()));
        return;
    }
    let conn = sh.hub.register(peer.clone());
    sh.hub.report(Event::Authenticated(peer));
    let end = worker_loop(sh, conn, &mut stream, &addr, &mut send, &mut open);
    let _ = stream.shutdown(Shutdown::Both);
    sh.hub.unregister(conn, |p| {
        Some(match end {
            Ok(End::Left) => Event::Left(p.clone()),
            Ok(End::Gone) => Event::Gone(p.clone()),
            Err(e) => Event::Closed(p.clone(), e.to_string()),
        })
    });
}

fn reply(stream: &mut TcpStream, addr: &str, send: &mut Seal, msg: &Msg) -> Result<()> {
    let payload = send.seal(&msg.encode());
    write_payload(stream, addr, &payload)
}

fn worker_loop(
    sh: &Shared,
    conn: ConnId,
    stream: &mut TcpStream,
    addr: &str,
    send: &mut Seal,
    open: &mut Seal,
) -> Result<End> {
    let hub = &sh.hub;
    let mut told_done = false;
    loop {
        let payload = match read_payload(stream, addr, MAX_FRAME, None) {
            Ok(p) => p,
            Err(e) if e.kind() == ErrorKind::PeerClosed => {
                return Ok(if told_done { End::Left } else { End::Gone });
            }
            Err(e) => return Err(e),
        };
        let msg = Msg::decode(open.open(&payload, addr)?)
            .filter(|m| !m.is_handshake())
            .ok_or_else(|| {
                Error::data(
                    "read",
                    addr,
                    "a sealed frame that is not a pk-manager message",
                )
            })?;
        hub.heard(conn);
        let queue_of = |name: &str| hub.queue(name);
        let answer = match msg {
            Msg::Get { queue, wait_ms } => match queue_of(&queue) {
                Err(r) => Msg::Refused { why: r.0 },
                Ok(q) => {
                    let wait =
                        (wait_ms != FOREVER).then(|| Duration::from_millis(u64::from(wait_ms)));
                    let mut tick = keepalive_tick(stream, addr, send, sh.cfg.lease);
                    match hub.get(conn, q, wait, Hold::Lease, &mut tick)? {
                        Got::Item(id, v) => Msg::Item {
                            id,
                            body: v.to_bytes(),
                        },
                        Got::Empty => Msg::Empty,
                        Got::Done => {
                            told_done = true;
                            Msg::Done
                        }
                    }
                }
            },
            Msg::Put {
                queue,
                settles,
                wait_ms,
                body,
            } => match queue_of(&queue) {
                Err(r) => Msg::Refused { why: r.0 },
                Ok(q) => {
                    let wait =
                        (wait_ms != FOREVER).then(|| Duration::from_millis(u64::from(wait_ms)));
                    let settle = if settles == 0 {
                        Settle::Nothing
                    } else {
                        Settle::Item(settles)
                    };
                    let mut tick = keepalive_tick(stream, addr, send, sh.cfg.lease);
                    match hub.put(conn, q, Value::Bytes(body), settle, wait, &mut tick)? {
                        Ok(Put::Ok) => Msg::Ok,
                        Ok(Put::Stale) => Msg::Stale,
                        Ok(Put::Full) => Msg::Full,
                        Err(r) => Msg::Refused { why: r.0 },
                    }
                }
            },
            Msg::Ack { id } => match hub.ack(conn, id) {
                Put::Ok => Msg::Ok,
                _ => Msg::Stale,
            },
            Msg::Close { queue } => match queue_of(&queue) {
                Err(r) => Msg::Refused { why: r.0 },
                Ok(q) => {
                    hub.close(q);
                    Msg::Ok
                }
            },
            // Answered, so that a worker busy with a long command hears
            // that the server lives.
            Msg::Heartbeat => Msg::Wait,
            other => {
                return Err(unexpected(
                    addr,
                    &other,
                    "get, put, ack, close or heartbeat",
                ));
            }
        };
        reply(stream, addr, send, &answer)?;
    }
}

/// While a request waits: a `Wait` every third of the lease (so the worker
/// knows the server lives), and an error once the worker has hung up.
fn keepalive_tick<'a>(
    stream: &'a TcpStream,
    addr: &'a str,
    send: &'a mut Seal,
    lease: Duration,
) -> impl FnMut() -> Result<()> + 'a {
    let every = lease / 3;
    let mut next = crate::process::later(Instant::now(), every);
    move || {
        python::server::peer_alive(stream, addr)?;
        if Instant::now() >= next {
            next = crate::process::later(Instant::now(), every);
            let payload = send.seal(&Msg::Wait.encode());
            let mut w: &TcpStream = stream;
            write_payload(&mut w, addr, &payload)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
