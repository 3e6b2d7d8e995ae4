//! The frames `pk-pool exec` and `pk-pool worker` exchange over ssh's
//! stdin and stdout, each one frame of [`crate::pipe`]'s codec (a 4-byte
//! length, then the payload). A payload starts with a tag byte; integers
//! are little-endian; a byte string is a u32 length and the bytes.
//!
//! master → worker:
//!   `H` hello: version u32, timeout ms u64 (0: none), kill-after ms u64
//!   `J` job: id u64, argc u32, argc byte strings
//!   `S` stop: end every job (TERM to its group, KILL after the grace)
//!   `B` bye: no more jobs; exit once the running ones are done
//! worker → master:
//!   `R` ready: version u32, CPU count u32
//!   `O` output: id u64, stream u8 (1 stdout, 2 stderr), the bytes
//!   `D` done: id u64, how u8 (0 exited, 1 killed by a signal, 2 could not
//!       start: 126, 3 not found: 127), code i32 (exit status, signal, or
//!       0), timed out u8, runtime µs u64, message byte string

use crate::error::{Error, Result};

/// The protocol version both sides must speak.
pub const VERSION: u32 = 1;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    Hello {
        version: u32,
        timeout_ms: u64,
        kill_after_ms: u64,
    },
    Job {
        id: u64,
        argv: Vec<Vec<u8>>,
    },
    Stop,
    Bye,
    Ready {
        version: u32,
        cpus: u32,
    },
    Output {
        id: u64,
        stream: u8,
        bytes: Vec<u8>,
    },
    Done(Done),
}

/// How a remote job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub id: u64,
    pub how: How,
    pub timed_out: bool,
    pub runtime_us: u64,
    pub message: Vec<u8>,
}

/// The end of a job, local or remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    Exited(u8),
    Signaled(i32),
    /// The command exists but cannot be executed (126).
    CannotRun,
    /// The command was not found (127).
    NotFound,
    /// Its host dropped while it ran (never sent: the master's verdict).
    Lost,
}

fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put_bytes(b: &mut Vec<u8>, v: &[u8]) {
    put_u32(b, u32::try_from(v.len()).unwrap_or(u32::MAX));
    b.extend_from_slice(v);
}

