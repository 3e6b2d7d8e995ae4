//! pk-manager's own wire format: length-prefixed frames and the messages
//! they carry, plus the reads and writes that bound them in size and time.
//!
//! A frame is a 4-byte big-endian length, then that many bytes of payload.
//! Before authentication a payload is at most [`MAX_HELLO`] bytes and is
//! one plain [`Msg`]; after it, every payload is a message followed by its
//! 32-byte MAC (see [`crate::manager::auth::Seal`]) and is at most
//! [`MAX_FRAME`] bytes. A message is its kind byte and fixed or
//! length-prefixed fields; anything else is bad data and closes the
//! connection.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use crate::error::{Error, ErrorKind, Result};

/// The largest payload after authentication: a message of up to
/// [`MAX_BODY`] bytes, its header and its MAC.
pub const MAX_FRAME: u32 = MAX_BODY as u32 + 1024;

/// The largest message body (a task, a result) a queue carries.
pub const MAX_BODY: usize = 1 << 20;

/// The largest payload before authentication: nothing larger is ever read
/// from a peer that has not proven the key.
pub const MAX_HELLO: u32 = 256;

/// The nonce size, in bytes.
pub const NONCE_LEN: usize = 32;

/// The HMAC-SHA256 tag size, in bytes.
pub const TAG_LEN: usize = 32;

/// The longest queue name.
pub const MAX_NAME: usize = 64;

/// `wait_ms` meaning "wait for ever".
pub const FOREVER: u32 = u32::MAX;

/// A message of the protocol. Kinds 1-6 travel in the clear during the
/// handshake; the others only sealed, after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Server → worker, first: the server's nonce.
    Hello([u8; NONCE_LEN]),
    /// Worker → server: the worker's nonce (it proves nothing yet).
    Nonce([u8; NONCE_LEN]),
    /// Server → worker: HMAC over both nonces, proving the server holds
    /// the key before the worker shows anything that depends on it.
    ServerProof([u8; TAG_LEN]),
    /// Worker → server: its pid (for the logs) and its HMAC over both
    /// nonces and that pid.
    WorkerProof {
        /// The worker's process id.
        pid: u32,
        /// The worker's proof.
        tag: [u8; TAG_LEN],
    },
    /// Server → worker: the worker's proof was wrong; the connection closes.
    Denied,
    /// Worker → server: the server's proof did not match the worker's key.
    Mismatch,
    /// Server → worker, the first sealed message: the lease in ms.
    Welcome {
        /// How long a worker may stay silent while it holds a task.
        lease_ms: u32,
    },
    /// Take the next item of `queue`, waiting up to `wait_ms`
    /// ([`FOREVER`]: no limit). Answered by `Item`, `Empty`, `Done` or
    /// `Refused`.
    Get {
        /// The queue's name.
        queue: String,
        /// How long to wait for an item.
        wait_ms: u32,
    },
    /// An item, leased to the connection that asked until it is settled
    /// (`Ack`, or a `Put` that settles it) or the lease runs out.
    Item {
        /// The item's id, unique on this server.
        id: u64,
        /// Its bytes.
        body: Vec<u8>,
    },
    /// Nothing came within the wait.
    Empty,
    /// The queue is closed and nothing in it is left or out on lease.
    Done,
    /// Add `body` to `queue`, waiting up to `wait_ms` for room; settle the
    /// item `settles` (0: none) in the same step. Answered by `Ok`,
    /// `Stale`, `Full` or `Refused`.
    Put {
        /// The queue's name.
        queue: String,
        /// The item this puts the result of (0: none).
        settles: u64,
        /// How long to wait for room.
        wait_ms: u32,
        /// The message.
        body: Vec<u8>,
    },
    /// Done as asked.
    Ok,
    /// Settle a leased item without a result (a consumer has it).
    Ack {
        /// The item's id.
        id: u64,
    },
    /// Worker → server: still working on what I hold.
    Heartbeat,
    /// Server → worker: still here (sent while a request waits, and in
    /// answer to each heartbeat).
    Wait,
    /// Close `queue`: no more puts; gets see `Done` once it is drained.
    Close {
        /// The queue's name.
        queue: String,
    },
    /// The request cannot be served (no such queue, a closed queue, a bad
    /// result in the lesson); the connection stays open.
    Refused {
        /// Why, in one line.
        why: String,
    },
    /// The item this settles was settled already: another worker's result
    /// for it was counted, this one is dropped.
    Stale,
    /// The queue stayed full for the whole wait.
    Full,
}

