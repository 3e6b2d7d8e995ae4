//! The one integration-test binary: a module per `pk-*` binary.

mod bench;
mod common;
mod coro;
mod event;
mod fork;
mod local;
mod lock;
mod manager;
mod pipe;
mod pool;
mod process;
mod queue;
mod queue_kill;
mod sem;
mod shm;
mod spawn;
mod threads;
mod ticket;
