//! Curves of starting processes: fork and spawn against the parent's
//! resident memory, and running one command per input line (pk-pool exec,
//! xargs -P, GNU parallel) against the number of lines.

use std::time::Instant;

use super::{budget, note, per_op, secs};
use crate::cmd::Result;
use crate::cmd::bench::{check, spawn::hold};
use crate::error::Error;
use crate::process::{self, Builder, Fork};

const MIB: f64 = (1 << 20) as f64;

/// Hold `mib` MiB of touched heap; the process's resident size in MiB
/// (VmRSS), or `None` when the machine lacks the memory.
fn resident_after(mib: f64, figure: &str) -> Result<Option<f64>> {
    match hold((mib * MIB) as usize, figure) {
        Err(e) if e.code() == crate::cmd::exit::DECLINED => {
            note(&format!("skipped {figure} at {mib} MiB: {e}"));
            return Ok(None);
        }
        r => r?,
    }
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| Error::io("read", "/proc/self/status", &e))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    Ok(Some(kb / 1024.0))
}

/// µs per operation of `op` (called with the operation's index) from a
/// parent holding `mib` MiB.
fn rss_point(
    mib: f64,
    quick: bool,
    figure: &str,
    mut op: impl FnMut(u64) -> Result<()>,
) -> Result<Option<(f64, f64)>> {
    let Some(rss) = resident_after(mib, figure)? else {
        return Ok(None);
    };
    let s = per_op(budget(quick), |k| {
        let t0 = Instant::now();
        for i in 0..k {
            op(i)?;
        }
        Ok(secs(t0))
    })?;
    Ok(Some((rss, s * 1e6)))
}

pub(super) fn fork_point(mib: f64, quick: bool) -> Result<Option<(f64, f64)>> {
    rss_point(mib, quick, "fork_rss", |i| {
        let code = (i & 0x7f) as u8;
        match process::fork_named("bench child")? {
            Fork::Child => process::_exit(i32::from(code)),
            Fork::Parent(pid) => check(
                process::waitpid(pid)? == crate::status::Status::Exited(code),
                "fork_rss",
                "wrong exit status",
            ),
        }
    })
}

pub(super) fn process_point(mib: f64, quick: bool) -> Result<Option<(f64, f64)>> {
    rss_point(mib, quick, "fork_rss", |i| {
        let code = (i & 0x7f) as i32;
        let mut p = Builder::new().name("bench").start(|| code)?;
        p.join(None)?;
        check(p.exitcode() == Some(code), "fork_rss", "wrong exitcode")
    })
}

pub(super) fn spawn_point(mib: f64, quick: bool) -> Result<Option<(f64, f64)>> {
    rss_point(mib, quick, "spawn_rss", |_| {
        let out = crate::spawn::Spawn::new(["/bin/true"])?.run()?;
        check(out.status.success(), "spawn_rss", "/bin/true failed")
    })
}

pub(super) fn std_command_point(mib: f64, quick: bool) -> Result<Option<(f64, f64)>> {
    rss_point(mib, quick, "spawn_rss", |_| {
        let status = std::process::Command::new("/bin/true")
            .status()
            .map_err(|e| Error::io("spawn", "/bin/true", &e))?;
        check(status.success(), "spawn_rss", "/bin/true failed")
    })
}

/// The CPU count: how many commands each tool runs at once.
fn cpus() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Jobs per second of `argv` reading `jobs` input lines (1, 2, 3 …) on
/// stdin, each line one run of `true`; the median of three runs up to
/// 1 000 jobs, one run above. The tool must exit 0.
fn lines_through(argv: &[String], jobs: f64, figure: &str) -> Result<Option<(f64, f64)>> {
    use std::io::{Seek, Write};
    let n = jobs as u64;
    let mut input = tempfile_in_tmp()?;
    let text: String = (1..=n).map(|i| format!("{i}\n")).collect();
    input
        .write_all(text.as_bytes())
        .map_err(|e| Error::io("write", "the input lines", &e))?;
    let runs = if n <= 1_000 { 3 } else { 1 };
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        input
            .rewind()
            .map_err(|e| Error::io("lseek", "the input lines", &e))?;
        let stdin = input
            .try_clone()
            .map_err(|e| Error::io("dup", "the input lines", &e))?;
        let t0 = Instant::now();
        let status = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(stdin)
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(|e| Error::io("spawn", &argv[0], &e))?;
        times.push(secs(t0));
        check(status.success(), figure, "a job failed")?;
    }
    times.sort_by(f64::total_cmp);
    Ok(Some((jobs, jobs / times[times.len() / 2])))
}

/// An anonymous temporary file (O_TMPFILE where it works).
fn tempfile_in_tmp() -> Result<std::fs::File> {
    let dir = std::env::temp_dir();
    let path = dir.join(format!("pk-bench-lines-{}", process::getpid()));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Error::io("open", path.display(), &e))?;
    let _ = std::fs::remove_file(&path);
    Ok(f)
}

pub(super) fn exec_pk_pool_point(jobs: f64, _quick: bool) -> Result<Option<(f64, f64)>> {
    let exe = std::env::current_exe().map_err(|e| Error::io("readlink", "/proc/self/exe", &e))?;
    let pk_pool = exe.with_file_name("pk-pool");
    if !pk_pool.exists() {
        note(&format!("skipped pk-pool exec: no {}", pk_pool.display()));
        return Ok(None);
    }
    let argv = [
        pk_pool.display().to_string(),
        "exec".into(),
        "-j".into(),
        cpus().to_string(),
        "--".into(),
        "true".into(),
    ];
    lines_through(&argv, jobs, "exec_jobs pk-pool")
}

pub(super) fn exec_xargs_point(jobs: f64, _quick: bool) -> Result<Option<(f64, f64)>> {
    let argv = ["xargs", "-P", &cpus().to_string(), "-n", "1", "true"].map(String::from);
    lines_through(&argv, jobs, "exec_jobs xargs")
}

/// Whether GNU parallel (not moreutils' parallel) is on PATH.
fn have_gnu_parallel() -> bool {
    std::process::Command::new("parallel")
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("GNU parallel"))
}

pub(super) fn exec_parallel_point(jobs: f64, _quick: bool) -> Result<Option<(f64, f64)>> {
    if !have_gnu_parallel() {
        note("skipped GNU parallel: not installed (apt-get install parallel)");
        return Ok(None);
    }
    // GNU parallel starts about a hundred jobs a second here: 10 000
    // would take minutes by itself.
    if jobs > 1_000.0 {
        note(&format!(
            "skipped GNU parallel at {jobs} jobs: more than 1 000 take minutes"
        ));
        return Ok(None);
    }
    let argv = ["parallel", "--will-cite", "-j", &cpus().to_string(), "true"].map(String::from);
    lines_through(&argv, jobs, "exec_jobs parallel")
}
