//! Keys, proofs and sealed frames.
//!
//! ## The handshake
//!
//! 1. The server sends [`Msg::Hello`](super::wire::Msg::Hello) with a fresh 32-byte nonce `Ns`
//!    (getrandom(2)).
//! 2. The worker answers with a nonce of its own, `Nw`, and nothing else:
//!    it has proven nothing yet.
//! 3. The server proves it holds the key: `HMAC-SHA256(key, "pk-manager
//!    server v2\0" || Ns || Nw)`. A fake server cannot, and the worker
//!    hangs up having shown nothing that depends on the key: a fake server
//!    learns nothing with which to guess the key offline.
//! 4. The worker checks it in constant time and proves itself in turn,
//!    `HMAC-SHA256(key, "pk-manager worker v2\0" || Ns || Nw || pid)`; the
//!    server checks it in constant time and answers `Denied`, or a sealed
//!    `Welcome`.
//!
//! Fresh nonces on both sides make a recorded handshake worthless (its
//! proofs are over other nonces), and the two contexts differ, so a proof
//! cannot be reflected back as the other side's. What no challenge-response
//! over a shared key can avoid is that whoever proves first gives the other
//! side something to test guesses against: here that is the server, so a
//! client that connects can test guesses of a weak key offline against the
//! server's proof. Use a long random key (`head -c 32 /dev/urandom | base64`
//! in a file of mode 0600).
//!
//! ## Sealed frames
//!
//! After the handshake both sides hold a session key, `HMAC-SHA256(key,
//! "pk-manager session v2\0" || Ns || Nw)`, and every frame is the message
//! followed by `HMAC-SHA256(session, direction || sequence || message)`:
//! the direction byte keeps one side's frames from being reflected to it,
//! the 64-bit sequence number (counted by each receiver, never sent) makes
//! a replayed, dropped or reordered frame fail, and the session key ties
//! every frame to its connection. A frame whose MAC does not match closes
//! the connection.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::wire::{NONCE_LEN, TAG_LEN};
use crate::error::{Error, ErrorKind, Result};

/// The longest auth key accepted, in bytes.
pub const MAX_KEY: usize = 1024;

/// A shared secret. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(Vec<u8>);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({} bytes)", self.0.len())
    }
}

impl Key {
    /// A key of 1 to [`MAX_KEY`] bytes; `source` names it in the error.
    pub fn new(bytes: impl Into<Vec<u8>>, source: &str) -> Result<Key> {
        let bytes = bytes.into();
        if bytes.is_empty() || bytes.len() > MAX_KEY {
            return Err(Error::invalid(
                source.to_string(),
                format!("the key must be 1 to {MAX_KEY} bytes long"),
            ));
        }
        Ok(Key(bytes))
    }

    /// The key in `path`, with one trailing newline removed (`echo key >
    /// file` makes the key `key`). Refused when the file's group or
    /// others may read or write it (kind [`ErrorKind::PermissionDenied`]),
    /// as ssh refuses a private key file anyone else can read.
    ///
    /// The file is opened with `O_NONBLOCK | O_NOFOLLOW`, then checked with
    /// fstat(2) before a byte is read: a FIFO, a device, a directory or a
    /// symbolic link is refused at once ([`ErrorKind::InvalidInput`]),
    /// never waited on.
    pub fn from_file(path: &Path) -> Result<Key> {
        use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
        let shown = path.display();
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path);
        let mut f = match opened {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    "open",
                    &shown,
                    "a symbolic link (the key file is opened with O_NOFOLLOW): name the file itself",
                ));
            }
            Err(e) => return Err(Error::io("open", &shown, &e)),
        };
        let meta = f.metadata().map_err(|e| Error::io("fstat", &shown, &e))?;
        if !meta.is_file() {
            let t = meta.file_type();
            let what = if t.is_fifo() {
                "a FIFO"
            } else if t.is_dir() {
                "a directory"
            } else if t.is_socket() {
                "a socket"
            } else {
                "a device"
            };
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "open",
                &shown,
                format!("{what}, not a regular file"),
            ));
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                "open",
                &shown,
                format!("group or others may read it (mode {mode:04o}); chmod 600 it"),
            ));
        }
        let mut bytes = Vec::new();
        f.by_ref()
            .take(MAX_KEY as u64 + 3)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io("read", &shown, &e))?;
        if bytes.ends_with(b"\n") {
            bytes.pop();
            if bytes.ends_with(b"\r") {
                bytes.pop();
            }
        }
        Key::new(bytes, "--authkey-file")
    }

    /// The key's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// 32 random bytes from getrandom(2).
