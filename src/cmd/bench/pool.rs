//! The process pool: map and apply_async on warm workers.

use std::time::Instant;

use super::{Scale, check, us_per};
use crate::cmd::Result;
use crate::pool::{Pool, Task};

/// A pool of 2 and its `square` task.
pub(super) fn bench_pool() -> Result<(Pool, Task<i64, i64>)> {
    let (registry, tasks) = crate::cmd::pool::registry();
    Ok((Pool::new(2, registry)?, tasks.square))
}

/// map(square) of 10 000 items in chunks of 1 250 on a warm pool of 2, per
/// map, every result checked.
pub(super) fn pool_map10k_warm(scale: Scale) -> Result<f64> {
    let maps = scale.n(200);
    let args: Vec<i64> = (0..10_000).collect();
    let (mut pool, square) = bench_pool()?;
    // map_into reuses one result set, as the C baseline reuses its arrays.
    let mut r = pool.map(square, &args, 1250)?; // warm the workers
    let mut values = Vec::with_capacity(args.len());
    let t0 = Instant::now();
    for _ in 0..maps {
        pool.map_into(square, &args, 1250, &mut r)?;
        // Every result, as the C limit checks its whole output array.
        let all = r.values_into(&mut values).is_ok();
        check(
            all && values.len() == args.len()
                && values.iter().zip(&args).all(|(&v, &x)| v == x * x),
            "pool_map10k_warm",
            "wrong result",
        )?;
    }
    let t = us_per(t0, maps);
    pool.close();
    pool.join()?;
    Ok(t)
}

/// apply_async(square) + get on a warm pool of 2, per round trip.
pub(super) fn pool_apply_async_rtt(scale: Scale) -> Result<f64> {
    let n = scale.n(20_000);
    let (mut pool, square) = bench_pool()?;
    let t0 = Instant::now();
    for i in 0..n as i64 {
        let h = pool.apply_async(square, i)?;
        let r = pool.get(&h, None)?.expect("no timeout");
        check(r == Ok(i * i), "pool_apply_async_rtt", "wrong result")?;
    }
    let t = us_per(t0, n);
    pool.close();
    pool.join()?;
    Ok(t)
}
