//! pk-ticket: the flock(2)-locked ticket file.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use posixkit::ticket::parse_count;

use crate::common::*;

/// A temporary directory holding `product` with `content`.
fn shop(content: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("product");
    std::fs::write(&path, content).unwrap();
    (dir, path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

fn ticket(args: &[&str], path: &Path) -> Output {
    let mut cmd = pk("ticket");
    cmd.arg(args[0]).arg(path).args(&args[1..]);
    cmd.output().unwrap()
}

/// The ticket numbers in `buyer <i> (pid <p>): bought ticket <t>` lines.
fn rush_tickets(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.split("): bought ticket ").nth(1)?.parse().ok())
        .collect()
}

/// The buyer pids named in `buyer <i> (pid <p>): ...` lines.
fn rush_pids(text: &str) -> Vec<i32> {
    text.lines()
        .filter_map(|l| l.split("(pid ").nth(1)?.split(')').next()?.parse().ok())
        .collect()
}

/// The number after `key ` in the summary line.
fn summary(text: &str, key: &str) -> u64 {
    let line = text
        .lines()
        .find(|l| l.starts_with("summary: "))
        .unwrap_or_else(|| panic!("no summary line: {text}"));
    line.split(&format!("{key} "))
        .nth(1)
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

#[test]
fn rush_with_the_lock_sells_exactly_the_stock() {
    let (_dir, path) = shop("3\n");
    let out = ticket(&["rush", "--buyers", "10"], &path);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    assert!(
        text.starts_with("rush: 10 buyers, 3 tickets in ") && text.contains("with flock(2)"),
        "{text}"
    );
    let tickets: BTreeSet<u64> = rush_tickets(&text).into_iter().collect();
    assert_eq!(rush_tickets(&text).len(), 3, "{text}");
    assert_eq!(tickets, BTreeSet::from([1, 2, 3]), "{text}");
    assert_eq!(text.matches("): sold out\n").count(), 7, "{text}");
    assert!(
        text.contains("summary: stock 3, sold 3, left 0, oversold 0\n"),
        "{text}"
    );
    assert!(!text.contains("duplicates"), "{text}");
    assert_eq!(read(&path), "0\n");
    let pids = rush_pids(&text);
    assert_eq!(pids.len(), 10);
    assert!(leftovers(&pids).is_empty());
}

#[test]
fn rush_64_buyers_for_40_tickets_gets_numbers_1_to_40() {
    let (_dir, path) = shop("40");
    let out = ticket(&["rush", "--buyers", "64"], &path);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    let mut tickets = rush_tickets(&text);
    tickets.sort_unstable();
    assert_eq!(tickets, (1..=40).collect::<Vec<_>>(), "{text}");
    assert_eq!(text.matches("): sold out\n").count(), 24);
    assert!(text.contains("sold 40, left 0, oversold 0\n"), "{text}");
    assert_eq!(read(&path), "0\n");
}

#[test]
fn rush_with_the_lock_and_yield_is_still_exact() {
    let (_dir, path) = shop("5\n");
    let out = ticket(&["rush", "--buyers", "8", "--yield", "--quiet"], &path);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        stdout(&out),
        "summary: stock 5, sold 5, left 0, oversold 0\n"
    );
    assert_eq!(read(&path), "0\n");
}

#[test]
fn rush_without_the_lock_oversells() {
    // --yield: every buyer sleeps between its read and its write, and all
    // are released together, so several read the same count.
    let (_dir, path) = shop("3\n");
    let out = ticket(&["rush", "--buyers", "10", "--no-lock", "--yield"], &path);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("without a lock"), "{text}");
    assert!(summary(&text, "oversold") > 0, "{text}");
    let tickets = rush_tickets(&text);
    let distinct: BTreeSet<u64> = tickets.iter().copied().collect();
    assert!(
        tickets.len() > distinct.len(),
        "a ticket sold twice: {text}"
    );
    assert!(text.contains("\nduplicates: ticket "), "{text}");
    assert!(
        summary(&text, "sold") + summary(&text, "left") > 3,
        "{text}"
    );
    // Whatever the race did, the file still holds a count.
    assert!(parse_count(read(&path).as_bytes()).is_ok());
    assert!(leftovers(&rush_pids(&text)).is_empty());
}

