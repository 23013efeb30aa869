//! Evaluation: generated series with known exhaustion times, cut at several
//! "now" points, scored for stormcast's forecaster and for the
//! `predict_linear(v[6h], 24h)` baseline node-mixin alerts use. Used by the
//! `forecast_eval` bench (which prints the figures) and by a quality-floor test.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::anomaly;
use super::baseline;
pub use super::forecast::CrossCheck;
use super::forecast::{forecast, predict_linear_crossing, ForecastParams};
use super::stats::median;

const STEP: i64 = 300;
const DAY: i64 = 86_400;
const HOUR: i64 = 3600;
/// Every generated series starts here (a Monday, 00:00 UTC).
pub const T0: i64 = 1_700_438_400;

/// The shapes generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    LinearLeak,
    DailyGrowth,
    SawtoothNeverFills,
    HighFlat,
    StepThenLeak,
    SeasonalNeverExhausts,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::LinearLeak,
        Kind::DailyGrowth,
        Kind::SawtoothNeverFills,
        Kind::HighFlat,
        Kind::StepThenLeak,
        Kind::SeasonalNeverExhausts,
    ];

    pub fn exhausts(self) -> bool {
        matches!(
            self,
            Kind::LinearLeak | Kind::DailyGrowth | Kind::StepThenLeak
        )
    }
}

/// One generated series with its truth.
#[derive(Debug, Clone)]
pub struct Case {
    pub kind: Kind,
    pub points: Vec<(i64, f64)>,
    pub capacity: f64,
    /// First time the noise-free signal reaches capacity.
    pub exhaustion_at: Option<i64>,
    /// "Now" points to cut the series at.
    pub cuts: Vec<i64>,
}

/// AR(1) noise with marginal standard deviation `sigma`.
struct Ar1 {
    phi: f64,
    sigma: f64,
    state: f64,
}

impl Ar1 {
    /// The generators' noise: correlated from sample to sample (φ 0.7), with
    /// a spread drawn per series.
    fn random(rng: &mut StdRng) -> Self {
        Ar1 {
            phi: 0.7,
            sigma: rng.gen_range(0.3..1.2),
            state: 0.0,
        }
    }

    fn next(&mut self, rng: &mut StdRng) -> f64 {
        let e = gauss(rng) * self.sigma * (1.0 - self.phi * self.phi).sqrt();
        self.state = self.phi * self.state + e;
        self.state
    }
}

