//! Peer comparison cost in `serve`: 10,000 series × 2,016 points (7 days at
//! 5 minutes) in 10 clusters, a 1 h window, about 1% of the series made
//! unlike their peers (utilisation 40 points above a spread of 35–45%).
//! Reports grouping and comparison time and how many of the planted outliers
//! were found (and how many others were flagged: with many clusters of 4 or 5
//! series, a node at the edge of that spread can be).
//!
//! `cargo bench --bench peer_perf` (optionally `-- <series> <points> <clusters>`).

use std::collections::BTreeMap;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use stormcast::analyze::report::SeriesResult;
use stormcast::analyze::run::{mark_peer_outliers, peer_groups, Capacity};
use stormcast::analyze::Series;

#[path = "support/args.rs"]
mod args;

const STEP: i64 = 300;
const END: i64 = 1_700_438_400 + 7 * 86_400;

fn input(i: usize, n: usize, clusters: usize) -> (Series, Capacity) {
    let mut rng = StdRng::seed_from_u64(i as u64);
    let cap = [64e9, 128e9, 256e9][i % 3];
    let share = rng.gen_range(0.35..0.45) + if i % 97 == 7 { 0.4 } else { 0.0 };
    let points = (0..n)
        .map(|k| {
            let t = END - (n - 1 - k) as i64 * STEP;
            let day = 0.05 * (t as f64 * std::f64::consts::TAU / 86_400.0).sin();
            (t, cap * (share + day + rng.gen_range(-0.01..0.01)))
        })
        .collect();
    let labels: BTreeMap<String, String> = [
        ("cluster".to_string(), format!("c{}", i % clusters)),
        ("instance".to_string(), format!("node-{i}")),
    ]
    .into();
    (Series::new(labels, points), Ok(cap))
}

fn main() {
    let args = args::positional();
    let n_series: usize = args::nth(&args, 0, 10_000);
    let n_points: usize = args::nth(&args, 1, 2016);
    let clusters: usize = args::nth(&args, 2, 10);
    let inputs: Vec<(Series, Capacity)> = (0..n_series)
        .map(|i| input(i, n_points, clusters))
        .collect();
    let mut results: Vec<SeriesResult> = inputs.iter().map(|(s, _)| SeriesResult::of(s)).collect();

    let t = Instant::now();
    let groups = peer_groups(inputs.iter().map(|(s, _)| &s.labels), "cluster");
    let grouping = t.elapsed().as_secs_f64();
    let t = Instant::now();
    mark_peer_outliers(&mut results, &inputs, "cluster", END, 3600, 4.0);
    let compare = t.elapsed().as_secs_f64();

    let planted = (0..n_series).filter(|i| i % 97 == 7).count();
    let found = results
        .iter()
        .enumerate()
        .filter(|(i, r)| i % 97 == 7 && r.peer_outlier.is_some())
        .count();
    let others = results
        .iter()
        .enumerate()
        .filter(|(i, r)| i % 97 != 7 && r.peer_outlier.is_some())
        .count();
    println!(
        "peer_perf: {n_series} series x {n_points} points in {} clusters, 1h window",
        groups.len()
    );
    println!(
        "  grouping {:.2} ms, comparison {:.1} ms ({:.1} us/series)",
        grouping * 1e3,
        compare * 1e3,
        compare * 1e6 / n_series as f64
    );
    println!("  planted outliers found {found}/{planted}, other series flagged {others}");
}
