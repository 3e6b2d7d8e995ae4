//! The exit-code table every `pk-*` binary follows, written down once.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | did what was asked |
//! | 1 | declined: sold out, busy (non-blocking), timed out waiting |
//! | 2 | usage: bad flag or value |
//! | 65 | bad data in a file (a ticket file that is not a count) |
//! | 66 | an input file does not exist |
//! | 71 | a system call failed (fork EAGAIN, sem_open …) |
//! | 77 | permission denied |
//! | 126 / 127 | a wrapped command is not executable / not found |
//! | 128+N | a wrapped command or propagated child was killed by signal N |
//! | 101 | a panic: always a bug, never on any input |
//!
//! The numbers 65–77 are the BSD `sysexits.h` values, so shell scripts that
//! already know `EX_DATAERR` or `EX_NOPERM` read them the same way.

/// Did what was asked.
pub const OK: u8 = 0;
/// Declined: sold out, lock busy with `--no-wait`, timed out waiting.
pub const DECLINED: u8 = 1;
/// Usage error: a bad flag or value (clap's own code).
pub const USAGE: u8 = 2;
/// Bad data in an input file (`EX_DATAERR`).
pub const DATA: u8 = 65;
/// An input file does not exist (`EX_NOINPUT`).
pub const NO_INPUT: u8 = 66;
/// A system call failed (`EX_OSERR`).
pub const OS_ERR: u8 = 71;
/// Permission denied (`EX_NOPERM`).
pub const NO_PERM: u8 = 77;
/// A panic. Always a bug; no input may produce it.
pub const PANIC: u8 = 101;
/// A wrapped command exists but could not be executed.
pub const NOT_EXECUTABLE: u8 = 126;
/// A wrapped command was not found.
pub const NOT_FOUND: u8 = 127;
/// Added to a signal number: the shell's code for "killed by signal N".
pub const SIGNAL_BASE: u8 = 128;

/// The shell's exit code for a process killed by `signal`: 128+N.
///
/// Signal numbers on Linux are at most 64, so the sum always fits in a byte;
/// anything larger is clamped to 255 rather than wrapped.
pub fn signal_code(signal: i32) -> u8 {
    u8::try_from(i32::from(SIGNAL_BASE) + signal.clamp(0, 127)).unwrap_or(u8::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_codes_follow_the_shell() {
        assert_eq!(signal_code(9), 137);
        assert_eq!(signal_code(15), 143);
        assert_eq!(signal_code(64), 192);
        assert_eq!(signal_code(500), 255);
    }
}
