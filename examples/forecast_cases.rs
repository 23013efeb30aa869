//! Exhaustion forecasting on a folder of cases stormcast did not write:
//! recall, false alarms and time error beside Prometheus' `predict_linear`,
//! per pattern; how well `confidence` is calibrated (a reliability table by
//! decile); how often `exhaustion_earliest`..`exhaustion_latest` brackets the
//! true time; and, when the folder's scorer is there, its own figures.
//!
//! `cargo run --release --example forecast_cases -- CASES_DIR [SCORER] [--statsforecast]`
//!
//! CASES_DIR holds `<case>.csv` (`timestamp,value`, capacity 1) and
//! `truth.json` (`case`, `kind`, `now`, `exhaustion_at` or null), as
//! the independent evaluation set's `forecast/cases` does. SCORER defaults to
//! `CASES_DIR/../fcscore.py`; it is run with `python3` on
//! `target/release/stormcast forecast` (build it first). The definitions
//! follow it: a positive exhausts within 24 h and ≥ 2 h after "now"; a
//! negative does not exhaust within 36 h; anything between is not scored.
//!
//! `--statsforecast` also fits statsforecast's MSTL + AutoETS (installed
//! from PyPI into `target/statsforecast-venv` on first use) on the same
//! cases, scored the same way, with its run time per series.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use chrono::DateTime;
use serde::Deserialize;
use stormcast::analyze::eval::Tally;
use stormcast::analyze::forecast::predict_linear_crossing;
use stormcast::analyze::{forecast, parse_input, CrossCheck, Forecast, ForecastParams};

const H24: i64 = 86_400;
const H2: i64 = 7_200;

#[derive(Deserialize)]
struct Truth {
    case: String,
    kind: String,
    now: String,
    exhaustion_at: Option<String>,
}

fn secs(s: &str) -> i64 {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("bad timestamp {s:?} in truth.json: {e}"))
        .timestamp()
}

/// Positive (`Some(true)`), negative (`Some(false)`) or not scored, as the
/// folder's scorer counts them: exhaustions 2 to 24 h ahead must warn,
/// cases that do not exhaust within 36 h must not.
fn label(now: i64, truth: Option<i64>) -> Option<bool> {
    match truth {
        Some(te) if te - now <= H24 && te - now >= H2 => Some(true),
        Some(te) if te - now <= H24 * 3 / 2 => None,
        _ => Some(false),
    }
}

/// A scored case added to `tally`; unscored ones are left out.
fn add(tally: &mut Tally, now: i64, truth: Option<i64>, pred: Option<i64>) {
    match label(now, truth) {
        Some(true) => tally.add(truth, now, pred, H24),
        Some(false) => tally.add(None, now, pred, H24),
        None => {}
    }
}

fn row(name: &str, tally: &Tally) {
    let s = tally.clone().finish();
    let r = |a: usize, b: usize| {
        if b == 0 {
            "-".to_string()
        } else {
            format!("{:.3}", a as f64 / b as f64)
        }
    };
    let med = s.median_rel_time_error;
    println!(
        "{name:<28} {:>7} {:>5}/{:<4} {:>7} {:>4}/{:<4} {:>9}",
        r(s.warned, s.positives),
        s.warned,
        s.positives,
        r(s.false_alarms, s.negatives),
        s.false_alarms,
        s.negatives,
        if med.is_nan() {
            "-".into()
        } else {
            format!("{med:.3}")
        }
    );
}

