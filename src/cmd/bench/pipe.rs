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

/// 1 GiB one way through a pipe in 64 KiB buffers lent to the pipe with
/// vmsplice(2) ([`crate::pipe::PageWriter`]); read(2) on the other side
/// as in `pipe_bw`. GB per second.
pub(super) fn pipe_bw_vmsplice(scale: Scale) -> Result<f64> {
    const CHUNK: usize = 64 * 1024;
    vmsplice_bw(CHUNK, scale.n(1 << 30) as usize, None, "pipe_bw_vmsplice")
}

/// GB per second of `total` bytes (rounded down to whole buffers) through
/// a pipe (of `capacity` bytes, or the default) in buffers of `chunk`
/// bytes lent with vmsplice(2) and read with read(2).
///
/// As the C limit's writer hands the same 64 KiB of bytes to write(2)
/// again and again, the writer here fills a buffer only when it is new and
/// hands over the bytes it holds. It stamps buffer i with i in its first
/// 8 bytes; the reader checks every stamp that starts a buffer, so a
/// buffer reused before it was read, which would carry a later stamp, fails
/// the figure.
pub(super) fn vmsplice_bw(
    chunk: usize,
    total: usize,
    capacity: Option<usize>,
    figure: &str,
) -> Result<f64> {
    const STAMP: usize = 8;
    let chunk = chunk.max(STAMP);
    let total = total / chunk * chunk;
    let (r, w) = crate::pipe::pipe()?;
    if let Some(bytes) = capacity {
        w.set_capacity(bytes)?;
    }
    let mut rbuf = vec![0u8; chunk];
    let mut writer = Builder::new().name("bench").start(|| {
        let Ok(mut pages) = crate::pipe::PageWriter::new(w, chunk) else {
            return 1;
        };
        for i in 0..(total / chunk) as u64 {
            match pages.buffer() {
                Ok(buf) => {
                    if buf[STAMP] != b'y' {
                        buf.fill(b'y');
                    }
                    buf[..STAMP].copy_from_slice(&i.to_le_bytes());
                }
                Err(_) => return 1,
            }
            if pages.commit(chunk).is_err() {
                return 1;
            }
        }
        0
    })?;
    let t0 = Instant::now();
    let mut got = 0usize;
    let mut wrong = false;
    loop {
        let k = r.read(&mut rbuf)?;
        if k == 0 {
            break;
        }
        // The buffers that start inside this read, stamp and all.
        let mut at = got.div_ceil(chunk) * chunk;
        while at + STAMP <= got + k {
            let stamp = &rbuf[at - got..at - got + STAMP];
            wrong |= stamp != ((at / chunk) as u64).to_le_bytes();
            at += chunk;
        }
        got += k;
    }
    let gbps = got as f64 / t0.elapsed().as_secs_f64() / 1e9;
    join_ok(&mut writer, figure, "short transfer")?;
    check(got == total, figure, "short transfer")?;
    check(
        !wrong,
        figure,
        "a buffer was overwritten before it was read",
    )?;
    Ok(gbps)
}
