//! `pk-bench`: every primitive timed through the library: median and spread
//! of several repetitions after a warm-up.
//!
//! Figure names match the C baselines where the work is the same (for
//! example `fork_wait_us`), so a table can put posixkit, Python and the C
//! limit side by side.

use std::time::Instant;

use clap::Parser;

use crate::cmd::Out;
use crate::error::{Error, Result};
use crate::process::{self, Builder, Fork};
use crate::{exit, outln};

const AFTER_HELP: &str = "\
Output: one line per figure,
  <figure> <median> <unit> (min <min>, max <max>, <reps> reps)
or with --json one JSON object per line:
  {\"figure\":\"fork_wait_us\",\"unit\":\"us\",\"median\":148.2,\"min\":140.1,\"max\":160.3,\"reps\":7}
Progress lines (`running <figure> ...`) go to stderr.

Figures (unit; lower is better unless marked higher):
  fork_wait_us              fork + _exit(code) + waitpid + WEXITSTATUS, per child
  process_start_join_us     Process start (fork, pidfd) + join + exitcode, per child
  pool_map10k_warm_us       Pool of 2, map(square) over 10 000 ints in chunks of 1 250, pool already up
  pool_apply_async_rtt_us   Pool of 2, one apply_async(square) + get, round trip

--quick: 1 warm-up, 3 reps, a tenth of the work: a smoke run, not a figure to quote.

Exit status: 0 when every figure ran; 2 for a bad flag or an unknown figure;
71 when a system call fails.";

/// Time each primitive through the library; print medians and spreads.
#[derive(Debug, Parser)]
#[command(name = "pk-bench", version, after_help = AFTER_HELP)]
pub struct Args {
    /// Run only this figure (repeatable); see the list below.
    #[arg(long, value_name = "FIGURE")]
    pub only: Vec<String>,

    /// A quick smoke run: fewer repetitions and a tenth of the work.
    #[arg(long)]
    pub quick: bool,

    /// Repetitions per figure (1-99), after one warm-up run.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=99))]
    pub reps: Option<u32>,

    /// Print one JSON object per figure instead of text.
    #[arg(long)]
    pub json: bool,

    /// List the figure names and exit.
    #[arg(long)]
    pub list: bool,
}

/// How much work one sample does: a base count scaled by --quick.
#[derive(Debug, Clone, Copy)]
pub struct Scale(f64);

impl Scale {
    fn n(self, base: u64) -> u64 {
        ((base as f64 * self.0) as u64).max(1)
    }
}

type Sample = fn(Scale) -> Result<f64>;

/// One benchmark figure.
struct Figure {
    name: &'static str,
    unit: &'static str,
    sample: Sample,
}

const fn fig(name: &'static str, unit: &'static str, sample: Sample) -> Figure {
    Figure { name, unit, sample }
}

const FIGURES: &[Figure] = &[
    fig("fork_wait_us", "us", fork_wait),
    fig("process_start_join_us", "us", process_start_join),
    fig("pool_map10k_warm_us", "us", pool_map10k_warm),
    fig("pool_apply_async_rtt_us", "us", pool_apply_async_rtt),
];

/// Run the benchmarks.
pub fn run(args: Args, out: &mut Out) -> Result<u8> {
    if args.list {
        for f in FIGURES {
            outln!(out, "{} {}", f.name, f.unit)?;
        }
        return Ok(exit::OK);
    }
    for name in &args.only {
        if !FIGURES.iter().any(|f| f.name == name) {
            return Err(Error::usage(
                "--only",
                format!("unknown figure '{name}' (see --list)"),
            ));
        }
    }
    let scale = Scale(if args.quick { 0.1 } else { 1.0 });
    let reps = args.reps.unwrap_or(if args.quick { 3 } else { 7 }) as usize;
    for f in FIGURES
        .iter()
        .filter(|f| args.only.is_empty() || args.only.iter().any(|o| o == f.name))
    {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("running {} ...\n", f.name).as_bytes(),
        );
        (f.sample)(Scale(scale.0 / 10.0))?; // warm-up
        let mut samples = Vec::with_capacity(reps);
        for _ in 0..reps {
            samples.push((f.sample)(scale)?);
        }
        samples.sort_by(f64::total_cmp);
        let median = median(&samples);
        let (min, max) = (samples[0], samples[samples.len() - 1]);
        if args.json {
            outln!(
                out,
                "{{\"figure\":\"{}\",\"unit\":\"{}\",\"median\":{median:.3},\"min\":{min:.3},\"max\":{max:.3},\"reps\":{reps}}}",
                f.name,
                f.unit
            )?;
        } else {
            outln!(
                out,
                "{} {median:.3} {} (min {min:.3}, max {max:.3}, {reps} reps)",
                f.name,
                f.unit
            )?;
        }
    }
    Ok(exit::OK)
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Microseconds per item for `n` items done since `t0`.
fn us_per(t0: Instant, n: u64) -> f64 {
    t0.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// fork + `_exit(i & 0x7f)` + waitpid + check WEXITSTATUS, as the C baseline does.
fn fork_wait(scale: Scale) -> Result<f64> {
    let n = scale.n(3000);
    let t0 = Instant::now();
    for i in 0..n {
        let code = (i & 0x7f) as u8;
        // SAFETY: pk-bench is single-threaded when it forks, and the child
        // only calls _exit.
        match unsafe { process::fork() }.map_err(|e| Error::sys("fork", "bench child", e))? {
            Fork::Child => process::_exit(i32::from(code)),
            Fork::Parent(pid) => {
                let status = process::waitpid(pid)?;
                check(
                    status == crate::status::Status::Exited(code),
                    "fork_wait",
                    "wrong exit status",
                )?;
            }
        }
    }
    Ok(us_per(t0, n))
}

/// `Process` start + join + exitcode check, as Python's Process(...).start(); join().
fn process_start_join(scale: Scale) -> Result<f64> {
    let n = scale.n(2000);
    let t0 = Instant::now();
    for i in 0..n {
        let code = (i & 0x7f) as i32;
        // SAFETY: single-threaded, and the closure only returns a code.
        let mut p = unsafe { Builder::new().name("bench").start(|| code) }?;
        p.join(None)?;
        check(
            p.exitcode() == Some(code),
            "process_start_join",
            "wrong exitcode",
        )?;
    }
    Ok(us_per(t0, n))
}

/// A benchmark that computed a wrong answer is an error, not a figure.
fn check(ok: bool, figure: &str, why: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::data("check", figure, why).with_code(exit::OS_ERR))
    }
}

