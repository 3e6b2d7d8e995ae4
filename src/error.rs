//! The error type: which call failed, on what, and why, and a typed
//! [`ErrorKind`] that says what kind of failure it was.
//!
//! Every error renders as one line, `<call>(<what>): <reason>`:
//! `open(product): No such file or directory`. A program decides what to do
//! with an error by its [`Error::kind`] (or its [`Error::errno`]), never by
//! its text. The library knows no exit codes: the `pk-*` binaries map kinds
//! to their exit-code table in one function of their own.
//!
//! Guidelines for the library's own code:
//! - a failed system call is [`Error::sys`] (or [`Context::ctx`] on a nix or
//!   std result): its kind follows from the errno;
//! - bytes that do not mean what they must (a torn frame, a ticket file that
//!   is not a count) are [`Error::data`];
//! - a value the caller passed that can never work (a bad name, a pool of
//!   0 workers) is [`Error::invalid`];
//! - anything else names its kind with [`Error::new`], and a call whose
//!   errno means something narrower there than in general (EAGAIN from a
//!   non-blocking lock is "busy") says so with [`Error::with_kind`].

use std::borrow::Cow;
use std::fmt;
use std::io;

use nix::errno::Errno;

/// A posixkit result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an [`Error`] is: what a caller branches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Something named does not exist: a file, a named object, a host
    /// (ENOENT).
    NotFound,
    /// Not allowed: a permission bit, an owner check, a refused key
    /// (EACCES, EPERM).
    PermissionDenied,
    /// Something meant to be new exists already (EEXIST).
    AlreadyExists,
    /// Busy: a non-blocking attempt would have had to wait (a held lock, a
    /// full queue, a semaphore at 0).
    WouldBlock,
    /// A wait ran out of time (ETIMEDOUT, or a deadline of ours).
    TimedOut,
    /// A wait was cut short on purpose: a signal the caller asked to be
    /// woken by, or the pool's interrupt descriptor.
    Interrupted,
    /// The other end went away: a closed pipe or connection (EPIPE,
    /// ECONNRESET, end of file in the middle of a message).
    PeerClosed,
    /// Bytes that do not mean what they must: a torn frame, a file that
    /// is not a count, a named object that is not ours.
    BadData,
    /// A value given to the call can never work: a bad name, a size out of
    /// range, an unknown task (EINVAL from our own checks).
    InvalidInput,
    /// A program to run was not found (exec ENOENT).
    CommandNotFound,
    /// A program to run exists but could not be executed (exec EACCES,
    /// ENOEXEC …).
    CommandNotExecutable,
    /// A thread or a child's closure panicked.
    Panicked,
    /// A fork was refused because other threads run in this process (see
    /// [`crate::process::fork`]).
    ThreadsRunning,
    /// A daemonic [`Process`](crate::process::Process) tried to start a
    /// child of its own (Python's `AssertionError: daemonic processes are
    /// not allowed to have children`; see
    /// [`Builder::daemon`](crate::process::Builder::daemon)).
    DaemonicParent,
    /// Any other failed system call; [`Error::errno`] says which.
    Os,
    /// None of the above.
    Other,
}

impl ErrorKind {
    /// The kind a system call's errno means in general.
    pub fn from_errno(errno: Errno) -> Self {
        match errno {
            Errno::ENOENT => ErrorKind::NotFound,
            Errno::EACCES | Errno::EPERM => ErrorKind::PermissionDenied,
            Errno::EEXIST => ErrorKind::AlreadyExists,
            Errno::ETIMEDOUT => ErrorKind::TimedOut,
            Errno::EINTR => ErrorKind::Interrupted,
            Errno::EPIPE | Errno::ECONNRESET => ErrorKind::PeerClosed,
            _ => ErrorKind::Os,
        }
    }
}

/// Why it failed, as the error's last words: an errno or a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Detail {
    Errno(Errno),
    Message(String),
}

/// Which call failed, on what, and why. Renders as `call(what): reason`, or
/// `name: reason` for an invalid value ([`Error::invalid`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    call: Cow<'static, str>,
    what: String,
    detail: Detail,
    kind: ErrorKind,
}

impl Error {
    /// An error of `kind` from `call` on `what`, for `why`.
    pub fn new(
        kind: ErrorKind,
        call: impl Into<Cow<'static, str>>,
        what: impl fmt::Display,
        why: impl Into<String>,
    ) -> Self {
        Error {
            call: call.into(),
            what: what.to_string(),
            detail: Detail::Message(why.into()),
            kind,
        }
    }

    /// A failed system call: `call` (e.g. `"open"`) on `what` (e.g. a path).
    pub fn sys(call: impl Into<Cow<'static, str>>, what: impl fmt::Display, errno: Errno) -> Self {
        Error {
            call: call.into(),
            what: what.to_string(),
            detail: Detail::Errno(errno),
            kind: ErrorKind::from_errno(errno),
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
            None => Self::new(ErrorKind::Other, call, what, err.to_string()),
        }
    }

