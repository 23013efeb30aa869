//! Forecast throughput: 10,000 series × 2,016 points (7 days at 5 minutes),
//! 24 h horizon, on every core. Series are generated inside the workers so
//! memory stays bounded by the number of workers; peak RSS is reported.
//!
//! `cargo bench --bench forecast_perf` (optionally `-- <series> <points> <method>
//! <max_cross_checks>`, method `envelope` (default) or `both`: plus the MSTL
//! cross-check on at most `max_cross_checks` at-risk series, the soonest to
//! exhaust first, as `serve` runs it; default 100, 0 for no limit). With
//! `both`, the envelope pass keeps the samples of at-risk series for the
//! cross-check pass.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use stormcast::analyze::forecast::DEFAULT_MAX_CROSS_CHECKS;
use stormcast::analyze::run::cross_check_most_urgent;
use stormcast::analyze::{forecast, Forecast, ForecastParams};

#[path = "support/args.rs"]
mod args;

fn series(i: usize, n: usize) -> Vec<(i64, f64)> {
    let mut rng = StdRng::seed_from_u64(i as u64);
    let base = rng.gen_range(10.0..70.0);
    let growth = rng.gen_range(-2.0..6.0) / 86_400.0;
    let amp = rng.gen_range(0.0..15.0);
    let saw = i % 5 == 0;
    (0..n)
        .map(|k| {
            let t = 1_700_438_400 + k as i64 * 300;
            let x = k as f64 * 300.0;
            let mut v = base
                + growth * x
                + amp * (2.0 * std::f64::consts::PI * x / 86_400.0).sin()
                + rng.gen_range(-1.0..1.0);
            if saw {
                v = base + 20.0 * ((x / 21_600.0).fract());
            }
            (t, v)
        })
        .collect()
}

fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn main() {
    let args = args::positional();
    let n_series: usize = args::nth(&args, 0, 10_000);
    let n_points: usize = args::nth(&args, 1, 2016);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let both = args.get(2).map(String::as_str) == Some("both");
    let limit: usize = args::nth(&args, 3, DEFAULT_MAX_CROSS_CHECKS);
    let params = ForecastParams::default();
    // At-risk series: (index, samples, envelope forecast).
    type Pending = (usize, Vec<(i64, f64)>, Forecast);
    let pending: Mutex<Vec<Pending>> = Mutex::new(Vec::new());
    let rss0 = peak_rss_kib();

    // Generation alone, to separate it from forecasting.
    let t = Instant::now();
    let mut sink = 0.0;
    for i in 0..n_series.min(1000) {
        sink += series(i, n_points)[0].1;
    }
    let gen_per_series = t.elapsed().as_secs_f64() / n_series.min(1000) as f64;

    let next = AtomicUsize::new(0);
    let at_risk = AtomicUsize::new(0);
    let errors = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n_series {
                    break;
                }
                let pts = series(i, n_points);
                match forecast(&pts, 100.0, &params) {
                    Ok(f) => {
                        if f.exhaustion_at.is_some() {
                            at_risk.fetch_add(1, Ordering::Relaxed);
                        }
                        if both && f.wants_cross_check() {
                            pending.lock().unwrap().push((i, pts, f));
                        }
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let envelope_secs = start.elapsed().as_secs_f64();
    // The cross-check pass, as one `serve` run does it (input order first,
    // so the choice does not depend on the workers' scheduling).
    let mut pending = pending.into_inner().unwrap();
    pending.sort_by_key(|p| p.0);
    let summary = cross_check_most_urgent(
        pending
            .iter_mut()
            .map(|(_, pts, f)| (pts.as_slice(), f))
            .collect(),
        limit,
    );
    let cross_checked = pending.iter().filter(|p| p.2.mstl.is_some()).count();
    let total = start.elapsed().as_secs_f64();
    let forecast_only = total - gen_per_series * n_series as f64 / threads as f64;
    println!(
        "forecast_perf: {n_series} series x {n_points} points, 24h horizon, {threads} threads, method {}",
        if both {
            format!("both, max_cross_checks {limit}")
        } else {
            "envelope".into()
        }
    );
    println!(
        "  wall {total:.2}s including generation ({:.2} ms/series generation); forecasting ~{forecast_only:.2}s = {:.0} series/s",
        gen_per_series * 1e3,
        n_series as f64 / forecast_only.max(1e-9)
    );
    if both {
        println!(
            "  envelope pass {envelope_secs:.2}s, cross-check pass {:.2}s: {} wanted, {} checked, {} skipped",
            total - envelope_secs,
            summary.wanted,
            summary.checked,
            summary.skipped
        );
    }
    println!(
        "  at risk {} MSTL cross-checks {} errors {}  peak RSS {} MiB (before: {} MiB)",
        at_risk.load(Ordering::Relaxed),
        cross_checked,
        errors.load(Ordering::Relaxed),
        peak_rss_kib().map_or(0, |k| k / 1024),
        rss0.map_or(0, |k| k / 1024),
    );
    if sink == 0.5 {
        println!();
    }
}
