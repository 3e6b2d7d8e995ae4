//! A pk-manager client: a worker, or a shell's `put` and `get`.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::auth::{Direction, Key, Seal, Side, nonce, proof, verify};
use super::wire::{
    self, FOREVER, MAX_FRAME, Msg, net_err, read_hello, read_payload, unexpected, write_payload,
};
use crate::error::{Error, ErrorKind, Result};

/// Resolve `addr` (`host:port`) and connect, giving up after `timeout`;
/// the socket gets TCP_NODELAY and keepalive.
pub fn dial(addr: &str, timeout: Duration) -> Result<TcpStream> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| Error::new(ErrorKind::NotFound, "getaddrinfo", addr, e.to_string()))?
        .collect();
    let mut last = Error::new(ErrorKind::NotFound, "getaddrinfo", addr, "no address");
    for a in &addrs {
        match TcpStream::connect_timeout(a, timeout) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                super::server::keepalive(&s, timeout);
                return Ok(s);
            }
            Err(e) => last = net_err("connect", addr, &e),
        }
    }
    Err(last)
}

/// What a get found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    /// An item, leased to this connection until it is settled.
    Item {
        /// Its id.
        id: u64,
        /// Its bytes.
        body: Vec<u8>,
    },
    /// Nothing within the wait.
    Empty,
    /// The queue is closed and drained.
    Done,
}

/// How a put (or an ack) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// Added (settled).
    Ok,
    /// What it settles was settled already (by another worker's result):
    /// dropped.
    Stale,
    /// No room within the wait.
    Full,
}

/// The sending half, shared with the heartbeat thread.
#[derive(Debug)]
struct Sender {
    stream: TcpStream,
    seal: Seal,
}

/// An authenticated connection to a pk-manager server.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    server: String,
    send: Arc<Mutex<Sender>>,
    open: Seal,
    lease: Duration,
    beat: Arc<Beat>,
    beat_thread: Option<std::thread::JoinHandle<()>>,
}

fn ms(d: Option<Duration>) -> u32 {
    d.map_or(FOREVER, |d| {
        u32::try_from(d.as_millis())
            .unwrap_or(FOREVER - 1)
            .min(FOREVER - 1)
    })
}

