//! Anomaly detection.
//!
//! * **Online per-series score** ([`OnlineScorer`]): every point is scored
//!   from the state built on the points *before* it, never after, in O(1)
//!   time and fixed memory. Two kinds of evidence make the score:
//!   - **Records**: a point beyond everything the series has shown in its
//!     whole life: a value above the highest or below the lowest seen (by 1 %
//!     of the range and one usual step), an absolute forecast residual or its
//!     short (about 4 samples) or long (about 50) moving mean above its
//!     largest so far, or a flat-line outlasting the longest one (a stuck
//!     exporter). Of `n` exchangeable points the next is the largest with
//!     chance `1 / (n + 1)`, so records get rarer as history grows, and a
//!     bursty series whose spikes are all alike stops producing them.
//!     Records count after two days of history and score 0.75 to 1, by how
//!     far they beat the old one.
//!   - **Unusual points**: five statistics (distance from the long-run
//!     mean, the step from the previous sample, a short moving mean of
//!     squared residuals, the residual against a daily profile once that
//!     profile beats the level alone, and a sustained deviation: a moving
//!     mean over about an hour of the signed residual against a slow
//!     reference, a level and daily profile learned more slowly than the
//!     forecast's (the level ten times), so that a change the forecast
//!     absorbs within a few samples, or a day whose shape differs from the
//!     usual one, still scores while it lasts), each turned into a conformal
//!     p-value by an exponentially decaying histogram of its past values
//!     (beyond what was seen, an exponential tail fitted to the top 2 %).
//!     Fisher's method combines them into `p`, and this part of the score is
//!     `-log10(p) / 12`: 0.5 means "one in a million" by Fisher's count,
//!     which overstates rarity because the statistics look at the same
//!     point.
//!
//!   The score is the larger of the two, in [0, 1].
//! * **One alert per episode**: once a point reaches the alert threshold,
//!   the series rests for [`REST_SECS`] (Alertmanager's default
//!   `repeat_interval`): its points score 0 while the model keeps learning,
//!   so a level shift that becomes the new normal fires once.
//! * **Counters** (monotone with resets) are scored on their per-second
//!   increase, not on the ever-growing total.
//! * **Cross-series outliers** ([`peer_outliers`]): "this node behaves unlike
//!   its peers", with augurs' MAD detector over aligned series.
//!   [`recent_peer_outliers`] is the form `serve` alerts on: each moment of
//!   the recent window compared across the group, and a series must stay
//!   outlying for most of it.

use std::collections::{BTreeSet, HashMap, HashSet};

use augurs::outlier::{MADDetector, OutlierDetector};
use serde::{Deserialize, Serialize};

use super::stats::{self, median_mut, MAD_TO_SIGMA};

const DAY: i64 = 86_400;
/// Points before any score is given: the histograms need some mass.
pub const WARMUP: usize = 100;
/// Quiet time after an alert-level point: Alertmanager's default
/// `repeat_interval`.
pub const REST_SECS: i64 = 4 * 3600;
/// Score at which `serve` raises `MetricAnomalyDetected` and after which a
/// series rests: [`Profile::Standard`]'s threshold.
pub const DEFAULT_THRESHOLD: f64 = 0.5;

/// How a user trades false alerts against misses. Each threshold is the one
/// NAB's optimiser chose for the profile of the same name on NAB v1.1,
/// rounded (docs/forecasting.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// False positives cost 0.11 of a missed anomaly.
    #[default]
    Standard,
    /// False positives cost twice as much.
    LowFalsePositives,
    /// Misses cost twice as much.
    LowMisses,
}

impl Profile {
    pub fn threshold(self) -> f64 {
        match self {
            Profile::Standard => DEFAULT_THRESHOLD,
            Profile::LowFalsePositives => 0.57,
            Profile::LowMisses => 0.42,
        }
    }
}
/// `-log10(p)` of the combined statistics that maps to a score of 1: 0.5
/// is "one in a million". The statistics look at the same point and are not
/// independent, so Fisher's `p` overstates how rare a point is; the scale
/// makes up for it.
const DECADES: f64 = 12.0;
/// Lowest score of a record (a point beyond everything the series has
/// shown): records rank above every merely unusual point short of
/// 10^-9.
const RECORD_FLOOR: f64 = 0.75;
/// Excess over the previous record, as a share of it, that scores 1.
const RECORD_SPAN: f64 = 0.25;
/// A new high or low must beat the old one by this share of the range seen,
/// and by one usual step, so that a steady trend is not a string of
/// records.
const RECORD_MARGIN: f64 = 0.01;
/// A moving mean of the absolute residual must beat its largest value by
/// this share, one absolute residual (noisier) by the second, and a
/// flat-line the longest run by [`RECORD_MARGIN`].
const RESIDUAL_MARGINS: [f64; 2] = [0.03, 0.08];
/// History before a record means anything: with less, new highs are
/// frequent by chance.
const RECORD_AGE_SECS: i64 = 2 * DAY;
/// Shortest flat-line run that can be a record.
const FLAT_MIN: f64 = 10.0;

/// Decaying histogram of a positive statistic on a log scale, with
/// Fenwick trees for O(log bins) tail sums.
#[derive(Debug, Clone)]
struct Tail {
    /// Fenwick tree of weights per bin.
    w: [f64; BINS],
    /// Fenwick tree of weight × bin centre (log10), for mean excesses.
    wc: [f64; BINS],
    total: f64,
    /// Weight of the next sample; grows instead of decaying every bin.
    inc: f64,
    growth: f64,
}

