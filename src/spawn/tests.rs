//! Unit tests of the spawn path: PATH search, exec failures, pipes, the
//! environment, timeouts and the fork gate.

use super::*;

#[test]
fn path_search_follows_execvp() {
    let c = |v: Vec<CString>| {
        v.into_iter()
            .map(|s| s.into_string().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        c(search_path(b"ls", Some("/a::/b".into()))),
        ["/a/ls", "./ls", "/b/ls"]
    );
    assert_eq!(c(search_path(b"./x", Some("/a".into()))), ["./x"]);
    assert_eq!(c(search_path(b"ls", None)), ["/bin/ls", "/usr/bin/ls"]);
    assert!(search_path(b"", None).is_empty());
}

#[test]
fn exec_failures_are_not_found_or_not_executable() {
    assert_eq!(exec_failure_kind(Errno::ENOENT), ErrorKind::CommandNotFound);
    assert_eq!(
        exec_failure_kind(Errno::ENOTDIR),
        ErrorKind::CommandNotExecutable
    );
    assert_eq!(
        exec_failure_kind(Errno::EACCES),
        ErrorKind::CommandNotExecutable
    );
    assert_eq!(
        exec_failure_kind(Errno::ENOEXEC),
        ErrorKind::CommandNotExecutable
    );
}

#[test]
fn captures_both_streams_and_feeds_input() {
    let out = Spawn::new(["sh", "-c", "cat; echo err >&2; exit 3"])
        .unwrap()
        .input(b"in\n".to_vec())
        .capture(true)
        .run()
        .unwrap();
    assert_eq!(out.stdout, b"in\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.status, Status::Exited(3));
}

#[test]
fn a_missing_program_is_127() {
    let e = Spawn::new(["/nonexistent/prog"])
        .unwrap()
        .run()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::CommandNotFound);
    assert_eq!(
        e.to_string(),
        "execvp(/nonexistent/prog): No such file or directory"
    );
}

#[test]
fn one_mib_of_input_comes_back_through_cat() {
    let data: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let out = Spawn::new(["cat"])
        .unwrap()
        .input(data.clone())
        .capture(true)
        .run()
        .unwrap();
    assert!(out.stdout == data);
    assert!(out.stderr.is_empty());
}

#[test]
fn stdin_from_a_descriptor() {
    let (r, w) = crate::pipe::pipe().unwrap();
    w.write_all(b"from a pipe fd").unwrap();
    drop(w);
    let out = Spawn::new(["cat"])
        .unwrap()
        .stdin(Stdin::Fd(r.into()))
        .capture(true)
        .run()
        .unwrap();
    assert_eq!(out.stdout, b"from a pipe fd");
}

#[test]
fn the_child_starts_with_an_empty_signal_mask() {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
    // fork copies the calling thread's mask; the child must clear it.
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGUSR1);
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).unwrap();
    let out = Spawn::new(["grep", "^SigBlk:", "/proc/self/status"])
        .unwrap()
        .capture(true)
        .run();
    pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None).unwrap();
    assert_eq!(
        String::from_utf8(out.unwrap().stdout).unwrap(),
        "SigBlk:\t0000000000000000\n"
    );
}

