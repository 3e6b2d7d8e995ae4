//! Wait statuses: what `waitpid` says about a child, decoded.
//!
//! [`Status`] decodes the raw status word (WIFEXITED/WEXITSTATUS,
//! WIFSIGNALED/WTERMSIG/WCOREDUMP, WIFSTOPPED/WSTOPSIG, WIFCONTINUED) and
//! turns it into the two conventions users meet: the shell's exit code
//! (N, or 128+N for a signal) and Python's `exitcode` (N, or -N).

use std::fmt;
use std::str::FromStr;

use nix::sys::signal::Signal;

/// How a child changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// It called `exit`/`_exit` with this code (WEXITSTATUS: the low 8 bits).
    Exited(u8),
    /// A signal ended it; `core_dumped` is WCOREDUMP.
    Signaled {
        /// The signal number (WTERMSIG).
        signal: i32,
        /// Whether the kernel wrote a core dump.
        core_dumped: bool,
    },
    /// It is stopped by this signal (only reported with WUNTRACED).
    Stopped(i32),
    /// It was continued by SIGCONT (only reported with WCONTINUED).
    Continued,
}

impl Status {
    /// Decode a raw status word as waitpid(2) stores it.
    pub fn from_raw(raw: i32) -> Status {
        if libc::WIFEXITED(raw) {
            // WEXITSTATUS is masked to 0..=255.
            Status::Exited(u8::try_from(libc::WEXITSTATUS(raw)).unwrap_or(u8::MAX))
        } else if libc::WIFSIGNALED(raw) {
            Status::Signaled {
                signal: libc::WTERMSIG(raw),
                core_dumped: libc::WCOREDUMP(raw),
            }
        } else if libc::WIFSTOPPED(raw) {
            Status::Stopped(libc::WSTOPSIG(raw))
        } else {
            Status::Continued
        }
    }

    /// True for `Exited(0)`.
    pub fn success(&self) -> bool {
        *self == Status::Exited(0)
    }

    /// The signal that ended or stopped the process, if any.
    pub fn signal(&self) -> Option<i32> {
        match *self {
            Status::Signaled { signal, .. } | Status::Stopped(signal) => Some(signal),
            _ => None,
        }
    }

    /// The code a shell puts in `$?`: N for an exit, 128+N for a signal.
    pub fn shell_code(&self) -> u8 {
        match *self {
            Status::Exited(code) => code,
            Status::Signaled { signal, .. } | Status::Stopped(signal) => {
                // Linux signals are at most 64: the sum fits in a byte.
                u8::try_from(128 + signal.clamp(0, 127)).unwrap_or(u8::MAX)
            }
            Status::Continued => 0,
        }
    }

    /// Python's `Process.exitcode`: N for an exit, -N for a signal (a
    /// hand-made signal number of `i32::MIN`, which no status decodes to,
    /// gives `i32::MIN`).
    pub fn exitcode(&self) -> i32 {
        match *self {
            Status::Exited(code) => i32::from(code),
            Status::Signaled { signal, .. } | Status::Stopped(signal) => signal.wrapping_neg(),
            Status::Continued => 0,
        }
    }
}

/// Renders like the toolkit's output lines: `exited, status=3`,
/// `killed by signal 9 (SIGKILL)`, `killed by signal 11 (SIGSEGV, core dumped)`,
/// `stopped by signal 19 (SIGSTOP)`, `continued`.
impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Status::Exited(code) => write!(f, "exited, status={code}"),
            Status::Signaled {
                signal,
                core_dumped,
            } => {
                write!(f, "killed by signal {signal} ({}", signal_name(signal))?;
                if core_dumped {
                    f.write_str(", core dumped")?;
                }
                f.write_str(")")
            }
            Status::Stopped(signal) => {
                write!(f, "stopped by signal {signal} ({})", signal_name(signal))
            }
            Status::Continued => f.write_str("continued"),
        }
    }
}

/// The name of signal `n`: `SIGKILL`, `SIGRTMIN+3`, or `SIG<n>` when the
/// number means nothing on this system.
pub fn signal_name(n: i32) -> String {
    if let Ok(sig) = Signal::try_from(n) {
        return sig.as_str().to_string();
    }
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    if (min..=max).contains(&n) {
        return match n {
            _ if n == min => "SIGRTMIN".to_string(),
            _ if n == max => "SIGRTMAX".to_string(),
            _ => format!("SIGRTMIN+{}", n - min),
        };
    }
    format!("SIG{n}")
}

