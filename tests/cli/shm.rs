//! pk-shm: a shared byte array and a shared counter across fork.

use crate::common::*;

fn counter(args: &[&str]) -> (u64, u64, u64) {
    let out = pk("shm")
        .arg("counter")
        .args(args)
        .arg("--quiet")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    let line = text.lines().next().expect("a result line");
    let field = |k: &str| -> u64 {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {line:?}"))
    };
    let (e, g, l) = (field("expected="), field("got="), field("lost="));
    assert_eq!(e, g + l, "{line}");
    (e, g, l)
}

#[test]
fn bytes_changed_by_the_child_are_seen_by_the_parent() {
    let check = ShmCheck::start();
    let out = pk("shm").arg("bytes").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 10, "{text}");
    let parent = pid_after(lines[0], "parent ").unwrap();
    assert_eq!(
        lines[0],
        format!("parent {parent}: array=b'Hello' (5 bytes, memfd mapped MAP_SHARED)")
    );
    let child = pid_after(lines[1], "child ").unwrap();
    assert_ne!(child, parent);
    let bytes: Vec<String> = lines[1..6]
        .iter()
        .map(|l| l.split(": ").nth(1).unwrap().to_string())
        .collect();
    assert_eq!(
        bytes,
        [
            "arr[0]=72 'H'",
            "arr[1]=101 'e'",
            "arr[2]=108 'l'",
            "arr[3]=108 'l'",
            "arr[4]=111 'o'"
        ]
    );
    assert_eq!(lines[6], format!("child {child}: set arr[0]=104 'h'"));
    assert_eq!(lines[7], format!("child {child} exited, status=0"));
    assert_eq!(lines[8], format!("parent {parent}: array=b'hello'"));
    assert_eq!(lines[9], "value=hello");
    assert!(out.stderr.is_empty());
    assert!(leftovers(&[child]).is_empty());
    check.finish();
}

#[test]
fn bytes_with_other_text_and_quiet() {
    let out = pk("shm")
        .args(["bytes", "--text", "WORLD!", "-q"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "value=wORLD!\n");
    // Non-ASCII and control bytes are shown escaped, one byte at a time.
    let out = pk("shm").args(["bytes", "--text", "é\t"]).output().unwrap();
    let text = stdout(&out);
    assert!(text.contains("array=b'\\xc3\\xa9\\t'"), "{text}");
    assert!(text.ends_with("value=\\xc3\\xa9\\t\n"), "{text}");
}

#[test]
fn lock_and_atomic_never_lose_an_update() {
    let check = ShmCheck::start();
    for sync in ["lock", "atomic"] {
        for extra in [&[][..], &["--yield"][..]] {
            let mut args = vec!["--procs", "10", "--iters", "50", "--sync", sync];
            args.extend_from_slice(extra);
            assert_eq!(counter(&args), (500, 500, 0), "{args:?}");
        }
        let args = ["--procs", "4", "--iters", "20000", "--sync", sync];
        assert_eq!(counter(&args), (80_000, 80_000, 0), "{args:?}");
    }
    check.finish();
}

#[test]
fn no_sync_with_yield_loses_updates_every_time() {
    // Ten processes, released together, each load; yield; store. Another
    // process runs between the load and the store, and its update is lost.
    for _ in 0..5 {
        let (e, g, l) = counter(&[
            "--procs", "10", "--iters", "50", "--sync", "none", "--yield",
        ]);
        assert_eq!(e, 500);
        assert!(l > 0 && g < 500, "no update lost: got={g}");
    }
}

#[test]
fn a_lock_around_each_access_still_loses_updates() {
    // Python's `v.value += 1` on `Value('i', 0)` (lock=True by default):
    // the get and the set are each locked, the increment is not. Another
    // process stores between them (the yield makes sure one runs there).
    for _ in 0..5 {
        let (e, g, l) = counter(&[
            "--procs",
            "10",
            "--iters",
            "50",
            "--sync",
            "lock-each",
            "--yield",
        ]);
        assert_eq!(e, 500);
        assert!(l > 0 && g < 500, "no update lost: got={g}");
    }
    // One lock around the whole increment, with the same yield inside it,
    // loses nothing.
    let args = [
        "--procs", "10", "--iters", "50", "--sync", "lock", "--yield",
    ];
    assert_eq!(counter(&args), (500, 500, 0));
}

#[test]
fn the_full_output_names_the_setup() {
    let out = pk("shm")
        .args(["counter", "-n", "2", "-i", "5", "--sync", "atomic"])
        .output()
        .unwrap();
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].ends_with(": 2 processes x 5 increments, sync=atomic"),
        "{text}"
    );
    assert_eq!(lines[1], "expected=10 got=10 lost=0");
    assert!(
        lines[2].starts_with("elapsed=") && lines[2].contains(" ns_per_op="),
        "{text}"
    );
}

