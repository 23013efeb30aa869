//! Forecast quality bench: prints recall, false-alarm rate and time error for
//! stormcast and `predict_linear(v[6h], 24h)` on generated series, and anomaly
//! precision/recall on labelled series, and the time from a fresh leak's onset
//! to the first warning.
//!
//! `cargo bench --bench forecast_eval` (optionally `-- <per_kind> <seed> <mstl_cases>`).

use stormcast::analyze::eval;

#[path = "support/args.rs"]
mod args;

fn main() {
    let args = args::positional();
    let per_kind: usize = args::nth(&args, 0, 100);
    let seed: u64 = args::nth(&args, 1, 2026);
    let start = std::time::Instant::now();
    let cases = eval::generate_set(seed, per_kind);
    let mstl_cases: usize = args::nth(&args, 2, 60);
    let r = eval::evaluate_with(&cases, 86_400, mstl_cases);
    println!(
        "forecast_eval: {} series ({per_kind} per kind, seed {seed}), 24h horizon, 9 days at 5m, cut at 4 points each",
        cases.len()
    );
    println!(
        "{:<24} {:>9} {:>9} {:>12} {:>9} {:>16}",
        "", "recall", "(n)", "false alarm", "(n)", "median rel err"
    );
    let row = |name: &str, s: &eval::Scores| {
        println!(
            "{:<24} {:>8.1}% {:>9} {:>11.2}% {:>9} {:>15.1}%",
            name,
            100.0 * s.recall(),
            s.positives,
            100.0 * s.false_alarm_rate(),
            s.negatives,
            100.0 * s.median_rel_time_error
        )
    };
    row("stormcast", &r.stormcast);
    row("predict_linear 6h", &r.predict_linear_6h);
    println!("per kind (stormcast / predict_linear):");
    for (k, o, b) in &r.per_kind {
        row(&format!("  {k:?}"), o);
        row("    predict_linear", b);
    }
    if let Some((m, o)) = &r.mstl_autoets {
        println!("on the first {mstl_cases} series only (MSTL+AutoETS is ~100x costlier):");
        row("  MSTL+AutoETS median", m);
        row("  stormcast (same cuts)", o);
    }
    println!(
        "stormcast interval coverage (true time inside the reported interval): {:.1}%",
        100.0 * r.interval_coverage
    );
    if mstl_cases > 0 {
        // --method both on the same subset: the MSTL cross-check on at-risk cuts.
        let sub = &cases[..mstl_cases.min(cases.len())];
        let t = std::time::Instant::now();
        let env = eval::evaluate_method(sub, 86_400, 0, eval::CrossCheck::Envelope);
        let t_env = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let both = eval::evaluate_method(sub, 86_400, 0, eval::CrossCheck::Both);
        let t_both = t.elapsed().as_secs_f64();
        println!(
            "--method envelope vs both on the first {} series:",
            sub.len()
        );
        row("  envelope", &env.stormcast);
        row("  both (MSTL cross-check)", &both.stormcast);
        println!(
            "  interval coverage {:.1}% -> {:.1}%; time {:.2}s -> {:.2}s",
            100.0 * env.interval_coverage,
            100.0 * both.interval_coverage,
            t_env,
            t_both
        );
    }
    println!("forecast errors: {}", r.errors);
    // Time to warn: fresh leaks cut every 15 minutes after their onset.
    let leaks = eval::generate_leaks(seed, per_kind.max(20));
    let ttw = eval::time_to_warn(&leaks, 86_400, 900, 0.5);
    let fmt = |m: Option<f64>| m.map_or("-".into(), |h| format!("{:.2} h", h));
    println!(
        "time to warn (fresh leaks, cut every 15 min after onset, confidence >= 0.5): \
         filling within 12 h: median {} ({} warned >= 2 h ahead, {} not); \
         in 12-24 h: median {} ({} warned, {} not)",
        fmt(ttw.median_within_12h()),
        ttw.delays_within_12h.len(),
        ttw.missed_within_12h,
        fmt(ttw.median_12_to_24h()),
        ttw.delays_12_to_24h.len(),
        ttw.missed_12_to_24h
    );
    let an = eval::generate_anomaly_set(seed, per_kind.max(10));
    for thr in [0.3, 0.5, 0.7] {
        let (p, rc) = eval::evaluate_anomaly(&an, thr);
        println!(
            "anomaly (score >= {thr}): precision {:.1}% recall {:.1}% over {} labelled series",
            100.0 * p,
            100.0 * rc,
            an.len()
        );
    }
    println!("elapsed {:.1}s", start.elapsed().as_secs_f64());
}