const BINS: usize = 128;
const LOG_LO: f64 = -4.0;
const LOG_HI: f64 = 4.0;
/// Fraction of the mass treated as the tail for extrapolation.
const TAIL_MASS: f64 = 0.02;

fn log_stat(s: f64) -> f64 {
    if s > 0.0 {
        s.log10().clamp(LOG_LO, LOG_HI)
    } else {
        LOG_LO
    }
}

fn bin_of(l: f64) -> usize {
    (((l - LOG_LO) / (LOG_HI - LOG_LO) * BINS as f64) as usize).min(BINS - 1)
}

fn bin_low(b: usize) -> f64 {
    LOG_LO + b as f64 * (LOG_HI - LOG_LO) / BINS as f64
}

fn fen_add(t: &mut [f64; BINS], i: usize, v: f64) {
    let mut i = i + 1;
    while i <= BINS {
        t[i - 1] += v;
        i += i & i.wrapping_neg();
    }
}

/// Sum of bins `0..i`.
fn fen_prefix(t: &[f64; BINS], i: usize) -> f64 {
    let (mut i, mut s) = (i, 0.0);
    while i > 0 {
        s += t[i - 1];
        i -= i & i.wrapping_neg();
    }
    s
}

impl Tail {
    fn new(half_life: f64) -> Self {
        Tail {
            w: [0.0; BINS],
            wc: [0.0; BINS],
            total: 0.0,
            inc: 1.0,
            growth: 2f64.powf(1.0 / half_life),
        }
    }

    /// Conformal p-value of `s`: the share of past weight at least as
    /// extreme, counting `s` itself; past everything seen, an exponential
    /// tail fitted to the top [`TAIL_MASS`].
    fn p_value(&self, s: f64) -> f64 {
        let l = log_stat(s);
        let b = bin_of(l);
        let above = self.total - fen_prefix(&self.w, b);
        let p = (above + self.inc) / (self.total + self.inc);
        if above >= self.inc || self.total < 10.0 * self.inc {
            return p;
        }
        // The first bin from the top that holds TAIL_MASS of the weight.
        let (mut lo, mut hi) = (0, BINS);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if self.total - fen_prefix(&self.w, mid) >= TAIL_MASS * self.total {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let u = bin_low(lo);
        let prefix = fen_prefix(&self.w, lo);
        let mass = self.total - prefix;
        let excess = if mass > 0.0 {
            (fen_prefix(&self.wc, BINS) - fen_prefix(&self.wc, lo)) / mass - u
        } else {
            0.0
        };
        let beta = excess.max(0.05);
        (mass / self.total * (-(l - u) / beta).exp()).clamp(1e-12, p)
    }

    fn add(&mut self, s: f64) {
        let l = log_stat(s);
        let b = bin_of(l);
        let centre = bin_low(b) + 0.5 * (LOG_HI - LOG_LO) / BINS as f64;
        fen_add(&mut self.w, b, self.inc);
        fen_add(&mut self.wc, b, self.inc * centre);
        self.total += self.inc;
        self.inc *= self.growth;
        if self.inc > 1e100 {
            // Rescale everything; the Fenwick trees are linear.
            let k = 1.0 / self.inc;
            self.w
                .iter_mut()
                .chain(self.wc.iter_mut())
                .for_each(|x| *x *= k);
            self.total *= k;
            self.inc = 1.0;
        }
    }
}

/// Fisher's combination of independent p-values.
fn fisher(ps: &[f64]) -> f64 {
    let x: f64 = -ps.iter().map(|p| p.max(1e-300).ln()).sum::<f64>();
    let (mut term, mut sum) = (1.0, 1.0);
    for i in 1..ps.len() {
        term *= x / i as f64;
        sum += term;
    }
    ((-x).exp() * sum).clamp(0.0, 1.0)
}

/// Time-of-day profile in half-hour buckets, read and learned with linear
/// interpolation between neighbouring buckets.
const BUCKETS: usize = 48;

fn bucket_pos(t: i64) -> (usize, usize, f64) {
    let ph = t.rem_euclid(DAY) as f64 / DAY as f64 * BUCKETS as f64;
    let b0 = (ph as usize) % BUCKETS;
    (b0, (b0 + 1) % BUCKETS, ph.fract())
}

/// Whether a series is a counter (monotone, with resets) or a gauge; decided
/// on the first [`WARMUP`] points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Undecided,
    Gauge,
    Counter,
}

/// Online scorer for one series.
#[derive(Debug, Clone)]
pub struct OnlineScorer {
    threshold: f64,
    n: usize,
    t0: i64,
    /// The last raw sample.
    prev: Option<(i64, f64)>,
    /// The last sample in the scored unit (a counter's rate).
    prev_value: f64,
    kind: Kind,
    rises: usize,
    falls: usize,
    /// Long-run mean and variance of the value.
    mean: f64,
    var: f64,
    /// Level-only forecast and its mean absolute error.
    level0: f64,
    err0: f64,
    /// Level plus daily profile, and its mean absolute error.
    level1: f64,
    season: [f64; BUCKETS],
    err1: f64,
    /// Usual absolute step.
    step: f64,
    /// Short moving mean of squared standardised residuals.
    var_short: f64,
    flat: usize,
    run: [f64; SHIFT_RUN],
    run_len: usize,
    tails: [Tail; 5],
    /// Slow reference: level plus daily profile learned slowly, its mean
    /// absolute error, and a moving mean of its signed standardised
    /// residual.
    slow_level: f64,
    slow_season: [f64; BUCKETS],
    slow_err: f64,
    slow_dev: f64,
    /// Weight of a new sample in the long-run mean and variance.
    long_weight: f64,
    rest_until: i64,
    /// Lowest and highest value seen.
    lo: f64,
    hi: f64,
    /// Short and long moving means of the absolute forecast residual.
    res_short: f64,
    res_long: f64,
    /// Largest short and long residual means, longest flat-line run and
    /// largest absolute residual seen so far.
    record: [f64; 4],
    /// The run the current flat-line must beat, fixed when it began, and
    /// whether it has.
    flat_bar: f64,
    flat_beaten: bool,
}