/// `/usr/bin/env`'s output for a spawn, as lines.
fn env_of(spawn: Spawn) -> Vec<String> {
    let out = spawn.capture(true).run().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn environment_changes_apply_in_order_as_env_does() {
    let base = || Spawn::new(["/usr/bin/env"]).unwrap();
    assert_eq!(
        env_of(base().env_clear().env("B", "2").env("A", "1")),
        ["B=2", "A=1"]
    );
    // A set replaces the variable where it stands; a later set wins; a
    // removal removes it; an empty value is a value.
    assert_eq!(
        env_of(
            base()
                .env_clear()
                .env("A", "1")
                .env("B", "x")
                .env("A", "3")
                .env_remove("B")
                .env("E", "")
        ),
        ["A=3", "E="]
    );
    // env_clear drops what was set before it.
    assert_eq!(
        env_of(base().env("A", "1").env_clear()),
        Vec::<String>::new()
    );
    // With no change, ours as it is, in its order.
    let mine: Vec<String> = std::env::vars_os()
        .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
        .collect();
    assert_eq!(env_of(base()), mine);
    // Without env_clear, ours is inherited minus what is removed.
    let ours = env_of(base().env_remove("PATH"));
    assert!(!ours.iter().any(|l| l.starts_with("PATH=")));
    assert!(ours.len() + 1 >= std::env::vars_os().count());
}

#[test]
fn path_lookup_uses_the_childs_path() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("pk-only-here");
    std::fs::write(&prog, "#!/bin/sh\necho found me\n").unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    let e = Spawn::new(["pk-only-here"]).unwrap().run().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::CommandNotFound);
    let out = Spawn::new(["pk-only-here"])
        .unwrap()
        .env("PATH", dir.path())
        .capture(true)
        .run()
        .unwrap();
    assert_eq!(out.stdout, b"found me\n");
}

#[test]
fn bad_variable_names_are_invalid_input() {
    for key in ["", "A=B", "A\0B"] {
        let e = Spawn::new(["true"])
            .unwrap()
            .env(key, "v")
            .start()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{key:?}");
    }
    let e = Spawn::new(["true"])
        .unwrap()
        .env("A", "v\0")
        .start()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[test]
fn the_child_runs_in_the_directory_given() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().canonicalize().unwrap();
    std::fs::write(real.join("here.sh"), "echo relative to cwd\n").unwrap();
    let out = Spawn::new(["sh", "-c", "pwd; . ./here.sh"])
        .unwrap()
        .cwd(&real)
        .capture(true)
        .run()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{}\nrelative to cwd\n", real.display())
    );
    let e = Spawn::new(["true"])
        .unwrap()
        .cwd("/nonexistent/dir")
        .run()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(
        e.to_string(),
        "chdir(/nonexistent/dir): No such file or directory"
    );
}

#[test]
fn a_timeout_sends_its_signal_then_sigkill() {
    use std::time::Duration;
    let out = Spawn::new(["sleep", "30"])
        .unwrap()
        .timeout(Timeout::new(Duration::from_millis(50)))
        .run()
        .unwrap();
    assert!(out.timed_out && !out.killed, "{out:?}");
    assert_eq!(out.status.signal(), Some(libc::SIGTERM));
    // A command that ignores the signal gets SIGKILL after kill_after.
    let out = Spawn::new(["sh", "-c", "trap '' TERM; exec sleep 30"])
        .unwrap()
        .timeout(Timeout::new(Duration::from_millis(50)).kill_after(Duration::from_millis(50)))
        .run()
        .unwrap();
    assert!(out.timed_out && out.killed, "{out:?}");
    assert_eq!(out.status.signal(), Some(libc::SIGKILL));
    // One that finishes in time is left alone.
    let out = Spawn::new(["true"])
        .unwrap()
        .timeout(Timeout::new(Duration::from_secs(30)))
        .run()
        .unwrap();
    assert!(!out.timed_out && !out.killed && out.status.success());
}