#[test]
fn bad_input_is_a_one_line_usage_error() {
    // No subcommand: clap prints the help on stderr, exit 2.
    assert_eq!(pk("shm").output().unwrap().status.code(), Some(2));
    let table: &[&[&str]] = &[
        &["nope"],
        &["bytes", "--text", ""],
        &["bytes", "--text", &"x".repeat(4097)],
        &["bytes", "extra"],
        &["counter", "--procs", "0"],
        &["counter", "--procs", "-1"],
        &["counter", "--procs", "1025"],
        &["counter", "--procs", "abc"],
        &["counter", "--iters", "0"],
        &["counter", "--iters", "100000001"],
        &["counter", "--iters", "99999999999999999999999"],
        &["counter", "--sync", "maybe"],
        &["counter", "--sync"],
        &["counter", "--bogus"],
    ];
    assert_usage_table("shm", table);
}

#[test]
fn help_documents_flags_and_output_lines() {
    assert_help(
        "shm",
        &[],
        &[
            "bytes",
            "counter",
            "--quiet",
            "value=hello",
            "expected=<N*M> got=<count> lost=",
            "Exit status",
        ],
    );
    assert_help(
        "shm",
        &["counter"],
        &[
            "--procs",
            "--iters",
            "--sync",
            "--yield",
            "lock-each",
            "Value('i', 0)",
        ],
    );
    assert_help(
        "shm",
        &[],
        &["lock-each", "v.value += 1", "with v.get_lock():"],
    );
    assert_help(
        "shm",
        &[],
        &[
            "create",
            "read",
            "write",
            "add",
            "get",
            "set",
            "cas",
            "unlink",
            "posix_fallocate",
            "SIGBUS",
            "'<q'",
            "mode 0600",
            "SharedMemory",
            "65",
            "66",
            "77",
            "141 when stdout closed early",
        ],
    );
    assert_help("shm", &["create"], &["--size"]);
    assert_help("shm", &["read"], &["--offset", "--len"]);
    assert_help("shm", &["write"], &["--offset", "DATA", "stdin"]);
    assert_help("shm", &["add"], &["--offset", "--by"]);
    assert_help("shm", &["cas"], &["EXPECTED", "NEW"]);
}

#[test]
fn closed_stdout_exits_quietly() {
    let out = bash(
        "set -o pipefail; pk-shm bytes --text \"$(printf '%04000d' 0)\" | head -1; echo status=$?",
    )
    .output()
    .unwrap();
    let text = stdout(&out);
    assert!(text.starts_with("parent "), "{text}");
    assert!(text.ends_with("status=141\n"), "{text}");
    assert!(out.stderr.is_empty());
}

// ---- named segments ----

fn seg(args: &[&str]) -> std::process::Output {
    pk("shm").args(args).output().unwrap()
}

/// The bytes of /dev/shm/<name>, for "left untouched" checks.
fn shm_bytes(name: &str) -> Vec<u8> {
    std::fs::read(format!("/dev/shm/{}", &name[1..])).unwrap()
}

