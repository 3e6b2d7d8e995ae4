//! Named IPC for scripts: the named queue between two independent
//! processes against its peers (a POSIX message queue, a pipe; Python's
//! `multiprocessing.Queue` in bench/python), `pk-sem run -- true` against
//! `flock -n FILE true` (and GNU sem when it is installed), and how long a
//! SIGKILLed holder's slot takes to reach a waiter.

use std::ffi::CString;
use std::process::{Command, Stdio};
use std::time::Instant;

use nix::time::{ClockId, clock_gettime};

use super::{Scale, check, child, join_ok, us_per};
use crate::cmd::Result;
use crate::error::{Context, Error};
use crate::queue::Queue;
use crate::sem::robust::{RobustSemaphore, Taken};
use crate::sem::{Deadline, Semaphore};
use crate::shm::SharedArray;
use crate::sys::mq::Mq;

/// A name of this run's own for a figure's object.
fn unique(what: &str) -> String {
    format!("/pk-bench-{what}-{}", std::process::id())
}

/// 16-byte messages numbered `i`, as the other queue figures use.
fn msg(i: u64) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[..8].copy_from_slice(&i.to_le_bytes());
    m
}

/// One producer and one consumer process, each opening the queue by
/// name, 16-byte messages, capacity 1024: messages per second through the
/// consumer.
pub(super) fn queue_named(scale: Scale) -> Result<f64> {
    let n = scale.n(1_000_000);
    let name = unique("queue");
    let _ = crate::queue::unlink(&name);
    drop(Queue::create(&name, 1024, 16)?);
    let gate = Semaphore::new(0)?;
    let run = || -> Result<f64> {
        let mut producer = child(&gate, || {
            let Ok(q) = Queue::open(&name) else { return 1 };
            for i in 0..n {
                if q.put(&msg(i)).is_err() {
                    return 1;
                }
            }
            0
        })?;
        let q = Queue::open(&name)?;
        let mut buf = Vec::with_capacity(16);
        gate.post()?;
        let t0 = Instant::now();
        for i in 0..n {
            q.get_into(&mut buf)?;
            check(buf[..] == msg(i), "queue_named", "out of order")?;
        }
        let rate = n as f64 / t0.elapsed().as_secs_f64();
        join_ok(&mut producer, "queue_named", "the producer failed")?;
        Ok(rate)
    };
    let r = run();
    let _ = crate::queue::unlink(&name);
    r
}

/// The same through a POSIX message queue of 10 messages (the most an
/// unprivileged user may ask for by default: /proc/sys/fs/mqueue/msg_max).
pub(super) fn queue_posix_mq(scale: Scale) -> Result<f64> {
    let n = scale.n(300_000);
    let name = CString::new(unique("mq")).expect("no NUL");
    let _ = Mq::unlink(&name);
    let what = name.to_string_lossy().into_owned();
    drop(Mq::create(&name, 10, 16).map_err(|e| Error::sys("mq_open", &what, e))?);
    let gate = Semaphore::new(0)?;
    let run = || -> Result<f64> {
        let mut producer = child(&gate, || {
            let Ok(q) = Mq::open(&name) else { return 1 };
            for i in 0..n {
                if q.send(&msg(i)).is_err() {
                    return 1;
                }
            }
            0
        })?;
        let q = Mq::open(&name).map_err(|e| Error::sys("mq_open", &what, e))?;
        let mut buf = [0u8; 16];
        gate.post()?;
        let t0 = Instant::now();
        for i in 0..n {
            let len = q
                .receive(&mut buf)
                .map_err(|e| Error::sys("mq_receive", &what, e))?;
            check(len == 16 && buf == msg(i), "queue_posix_mq", "out of order")?;
        }
        let rate = n as f64 / t0.elapsed().as_secs_f64();
        join_ok(&mut producer, "queue_posix_mq", "the producer failed")?;
        Ok(rate)
    };
    let r = run();
    let _ = Mq::unlink(&name);
    r
}

