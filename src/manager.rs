//! A master/worker task queue over TCP with an auth key: what Python's
//! `multiprocessing.managers.BaseManager` lesson builds (a master puts tasks
//! in a shared queue, workers on other machines take them and send results
//! back), done with `std::net` and one thread per connection.
//!
//! ## Wire format
//!
//! Every message is a frame: a 4-byte big-endian length, then that many
//! bytes of payload, at most [`MAX_FRAME`]. The payload's first byte is the
//! message kind ([`Msg`]); the rest has a fixed size per kind. A frame that
//! is empty, longer than the limit, of an unknown kind or of the wrong size
//! for its kind is a protocol error: the connection that sent it is closed,
//! and the server goes on serving every other connection.
//!
//! ## Authentication
//!
//! The server opens with [`Msg::Challenge`]: 32 bytes from getrandom(2).
//! The worker answers with [`Msg::Response`]: HMAC-SHA256 over
//! `"pk-manager worker v1\0" || nonce`, keyed with the auth key, and a
//! nonce of its own. The server compares tags in constant time
//! (`Mac::verify_slice`) and answers [`Msg::Denied`], or [`Msg::Welcome`]
//! with its own tag over the worker's nonce (context `"pk-manager server
//! v1\0"`), which the worker checks the same way: both sides prove they know
//! the key, so a worker never computes tasks for a server that does not.
//! A denied connection is closed and never sees a task. The key itself
//! never crosses the wire; nonces are fresh per connection, so a recorded
//! answer cannot be replayed, and the two contexts differ, so one side's
//! answer cannot be reflected back as the other's.
//!
//! ## Tasks
//!
//! A worker sends [`Msg::Get`]; the server answers with a [`Msg::Task`], or
//! [`Msg::Done`] once every result is in. When the queue is empty but tasks
//! are still out with other workers, the `Get` waits: a worker that dies
//! with a task (its connection closes, as the kernel closes the sockets of
//! a SIGKILLed process) has that task put back at the front of the queue,
//! and a waiting worker takes it. The server records a result only from the
//! connection that holds the task, so every task's result appears exactly
//! once.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use nix::errno::Errno;
use sha2::Sha256;

use crate::error::{Error, ErrorKind, Result};

/// The largest frame payload accepted, in bytes. Every real message is
/// under 64 bytes.
pub const MAX_FRAME: u32 = 4096;

/// The longest auth key accepted, in bytes.
pub const MAX_KEY: usize = 1024;

/// How long a new connection has to answer the challenge.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many connections the server serves at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 128;

/// The nonce size, in bytes.
pub const NONCE_LEN: usize = 32;

/// The HMAC-SHA256 tag size, in bytes.
pub const TAG_LEN: usize = 32;

/// Whose proof a tag is: the worker's answer to the server's nonce, or the
/// server's answer to the worker's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The worker proves it knows the key.
    Worker,
    /// The server proves it knows the key.
    Server,
}

impl Side {
    fn context(self) -> &'static [u8] {
        match self {
            Side::Worker => b"pk-manager worker v1\0",
            Side::Server => b"pk-manager server v1\0",
        }
    }
}

/// One task: compute `n * n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Task {
    /// The task's number, 1..=N.
    pub id: u32,
    /// The input.
    pub n: u64,
}

impl Task {
    /// The work: `n * n` (wrapping, so no input can make a worker panic).
    pub fn compute(self) -> u64 {
        self.n.wrapping_mul(self.n)
    }
}