fn gauss(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen_range(0.0..1.0);
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn daily(t: i64, peak_hour: f64) -> f64 {
    // 1 at the peak hour, -1 twelve hours later.
    let h = (t.rem_euclid(DAY)) as f64 / 3600.0;
    (2.0 * std::f64::consts::PI * (h - peak_hour) / 24.0).cos()
}

/// Generates one case of `kind`. Every series covers 9 days at 5-minute steps;
/// cuts leave at least 3 days of history.
pub fn generate(kind: Kind, rng: &mut StdRng) -> Case {
    let n = (9 * DAY / STEP) as usize;
    let cap = 100.0;
    let mut noise = Ar1::random(rng);
    let peak_hour = rng.gen_range(9.0..20.0);
    // Truth exhaustion time for exhausting kinds: day 5..8.
    let t_ex = T0 + rng.gen_range(5 * DAY..8 * DAY);
    let signal: Box<dyn Fn(i64) -> f64> = match kind {
        Kind::LinearLeak => {
            let rate = rng.gen_range(0.15..0.6) / HOUR as f64;
            let amp = rng.gen_range(0.0..4.0);
            Box::new(move |t| {
                (cap - rate * (t_ex - t) as f64 + amp * (daily(t, peak_hour) - 1.0)).max(0.0)
            })
        }
        Kind::DailyGrowth => {
            let amp = rng.gen_range(8.0..25.0);
            let growth = rng.gen_range(2.0..8.0) / DAY as f64;
            // Peaks (level + amp) reach capacity around t_ex.
            Box::new(move |t| cap - amp - growth * (t_ex - t) as f64 + amp * daily(t, peak_hour))
        }
        Kind::SawtoothNeverFills => {
            let period = rng.gen_range(3 * HOUR..14 * HOUR);
            let lo = rng.gen_range(10.0..35.0);
            let hi = rng.gen_range(60.0..85.0);
            let offset = rng.gen_range(0..period);
            Box::new(move |t| {
                let phase = ((t + offset).rem_euclid(period)) as f64 / period as f64;
                lo + (hi - lo) * phase
            })
        }
        Kind::HighFlat => {
            let level = rng.gen_range(80.0..93.0);
            noise.sigma = noise.sigma.min(1.0);
            Box::new(move |_| level)
        }
        Kind::StepThenLeak => {
            let rate = rng.gen_range(1.0..4.0) / HOUR as f64;
            // The step comes 6 to 24 h before the earliest cut (lead 23 h).
            let step_at = t_ex - rng.gen_range(29 * HOUR..47 * HOUR);
            let before = rng.gen_range(10.0..30.0);
            let after = (cap - rate * (t_ex - step_at) as f64).max(before + 30.0);
            let rate = (cap - after) / (t_ex - step_at) as f64;
            Box::new(move |t| {
                if t < step_at {
                    before
                } else {
                    after + rate * (t - step_at) as f64
                }
            })
        }
        Kind::SeasonalNeverExhausts => {
            let amp = rng.gen_range(10.0..30.0);
            let peak = rng.gen_range(60.0..88.0);
            let growth = rng.gen_range(-1.0..0.5) / DAY as f64;
            Box::new(move |t| peak - amp + growth * (t - T0) as f64 + amp * daily(t, peak_hour))
        }
    };
    let mut points = Vec::with_capacity(n);
    let mut truth = None;
    for i in 0..n {
        let t = T0 + i as i64 * STEP;
        let s = signal(t);
        if truth.is_none() && s >= cap {
            truth = Some(t);
        }
        points.push((t, s + noise.next(rng)));
    }
    if !kind.exhausts() {
        truth = None;
    }
    let cuts = match truth {
        Some(te) => [3, 6, 12, 20]
            .iter()
            .map(|h| te - h * HOUR - rng.gen_range(0..HOUR))
            .filter(|c| *c >= T0 + 3 * DAY)
            .collect(),
        None => (0..4)
            .map(|k| T0 + (4 + k) * DAY + rng.gen_range(0..DAY))
            .collect(),
    };
    Case {
        kind,
        points,
        capacity: cap,
        exhaustion_at: truth,
        cuts,
    }
}

/// `per_kind` cases of every kind from `seed`.
pub fn generate_set(seed: u64, per_kind: usize) -> Vec<Case> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for _ in 0..per_kind {
        for k in Kind::ALL {
            out.push(generate(k, &mut rng));
        }
    }
    out
}

/// Scores of one method.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Scores {
    /// Cuts where exhaustion was ≥ 2 h (and ≤ horizon) ahead.
    pub positives: usize,
    /// Of those, warned (predicted exhaustion within the horizon).
    pub warned: usize,
    /// Cuts of series that never exhaust.
    pub negatives: usize,
    /// Of those, warned anyway.
    pub false_alarms: usize,
    /// Median |predicted − true| / (true − now) over warned positives.
    pub median_rel_time_error: f64,
}

impl Scores {
    pub fn recall(&self) -> f64 {
        ratio(self.warned, self.positives)
    }
    pub fn false_alarm_rate(&self) -> f64 {
        ratio(self.false_alarms, self.negatives)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Figures for stormcast and the baseline, overall and per kind.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub stormcast: Scores,
    pub predict_linear_6h: Scores,
    pub per_kind: Vec<(Kind, Scores, Scores)>,
    /// MSTL + AutoETS median forecast (augurs), on the first cases only
    /// (it costs ~100× more per series): (its scores, stormcast's on the
    /// same cuts).
    pub mstl_autoets: Option<(Scores, Scores)>,
    /// Cuts where stormcast returned an error.
    pub errors: usize,
    /// Of the true exhaustions stormcast warned of, the fraction whose true
    /// time lies inside its reported interval (`exhaustion_earliest` to
    /// `exhaustion_latest`, or to the horizon's end when open).
    pub interval_coverage: f64,
}

/// Running [`Scores`] of one method: each scored cut is added with its true
/// exhaustion time (`None` for a cut that must not warn; cuts that are
/// neither are left out by the caller).
#[derive(Clone, Default)]
pub struct Tally {
    s: Scores,
    errs: Vec<f64>,
}

impl Tally {
    pub fn new() -> Self {
        Self::default()
    }

