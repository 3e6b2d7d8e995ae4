//! Named queues over TCP with an auth key and leases on work: what Python's
//! `multiprocessing.managers.BaseManager` lesson builds (a master puts
//! tasks in a shared queue, workers on other machines take them and put
//! results back), made to hold up against hostile and failing peers, and
//! able to speak CPython's own manager protocol.
//!
//! - [`wire`]: pk-manager's frames and messages.
//! - [`auth`]: keys (never needed on a command line), the handshake in
//!   which the server proves the key first, and the MAC on every frame
//!   after it.
//! - [`hub`]: the queues, the leases and the lesson's results.
//! - [`server`]: accepting, handshake deadlines, the cap on
//!   unauthenticated connections, one thread per connection.
//! - [`client`]: a worker's or a shell's connection.
//! - [`python`]: CPython's `multiprocessing.connection` and managers, with
//!   a pickle subset that never runs code.
//!
//! ```no_run
//! use posixkit::manager::{auth::Key, client::{Client, Got}};
//! use std::time::Duration;
//! let key = Key::from_file("secret.key".as_ref())?;
//! let mut c = Client::connect("127.0.0.1:5000", &key, std::process::id(), Duration::from_secs(10))?;
//! while let Got::Item { id, body } = c.get("tasks", None)? {
//!     let result = [b"did ".as_slice(), &body].concat();
//!     c.put("results", &result, Some(id), None)?; // settles the task
//! }
//! # Ok::<(), posixkit::Error>(())
//! ```

pub mod auth;
pub mod client;
pub mod hub;
pub mod python;
pub mod server;
pub mod wire;

pub use auth::Key;
pub use client::Client;
pub use hub::{Event, Outcome, Peer, QueueSpec};
pub use server::{Config, Mode, Server};