/// A message of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Server → worker: prove you know the key.
    Challenge([u8; NONCE_LEN]),
    /// Worker → server: the worker's pid (for the logs), its tag, and its
    /// own challenge for the server.
    Response {
        /// The worker's process id.
        pid: u32,
        /// HMAC-SHA256 of the server's challenge ([`Side::Worker`]).
        tag: [u8; TAG_LEN],
        /// The worker's challenge.
        nonce: [u8; NONCE_LEN],
    },
    /// Server → worker: authenticated; the server's own proof.
    Welcome {
        /// HMAC-SHA256 of the worker's challenge ([`Side::Server`]).
        tag: [u8; TAG_LEN],
    },
    /// Server → worker: wrong key; the connection closes.
    Denied,
    /// Worker → server: give me a task.
    Get,
    /// Server → worker: a task.
    Task(Task),
    /// Server → worker: every result is in; stop.
    Done,
    /// Worker → server: the result of the task it holds.
    Result {
        /// The task's id.
        id: u32,
        /// Its result.
        value: u64,
    },
}

impl Msg {
    /// The payload bytes of this message.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(48);
        match self {
            Msg::Challenge(nonce) => {
                b.push(1);
                b.extend_from_slice(nonce);
            }
            Msg::Response { pid, tag, nonce } => {
                b.push(2);
                b.extend_from_slice(&pid.to_be_bytes());
                b.extend_from_slice(tag);
                b.extend_from_slice(nonce);
            }
            Msg::Welcome { tag } => {
                b.push(3);
                b.extend_from_slice(tag);
            }
            Msg::Denied => b.push(4),
            Msg::Get => b.push(5),
            Msg::Task(t) => {
                b.push(6);
                b.extend_from_slice(&t.id.to_be_bytes());
                b.extend_from_slice(&t.n.to_be_bytes());
            }
            Msg::Done => b.push(7),
            Msg::Result { id, value } => {
                b.push(8);
                b.extend_from_slice(&id.to_be_bytes());
                b.extend_from_slice(&value.to_be_bytes());
            }
        }
        b
    }

    /// Parse a payload; `None` when it is not exactly one valid message.
    pub fn decode(p: &[u8]) -> Option<Msg> {
        let (&kind, rest) = p.split_first()?;
        let u32_at =
            |i: usize| -> u32 { u32::from_be_bytes(rest[i..i + 4].try_into().expect("4 bytes")) };
        let u64_at =
            |i: usize| -> u64 { u64::from_be_bytes(rest[i..i + 8].try_into().expect("8 bytes")) };
        Some(match (kind, rest.len()) {
            (1, NONCE_LEN) => Msg::Challenge(rest.try_into().ok()?),
            (2, 68) => Msg::Response {
                pid: u32_at(0),
                tag: rest[4..36].try_into().ok()?,
                nonce: rest[36..].try_into().ok()?,
            },
            (3, TAG_LEN) => Msg::Welcome {
                tag: rest.try_into().ok()?,
            },
            (4, 0) => Msg::Denied,
            (5, 0) => Msg::Get,
            (6, 12) => Msg::Task(Task {
                id: u32_at(0),
                n: u64_at(4),
            }),
            (7, 0) => Msg::Done,
            (8, 12) => Msg::Result {
                id: u32_at(0),
                value: u64_at(4),
            },
            _ => return None,
        })
    }

    fn name(&self) -> &'static str {
        match self {
            Msg::Challenge(_) => "challenge",
            Msg::Response { .. } => "response",
            Msg::Welcome { .. } => "welcome",
            Msg::Denied => "denied",
            Msg::Get => "get",
            Msg::Task(_) => "task",
            Msg::Done => "done",
            Msg::Result { .. } => "result",
        }
    }
}

/// An I/O error on a connection, as one line: a closed connection and a
/// timeout say so in words; anything else keeps its errno.
fn net_err(call: &'static str, peer: &str, e: &io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => Error::new(
            ErrorKind::PeerClosed,
            call,
            peer,
            "connection closed by the peer",
        ),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            Error::new(ErrorKind::TimedOut, call, peer, "timed out")
        }
        _ => Error::io(call, peer, e),
    }
}

/// Write one frame. Retries EINTR (std's `write_all` does).
pub fn write_frame(w: &mut impl Write, peer: &str, msg: &Msg) -> Result<()> {
    let body = msg.encode();
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame).map_err(|e| net_err("write", peer, &e))
}