pub fn nonce() -> Result<[u8; NONCE_LEN]> {
    let mut b = [0u8; NONCE_LEN];
    getrandom::fill(&mut b).map_err(|e| Error::getrandom("nonce", e))?;
    Ok(b)
}

/// Random bytes from getrandom(2).
pub fn random(n: usize) -> Result<Vec<u8>> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| Error::getrandom("nonce", e))?;
    Ok(b)
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut m =
        <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes a key of any length");
    for p in parts {
        m.update(p);
    }
    m
}

/// Whose proof a tag is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The server's proof (sent first).
    Server,
    /// The worker's proof (sent only after the server's checked out).
    Worker,
}

fn proof_mac(
    key: &Key,
    side: Side,
    ns: &[u8; NONCE_LEN],
    nw: &[u8; NONCE_LEN],
    pid: u32,
) -> HmacSha256 {
    match side {
        Side::Server => hmac(&key.0, &[b"pk-manager server v2\0", ns, nw]),
        Side::Worker => hmac(
            &key.0,
            &[b"pk-manager worker v2\0", ns, nw, &pid.to_be_bytes()],
        ),
    }
}

/// The proof `side` sends for the nonces `ns` (server's) and `nw`
/// (worker's); `pid` is covered by the worker's proof only.
pub fn proof(
    key: &Key,
    side: Side,
    ns: &[u8; NONCE_LEN],
    nw: &[u8; NONCE_LEN],
    pid: u32,
) -> [u8; TAG_LEN] {
    proof_mac(key, side, ns, nw, pid)
        .finalize()
        .into_bytes()
        .into()
}

/// Whether `tag` is `side`'s proof, compared in constant time.
pub fn verify(
    key: &Key,
    side: Side,
    ns: &[u8; NONCE_LEN],
    nw: &[u8; NONCE_LEN],
    pid: u32,
    tag: &[u8],
) -> bool {
    proof_mac(key, side, ns, nw, pid).verify_slice(tag).is_ok()
}

/// Which way a sealed frame travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Server to worker.
    ToWorker = 0,
    /// Worker to server.
    ToServer = 1,
}

/// One direction of a sealed connection: the session key and the next
/// sequence number. A connection has two, one to seal what it sends and
/// one to open what it receives.
#[derive(Clone)]
pub struct Seal {
    mac: HmacSha256,
    dir: Direction,
    seq: u64,
}

impl fmt::Debug for Seal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Seal({:?}, seq {})", self.dir, self.seq)
    }
}

impl Seal {
    /// The seal for frames going `dir`, under the session key of this
    /// handshake.
    pub fn new(key: &Key, ns: &[u8; NONCE_LEN], nw: &[u8; NONCE_LEN], dir: Direction) -> Seal {
        let session: [u8; 32] = hmac(&key.0, &[b"pk-manager session v2\0", ns, nw])
            .finalize()
            .into_bytes()
            .into();
        Seal {
            mac: hmac(&session, &[]),
            dir,
            seq: 0,
        }
    }

    fn tag(&self, body: &[u8]) -> HmacSha256 {
        let mut m = self.mac.clone();
        m.update(&[self.dir as u8]);
        m.update(&self.seq.to_be_bytes());
        m.update(body);
        m
    }

    /// `body` followed by its MAC; the sequence number moves on.
    pub fn seal(&mut self, body: &[u8]) -> Vec<u8> {
        let tag = self.tag(body).finalize().into_bytes();
        self.seq += 1;
        let mut out = Vec::with_capacity(body.len() + TAG_LEN);
        out.extend_from_slice(body);
        out.extend_from_slice(&tag);
        out
    }

