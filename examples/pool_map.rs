//! A pool of worker processes: `map` over integers and over strings,
//! `apply_async`, and an item that fails alone. The tasks take and return
//! their own types; a misspelt task is a compile error.
//!
//! Run: cargo run --example pool_map

#![forbid(unsafe_code)]

use posixkit::pool::{Pool, Registry, TaskError};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Code cannot cross a pipe: tasks are registered before the pool forks,
    // and the workers inherit them.
    let mut registry = Registry::new();
    let square = registry.task("square", |n: i64| n.checked_mul(n).ok_or("overflow"));
    let shout = registry.task("shout", |s: String| format!("{}!", s.to_uppercase()));
    let mut pool = Pool::new(2, registry)?;

    // map: results in argument order; chunks of 2 items per message.
    let squares: Vec<i64> = pool
        .map(square, &[1, 2, 3, 4, 5], 2)?
        .iter()
        .collect::<Result<_, _>>()?;
    println!("squares: {squares:?}");
    assert_eq!(squares, [1, 4, 9, 16, 25]);

    let words = ["posix".to_string(), "kit".to_string()];
    let loud: Vec<String> = pool
        .map(shout, &words, 0)?
        .iter()
        .collect::<Result<_, _>>()?;
    println!("shouted: {loud:?}");
    assert_eq!(loud, ["POSIX!", "KIT!"]);

    // An item whose task returns an error (or panics) fails alone.
    let results = pool.map(square, &[3, i64::MAX], 0)?;
    assert_eq!(results.get(0), Ok(9));
    match results.get(1) {
        Err(TaskError::Failed { message, .. }) => println!("item 1 failed: {message}"),
        other => panic!("expected a failure, got {other:?}"),
    }

    // apply_async, then get (None: no timeout).
    let handle = pool.apply_async(square, 12)?;
    let got = pool.get(&handle, None)?;
    println!("apply_async(square, 12) = {got:?}");
    assert_eq!(got, Some(Ok(144)));

    pool.close();
    for (pid, status) in pool.join()? {
        println!("worker {pid} {status}");
        assert!(status.success());
    }
    Ok(())
}