#[test]
fn buy_for_scripts_prints_one_line_and_exits_0_or_1() {
    let (_dir, path) = shop("2\n");
    let out = ticket(&["buy"], &path);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "bought ticket 2 (1 left)\n");
    assert_eq!(read(&path), "1\n");
    let out = ticket(&["buy", "--durable"], &path);
    assert_eq!(stdout(&out), "bought ticket 1 (0 left)\n");
    for _ in 0..2 {
        let out = ticket(&["buy"], &path);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(stdout(&out), "sold out\n");
        assert!(out.stderr.is_empty());
    }
    assert_eq!(read(&path), "0\n");
}

#[test]
fn init_creates_0600_resets_and_show_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("product");
    let out = ticket(&["init", "10"], &path);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(stdout(&out), format!("{}: 10 tickets\n", path.display()));
    assert_eq!(read(&path), "10\n");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "created 0600 (less umask): {mode:o}");
    // Reset over a longer value and over garbage; the mode is kept.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::write(&path, "123456789\n").unwrap();
    assert_eq!(
        ticket(&["init", "7", "--durable"], &path).status.code(),
        Some(0)
    );
    assert_eq!(read(&path), "7\n");
    std::fs::write(&path, "garbage").unwrap();
    assert_eq!(
        ticket(&["init", "18446744073709551615"], &path)
            .status
            .code(),
        Some(0)
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640);
    let out = ticket(&["show"], &path);
    assert_eq!(stdout(&out), "18446744073709551615\n");
    // `echo 10 > product` files and whitespace around the count are fine.
    std::fs::write(&path, " 12 \n").unwrap();
    assert_eq!(stdout(&ticket(&["show"], &path)), "12\n");
    assert_eq!(
        stdout(&ticket(&["buy"], &path)),
        "bought ticket 12 (11 left)\n"
    );
    assert_eq!(read(&path), "11\n");
}

#[test]
fn python_reads_what_we_write() {
    let (_dir, path) = shop("10\n");
    ticket(&["buy"], &path);
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sys; print(int(open(sys.argv[1]).read()))")
        .arg(&path)
        .output();
    match out {
        Ok(out) if out.status.success() => assert_eq!(String::from_utf8_lossy(&out.stdout), "9\n"),
        _ => eprintln!("skipped: python3 is not available"),
    }
}

#[test]
fn the_shell_script_sells_37_tickets_to_100_background_buyers() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ticket-rush.sh");
    let out = bash(&format!("bash {script} 100 37")).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout(&out),
        "100 buyers, 37 tickets: 37 bought, 63 sold out, 0 failed\n\
         ticket numbers: 1..37, each sold once\n\
         left in the file: 0\n"
    );
}

