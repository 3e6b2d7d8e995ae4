//! pk-manager against hostile peers: garbage, oversized frames, slowloris
//! floods, descriptor exhaustion, replayed handshakes and frames.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use posixkit::manager::auth::{Direction, Key, Seal, Side, nonce, proof};
use posixkit::manager::wire::{FOREVER, MAX_FRAME, Msg, read_payload, write_payload};

use crate::common::*;
use crate::manager::{KEY, assert_all_results, finish, serve, worker};

/// Send `bytes` (ignoring a reset while sending) and wait, bounded, for the
/// server to close the connection.
fn send_and_expect_close(addr: &str, bytes: &[u8]) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(bytes);
    let deadline = Instant::now() + TIMEOUT;
    let mut buf = [0u8; 512];
    loop {
        assert!(Instant::now() < deadline, "server kept the connection open");
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue, // the hello, a proof
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("expected a close after {} bytes, got {e}", bytes.len()),
        }
    }
}

/// A hand-made worker's handshake: the stream, its two seals, and the
/// plain payloads it sent (to replay).
fn handshake(addr: &str, pid: u32) -> (TcpStream, Seal, Seal, Vec<Vec<u8>>) {
    let key = Key::new(KEY.as_bytes(), "test").unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let Some(Msg::Hello(ns)) = Msg::decode(&read_payload(&mut s, "server", 256, None).unwrap())
    else {
        panic!("no hello")
    };
    let nw = nonce().unwrap();
    let mut sent = vec![Msg::Nonce(nw).encode()];
    write_payload(&mut s, "server", &sent[0]).unwrap();
    let Some(Msg::ServerProof(_)) =
        Msg::decode(&read_payload(&mut s, "server", 256, None).unwrap())
    else {
        panic!("no proof")
    };
    sent.push(
        Msg::WorkerProof {
            pid,
            tag: proof(&key, Side::Worker, &ns, &nw, pid),
        }
        .encode(),
    );
    write_payload(&mut s, "server", &sent[1]).unwrap();
    let mut open = Seal::new(&key, &ns, &nw, Direction::ToWorker);
    let welcome = read_payload(&mut s, "server", MAX_FRAME, None).unwrap();
    assert!(matches!(
        Msg::decode(open.open(&welcome, "server").unwrap()),
        Some(Msg::Welcome { .. })
    ));
    (
        s,
        Seal::new(&key, &ns, &nw, Direction::ToServer),
        open,
        sent,
    )
}

fn get_frame(send: &mut Seal) -> Vec<u8> {
    let payload = send.seal(
        &Msg::Get {
            queue: "tasks".into(),
            wait_ms: FOREVER,
        }
        .encode(),
    );
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&payload);
    frame
}