    /// One cut at `now`: warned when `pred` falls within `horizon`.
    pub fn add(&mut self, truth: Option<i64>, now: i64, pred: Option<i64>, horizon: i64) {
        let warned = pred.is_some_and(|p| p - now <= horizon);
        match truth {
            Some(te) => {
                self.s.positives += 1;
                if warned {
                    self.s.warned += 1;
                    let p = pred.unwrap_or(now);
                    self.errs.push((p - te).abs() as f64 / (te - now) as f64);
                }
            }
            None => {
                self.s.negatives += 1;
                if warned {
                    self.s.false_alarms += 1;
                }
            }
        }
    }
    pub fn finish(mut self) -> Scores {
        self.s.median_rel_time_error = median(&self.errs).unwrap_or(f64::NAN);
        self.s
    }
}

/// The samples of a time-ordered series up to and including `now`: the
/// history a forecast made at `now` would have had.
fn history_until(points: &[(i64, f64)], now: i64) -> &[(i64, f64)] {
    &points[..points.partition_point(|p| p.0 <= now)]
}

/// Cuts every case at its "now" points and scores both methods.
pub fn evaluate(cases: &[Case], horizon_secs: i64) -> EvalReport {
    evaluate_with(cases, horizon_secs, 0)
}

/// As [`evaluate`], also scoring augurs' MSTL+AutoETS on the first
/// `mstl_cases` cases.
pub fn evaluate_with(cases: &[Case], horizon_secs: i64, mstl_cases: usize) -> EvalReport {
    evaluate_method(cases, horizon_secs, mstl_cases, CrossCheck::Envelope)
}

/// As [`evaluate_with`], with stormcast run as `--method cross_check`.
pub fn evaluate_method(
    cases: &[Case],
    horizon_secs: i64,
    mstl_cases: usize,
    cross_check: CrossCheck,
) -> EvalReport {
    let params = ForecastParams {
        horizon_secs,
        cross_check,
        ..Default::default()
    };
    let (mut covered, mut warned) = (0usize, 0usize);
    let mut ours = Tally::new();
    let mut base = Tally::new();
    let mut per: Vec<(Kind, Tally, Tally)> = Kind::ALL
        .iter()
        .map(|k| (*k, Tally::new(), Tally::new()))
        .collect();
    let mut errors = 0;
    let mut mstl = Tally::new();
    let mut mstl_ours = Tally::new();
    for (ci, c) in cases.iter().enumerate() {
        for &now in &c.cuts {
            let hist = history_until(&c.points, now);
            let truth = c.exhaustion_at.filter(|te| *te - now >= 2 * HOUR);
            if c.exhaustion_at.is_some() && truth.is_none() {
                continue;
            }
            let pred = match forecast(hist, c.capacity, &params) {
                Ok(f) => {
                    if let (Some(te), Some(_)) = (truth, f.exhaustion_at) {
                        warned += 1;
                        let lo = f.exhaustion_earliest.map_or(i64::MIN, |t| t.timestamp());
                        let hi = f
                            .exhaustion_latest
                            .map_or(now + horizon_secs, |t| t.timestamp());
                        if (lo..=hi).contains(&te) {
                            covered += 1;
                        }
                    }
                    f.exhaustion_at.map(|t| t.timestamp())
                }
                Err(_) => {
                    errors += 1;
                    None
                }
            };
            let bl = predict_linear_crossing(hist, c.capacity, 6 * HOUR, horizon_secs);
            ours.add(truth, now, pred, horizon_secs);
            base.add(truth, now, bl, horizon_secs);
            if ci < mstl_cases {
                let m = baseline::mstl_crossing(hist, c.capacity, horizon_secs)
                    .ok()
                    .flatten();
                mstl.add(truth, now, m, horizon_secs);
                mstl_ours.add(truth, now, pred, horizon_secs);
            }
            let slot = per.iter_mut().find(|(k, _, _)| *k == c.kind).expect("kind");
            slot.1.add(truth, now, pred, horizon_secs);
            slot.2.add(truth, now, bl, horizon_secs);
        }
    }
    EvalReport {
        stormcast: ours.finish(),
        predict_linear_6h: base.finish(),
        per_kind: per
            .into_iter()
            .map(|(k, a, b)| (k, a.finish(), b.finish()))
            .collect(),
        mstl_autoets: (mstl_cases > 0).then(|| (mstl.finish(), mstl_ours.finish())),
        errors,
        interval_coverage: ratio(covered, warned),
    }
}

/// One fresh leak for the time-to-warn evaluation: a daily-seasonal series
/// flat for at least six days, then a linear leak from `onset` that brings
/// the daily peak to capacity at `exhaustion_at`.
#[derive(Debug, Clone)]
pub struct LeakCase {
    pub points: Vec<(i64, f64)>,
    pub capacity: f64,
    pub onset: i64,
    pub exhaustion_at: i64,
}

/// `n` fresh leaks from `seed`, filling 2 to 24 hours after their onset.
pub fn generate_leaks(seed: u64, n: usize) -> Vec<LeakCase> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let cap = 100.0;
            let mut noise = Ar1::random(&mut rng);
            let peak_hour = rng.gen_range(9.0..20.0);
            let amp = if rng.gen_bool(0.5) {
                rng.gen_range(3.0..15.0)
            } else {
                0.0
            };
            let peak = rng.gen_range(40.0..80.0);
            let onset = T0 + 6 * DAY + rng.gen_range(0..DAY);
            let fill = rng.gen_range(2 * HOUR..24 * HOUR) as f64;
            let rate = (cap - peak) / fill;
            let signal = move |t: i64| {
                peak - amp + amp * daily(t, peak_hour) + rate * (t - onset).max(0) as f64
            };
            let end = onset + 2 * DAY;
            let mut points = Vec::new();
            let mut truth = None;
            let mut t = T0;
            while t <= end {
                let s = signal(t);
                if truth.is_none() && t > onset && s >= cap {
                    truth = Some(t);
                }
                points.push((t, s + noise.next(&mut rng)));
                t += STEP;
            }
            LeakCase {
                points,
                capacity: cap,
                onset,
                exhaustion_at: truth.unwrap_or(end),
            }
        })
        .collect()
}

