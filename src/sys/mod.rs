//! The only place with `unsafe`, fenced by the compiler: the crate root
//! denies `unsafe_code` and this module alone allows it (as rustix fences
//! its backends). One thin function per system call that nix does not wrap
//! safely, each block with a `// SAFETY:` comment saying why it holds; a
//! function whose caller must uphold something is an `unsafe fn` with a
//! `# Safety` section. Everything above this module is safe Rust.
#![allow(unsafe_code)]

pub(crate) mod cell;
pub mod flock;
#[cfg(feature = "cli")]
pub mod mq;
pub mod pipe;
pub mod proc;
pub mod sem;
pub mod shm;
pub mod spawn;
pub mod sysv;
pub mod thread;
mod unchecked;