#[test]
fn named_segment_create_cells_bytes_and_unlink() {
    let mut check = ShmCheck::start();
    let name = check.name("seg");
    // A umask that would leave the owner unable to write changes nothing.
    let out = bash(&format!("umask 277; pk-shm create {name} --size 4096"))
        .output()
        .unwrap();
    assert_success(&out);
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
    let meta = std::fs::metadata(format!("/dev/shm/{}", &name[1..])).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
        0o600
    );
    assert_eq!(meta.len(), 4096);
    for (args, want) in [
        (vec!["add", &name, "--offset", "8"], "1\n"),
        (vec!["add", &name, "--offset", "8", "--by", "41"], "42\n"),
        (vec!["add", &name, "--offset", "8", "--by", "-50"], "-8\n"),
        (vec!["get", &name, "--offset", "8"], "-8\n"),
        (vec!["get", &name], "0\n"),
        (
            vec!["set", &name, "--offset", "4088", "9223372036854775807"],
            "",
        ),
        (
            vec!["add", &name, "--offset", "4088"],
            "-9223372036854775808\n",
        ),
        (vec!["set", &name, "--offset", "16", "-3"], ""),
        (vec!["cas", &name, "--offset", "16", "-3", "7"], "-3\n"),
        (vec!["write", &name, "--offset", "100", "hello"], ""),
        (
            vec!["read", &name, "--offset", "100", "--len", "5"],
            "hello",
        ),
        (vec!["read", &name, "--offset", "4094", "--len", "1"], "\0"),
    ] {
        let out = seg(&args);
        assert_success(&out);
        assert_eq!(stdout(&out), want, "{args:?}");
        assert!(out.stderr.is_empty(), "{args:?}");
    }
    // The top byte of i64::MIN, little-endian, at the very end.
    assert_eq!(seg(&["read", &name, "--offset", "4095"]).stdout, [0x80]);
    // cas that finds another value: exit 1, the value found, cell unchanged.
    let out = seg(&["cas", &name, "--offset", "16", "-3", "8"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "7\n");
    assert_eq!(stdout(&seg(&["get", &name, "--offset", "16"])), "7\n");
    // stdin, with `-` and with nothing.
    let out = bash(&format!(
        "printf 'a\\0b' | pk-shm write {name} --offset 200 - && \
         printf xyz | pk-shm write {name} --offset 300 && \
         pk-shm read {name} --offset 200 --len 3 && pk-shm read {name} --offset 300 --len 3"
    ))
    .output()
    .unwrap();
    assert_success(&out);
    assert_eq!(out.stdout, b"a\0bxyz");
    // The whole segment, as bytes.
    let out = seg(&["read", &name]);
    assert_eq!(out.stdout.len(), 4096);
    assert_eq!(out.stdout, shm_bytes(&name));
    assert_eq!(&out.stdout[8..16], &(-8i64).to_ne_bytes());
    // The name is taken; then gone.
    let out = seg(&["create", &name, "--size", "8"]);
    assert_one_line_error(&out, "shm", 71);
    assert!(String::from_utf8_lossy(&out.stderr).contains("File exists"));
    assert_success(&seg(&["unlink", &name]));
    for args in [
        vec!["get", &name],
        vec!["read", &name],
        vec!["unlink", &name],
        vec!["add", &name],
    ] {
        assert_one_line_error(&seg(&args), "shm", 66);
    }
    check.finish();
}

#[test]
fn concurrent_adds_from_many_shells_lose_nothing() {
    let mut check = ShmCheck::start();
    let name = check.name("adds");
    assert_success(&seg(&["create", &name, "--size", "64"]));
    let out = bash(&format!(
        "for p in 1 2 3 4; do (for i in $(seq 25); do pk-shm add {name} --offset 8 >/dev/null || exit 1; done) & done; wait; \
         pk-shm get {name} --offset 8; pk-shm unlink {name}"
    ))
    .output()
    .unwrap();
    assert_success(&out);
    assert_eq!(stdout(&out), "100\n");
    check.finish();
}

#[test]
fn python_shared_memory_reads_ours_and_we_read_its() {
    let mut check = ShmCheck::start();
    if std::process::Command::new("python3")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("skipped: python3 is not installed");
        return;
    }
    let ours = check.name("py1");
    assert_success(&seg(&["create", &ours, "--size", "64"]));
    assert_success(&seg(&["write", &ours, "--offset", "0", "from pk-shm"]));
    assert_success(&seg(&["set", &ours, "--offset", "16", "-42"]));
    // Python before 3.13 registers an attached segment with its resource
    // tracker, which would unlink it at exit: unregister it.
    let py = format!(
        "from multiprocessing import shared_memory, resource_tracker\n\
         import struct\n\
         m = shared_memory.SharedMemory(name={:?})\n\
         resource_tracker.unregister(m._name, 'shared_memory')\n\
         print(bytes(m.buf[0:11]).decode(), struct.unpack_from('<q', m.buf, 16)[0], m.size)\n\
         struct.pack_into('<q', m.buf, 24, 1234)\n\
         m.close()\n",
        &ours[1..]
    );
    let out = command(&["python3".into(), "-c".into(), py])
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(stdout(&out), "from pk-shm -42 64\n");
    assert_eq!(stdout(&seg(&["get", &ours, "--offset", "24"])), "1234\n");
    assert_success(&seg(&["unlink", &ours]));

    // A segment Python creates, read and changed by pk-shm.
    let theirs = check.name("py2");
    let py = format!(
        "from multiprocessing import shared_memory, resource_tracker\n\
         import struct, sys\n\
         m = shared_memory.SharedMemory(name={:?}, create=True, size=32)\n\
         m.buf[0:6] = b'python'\n\
         struct.pack_into('<q', m.buf, 8, 41)\n\
         print('ready', flush=True)\n\
         sys.stdin.readline()\n\
         print(struct.unpack_from('<q', m.buf, 8)[0], bytes(m.buf[16:18]).decode())\n\
         m.close()\n\
         m.unlink()\n",
        &theirs[1..]
    );
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-c", &py]).stdin(std::process::Stdio::piped());
    let mut running = Running::start(cmd, true);
    running.wait_for(|l| l == "ready");
    assert_eq!(stdout(&seg(&["read", &theirs, "--len", "6"])), "python");
    assert_eq!(stdout(&seg(&["add", &theirs, "--offset", "8"])), "42\n");
    assert_success(&seg(&["write", &theirs, "--offset", "16", "ok"]));
    drop(running.child.stdin.take());
    let lines = running.wait_for(|l| !l.is_empty());
    assert_eq!(lines.last().unwrap(), "42 ok");
    assert_eq!(running.wait().code(), Some(0));
    check.finish();
}