/// Consecutive same-sign residuals beyond 3 scales that move the forecast
/// to a new level at once.
const SHIFT_RUN: usize = 5;
/// Forecast level smoothing per sample.
const ALPHA: f64 = 0.1;
/// Daily profile smoothing per visit.
const GAMMA: f64 = 0.2;
/// The slow reference's level smoothing per sample (about 100 samples, 8
/// hours of 5-minute samples) and daily profile smoothing per visit: a
/// change that the forecast absorbs within a few samples stays visible
/// against it for hours.
const SLOW_ALPHA: f64 = 0.01;
const SLOW_GAMMA: f64 = 0.1;
/// Weight of a new standardised residual against the slow reference in its
/// moving mean (about 12 samples, an hour of 5-minute samples), and the
/// clip on each, so one spike does not make a sustained deviation.
const DEV_WEIGHT: f64 = 1.0 / 12.0;
const DEV_CLIP: f64 = 5.0;
/// Error-scale smoothing per sample.
const BETA: f64 = 0.03;
/// Half-life of the long-run mean and of the histograms, in samples: about
/// a week of 5-minute samples.
const LONG_HALF_LIFE: f64 = 2000.0;
/// Weight of a new squared residual in the short variance.
const VAR_WEIGHT: f64 = 0.25;
/// Weight of a new absolute residual in its short and long moving means
/// (about 4 and 50 samples).
const RES_SHORT_WEIGHT: f64 = 0.25;
const RES_LONG_WEIGHT: f64 = 0.02;

impl Default for OnlineScorer {
    fn default() -> Self {
        Self::new(DEFAULT_THRESHOLD)
    }
}

impl OnlineScorer {
    /// A scorer that rests for [`REST_SECS`] after a score of `threshold`.
    pub fn new(threshold: f64) -> Self {
        OnlineScorer {
            threshold,
            n: 0,
            t0: 0,
            prev: None,
            prev_value: 0.0,
            kind: Kind::Undecided,
            rises: 0,
            falls: 0,
            mean: 0.0,
            var: 0.0,
            level0: 0.0,
            err0: 0.0,
            level1: 0.0,
            season: [0.0; BUCKETS],
            err1: 0.0,
            step: 0.0,
            var_short: 1.0,
            flat: 0,
            run: [0.0; SHIFT_RUN],
            run_len: 0,
            tails: std::array::from_fn(|_| Tail::new(LONG_HALF_LIFE)),
            slow_level: 0.0,
            slow_season: [0.0; BUCKETS],
            slow_err: 0.0,
            slow_dev: 0.0,
            long_weight: 1.0 - 0.5f64.powf(1.0 / LONG_HALF_LIFE),
            rest_until: i64::MIN,
            lo: f64::INFINITY,
            hi: f64::NEG_INFINITY,
            res_short: 0.0,
            res_long: 0.0,
            record: [0.0; 4],
            flat_bar: FLAT_MIN,
            flat_beaten: false,
        }
    }