#[test]
fn flock_1_excludes_our_buyers() {
    let (_dir, path) = shop("5\n");
    // flock(1) holds the lock until we close its stdin.
    let mut cmd = std::process::Command::new("flock");
    cmd.arg(&path)
        .args(["sh", "-c", "echo locked; read line; true"])
        .stdin(Stdio::piped());
    let mut holder = Running::start(cmd, false);
    holder.wait_for(|l| l == "locked");

    // Busy: silent, as flock -n; with -v, one line on stderr.
    let out = ticket(&["buy", "--no-wait"], &path);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    let out = ticket(&["buy", "--no-wait", "-v"], &path);
    assert_one_line_error(&out, "ticket", 1);
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("pk-ticket: busy: {} is locked\n", path.display())
    );
    let out = ticket(&["buy", "--timeout", "100ms"], &path);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        stdout(&out),
        format!("timed out after 100ms: {} is locked\n", path.display())
    );
    let out = ticket(&["buy", "-n", "-E", "75"], &path);
    assert_eq!(out.status.code(), Some(75));
    assert_eq!(read(&path), "5\n", "nothing sold while flock(1) held it");

    // A blocking buyer waits for flock(1) to let go, then buys.
    let mut cmd = pk_std("ticket");
    cmd.arg("buy").arg(&path);
    let mut buyer = Running::start(cmd, false);
    // Still waiting: nothing sold yet (it cannot get past the lock).
    assert_eq!(read(&path), "5\n");
    drop(holder.child.stdin.take());
    assert!(holder.wait().success());
    buyer.wait_for(|l| l == "bought ticket 5 (4 left)");
    assert!(buyer.wait().success());
    assert_eq!(read(&path), "4\n");
}

#[test]
fn our_lock_excludes_flock_1() {
    let (_dir, path) = shop("50\n");
    // Each buyer holds the lock for 10ms (--yield); flock -n must find it
    // busy at least once while the locked rush runs.
    let mut cmd = pk_std("ticket");
    cmd.arg("rush")
        .arg(&path)
        .args(["--buyers", "50", "--yield"]);
    let mut rush = Running::start(cmd, false);
    rush.wait_for(|l| l.starts_with("rush: "));
    let mut busy = false;
    while !busy {
        let out = std::process::Command::new("flock")
            .args(["-n", "-E", "42"])
            .arg(&path)
            .arg("true")
            .output()
            .unwrap();
        busy = out.status.code() == Some(42);
        if rush.child.try_wait().unwrap().is_some() {
            break;
        }
    }
    assert!(busy, "flock(1) never saw our lock");
    assert!(rush.wait().success());
}

/// The pid among `pids` that holds a flock lock on `path`, per
/// /proc/locks, waiting up to a second for one to take it.
fn lock_holder(path: &Path, pids: &[i32]) -> Option<i32> {
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(path).ok()?.ino().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < deadline {
        let locks = std::fs::read_to_string("/proc/locks").ok()?;
        for line in locks.lines() {
            // 1: FLOCK  ADVISORY  WRITE 4242 fd:00:131234 0 EOF
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 5 && f[1] == "FLOCK" && f[5].rsplit(':').next() == Some(inode.as_str()) {
                if let Some(pid) = f[4].parse().ok().filter(|p| pids.contains(p)) {
                    return Some(pid);
                }
            }
        }
        std::thread::yield_now();
    }
    None
}

