//! Pipes: round trips and bandwidth.

use std::time::Instant;

use super::{Scale, check, child, join_ok, us_per};
use crate::cmd::Result;
use crate::process::Builder;

/// Round trip of one byte through two pipes, raw or framed, per trip.
pub(super) fn pipe_round_trip(scale: Scale, framed: bool) -> Result<f64> {
    use crate::pipe::{self, FrameReader};
    use std::os::fd::AsFd;
    let n = scale.n(100_000);
    let (a_r, a_w) = pipe::pipe()?;
    let (b_r, b_w) = pipe::pipe()?;
    let gate = crate::sem::Semaphore::new(0)?;
    // The echo child holds copies of the parent's ends too, so it would
    // never see end of file: it echoes exactly n bytes instead.
    let mut echo = child(&gate, || {
        let mut frames = FrameReader::new(&a_r);
        let mut c = [0u8; 1];
        for _ in 0..n {
            let ok = if framed {
                matches!(frames.recv(), Ok(Some(f)) if b_w.send(f).is_ok())
            } else {
                matches!(pipe::read(a_r.as_fd(), &mut c), Ok(1))
                    && matches!(pipe::write(b_w.as_fd(), &c), Ok(1))
            };
            if !ok {
                return 1;
            }
        }
        0
    })?;
    drop((a_r, b_w));
    gate.post()?;
    let mut frames = FrameReader::new(&b_r);
    let mut c = [b'x'; 1];
    let t0 = Instant::now();
    for _ in 0..n {
        if framed {
            a_w.send(&c)?;
            check(
                frames.recv()?.is_some_and(|f| f == b"x"),
                "pipe_rtt",
                "lost the byte",
            )?;
        } else {
            a_w.write_all(&c)?;
            check(b_r.read(&mut c)? == 1, "pipe_rtt", "lost the byte")?;
        }
    }
    let t = us_per(t0, n);
    drop(frames);
    join_ok(&mut echo, "pipe_rtt", "the echo child failed")?;
    Ok(t)
}

pub(super) fn pipe_rtt(scale: Scale) -> Result<f64> {
    pipe_round_trip(scale, false)
}

pub(super) fn pipe_rtt_framed(scale: Scale) -> Result<f64> {
    pipe_round_trip(scale, true)
}

/// 1 GiB one way through a pipe in 64 KiB writes; GB per second.
pub(super) fn pipe_bw(scale: Scale) -> Result<f64> {
    const CHUNK: usize = 64 * 1024;
    let total = scale.n(1 << 30) as usize / CHUNK * CHUNK;
    let (r, w) = crate::pipe::pipe()?;
    let buf = vec![b'y'; CHUNK];
    let mut rbuf = vec![0u8; CHUNK];
    // No start gate here, unlike the other figures: the writer starts as
    // the C baseline's does, running from fork, with the clock started
    // right after fork. (A writer woken from a semaphore wait may be put
    // on the waker's CPU, so that both sides share one core at first.)
    let mut writer = Builder::new().name("bench").start(|| {
        for _ in 0..total / CHUNK {
            if w.write_all(&buf).is_err() {
                return 1;
            }
        }
        0
    })?;
    let t0 = Instant::now();
    drop(w);
    let mut got = 0;
    loop {
        match r.read(&mut rbuf)? {
            0 => break,
            k => got += k,
        }
    }
    let gbps = got as f64 / t0.elapsed().as_secs_f64() / 1e9;
    join_ok(&mut writer, "pipe_bw", "short transfer")?;
    check(got == total, "pipe_bw", "short transfer")?;
    Ok(gbps)
}
