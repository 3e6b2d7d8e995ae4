//! The one integration-test binary: a module per `pk-*` binary.

mod common;
mod fork;
mod pipe;
mod spawn;