    /// Counter or gauge, once decided.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Scores `(t, v)` against what was learned so far, then learns from it.
    /// Returns `None` for a non-finite value (which is not learned from), and
    /// 0 during the first [`WARMUP`] points and while resting.
    pub fn score(&mut self, t: i64, v: f64) -> Option<f64> {
        if !v.is_finite() {
            return None;
        }
        let raw = v;
        let v = match (self.kind, self.prev) {
            (Kind::Counter, Some((pt, pv))) => {
                let dt = (t - pt).max(1) as f64;
                // A drop is a reset: the counter restarted from 0.
                let inc = if raw >= pv { raw - pv } else { raw };
                inc / dt
            }
            _ => raw,
        };
        if self.n == 0 {
            self.start(t, v);
            self.prev = Some((t, raw));
            return Some(0.0);
        }
        if let Some((_, prev_raw)) = self.prev {
            if self.learn_kind(raw, prev_raw) {
                self.prev = Some((t, raw));
                return Some(0.0);
            }
        }
        let prev_v = self.prev_value;
        let n = self.n;
        let tiny = 1e-9 * (1.0 + v.abs());
        let (b0, b1, fr) = bucket_pos(t);
        let seasonal = self.season[b0] * (1.0 - fr) + self.season[b1] * fr;
        let use_season = t - self.t0 >= 2 * DAY && self.err1 < 0.9 * self.err0;
        let (forecast, err) = if use_season {
            (self.level1 + seasonal, self.err1)
        } else {
            (self.level0, self.err0)
        };
        let r = v - forecast;
        let scale = (1.25 * err).max(tiny);
        let z = r.abs() / scale;
        let d = (v - prev_v).abs();
        let zd = d / (1.25 * self.step).max(tiny);
        let zl = (v - self.mean).abs() / self.var.sqrt().max(tiny);
        let mut var_short = (1.0 - VAR_WEIGHT) * self.var_short + VAR_WEIGHT * (z * z).min(1e4);
        self.flat = if d <= tiny { self.flat + 1 } else { 0 };
        let slow_seasonal = self.slow_season[b0] * (1.0 - fr) + self.slow_season[b1] * fr;
        let rs = v - (self.slow_level + slow_seasonal);
        let ss = (1.25 * self.slow_err).max(tiny);
        let slow_dev =
            (1.0 - DEV_WEIGHT) * self.slow_dev + DEV_WEIGHT * (rs / ss).clamp(-DEV_CLIP, DEV_CLIP);
        let stats = [zl, zd, var_short, z, slow_dev.abs()];
        // The forecast residual counts once a daily profile explains the
        // series better than its level alone; the slow reference always.
        let used = if use_season { 5 } else { 4 };
        let mut score = 0.0;
        if n >= WARMUP {
            let mut ps = [1.0; 5];
            for (p, (tail, s)) in ps.iter_mut().zip(self.tails.iter().zip(stats)) {
                *p = tail.p_value(s);
            }
            if !use_season {
                ps[3] = ps[4];
            }
            score = (-fisher(&ps[..used]).max(1e-300).log10() / DECADES).clamp(0.0, 1.0);
        }
        for (tail, s) in self.tails.iter_mut().zip(stats) {
            tail.add(s);
        }
        let record = self.record_excess(t, v, r.abs(), tiny);
        if record > 0.0 {
            let excess = (record / RECORD_SPAN).min(1.0);
            score = score.max(RECORD_FLOOR + (1.0 - RECORD_FLOOR) * excess);
        }

        // Learn. Until 20 points are in, updates are neither weighted down
        // nor clipped.
        let warm = n >= 20;
        let w = if warm { BETA } else { 1.0 / (n + 1) as f64 };
        let a = if warm { ALPHA } else { 1.0 / (n + 1) as f64 };
        let cap = |c: f64| if warm { c } else { f64::INFINITY };
        let r0 = v - self.level0;
        let r1 = v - (self.level1 + seasonal);
        let s0 = (1.25 * self.err0).max(tiny);
        let s1 = (1.25 * self.err1).max(tiny);
        self.run[self.run_len % SHIFT_RUN] = r;
        self.run_len += 1;
        let shifted = warm
            && self.run_len >= SHIFT_RUN
            && (self.run.iter().all(|q| *q > 3.0 * scale)
                || self.run.iter().all(|q| *q < -3.0 * scale));
        if shifted {
            // A level shift: move the forecast to the new regime at once.
            let m = self.run.iter().sum::<f64>() / SHIFT_RUN as f64;
            self.level0 += if use_season { r0 } else { m };
            self.level1 += m;
            self.slow_level += m;
            self.slow_dev = 0.0;
            self.run_len = 0;
            var_short = 1.0;
        } else {
            self.level0 += a * r0.clamp(-cap(3.0 * s0), cap(3.0 * s0));
            let rc1 = r1.clamp(-cap(3.0 * s1), cap(3.0 * s1));
            self.level1 += a * rc1;
            let g = GAMMA * (1.0 - a) * rc1;
            self.season[b0] += g * (1.0 - fr);
            self.season[b1] += g * fr;
            let a_s = if warm { SLOW_ALPHA } else { a };
            let rcs = rs.clamp(-cap(3.0 * ss), cap(3.0 * ss));
            self.slow_level += a_s * rcs;
            let gs = SLOW_GAMMA * (1.0 - a_s) * rcs;
            self.slow_season[b0] += gs * (1.0 - fr);
            self.slow_season[b1] += gs * fr;
            self.slow_dev = slow_dev;
        }
        self.slow_err += w * (rs.abs().min(cap(5.0 * ss)) - self.slow_err);
        self.err0 += w * (r0.abs().min(cap(5.0 * s0)) - self.err0);
        self.err1 += w * (r1.abs().min(cap(5.0 * s1)) - self.err1);
        self.step += w * (d.min(cap(5.0 * 1.25 * self.step)) - self.step);
        self.var_short = var_short;
        let lw = self.long_weight.max(1.0 / (n + 1) as f64);
        let dm = v - self.mean;
        self.mean += lw * dm;
        self.var = (1.0 - lw) * (self.var + lw * dm * dm);
        self.prev = Some((t, raw));
        self.prev_value = v;
        self.n += 1;

        if t < self.rest_until {
            return Some(0.0);
        }
        if score >= self.threshold {
            self.rest_until = t + REST_SECS;
        }
        Some(score)
    }