impl Msg {
    /// Whether this message may travel before authentication.
    pub fn is_handshake(&self) -> bool {
        matches!(
            self,
            Msg::Hello(_)
                | Msg::Nonce(_)
                | Msg::ServerProof(_)
                | Msg::WorkerProof { .. }
                | Msg::Denied
                | Msg::Mismatch
        )
    }

    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64);
        let name = |b: &mut Vec<u8>, s: &str| {
            b.push(s.len() as u8);
            b.extend_from_slice(s.as_bytes());
        };
        match self {
            Msg::Hello(n) => {
                b.push(1);
                b.extend_from_slice(n);
            }
            Msg::Nonce(n) => {
                b.push(2);
                b.extend_from_slice(n);
            }
            Msg::ServerProof(t) => {
                b.push(3);
                b.extend_from_slice(t);
            }
            Msg::WorkerProof { pid, tag } => {
                b.push(4);
                b.extend_from_slice(&pid.to_be_bytes());
                b.extend_from_slice(tag);
            }
            Msg::Denied => b.push(5),
            Msg::Mismatch => b.push(6),
            Msg::Welcome { lease_ms } => {
                b.push(10);
                b.extend_from_slice(&lease_ms.to_be_bytes());
            }
            Msg::Get { queue, wait_ms } => {
                b.push(11);
                b.extend_from_slice(&wait_ms.to_be_bytes());
                name(&mut b, queue);
            }
            Msg::Item { id, body } => {
                b.push(12);
                b.extend_from_slice(&id.to_be_bytes());
                b.extend_from_slice(body);
            }
            Msg::Empty => b.push(13),
            Msg::Done => b.push(14),
            Msg::Put {
                queue,
                settles,
                wait_ms,
                body,
            } => {
                b.push(15);
                b.extend_from_slice(&settles.to_be_bytes());
                b.extend_from_slice(&wait_ms.to_be_bytes());
                name(&mut b, queue);
                b.extend_from_slice(body);
            }
            Msg::Ok => b.push(16),
            Msg::Ack { id } => {
                b.push(17);
                b.extend_from_slice(&id.to_be_bytes());
            }
            Msg::Heartbeat => b.push(18),
            Msg::Wait => b.push(19),
            Msg::Close { queue } => {
                b.push(20);
                name(&mut b, queue);
            }
            Msg::Refused { why } => {
                b.push(21);
                b.extend_from_slice(why.as_bytes());
            }
            Msg::Stale => b.push(22),
            Msg::Full => b.push(23),
        }
        b
    }

    /// Parse a message; `None` when the bytes are not exactly one.
    pub fn decode(p: &[u8]) -> Option<Msg> {
        let (&kind, rest) = p.split_first()?;
        let mut r = Fields(rest);
        let msg = match kind {
            1 => Msg::Hello(r.array()?),
            2 => Msg::Nonce(r.array()?),
            3 => Msg::ServerProof(r.array()?),
            4 => Msg::WorkerProof {
                pid: r.u32()?,
                tag: r.array()?,
            },
            5 => Msg::Denied,
            6 => Msg::Mismatch,
            10 => Msg::Welcome { lease_ms: r.u32()? },
            11 => Msg::Get {
                wait_ms: r.u32()?,
                queue: r.name()?,
            },
            12 => Msg::Item {
                id: r.u64()?,
                body: r.rest()?,
            },
            13 => Msg::Empty,
            14 => Msg::Done,
            15 => Msg::Put {
                settles: r.u64()?,
                wait_ms: r.u32()?,
                queue: r.name()?,
                body: r.rest()?,
            },
            16 => Msg::Ok,
            17 => Msg::Ack { id: r.u64()? },
            18 => Msg::Heartbeat,
            19 => Msg::Wait,
            20 => Msg::Close { queue: r.name()? },
            21 => Msg::Refused {
                why: String::from_utf8(r.rest()?).ok()?,
            },
            22 => Msg::Stale,
            23 => Msg::Full,
            _ => return None,
        };
        r.0.is_empty().then_some(msg)
    }

    /// The message's name, for errors.
    pub fn name(&self) -> &'static str {
        match self {
            Msg::Hello(_) => "hello",
            Msg::Nonce(_) => "nonce",
            Msg::ServerProof(_) => "server proof",
            Msg::WorkerProof { .. } => "worker proof",
            Msg::Denied => "denied",
            Msg::Mismatch => "mismatch",
            Msg::Welcome { .. } => "welcome",
            Msg::Get { .. } => "get",
            Msg::Item { .. } => "item",
            Msg::Empty => "empty",
            Msg::Done => "done",
            Msg::Put { .. } => "put",
            Msg::Ok => "ok",
            Msg::Ack { .. } => "ack",
            Msg::Heartbeat => "heartbeat",
            Msg::Wait => "wait",
            Msg::Close { .. } => "close",
            Msg::Refused { .. } => "refused",
            Msg::Stale => "stale",
            Msg::Full => "full",
        }
    }
}

