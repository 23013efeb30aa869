//! Anomaly detection.
//!
//! * **Online per-series score** ([`OnlineScorer`]): every point is scored
//!   from the state built on the points *before* it, never after. The state is
//!   a robust additive Holt–Winters: a level, a daily profile of 48 half-hour
//!   buckets, and an exponentially weighted mean absolute residual as the
//!   scale. Updates are clipped at 3 scales so a spike does not teach the model.
//!   A two-sided CUSUM on the standardised residuals detects level shifts; on
//!   detection the level jumps to the new regime so one shift is not scored
//!   as a long run of anomalies.
//! * **Cross-series outliers** ([`peer_outliers`]): "this node behaves unlike
//!   its peers", with augurs' MAD detector over aligned series.

use std::collections::BTreeSet;

use augurs::outlier::{MADDetector, OutlierDetector};

const BUCKETS: usize = 48;
const DAY: i64 = 86_400;
/// Points before any score is given (the level and scale need some history).
pub const WARMUP: usize = 12;

/// Online scorer for one series.
#[derive(Debug, Clone)]
pub struct OnlineScorer {
    level: f64,
    season: [f64; BUCKETS],
    seen: [bool; BUCKETS],
    visits: [u32; BUCKETS],
    /// EWMA of |residual|.
    abs_dev: f64,
    n: usize,
    cusum_pos: f64,
    cusum_neg: f64,
    recent: Vec<f64>,
}

impl Default for OnlineScorer {
    fn default() -> Self {
        Self::new()
    }
}

/// Level smoothing per sample.
const ALPHA: f64 = 0.08;
/// Seasonal smoothing per visit of a bucket.
const GAMMA: f64 = 0.25;
/// Scale smoothing.
const BETA: f64 = 0.03;
const CUSUM_K: f64 = 0.75;
const CUSUM_H: f64 = 8.0;

impl OnlineScorer {
    pub fn new() -> Self {
        OnlineScorer {
            level: f64::NAN,
            season: [0.0; BUCKETS],
            seen: [false; BUCKETS],
            visits: [0; BUCKETS],
            abs_dev: 0.0,
            n: 0,
            cusum_pos: 0.0,
            cusum_neg: 0.0,
            recent: Vec::new(),
        }
    }

    /// Scores `(t, v)` against what was learned so far, then learns from it.
    /// Returns `None` for a non-finite value (which is not learned from), and
    /// 0 during the first [`WARMUP`] points.
    pub fn score(&mut self, t: i64, v: f64) -> Option<f64> {
        if !v.is_finite() {
            return None;
        }
        let b = ((t.rem_euclid(DAY)) * BUCKETS as i64 / DAY) as usize;
        if self.level.is_nan() {
            self.level = v;
        }
        if !self.seen[b] {
            // First visit of this half hour: learn the offset without scoring it.
            self.season[b] = if self.n >= WARMUP {
                v - self.level
            } else {
                0.0
            };
            self.seen[b] = true;
        }
        let expected = self.level + self.season[b];
        let r = v - expected;
        let scale = (1.25 * self.abs_dev).max(1e-9 * (1.0 + v.abs()));
        // A bucket seen only a few times has an uncertain seasonal offset:
        // discount the residual by that extra variance.
        let visits = f64::from(self.visits[b].max(1));
        let z = r / (scale * (1.0 + 1.0 / visits).sqrt());
        self.visits[b] = self.visits[b].saturating_add(1);
        let mut score = 0.0;
        if self.n >= WARMUP {
            score = 1.0 - (-(z.abs() - 3.0).max(0.0) / 1.5).exp();
            self.cusum_pos = (self.cusum_pos + z.clamp(-4.0, 4.0) - CUSUM_K).max(0.0);
            self.cusum_neg = (self.cusum_neg - z.clamp(-4.0, 4.0) - CUSUM_K).max(0.0);
        }
        self.recent.push(r);
        if self.recent.len() > 6 {
            self.recent.remove(0);
        }
        let shifted = self.cusum_pos > CUSUM_H || self.cusum_neg > CUSUM_H;
        if shifted {
            // A level shift: score it and move the level to the new regime.
            score = score.max(1.0 - (-(self.cusum_pos.max(self.cusum_neg) / CUSUM_H)).exp());
            let k = self.recent.len().min(3);
            let mean: f64 = self.recent[self.recent.len() - k..].iter().sum::<f64>() / k as f64;
            self.level += mean;
            self.cusum_pos = 0.0;
            self.cusum_neg = 0.0;
            self.recent.clear();
        } else {
            let clip = if self.n >= WARMUP {
                3.0 * scale
            } else {
                f64::INFINITY
            };
            let rc = r.clamp(-clip, clip);
            self.level += ALPHA * rc;
            if self.n >= WARMUP {
                self.season[b] += GAMMA * (rc - ALPHA * rc);
            }
            let w = if self.n < WARMUP {
                1.0 / (self.n + 1) as f64
            } else {
                BETA
            };
            self.abs_dev += w
                * (r.abs().min(if self.n >= WARMUP {
                    5.0 * scale
                } else {
                    f64::INFINITY
                }) - self.abs_dev);
        }
        self.n += 1;
        Some(score.clamp(0.0, 1.0))
    }
}

/// Scores a whole series in its given order (online: each point sees only
/// the points before it). One result per input point.
pub fn score_series(points: &[(i64, f64)]) -> Vec<Option<f64>> {
    let mut s = OnlineScorer::new();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn wave(i: usize) -> f64 {
        let t = i as f64 * 300.0;
        50.0 + 10.0 * (2.0 * std::f64::consts::PI * t / 86_400.0).sin()
            + ((i as f64 * 12.9898).sin() * 43_758.545_3).fract()
    }

    #[test]
    fn spike_scores_high_and_cycle_scores_low() {
        let mut pts: Vec<(i64, f64)> = (0..3 * 288).map(|i| (i as i64 * 300, wave(i))).collect();
        pts[700].1 += 15.0;
        let s = score_series(&pts);
        assert_eq!(s.len(), pts.len());
        assert!(s[700].unwrap() > 0.8, "{:?}", s[700]);
        let quiet = s[400..690].iter().filter(|v| v.unwrap() > 0.5).count();
        assert!(quiet <= 2, "{quiet} false flags");
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
}