fn header() {
    println!(
        "{:<28} {:>7} {:>10} {:>7} {:>9} {:>9}",
        "", "recall", "(n)", "f.alarm", "(n)", "rel.err"
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pos: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let Some(dir) = pos.first().map(PathBuf::from) else {
        eprintln!("usage: forecast_cases CASES_DIR [SCORER] [--statsforecast]");
        std::process::exit(2);
    };
    let scorer = pos
        .get(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("../fcscore.py"));
    let truth: Vec<Truth> = serde_json::from_str(
        &std::fs::read_to_string(dir.join("truth.json")).expect("CASES_DIR/truth.json"),
    )
    .expect("truth.json: a list of {case, kind, now, exhaustion_at}");
    let params = ForecastParams {
        horizon_secs: H24,
        cross_check: CrossCheck::Both,
        ..Default::default()
    };
    let bar = indicatif::ProgressBar::new(truth.len() as u64);
    let mut ours = Tally::default();
    let mut base = Tally::default();
    let mut per_kind: BTreeMap<String, (Tally, Tally)> = BTreeMap::new();
    // (confidence, exhausted within 24 h) over scored cases.
    let mut reliability: Vec<(f64, bool)> = Vec::new();
    let (mut bracketed, mut warned_pos) = (0usize, 0usize);
    let mut errors = 0usize;
    let start = Instant::now();
    for t in &truth {
        bar.inc(1);
        let text = std::fs::read_to_string(dir.join(format!("{}.csv", t.case)))
            .unwrap_or_else(|e| panic!("{}.csv: {e}", t.case));
        let points = parse_input(&text)
            .unwrap_or_else(|e| panic!("{}.csv: {e}", t.case))
            .remove(0)
            .points;
        let now = secs(&t.now);
        let te = t.exhaustion_at.as_deref().map(secs);
        let f: Option<Forecast> = match forecast(&points, 1.0, &params) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("{}: {e}", t.case);
                errors += 1;
                None
            }
        };
        let pred = f
            .as_ref()
            .and_then(|f| f.exhaustion_at.map(|x| x.timestamp()));
        let bl = predict_linear_crossing(&points, 1.0, 6 * 3600, H24);
        add(&mut ours, now, te, pred);
        add(&mut base, now, te, bl);
        let slot = per_kind.entry(t.kind.clone()).or_default();
        add(&mut slot.0, now, te, pred);
        add(&mut slot.1, now, te, bl);
        if let (Some(f), Some(l)) = (&f, label(now, te)) {
            reliability.push((f.confidence, l));
            if l && pred.is_some_and(|p| p - now <= H24) {
                warned_pos += 1;
                let lo = f.exhaustion_earliest.map_or(now, |x| x.timestamp());
                let hi = f.exhaustion_latest.map_or(now + H24, |x| x.timestamp());
                bracketed += usize::from((lo..=hi).contains(&te.unwrap_or(now)));
            }
        }
    }
    bar.finish_and_clear();
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "{} cases in {} ({} forecast errors), 24 h horizon, capacity 1; stormcast in-process {:.2} s ({:.1} ms/series)",
        truth.len(),
        dir.display(),
        errors,
        elapsed,
        1e3 * elapsed / truth.len().max(1) as f64
    );
    header();
    row("stormcast", &ours);
    row("predict_linear 6h", &base);
    println!("per pattern (stormcast, then predict_linear):");
    for (k, (o, b)) in &per_kind {
        row(&format!("  {k}"), o);
        row("    predict_linear", b);
    }
    println!(
        "bracket: exhaustion_earliest..exhaustion_latest (open end = horizon) holds the true time in {}/{} warned exhaustions ({:.1}%)",
        bracketed,
        warned_pos,
        100.0 * bracketed as f64 / warned_pos.max(1) as f64
    );
    println!("reliability of `confidence` (scored cases):");
    println!(
        "  {:<10} {:>5} {:>10} {:>10}",
        "decile", "n", "mean conf", "exhausted"
    );
    for d in 0..10 {
        let lo = d as f64 / 10.0;
        let hi = lo + 0.1;
        let inb: Vec<&(f64, bool)> = reliability
            .iter()
            .filter(|(c, _)| *c >= lo && (*c < hi || (d == 9 && *c <= 1.0)))
            .collect();
        if inb.is_empty() {
            println!(
                "  {:<10} {:>5} {:>10} {:>10}",
                format!("{lo:.1}-{hi:.1}"),
                0,
                "-",
                "-"
            );
            continue;
        }
        let mc = inb.iter().map(|(c, _)| c).sum::<f64>() / inb.len() as f64;
        let ex = inb.iter().filter(|(_, l)| *l).count() as f64 / inb.len() as f64;
        println!(
            "  {:<10} {:>5} {:>10.3} {:>10.3}",
            format!("{lo:.1}-{hi:.1}"),
            inb.len(),
            mc,
            ex
        );
    }
    let brier = reliability
        .iter()
        .map(|(c, l)| (c - f64::from(u8::from(*l))).powi(2))
        .sum::<f64>()
        / reliability.len().max(1) as f64;
    println!("  Brier score {brier:.4}");
    if scorer.exists() {
        run_scorer(&scorer, &dir);
    } else {
        println!("(no scorer at {}: skipped)", scorer.display());
    }
    if args.iter().any(|a| a == "--statsforecast") {
        statsforecast(&dir, &truth);
    }
}

