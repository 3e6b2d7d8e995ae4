//! CPython's manager protocol: `multiprocessing.connection`'s framing and
//! authkey challenge ([`conn`]), a safe subset of pickle ([`pickle`]), and
//! both ends of a `BaseManager` conversation ([`server`], [`client`]).
//!
//! Written from the protocol as CPython 3.11's
//! `Lib/multiprocessing/connection.py` and `managers.py` define it (and
//! 3.12's stronger challenge), and tested against the python3 on the other
//! side of a socket.
//!
//! What CPython's protocol does not have, this cannot add: no MAC on the
//! frames after the handshake, and a client answers the server's challenge
//! before the server has proven anything. Run it on networks you trust, or
//! over a tunnel; pk-manager's own protocol has neither weakness.

pub mod client;
pub mod conn;
pub mod pickle;
pub mod server;