#[test]
fn named_segment_bad_input_is_refused_and_changes_nothing() {
    let mut check = ShmCheck::start();
    let name = check.name("bad");
    assert_success(&seg(&["create", &name, "--size", "64"]));
    assert_success(&seg(&["write", &name, "--offset", "0", "keep me"]));
    let before = shm_bytes(&name);
    let long = format!("/{}", "x".repeat(252));
    let usage: Vec<Vec<&str>> = vec![
        vec!["create", "nope", "--size", "8"],
        vec!["create", "/a/b", "--size", "8"],
        vec!["create", &long, "--size", "8"],
        vec!["create", "/pk-never", "--size", "0"],
        vec!["create", "/pk-never", "--size", "-1"],
        vec!["create", "/pk-never", "--size", "1099511627777"],
        vec!["create", "/pk-never"],
        vec!["read", &name, "--offset", "65"],
        vec!["read", &name, "--offset", "60", "--len", "5"],
        vec![
            "read",
            &name,
            "--len",
            "18446744073709551615",
            "--offset",
            "1",
        ],
        vec!["read", &name, "--offset", "x"],
        vec!["write", &name, "--offset", "60", "12345"],
        vec!["write", &name, "--offset", "18446744073709551615", "x"],
        vec!["add", &name, "--offset", "4"],
        vec!["add", &name, "--offset", "64"],
        vec!["add", &name, "--offset", "57"],
        vec!["add", &name, "--by", "x"],
        vec!["add", &name, "--by", "9223372036854775808"],
        vec!["get", &name, "--offset", "-8"],
        vec!["set", &name, "--offset", "8"],
        vec!["set", &name, "--offset", "8", "1.5"],
        vec!["cas", &name, "--offset", "8", "0"],
        vec!["cas", &name, "--offset", "3", "0", "1"],
        vec!["unlink", "x"],
        vec!["read"],
    ];
    for args in &usage {
        let out = seg(args);
        assert_usage(&out, "shm");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_eq!(shm_bytes(&name), before, "{args:?} changed the segment");
    }
    // Too much on stdin: refused before a byte is written.
    let out = bash(&format!(
        "head -c 100 /dev/zero | pk-shm write {name} --offset 0 -"
    ))
    .output()
    .unwrap();
    assert_usage(&out, "shm");
    assert_eq!(shm_bytes(&name), before);
    assert!(!std::path::Path::new("/dev/shm/pk-never").exists());
    assert_success(&seg(&["unlink", &name]));
    check.finish();
}

