//! The only place with `unsafe`: one thin function per system call that nix
//! does not wrap safely, each block with a `// SAFETY:` comment saying why it
//! holds. Everything above this module is safe Rust.

pub mod proc;
pub mod spawn;