/// A signal named on a command line: `KILL`, `SIGKILL`, `kill` or `9`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalArg(pub Signal);

impl FromStr for SignalArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let sig = if let Ok(n) = t.parse::<i32>() {
            Signal::try_from(n).map_err(|_| format!("{t} is not a signal number (1-31)"))?
        } else {
            let upper = t.to_ascii_uppercase();
            let name = if upper.starts_with("SIG") {
                upper
            } else {
                format!("SIG{upper}")
            };
            Signal::from_str(&name).map_err(|_| {
                format!("unknown signal '{t}' (try KILL, TERM, INT, SEGV or a number)")
            })?
        };
        Ok(SignalArg(sig))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Raw words as the kernel builds them: exit code in bits 8..15, the
    // terminating signal in bits 0..6, the core flag in bit 7, 0x7f for stop.
    fn exited(code: i32) -> i32 {
        code << 8
    }

    #[test]
    fn exitcode_of_any_hand_made_signal_number_is_no_overflow() {
        assert_eq!(Status::Stopped(i32::MIN).exitcode(), i32::MIN);
        assert_eq!(Status::Stopped(19).exitcode(), -19);
    }

    #[test]
    fn decodes_exits() {
        assert_eq!(Status::from_raw(exited(0)), Status::Exited(0));
        assert_eq!(Status::from_raw(exited(3)), Status::Exited(3));
        assert_eq!(Status::from_raw(exited(255)), Status::Exited(255));
        assert!(Status::from_raw(exited(0)).success());
        assert!(!Status::from_raw(exited(1)).success());
        assert_eq!(Status::from_raw(exited(3)).to_string(), "exited, status=3");
        assert_eq!(Status::from_raw(exited(3)).shell_code(), 3);
        assert_eq!(Status::from_raw(exited(3)).exitcode(), 3);
    }

    #[test]
    fn decodes_signals_and_core_dumps() {
        let killed = Status::from_raw(9);
        assert_eq!(
            killed,
            Status::Signaled {
                signal: 9,
                core_dumped: false
            }
        );
        assert_eq!(killed.to_string(), "killed by signal 9 (SIGKILL)");
        assert_eq!(killed.shell_code(), 137);
        assert_eq!(killed.exitcode(), -9);
        assert_eq!(killed.signal(), Some(9));

        let segv = Status::from_raw(11 | 0x80);
        assert_eq!(
            segv,
            Status::Signaled {
                signal: 11,
                core_dumped: true
            }
        );
        assert_eq!(
            segv.to_string(),
            "killed by signal 11 (SIGSEGV, core dumped)"
        );
        assert_eq!(segv.shell_code(), 139);
        assert_eq!(Status::from_raw(15).exitcode(), -15);
    }

    #[test]
    fn decodes_stop_and_continue() {
        let stopped = Status::from_raw((19 << 8) | 0x7f);
        assert_eq!(stopped, Status::Stopped(19));
        assert_eq!(stopped.to_string(), "stopped by signal 19 (SIGSTOP)");
        assert_eq!(stopped.shell_code(), 147);
        assert_eq!(Status::from_raw(0xffff), Status::Continued);
    }

    #[test]
    fn names_signals() {
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(libc::SIGRTMIN()), "SIGRTMIN");
        assert_eq!(signal_name(libc::SIGRTMIN() + 2), "SIGRTMIN+2");
        assert_eq!(signal_name(libc::SIGRTMAX()), "SIGRTMAX");
        assert_eq!(signal_name(99), "SIG99");
    }

    #[test]
    fn parses_signal_args() {
        for s in ["KILL", "SIGKILL", "kill", "9", " 9 "] {
            assert_eq!(
                s.parse::<SignalArg>(),
                Ok(SignalArg(Signal::SIGKILL)),
                "{s}"
            );
        }
        for s in ["NOPE", "0", "99", "", "SIG", "-9"] {
            assert!(s.parse::<SignalArg>().is_err(), "{s}");
        }
    }
}