fn bench_pool() -> Result<crate::pool::Pool> {
    // SAFETY: pk-bench is single-threaded; the pool forks only from this thread.
    unsafe { crate::pool::Pool::new(2, crate::cmd::pool::registry()) }
}

/// map(square) of 10 000 items in chunks of 1 250 on a warm pool of 2, per map.
fn pool_map10k_warm(scale: Scale) -> Result<f64> {
    let maps = scale.n(200);
    let args: Vec<[u8; 8]> = (0..10_000i64).map(i64::to_le_bytes).collect();
    let mut pool = bench_pool()?;
    pool.map("square", args.iter().map(|a| &a[..]), 1250)?; // warm the workers
    let t0 = Instant::now();
    for _ in 0..maps {
        let r = pool.map("square", args.iter().map(|a| &a[..]), 1250)?;
        check(
            r.get(9999) == Ok(&(9999i64 * 9999).to_le_bytes()[..]),
            "pool_map10k_warm",
            "wrong result",
        )?;
    }
    let t = us_per(t0, maps);
    pool.close();
    pool.join()?;
    Ok(t)
}

/// apply_async(square) + get on a warm pool of 2, per round trip.
fn pool_apply_async_rtt(scale: Scale) -> Result<f64> {
    let n = scale.n(20_000);
    let mut pool = bench_pool()?;
    let t0 = Instant::now();
    for i in 0..n as i64 {
        let h = pool.apply_async("square", &i.to_le_bytes())?;
        let r = pool.get(&h, None)?.expect("no timeout");
        check(
            r.as_deref() == Ok(&(i * i).to_le_bytes()[..]),
            "pool_apply_async_rtt",
            "wrong result",
        )?;
    }
    let t = us_per(t0, n);
    pool.close();
    pool.join()?;
    Ok(t)
}