#[test]
fn garbage_clients_are_closed_and_the_server_keeps_serving() {
    let (mut server, addr) = serve(&["--tasks", "3"]);
    // Random bytes (a fixed xorshift stream, so a failure reproduces).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let random: Vec<u8> = (0..65536)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    send_and_expect_close(&addr, &random);
    // Oversized frames: only the length is ever read. Before the key is
    // proven, 256 bytes is the limit.
    send_and_expect_close(&addr, &[0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
    send_and_expect_close(&addr, &[0, 0, 1, 1]);
    // A frame within the limit that is no message, and an empty frame.
    send_and_expect_close(&addr, &[0, 0, 0, 3, 99, 1, 2]);
    send_and_expect_close(&addr, &[0, 0, 0, 0]);
    // A worker's proof where its nonce belongs.
    let mut early = vec![0, 0, 0, 37, 4, 0, 0, 0, 1];
    early.extend_from_slice(&[0xab; 32]);
    send_and_expect_close(&addr, &early);
    drop(TcpStream::connect(&addr).unwrap());

    let good = worker(&addr, &[]);
    assert_success(&good);
    let (lines, results) = finish(&mut server, 3);
    assert_all_results(&results, 3);
    let closed: Vec<&String> = lines.iter().filter(|l| l.starts_with("closed ")).collect();
    for needle in [
        "a frame of 4294967295 bytes, the limit is 1..=256",
        "a frame of 257 bytes, the limit is 1..=256",
        "not a pk-manager handshake message",
        "got a worker proof message, expected a nonce",
    ] {
        assert!(
            closed.iter().any(|l| l.contains(needle)),
            "{needle}: {lines:#?}"
        );
    }
}

#[test]
fn a_slowloris_flood_never_keeps_a_real_worker_out() {
    let (mut server, addr) = serve(&[
        "--tasks",
        "2",
        "--handshake-timeout",
        "2s",
        "--max-unauthenticated",
        "32",
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let (ready, flooding) = std::sync::mpsc::channel();
    let flood = {
        let (addr, stop) = (addr.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            // 160 connections, each sending one byte of a valid-looking
            // frame every 300 ms, for at most 20 s; reconnect when dropped.
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut conns: Vec<TcpStream> = (0..160)
                .filter_map(|_| TcpStream::connect(&addr).ok())
                .collect();
            let mut sent = 0usize;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                for c in conns.iter_mut() {
                    if c.write_all(&[0]).is_err() {
                        if let Ok(n) = TcpStream::connect(&addr) {
                            *c = n;
                        }
                    }
                    sent += 1;
                }
                let _ = ready.send(());
                std::thread::sleep(Duration::from_millis(300));
            }
            sent
        })
    };
    // Two rounds of the flood before the real worker comes.
    flooding.recv().unwrap();
    flooding.recv().unwrap();
    let good = worker(&addr, &[]);
    stop.store(true, Ordering::Relaxed);
    assert_success(&good);
    assert!(flood.join().unwrap() >= 320);
    let (lines, results) = finish(&mut server, 2);
    assert_all_results(&results, 2);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("dropped ")
                && l.ends_with(": too many unauthenticated connections")),
        "{lines:#?}"
    );
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn out_of_descriptors_the_server_backs_off_instead_of_spinning() {
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: prlimit is not installed");
        return;
    }
    let mut cmd = std::process::Command::new("prlimit");
    cmd.args(["--nofile=32:32", "--"])
        .arg(bin("pk-manager"))
        .args([
            "serve",
            "--tasks",
            "2",
            "--handshake-timeout",
            "30s",
            "--max-unauthenticated",
            "1000",
            "--timeout",
            "50s",
        ])
        .env("PK_AUTHKEY", KEY)
        .stdin(std::process::Stdio::null())
        .process_group(0);
    use std::os::unix::process::CommandExt;
    let mut server = Running::start(cmd, false);
    let seen = server.wait_for(|l| l.starts_with("listening on "));
    let addr = seen
        .last()
        .unwrap()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    let idle: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    server
        .wait_for(|l| l.starts_with("accept: accept(listener): Too many open files; backing off"));
    let pid = server.child.id();
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pid) - before;
    // A spinning accept loop burns about a second of CPU per second.
    assert!(
        used < 30,
        "{used} ticks of CPU in 1 s while out of descriptors"
    );
    drop(idle);
    let good = worker(&addr, &[]);
    assert_success(&good);
    let (_, results) = finish(&mut server, 2);
    assert_all_results(&results, 2);
}

#[test]
fn a_replayed_handshake_is_refused() {
    let (mut server, addr) = serve(&["--tasks", "1"]);
    let (first, _, _, sent) = handshake(&addr, 4242);
    drop(first);
    // The same nonce and proof on a new connection: the server's nonce is
    // new, so the recorded proof is wrong.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    read_payload(&mut s, "server", 256, None).unwrap();
    write_payload(&mut s, "server", &sent[0]).unwrap();
    read_payload(&mut s, "server", 256, None).unwrap();
    write_payload(&mut s, "server", &sent[1]).unwrap();
    assert_eq!(
        Msg::decode(&read_payload(&mut s, "server", 256, None).unwrap()),
        Some(Msg::Denied)
    );
    let seen = server.wait_for(|l| l.starts_with("refused "));
    assert!(
        seen.last().unwrap().ends_with(": wrong authkey"),
        "{seen:#?}"
    );
    assert_success(&worker(&addr, &[]));
    finish(&mut server, 1);
}

