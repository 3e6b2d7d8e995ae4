//! The one integration-test binary: a module per `pk-*` binary.

mod bench;
mod common;
mod coro;
mod event;
mod fork;
mod help;
mod install;
mod local;
mod lock;
mod manager;
mod manager_hostile;
mod manager_python;
mod manager_queues;
mod pipe;
mod pool;
mod pool_exec;
mod pool_exec_ssh;
mod process;
mod queue;
mod queue_kill;
mod robust;
mod sem;
mod shm;
mod spawn;
mod threads;
mod ticket;