/// A cursor over a message's fields.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.array()?))
    }
    fn name(&mut self) -> Option<String> {
        let n = *self.take(1)?.first()? as usize;
        let s = std::str::from_utf8(self.take(n)?).ok()?;
        check_name(s).ok()?;
        Some(s.to_string())
    }
    fn rest(&mut self) -> Option<Vec<u8>> {
        let r = self.0.to_vec();
        self.0 = &[];
        (r.len() <= MAX_BODY).then_some(r)
    }
}

/// A queue name: 1 to [`MAX_NAME`] bytes of letters, digits, `.`, `_`, `-`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "--queue",
            format!("'{name}' is not a queue name (1-{MAX_NAME} of A-Z a-z 0-9 . _ -)"),
        ))
    }
}

/// An I/O error on a connection, as one line: a closed connection and a
/// timeout say so in words; anything else keeps its errno.
pub fn net_err(call: &'static str, peer: &str, e: &io::Error) -> Error {
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

/// [`net_err`] for a read past a frame's header: there an end of file is
/// no orderly close but a peer gone in the middle of a message (killed
/// mid-reply), an error of its own.
pub fn mid_message_err(call: &'static str, peer: &str, e: &io::Error) -> Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        return Error::new(
            ErrorKind::Os,
            call,
            peer,
            "the connection closed in the middle of a message",
        );
    }
    net_err(call, peer, e)
}