#[test]
fn foreign_empty_or_odd_objects_are_refused_with_one_line() {
    let mut check = ShmCheck::start();
    let path = |n: &str| format!("/dev/shm/{}", &n[1..]);
    // Ours, but empty (and still empty 100 ms later): not there yet, 66.
    let empty = check.name("empty");
    std::fs::write(path(&empty), b"").unwrap();
    // Ours, but others may write it: 77.
    let open = check.name("0666");
    std::fs::write(path(&open), [0u8; 64]).unwrap();
    std::fs::set_permissions(
        path(&open),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    // A symbolic link, a FIFO and a socket: 65.
    let link = check.name("link");
    std::os::unix::fs::symlink("/etc/passwd", path(&link)).unwrap();
    let fifo = check.name("fifo");
    nix::unistd::mkfifo(path(&fifo).as_str(), nix::sys::stat::Mode::S_IRWXU).unwrap();
    // A Unix socket: open(2) says ENXIO, which was a 71.
    let socket = check.name("socket");
    drop(std::os::unix::net::UnixListener::bind(path(&socket)).unwrap());
    let mut cases = vec![
        (empty.clone(), 66),
        (open.clone(), 77),
        (link.clone(), 65),
        (fifo.clone(), 65),
        (socket.clone(), 65),
    ];
    // Another user's objects (made as nobody when we are root): 77 even
    // when they are a perfectly good segment left open to everyone.
    if is_root() {
        for (tag, script) in [
            ("foreign-empty", ": > {p}"),
            ("foreign-rand", "head -c 32 /dev/urandom > {p}"),
            ("foreign-0666", "head -c 64 /dev/zero > {p}; chmod 666 {p}"),
        ] {
            let n = check.name(tag);
            let mut words = as_nobody();
            words.extend(["sh".into(), "-c".into(), script.replace("{p}", &path(&n))]);
            assert_success(&command(&words).output().unwrap());
            cases.push((n, 77));
        }
    } else {
        eprintln!("not root: another user's objects are not tried");
    }
    for (n, code) in &cases {
        let before = std::fs::symlink_metadata(path(n)).unwrap();
        for args in [
            vec!["get", n.as_str()],
            vec!["add", n.as_str()],
            vec!["read", n.as_str()],
            vec!["write", n.as_str(), "x"],
            vec!["set", n.as_str(), "1"],
            vec!["cas", n.as_str(), "0", "1"],
        ] {
            let out = seg(&args);
            assert_one_line_error(&out, "shm", *code);
            assert!(out.stdout.is_empty(), "{args:?}");
        }
        let out = seg(&["create", n, "--size", "8"]);
        assert_one_line_error(&out, "shm", 71);
        let after = std::fs::symlink_metadata(path(n)).unwrap();
        assert_eq!(
            (before.len(), before.mtime_nsec_pair()),
            (after.len(), after.mtime_nsec_pair()),
            "{n} was changed"
        );
    }
    for (n, _) in &cases {
        std::fs::remove_file(path(n)).unwrap();
    }
    check.finish();
}

trait MtimePair {
    fn mtime_nsec_pair(&self) -> (i64, i64);
}

impl MtimePair for std::fs::Metadata {
    fn mtime_nsec_pair(&self) -> (i64, i64) {
        use std::os::unix::fs::MetadataExt;
        (self.mtime(), self.mtime_nsec())
    }
}

#[test]
fn a_segment_truncated_under_running_tools_never_kills_them() {
    // One shell adds and reads in a loop while another keeps truncating the
    // segment and growing it back: every call ends with 0, 2 (the offset
    // is past the end now), 65 (truncated during the access) or 66 (found
    // empty and left empty for 100 ms, on a loaded machine), never with
    // SIGBUS (135).
    let mut check = ShmCheck::start();
    let name = check.name("trunc");
    let p = format!("/dev/shm/{}", &name[1..]);
    assert_success(&seg(&["create", &name, "--size", "65536"]));
    let out = bash(&format!(
        "(for i in $(seq 300); do truncate -s 0 {p}; truncate -s 65536 {p}; done) & t=$!; \
         for i in $(seq 150); do \
           pk-shm add {name} --offset 65528 >/dev/null 2>&1; echo $?; \
           pk-shm read {name} >/dev/null 2>&1; echo $?; \
         done; wait $t"
    ))
    .output()
    .unwrap();
    assert_success(&out);
    let codes: std::collections::BTreeSet<String> =
        stdout(&out).lines().map(str::to_string).collect();
    assert!(
        codes
            .iter()
            .all(|c| ["0", "2", "65", "66"].contains(&c.as_str())),
        "{codes:?}"
    );
    assert_success(&seg(&["unlink", &name]));
    check.finish();
}

#[test]
fn a_full_dev_shm_fails_at_create_with_enospc_and_leaves_nothing() {
    // A private mount namespace with a 1 MiB tmpfs on /dev/shm (needs
    // root; skipped otherwise).
    let probe = bash("unshare -m true").output().unwrap();
    if !is_root() || probe.status.code() != Some(0) {
        eprintln!("skipped: cannot make a private /dev/shm here");
        return;
    }
    let out = bash(
        "unshare -m sh -c 'mount -t tmpfs -o size=1m tmpfs /dev/shm && \
           pk-shm create /pk-big --size 4194304; echo status=$?; ls -A /dev/shm'",
    )
    .output()
    .unwrap();
    let text = stdout(&out);
    assert_eq!(text, "status=71\n", "nothing left behind: {text}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("pk-shm: posix_fallocate(/pk-big): ") && err.contains("No space left"),
        "{err}"
    );
}

#[test]
fn a_sparse_segment_on_a_full_dev_shm_is_out_of_space_not_truncated() {
    // Python's SharedMemory makes a segment with ftruncate: sparse, its
    // pages allocated when first touched. On a full /dev/shm that touch
    // raises SIGBUS, which was reported as a truncation (65) after part
    // of a write had been made (here: up to the end of the page that
    // already held an x). A private mount namespace with a 1 MiB
    // tmpfs on /dev/shm, filled up (needs root; skipped otherwise).
    let probe = bash("unshare -m true").output().unwrap();
    if !is_root() || probe.status.code() != Some(0) {
        eprintln!("skipped: cannot make a private /dev/shm here");
        return;
    }
    let out = bash(
        "unshare -m sh -c 'mount -t tmpfs -o size=1m tmpfs /dev/shm && \
           truncate -s 4M /dev/shm/pk-sparse && \
           pk-shm write /pk-sparse --offset 100000 x && \
           { head -c 2M /dev/zero > /dev/shm/fill; } 2>/dev/null; \
           for c in \"write /pk-sparse --offset 100000 $(printf %08192d 0)\" \
                    \"add /pk-sparse --offset 3000000\" \
                    \"set /pk-sparse --offset 3000000 5\" \
                    \"cas /pk-sparse --offset 3000000 0 5\" \
                    \"get /pk-sparse --offset 2097152\"; do \
             pk-shm $c; echo status=$?; \
           done; \
           rm /dev/shm/fill; \
           pk-shm read /pk-sparse --offset 100000 --len 8192 | tr -d \"\\000\" | wc -c; \
           pk-shm get /pk-sparse --offset 3000000'",
    )
    .output()
    .unwrap();
    let text = stdout(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        text,
        "status=71\n".repeat(5) + "1\n0\n",
        "nothing written but the x of before: {text}{err}"
    );
    assert_eq!(err.lines().count(), 5, "{err}");
    for line in err.lines() {
        assert!(
            line.starts_with("pk-shm: ") && line.contains("No space left on device"),
            "{err}"
        );
    }
}

/// pk-shm with `args`, under prlimit(1)'s `limit` (`--as=BYTES` …).
fn shm_under(limit: &str, args: &[&str]) -> std::process::Output {
    let mut words = vec!["prlimit".to_string(), limit.to_string()];
    words.push(bin("pk-shm").display().to_string());
    words.extend(args.iter().map(|a| a.to_string()));
    command(&words).output().unwrap()
}

#[test]
fn a_create_whose_mmap_fails_leaves_no_segment_behind() {
    // Under an address-space limit the 300 MB segment is allocated in
    // /dev/shm (tmpfs pages are not address space) but cannot be mapped.
    let mut check = ShmCheck::start();
    let name = check.name("nomap");
    let out = shm_under("--as=200000000", &["create", &name, "--size", "300000000"]);
    assert_one_line_error(&out, "shm", 71);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("mmap"),
        "{out:?}"
    );
    check.finish();
}

