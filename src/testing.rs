//! Helpers for the library's own unit tests.

use std::sync::Once;

/// The start of the message of a panic a test raises on purpose (a thread
/// that panics to show that `join` reports it). [`quiet_deliberate_panics`]
/// keeps such panics off stderr.
pub(crate) const DELIBERATE: &str = "deliberate panic: ";

/// Install, once for the test binary, a panic hook that drops the report
/// of a panic whose message starts with [`DELIBERATE`] and hands every
/// other panic to the hook that was there before (the default one, which
/// prints the message and, with RUST_BACKTRACE set, the backtrace). A
/// test that fails still shows its message in full; a test whose thread
/// panics as planned prints nothing.
///
/// Needed where the panic happens on a thread started with pthread_create
/// (`crate::thread`): the test harness captures the output of its own
/// threads and of threads std starts, not of those.
pub(crate) fn quiet_deliberate_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !crate::error::panic_message(info.payload()).starts_with(DELIBERATE) {
                previous(info);
            }
        }));
    });
}