/// A small xorshift generator: random enough for kill times.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn buyers_killed_at_random_moments_never_tear_the_file_or_sell_twice() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut rng = Rng(seed);
    let (_dir, path) = shop("");
    let stock = 12u64;
    for round in 0..10 {
        let ctx = format!("seed {seed}, round {round}");
        assert_eq!(
            ticket(&["init", &stock.to_string()], &path).status.code(),
            Some(0)
        );
        // --yield holds the lock 10ms between read and write, so kills land
        // before, while waiting for, inside and after the critical section.
        let mut buyers: Vec<std::process::Child> = (0..16)
            .map(|_| {
                pk_std("ticket")
                    .arg("buy")
                    .arg(&path)
                    .arg("--yield")
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let pids: Vec<i32> = buyers.iter().map(|b| b.id() as i32).collect();
        for buyer in &mut buyers {
            match rng.next() % 3 {
                // Kill this buyer at a random moment of its life.
                0 => {
                    std::thread::sleep(Duration::from_micros(rng.next() % 20_000));
                    let _ = buyer.kill();
                }
                // Kill whichever buyer holds the lock, somewhere inside its
                // 10ms between read and write.
                1 => {
                    if let Some(pid) = lock_holder(&path, &pids) {
                        std::thread::sleep(Duration::from_micros(rng.next() % 10_000));
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
                _ => {}
            }
        }
        let mut reported = Vec::new();
        let mut killed = 0u64;
        for b in buyers {
            let out = b.wait_with_output().unwrap();
            let text = stdout(&out);
            match (out.status.code(), out.status.signal()) {
                (Some(0), _) => reported.push(
                    text.strip_prefix("bought ticket ")
                        .and_then(|t| t.split(' ').next()?.parse::<u64>().ok())
                        .unwrap_or_else(|| panic!("{ctx}: {text}")),
                ),
                (Some(1), _) => assert_eq!(text, "sold out\n", "{ctx}"),
                (None, Some(9)) => killed += 1,
                other => panic!("{ctx}: unexpected {other:?}: {out:?}"),
            }
        }
        let content = read(&path);
        let left = parse_count(content.as_bytes())
            .unwrap_or_else(|e| panic!("{ctx}: torn file {content:?}: {e}"));
        assert!(left <= stock, "{ctx}: {left} left of {stock}");
        let sold = stock - left;
        let distinct: BTreeSet<u64> = reported.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            reported.len(),
            "{ctx}: sold twice: {reported:?}"
        );
        // The numbers sold are stock, stock-1, ... left+1; every reported
        // one is among them, and only a killed buyer may have sold one
        // without reporting it.
        assert!(
            reported.iter().all(|t| (left + 1..=stock).contains(t)),
            "{ctx}: {reported:?} with {left} left"
        );
        assert!(
            reported.len() as u64 <= sold && sold <= reported.len() as u64 + killed,
            "{ctx}: sold {sold}, reported {reported:?}, killed {killed}"
        );
    }
    // No killed buyer left the lock held.
    let out = ticket(&["buy", "--no-wait"], &path);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{out:?}");
    assert!(!stdout(&out).starts_with("busy"), "{out:?}");
}

#[test]
fn bad_files_are_one_line_errors_and_stay_unchanged() {
    let beyond = "18446744073709551616\n";
    let table: &[(&str, &[u8])] = &[
        ("empty", b""),
        ("blank", b" \n"),
        ("abc", b"abc\n"),
        ("negative", b"-5\n"),
        ("plus", b"+5\n"),
        ("float", b"1e3\n"),
        ("two", b"1 2\n"),
        ("beyond u64", beyond.as_bytes()),
        ("nul", b"5\0\n"),
        ("binary", b"\xff\xfe"),
    ];
    for (what, content) in table {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("product");
        std::fs::write(&path, content).unwrap();
        for args in [
            &["buy"][..],
            &["buy", "--no-wait"],
            &["show"],
            &["rush", "--buyers", "3"],
        ] {
            let out = ticket(args, &path);
            assert_one_line_error(&out, "ticket", 65);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains(&format!("read({})", path.display())),
                "{what} {args:?}: {err}"
            );
            assert!(out.stdout.is_empty(), "{what} {args:?}");
            assert_eq!(&std::fs::read(&path).unwrap(), content, "{what} {args:?}");
        }
    }
    let long = vec![b' '; 5000];
    let (_dir, path) = shop(std::str::from_utf8(&long).unwrap());
    assert_one_line_error(&ticket(&["buy"], &path), "ticket", 65);
}

#[test]
fn missing_files_directories_links_and_fifos_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    for args in [&["buy"][..], &["show"], &["rush", "-b", "2"]] {
        let out = ticket(args, &missing);
        assert_one_line_error(&out, "ticket", 66);
        assert!(String::from_utf8_lossy(&out.stderr).ends_with("No such file or directory\n"));
    }
    assert!(!missing.exists());

    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let link = dir.path().join("link");
    let target = dir.path().join("target");
    std::fs::write(&target, "5\n").unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    for path in [&sub, &link, &fifo] {
        for args in [
            &["buy"][..],
            &["show"],
            &["init", "3"],
            &["rush", "-b", "2"],
        ] {
            let out = ticket(args, path);
            assert_one_line_error(&out, "ticket", 65);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(&path.display().to_string()), "{err}");
        }
    }
    assert_eq!(read(&target), "5\n", "the link's target is untouched");
}