#[test]
fn replayed_altered_and_foreign_frames_close_the_connection() {
    let (mut server, addr) = serve(&["--tasks", "3"]);
    // Replayed: the same sealed get twice. The first takes task 1; the
    // second fails its MAC (wrong sequence number) and the task goes back.
    let (mut s, mut send, _, _) = handshake(&addr, 7);
    let get = get_frame(&mut send);
    s.write_all(&get).unwrap();
    read_payload(&mut s, "server", MAX_FRAME, None).unwrap();
    s.write_all(&get).unwrap();
    let seen = server.wait_for(|l| l.starts_with("closed ") && l.contains("(pid 7)"));
    assert!(
        seen.last()
            .unwrap()
            .contains("a frame whose MAC does not match"),
        "{seen:#?}"
    );
    assert!(
        seen.iter()
            .any(|l| l.starts_with("requeued task 1: ") && l.contains("(pid 7)")),
        "{seen:#?}"
    );
    // Altered: one bit of the message flipped.
    let (mut s, mut send, _, _) = handshake(&addr, 8);
    let mut get = get_frame(&mut send);
    get[5] ^= 1;
    s.write_all(&get).unwrap();
    let seen = server.wait_for(|l| l.starts_with("closed ") && l.contains("(pid 8)"));
    assert!(
        seen.last().unwrap().contains("MAC does not match"),
        "{seen:#?}"
    );
    // Foreign: a frame sealed for one connection sent on another.
    let (a, mut send_a, _, _) = handshake(&addr, 9);
    let (mut b, _, _, _) = handshake(&addr, 10);
    b.write_all(&get_frame(&mut send_a)).unwrap();
    let seen = server.wait_for(|l| l.starts_with("closed ") && l.contains("(pid 10)"));
    assert!(
        seen.last().unwrap().contains("MAC does not match"),
        "{seen:#?}"
    );
    drop(a);
    // Well sealed, but garbage inside: closed too, its task requeued.
    let (mut c, mut send_c, _, _) = handshake(&addr, 11);
    c.write_all(&get_frame(&mut send_c)).unwrap();
    read_payload(&mut c, "server", MAX_FRAME, None).unwrap();
    let junk = send_c.seal(&[0xde, 0xad]);
    write_payload(&mut c, "server", &junk).unwrap();
    let seen = server.wait_for(|l| l.starts_with("closed ") && l.contains("(pid 11)"));
    assert!(
        seen.last().unwrap().contains("not a pk-manager message"),
        "{seen:#?}"
    );
    assert!(
        seen.iter()
            .any(|l| l.starts_with("requeued task ") && l.contains("(pid 11)")),
        "{seen:#?}"
    );

    let good = worker(&addr, &[]);
    assert_success(&good);
    let (_, results) = finish(&mut server, 3);
    assert_all_results(&results, 3);
}

#[test]
fn a_server_that_does_not_know_the_key_gets_no_proof() {
    // A fake server: a hello, then a made-up proof. The worker must not
    // answer with a proof of its own.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let fake = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut hello = vec![0, 0, 0, 33, 1];
        hello.extend_from_slice(&[7; 32]);
        s.write_all(&hello).unwrap();
        let mut nonce = [0u8; 4 + 33];
        s.read_exact(&mut nonce).unwrap();
        assert_eq!(&nonce[..5], &[0, 0, 0, 33, 2]);
        let mut proof = vec![0, 0, 0, 33, 3];
        proof.extend_from_slice(&[0; 32]);
        s.write_all(&proof).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        rest
    });
    let out = worker(&addr, &[]);
    assert_one_line_error(&out, "manager", 77);
    assert!(out.stdout.is_empty());
    // All the fake server got after the nonce: "mismatch", no proof.
    assert_eq!(fake.join().unwrap(), [0, 0, 0, 1, 6]);
}

