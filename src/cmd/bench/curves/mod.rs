//! Curves: how a cost grows with the size of the work. Each curve has an x
//! axis (the parent's resident memory, items, workers, message size,
//! buyers, jobs) and several series: posixkit's, and the peers pk-bench
//! can run itself (std, xargs, GNU parallel, flock(1) in a shell loop).
//! The C limit (`bench/c/curves.c`) and Python (`bench/python/curves.py`)
//! print points of the same curves under the same names; `scripts/bench.sh
//! --plot` runs the three side by side, point by point, and `pk-bench
//! --plot` draws them.
//!
//! A point is one JSON line:
//! `{"curve":"fork_rss","series":"posixkit fork","x":256.0,"y":812.5}`.

use std::time::Instant;

use crate::cmd::Result;

mod ipc;
mod process;

/// A point as a series measures it (see [`Series::point`]).
pub(super) type Point = Result<Option<(f64, f64)>>;

/// One line of a curve, measured by pk-bench.
pub(super) struct Series {
    pub name: &'static str,
    /// The point at `x`: `(x as measured, y)`. The measured x differs
    /// from the asked one where the work decides it (resident memory).
    /// `Ok(None)`: this series has no point there (a tool missing, a size
    /// it does not run at), with a message on stderr.
    pub point: fn(x: f64, quick: bool) -> Point,
}

/// A curve: what is drawn, and where to measure it.
pub(crate) struct Curve {
    pub name: &'static str,
    pub title: &'static str,
    pub x_label: &'static str,
    pub y_label: &'static str,
    /// Rates: a higher line is better (the y axis says which).
    pub higher_is_better: bool,
    /// The x values to measure at (full run, --quick run).
    pub xs: fn(quick: bool) -> Vec<f64>,
    pub series: &'static [Series],
}

/// 1, 2, 3 … 2 × the CPU count: pool workers.
fn workers(quick: bool) -> Vec<f64> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let top = if quick { cores.min(2) } else { 2 * cores };
    (1..=top).map(|w| w as f64).collect()
}

macro_rules! xs {
    ($full:expr, $quick:expr) => {{
        fn xs(quick: bool) -> Vec<f64> {
            if quick {
                $quick.to_vec()
            } else {
                $full.to_vec()
            }
        }
        xs
    }};
}

pub(crate) const CURVES: &[Curve] = &[
    Curve {
        name: "fork_rss",
        title: "fork + _exit + waitpid, by the parent's resident memory",
        x_label: "parent resident memory (MiB)",
        y_label: "µs per child",
        higher_is_better: false,
        xs: xs!([0.0, 256.0, 1024.0, 4096.0], [0.0, 16.0, 64.0, 256.0]),
        series: &[
            Series {
                name: "posixkit fork",
                point: process::fork_point,
            },
            Series {
                name: "posixkit Process",
                point: process::process_point,
            },
        ],
    },
    Curve {
        name: "spawn_rss",
        title: "start /bin/true and wait, by the parent's resident memory",
        x_label: "parent resident memory (MiB)",
        y_label: "µs per run",
        higher_is_better: false,
        xs: xs!([0.0, 256.0, 1024.0, 4096.0], [0.0, 16.0, 64.0, 256.0]),
        series: &[
            Series {
                name: "posixkit Spawn",
                point: process::spawn_point,
            },
            Series {
                name: "std Command",
                point: process::std_command_point,
            },
        ],
    },
    Curve {
        name: "pool_map_items",
        title: "Pool(2).map(square) on warm workers, by the number of items",
        x_label: "items per map",
        y_label: "ns per item",
        higher_is_better: false,
        xs: xs!([10.0, 100.0, 1e3, 1e4, 1e5, 1e6], [10.0, 100.0, 1e3, 1e4]),
        series: &[Series {
            name: "posixkit",
            point: ipc::pool_items_point,
        }],
    },
    Curve {
        name: "pool_map_workers",
        title: "Pool(N).map(square) of 100 000 items, by the number of workers",
        x_label: "worker processes",
        y_label: "ns per item",
        higher_is_better: false,
        xs: workers,
        series: &[Series {
            name: "posixkit",
            point: ipc::pool_workers_point,
        }],
    },
    Curve {
        name: "queue_clients",
        title: "bounded queue, N producer and N consumer processes, 16-byte messages",
        x_label: "producers (= consumers)",
        y_label: "messages per second",
        higher_is_better: true,
        xs: xs!([1.0, 2.0, 4.0, 8.0, 16.0, 32.0], [1.0, 2.0, 4.0]),
        series: &[Series {
            name: "posixkit",
            point: ipc::queue_clients_point,
        }],
    },
    Curve {
        name: "queue_size",
        title: "bounded queue, one producer and one consumer process, by message size",
        x_label: "message size (bytes)",
        y_label: "messages per second",
        higher_is_better: true,
        xs: xs!(
            [8.0, 64.0, 512.0, 4096.0, 16384.0, 65536.0],
            [8.0, 512.0, 65536.0]
        ),
        series: &[Series {
            name: "posixkit",
            point: ipc::queue_size_point,
        }],
    },
    Curve {
        name: "ticket_buyers",
        title: "ticket purchases from one flock(2)-locked file, by concurrent buyers",
        x_label: "buyer processes",
        y_label: "purchases per second",
        higher_is_better: true,
        xs: xs!([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0], [1.0, 4.0, 16.0]),
        series: &[
            Series {
                name: "posixkit",
                point: ipc::ticket_point,
            },
            Series {
                name: "flock(1) shell buyers",
                point: ipc::ticket_shell_point,
            },
        ],
    },
    Curve {
        name: "pipe_rtt_size",
        title: "pipe round trip between two processes, by message size",
        x_label: "message size (bytes)",
        y_label: "µs per round trip",
        higher_is_better: false,
        xs: xs!(
            [1.0, 64.0, 512.0, 4096.0, 16384.0, 65536.0],
            [1.0, 4096.0, 65536.0]
        ),
        series: &[
            Series {
                name: "posixkit",
                point: ipc::pipe_rtt_point,
            },
            Series {
                name: "posixkit framed",
                point: ipc::pipe_rtt_framed_point,
            },
        ],
    },
    Curve {
        name: "pipe_bw_size",
        title: "pipe bandwidth one way, by the size of each write",
        x_label: "bytes per write",
        y_label: "GB/s",
        higher_is_better: true,
        xs: xs!(
            [4096.0, 16384.0, 65536.0, 262144.0, 1048576.0],
            [4096.0, 65536.0, 1048576.0]
        ),
        series: &[
            Series {
                name: "posixkit",
                point: ipc::pipe_bw_point,
            },
            Series {
                name: "posixkit, 1 MiB pipe buffer",
                point: ipc::pipe_bw_big_point,
            },
            Series {
                name: "posixkit PageWriter (vmsplice)",
                point: ipc::pipe_bw_vmsplice_point,
            },
        ],
    },
    Curve {
        name: "exec_jobs",
        title: "running `true` once per input line on CPU-count workers, by jobs",
        x_label: "jobs (input lines)",
        y_label: "jobs per second",
        higher_is_better: true,
        xs: xs!([100.0, 1e3, 1e4, 1e5], [100.0, 1e3]),
        series: &[
            Series {
                name: "pk-pool exec",
                point: process::exec_pk_pool_point,
            },
            Series {
                name: "xargs -P",
                point: process::exec_xargs_point,
            },
            Series {
                name: "GNU parallel",
                point: process::exec_parallel_point,
            },
        ],
    },
];