    /// How far the point beats the series' records, past their margins: the
    /// value beyond the range of all values seen (as a share of that range),
    /// the absolute residual or its short or long moving mean beyond its
    /// largest value (as a share of it), or a flat-line run outlasting the
    /// longest one (at least [`FLAT_MIN`]). Not positive when no record
    /// falls. Learns the point.
    ///
    /// Records are kept for the series' whole life: the chance that the
    /// next of `n` exchangeable points is the largest is `1 / (n + 1)`, so
    /// records get rarer as the history grows, where a window of the
    /// recent past keeps producing "the largest of the week".
    fn record_excess(&mut self, t: i64, v: f64, abs_res: f64, tiny: f64) -> f64 {
        self.res_short += RES_SHORT_WEIGHT * (abs_res - self.res_short);
        self.res_long += RES_LONG_WEIGHT * (abs_res - self.res_long);
        let flat = self.flat as f64;
        if self.flat == 1 {
            self.flat_bar = self.record[2].max(FLAT_MIN);
            self.flat_beaten = false;
        }
        let stats = [self.res_short, self.res_long, flat, abs_res];
        let mut g = f64::NEG_INFINITY;
        if self.n >= WARMUP && t - self.t0 >= RECORD_AGE_SECS {
            let range = self.hi - self.lo;
            if range > tiny {
                let pad = RECORD_MARGIN * range + self.step;
                g = g
                    .max((v - self.hi - pad) / range)
                    .max((self.lo - v - pad) / range);
            }
            for k in [0, 1, 3] {
                let (s, m) = (stats[k], self.record[k]);
                if s > tiny && m > tiny {
                    g = g.max(s / m - 1.0 - RESIDUAL_MARGINS[(k == 3) as usize]);
                }
            }
            // A flat-line counts once, when it outlasts the longest before it.
            if !self.flat_beaten && flat > self.flat_bar * (1.0 + RECORD_MARGIN) {
                self.flat_beaten = true;
                g = g.max(flat / self.flat_bar - 1.0 - RECORD_MARGIN);
            }
        }
        if self.n >= 20 {
            for (m, s) in self.record.iter_mut().zip(stats) {
                *m = m.max(s);
            }
        }
        self.hi = self.hi.max(v);
        self.lo = self.lo.min(v);
        g
    }

    fn start(&mut self, t: i64, v: f64) {
        self.t0 = t;
        self.prev_value = v;
        self.mean = v;
        self.level0 = v;
        self.level1 = v;
        self.slow_level = v;
        self.n = 1;
    }

    /// Decides counter or gauge at the end of the warm-up: a counter never
    /// falls except to near zero (a reset), and mostly rises. Returns true
    /// when the scorer restarted on a counter's rates.
    fn learn_kind(&mut self, v: f64, prev: f64) -> bool {
        if self.kind != Kind::Undecided {
            return false;
        }
        if v > prev {
            self.rises += 1;
        } else if v < prev && v > 0.1 * prev.abs() {
            self.falls += 1;
        }
        if self.n + 1 >= WARMUP {
            let counter = self.falls == 0 && self.rises * 2 >= self.n && v >= 0.0;
            self.kind = if counter { Kind::Counter } else { Kind::Gauge };
            if counter {
                // Restart the models on rates from here on.
                *self = OnlineScorer {
                    kind: Kind::Counter,
                    ..OnlineScorer::new(self.threshold)
                };
                return true;
            }
        }
        false
    }
}

/// Scores a whole series in its given order (online: each point sees only
/// the points before it) at [`DEFAULT_THRESHOLD`]. One result per input
/// point.
pub fn score_series(points: &[(i64, f64)]) -> Vec<Option<f64>> {
    score_series_at(points, DEFAULT_THRESHOLD)
}

/// [`score_series`] with the series resting after scores of `threshold`.
pub fn score_series_at(points: &[(i64, f64)], threshold: f64) -> Vec<Option<f64>> {
    let mut s = OnlineScorer::new(threshold);
    points.iter().map(|&(t, v)| s.score(t, v)).collect()
}

/// Indices of series that behave unlike their peers. Series are aligned on
/// the timestamps all of them share; with fewer than 3 series or 2 shared
/// timestamps there is nothing to compare and the result is empty.
/// `sensitivity` in (0, 1): higher flags more.
pub fn peer_outliers(
    series: &[&[(i64, f64)]],
    sensitivity: f64,
) -> Result<BTreeSet<usize>, String> {
    if series.len() < 3 {
        return Ok(BTreeSet::new());
    }
    let mut common: BTreeSet<i64> = series[0].iter().map(|p| p.0).collect();
    for s in &series[1..] {
        let ts: BTreeSet<i64> = s.iter().filter(|p| p.1.is_finite()).map(|p| p.0).collect();
        common = common.intersection(&ts).copied().collect();
    }
    if common.len() < 2 {
        return Ok(BTreeSet::new());
    }
    let aligned: Vec<Vec<f64>> = series
        .iter()
        .map(|s| {
            let mut v: Vec<(i64, f64)> = s
                .iter()
                .copied()
                .filter(|p| common.contains(&p.0))
                .collect();
            v.sort_by_key(|p| p.0);
            v.dedup_by_key(|p| p.0);
            v.into_iter().map(|p| p.1).collect()
        })
        .collect();
    let refs: Vec<&[f64]> = aligned.iter().map(|v| v.as_slice()).collect();
    let det =
        MADDetector::with_sensitivity(sensitivity.clamp(0.01, 0.99)).map_err(|e| e.to_string())?;
    let pre = det.preprocess(&refs).map_err(|e| e.to_string())?;
    let out = det.detect(&pre).map_err(|e| e.to_string())?;
    Ok(out.outlying_series)
}

/// Fewest series a peer group needs before any of them is called unlike the
/// others: with fewer, "the peers" are one or two series and the median is
/// whichever of them happens to sit in the middle.
pub const MIN_PEER_GROUP: usize = 4;

/// How one series differs from its peers over the recent window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerOutlier {
    /// The series' median over the window (utilisation when `utilisation`).
    pub value: f64,
    /// Median of the group's series (each taken as its median over the window).
    pub peer_median: f64,
    /// Series compared, this one included.
    pub peers: usize,
    /// Median MAD score over the window: how many robust deviations the
    /// series sits from the group.
    pub score: f64,
    /// Share of the window's samples at which the series was outlying.
    pub outlying: f64,
    /// Length of the window compared, in seconds.
    pub window_secs: i64,
    /// Values are usage divided by capacity rather than raw usage.
    #[serde(default)]
    pub utilisation: bool,
}