/// Read one frame and decode it. An empty or oversized length, or a payload
/// that is not a message, is an error (exit 65) and nothing more is read:
/// the caller closes the connection. Retries EINTR (std's `read_exact`
/// does).
pub fn read_frame(r: &mut impl Read, peer: &str) -> Result<Msg> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)
        .map_err(|e| net_err("read", peer, &e))?;
    let len = u32::from_be_bytes(len);
    if len == 0 || len > MAX_FRAME {
        return Err(Error::data(
            "read",
            peer,
            format!("a frame of {len} bytes, the limit is 1..={MAX_FRAME}"),
        ));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body)
        .map_err(|e| net_err("read", peer, &e))?;
    Msg::decode(&body).ok_or_else(|| {
        Error::data(
            "read",
            peer,
            format!("a {len}-byte frame that is not a pk-manager message"),
        )
    })
}

fn unexpected(peer: &str, got: &Msg, want: &str) -> Error {
    Error::data(
        "read",
        peer,
        format!("got a {} message, expected {want}", got.name()),
    )
}

/// `n` random bytes from getrandom(2).
pub fn nonce() -> Result<[u8; NONCE_LEN]> {
    let mut b = [0u8; NONCE_LEN];
    getrandom::fill(&mut b).map_err(|e| Error::getrandom("nonce", e))?;
    Ok(b)
}

fn mac(key: &[u8], side: Side, nonce: &[u8; NONCE_LEN]) -> Hmac<Sha256> {
    let mut m =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes a key of any length");
    m.update(side.context());
    m.update(nonce);
    m
}

/// The tag that `side`, holding `key`, sends for the other side's `nonce`.
pub fn auth_tag(key: &[u8], side: Side, nonce: &[u8; NONCE_LEN]) -> [u8; TAG_LEN] {
    mac(key, side, nonce).finalize().into_bytes().into()
}

/// Whether `tag` is `side`'s right tag for `nonce` under `key`, compared in
/// constant time.
pub fn verify(key: &[u8], side: Side, nonce: &[u8; NONCE_LEN], tag: &[u8]) -> bool {
    mac(key, side, nonce).verify_slice(tag).is_ok()
}

/// Check an auth key given by the user: 1 to [`MAX_KEY`] bytes.
pub fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(Error::invalid(
            "--authkey",
            format!("must be 1 to {MAX_KEY} bytes long"),
        ));
    }
    Ok(())
}

/// Who is at the other end of a server connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The address it connected from.
    pub addr: String,
    /// The pid it reported, once authenticated.
    pub pid: Option<u32>,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "{} (pid {pid})", self.addr),
            None => f.write_str(&self.addr),
        }
    }
}

/// A task's result as the server recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The task.
    pub task: Task,
    /// Its result.
    pub value: u64,
    /// The worker that computed it.
    pub by: Peer,
}

/// What happens on the server, in order, for the caller to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A worker proved it knows the key.
    Authenticated(Peer),
    /// A connection answered the challenge with a wrong tag; it was closed.
    Refused(Peer),
    /// A task was handed to a worker.
    Assigned(Peer, Task),
    /// A result came in.
    Result(Outcome),
    /// A worker's connection closed while it held a task: the task is back
    /// at the front of the queue.
    Requeued(Peer, Task),
    /// A connection was closed because of an error (garbage, a timeout, a
    /// dead peer); the reason is one line.
    Closed(Peer, String),
    /// A worker was told there is nothing left and left.
    Left(Peer),
    /// Every result is in.
    Finished,
}

#[derive(Debug)]
struct State {
    pending: VecDeque<Task>,
    results: BTreeMap<u32, Outcome>,
    total: usize,
    open: usize,
    workers: usize,
    /// Workers that have asked for a task at least once.
    askers: usize,
}

