//! A semaphore of value 2 between five worker processes: at most two are
//! inside at once. A shared counter (atomic, in shared memory) records how
//! many were inside together.
//!
//! Run: cargo run --example semaphore

#![forbid(unsafe_code)]

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use posixkit::process::Builder;
use posixkit::sem::Semaphore;
use posixkit::shm::SharedValue;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sem = Semaphore::new(2)?;
    let inside = SharedValue::new(0u32)?;
    let most = SharedValue::new(0u32)?;
    let mut workers = Vec::new();
    for w in 0..5 {
        let (sem, inside, most) = (&sem, &inside, &most);
        workers.push(Builder::new().name(format!("worker-{w}")).start(move || {
            let Ok(_slot) = sem.acquire() else { return 1 }; // posted back on drop
            let now = inside.atomic().fetch_add(1, SeqCst) + 1;
            most.atomic().fetch_max(now, SeqCst);
            std::thread::sleep(Duration::from_millis(50));
            inside.atomic().fetch_sub(1, SeqCst);
            0
        })?);
    }
    for w in &mut workers {
        let status = w.join(None)?.expect("no timeout was given");
        assert!(status.success(), "{} {status}", w.name());
    }
    println!("at most {} of 5 workers inside at once", most.get());
    assert!((1..=2).contains(&most.get()));
    assert_eq!(sem.value()?, 2, "every count was posted back");
    Ok(())
}
