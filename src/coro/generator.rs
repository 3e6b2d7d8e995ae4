//! The generator protocol of Python's lesson, as a state machine:
//! [`Consumer`], [`GenState`], [`SendError`].

use std::fmt;

/// Where a generator is, as Python's `inspect.getgeneratorstate` names it
/// (`GEN_RUNNING` cannot be seen from outside here: `send` holds the
/// generator mutably while it runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenState {
    /// Made, never resumed: `c = consumer()`. Only `send(None)` may start it.
    Created,
    /// Stopped at its `yield`, waiting for the next `send`.
    Suspended,
    /// Returned, failed or closed: every `send` is `StopIteration`.
    Closed,
}

impl fmt::Display for GenState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GenState::Created => "GEN_CREATED",
            GenState::Suspended => "GEN_SUSPENDED",
            GenState::Closed => "GEN_CLOSED",
        })
    }
}

/// Why a [`Consumer::send`] gave no value, as Python would raise it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError<E> {
    /// `TypeError: can't send non-None value to a just-started generator`:
    /// a value was sent before the generator was primed with `send(None)`.
    /// Nothing changed; it can still be primed.
    JustStarted,
    /// `StopIteration`: the generator has returned (it was sent `None` or
    /// 0, the lesson's `if not n: return`), or was closed. It is closed.
    Stopped,
    /// The body failed (an exception inside the generator): it is closed.
    Body(E),
}

impl<E: fmt::Display> fmt::Display for SendError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::JustStarted => {
                f.write_str("TypeError: can't send non-None value to a just-started generator")
            }
            SendError::Stopped => f.write_str("StopIteration"),
            SendError::Body(e) => e.fmt(f),
        }
    }
}

/// The lesson's consumer generator, written as the state machine Python
/// makes of it:
///
/// ```python
/// def consumer():
///     r = ''
///     while True:
///         n = yield r          # Suspended here between sends
///         if not n:
///             return           # StopIteration
///         print('[CONSUMER] Consuming %s...' % n)
///         r = '200 OK'
/// ```
///
/// Rust has no stable generators: `std::ops::Coroutine`, `#[coroutine]`
/// closures and `gen` blocks exist only on nightly. A stable program
/// writes the state machine by hand, as here (and as the compiler does
/// for every `async fn`): the state says where the body is suspended, and
/// each [`Consumer::send`] runs it from there to its next `yield`. The
/// body's work between two yields (the `print` and `r = '200 OK'`) is the
/// closure given to [`Consumer::new`], which returns the next `r`.
///
/// ```
/// use posixkit::coro::{Consumer, GenState, SendError};
/// let mut c = Consumer::new(|n| Ok::<_, ()>(format!("took {n}")));
/// assert_eq!(c.send(Some(1)), Err(SendError::JustStarted));
/// assert_eq!(c.send(None), Ok(String::new())); // primed: r = ''
/// assert_eq!(c.send(Some(1)), Ok("took 1".to_string()));
/// c.close();
/// assert_eq!(c.state(), GenState::Closed);
/// assert_eq!(c.send(Some(2)), Err(SendError::Stopped));
/// ```
pub struct Consumer<F> {
    state: GenState,
    body: F,
}

impl<F> fmt::Debug for Consumer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("state", &self.state)
            .finish()
    }
}

impl<F, E> Consumer<F>
where
    F: FnMut(u64) -> std::result::Result<String, E>,
{
    /// `c = consumer()`: created, nothing run yet.
    pub fn new(body: F) -> Self {
        Consumer {
            state: GenState::Created,
            body,
        }
    }

    /// `c.send(value)`: resume the generator with `value` and run it to its
    /// next `yield`, returning what it yields. `send(None)` primes a new
    /// one (it yields `''`); then `send(Some(n))` consumes `n`, and `None`
    /// or `Some(0)` make it return.
    pub fn send(&mut self, value: Option<u64>) -> std::result::Result<String, SendError<E>> {
        match (self.state, value) {
            (GenState::Created, None) => {
                self.state = GenState::Suspended;
                Ok(String::new())
            }
            (GenState::Created, Some(_)) => Err(SendError::JustStarted),
            (GenState::Suspended, None | Some(0)) | (GenState::Closed, _) => {
                self.state = GenState::Closed;
                Err(SendError::Stopped)
            }
            (GenState::Suspended, Some(n)) => match (self.body)(n) {
                Ok(r) => Ok(r),
                Err(e) => {
                    self.state = GenState::Closed;
                    Err(SendError::Body(e))
                }
            },
        }
    }

    /// `c.close()`: end the generator where it is suspended (Python raises
    /// `GeneratorExit` at the `yield`; this body has nothing to clean up).
    pub fn close(&mut self) {
        self.state = GenState::Closed;
    }

    /// `inspect.getgeneratorstate(c)`.
    pub fn state(&self) -> GenState {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_consumer_follows_the_generator_protocol() {
        let mut consumed = Vec::new();
        let mut c = Consumer::new(|n| {
            consumed.push(n);
            if n == 13 {
                return Err("unlucky");
            }
            Ok("200 OK".to_string())
        });
        assert_eq!(c.state(), GenState::Created);
        assert_eq!(c.send(Some(1)), Err(SendError::JustStarted));
        assert_eq!(c.state(), GenState::Created, "still primable");
        assert_eq!(c.send(None), Ok(String::new()));
        assert_eq!(c.state(), GenState::Suspended);
        for n in 1..=3 {
            assert_eq!(c.send(Some(n)), Ok("200 OK".to_string()));
        }
        assert_eq!(c.send(Some(0)), Err(SendError::Stopped), "if not n: return");
        assert_eq!(c.state(), GenState::Closed);
        assert_eq!(c.send(Some(4)), Err(SendError::Stopped));

        let mut c2 = Consumer::new(|n| {
            if n == 13 {
                Err("unlucky")
            } else {
                Ok(String::new())
            }
        });
        c2.send(None).unwrap();
        assert_eq!(c2.send(Some(13)), Err(SendError::Body("unlucky")));
        assert_eq!(c2.state(), GenState::Closed);
        assert_eq!(consumed, [1, 2, 3]);
        assert_eq!(
            SendError::<String>::JustStarted.to_string(),
            "TypeError: can't send non-None value to a just-started generator"
        );
        assert_eq!(GenState::Suspended.to_string(), "GEN_SUSPENDED");
    }
}
