//! The one integration-test binary: a module per `pk-*` binary.

mod common;
mod event;
mod fork;
mod local;
mod lock;
mod threads;