/// The folder's own scorer on the release binary, as its README gives it.
fn run_scorer(scorer: &Path, dir: &Path) {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/stormcast");
    let cmd = format!(
        "{} forecast --input {{in}} --capacity 1 --horizon 24h --output json",
        bin.display()
    );
    println!("scorer {} (stormcast as `project`):", scorer.display());
    match Command::new("python3")
        .arg(scorer)
        .arg(dir)
        .arg(&cmd)
        .output()
    {
        Ok(o) if o.status.success() => print!("  {}", String::from_utf8_lossy(&o.stdout)),
        Ok(o) => println!("  scorer failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => println!("  could not run python3: {e}"),
    }
}

/// statsforecast's MSTL (daily season) + AutoETS median forecast on every
/// case, in a virtualenv of its own.
fn statsforecast(dir: &Path, truth: &[Truth]) {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/statsforecast-venv");
    let py = venv.join("bin/python");
    if !py.exists() {
        println!(
            "creating {} and installing statsforecast from PyPI",
            venv.display()
        );
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "statsforecast"])
                .status()
                .is_ok_and(|s| s.success());
        if !ok {
            println!("  statsforecast could not be installed: skipped");
            return;
        }
    }
    let script = r#"
import csv, json, sys, time
import numpy as np
from statsforecast.models import MSTL, AutoETS
d = sys.argv[1]
out = {}
total = 0.0
for t in json.load(open(d + "/truth.json")):
    rows = list(csv.DictReader(open(f"{d}/{t['case']}.csv")))
    y = np.array([float(r["value"]) for r in rows])
    ts = [r["timestamp"] for r in rows]
    t0 = time.perf_counter()
    m = MSTL(season_length=[288], trend_forecaster=AutoETS(model="ZZN"))
    f = m.forecast(y=y, h=288)["mean"]
    total += time.perf_counter() - t0
    hit = next((i for i, v in enumerate(f) if v >= 1.0), None)
    out[t["case"]] = hit
print(json.dumps({"steps": out, "secs_per_series": total / max(len(out), 1)}))
"#;
    let o = Command::new(&py).arg("-c").arg(script).arg(dir).output();
    let Some(o) = o.ok().filter(|o| o.status.success()) else {
        println!("  statsforecast run failed");
        return;
    };
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("statsforecast output");
    let mut s = Tally::default();
    for t in truth {
        let now = secs(&t.now);
        let te = t.exhaustion_at.as_deref().map(secs);
        let pred = v["steps"][&t.case].as_i64().map(|k| now + (k + 1) * 300);
        add(&mut s, now, te, pred);
    }
    header();
    row("statsforecast MSTL+AutoETS", &s);
    println!(
        "  statsforecast: {:.1} ms per series",
        1e3 * v["secs_per_series"].as_f64().unwrap_or(f64::NAN)
    );
}