#[test]
fn a_create_over_the_file_size_limit_is_an_error_not_sigxfsz() {
    // posix_fallocate past `ulimit -f` raises SIGXFSZ, which would kill
    // pk-shm (status 153 from the shell): it is refused first, with one
    // line and nothing left in /dev/shm.
    let mut check = ShmCheck::start();
    let name = check.name("fsize");
    let out = shm_under("--fsize=10240", &["create", &name, "--size", "100000"]);
    assert_one_line_error(&out, "shm", 71);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("over the file-size limit") && err.contains("File too large"),
        "{err}"
    );
    check.finish();
    // The anonymous array of `bytes` is far under the limit: it works.
    let out = shm_under("--fsize=10240", &["bytes"]);
    assert_success(&out);
}

#[test]
fn a_read_larger_than_the_memory_allowed_is_streamed() {
    // The whole of a 64 MiB segment under a 120 MB address-space limit:
    // the mapping fits, a second copy of it in one buffer would not (the
    // allocation failed and pk-shm aborted with a backtrace, status 134).
    let mut check = ShmCheck::start();
    let name = check.name("stream");
    assert_success(
        &pk("shm")
            .args(["create", &name, "--size", "67108864"])
            .output()
            .unwrap(),
    );
    assert_success(
        &pk("shm")
            .args(["write", &name, "--offset", "67108860", "tail"])
            .output()
            .unwrap(),
    );
    let script = format!(
        "prlimit --as=120000000 {} read {name} | tail -c 4; echo \" ${{PIPESTATUS[0]}}\"",
        bin("pk-shm").display()
    );
    let out = command(&["bash".into(), "-c".into(), script])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "tail 0\n", "{out:?}");
    assert_success(&pk("shm").args(["unlink", &name]).output().unwrap());
    check.finish();
}

