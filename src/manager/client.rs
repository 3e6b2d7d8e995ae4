//! A pk-manager client: a worker, or a shell's `put` and `get`.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
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

/// The connection, shared with the heartbeat thread: whoever holds the
/// lock sends a request and reads its answer, so a heartbeat and its
/// answer never interleave with a request and its.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    server: String,
    lease: Duration,
    /// Seals what we send.
    seal: Seal,
    /// Opens what the server sends.
    open: Seal,
    /// When the server was last heard.
    heard: Instant,
}

/// An authenticated connection to a pk-manager server.
#[derive(Debug)]
pub struct Client {
    server: String,
    conn: Arc<Mutex<Conn>>,
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

/// A wait of any length, sent as the wire's u32 milliseconds (about 49
/// days at most): `wait` counted from now, and for each request the time
/// left and whether [`ms`] had to cut it (a server that answers empty or
/// full then is asked again).
struct Wait {
    /// `None`: no limit (none given, or one the clock cannot hold).
    until: Option<Instant>,
}

impl Wait {
    fn new(wait: Option<Duration>) -> Wait {
        Wait {
            until: wait.and_then(|w| Instant::now().checked_add(w)),
        }
    }

    /// The milliseconds to send now, and whether they are less than
    /// the time left.
    fn next(&self) -> (u32, bool) {
        let left = self
            .until
            .map(|t| t.saturating_duration_since(Instant::now()));
        let cut = left.is_some_and(|l| l.as_millis() >= u128::from(FOREVER - 1));
        (ms(left), cut)
    }
}

impl Client {
    /// Connect to `addr`, check the server's proof of the key, prove ours,
    /// and wait for the welcome. A server that cannot prove the key, or
    /// that refuses ours, is an error of kind
    /// [`ErrorKind::PermissionDenied`]; the whole handshake gives up after
    /// `timeout`.
    pub fn connect(addr: &str, key: &Key, pid: u32, timeout: Duration) -> Result<Client> {
        let mut stream = dial(addr, timeout)?;
        let deadline = crate::process::later(Instant::now(), timeout);
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
        Ok(Client {
            conn: Arc::new(Mutex::new(Conn {
                stream,
                server: server.clone(),
                lease,
                seal: Seal::new(key, &ns, &nw, Direction::ToServer),
                open,
                heard: Instant::now(),
            })),
            server,
            lease,
            beat: Arc::default(),
            beat_thread: None,
        })
    }

    /// The lease the server grants.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Send `msg` and read its answer, past the server's keepalives.
    fn request(&self, msg: &Msg) -> Result<Msg> {
        let mut c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        c.send(msg)?;
        c.recv(None)
    }

    /// Take the next item of `queue`, waiting up to `wait` (`None`: until
    /// one comes or the queue is closed and drained).
    pub fn get(&mut self, queue: &str, wait: Option<Duration>) -> Result<Got> {
        let wait = Wait::new(wait);
        loop {
            let (wait_ms, cut) = wait.next();
            match self.request(&Msg::Get {
                queue: queue.to_string(),
                wait_ms,
            })? {
                Msg::Item { id, body } => return Ok(Got::Item { id, body }),
                Msg::Empty if cut => continue,
                Msg::Empty => return Ok(Got::Empty),
                Msg::Done => return Ok(Got::Done),
                other => return Err(unexpected(&self.server, &other, "item, empty or done")),
            }
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
        let wait = Wait::new(wait);
        loop {
            let (wait_ms, cut) = wait.next();
            let answer = self.request(&Msg::Put {
                queue: queue.to_string(),
                settles: settles.unwrap_or(0),
                wait_ms,
                body: body.to_vec(),
            })?;
            match self.put_answer(answer)? {
                // Full: nothing was put or settled; ask again.
                Put::Full if cut => continue,
                done => return Ok(done),
            }
        }
    }

    fn put_answer(&self, answer: Msg) -> Result<Put> {
        match answer {
            Msg::Ok => Ok(Put::Ok),
            Msg::Stale => Ok(Put::Stale),
            Msg::Full => Ok(Put::Full),
            other => Err(unexpected(&self.server, &other, "ok, stale or full")),
        }
    }

    /// Settle item `id` without a result.
    pub fn ack(&mut self, id: u64) -> Result<Put> {
        let answer = self.request(&Msg::Ack { id })?;
        self.put_answer(answer)
    }

    /// Close `queue`: no more puts; workers that find it drained stop.
    pub fn close_queue(&mut self, queue: &str) -> Result<()> {
        match self.request(&Msg::Close {
            queue: queue.to_string(),
        })? {
            Msg::Ok => Ok(()),
            other => Err(unexpected(&self.server, &other, "ok")),
        }
    }

    /// Mark this worker busy until the guard drops: meanwhile a thread
    /// of the client's sends a heartbeat every third of the lease and
    /// reads the server's answer, so a worker holding a task through a
    /// long command keeps its lease, and learns when the server is gone.
    /// When a heartbeat cannot be sent, or the server stays silent for a
    /// whole lease (it died, stopped, or the network is cut), the lease
    /// is lost: [`Heartbeats::lost`] says why and
    /// [`Heartbeats::lost_fd`] becomes readable, for a caller that waits
    /// on a command with poll(2). The server hands the task to another
    /// worker then; the connection is of no further use. The thread
    /// starts on first use and lives as long as the client.
    pub fn heartbeats(&mut self) -> Result<Heartbeats> {
        if self.beat_thread.is_none() {
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| Error::sys("pipe2", "heartbeat", e))?;
            let beat = Arc::clone(&self.beat);
            let conn = Arc::clone(&self.conn);
            let every = self.lease / 3;
            let thread = std::thread::Builder::new()
                .name("heartbeat".into())
                .spawn(move || {
                    beat.run(every, || {
                        let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
                        c.heartbeat()
                    });
                    drop(w);
                })
                .map_err(|e| Error::io("pthread_create", "heartbeat", &e))?;
            self.beat_thread = Some(thread);
            self.beat.set(|b| b.wake = Some(Arc::new(r)));
        }
        let mut wake = None;
        self.beat.set(|b| {
            b.busy = true;
            wake.clone_from(&b.wake);
        });
        Ok(Heartbeats {
            beat: Arc::clone(&self.beat),
            wake: wake.expect("the wake pipe exists once the thread does"),
        })
    }
}

impl Conn {
    fn send(&mut self, msg: &Msg) -> Result<()> {
        let payload = self.seal.seal(&msg.encode());
        write_payload(&mut self.stream, &self.server, &payload)
    }