/// The curve called `name`.
pub(crate) fn find(name: &str) -> Option<&'static Curve> {
    CURVES.iter().find(|c| c.name == name)
}

/// A note on stderr (skips, progress).
fn note(msg: &str) {
    let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("{msg}\n").as_bytes());
}

/// Seconds per operation: `run(k)` does k operations and returns the
/// seconds they took. k grows tenfold until one run takes a twentieth of
/// `budget` seconds, then is set so a run takes about `budget`; the
/// result is the median of three such runs, divided by k.
fn per_op(budget: f64, mut run: impl FnMut(u64) -> Result<f64>) -> Result<f64> {
    let mut k = 1u64;
    let mut t = run(k)?;
    while t < budget / 20.0 && k < 1 << 32 {
        k *= 10;
        t = run(k)?;
    }
    let k = ((budget * k as f64 / t.max(1e-9)) as u64).clamp(1, k.saturating_mul(40));
    let mut s = [run(k)?, run(k)?, run(k)?];
    s.sort_by(f64::total_cmp);
    Ok(s[1] / k as f64)
}

/// The time budget of one timed run of a point, in seconds.
fn budget(quick: bool) -> f64 {
    if quick { 0.02 } else { 0.15 }
}

/// Seconds since `t0`.
fn secs(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64()
}

/// `pk-bench --curve NAME… [--at X…]`: print each series' points.
pub(super) fn run(
    names: &[String],
    at: &[f64],
    quick: bool,
    out: &mut crate::cmd::Out,
) -> Result<u8> {
    let mut chosen = Vec::new();
    for name in names {
        chosen.push(find(name).ok_or_else(|| {
            crate::error::Error::invalid(
                "--curve",
                format!("unknown curve '{name}' (see --list-curves)"),
            )
        })?);
    }
    for c in chosen {
        let xs = if at.is_empty() {
            (c.xs)(quick)
        } else {
            at.to_vec()
        };
        for x in xs {
            for s in c.series {
                note(&format!("running {} {} at {x} ...", c.name, s.name));
                if let Some((x, y)) = (s.point)(x, quick)? {
                    crate::outln!(
                        out,
                        "{{\"curve\":\"{}\",\"series\":\"{}\",\"x\":{x},\"y\":{y:.4}}}",
                        c.name,
                        s.name
                    )?;
                }
            }
        }
    }
    Ok(crate::cmd::exit::OK)
}
