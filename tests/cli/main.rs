//! The one integration-test binary: a module per `pk-*` binary.

mod common;
mod fork;
mod queue;
mod sem;
mod shm;