#[test]
fn a_process_group_takes_the_commands_children_along() {
    use std::time::{Duration, Instant};
    // The timeout's SIGTERM ends the shell; its background sleep ends too
    // only because the signal went to the whole group.
    let out = Spawn::new(["sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!; wait"])
        .unwrap()
        .process_group(true)
        .capture(true)
        .timeout(Timeout::new(Duration::from_millis(200)))
        .run()
        .unwrap();
    assert!(out.timed_out, "{out:?}");
    let pid: i32 = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Dying takes the sleep a moment; ten seconds is a hang, not a race.
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(") ").next().unwrap_or("").chars().next();
        if matches!(state, None | Some('Z' | 'X')) {
            break;
        }
        assert!(
            Instant::now() < give_up,
            "the group's sleep survived: {stat}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_running_spawns_pipes_are_recorded_until_closed() {
    let mut running = Spawn::new(["cat"])
        .unwrap()
        .input(b"abc".to_vec())
        .capture(true)
        .start()
        .unwrap();
    let fds = running.pipe_fds();
    assert_eq!(fds.len(), 3);
    assert!(fds.iter().all(|&fd| fds::is_recorded(fd)), "{fds:?}");
    let status = running.wait().unwrap();
    assert!(status.success());
    assert_eq!(running.take_output().0, b"abc");
    // Closed and forgotten (the numbers may already be reused by another
    // test's pipes, which would be recorded again: look only at ours).
    assert!(running.pipe_fds().is_empty());
}

#[test]
fn a_running_dropped_unreaped_takes_its_group_along() {
    use std::time::{Duration, Instant};
    let mut running = Spawn::new(["sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!; wait"])
        .unwrap()
        .process_group(true)
        .capture(true)
        .start()
        .unwrap();
    // Read the background pid as it comes, then drop the running program.
    let deadline = Instant::now() + Duration::from_secs(30);
    let pid: i32 = loop {
        running
            .wait_event(Some(Instant::now() + Duration::from_millis(20)), None)
            .unwrap();
        if let Some(line) = running.stdout_so_far().strip_suffix(b"\n") {
            break std::str::from_utf8(line).unwrap().parse().unwrap();
        }
        assert!(Instant::now() < deadline, "no pid from the shell");
    };
    drop(running);
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(") ").next().unwrap_or("").chars().next();
        if matches!(state, None | Some('Z' | 'X')) {
            break;
        }
        assert!(
            Instant::now() < give_up,
            "the group's sleep survived: {stat}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn stdout_and_stderr_go_to_the_given_descriptors_and_try_wait_reaps() {
    use std::io::{Read, Seek};
    let dir = std::env::temp_dir();
    let open = |name: &str| {
        let path = dir.join(format!("posixkit-spawn-fd-{}-{name}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    };
    let (mut out, mut err) = (open("out"), open("err"));
    let mut r = Spawn::new(["sh", "-c", "echo to-out; echo to-err >&2"])
        .unwrap()
        .stdout_fd(out.try_clone().unwrap().into())
        .stderr_fd(err.try_clone().unwrap().into())
        .start()
        .unwrap();
    let status = loop {
        if let Some(s) = r.try_wait().unwrap() {
            break s;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    assert!(status.success());
    assert_eq!(r.try_wait().unwrap(), Some(status), "the same status again");
    let mut text = String::new();
    out.rewind().unwrap();
    out.read_to_string(&mut text).unwrap();
    assert_eq!(text, "to-out\n");
    text.clear();
    err.rewind().unwrap();
    err.read_to_string(&mut text).unwrap();
    assert_eq!(text, "to-err\n");
    // With capture, the descriptors are not used.
    let o = Spawn::new(["echo", "hi"])
        .unwrap()
        .stdout_fd(out.try_clone().unwrap().into())
        .capture(true)
        .run()
        .unwrap();
    assert_eq!(o.stdout, b"hi\n");
}

#[test]
fn a_session_of_its_own_leads_its_group_and_has_no_terminal() {
    // /proc/self/stat after the command name: state ppid pgrp session tty_nr.
    let out = Spawn::new(["sh", "-c", "echo $$; cat /proc/$$/stat"])
        .unwrap()
        .session(true)
        .capture(true)
        .run()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (pid, stat) = text.split_once('\n').unwrap();
    let fields: Vec<&str> = stat.rsplit(") ").next().unwrap().split(' ').collect();
    assert_eq!(
        (fields[2], fields[3]),
        (pid, pid),
        "pgrp and session: {stat}"
    );
    assert_eq!(fields[4], "0", "no controlling terminal: {stat}");
}

#[test]
fn a_child_announces_its_group_before_it_runs_and_takes_it_back_if_it_cannot() {
    use std::sync::Arc;
    let (r, w) = crate::pipe::pipe().unwrap();
    let w = Arc::new(OwnedFd::from(w));
    let r = OwnedFd::from(r);
    let read_i32 = || {
        let mut b = [0u8; 4];
        assert_eq!(nix::unistd::read(&r, &mut b).unwrap(), 4);
        i32::from_le_bytes(b)
    };
    // The pid is in the pipe by the time start returns (the child wrote
    // it before exec, and start returns only once the child has exec'd).
    let mut first = Spawn::new(["sh", "-c", "echo $$"])
        .unwrap()
        .session(true)
        .announce_pid_to(Arc::clone(&w))
        .capture(true)
        .start()
        .unwrap();
    let pid = first.pid().as_raw();
    assert_eq!(read_i32(), pid);
    assert!(first.wait().unwrap().success());
    let (stdout, _) = first.take_output();
    assert_eq!(String::from_utf8_lossy(&stdout).trim(), pid.to_string());
    // A command that cannot exec: its pid, then minus its pid.
    let e = Spawn::new(["/nonexistent/prog"])
        .unwrap()
        .session(true)
        .announce_pid_to(Arc::clone(&w))
        .start()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::CommandNotFound);
    let announced = read_i32();
    assert!(announced > 0);
    assert_eq!(read_i32(), -announced);
}

#[test]
fn a_linger_too_long_for_the_clock_reads_on_instead_of_panicking() {
    // The child exits at once; its background sleep keeps stdout open. A
    // grace of Duration::MAX overflowed the Instant it was added to.
    let mut r = Spawn::new(["sh", "-c", "sleep 2 & echo out; exit 0"])
        .unwrap()
        .capture(true)
        .start()
        .unwrap();
    r.linger_after_exit(std::time::Duration::MAX);
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(300);
    assert_eq!(r.wait_event(Some(deadline), None).unwrap(), Event::Deadline);
    r.abandon_output();
}

#[test]
fn a_deadline_that_has_passed_is_seen_while_output_is_waiting() {
    // Pipes that always have data kept a passed deadline from being seen:
    // it was checked only when poll found nothing (pk-spawn -c -t 0.2 fired
    // after seconds behind a fast writer, or never while memory grew).
    // Here the child fills a 1 MiB pipe (16 reads of 64 KiB) and waits;
    // the deadline has passed when the wait starts, so it ends after one
    // read, not after the pipe ran dry.
    let script = "import fcntl, os, time\n\
                  fcntl.fcntl(1, 1031, 1 << 20)\n\
                  os.write(1, b'x' * (1 << 20))\n\
                  open(os.environ['READY'], 'w').close()\n\
                  time.sleep(30)\n";
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let mut r = Spawn::new(["python3", "-c", script])
        .unwrap()
        .env("READY", &ready)
        .capture(true)
        .start()
        .unwrap();
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !ready.exists() {
        assert!(
            std::time::Instant::now() < give_up,
            "the writer never wrote"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let ev = r.wait_event(Some(std::time::Instant::now()), None).unwrap();
    assert_eq!(ev, Event::Deadline);
    let (out, _) = r.take_output();
    assert!(
        out.len() <= 64 * 1024,
        "read {} bytes past the deadline",
        out.len()
    );
    r.abandon_output();
}

#[test]
fn a_relay_dropped_first_leaves_a_later_relays_signals_blocked() {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
    // The mask is this test thread's own.
    let blocked = || {
        let mut now = SigSet::empty();
        pthread_sigmask(SigmaskHow::SIG_BLOCK, None, Some(&mut now)).unwrap();
        (now.contains(Signal::SIGUSR1), now.contains(Signal::SIGUSR2))
    };
    assert_eq!(blocked(), (false, false));
    let first = SignalRelay::new(&[Signal::SIGUSR1]).unwrap();
    let second = SignalRelay::new(&[Signal::SIGUSR2]).unwrap();
    assert_eq!(blocked(), (true, true));
    // Dropping the first restored the mask it found, which unblocked the
    // second's SIGUSR2: one sent then killed the process.
    drop(first);
    assert_eq!(blocked(), (false, true));
    drop(second);
    assert_eq!(blocked(), (false, false));
}