#[test]
fn permission_denied_is_77() {
    // A file nobody else may read or write, in a directory anyone may enter;
    // as root the command runs as nobody, otherwise the file is mode 000.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("product");
    std::fs::write(&path, "5\n").unwrap();
    let mode = if is_root() { 0o600 } else { 0o000 };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    for args in [
        &["buy"][..],
        &["show"],
        &["init", "9"],
        &["rush", "-b", "2"],
    ] {
        let mut words = as_nobody();
        words.push(bin("pk-ticket").display().to_string());
        words.push(args[0].to_string());
        words.push(path.display().to_string());
        words.extend(args[1..].iter().map(|s| s.to_string()));
        let out = command(&words).output().unwrap();
        assert_one_line_error(&out, "ticket", 77);
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .ends_with(&format!("open({}): Permission denied\n", path.display())),
            "{out:?}"
        );
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(read(&path), "5\n");
}

#[test]
fn bad_flags_are_one_line_usage_errors() {
    let (_dir, path) = shop("5\n");
    let p = path.display().to_string();
    let table: &[&[&str]] = &[
        &["rush", &p, "--buyers", "0"],
        &["rush", &p, "--buyers", "4097"],
        &["rush", &p, "--buyers", "99999999999999999999"],
        &["rush", &p, "--buyers", "-1"],
        &["rush", &p, "--buyers", "abc"],
        &["rush", &p],
        &["init", &p, "abc"],
        &["init", &p, "-5"],
        &["init", &p, "+5"],
        &["init", &p, "1e3"],
        &["init", &p, "18446744073709551616"],
        &["init", &p, ""],
        &["init", &p],
        &["buy", &p, "--timeout", "soon"],
        &["buy", &p, "--timeout", "-1"],
        &["buy", &p, "--timeout", "1s", "--no-wait"],
        &["buy", &p, "-E", "256"],
        &["buy", &p, "--bogus"],
        &["buy"],
        &["show", &p, "extra"],
        &["sell", &p],
    ];
    for args in table {
        let out = pk("ticket").args(*args).output().unwrap();
        assert_usage(&out, "ticket");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_eq!(read(&path), "5\n", "{args:?}");
    }
}

#[test]
fn closed_stdout_ends_a_rush_quietly_and_reaps_every_buyer() {
    // 20 sales of 10ms each under the lock: head has long exited when the
    // buyer lines come.
    let (_dir, path) = shop("20\n");
    let head = assert_quiet_on_closed_stdout(&format!(
        "pk-ticket rush '{}' --buyers 20 --yield",
        path.display()
    ));
    assert!(head.starts_with("rush: 20 buyers"), "{head}");
}

#[test]
fn help_documents_commands_flags_and_output_lines() {
    assert_help(
        "ticket",
        &[],
        &[
            "init",
            "buy",
            "rush",
            "show",
            "flock",
            "Exit status",
            "65",
            "77",
        ],
    );
    for (sub, needles) in [
        (
            "buy",
            &[
                "--timeout",
                "--no-wait",
                "--conflict-exit-code",
                "--durable",
                "--yield",
                "bought ticket",
                "sold out",
                "busy",
                "timed out",
                "the sale is undone",
                "nothing sold: the count is",
            ][..],
        ),
        (
            "rush",
            &[
                "--buyers",
                "--no-lock",
                "--yield",
                "--quiet",
                "bought ticket",
                "sold out",
                "summary:",
                "duplicates:",
                "oversold",
            ],
        ),
        (
            "init",
            &["0600", "--durable", "temporary name", "never an empty one"],
        ),
        ("show", &["<count>"]),
    ] {
        assert_help("ticket", &[sub], needles);
    }
}