// ---- a segment that Python is still creating ----

/// Python creating the segment `name` of 4096 bytes with
/// `SharedMemory(create=True)` (shm_open with O_CREAT | O_EXCL, then
/// ftruncate) under strace, which holds its ftruncate back `delay_us`
/// microseconds. It prints `ready` once the segment is made, then waits
/// for a line on stdin, prints the cell at offset 8 and unlinks the
/// segment. Waits until the (still empty) segment is in /dev/shm.
/// `None` where python3 or strace is missing.
fn python_creating(name: &str, delay_us: u64) -> Option<Running> {
    if strace_missing()
        || std::process::Command::new("python3")
            .arg("-V")
            .output()
            .is_err()
    {
        eprintln!("skipped: needs python3 and strace");
        return None;
    }
    let py = format!(
        "from multiprocessing import shared_memory\n\
         import struct, sys\n\
         m = shared_memory.SharedMemory(name={:?}, create=True, size=4096)\n\
         print('ready', flush=True)\n\
         sys.stdin.readline()\n\
         print(struct.unpack_from('<q', m.buf, 8)[0], flush=True)\n\
         m.close()\n\
         m.unlink()\n",
        &name[1..]
    );
    let mut cmd = std::process::Command::new("strace");
    cmd.args(["-qq", "-o", "/dev/null", "-e", "trace=ftruncate", "-e"])
        .arg(format!("inject=ftruncate:delay_enter={delay_us}"))
        .args(["python3", "-c", &py])
        .stdin(std::process::Stdio::piped());
    let running = Running::start(cmd, true);
    let path = std::path::PathBuf::from(format!("/dev/shm/{}", &name[1..]));
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "python never made {name}"
        );
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    Some(running)
}

/// Let the `python_creating` process finish: the cell at offset 8 it
/// printed.
fn python_finish(mut py: Running) -> String {
    drop(py.child.stdin.take());
    let last = py
        .wait_for(|l| !l.is_empty() && l != "ready")
        .pop()
        .unwrap();
    assert_eq!(py.wait().code(), Some(0), "python failed");
    last
}

