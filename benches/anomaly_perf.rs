//! Anomaly scoring throughput: 10,000 series × 2,016 points (7 days at 5
//! minutes) scored online on one core, as `serve` scores a model's history.
//! Prints nanoseconds per point; the target is under 2,000.
//!
//! `cargo bench --bench anomaly_perf` (optionally `-- <series> <points>`).

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use stormcast::analyze::anomaly::score_series;

#[path = "support/args.rs"]
mod args;

fn series(i: usize, n: usize) -> Vec<(i64, f64)> {
    let mut rng = StdRng::seed_from_u64(i as u64);
    let base = rng.gen_range(10.0..70.0);
    let amp = rng.gen_range(0.0..15.0);
    (0..n)
        .map(|k| {
            let x = k as f64 * 300.0;
            let v = base
                + amp * (std::f64::consts::TAU * x / 86_400.0).sin()
                + rng.gen_range(-1.0..1.0);
            (1_700_438_400 + k as i64 * 300, v)
        })
        .collect()
}

fn main() {
    let a = args::positional();
    let n_series: usize = args::nth(&a, 0, 10_000);
    let points: usize = args::nth(&a, 1, 2016);
    let (mut scoring, mut flagged) = (std::time::Duration::ZERO, 0usize);
    for i in 0..n_series {
        let s = series(i, points);
        let start = Instant::now();
        let scores = score_series(&s);
        scoring += start.elapsed();
        flagged += scores.iter().filter(|v| v.unwrap_or(0.0) >= 0.5).count();
    }
    let total = (n_series * points) as f64;
    println!(
        "anomaly scoring: {n_series} series x {points} points in {:.2} s: {:.0} ns per point; {flagged} alert-level points ({:.3} per series-week)",
        scoring.as_secs_f64(),
        scoring.as_nanos() as f64 / total,
        flagged as f64 / n_series as f64 / (points as f64 * 300.0 / 604_800.0),
    );
}
