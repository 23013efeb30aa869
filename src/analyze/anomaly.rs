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
//!   [`recent_peer_outliers`] is the form `serve` alerts on: each moment of
//!   the recent window compared across the group, and a series must stay
//!   outlying for most of it.

use std::collections::{BTreeSet, HashMap, HashSet};

use augurs::outlier::{MADDetector, OutlierDetector};
use serde::{Deserialize, Serialize};

use super::stats::{self, median_mut, MAD_TO_SIGMA};

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