#[derive(Debug)]
struct Shared {
    key: Vec<u8>,
    min_workers: usize,
    state: Mutex<State>,
    changed: Condvar,
    events: Mutex<Sender<Event>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a connection thread panicked (a bug); the
        // state itself is still consistent, since every update is one step.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state once `cond` no longer holds, or once `timeout` has passed.
    fn wait_while(
        &self,
        timeout: Duration,
        cond: impl FnMut(&mut State) -> bool,
    ) -> MutexGuard<'_, State> {
        self.changed
            .wait_timeout_while(self.lock(), timeout, cond)
            .unwrap_or_else(|p| p.into_inner())
            .0
    }

    fn emit(&self, ev: Event) {
        let tx = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let _ = tx.send(ev);
    }

    fn done(st: &State) -> bool {
        st.results.len() == st.total
    }

    /// The next task, waiting while the queue is empty but tasks are out
    /// with other workers (or fewer than `min_workers` workers have asked
    /// yet); `None` once every result is in. `first` marks a worker's first
    /// request.
    fn take(&self, first: bool) -> Option<Task> {
        let mut st = self.lock();
        if first {
            st.askers += 1;
            self.changed.notify_all();
        }
        loop {
            if Self::done(&st) {
                return None;
            }
            if st.askers >= self.min_workers {
                if let Some(t) = st.pending.pop_front() {
                    return Some(t);
                }
            }
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// The master: a listening socket and the task queue.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Server {
    /// Bind `addr` and queue tasks 1..=`tasks` (task `i` computes `i * i`).
    /// No task is handed out before `min_workers` workers are waiting for
    /// one, so that many share the work (each gets at least one task when
    /// there are enough).
    pub fn bind(
        addr: SocketAddr,
        key: &[u8],
        tasks: u32,
        min_workers: usize,
    ) -> Result<(Server, Receiver<Event>)> {
        check_key(key)?;
        let listener = TcpListener::bind(addr).map_err(|e| Error::io("bind", addr, &e))?;
        let (tx, rx) = mpsc::channel();
        let state = State {
            pending: (1..=tasks)
                .map(|id| Task {
                    id,
                    n: u64::from(id),
                })
                .collect(),
            results: BTreeMap::new(),
            total: tasks as usize,
            open: 0,
            workers: 0,
            askers: 0,
        };
        let shared = Arc::new(Shared {
            key: key.to_vec(),
            min_workers,
            state: Mutex::new(state),
            changed: Condvar::new(),
            events: Mutex::new(tx),
        });
        Ok((Server { listener, shared }, rx))
    }

    /// The address bound (with the port the kernel chose for port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| Error::io("getsockname", "listener", &e))
    }

    /// Start accepting in a thread of its own; each connection gets a
    /// thread too. The accept thread stops once every result is in.
    pub fn start(&self) -> Result<()> {
        let listener = self
            .listener
            .try_clone()
            .map_err(|e| Error::io("dup", "listener", &e))?;
        let shared = Arc::clone(&self.shared);
        std::thread::Builder::new()
            .name("accept".into())
            .spawn(move || accept_loop(listener, shared))
            .map_err(|e| Error::io("pthread_create", "accept thread", &e))?;
        Ok(())
    }

    /// Wait until every result is in, or `timeout` passes; true when done.
    pub fn wait_finished(&self, timeout: Duration) -> bool {
        Shared::done(&self.shared.wait_while(timeout, |st| !Shared::done(st)))
    }

    /// After the last result: wait up to `timeout` for the authenticated
    /// workers still connected to be told `done` and leave. Returns how
    /// many were still connected at the end.
    pub fn drain(&self, timeout: Duration) -> usize {
        self.shared.wait_while(timeout, |st| st.workers > 0).workers
    }

    /// Every result so far, by task id.
    pub fn results(&self) -> Vec<Outcome> {
        self.shared.lock().results.values().cloned().collect()
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    use nix::poll::{PollFd, PollFlags, poll};
    loop {
        if Shared::done(&shared.lock()) {
            return;
        }
        // Wake up now and then to see whether the work is done.
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, 200u16) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(_) => return,
        }
        let (stream, addr) = match listener.accept() {
            Ok(c) => c,
            // ECONNABORTED, EMFILE ...: this connection is lost, the
            // server is not.
            Err(_) => continue,
        };
        let peer = Peer {
            addr: addr.to_string(),
            pid: None,
        };
        {
            let mut st = shared.lock();
            if st.open >= MAX_CONNECTIONS {
                drop(st);
                let _ = stream.shutdown(Shutdown::Both);
                shared.emit(Event::Closed(peer, "too many connections".into()));
                continue;
            }
            st.open += 1;
        }
        let sh = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("conn".into())
            .spawn(move || serve_connection(&sh, stream, peer));
        if spawned.is_err() {
            shared.lock().open -= 1;
        }
    }
}

