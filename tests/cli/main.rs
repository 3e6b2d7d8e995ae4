//! The one integration-test binary: a module per `pk-*` binary.

mod common;
mod coro;
mod fork;
mod manager;