/// The system calls `pk-ticket <args> FILE` makes on FILE, from its open on,
/// as strace prints them; `None` when strace is not installed.
fn trace_sale(path: &Path, args: &[&str]) -> Option<Vec<String>> {
    if strace_missing() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("trace");
    let out = assert_cmd::Command::new("strace")
        .args(["-qq", "-e", "signal=none", "-e"])
        .arg("trace=openat,flock,pread64,pwrite64,ftruncate,fdatasync,fsync,rename,renameat2")
        .arg("-o")
        .arg(&log)
        .arg(bin("pk-ticket"))
        .arg(args[0])
        .arg(path)
        .args(&args[1..])
        .timeout(TIMEOUT)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let trace = read(&log);
    let quoted = format!("\"{}\"", path.display());
    let from = trace.lines().position(|l| l.contains(&quoted))?;
    Some(
        trace
            .lines()
            .skip(from)
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect(),
    )
}

#[test]
fn strace_shows_a_sale_is_flock_pread_one_pwrite_unlock() {
    let (_dir, path) = shop("9\n");
    let Some(calls) = trace_sale(&path, &["buy"]) else {
        eprintln!("skipped: strace is not installed");
        return;
    };
    let fd = calls[0].rsplit(' ').next().unwrap().to_string();
    assert!(
        calls[0].contains("O_RDWR|O_NONBLOCK|O_NOFOLLOW|O_CLOEXEC"),
        "{calls:?}"
    );
    assert_eq!(
        calls[1..].to_vec(),
        [
            format!("flock({fd}, LOCK_EX) = 0"),
            format!("pread64({fd}, \"9\\n\", 64, 0) = 2"),
            format!("pwrite64({fd}, \"8\\n\", 2, 0) = 2"),
            format!("flock({fd}, LOCK_UN) = 0"),
        ]
    );

    // Shorter text: padded to the old length in the one pwrite, then
    // truncated; --durable syncs before the lock is released.
    std::fs::write(&path, "10\n").unwrap();
    let calls = trace_sale(&path, &["buy", "--durable"]).unwrap();
    let fd = calls[0].rsplit(' ').next().unwrap().to_string();
    assert_eq!(
        calls[1..].to_vec(),
        [
            format!("flock({fd}, LOCK_EX) = 0"),
            format!("pread64({fd}, \"10\\n\", 64, 0) = 3"),
            format!("pwrite64({fd}, \"9\\n \", 3, 0) = 3"),
            format!("ftruncate({fd}, 2) = 0"),
            format!("fdatasync({fd}) = 0"),
            format!("flock({fd}, LOCK_UN) = 0"),
        ]
    );
}

