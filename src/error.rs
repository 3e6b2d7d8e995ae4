//! The error type: which call failed, on what, and why.
//!
//! Every error renders as one line, `<call>(<what>): <reason>`, which the
//! binaries prefix with their name:
//! `pk-ticket: open(product): No such file or directory`. Each error also
//! knows its exit code from the table in [`crate::exit`].

use std::borrow::Cow;
use std::fmt;
use std::io;

use nix::errno::Errno;

use crate::exit;

/// A posixkit result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// A system call returned this errno.
    Errno(Errno),
    /// An input held data that does not mean what it must (exit 65).
    Data(String),
    /// A value given by the user is not acceptable (exit 2).
    Usage(String),
    /// A plain message with an explicit exit code.
    Other(String),
}

/// Which call failed, on what, and why. Renders as `call(what): reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    call: Cow<'static, str>,
    what: String,
    reason: Reason,
    code: Option<u8>,
}

impl Error {
    /// A failed system call: `call` (e.g. `"open"`) on `what` (e.g. a path).
    pub fn sys(call: impl Into<Cow<'static, str>>, what: impl fmt::Display, errno: Errno) -> Self {
        Error {
            call: call.into(),
            what: what.to_string(),
            reason: Reason::Errno(errno),
            code: None,
        }
    }

    /// A failed system call taken from an [`io::Error`] (std or memmap2).
    pub fn io(
        call: impl Into<Cow<'static, str>>,
        what: impl fmt::Display,
        err: &io::Error,
    ) -> Self {
        match err.raw_os_error() {
            Some(raw) => Self::sys(call, what, Errno::from_raw(raw)),
            None => Error {
                call: call.into(),
                what: what.to_string(),
                reason: Reason::Other(err.to_string()),
                code: Some(exit::OS_ERR),
            },
        }
    }

    /// getrandom(2) failed, for `what`: its errno, or the crate's own
    /// reason where there is none (exit 71 either way).
    pub(crate) fn getrandom(what: &str, err: getrandom::Error) -> Self {
        match err.raw_os_error() {
            Some(raw) => Self::sys("getrandom", what, Errno::from_raw(raw)),
            None => Self::data("getrandom", what, err.to_string()).with_code(exit::OS_ERR),
        }
    }

    /// Bad data in an input: exit 65.
    pub fn data(
        call: impl Into<Cow<'static, str>>,
        what: impl fmt::Display,
        why: impl Into<String>,
    ) -> Self {
        Error {
            call: call.into(),
            what: what.to_string(),
            reason: Reason::Data(why.into()),
            code: None,
        }
    }

    /// A bad value given by the user, named by its flag: exit 2.
    /// Renders as `<flag>: <why>`.
    pub fn usage(flag: impl Into<Cow<'static, str>>, why: impl Into<String>) -> Self {
        Error {
            call: flag.into(),
            what: String::new(),
            reason: Reason::Usage(why.into()),
            code: None,
        }
    }

    /// Replace the exit code this error maps to.
    #[must_use]
    pub fn with_code(mut self, code: u8) -> Self {
        self.code = Some(code);
        self
    }

    /// The call that failed.
    pub fn call(&self) -> &str {
        &self.call
    }

    /// What the call was made on.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// Why it failed.
    pub fn reason(&self) -> &Reason {
        &self.reason
    }

    /// The errno, when a system call failed.
    pub fn errno(&self) -> Option<Errno> {
        match self.reason {
            Reason::Errno(e) => Some(e),
            _ => None,
        }
    }

    /// The exit code from [`crate::exit`]: ENOENT → 66, EACCES/EPERM → 77,
    /// other errnos → 71, bad data → 65, usage → 2, unless overridden by
    /// [`Error::with_code`].
    pub fn exit_code(&self) -> u8 {
        if let Some(code) = self.code {
            return code;
        }
        match &self.reason {
            Reason::Errno(Errno::ENOENT) => exit::NO_INPUT,
            Reason::Errno(Errno::EACCES | Errno::EPERM) => exit::NO_PERM,
            Reason::Errno(_) => exit::OS_ERR,
            Reason::Data(_) => exit::DATA,
            Reason::Usage(_) => exit::USAGE,
            Reason::Other(_) => exit::OS_ERR,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            Reason::Usage(why) => write!(f, "{}: {}", self.call, why),
            Reason::Errno(e) => write!(f, "{}({}): {}", self.call, self.what, strerror(*e)),
            Reason::Data(why) | Reason::Other(why) => {
                write!(f, "{}({}): {}", self.call, self.what, why)
            }
        }
    }
}

impl std::error::Error for Error {}

/// The message a panic was raised with (`panic!("...")` makes a `&str` or
/// a `String`); empty for any other payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// The C library's message for `errno` (strerror), e.g. `Resource
/// temporarily unavailable` for EAGAIN.
pub fn strerror(errno: Errno) -> String {
    let text = io::Error::from_raw_os_error(errno as i32).to_string();
    match text.rfind(" (os error ") {
        Some(cut) => text[..cut].to_string(),
        None => text,
    }
}

/// Attach the call and its object to a nix result.
pub trait Context<T> {
    /// Map an errno to an [`Error`] naming `call` and `what`.
    fn ctx(self, call: &'static str, what: impl fmt::Display) -> Result<T>;
}

impl<T> Context<T> for nix::Result<T> {
    fn ctx(self, call: &'static str, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::sys(call, what, e))
    }
}

impl<T> Context<T> for io::Result<T> {
    fn ctx(self, call: &'static str, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::io(call, what, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_line_with_call_what_reason() {
        let e = Error::sys("open", "product", Errno::ENOENT);
        assert_eq!(e.to_string(), "open(product): No such file or directory");
        assert_eq!(e.exit_code(), exit::NO_INPUT);
    }

    #[test]
    fn maps_errnos_to_the_table() {
        assert_eq!(Error::sys("fork", "child", Errno::EAGAIN).exit_code(), 71);
        assert_eq!(Error::sys("open", "f", Errno::EACCES).exit_code(), 77);
        assert_eq!(Error::sys("open", "f", Errno::EPERM).exit_code(), 77);
        assert_eq!(Error::data("parse", "f", "not a count").exit_code(), 65);
        assert_eq!(
            Error::usage("--children", "must be 1..=4096").exit_code(),
            2
        );
        assert_eq!(
            Error::sys("open", "f", Errno::ENOENT)
                .with_code(71)
                .exit_code(),
            71
        );
    }

    #[test]
    fn uses_the_c_library_messages() {
        assert_eq!(strerror(Errno::EAGAIN), "Resource temporarily unavailable");
        assert_eq!(
            Error::sys("fork", "child 1 of 1", Errno::EAGAIN).to_string(),
            "fork(child 1 of 1): Resource temporarily unavailable"
        );
    }

    #[test]
    fn usage_names_the_flag() {
        assert_eq!(
            Error::usage("--value", "must be at least 1").to_string(),
            "--value: must be at least 1"
        );
    }

    #[test]
    fn io_errors_keep_their_errno() {
        let e = Error::io("read", "x", &io::Error::from_raw_os_error(libc::EISDIR));
        assert_eq!(e.errno(), Some(Errno::EISDIR));
        assert_eq!(e.to_string(), "read(x): Is a directory");
    }
}
