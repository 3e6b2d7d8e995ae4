//! CPython's `multiprocessing.connection` on a TCP socket: its framing and
//! its authkey challenge, as CPython 3.11 and 3.12+ speak them.
//!
//! Framing: a 4-byte big-endian *signed* length, then the bytes; a length
//! of -1 is followed by an 8-byte length (for messages over 2 GiB). We read
//! nothing larger than the caller's limit.
//!
//! Challenge: the side that delivers it sends `#CHALLENGE#` and random
//! bytes; the other answers with an HMAC of those bytes under the authkey,
//! and hears `#WELCOME#` or `#FAILURE#`. CPython 3.11 and older send 20
//! bytes and answer with a bare 16-byte HMAC-MD5; 3.12+ send `{sha256}`
//! and 40 bytes and answer `{sha256}` and an HMAC-SHA256 over the whole
//! message, prefix included, and still accept the old answer. We send the
//! 3.12 form (a 3.11 peer answers it with HMAC-MD5 over all of it, which we
//! accept) and answer either. Digests are compared in constant time.
//!
//! A listener delivers its challenge first and then answers the client's;
//! a client answers first. That order is CPython's and cannot change
//! without breaking it: as a client, `pk-manager work --python` answers a
//! server that has proven nothing yet, as CPython's own clients do.

use std::io::Write;
use std::net::TcpStream;
use std::time::Instant;

use hmac::{Hmac, KeyInit, Mac};
use md5::Md5;
use sha2::Sha256;

use crate::error::{Error, ErrorKind, Result};
use crate::manager::auth::{Key, random};
use crate::manager::wire::{mid_message_err, net_err, read_exact_by};

const CHALLENGE: &[u8] = b"#CHALLENGE#";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";

/// The largest handshake message CPython reads (`recv_bytes(256)`).
pub const MAX_HANDSHAKE: usize = 256;

/// Read one message of at most `limit` bytes, by `deadline` (or with the
/// socket's own timeout).
pub fn recv(
    s: &mut TcpStream,
    peer: &str,
    limit: usize,
    deadline: Option<Instant>,
) -> Result<Vec<u8>> {
    let read = |s: &mut TcpStream, buf: &mut [u8]| match deadline {
        Some(d) => read_exact_by(s, buf, d),
        None => std::io::Read::read_exact(s, buf),
    };
    let mut head = [0u8; 4];
    read(s, &mut head).map_err(|e| net_err("read", peer, &e))?;
    // Past the header, an end of file is a peer gone mid-message.
    let cut = |e: std::io::Error| mid_message_err("read", peer, &e);
    let len: i64 = match i32::from_be_bytes(head) {
        -1 => {
            let mut long = [0u8; 8];
            read(s, &mut long).map_err(cut)?;
            i64::try_from(u64::from_be_bytes(long)).unwrap_or(i64::MAX)
        }
        n => i64::from(n),
    };
    if len < 0 || len as u64 > limit as u64 {
        return Err(Error::data(
            "read",
            peer,
            format!("a message of {len} bytes, the limit is {limit}"),
        ));
    }
    let mut body = vec![0u8; len as usize];
    read(s, &mut body).map_err(cut)?;
    Ok(body)
}

/// Send one message in one write.
pub fn send(s: &mut TcpStream, peer: &str, body: &[u8]) -> Result<()> {
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
    frame.extend_from_slice(body);
    s.write_all(&frame).map_err(|e| net_err("write", peer, &e))
}

fn md5(key: &Key, msg: &[u8]) -> Hmac<Md5> {
    let mut m = <Hmac<Md5> as KeyInit>::new_from_slice(key.bytes()).expect("HMAC takes any key");
    m.update(msg);
    m
}

fn sha256(key: &Key, msg: &[u8]) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key.bytes()).expect("HMAC takes any key");
    m.update(msg);
    m
}

/// The answer to challenge bytes `msg` (what follows `#CHALLENGE#`).
fn response(key: &Key, msg: &[u8], peer: &str) -> Result<Vec<u8>> {
    if msg.len() == 20 || msg.len() == 16 {
        return Ok(md5(key, msg).finalize().into_bytes().to_vec());
    }
    if let Some(rest) = msg.strip_prefix(b"{") {
        if let Some(end) = rest.iter().position(|&b| b == b'}') {
            let name = &rest[..end];
            return match name {
                b"sha256" => {
                    let mut out = b"{sha256}".to_vec();
                    out.extend_from_slice(&sha256(key, msg).finalize().into_bytes());
                    Ok(out)
                }
                b"md5" => {
                    let mut out = b"{md5}".to_vec();
                    out.extend_from_slice(&md5(key, msg).finalize().into_bytes());
                    Ok(out)
                }
                other => Err(Error::data(
                    "auth",
                    peer,
                    format!(
                        "a challenge for digest {:?}, which we do not speak",
                        String::from_utf8_lossy(other)
                    ),
                )),
            };
        }
    }
    Err(Error::data(
        "auth",
        peer,
        format!("a challenge of {} bytes in no known form", msg.len()),
    ))
}