    /// getrandom(2) failed, for `what`: its errno, or the crate's own
    /// reason where there is none.
    #[cfg(any(feature = "coro", feature = "manager"))]
    pub(crate) fn getrandom(what: &str, err: getrandom::Error) -> Self {
        match err.raw_os_error() {
            Some(raw) => Self::sys("getrandom", what, Errno::from_raw(raw)),
            None => Self::new(ErrorKind::Other, "getrandom", what, err.to_string()),
        }
    }

    /// Bad data in an input ([`ErrorKind::BadData`]).
    pub fn data(
        call: impl Into<Cow<'static, str>>,
        what: impl fmt::Display,
        why: impl Into<String>,
    ) -> Self {
        Self::new(ErrorKind::BadData, call, what, why)
    }

    /// A value that can never work, named by `name` (a parameter, a flag):
    /// [`ErrorKind::InvalidInput`]. Renders as `<name>: <why>`.
    pub fn invalid(name: impl Into<Cow<'static, str>>, why: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, name, "", why)
    }

    /// The same error, of another kind: for a call whose errno means
    /// something narrower there (EAGAIN from `LOCK_NB` is "busy").
    #[must_use]
    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether something named was not there ([`ErrorKind::NotFound`]).
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }

    /// Whether a wait ran out of time ([`ErrorKind::TimedOut`]).
    pub fn is_timed_out(&self) -> bool {
        self.kind == ErrorKind::TimedOut
    }

    /// Whether a non-blocking attempt found it busy
    /// ([`ErrorKind::WouldBlock`]).
    pub fn is_would_block(&self) -> bool {
        self.kind == ErrorKind::WouldBlock
    }

    /// Whether a wait was cut short on purpose ([`ErrorKind::Interrupted`]).
    pub fn is_interrupted(&self) -> bool {
        self.kind == ErrorKind::Interrupted
    }

    /// Whether the other end went away ([`ErrorKind::PeerClosed`]).
    pub fn is_peer_closed(&self) -> bool {
        self.kind == ErrorKind::PeerClosed
    }

    /// The call that failed.
    pub fn call(&self) -> &str {
        &self.call
    }

    /// What the call was made on.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The errno, when a system call failed.
    pub fn errno(&self) -> Option<Errno> {
        match self.detail {
            Detail::Errno(e) => Some(e),
            Detail::Message(_) => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.detail {
            Detail::Message(why)
                if self.kind == ErrorKind::InvalidInput && self.what.is_empty() =>
            {
                write!(f, "{}: {}", self.call, why)
            }
            Detail::Errno(e) => write!(f, "{}({}): {}", self.call, self.what, strerror(*e)),
            Detail::Message(why) => write!(f, "{}({}): {}", self.call, self.what, why),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    /// An [`io::Error`] that keeps the errno where there is one, and the
    /// one-line message otherwise.
    fn from(e: Error) -> io::Error {
        match e.errno() {
            Some(errno) => io::Error::from_raw_os_error(errno as i32),
            None => io::Error::other(e.to_string()),
        }
    }
}

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

/// Attach the call and its object to a nix or std result.
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
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.is_not_found());
    }

    #[test]
    fn errnos_have_kinds() {
        let kind = |errno| Error::sys("call", "x", errno).kind();
        assert_eq!(kind(Errno::EAGAIN), ErrorKind::Os);
        assert_eq!(kind(Errno::EACCES), ErrorKind::PermissionDenied);
        assert_eq!(kind(Errno::EPERM), ErrorKind::PermissionDenied);
        assert_eq!(kind(Errno::EEXIST), ErrorKind::AlreadyExists);
        assert_eq!(kind(Errno::ETIMEDOUT), ErrorKind::TimedOut);
        assert_eq!(kind(Errno::EPIPE), ErrorKind::PeerClosed);
        assert_eq!(
            Error::data("parse", "f", "not a count").kind(),
            ErrorKind::BadData
        );
        assert_eq!(
            Error::invalid("children", "must be 1..=4096").kind(),
            ErrorKind::InvalidInput
        );
        let busy = Error::sys("flock", "f", Errno::EWOULDBLOCK).with_kind(ErrorKind::WouldBlock);
        assert!(busy.is_would_block());
        assert_eq!(busy.errno(), Some(Errno::EWOULDBLOCK), "the errno is kept");
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
    fn invalid_names_the_value() {
        assert_eq!(
            Error::invalid("--value", "must be at least 1").to_string(),
            "--value: must be at least 1"
        );
    }

    #[test]
    fn io_errors_keep_their_errno() {
        let e = Error::io("read", "x", &io::Error::from_raw_os_error(libc::EISDIR));
        assert_eq!(e.errno(), Some(Errno::EISDIR));
        assert_eq!(e.to_string(), "read(x): Is a directory");
        let back: io::Error = e.into();
        assert_eq!(back.raw_os_error(), Some(libc::EISDIR));
        let other = Error::io("read", "x", &io::Error::other("gone"));
        assert_eq!(other.kind(), ErrorKind::Other);
        assert_eq!(other.to_string(), "read(x): gone");
    }
}
