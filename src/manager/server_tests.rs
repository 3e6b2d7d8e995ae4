//! A server in this process, CPython's protocol spoken to it by our own
//! client.

use super::*;
use crate::manager::python::client::PyClient;

#[test]
fn python_connections_are_capped_like_workers() {
    let key = Key::new(b"k".to_vec(), "test").unwrap();
    let cfg = Config {
        python: true,
        max_workers: 1,
        ..Config::default()
    };
    let addr = "127.0.0.1:0".parse().unwrap();
    let (server, events) = Server::bind(addr, key.clone(), Mode::Lesson(1), cfg).unwrap();
    server.start().unwrap();
    let addr = server.local_addr().unwrap().to_string();
    let timeout = Duration::from_secs(10);
    // A client holds its long-lived connection, the one place; a second
    // is closed when it asks for one (its one-request connection is not).
    let first = PyClient::connect(&addr, &key, timeout).unwrap();
    let e = PyClient::connect(&addr, &key, timeout).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PeerClosed, "{e}");
    let why = std::iter::from_fn(|| events.recv_timeout(timeout).ok())
        .find_map(|ev| match ev {
            Event::Closed(_, why) => Some(why),
            _ => None,
        })
        .expect("a Closed event");
    assert!(
        why.contains("too many python connections (at most 1)"),
        "{why}"
    );
    // Its place is free again once it hangs up.
    drop(first);
    let deadline = Instant::now() + timeout;
    while server.sh.python_conns.load(Ordering::Acquire) > 0 {
        assert!(Instant::now() < deadline, "the place was never given back");
        std::thread::sleep(Duration::from_millis(10));
    }
    PyClient::connect(&addr, &key, timeout).unwrap();
}

#[test]
fn timeouts_and_leases_of_any_length_mean_for_ever_not_a_panic() {
    // Duration::MAX handshake and lease on the server, Duration::MAX
    // timeouts on both clients: `Instant + Duration::MAX` panicked.
    let key = Key::new(b"k".to_vec(), "test").unwrap();
    for python in [false, true] {
        let cfg = Config {
            python,
            handshake: Duration::MAX,
            lease: Duration::MAX,
            ..Config::default()
        };
        let addr = "127.0.0.1:0".parse().unwrap();
        let (server, _events) = Server::bind(addr, key.clone(), Mode::Lesson(1), cfg).unwrap();
        server.start().unwrap();
        let addr = server.local_addr().unwrap().to_string();
        if python {
            PyClient::connect(&addr, &key, Duration::MAX).unwrap();
        } else {
            crate::manager::client::Client::connect(&addr, &key, 1, Duration::MAX).unwrap();
        }
    }
}