/// A worker SIGKILLed at each of its writes in turn (its handshake, its
/// gets, its results): every kill leaves the server whole, and a clean
/// worker afterwards finds every task that was not counted; each result
/// is counted exactly once.
#[test]
fn a_worker_killed_at_each_write_loses_and_duplicates_nothing() {
    if strace_missing() {
        return;
    }
    // Enough tasks that the killed workers (which finish a few before
    // their kill) leave work for the last one.
    let (mut server, addr) = serve(&["--tasks", "20"]);
    // Writes of a worker: nonce, proof, then get / result pairs.
    for n in 1..=8 {
        let inject = format!("inject=sendto:signal=SIGKILL:when={n}");
        let mut cmd = std::process::Command::new("strace");
        cmd.args(["-f", "-o", "/dev/null", "-e", "trace=sendto", "-e", &inject])
            .arg(bin("pk-manager"))
            .args(["work", "--connect", &addr])
            .env("PK_AUTHKEY", KEY);
        let out = assert_cmd::Command::from_std(cmd)
            .timeout(TIMEOUT)
            .output()
            .unwrap();
        assert_ne!(out.status.code(), Some(0), "kill at write {n}: {out:?}");
    }
    let good = worker(&addr, &[]);
    assert_success(&good);
    let (lines, results) = finish(&mut server, 20);
    assert_all_results(&results, 20);
    // Every counted result appears once among the result lines.
    for id in 1..=20 {
        let counted = lines
            .iter()
            .filter(|l| l.starts_with(&format!("result {id} from ")))
            .count();
        assert_eq!(counted, 1, "task {id}: {lines:#?}");
    }
    assert!(
        lines.iter().any(|l| l.starts_with("requeued task ")),
        "{lines:#?}"
    );
}

/// A server that knows the key, hands out task `5` for every get, and
/// answers every put with `full`, whatever its wait: not the protocol for
/// a put with no time limit. Its address.
fn server_that_is_always_full() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let key = Key::new(KEY.as_bytes(), "test").unwrap();
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let ns = nonce().unwrap();
        write_payload(&mut s, "w", &Msg::Hello(ns).encode()).unwrap();
        let Some(Msg::Nonce(nw)) = Msg::decode(&read_payload(&mut s, "w", 256, None).unwrap())
        else {
            panic!("no nonce")
        };
        let tag = proof(&key, Side::Server, &ns, &nw, 0);
        write_payload(&mut s, "w", &Msg::ServerProof(tag).encode()).unwrap();
        read_payload(&mut s, "w", 256, None).unwrap();
        let mut send = Seal::new(&key, &ns, &nw, Direction::ToWorker);
        let mut open = Seal::new(&key, &ns, &nw, Direction::ToServer);
        let mut reply = |s: &mut TcpStream, m: Msg| {
            write_payload(s, "w", &send.seal(&m.encode())).unwrap();
        };
        reply(&mut s, Msg::Welcome { lease_ms: 30_000 });
        while let Ok(p) = read_payload(&mut s, "w", MAX_FRAME, None) {
            match Msg::decode(open.open(&p, "w").unwrap()) {
                Some(Msg::Get { .. }) => reply(
                    &mut s,
                    Msg::Item {
                        id: 1,
                        body: b"5".to_vec(),
                    },
                ),
                Some(Msg::Put { .. }) => reply(&mut s, Msg::Full),
                _ => {}
            }
        }
    });
    addr
}

#[test]
fn a_server_that_answers_full_to_a_put_without_a_limit_is_bad_data_not_a_panic() {
    let out = worker(&server_that_is_always_full(), &[]);
    assert_one_line_error(&out, "manager", 65);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'full' to a put with no time limit"), "{err}");
}
