//! `--progress` / `--eta` on stderr. On a terminal, one status line that
//! indicatif redraws (at most 10 times a second, from our own thread: no
//! ticker thread); elsewhere, a plain line at most once a second and one
//! at the end:
//!
//! `pk-pool: progress: 40 done, 2 running, 1 failed, 57 left, eta 3s`
//!
//! How many are left is known once all input has been read (items are
//! read as they are needed, so before that it is not shown); the ETA is
//! the wall time per finished job so far times the jobs left.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The status line on the terminal, while one is drawn: every line
/// pk-pool says goes out with it cleared, then redrawn ([`around`]), or
/// it would be glued to the end of the status line.
static SHOWN: Mutex<Option<indicatif::ProgressBar>> = Mutex::new(None);

/// Run `f` (which writes to stderr) with the status line, if one is
/// drawn, out of the way.
pub fn around<R>(f: impl FnOnce() -> R) -> R {
    let bar = SHOWN.lock().ok().and_then(|b| b.clone());
    match bar {
        Some(bar) => bar.suspend(f),
        None => f(),
    }
}

/// The counts a status line shows.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub done: u64,
    pub running: u64,
    pub failed: u64,
    /// All jobs, once the input has ended.
    pub total: Option<u64>,
}

/// The progress display.
#[derive(Debug)]
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    plain: bool,
    eta: bool,
    started: Instant,
    last: Option<Instant>,
}

impl Progress {
    /// `show`: whether to show anything; `eta`: add the estimate.
    pub fn new(show: bool, eta: bool) -> Progress {
        use std::io::IsTerminal;
        let tty = show && std::io::stderr().is_terminal();
        let bar = tty.then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                None,
                indicatif::ProgressDrawTarget::stderr_with_hz(10),
            );
            bar.set_style(
                indicatif::ProgressStyle::with_template("pk-pool: {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            if let Ok(mut shown) = SHOWN.lock() {
                *shown = Some(bar.clone());
            }
            bar
        });
        Progress {
            bar,
            plain: show && !tty,
            eta,
            started: Instant::now(),
            last: None,
        }
    }

    /// Run `f` (which writes output) with the status line out of the way.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    /// Show `c` (rate-limited).
    pub fn update(&mut self, c: Counts) {
        if let Some(bar) = &self.bar {
            bar.set_message(self.text(c));
            return;
        }
        if self.plain {
            let now = Instant::now();
            if self
                .last
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
            {
                self.last = Some(now);
                crate::cmd::eprintln_one("pk-pool", &format_args!("progress: {}", self.text(c)));
            }
        }
    }

    /// The last line, then the display ends.
    pub fn finish(&mut self, c: Counts) {
        let text = self.text(c);
        if let Some(bar) = self.bar.take() {
            if let Ok(mut shown) = SHOWN.lock() {
                *shown = None;
            }
            // The last state as a line of its own: what follows on
            // stderr (the summary) starts on a line of its own.
            bar.finish_and_clear();
            crate::cmd::eprintln_one("pk-pool", &text);
        } else if self.plain {
            crate::cmd::eprintln_one("pk-pool", &format_args!("progress: {text}"));
        }
    }

    fn text(&self, c: Counts) -> String {
        let mut t = format!(
            "{} done, {} running, {} failed",
            c.done, c.running, c.failed
        );
        if let Some(total) = c.total {
            let left = total.saturating_sub(c.done);
            t.push_str(&format!(", {left} left"));
            if self.eta {
                t.push_str(&format!(", eta {}", eta(self.started.elapsed(), c, left)));
            }
        } else if self.eta {
            t.push_str(", eta ?");
        }
        t
    }
}

/// The estimate: time per job so far times the jobs left, spread over the
/// slots in use.
fn eta(elapsed: Duration, c: Counts, left: u64) -> String {
    if left == 0 {
        return "0s".into();
    }
    if c.done == 0 {
        return "?".into();
    }
    let per_job = elapsed.as_secs_f64() / c.done as f64;
    let secs = per_job * left as f64;
    let secs = secs.max(0.0).round() as u64;
    if secs >= 3600 {
        format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
    } else if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_is_time_per_job_times_jobs_left() {
        let c = Counts {
            done: 10,
            running: 2,
            failed: 0,
            total: Some(40),
        };
        assert_eq!(eta(Duration::from_secs(5), c, 30), "15s");
        assert_eq!(eta(Duration::from_secs(50), c, 30), "2m30s");
        assert_eq!(
            eta(Duration::from_secs(5), Counts { done: 0, ..c }, 30),
            "?"
        );
        assert_eq!(eta(Duration::from_secs(5), c, 0), "0s");
    }
}