/// Whether `answer` is right for challenge bytes `msg`, in constant time.
fn verify(key: &Key, msg: &[u8], answer: &[u8]) -> bool {
    if let Some(tag) = answer.strip_prefix(b"{sha256}") {
        return sha256(key, msg).verify_slice(tag).is_ok();
    }
    if let Some(tag) = answer.strip_prefix(b"{md5}") {
        return md5(key, msg).verify_slice(tag).is_ok();
    }
    answer.len() == 16 && md5(key, msg).verify_slice(answer).is_ok()
}

/// Challenge the peer; true when it answered right (it heard
/// `#WELCOME#`), false when it did not (it heard `#FAILURE#`).
pub fn deliver_challenge(
    s: &mut TcpStream,
    peer: &str,
    key: &Key,
    deadline: Option<Instant>,
) -> Result<bool> {
    let mut msg = b"{sha256}".to_vec();
    msg.extend_from_slice(&random(40)?);
    let mut out = CHALLENGE.to_vec();
    out.extend_from_slice(&msg);
    send(s, peer, &out)?;
    let answer = recv(s, peer, MAX_HANDSHAKE, deadline)?;
    let ok = verify(key, &msg, &answer);
    send(s, peer, if ok { WELCOME } else { FAILURE })?;
    Ok(ok)
}

/// Answer the peer's challenge; an error of kind
/// [`ErrorKind::PermissionDenied`] when it refuses the answer.
pub fn answer_challenge(
    s: &mut TcpStream,
    peer: &str,
    key: &Key,
    deadline: Option<Instant>,
) -> Result<()> {
    let msg = recv(s, peer, MAX_HANDSHAKE, deadline)?;
    let Some(challenge) = msg.strip_prefix(CHALLENGE) else {
        return Err(Error::data("auth", peer, "expected a #CHALLENGE# message"));
    };
    if challenge.len() < 16 {
        return Err(Error::data("auth", peer, "a challenge too short to be one"));
    }
    let answer = response(key, challenge, peer)?;
    send(s, peer, &answer)?;
    let verdict = recv(s, peer, MAX_HANDSHAKE, deadline)?;
    if verdict == WELCOME {
        Ok(())
    } else if verdict == FAILURE {
        Err(Error::new(
            ErrorKind::PermissionDenied,
            "auth",
            peer,
            "the python peer refused the authkey",
        ))
    } else {
        Err(Error::data("auth", peer, "expected #WELCOME# or #FAILURE#"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_both_challenge_forms() {
        let k = Key::new(b"abc".to_vec(), "k").unwrap();
        let legacy = [7u8; 20];
        let r = response(&k, &legacy, "t").unwrap();
        assert_eq!(r.len(), 16);
        assert!(verify(&k, &legacy, &r));
        let mut modern = b"{sha256}".to_vec();
        modern.extend_from_slice(&[9; 40]);
        let r = response(&k, &modern, "t").unwrap();
        assert!(r.starts_with(b"{sha256}") && r.len() == 8 + 32);
        assert!(verify(&k, &modern, &r));
        // A 3.11 peer answers the modern form with a bare HMAC-MD5 of it all.
        let bare = md5(&k, &modern).finalize().into_bytes().to_vec();
        assert!(verify(&k, &modern, &bare));
        let other = Key::new(b"abd".to_vec(), "k").unwrap();
        assert!(!verify(&other, &modern, &r));
        assert!(!verify(&k, &modern, &r[..20]));
        assert!(response(&k, b"{sha999}0123456789abcdefghij", "t").is_err());
        assert!(response(&k, &[1u8; 30], "t").is_err());
    }

    /// HMAC-MD5 as CPython computes it: `hmac.new(b'abc', bytes(range(20)), 'md5')`.
    #[test]
    fn hmac_md5_matches_cpython() {
        let k = Key::new(b"abc".to_vec(), "k").unwrap();
        let msg: Vec<u8> = (0..20).collect();
        let hex: String = md5(&k, &msg)
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, "1b373176a84c1b044d9ba09795b53791");
    }
}