/// Fill `buf` from `s`, giving up at `deadline` however the bytes trickle
/// in: the socket's receive timeout is set to what is left before each
/// read, so a peer sending one byte at a time cannot stretch the wait.
/// Retries EINTR.
pub fn read_exact_by(s: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        s.set_read_timeout(Some(left))?;
        match s.read(&mut buf[got..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Read one frame's payload of at most `limit` bytes, by `deadline` if
/// given (else with whatever receive timeout the socket has). An empty or
/// oversized length is bad data and nothing more is read.
pub fn read_payload(
    s: &mut TcpStream,
    peer: &str,
    limit: u32,
    deadline: Option<Instant>,
) -> Result<Vec<u8>> {
    let read = |s: &mut TcpStream, buf: &mut [u8]| match deadline {
        Some(d) => read_exact_by(s, buf, d),
        None => s.read_exact(buf),
    };
    let mut len = [0u8; 4];
    read(s, &mut len).map_err(|e| net_err("read", peer, &e))?;
    let len = u32::from_be_bytes(len);
    if len == 0 || len > limit {
        return Err(Error::data(
            "read",
            peer,
            format!("a frame of {len} bytes, the limit is 1..={limit}"),
        ));
    }
    let mut body = vec![0u8; len as usize];
    read(s, &mut body).map_err(|e| mid_message_err("read", peer, &e))?;
    Ok(body)
}

/// Write one frame around `payload`, in one write(2) where the kernel
/// takes it whole. Retries EINTR.
pub fn write_payload(w: &mut impl Write, peer: &str, payload: &[u8]) -> Result<()> {
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    w.write_all(&frame).map_err(|e| net_err("write", peer, &e))
}

/// Read one plain handshake message by `deadline`.
pub fn read_hello(s: &mut TcpStream, peer: &str, deadline: Instant) -> Result<Msg> {
    let p = read_payload(s, peer, MAX_HELLO, Some(deadline))?;
    match Msg::decode(&p) {
        Some(m) if m.is_handshake() => Ok(m),
        _ => Err(Error::data(
            "read",
            peer,
            format!(
                "a {}-byte frame that is not a pk-manager handshake message",
                p.len()
            ),
        )),
    }
}

/// A message of the wrong kind for this step: bad data.
pub fn unexpected(peer: &str, got: &Msg, want: &str) -> Error {
    Error::data(
        "read",
        peer,
        format!("got a {} message, expected {want}", got.name()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let msgs = [
            Msg::Hello([7; NONCE_LEN]),
            Msg::Nonce([8; NONCE_LEN]),
            Msg::ServerProof([9; TAG_LEN]),
            Msg::WorkerProof {
                pid: 42,
                tag: [6; TAG_LEN],
            },
            Msg::Denied,
            Msg::Mismatch,
            Msg::Welcome { lease_ms: 3000 },
            Msg::Get {
                queue: "tasks".into(),
                wait_ms: FOREVER,
            },
            Msg::Item {
                id: 3,
                body: b"3".to_vec(),
            },
            Msg::Empty,
            Msg::Done,
            Msg::Put {
                queue: "results".into(),
                settles: 3,
                wait_ms: 10,
                body: b"3 * 3 = 9".to_vec(),
            },
            Msg::Ok,
            Msg::Ack { id: 9 },
            Msg::Heartbeat,
            Msg::Wait,
            Msg::Close {
                queue: "tasks".into(),
            },
            Msg::Refused {
                why: "no queue".into(),
            },
            Msg::Stale,
            Msg::Full,
        ];
        for m in msgs {
            assert_eq!(Msg::decode(&m.encode()), Some(m.clone()), "{m:?}");
        }
    }

    #[test]
    fn malformed_messages_are_none() {
        let cases: &[&[u8]] = &[
            &[],
            &[99],
            &[16, 0],                               // Ok with a stray byte
            &[1, 0, 0],                             // short hello
            &[11, 0, 0, 0, 1, 3, b'a', b'/', b'c'], // a bad queue name
            &[11, 0, 0, 0, 1, 9, b'a'],             // name cut short
            &[17, 0, 0, 0],                         // short ack
        ];
        for c in cases {
            assert_eq!(Msg::decode(c), None, "{c:?}");
        }
        assert!(check_name("tasks").is_ok());
        for bad in ["", "a b", "a/b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_frame_cut_short_is_an_error_an_empty_stream_a_close() {
        use std::net::{TcpListener, TcpStream};
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        for (sent, kind) in [
            (&[][..], ErrorKind::PeerClosed),
            (&[0, 0, 0, 9, 1, 2][..], ErrorKind::Os),
        ] {
            let mut w = TcpStream::connect(addr).unwrap();
            let (mut r, _) = l.accept().unwrap();
            w.write_all(sent).unwrap();
            drop(w);
            let e = read_payload(&mut r, "peer", MAX_FRAME, None).unwrap_err();
            assert_eq!(e.kind(), kind, "{e}");
        }
    }
}