impl PeerOutlier {
    /// A value as compared: a share of capacity for utilisation, the raw
    /// value otherwise.
    pub fn show(&self, v: f64) -> String {
        if self.utilisation {
            format!("{:.1}%", 100.0 * v)
        } else {
            super::report::fmt_num(v)
        }
    }

    /// The series' value as a multiple of its cluster's median (none for a
    /// median of zero).
    pub fn ratio(&self) -> Option<f64> {
        (self.peer_median.abs() > f64::EPSILON).then(|| self.value / self.peer_median)
    }
}

/// Median of `v` by selection (reorders it); NaN when empty.
fn median(v: &mut [f64]) -> f64 {
    median_mut(v).unwrap_or(f64::NAN)
}

/// Series of one peer group that behave unlike the others over the window
/// `(now - window_secs, now]`, each with by how much.
///
/// Only finite samples inside the window count. A series holding fewer than
/// half of the group's distinct timestamps there (stale, or just appeared) is
/// left out of the comparison; the others are aligned on the timestamps all
/// of them share. A group of fewer than [`MIN_PEER_GROUP`] series, or with
/// fewer than 2 shared timestamps, gives nothing.
///
/// At each shared timestamp every series is scored against the group at that
/// moment: its distance from the group's median in robust deviations (1.4826
/// × the median absolute deviation, but at least 1% of the median and at
/// least `min_deviation`, so that near-identical peers do not turn noise into
/// outliers). Peers that rise and
/// fall together (a daily cycle) are therefore still alike. A series is an
/// outlier when its score exceeds `threshold` at no fewer than half of the
/// shared timestamps, so one odd sample does not make it unlike its peers.
/// The median is taken per timestamp, so one outlier cannot hide in a group of
/// four (augurs' detector, which pools every sample around one global median,
/// loses it there).
///
/// Cost: linear in the samples of the window (medians by selection).
pub fn recent_peer_outliers(
    series: &[&[(i64, f64)]],
    now: i64,
    window_secs: i64,
    threshold: f64,
    min_deviation: f64,
) -> Vec<(usize, PeerOutlier)> {
    if series.len() < MIN_PEER_GROUP {
        return Vec::new();
    }
    let from = now - window_secs;
    let windows: Vec<Vec<(i64, f64)>> = series
        .iter()
        .map(|s| {
            let mut w: Vec<(i64, f64)> = s
                .iter()
                .copied()
                .filter(|&(t, v)| t > from && t <= now && v.is_finite())
                .collect();
            w.sort_by_key(|p| p.0);
            w.dedup_by_key(|p| p.0);
            w
        })
        .collect();
    let mut seen: HashMap<i64, usize> = HashMap::new();
    for w in &windows {
        for p in w {
            *seen.entry(p.0).or_default() += 1;
        }
    }
    let distinct = seen.len();
    let kept: Vec<usize> = (0..windows.len())
        .filter(|&i| !windows[i].is_empty() && 2 * windows[i].len() >= distinct)
        .collect();
    if kept.len() < MIN_PEER_GROUP {
        return Vec::new();
    }
    let mut count: HashMap<i64, usize> = HashMap::with_capacity(distinct);
    for &i in &kept {
        for p in &windows[i] {
            *count.entry(p.0).or_default() += 1;
        }
    }
    let common: HashSet<i64> = count
        .into_iter()
        .filter(|&(_, c)| c == kept.len())
        .map(|(t, _)| t)
        .collect();
    let n = common.len();
    if n < 2 {
        return Vec::new();
    }
    // Each kept window is sorted and deduplicated, so every one yields the
    // shared timestamps in the same order.
    let aligned: Vec<Vec<f64>> = kept
        .iter()
        .map(|&i| {
            windows[i]
                .iter()
                .filter(|p| common.contains(&p.0))
                .map(|p| p.1)
                .collect()
        })
        .collect();
    let mut outlying = vec![0usize; kept.len()];
    let mut scores: Vec<Vec<f64>> = vec![Vec::with_capacity(n); kept.len()];
    let mut col = vec![0.0; kept.len()];
    let mut dev = vec![0.0; kept.len()];
    for j in 0..n {
        for (c, a) in col.iter_mut().zip(&aligned) {
            *c = a[j];
        }
        let m = median(&mut col);
        for (d, a) in dev.iter_mut().zip(&aligned) {
            *d = (a[j] - m).abs();
        }
        let scale = (MAD_TO_SIGMA * median(&mut dev))
            .max(0.01 * m.abs())
            .max(min_deviation)
            .max(1e-12);
        for (k, a) in aligned.iter().enumerate() {
            let z = (a[j] - m).abs() / scale;
            if z > threshold {
                outlying[k] += 1;
            }
            scores[k].push(z);
        }
    }
    let medians: Vec<f64> = aligned
        .iter()
        .map(|v| stats::median(v).unwrap_or(f64::NAN))
        .collect();
    let peer_median = stats::median(&medians).unwrap_or(f64::NAN);
    let mut found = Vec::new();
    for (k, mut sc) in scores.into_iter().enumerate() {
        if 2 * outlying[k] < n {
            continue;
        }
        found.push((
            kept[k],
            PeerOutlier {
                value: medians[k],
                peer_median,
                peers: kept.len(),
                score: median(&mut sc),
                outlying: outlying[k] as f64 / n as f64,
                window_secs,
                utilisation: false,
            },
        ));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wave(i: usize) -> f64 {
        let t = i as f64 * 300.0;
        50.0 + 10.0 * (2.0 * std::f64::consts::PI * t / 86_400.0).sin()
            + ((i as f64 * 12.9898).sin() * 43_758.545_3).fract()
    }

    /// Deterministic noise in [-0.5, 0.5).
    fn noise(i: usize) -> f64 {
        ((i as f64 * 12.9898).sin() * 43_758.545_3).fract().abs() - 0.5
    }

    fn series(n: usize, mut f: impl FnMut(usize) -> f64) -> Vec<(i64, f64)> {
        (0..n).map(|i| (i as i64 * 300, f(i))).collect()
    }

    fn alerts(s: &[Option<f64>], range: std::ops::Range<usize>) -> usize {
        s[range]
            .iter()
            .filter(|v| v.unwrap_or(0.0) >= DEFAULT_THRESHOLD)
            .count()
    }

    #[test]
    fn spike_scores_high_and_cycle_scores_low() {
        let mut pts = series(4 * 288, wave);
        pts[900].1 += 15.0;
        let s = score_series(&pts);
        assert_eq!(s.len(), pts.len());
        assert!(s[900].unwrap() >= DEFAULT_THRESHOLD, "{:?}", s[900]);
        assert!(
            alerts(&s, 300..890) <= 1,
            "{} false alerts",
            alerts(&s, 300..890)
        );
    }

    #[test]
    fn the_score_is_graded() {
        // The same point pushed further and further out: each outscores the
        // last.
        let got: Vec<f64> = [1.0, 2.0, 3.0, 4.0, 5.0]
            .iter()
            .map(|d| {
                let mut pts = series(5 * 288, wave);
                pts[1000].1 += d;
                score_series(&pts)[1000].unwrap()
            })
            .collect();
        assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
        assert!(
            got[0] < DEFAULT_THRESHOLD && got[4] >= RECORD_FLOOR,
            "{got:?}"
        );
    }

    #[test]
    fn a_level_shift_fires_once_then_becomes_normal() {
        let pts = series(6 * 288, |i| {
            20.0 + noise(i) + if i >= 900 { 8.0 } else { 0.0 }
        });
        let s = score_series(&pts);
        assert_eq!(alerts(&s, 900..910), 1, "{:?}", &s[898..912]);
        assert_eq!(alerts(&s, 910..6 * 288), 0);
    }

    #[test]
    fn a_small_sustained_shift_outranks_the_noise() {
        // A shift of 0.4 (about 1.3 usual residuals) for 100 samples after
        // ten days of noise: the forecast absorbs it within a few samples,
        // the slow reference does not, so it scores above every point of
        // the ten normal days.
        let from = 10 * 288;
        let pts = series(12 * 288, |i| {
            20.0 + noise(i)
                + if (from..from + 100).contains(&i) {
                    0.4
                } else {
                    0.0
                }
        });
        let s = score_series(&pts);
        let top =
            |r: std::ops::Range<usize>| s[r].iter().map(|v| v.unwrap_or(0.0)).fold(0.0, f64::max);
        let (normal, shifted) = (top(300..from), top(from..from + 100));
        assert!(shifted > normal, "{shifted} <= {normal}");
        assert_eq!(alerts(&s, 300..from), 0);
    }

    #[test]
    fn a_stuck_exporter_is_flagged() {
        let pts = series(
            4 * 288,
            |i| if i < 800 { 20.0 + 3.0 * noise(i) } else { 20.0 },
        );
        let s = score_series(&pts);
        assert_eq!(alerts(&s, 300..800), 0);
        assert_eq!(alerts(&s, 800..860), 1);
    }

    #[test]
    fn a_change_of_variance_is_flagged() {
        let pts = series(4 * 288, |i| {
            20.0 + noise(i) * if i < 800 { 1.0 } else { 8.0 }
        });
        let s = score_series(&pts);
        assert_eq!(alerts(&s, 300..800), 0);
        assert!(alerts(&s, 800..850) >= 1);
    }

    #[test]
    fn a_value_beyond_every_one_seen_is_a_record() {
        let mut pts = series(4 * 288, |i| 20.0 + noise(i));
        // Within two days nothing is a record yet; after, a new high is.
        pts[300].1 = 22.0;
        pts[900].1 = 23.0;
        let s = score_series(&pts);
        assert!(s[300].unwrap() < RECORD_FLOOR, "{:?}", s[300]);
        assert!(s[900].unwrap() >= RECORD_FLOOR, "{:?}", s[900]);
    }

    #[test]
    fn a_steady_trend_is_not_a_string_of_records() {
        // Disk usage growing a little every sample: every point is a new
        // high, but none beats the last by a share of the range.
        let pts = series(7 * 288, |i| 20.0 + 0.01 * i as f64 + 0.2 * noise(i));
        let s = score_series(&pts);
        assert!(
            alerts(&s, 300..7 * 288) <= 1,
            "{}",
            alerts(&s, 300..7 * 288)
        );
    }

    #[test]
    fn spikes_as_large_as_past_ones_do_not_alert() {
        // A bursty series: a spike of the same size every day.
        let mut pts = series(8 * 288, |i| 100.0 + 10.0 * noise(i));
        for d in 0..8 {
            pts[d * 288 + 100].1 += 200.0 + 5.0 * noise(d);
        }
        let s = score_series(&pts);
        assert!(
            alerts(&s, 3 * 288..8 * 288) <= 1,
            "{}",
            alerts(&s, 3 * 288..8 * 288)
        );
    }

    #[test]
    fn counters_are_scored_on_their_rate() {
        // 10 per second, with a restart every day and a burst of 100 per
        // second for an hour on the third day.
        let mut total = 0.0;
        let pts = series(4 * 288, |i| {
            if i % 288 == 0 {
                total = 0.0;
            }
            total += 300.0
                * if (700..712).contains(&i) {
                    100.0
                } else {
                    10.0 + noise(i)
                };
            total
        });
        let mut sc = OnlineScorer::default();
        let s: Vec<Option<f64>> = pts.iter().map(|&(t, v)| sc.score(t, v)).collect();
        assert_eq!(sc.kind(), Kind::Counter);
        assert_eq!(alerts(&s, 200..700), 0, "a restart is not an anomaly");
        assert_eq!(alerts(&s, 700..712), 1);
    }

    #[test]
    fn no_look_ahead() {
        let pts: Vec<(i64, f64)> = (0..600).map(|i| (i as i64 * 300, wave(i))).collect();
        let full = score_series(&pts);
        let mut changed = pts.clone();
        changed[500].1 = 1e6;
        let other = score_series(&changed);
        assert_eq!(full[..500], other[..500]);
    }

    #[test]
    fn non_finite_rows_get_no_score() {
        let s = score_series(&[(0, 1.0), (300, f64::NAN), (600, 1.0)]);
        assert_eq!(s, vec![Some(0.0), None, Some(0.0)]);
        assert_eq!(score_series(&[]), vec![]);
    }

    #[test]
    fn node_unlike_its_peers() {
        let peers: Vec<Vec<(i64, f64)>> = (0..8)
            .map(|k| {
                (0..200)
                    .map(|i| {
                        let mut v = wave(i)
                            + 0.3 * ((((i * 8 + k) as f64) * 78.233).sin() * 43_758.545_3).fract();
                        if k == 5 && i > 100 {
                            v += 40.0;
                        }
                        (i as i64 * 300, v)
                    })
                    .collect()
            })
            .collect();
        let refs: Vec<&[(i64, f64)]> = peers.iter().map(|v| v.as_slice()).collect();
        let out = peer_outliers(&refs, 0.5).unwrap();
        assert_eq!(out.into_iter().collect::<Vec<_>>(), vec![5]);
        assert!(peer_outliers(&refs[..2], 0.8).unwrap().is_empty());
    }

    /// Six nodes over 4 hours at a 5 minute step; `shift(k, i)` is added to
    /// node k's sample i.
    fn group(n: usize, shift: impl Fn(usize, usize) -> f64) -> Vec<Vec<(i64, f64)>> {
        (0..n)
            .map(|k| {
                (0..48)
                    .map(|i| {
                        let noise = ((((i * 8 + k) as f64) * 78.233).sin() * 43_758.545_3).fract();
                        (i as i64 * 300, 40.0 + 2.0 * noise + shift(k, i))
                    })
                    .collect()
            })
            .collect()
    }

    fn recent(g: &[Vec<(i64, f64)>]) -> Vec<(usize, PeerOutlier)> {
        let refs: Vec<&[(i64, f64)]> = g.iter().map(|v| v.as_slice()).collect();
        recent_peer_outliers(&refs, 47 * 300, 3600, 4.0, 0.0)
    }

    #[test]
    fn recent_outlier_is_found_with_by_how_much() {
        let g = group(6, |k, _| if k == 2 { 40.0 } else { 0.0 });
        let out = recent(&g);
        assert_eq!(out.len(), 1, "{out:?}");
        let (i, p) = &out[0];
        assert_eq!(*i, 2);
        assert_eq!(p.peers, 6);
        assert!((p.value - 81.0).abs() < 1.5, "{p:?}");
        assert!((p.peer_median - 41.0).abs() < 1.5, "{p:?}");
        assert!(p.score > 4.0, "{p:?}");
        assert_eq!(p.outlying, 1.0);
        assert_eq!(p.window_secs, 3600);
    }

    #[test]
    fn only_the_recent_window_and_sustained_outliers_count() {
        // Unlike its peers hours ago, normal for the last hour.
        let past = group(6, |k, i| if k == 1 && i < 30 { 40.0 } else { 0.0 });
        assert!(recent(&past).is_empty());
        // One odd sample in the window is not behaving unlike the peers.
        let spike = group(6, |k, i| if k == 1 && i == 45 { 40.0 } else { 0.0 });
        assert!(recent(&spike).is_empty());
        // Unlike them for the last 40 minutes of the hour: most of it.
        let shift = group(6, |k, i| if k == 4 && i >= 39 { 40.0 } else { 0.0 });
        let out = recent(&shift);
        assert_eq!(out.iter().map(|o| o.0).collect::<Vec<_>>(), vec![4]);
    }

    #[test]
    fn small_groups_and_stale_series_are_left_out() {
        let g = group(3, |k, _| if k == 0 { 40.0 } else { 0.0 });
        assert!(recent(&g).is_empty());
        // Four series, but one stopped reporting two hours ago: three compared.
        let mut g = group(4, |k, _| if k == 0 { 40.0 } else { 0.0 });
        g[3].truncate(20);
        assert!(recent(&g).is_empty());
        // A fifth, live series makes a group of four again.
        g.push(group(5, |_, _| 0.0).remove(4));
        let out = recent(&g);
        assert_eq!(
            out.iter().map(|o| (o.0, o.1.peers)).collect::<Vec<_>>(),
            vec![(0, 4)]
        );
    }
}