/// How soon after a leak's onset stormcast first warns.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TimeToWarn {
    /// Leaks that fill within 12 h of their onset: delay (hours) from the
    /// onset to the first warning, for those warned at least 2 h ahead.
    pub delays_within_12h: Vec<f64>,
    /// Leaks that fill within 12 h and were not warned 2 h ahead.
    pub missed_within_12h: usize,
    /// The same for leaks filling in 12 to 24 h.
    pub delays_12_to_24h: Vec<f64>,
    pub missed_12_to_24h: usize,
}

impl TimeToWarn {
    pub fn median_within_12h(&self) -> Option<f64> {
        median(&self.delays_within_12h)
    }
    pub fn median_12_to_24h(&self) -> Option<f64> {
        median(&self.delays_12_to_24h)
    }
}

/// Cuts every leak every `every_secs` after its onset (until 2 h before it
/// fills) and records the first cut whose forecast warns: exhaustion
/// predicted within the horizon with confidence ≥ `min_confidence`, as a
/// model's alert requires.
pub fn time_to_warn(
    cases: &[LeakCase],
    horizon_secs: i64,
    every_secs: i64,
    min_confidence: f64,
) -> TimeToWarn {
    let params = ForecastParams {
        horizon_secs,
        ..Default::default()
    };
    let mut out = TimeToWarn::default();
    for c in cases {
        let fill = c.exhaustion_at - c.onset;
        let mut first = None;
        let mut now = c.onset + every_secs;
        while now <= c.exhaustion_at - 2 * HOUR {
            let hist = history_until(&c.points, now);
            let warned = forecast(hist, c.capacity, &params).is_ok_and(|f| {
                f.confidence >= min_confidence
                    && f.exhaustion_at
                        .is_some_and(|t| (t.timestamp() - now) <= horizon_secs)
            });
            if warned {
                first = Some((now - c.onset) as f64 / HOUR as f64);
                break;
            }
            now += every_secs;
        }
        let (delays, missed) = if fill <= 12 * HOUR {
            (&mut out.delays_within_12h, &mut out.missed_within_12h)
        } else if fill <= 24 * HOUR {
            (&mut out.delays_12_to_24h, &mut out.missed_12_to_24h)
        } else {
            continue;
        };
        match first {
            Some(d) => delays.push(d),
            None => *missed += 1,
        }
    }
    out
}