/// What a connection holds, for the cleanup when it ends.
#[derive(Debug)]
struct Conn {
    peer: Peer,
    authed: bool,
    holding: Option<Task>,
    asked: bool,
}

fn serve_connection(shared: &Shared, mut stream: TcpStream, peer: Peer) {
    let mut conn = Conn {
        peer,
        authed: false,
        holding: None,
        asked: false,
    };
    let outcome = converse(shared, &mut stream, &mut conn);
    let _ = stream.shutdown(Shutdown::Both);
    if let Some(task) = conn.holding.take() {
        shared.lock().pending.push_front(task);
        shared.changed.notify_all();
        shared.emit(Event::Requeued(conn.peer.clone(), task));
    }
    // Report before the counts drop: `Server::drain` returns once they do,
    // and the caller then reads the events that are already queued.
    match outcome {
        Ok(Finish::Left) => shared.emit(Event::Left(conn.peer)),
        Ok(Finish::Refused) => shared.emit(Event::Refused(conn.peer)),
        Err(e) => shared.emit(Event::Closed(conn.peer, e.to_string())),
    }
    {
        let mut st = shared.lock();
        st.open -= 1;
        if conn.authed {
            st.workers -= 1;
        }
    }
    shared.changed.notify_all();
}

enum Finish {
    Left,
    Refused,
}

fn converse(shared: &Shared, stream: &mut TcpStream, conn: &mut Conn) -> Result<Finish> {
    let who = conn.peer.addr.clone();
    let _ = stream.set_nodelay(true);
    stream
        .set_nonblocking(false)
        .map_err(|e| Error::io("fcntl", &who, &e))?;
    stream
        .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(|e| Error::io("setsockopt", &who, &e))?;
    let challenge = nonce()?;
    write_frame(stream, &who, &Msg::Challenge(challenge))?;
    let (pid, tag, theirs) = match read_frame(stream, &who)? {
        Msg::Response { pid, tag, nonce } => (pid, tag, nonce),
        other => return Err(unexpected(&who, &other, "a response")),
    };
    conn.peer.pid = Some(pid);
    if !verify(&shared.key, Side::Worker, &challenge, &tag) {
        let _ = write_frame(stream, &who, &Msg::Denied);
        return Ok(Finish::Refused);
    }
    stream
        .set_read_timeout(None)
        .map_err(|e| Error::io("setsockopt", &who, &e))?;
    let proof = auth_tag(&shared.key, Side::Server, &theirs);
    write_frame(stream, &who, &Msg::Welcome { tag: proof })?;
    {
        let mut st = shared.lock();
        st.workers += 1;
        conn.authed = true;
    }
    shared.changed.notify_all();
    shared.emit(Event::Authenticated(conn.peer.clone()));

    loop {
        match read_frame(stream, &who)? {
            Msg::Get if conn.holding.is_none() => {
                let first = !std::mem::replace(&mut conn.asked, true);
                match shared.take(first) {
                    Some(task) => {
                        conn.holding = Some(task);
                        shared.emit(Event::Assigned(conn.peer.clone(), task));
                        write_frame(stream, &who, &Msg::Task(task))?;
                    }
                    None => {
                        write_frame(stream, &who, &Msg::Done)?;
                        return Ok(Finish::Left);
                    }
                }
            }
            Msg::Result { id, value } => {
                let task = match conn.holding {
                    Some(t) if t.id == id => t,
                    _ => {
                        return Err(Error::data(
                            "read",
                            &who,
                            format!("a result for task {id}, which this worker does not hold"),
                        ));
                    }
                };
                if value != task.compute() {
                    return Err(Error::data(
                        "read",
                        &who,
                        format!("a wrong result for task {id}: {value}"),
                    ));
                }
                conn.holding = None;
                let outcome = Outcome {
                    task,
                    value,
                    by: conn.peer.clone(),
                };
                let finished = {
                    let mut st = shared.lock();
                    st.results.insert(id, outcome.clone());
                    Shared::done(&st)
                };
                shared.changed.notify_all();
                shared.emit(Event::Result(outcome));
                if finished {
                    shared.emit(Event::Finished);
                }
            }
            other => return Err(unexpected(&who, &other, "get or result")),
        }
    }
}