#[test]
fn fork_failure_is_71_and_every_forked_buyer_is_reaped() {
    // As in pk-fork's test: drop to nobody (root ignores RLIMIT_NPROC) and
    // allow 3 processes, so some of the 10 forks fail.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("product");
    std::fs::write(&path, "10\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut words = as_nobody();
    words.extend(["prlimit".into(), "--nproc=3".into()]);
    words.push(bin("pk-ticket").display().to_string());
    words.extend([
        "rush".into(),
        path.display().to_string(),
        "-b".into(),
        "10".into(),
    ]);
    let out = command(&words).output().unwrap();
    assert_one_line_error(&out, "ticket", 71);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fork(buyer "), "{err}");
    let text = stdout(&out);
    let pids = rush_pids(&text);
    assert!(pids.len() < 10, "{text}");
    assert!(leftovers(&pids).is_empty());
    // The buyers that were forked bought normally; the file still parses.
    let left = parse_count(read(&path).as_bytes()).unwrap();
    assert_eq!(left, 10 - rush_tickets(&text).len() as u64, "{text}");
}

/// `strace -f -e inject=SPEC … pk-ticket ARGS`: run with the system calls
/// `specs` name made to fail (strace's own lines go to a log).
fn with_injected(specs: &[&str], args: &[&str], path: &Path) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut words: Vec<String> = ["strace", "-f", "-qq", "-o"].map(String::from).to_vec();
    words.push(dir.path().join("log").display().to_string());
    for spec in specs {
        words.push("-e".into());
        words.push(format!("inject={spec}"));
    }
    words.push(bin("pk-ticket").display().to_string());
    words.push(args[0].into());
    words.push(path.display().to_string());
    words.extend(args[1..].iter().map(|a| a.to_string()));
    command(&words).output().unwrap()
}

#[test]
fn a_failed_step_after_the_write_never_loses_a_ticket() {
    if strace_missing() {
        return;
    }
    // Each case: the calls made to fail, the flags, and what the buy must
    // come to. Whatever fails, a ticket reported is sold, and a ticket not
    // reported is still in the file, unless the error says it is not.
    type Case<'a> = (&'a [&'a str], &'a [&'a str], i32, &'a str, &'a str);
    let cases: [Case; 6] = [
        // The tidy-up after the write: the sale stands, 9 as `9\n `.
        (&["ftruncate:error=EIO"], &[], 0, "", "9"),
        (
            &["pwrite64:error=EIO"],
            &[],
            71,
            "product): Input/output error",
            "10",
        ),
        (
            &["pwrite64:error=ENOSPC"],
            &[],
            71,
            "No space left on device",
            "10",
        ),
        // --durable: a failed flush undoes the sale, and says how far.
        (
            &["fdatasync:error=EIO:when=1"],
            &["--durable"],
            71,
            "product): Input/output error; nothing sold: the count is back to 10",
            "10",
        ),
        (
            &["fdatasync:error=EIO"],
            &["--durable"],
            71,
            "the count is back to 10, but whether the disk holds 10 or 9 is unknown",
            "10",
        ),
        (
            &["fdatasync:error=EIO:when=1", "pwrite64:error=EIO:when=2"],
            &["--durable"],
            71,
            "the file says 9, and ticket 10 was sold to nobody",
            "9",
        ),
    ];
    for (specs, flags, code, message, left) in cases {
        let (_dir, path) = shop("10\n");
        let mut args = vec!["buy"];
        args.extend(flags);
        let out = with_injected(specs, &args, &path);
        let what = format!("{specs:?} {flags:?}");
        if code == 0 {
            assert_success(&out);
            assert_eq!(stdout(&out), "bought ticket 10 (9 left)\n", "{what}");
        } else {
            assert_one_line_error(&out, "ticket", code);
            assert!(out.stdout.is_empty(), "{what}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(message), "{what}: {err}");
        }
        assert_eq!(
            parse_count(read(&path).as_bytes()),
            Ok(left.parse().unwrap()),
            "{what}"
        );
    }
}

#[test]
fn a_sale_whose_line_cannot_be_written_is_undone() {
    let (_dir, path) = shop("10\n");
    // A full device: one line saying so, and the ticket is still for sale.
    let mut words: Vec<String> = ["sh", "-c", "exec \"$0\" buy \"$1\" >/dev/full"]
        .map(String::from)
        .to_vec();
    words.push(bin("pk-ticket").display().to_string());
    words.push(path.display().to_string());
    let out = command(&words).output().unwrap();
    assert_one_line_error(&out, "ticket", 71);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.ends_with(
            "write(stdout): No space left on device; nothing sold: the count is back to 10\n"
        ),
        "{err}"
    );
    assert_eq!(read(&path), "10\n");
    // A reader that has gone: the quiet stop of a closed pipe, nothing sold.
    let (r, w) = nix::unistd::pipe().unwrap();
    drop(r);
    // (timeout(1) for the time limit: assert_cmd would pipe stdout itself.)
    let out = std::process::Command::new("timeout")
        .arg(TIMEOUT.as_secs().to_string())
        .arg(bin("pk-ticket"))
        .arg("buy")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::from(w))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(141), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    assert_eq!(read(&path), "10\n");
    // The next buyer gets ticket 10.
    assert_eq!(
        stdout(&ticket(&["buy"], &path)),
        "bought ticket 10 (9 left)\n"
    );
}

#[test]
fn init_that_fails_leaves_no_file_or_the_old_one() {
    if strace_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("product");
    for (specs, flags) in [
        (&["pwrite64:error=ENOSPC"][..], &[][..]),
        (&["fdatasync:error=EIO"], &["--durable"]),
        (&["renameat2:error=EIO"], &[]),
    ] {
        let mut args = vec!["init", "5"];
        args.extend(flags);
        let out = with_injected(specs, &args, &path);
        assert_one_line_error(&out, "ticket", 71);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert!(left.is_empty(), "{specs:?}: {left:?}");
    }
    // An existing file keeps its content when the reset cannot be written.
    std::fs::write(&path, "7\n").unwrap();
    let out = with_injected(&["pwrite64:error=ENOSPC"], &["init", "5"], &path);
    assert_one_line_error(&out, "ticket", 71);
    assert_eq!(read(&path), "7\n");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn init_on_a_really_full_filesystem_leaves_no_file() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().display().to_string();
    // A one-page tmpfs, filled up; then init, then what is left there.
    let script = format!(
        "mount -t tmpfs -o size=4k tmpfs {mnt} || exit 99
         head -c 4096 /dev/zero > {mnt}/fill 2>/dev/null
         \"$0\" init {mnt}/product 5; echo status=$?
         ls -A {mnt}"
    );
    let out = command(&[
        "unshare".into(),
        "--mount".into(),
        "sh".into(),
        "-c".into(),
        script,
        bin("pk-ticket").display().to_string(),
    ])
    .output()
    .unwrap();
    let text = stdout(&out);
    if out.status.code() == Some(99) || text.is_empty() {
        eprintln!("skipped: cannot mount a tmpfs here: {out:?}");
        return;
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(text, "status=71\nfill\n", "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("pk-ticket: ") && err.contains("No space left on device"),
        "{err}"
    );
}

#[test]
fn init_durable_flushes_the_file_then_its_name() {
    if strace_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("product");
    let log = dir.path().join("log");
    let out = assert_cmd::Command::new("strace")
        .args(["-qq", "-y", "-e", "signal=none", "-e"])
        .arg("trace=fdatasync,fsync,renameat2,linkat,rename")
        .arg("-o")
        .arg(&log)
        .arg(bin("pk-ticket"))
        .args(["init", "--durable"])
        .arg(&path)
        .arg("5")
        .timeout(TIMEOUT)
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(read(&path), "5\n");
    let trace = read(&log);
    let calls: Vec<&str> = trace.lines().collect();
    let dir_name = format!("<{}>", dir.path().display());
    assert_eq!(calls.len(), 3, "{trace}");
    assert!(
        calls[0].starts_with("fdatasync(") && calls[0].contains(".tmp>"),
        "{trace}"
    );
    assert!(
        calls[1].starts_with("renameat2(") && calls[1].contains("RENAME_NOREPLACE) = 0"),
        "{trace}"
    );
    assert!(
        calls[2].starts_with("fsync(") && calls[2].contains(&dir_name),
        "{trace}"
    );
    // Without --durable, nothing is flushed.
    std::fs::remove_file(&path).unwrap();
    let out = assert_cmd::Command::new("strace")
        .args([
            "-qq",
            "-y",
            "-e",
            "signal=none",
            "-e",
            "trace=fdatasync,fsync",
            "-o",
        ])
        .arg(&log)
        .arg(bin("pk-ticket"))
        .arg("init")
        .arg(&path)
        .arg("5")
        .timeout(TIMEOUT)
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(read(&log), "");
}