/// A labelled series for anomaly scoring: indices of injected anomalies.
#[derive(Debug, Clone)]
pub struct AnomalyCase {
    pub points: Vec<(i64, f64)>,
    pub anomalies: Vec<usize>,
}

/// Daily-seasonal series with spikes, dips and one level shift injected after
/// the first three days.
pub fn generate_anomaly_set(seed: u64, n_series: usize) -> Vec<AnomalyCase> {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = (6 * DAY / STEP) as usize;
    (0..n_series)
        .map(|_| {
            let amp = rng.gen_range(5.0..20.0);
            let base = rng.gen_range(30.0..60.0);
            let sigma = rng.gen_range(0.5..1.5);
            let peak_hour = rng.gen_range(9.0..20.0);
            let mut noise = Ar1 {
                phi: 0.5,
                sigma,
                state: 0.0,
            };
            let mut labels = Vec::new();
            let first = (3 * DAY / STEP) as usize;
            let mut injected: Vec<(usize, f64)> = Vec::new();
            for _ in 0..6 {
                let i = rng.gen_range(first..n);
                let sign = if rng.gen_bool(0.5) { 1.0 } else { -1.0 };
                injected.push((i, sign * sigma * rng.gen_range(6.0..12.0)));
            }
            let shift_at = rng.gen_range(first..n - 10);
            let shift = sigma * rng.gen_range(6.0..10.0);
            let points = (0..n)
                .map(|i| {
                    let t = T0 + i as i64 * STEP;
                    let mut v = base + amp * daily(t, peak_hour) + noise.next(&mut rng);
                    if i >= shift_at {
                        v += shift;
                    }
                    for (j, d) in &injected {
                        if *j == i {
                            v += d;
                        }
                    }
                    (t, v)
                })
                .collect();
            labels.extend(injected.iter().map(|(i, _)| *i));
            labels.push(shift_at);
            labels.sort_unstable();
            labels.dedup();
            AnomalyCase {
                points,
                anomalies: labels,
            }
        })
        .collect()
}

/// Precision and recall of `score >= threshold`. A detection within two
/// samples after a labelled point counts as a hit (a level shift is
/// confirmed by the samples that follow it).
pub fn evaluate_anomaly(cases: &[AnomalyCase], threshold: f64) -> (f64, f64) {
    let (mut tp, mut fp, mut found, mut total) = (0usize, 0usize, 0usize, 0usize);
    for c in cases {
        let scores = anomaly::score_series(&c.points);
        let flagged: Vec<usize> = scores
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some_and(|s| s >= threshold))
            .map(|(i, _)| i)
            .collect();
        for &i in &flagged {
            if c.anomalies.iter().any(|&a| i >= a && i <= a + 2) {
                tp += 1;
            } else {
                fp += 1;
            }
        }
        for &a in &c.anomalies {
            total += 1;
            if flagged.iter().any(|&i| i >= a && i <= a + 2) {
                found += 1;
            }
        }
    }
    (ratio(tp, tp + fp), ratio(found, total))
}