#[test]
fn a_segment_still_empty_after_the_grace_is_not_found_not_damaged() {
    // Python's ftruncate is held back 1.5 s, far past pk-shm's 100 ms
    // look: the segment is empty for the whole of the get. That is "not
    // there yet" (66), not a damaged segment (65), and the look changes
    // nothing: Python's segment is then made and used as usual.
    let mut check = ShmCheck::start();
    let name = check.name("sizing");
    let Some(py) = python_creating(&name, 1_500_000) else {
        return;
    };
    let out = seg(&["get", &name]);
    let still_empty = std::fs::metadata(format!("/dev/shm/{}", &name[1..]))
        .unwrap()
        .len()
        == 0;
    assert!(
        still_empty,
        "python sized it during the get (a very slow machine): the test proves nothing"
    );
    assert_one_line_error(&out, "shm", 66);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("empty") && err.contains("being created"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    let mut py = py;
    py.wait_for(|l| l == "ready");
    assert_eq!(stdout(&seg(&["add", &name, "--offset", "8"])), "1\n");
    assert_eq!(python_finish(py), "1");
    check.finish();
}

/// Whether the strace output `trace` of a pk-shm run shows it finding the
/// segment `name` empty: an fstat (statx) of its fd that says 0 bytes.
fn saw_it_empty(trace: &str, name: &str) -> bool {
    let open = format!("\"/dev/shm/{}\"", &name[1..]);
    let Some(fd) = trace
        .lines()
        .find(|l| l.starts_with("openat(") && l.contains(&open))
        .and_then(|l| l.rsplit("= ").next())
        .and_then(|fd| fd.trim().parse::<i32>().ok())
    else {
        return false;
    };
    trace.lines().any(|l| {
        (l.starts_with(&format!("statx({fd}, \"\"")) || l.starts_with(&format!("fstat({fd}, ")))
            && (l.contains("stx_size=0,") || l.contains("st_size=0,"))
    })
}

#[test]
fn a_segment_sized_within_the_grace_is_used() {
    // Python's ftruncate is held back 50 ms, less than pk-shm's 100 ms
    // look: a get that finds the segment empty (strace of pk-shm shows
    // it) waits and then adds into Python's segment. Tried until one run
    // finds it empty, at most ten times.
    let mut check = ShmCheck::start();
    let trace = std::env::temp_dir().join(format!("pk-shm-trace-{}", std::process::id()));
    let mut hit = false;
    for attempt in 1..=10 {
        let name = check.name("sized");
        let Some(py) = python_creating(&name, 50_000) else {
            return;
        };
        let out = command(&[
            "strace".into(),
            "-qq".into(),
            "-o".into(),
            trace.display().to_string(),
            "-e".into(),
            "trace=openat,statx,fstat,newfstatat".into(),
            bin("pk-shm").display().to_string(),
            "add".into(),
            name.clone(),
            "--offset".into(),
            "8".into(),
        ])
        .output()
        .unwrap();
        assert_success(&out);
        assert_eq!(stdout(&out), "1\n");
        assert_eq!(python_finish(py), "1", "the add went into python's segment");
        let text = std::fs::read_to_string(&trace).unwrap();
        if saw_it_empty(&text, &name) {
            eprintln!("pk-shm found the segment empty on try {attempt}");
            hit = true;
            break;
        }
    }
    let _ = std::fs::remove_file(&trace);
    assert!(hit, "no pk-shm run found the segment empty in ten tries");
    check.finish();
}

#[test]
fn add_and_cas_change_nothing_when_stdout_cannot_take_the_value() {
    // They used to change the cell and only then fail to print: the
    // caller saw an error (71, or 141) for an update that was made.
    let mut check = ShmCheck::start();
    let name = check.name("noout");
    assert_success(&seg(&["create", &name, "--size", "64"]));
    for args in [
        format!("add {name} --offset 8"),
        format!("cas {name} --offset 8 0 5"),
    ] {
        let out = bash(&format!("pk-shm {args} >&-")).output().unwrap();
        assert_one_line_error(&out, "shm", 71);
        assert!(String::from_utf8_lossy(&out.stderr).contains("Bad file descriptor"));
        let words: Vec<&str> = args.split(' ').collect();
        let out = into_a_readerless_pipe("shm", &words);
        assert_eq!(out.status.code(), Some(141), "{args}: {out:?}");
        assert!(out.stderr.is_empty(), "{args}: {out:?}");
        assert_eq!(
            stdout(&seg(&["get", &name, "--offset", "8"])),
            "0\n",
            "{args}"
        );
    }
    // set prints nothing: a closed stdout is no reason to fail it.
    let out = bash(&format!("pk-shm set {name} --offset 8 7 >&-"))
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(stdout(&seg(&["get", &name, "--offset", "8"])), "7\n");
    assert_success(&seg(&["unlink", &name]));
    check.finish();
}

#[test]
fn unlink_refuses_another_users_segment_even_for_root() {
    // Every other command refused it with 77, and so does pk-queue unlink;
    // pk-shm unlink, run by root, removed it.
    if !is_root() {
        eprintln!("skipped: needs root to make another user's segment");
        return;
    }
    let mut check = ShmCheck::start();
    let name = check.name("theirs");
    let mut words = as_nobody();
    words.extend([
        bin("pk-shm").display().to_string(),
        "create".into(),
        name.clone(),
        "--size".into(),
        "64".into(),
    ]);
    assert_success(&command(&words).output().unwrap());
    let path = format!("/dev/shm/{}", &name[1..]);
    let out = seg(&["unlink", &name]);
    assert_one_line_error(&out, "shm", 77);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another user's"),
        "{out:?}"
    );
    assert!(std::path::Path::new(&path).exists(), "it was removed");
    assert_one_line_error(&seg(&["get", &name]), "shm", 77);
    std::fs::remove_file(&path).unwrap();
    check.finish();
}

#[test]
fn names_with_control_characters_are_refused() {
    let check = ShmCheck::start();
    for name in ["/pk-ctl\nb", "/pk-ctl\rb"] {
        assert_control_name_refused(
            "shm",
            name,
            &[
                &["create", name, "--size", "8"],
                &["get", name],
                &["unlink", name],
            ],
        );
    }
    check.finish();
}
