//! Every Pool call of Python's lesson on typed tasks: apply (blocking),
//! apply_async with callback and error_callback, map_async, imap,
//! imap_unordered (results as they come back), starmap, ready and wait.
//!
//! Run: cargo run --example pool_calls

#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use posixkit::pool::{Pool, Registry, TaskError};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut registry = Registry::new();
    let square = registry.task("square", |n: i64| n * n);
    // starmap's f(a, b): a task that takes the tuple.
    let add = registry.task("add", |(a, b): (i64, i64)| a + b);
    let check = registry.task("check", |n: i64| {
        if n < 0 {
            Err(format!("{n} is negative"))
        } else {
            Ok(n)
        }
    });
    // Sleeps `ms` milliseconds and returns it: tasks that take different
    // times.
    let nap = registry.task("nap", |ms: u64| {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    });
    let mut pool = Pool::new(4, registry)?;

    // apply blocks until the result is back.
    assert_eq!(pool.apply(square, 7)?, Ok(49));

    // map_async returns at once; get waits for every result, in order.
    let h = pool.map_async(square, &[1, 2, 3, 4, 5], 0)?;
    let squares: Vec<i64> = pool
        .get(&h, None)?
        .expect("no timeout")
        .iter()
        .collect::<Result<_, _>>()?;
    assert_eq!(squares, [1, 4, 9, 16, 25]);

    // starmap: f(*args) for each tuple.
    let sums: Vec<i64> = pool
        .starmap(add, &[(1, 2), (3, 4)], 0)?
        .iter()
        .collect::<Result<_, _>>()?;
    assert_eq!(sums, [3, 7]);

    // imap: results in argument order, each as soon as it is back.
    let naps = [60, 40, 20, 0];
    let ordered: Vec<u64> = pool
        .imap(nap, &naps, 1)?
        .map(|r| r.map(|v| v.expect("a nap does not fail")))
        .collect::<Result<_, _>>()?;
    assert_eq!(ordered, naps);

    // imap_unordered: results as they come back, with their index.
    let mut seen = Vec::new();
    for r in pool.imap_unordered(nap, &naps, 1)? {
        let (index, ms) = r?;
        assert_eq!(ms?, naps[index]);
        seen.push(index);
    }
    println!("imap_unordered: argument indexes in the order they came back: {seen:?}");
    seen.sort_unstable();
    assert_eq!(seen, [0, 1, 2, 3]);

    // Callbacks run in this thread, inside the pool calls that see the
    // results come back (here, wait).
    let log: Rc<RefCell<Vec<String>>> = Rc::default();
    for n in [5, -1] {
        let (ok, err) = (Rc::clone(&log), Rc::clone(&log));
        let h = pool.apply_async_with(
            check,
            n,
            move |v| ok.borrow_mut().push(format!("callback({v})")),
            move |e: TaskError| err.borrow_mut().push(format!("error_callback({e})")),
        )?;
        assert!(pool.wait(&h, None)?);
        assert!(pool.ready(&h)?);
    }
    println!("{:?}", log.borrow());
    assert_eq!(
        *log.borrow(),
        [
            "callback(5)",
            "error_callback(task check[0] failed: -1 is negative)"
        ]
    );

    pool.close();
    pool.join()?;
    Ok(())
}