impl Msg {
    /// The payload of this frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(32);
        match self {
            Msg::Hello {
                version,
                timeout_ms,
                kill_after_ms,
            } => {
                b.push(b'H');
                put_u32(&mut b, *version);
                put_u64(&mut b, *timeout_ms);
                put_u64(&mut b, *kill_after_ms);
            }
            Msg::Job { id, argv } => {
                b.push(b'J');
                put_u64(&mut b, *id);
                put_u32(&mut b, argv.len() as u32);
                for a in argv {
                    put_bytes(&mut b, a);
                }
            }
            Msg::Stop => b.push(b'S'),
            Msg::Bye => b.push(b'B'),
            Msg::Ready { version, cpus } => {
                b.push(b'R');
                put_u32(&mut b, *version);
                put_u32(&mut b, *cpus);
            }
            Msg::Output { id, stream, bytes } => {
                b.push(b'O');
                put_u64(&mut b, *id);
                b.push(*stream);
                b.extend_from_slice(bytes);
            }
            Msg::Done(d) => {
                b.push(b'D');
                put_u64(&mut b, d.id);
                let (how, code) = match d.how {
                    How::Exited(c) => (0, i32::from(c)),
                    How::Signaled(s) => (1, s),
                    How::CannotRun => (2, 0),
                    How::NotFound => (3, 0),
                    How::Lost => (4, 0),
                };
                b.push(how);
                b.extend_from_slice(&code.to_le_bytes());
                b.push(u8::from(d.timed_out));
                put_u64(&mut b, d.runtime_us);
                put_bytes(&mut b, &d.message);
            }
        }
        b
    }

    /// Decode a payload; anything malformed is bad data from `peer`.
    pub fn decode(frame: &[u8], peer: &str) -> Result<Msg> {
        let mut r = Cursor { b: frame, at: 0 };
        let bad = |why: &str| Error::data("recv", peer, format!("bad frame: {why}"));
        let msg = match r.u8().ok_or_else(|| bad("empty"))? {
            b'H' => Msg::Hello {
                version: r.u32().ok_or_else(|| bad("hello"))?,
                timeout_ms: r.u64().ok_or_else(|| bad("hello"))?,
                kill_after_ms: r.u64().ok_or_else(|| bad("hello"))?,
            },
            b'J' => {
                let id = r.u64().ok_or_else(|| bad("job"))?;
                let argc = r.u32().ok_or_else(|| bad("job"))?;
                let mut argv = Vec::with_capacity(argc.min(4096) as usize);
                for _ in 0..argc {
                    argv.push(r.bytes().ok_or_else(|| bad("job argument"))?.to_vec());
                }
                Msg::Job { id, argv }
            }
            b'S' => Msg::Stop,
            b'B' => Msg::Bye,
            b'R' => Msg::Ready {
                version: r.u32().ok_or_else(|| bad("ready"))?,
                cpus: r.u32().ok_or_else(|| bad("ready"))?,
            },
            b'O' => {
                let id = r.u64().ok_or_else(|| bad("output"))?;
                let stream = r.u8().ok_or_else(|| bad("output"))?;
                let bytes = r.rest().to_vec();
                Msg::Output { id, stream, bytes }
            }
            b'D' => {
                let id = r.u64().ok_or_else(|| bad("done"))?;
                let how = r.u8().ok_or_else(|| bad("done"))?;
                let code = r.u32().ok_or_else(|| bad("done"))? as i32;
                let how = match how {
                    0 => How::Exited(u8::try_from(code).map_err(|_| bad("exit status"))?),
                    1 => How::Signaled(code),
                    2 => How::CannotRun,
                    3 => How::NotFound,
                    4 => How::Lost,
                    _ => return Err(bad("unknown end")),
                };
                let timed_out = r.u8().ok_or_else(|| bad("done"))? != 0;
                let runtime_us = r.u64().ok_or_else(|| bad("done"))?;
                let message = r.bytes().ok_or_else(|| bad("done"))?.to_vec();
                Msg::Done(Done {
                    id,
                    how,
                    timed_out,
                    runtime_us,
                    message,
                })
            }
            t => return Err(bad(&format!("unknown tag {t:#04x}"))),
        };
        if !r.rest().is_empty() && !matches!(msg, Msg::Output { .. }) {
            return Err(bad("trailing bytes"));
        }
        Ok(msg)
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn rest(&mut self) -> &'a [u8] {
        let s = &self.b[self.at.min(self.b.len())..];
        self.at = self.b.len();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips() {
        let msgs = [
            Msg::Hello {
                version: VERSION,
                timeout_ms: 1500,
                kill_after_ms: 2000,
            },
            Msg::Job {
                id: 7,
                argv: vec![b"echo".to_vec(), Vec::new(), b"a\0b".to_vec()],
            },
            Msg::Stop,
            Msg::Bye,
            Msg::Ready {
                version: VERSION,
                cpus: 8,
            },
            Msg::Output {
                id: 3,
                stream: 2,
                bytes: b"line\n".to_vec(),
            },
            Msg::Done(Done {
                id: 9,
                how: How::Signaled(15),
                timed_out: true,
                runtime_us: 12345,
                message: b"x".to_vec(),
            }),
            Msg::Done(Done {
                id: 10,
                how: How::Exited(3),
                timed_out: false,
                runtime_us: 1,
                message: Vec::new(),
            }),
        ];
        for m in msgs {
            assert_eq!(Msg::decode(&m.encode(), "peer").unwrap(), m);
        }
    }

    #[test]
    fn malformed_frames_are_bad_data() {
        for frame in [
            &b""[..],
            b"Z",
            b"J\x01",
            b"J\x01\0\0\0\0\0\0\0\x01\0\0\0\xff\0\0\0",
            b"D\x01\0\0\0\0\0\0\0\x09",
            b"S!",
        ] {
            let e = Msg::decode(frame, "host").unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::BadData, "{frame:?}");
            assert!(e.to_string().starts_with("recv(host): bad frame"), "{e}");
        }
    }
}