impl Client {
    /// Connect to `addr`, check the server's proof of the key, prove ours,
    /// and wait for the welcome. A server that cannot prove the key, or
    /// that refuses ours, is an error of kind
    /// [`ErrorKind::PermissionDenied`]; the whole handshake gives up after
    /// `timeout`.
    pub fn connect(addr: &str, key: &Key, pid: u32, timeout: Duration) -> Result<Client> {
        let mut stream = dial(addr, timeout)?;
        let deadline = Instant::now() + timeout;
        let server = addr.to_string();
        stream
            .set_write_timeout(Some(timeout))
            .map_err(|e| Error::io("setsockopt", &server, &e))?;
        let ns = match read_hello(&mut stream, &server, deadline)? {
            Msg::Hello(n) => n,
            other => return Err(unexpected(&server, &other, "hello")),
        };
        let nw = nonce()?;
        write_payload(&mut stream, &server, &Msg::Nonce(nw).encode())?;
        match read_hello(&mut stream, &server, deadline)? {
            Msg::ServerProof(tag) if verify(key, Side::Server, &ns, &nw, 0, &tag) => {}
            Msg::ServerProof(_) => {
                let _ = write_payload(&mut stream, &server, &Msg::Mismatch.encode());
                return Err(Error::new(
                    ErrorKind::PermissionDenied,
                    "auth",
                    &server,
                    "the server did not prove it knows our authkey (a wrong key, or not the server)",
                ));
            }
            other => return Err(unexpected(&server, &other, "the server's proof")),
        }
        let tag = proof(key, Side::Worker, &ns, &nw, pid);
        write_payload(
            &mut stream,
            &server,
            &Msg::WorkerProof { pid, tag }.encode(),
        )?;
        let mut open = Seal::new(key, &ns, &nw, Direction::ToWorker);
        let payload = read_payload(&mut stream, &server, MAX_FRAME, Some(deadline))?;
        if Msg::decode(&payload) == Some(Msg::Denied) {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                "auth",
                &server,
                "the server refused the authkey",
            ));
        }
        let lease = match Msg::decode(open.open(&payload, &server)?) {
            Some(Msg::Welcome { lease_ms }) => Duration::from_millis(u64::from(lease_ms.max(1))),
            Some(other) => return Err(unexpected(&server, &other, "welcome")),
            None => {
                return Err(Error::data(
                    "read",
                    &server,
                    "a sealed frame that is no message",
                ));
            }
        };
        // The server speaks at least every third of the lease while a
        // request waits: silence for a whole lease means it is gone.
        stream
            .set_read_timeout(Some(lease))
            .map_err(|e| Error::io("setsockopt", &server, &e))?;
        stream
            .set_write_timeout(Some(lease))
            .map_err(|e| Error::io("setsockopt", &server, &e))?;
        let writer = stream
            .try_clone()
            .map_err(|e| Error::io("dup", &server, &e))?;
        Ok(Client {
            stream,
            server,
            send: Arc::new(Mutex::new(Sender {
                stream: writer,
                seal: Seal::new(key, &ns, &nw, Direction::ToServer),
            })),
            open,
            lease,
            beat: Arc::default(),
            beat_thread: None,
        })
    }

    /// The lease the server grants.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    fn send(&self, msg: &Msg) -> Result<()> {
        send_on(&self.send, &self.server, msg)
    }

    /// The next answer, past the server's keepalives.
    fn recv(&mut self) -> Result<Msg> {
        loop {
            let payload =
                read_payload(&mut self.stream, &self.server, MAX_FRAME, None).map_err(|e| {
                    if e.kind() == ErrorKind::TimedOut {
                        Error::new(
                            ErrorKind::PeerClosed,
                            "read",
                            &self.server,
                            format!(
                                "the server sent nothing for {:?} (the lease); it is gone",
                                self.lease
                            ),
                        )
                    } else {
                        e
                    }
                })?;
            let body = self.open.open(&payload, &self.server)?;
            match Msg::decode(body) {
                Some(Msg::Wait) => continue,
                Some(Msg::Refused { why }) => {
                    return Err(Error::new(
                        ErrorKind::InvalidInput,
                        "request",
                        &self.server,
                        why,
                    ));
                }
                Some(m) if !m.is_handshake() => return Ok(m),
                _ => {
                    return Err(Error::data(
                        "read",
                        &self.server,
                        "a sealed frame that is no message",
                    ));
                }
            }
        }
    }

    /// Take the next item of `queue`, waiting up to `wait` (`None`: until
    /// one comes or the queue is closed and drained).
    pub fn get(&mut self, queue: &str, wait: Option<Duration>) -> Result<Got> {
        self.send(&Msg::Get {
            queue: queue.to_string(),
            wait_ms: ms(wait),
        })?;
        match self.recv()? {
            Msg::Item { id, body } => Ok(Got::Item { id, body }),
            Msg::Empty => Ok(Got::Empty),
            Msg::Done => Ok(Got::Done),
            other => Err(unexpected(&self.server, &other, "item, empty or done")),
        }
    }

    /// Add `body` to `queue`, settling item `settles` in the same step;
    /// wait up to `wait` for room.
    pub fn put(
        &mut self,
        queue: &str,
        body: &[u8],
        settles: Option<u64>,
        wait: Option<Duration>,
    ) -> Result<Put> {
        if body.len() > wire::MAX_BODY {
            return Err(Error::invalid(
                "MSG",
                format!(
                    "a message of {} bytes, the limit is {}",
                    body.len(),
                    wire::MAX_BODY
                ),
            ));
        }
        self.send(&Msg::Put {
            queue: queue.to_string(),
            settles: settles.unwrap_or(0),
            wait_ms: ms(wait),
            body: body.to_vec(),
        })?;
        self.put_answer()
    }

    fn put_answer(&mut self) -> Result<Put> {
        match self.recv()? {
            Msg::Ok => Ok(Put::Ok),
            Msg::Stale => Ok(Put::Stale),
            Msg::Full => Ok(Put::Full),
            other => Err(unexpected(&self.server, &other, "ok, stale or full")),
        }
    }

    /// Settle item `id` without a result.
    pub fn ack(&mut self, id: u64) -> Result<Put> {
        self.send(&Msg::Ack { id })?;
        self.put_answer()
    }

    /// Close `queue`: no more puts; workers that find it drained stop.
    pub fn close_queue(&mut self, queue: &str) -> Result<()> {
        self.send(&Msg::Close {
            queue: queue.to_string(),
        })?;
        match self.recv()? {
            Msg::Ok => Ok(()),
            other => Err(unexpected(&self.server, &other, "ok")),
        }
    }

    /// Mark this worker busy until the guard drops: meanwhile a thread
    /// of the client's sends a heartbeat every third of the lease, so a
    /// worker holding a task through a long command keeps its lease. The
    /// thread starts on first use and lives as long as the client.
    pub fn heartbeats(&mut self) -> Heartbeats {
        if self.beat_thread.is_none() {
            let beat = Arc::clone(&self.beat);
            let send = Arc::clone(&self.send);
            let server = self.server.clone();
            let every = self.lease / 3;
            self.beat_thread = std::thread::Builder::new()
                .name("heartbeat".into())
                .spawn(move || beat.run(every, || send_on(&send, &server, &Msg::Heartbeat).is_ok()))
                .ok();
        }
        self.beat.set(|b| b.busy = true);
        Heartbeats {
            beat: Arc::clone(&self.beat),
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.beat.set(|b| b.stop = true);
        if let Some(t) = self.beat_thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Debug, Default)]
struct BeatState {
    busy: bool,
    stop: bool,
}

/// Whether the heartbeat thread should beat, and whether it should end.
#[derive(Debug, Default)]
struct Beat {
    state: Mutex<BeatState>,
    changed: Condvar,
}

impl Beat {
    /// Change the state; only a stop wakes the thread (a task that starts
    /// or ends costs no wakeup: the thread looks at `busy` when it ticks).
    fn set(&self, f: impl FnOnce(&mut BeatState)) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut st);
        if st.stop {
            self.changed.notify_all();
        }
    }

    /// Every `every`, beat if busy, until stopped or a beat fails.
    fn run(&self, every: Duration, mut beat: impl FnMut() -> bool) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let deadline = Instant::now() + every;
            while !st.stop && Instant::now() < deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                st = self
                    .changed
                    .wait_timeout(st, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            if st.stop {
                return;
            }
            if st.busy {
                drop(st);
                if !beat() {
                    return;
                }
                st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            }
        }
    }
}

fn send_on(send: &Mutex<Sender>, server: &str, msg: &Msg) -> Result<()> {
    let mut s = send.lock().unwrap_or_else(|p| p.into_inner());
    let payload = s.seal.seal(&msg.encode());
    write_payload(&mut s.stream, server, &payload)
}

/// The worker is busy (heartbeats flow) until this is dropped.
#[derive(Debug)]
pub struct Heartbeats {
    beat: Arc<Beat>,
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.beat.set(|b| b.busy = false);
    }
}