    /// The next answer, past the server's keepalives; `by`: give up then
    /// (else after a lease of silence).
    fn recv(&mut self, by: Option<Instant>) -> Result<Msg> {
        loop {
            let read = read_payload(&mut self.stream, &self.server, MAX_FRAME, by);
            if by.is_some() {
                // read_payload with a deadline changed the socket's
                // receive timeout; the next plain read gets the lease again.
                let _ = self.stream.set_read_timeout(Some(self.lease));
            }
            let payload = read.map_err(|e| {
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
            self.heard = Instant::now();
            match Msg::decode(body) {
                Some(Msg::Wait) if by.is_none() => continue,
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

    /// One heartbeat and the server's answer (`wait`). The answer is
    /// awaited until a whole lease has passed since the server was last
    /// heard, and at least half a lease after the heartbeat (a worker that
    /// was itself stopped does not blame the server for its own silence).
    fn heartbeat(&mut self) -> Result<()> {
        self.send(&Msg::Heartbeat)?;
        let by = crate::process::later(self.heard, self.lease)
            .max(crate::process::later(Instant::now(), self.lease / 2));
        match self.recv(Some(by))? {
            Msg::Wait => Ok(()),
            other => Err(unexpected(&self.server, &other, "wait")),
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
    /// Why the lease was lost, once it was.
    lost: Option<Error>,
    /// The read end of a pipe whose write end the thread closes when it
    /// ends (the lease lost, or the client dropped).
    wake: Option<Arc<OwnedFd>>,
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

    /// Every `every`, beat if busy, until stopped or a beat fails (the
    /// failure is kept in `lost`).
    fn run(&self, every: Duration, mut beat: impl FnMut() -> Result<()>) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let deadline = crate::process::later(Instant::now(), every);
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
                let r = beat();
                st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if let Err(e) = r {
                    st.lost = Some(e);
                    return;
                }
            }
        }
    }
}

/// The worker is busy (heartbeats flow) until this is dropped.
#[derive(Debug)]
pub struct Heartbeats {
    beat: Arc<Beat>,
    wake: Arc<OwnedFd>,
}

impl Heartbeats {
    /// Why the lease was lost (a heartbeat could not be sent, or the
    /// server was silent for a whole lease), once it was; `None` while
    /// the heartbeats hold it.
    pub fn lost(&self) -> Option<Error> {
        self.beat
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .lost
            .clone()
    }

    /// A descriptor that becomes readable (end of file) when the lease is
    /// lost: poll(2) it beside a command. It also becomes readable when
    /// the client is dropped.
    pub fn lost_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.beat.set(|b| b.busy = false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_past_the_wire_limit_is_sent_in_parts_and_asked_again() {
        let day = Duration::from_secs(86_400);
        // 400 days: the wire takes about 49.7 at most; the rest is asked
        // for again once the server answers empty or full.
        assert_eq!(Wait::new(Some(400 * day)).next(), (FOREVER - 1, true));
        let (sent, cut) = Wait::new(Some(Duration::from_secs(1))).next();
        assert!(sent <= 1000 && !cut, "{sent} {cut}");
        assert_eq!(Wait::new(Some(Duration::ZERO)).next(), (0, false));
        // No limit, or one the clock cannot hold: the wire's "for ever".
        assert_eq!(Wait::new(None).next(), (FOREVER, false));
        assert_eq!(Wait::new(Some(Duration::MAX)).next(), (FOREVER, false));
    }
}