/// The same through a pipe: one 16-byte write(2) and one read(2) of 16
/// bytes per message.
pub(super) fn queue_pipe(scale: Scale) -> Result<f64> {
    let n = scale.n(1_000_000);
    let (r, w) = crate::pipe::pipe()?;
    let gate = Semaphore::new(0)?;
    let mut producer = child(&gate, || {
        for i in 0..n {
            if w.write_all(&msg(i)).is_err() {
                return 1;
            }
        }
        0
    })?;
    drop(w);
    let mut buf = [0u8; 16];
    gate.post()?;
    let t0 = Instant::now();
    for i in 0..n {
        let got = r.read_full(&mut buf)?;
        check(got == 16 && buf == msg(i), "queue_pipe", "out of order")?;
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    join_ok(&mut producer, "queue_pipe", "the producer failed")?;
    Ok(rate)
}

/// The pk-sem binary next to this one.
fn pk_sem() -> Result<std::path::PathBuf> {
    let me = std::env::current_exe().ctx("readlink", "/proc/self/exe")?;
    Ok(me.with_file_name("pk-sem"))
}

/// Microseconds per run of `program args`, which must exit 0.
fn per_call(scale: Scale, figure: &str, program: &std::path::Path, args: &[&str]) -> Result<f64> {
    let n = scale.n(300);
    let t0 = Instant::now();
    for _ in 0..n {
        let st = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .status()
            .ctx("spawn", program.display())?;
        check(st.success(), figure, "the command failed")?;
    }
    Ok(us_per(t0, n))
}

/// `pk-sem run --name /X -- true`, per call.
pub(super) fn sem_run_true(scale: Scale) -> Result<f64> {
    let name = unique("run");
    let r = per_call(
        scale,
        "sem_run_true",
        &pk_sem()?,
        &["run", "--name", &name, "--", "true"],
    );
    let _ = RobustSemaphore::unlink(&name);
    r
}

/// `flock -n FILE true`, per call: the same work with util-linux flock(1).
pub(super) fn flock_n_true(scale: Scale) -> Result<f64> {
    let path = std::env::temp_dir().join(format!("pk-bench-flock-{}", std::process::id()));
    let p = path.display().to_string();
    let r = per_call(
        scale,
        "flock_n_true",
        std::path::Path::new("flock"),
        &["-n", &p, "true"],
    );
    let _ = std::fs::remove_file(&path);
    r
}

/// `sem --fg --id X -j1 true` (GNU parallel's sem), per call: 15 calls
/// a repetition, as each takes about 150 ms.
pub(super) fn gnu_sem_true(scale: Scale) -> Result<f64> {
    let id = format!("pk-bench-{}", std::process::id());
    let n = Scale(scale.0 / 20.0);
    let r = per_call(
        n,
        "gnu_sem_true",
        std::path::Path::new("sem"),
        &["--fg", "--id", &id, "-j1", "true"],
    );
    // GNU sem keeps its semaphore as a directory under ~/.parallel.
    if let Some(home) = std::env::var_os("HOME") {
        let dir = std::path::Path::new(&home)
            .join(".parallel/semaphores")
            .join(format!("id-{id}"));
        let _ = std::fs::remove_dir_all(dir);
    }
    r
}

/// Whether a figure can run here: GNU sem's only where it is installed.
pub(super) fn available(figure: &str) -> bool {
    figure != "gnu_sem_true_us"
        || std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("sem").is_file()))
}

fn now_ns() -> Result<u64> {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map_err(|e| Error::sys("clock_gettime", "CLOCK_MONOTONIC", e))?;
    Ok(t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
}

/// A process holds the only slot of a robust semaphore; another waits for
/// it, asleep in the kernel. Microseconds from the holder's SIGKILL to the
/// waiter holding the slot.
pub(super) fn sem_heal(scale: Scale) -> Result<f64> {
    let n = scale.n(50);
    let name = unique("heal");
    let _ = RobustSemaphore::unlink(&name);
    let sem = RobustSemaphore::create(&name, 1)?;
    let taken_at = SharedArray::<u64>::new(1)?;
    let (gate, ready) = (Semaphore::new(0)?, Semaphore::new(0)?);
    let mut total = 0u64;
    let run = || -> Result<u64> {
        let holder = child(&gate, || {
            if sem.acquire_until(Deadline::Never).ok() != Some(Taken::Yes) || ready.post().is_err()
            {
                return 1;
            }
            loop {
                std::thread::sleep(std::time::Duration::from_secs(60));
            }
        })?;
        gate.post()?;
        ready.wait()?;
        let mut waiter = child(&gate, || match sem.acquire_until(Deadline::Never) {
            Ok(Taken::Yes) => {
                taken_at.set(0, now_ns().unwrap_or(0));
                0
            }
            _ => 1,
        })?;
        gate.post()?;
        while sem.waiting()? == 0 {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        let t0 = now_ns()?;
        holder.kill()?;
        join_ok(&mut waiter, "sem_heal", "the waiter failed")?;
        let mut holder = holder;
        holder.join(None)?;
        Ok(taken_at.get(0).saturating_sub(t0))
    };
    for _ in 0..n {
        match run() {
            Ok(ns) => total += ns,
            Err(e) => {
                let _ = RobustSemaphore::unlink(&name);
                return Err(e);
            }
        }
        // The waiter exited holding it: the kernel gave it back.
        check(sem.free()? == 1, "sem_heal", "the slot did not come back")?;
    }
    RobustSemaphore::unlink(&name)?;
    Ok(total as f64 / n as f64 / 1e3)
}