    /// The message inside a sealed payload, when its MAC is the next one
    /// expected (compared in constant time); bad data otherwise.
    pub fn open<'a>(&mut self, payload: &'a [u8], peer: &str) -> Result<&'a [u8]> {
        let bad = || {
            Error::data(
                "read",
                peer,
                "a frame whose MAC does not match (altered, replayed or out of order)",
            )
        };
        if payload.len() < TAG_LEN + 1 {
            return Err(bad());
        }
        let (body, tag) = payload.split_at(payload.len() - TAG_LEN);
        self.tag(body).verify_slice(tag).map_err(|_| bad())?;
        self.seq += 1;
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_verify_only_with_the_key_nonces_and_side() {
        let k = Key::new(b"secret".to_vec(), "k").unwrap();
        let other = Key::new(b"Secret".to_vec(), "k").unwrap();
        let (ns, nw) = (nonce().unwrap(), nonce().unwrap());
        let t = proof(&k, Side::Server, &ns, &nw, 0);
        assert!(verify(&k, Side::Server, &ns, &nw, 0, &t));
        assert!(!verify(&other, Side::Server, &ns, &nw, 0, &t));
        assert!(!verify(&k, Side::Server, &nw, &ns, 0, &t), "nonces swapped");
        assert!(!verify(&k, Side::Worker, &ns, &nw, 0, &t), "reflected");
        assert!(!verify(&k, Side::Server, &ns, &nw, 0, &t[..31]));
        let w = proof(&k, Side::Worker, &ns, &nw, 7);
        assert!(verify(&k, Side::Worker, &ns, &nw, 7, &w));
        assert!(!verify(&k, Side::Worker, &ns, &nw, 8, &w), "pid is covered");
    }

    #[test]
    fn sealed_frames_refuse_replay_alteration_and_reflection() {
        let k = Key::new(b"k".to_vec(), "k").unwrap();
        let (ns, nw) = ([1; 32], [2; 32]);
        let mut send = Seal::new(&k, &ns, &nw, Direction::ToServer);
        let mut recv = Seal::new(&k, &ns, &nw, Direction::ToServer);
        let a = send.seal(b"first");
        let b = send.seal(b"second");
        assert_eq!(
            recv.clone().open(&b, "t").unwrap_err().kind(),
            ErrorKind::BadData,
            "out of order"
        );
        assert_eq!(recv.open(&a, "t").unwrap(), b"first");
        assert!(recv.clone().open(&a, "t").is_err(), "replayed");
        let mut altered = b.clone();
        altered[0] ^= 1;
        assert!(recv.clone().open(&altered, "t").is_err(), "altered");
        assert_eq!(recv.open(&b, "t").unwrap(), b"second");
        // The other direction, another session: neither opens.
        let mut back = Seal::new(&k, &ns, &nw, Direction::ToWorker);
        assert!(back.clone().open(&a, "t").is_err(), "reflected");
        let mut other = Seal::new(&k, &ns, &[3; 32], Direction::ToServer);
        assert!(other.open(&a, "t").is_err(), "another connection's frame");
        assert!(back.open(b"short", "t").is_err());
    }

    #[test]
    fn key_files_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, "s3cret\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Key::from_file(&p).unwrap().bytes(), b"s3cret");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = Key::from_file(&p).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
        assert!(e.to_string().contains("mode 0640"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
        std::fs::write(&p, "").unwrap_or(());
        assert_eq!(
            Key::from_file(&dir.path().join("none")).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert!(format!("{:?}", Key::new(b"s3cret".to_vec(), "k").unwrap()).contains("6 bytes"));
    }

    #[test]
    fn a_key_file_that_is_no_regular_file_is_refused_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        // A FIFO no one writes: opening it for reading would wait for ever.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(
            &fifo,
            nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
        )
        .unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
        for (path, why) in [
            (fifo, "a FIFO, not a regular file"),
            (dir.path().to_path_buf(), "a directory, not a regular file"),
            ("/dev/null".into(), "a device, not a regular file"),
            (link, "a symbolic link"),
        ] {
            let e = Key::from_file(&path).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
            assert!(e.to_string().contains(why), "{e}");
        }
    }
}
