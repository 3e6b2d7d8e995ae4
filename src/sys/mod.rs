//! The only place with `unsafe`: one thin function per system call that nix
//! does not wrap safely, each block with a `// SAFETY:` comment saying why it
//! holds. Everything above this module is safe Rust.

pub mod flock;
pub mod proc;
pub mod sem;
pub mod shm;
pub mod spawn;
pub mod thread;