/// A worker's connection to the master, authenticated.
#[derive(Debug)]
pub struct Worker {
    stream: TcpStream,
    server: String,
}

impl Worker {
    /// Connect to `addr` (`host:port`), answer the challenge with `key`, and
    /// wait for the verdict. A wrong key is an error with exit code 77.
    /// Connecting and the handshake each give up after `timeout`.
    pub fn connect(addr: &str, key: &[u8], pid: u32, timeout: Duration) -> Result<Worker> {
        check_key(key)?;
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| Error::new(ErrorKind::NotFound, "getaddrinfo", addr, e.to_string()))?
            .collect();
        let mut last = Error::new(ErrorKind::NotFound, "getaddrinfo", addr, "no address");
        let mut stream = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = net_err("connect", addr, &e),
            }
        }
        let Some(mut stream) = stream else {
            return Err(last);
        };
        let server = addr.to_string();
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| Error::io("setsockopt", &server, &e))?;
        let challenge = match read_frame(&mut stream, &server)? {
            Msg::Challenge(n) => n,
            other => return Err(unexpected(&server, &other, "a challenge")),
        };
        let tag = auth_tag(key, Side::Worker, &challenge);
        let mine = nonce()?;
        write_frame(
            &mut stream,
            &server,
            &Msg::Response {
                pid,
                tag,
                nonce: mine,
            },
        )?;
        match read_frame(&mut stream, &server)? {
            Msg::Welcome { tag } if verify(key, Side::Server, &mine, &tag) => {}
            Msg::Welcome { .. } => {
                return Err(Error::new(
                    ErrorKind::PermissionDenied,
                    "auth",
                    &server,
                    "the server did not prove it knows the authkey",
                ));
            }
            Msg::Denied => {
                return Err(Error::new(
                    ErrorKind::PermissionDenied,
                    "auth",
                    &server,
                    "the server refused the authkey",
                ));
            }
            other => return Err(unexpected(&server, &other, "welcome or denied")),
        }
        // From here a Get may wait as long as other workers hold tasks.
        stream
            .set_read_timeout(None)
            .map_err(|e| Error::io("setsockopt", &server, &e))?;
        Ok(Worker { stream, server })
    }

    /// Ask for a task; `None` when the server says every result is in.
    pub fn next_task(&mut self) -> Result<Option<Task>> {
        write_frame(&mut self.stream, &self.server, &Msg::Get)?;
        match read_frame(&mut self.stream, &self.server)? {
            Msg::Task(t) => Ok(Some(t)),
            Msg::Done => Ok(None),
            other => Err(unexpected(&self.server, &other, "task or done")),
        }
    }

    /// Send the result of the task this worker holds.
    pub fn send_result(&mut self, task: Task, value: u64) -> Result<()> {
        write_frame(
            &mut self.stream,
            &self.server,
            &Msg::Result { id: task.id, value },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_waits_for_its_results_and_then_for_its_workers_to_leave() {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let (server, events) = Server::bind(any, b"key", 2, 1).unwrap();
        server.start().unwrap();
        assert!(
            !server.wait_finished(Duration::from_millis(20)),
            "no worker yet"
        );
        assert_eq!(server.drain(Duration::ZERO), 0, "none connected");
        let addr = server.local_addr().unwrap().to_string();
        let (go, start) = mpsc::channel();
        let worker = std::thread::spawn(move || {
            let mut w = Worker::connect(&addr, b"key", 1, Duration::from_secs(30)).unwrap();
            start.recv().unwrap();
            while let Some(task) = w.next_task().unwrap() {
                w.send_result(task, task.compute()).unwrap();
            }
        });
        // Counted once the server has said so.
        loop {
            match events.recv_timeout(Duration::from_secs(30)).unwrap() {
                Event::Authenticated(_) => break,
                _ => continue,
            }
        }
        assert!(
            !server.wait_finished(Duration::from_millis(20)),
            "no task asked for"
        );
        assert_eq!(
            server.drain(Duration::from_millis(20)),
            1,
            "still connected"
        );
        go.send(()).unwrap();
        assert!(server.wait_finished(Duration::from_secs(30)));
        assert_eq!(server.results().len(), 2);
        worker.join().unwrap();
        assert_eq!(server.drain(Duration::from_secs(30)), 0, "told done, gone");
    }

    #[test]
    fn messages_round_trip() {
        let msgs = [
            Msg::Challenge([7; NONCE_LEN]),
            Msg::Response {
                pid: 42,
                tag: [9; TAG_LEN],
                nonce: [8; NONCE_LEN],
            },
            Msg::Welcome { tag: [6; TAG_LEN] },
            Msg::Denied,
            Msg::Get,
            Msg::Task(Task { id: 3, n: 3 }),
            Msg::Done,
            Msg::Result { id: 3, value: 9 },
        ];
        for m in msgs {
            let mut buf = Vec::new();
            write_frame(&mut buf, "t", &m).unwrap();
            assert_eq!(read_frame(&mut &buf[..], "t").unwrap(), m);
        }
    }

    #[test]
    fn bad_frames_are_refused() {
        let cases: [&[u8]; 6] = [
            &[0, 0, 0, 0],             // empty
            &[0xff, 0xff, 0xff, 0xff], // oversized
            &[0, 0, 0x10, 0x01],       // just over the limit
            &[0, 0, 0, 1, 99],         // unknown kind
            &[0, 0, 0, 2, 5, 0],       // Get with a stray byte
            &[0, 0, 0, 3, 6, 0, 0],    // truncated task
        ];
        for c in cases {
            let e = read_frame(&mut &c[..], "t").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::BadData, "{c:?}: {e}");
        }
        let e = read_frame(&mut &[0u8, 0][..], "t").unwrap_err();
        assert!(e.to_string().contains("connection closed"), "{e}");
    }

    #[test]
    fn tags_verify_only_with_the_key_and_nonce() {
        let n = nonce().unwrap();
        let tag = auth_tag(b"secret", Side::Worker, &n);
        assert!(verify(b"secret", Side::Worker, &n, &tag));
        assert!(!verify(b"Secret", Side::Worker, &n, &tag));
        assert!(!verify(b"secret", Side::Worker, &nonce().unwrap(), &tag));
        assert!(!verify(b"secret", Side::Worker, &n, &tag[..31]));
        // A worker's answer cannot be reflected as the server's proof.
        assert!(!verify(b"secret", Side::Server, &n, &tag));
    }
}
