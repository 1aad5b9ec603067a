//! Redis's own CPU, read with `INFO cpu` before and after a step, for the benchmarks that
//! give the cost of a read in Redis CPU per call (scrape.rs, tenants.rs).

use std::time::Instant;

/// Redis's own CPU seconds so far (`used_cpu_user` + `used_cpu_sys` of `INFO cpu`).
pub async fn redis_cpu(con: &mut redis::aio::MultiplexedConnection) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(con)
        .await
        .expect("INFO cpu");
    info.lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(':')?;
            ["used_cpu_user", "used_cpu_sys"]
                .contains(&k)
                .then(|| v.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// Runs `step` `times` times; returns (Redis CPU ms, wall ms) per run.
pub async fn measure<F, Fut>(
    con: &mut redis::aio::MultiplexedConnection,
    times: u32,
    mut step: F,
) -> (f64, f64)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let cpu = redis_cpu(con).await;
    let started = Instant::now();
    for _ in 0..times {
        step().await;
    }
    let wall = started.elapsed().as_secs_f64() * 1000.0 / f64::from(times);
    let cpu = (redis_cpu(con).await - cpu) * 1000.0 / f64::from(times);
    (cpu, wall)
}
