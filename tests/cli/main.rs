//! The one integration-test binary: a module per `pk-*` binary.

mod bench;
mod common;
mod fork;
mod pool;
mod process;
