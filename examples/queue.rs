//! A bounded queue between processes: two producers put five messages
//! each into a queue of four slots (they wait while it is full), and the
//! parent gets all ten. Created before the fork, the queue is shared.
//!
//! Run: cargo run --example queue

#![forbid(unsafe_code)]

use posixkit::process::Builder;
use posixkit::queue::Queue;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let queue = Queue::new(4, 64)?; // 4 slots, messages of up to 64 bytes
    let mut producers = Vec::new();
    for p in 0..2 {
        let queue = &queue;
        producers.push(
            Builder::new()
                .name(format!("producer-{p}"))
                .start(move || {
                    for i in 0..5 {
                        if queue.put(format!("{p}:{i}").as_bytes()).is_err() {
                            return 1;
                        }
                    }
                    0
                })?,
        );
    }
    let mut got = Vec::new();
    for _ in 0..10 {
        got.push(String::from_utf8(queue.get()?)?);
    }
    println!("got {got:?}");
    for p in &mut producers {
        let status = p.join(None)?.expect("no timeout was given");
        assert!(status.success(), "{} {status}", p.name());
    }
    // Each producer's messages arrive in the order it put them.
    for p in 0..2 {
        let mine: Vec<&String> = got
            .iter()
            .filter(|m| m.starts_with(&format!("{p}:")))
            .collect();
        let want: Vec<String> = (0..5).map(|i| format!("{p}:{i}")).collect();
        assert_eq!(mine, want.iter().collect::<Vec<_>>());
    }
    assert!(queue.empty()?);
    Ok(())
}
