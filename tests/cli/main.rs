//! The one integration-test binary: a module per `pk-*` binary.

mod bench;
mod common;
mod coro;
mod event;
mod fork;
mod local;
mod lock;
mod manager;
mod pool;
mod process;
mod queue;
mod sem;
mod shm;
mod threads;
mod ticket;
