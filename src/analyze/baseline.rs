//! The "median seasonal forecast" a user would run with augurs or
//! statsforecast: MSTL (period snapped to one day) with an AutoETS trend,
//! alarming when the median forecast crosses capacity. stormcast uses it as a
//! second baseline in the evaluation, beside `predict_linear`, and as an
//! optional cross-check (`stormcast forecast --mstl`) on series near capacity.

use augurs::ets::AutoETS;
use augurs::mstl::MSTLModel;
use augurs::{Fit as _, Predict as _};

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::forecast::{Forecast, Method};
use super::series::clean;
use super::stats::median_mut;

const DAY: i64 = 86_400;

/// What MSTL+AutoETS says about a series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MstlCheck {
    /// First crossing of the median forecast within the horizon.
    pub exhaustion_at: Option<DateTime<Utc>>,
    /// First crossing of the 95% band's upper edge.
    pub exhaustion_earliest: Option<DateTime<Utc>>,
    /// First crossing of the band's lower edge.
    pub exhaustion_latest: Option<DateTime<Utc>>,
    /// Seasonal periods fitted, in samples (one day, one week).
    pub periods: Vec<usize>,
    /// Grid step of the fit, in seconds.
    pub step_secs: i64,
    /// Samples the model was fitted on.
    pub samples: usize,
}

/// Most history an MSTL fit reads, and most samples it fits: a cross-check
/// stays cheap and bounded whatever the input length.
pub const MSTL_WINDOW_SECS: i64 = 14 * DAY;
pub const MSTL_MAX_SAMPLES: usize = 4032;

/// `points` (clean, sorted) resampled on a regular grid with linear
/// interpolation: the last `MSTL_WINDOW_SECS`, at the median step or a
/// multiple of it so that at most `MSTL_MAX_SAMPLES` remain. Returns
/// `(start, step, values)`.
fn grid(pts: &[(i64, f64)]) -> (i64, i64, Vec<f64>) {
    let now = pts.last().expect("non-empty").0;
    let from = pts.partition_point(|p| p.0 < now - MSTL_WINDOW_SECS);
    let pts = &pts[from..];
    let mut d: Vec<f64> = pts.windows(2).map(|w| (w[1].0 - w[0].0) as f64).collect();
    let mut step = median_mut(&mut d).unwrap_or(60.0).max(1.0) as i64;
    let start = pts[0].0;
    let span = now - start;
    if span / step + 1 > MSTL_MAX_SAMPLES as i64 {
        step *= (span / step + 1).div_euclid(MSTL_MAX_SAMPLES as i64) + 1;
    }
    let n = (span / step + 1) as usize;
    let mut y = Vec::with_capacity(n);
    let mut j = 0;
    for k in 0..n {
        let t = start + k as i64 * step;
        while j + 1 < pts.len() && pts[j + 1].0 <= t {
            j += 1;
        }
        let (t0, v0) = pts[j];
        let v = match pts.get(j + 1) {
            Some(&(t1, v1)) if t1 > t0 => v0 + (v1 - v0) * (t - t0) as f64 / (t1 - t0) as f64,
            _ => v0,
        };
        y.push(v);
    }
    (start, step, y)
}

/// Fits MSTL (periods snapped to one day and one week in samples, each used
/// when at least two cycles are present) with an AutoETS trend, or AutoETS
/// alone on shorter history, and forecasts `h` steps with a 95% band.
fn fit_predict(
    y: &[f64],
    step: i64,
    h: usize,
    level: Option<f64>,
) -> Result<(Vec<usize>, augurs::Forecast), String> {
    let periods: Vec<usize> = [DAY, 7 * DAY]
        .iter()
        .map(|p| (p / step) as usize)
        .filter(|&p| p >= 2 && y.len() >= 2 * p)
        .collect();
    let fc = if periods.is_empty() {
        let fitted = AutoETS::non_seasonal().fit(y).map_err(|e| e.to_string())?;
        fitted.predict(h, level).map_err(|e| e.to_string())?
    } else {
        let model = MSTLModel::new(periods.clone(), AutoETS::non_seasonal().into_trend_model());
        let fitted = model.fit(y).map_err(|e| e.to_string())?;
        fitted.predict(h, level).map_err(|e| e.to_string())?
    };
    Ok((periods, fc))
}

/// First time MSTL+AutoETS's median forecast reaches `capacity` within the
/// horizon (`Ok(None)` when it does not). Input is resampled to its median
/// step with linear interpolation across gaps.
pub fn mstl_crossing(
    points: &[(i64, f64)],
    capacity: f64,
    horizon_secs: i64,
) -> Result<Option<i64>, String> {
    let (pts, _) = clean(points);
    if pts.len() < 10 {
        return Err("too few samples for MSTL".into());
    }
    let &(now, last) = pts.last().expect("non-empty");
    if last >= capacity {
        return Ok(Some(now));
    }
    let (start, step, y) = grid(&pts);
    let h = (horizon_secs / step).max(1) as usize;
    let (_, fc) = fit_predict(&y, step, h, None)?;
    // The fitted series ends at the last grid point, which may precede `now`.
    let grid_end = start + (y.len() as i64 - 1) * step;
    Ok(fc
        .point
        .iter()
        .position(|v| *v >= capacity)
        .map(|i| grid_end + (i as i64 + 1) * step))
}

/// MSTL+AutoETS with a 95% band on clean, sorted samples.
pub fn mstl_check(
    pts: &[(i64, f64)],
    capacity: f64,
    horizon_secs: i64,
) -> Result<MstlCheck, String> {
    if pts.len() < 10 {
        return Err("too few samples for MSTL".into());
    }
    let (start, step, y) = grid(pts);
    let h = (horizon_secs / step).max(1) as usize;
    let (periods, fc) = fit_predict(&y, step, h, Some(0.95))?;
    let grid_end = start + (y.len() as i64 - 1) * step;
    let cross = |v: &[f64]| {
        v.iter().position(|v| *v >= capacity).and_then(|i| {
            Utc.timestamp_opt(grid_end + (i as i64 + 1) * step, 0)
                .single()
        })
    };
    let (lo, hi) = match &fc.intervals {
        Some(iv) => (cross(&iv.lower), cross(&iv.upper)),
        None => (None, None),
    };
    Ok(MstlCheck {
        exhaustion_at: cross(&fc.point),
        exhaustion_earliest: hi,
        exhaustion_latest: lo,
        periods,
        step_secs: step,
        samples: y.len(),
    })
}

fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `--method both`: adds the MSTL cross-check to an at-risk forecast and
/// merges the intervals conservatively: the earliest plausible exhaustion
/// is the earlier of the two, the latest is the later (none when either
/// band's lower edge stays below capacity). `exhaustion_at` and
/// `confidence` stay the envelope's, so the cross-check never raises or
/// drops an alarm; a disagreement is listed in `notes`.
pub fn merge_cross_check(pts: &[(i64, f64)], f: &mut Forecast) {
    if f.method == Method::Exhausted {
        return;
    }
    let m = match mstl_check(pts, f.capacity, f.horizon_secs) {
        Ok(m) => m,
        Err(e) => {
            f.notes.push(format!("MSTL cross-check failed: {e}"));
            return;
        }
    };
    f.exhaustion_earliest = earliest(f.exhaustion_earliest, m.exhaustion_earliest);
    f.exhaustion_latest = match (f.exhaustion_latest, m.exhaustion_latest) {
        (Some(a), Some(b)) => Some(a.max(b)),
        _ => None,
    };
    match (f.exhaustion_at, m.exhaustion_at) {
        (Some(_), None) => f
            .notes
            .push("MSTL+AutoETS median does not reach capacity within the horizon".into()),
        (Some(a), Some(b)) => {
            let lead = (a - f.now).num_seconds().max(1) as f64;
            if ((b - a).num_seconds() as f64).abs() > 0.25 * lead {
                f.notes.push(format!(
                    "MSTL+AutoETS median reaches capacity at {}",
                    b.to_rfc3339()
                ));
            }
        }
        _ => {}
    }
    f.mstl = Some(m);
}

/// `--method mstl`: MSTL+AutoETS's crossings become the headline.
/// Confidence is read off its 95% band: 0.975 when the lower edge crosses,
/// 0.5 when the median does, 0.025 when only the upper edge does, else 0.
pub fn mstl_headline(pts: &[(i64, f64)], f: &mut Forecast) {
    if f.method == Method::Exhausted {
        return;
    }
    match mstl_check(pts, f.capacity, f.horizon_secs) {
        Ok(m) => {
            f.exhaustion_at = m.exhaustion_at;
            f.exhaustion_earliest = m.exhaustion_earliest;
            f.exhaustion_latest = m.exhaustion_latest;
            f.confidence = if m.exhaustion_latest.is_some() {
                0.975
            } else if m.exhaustion_at.is_some() {
                0.5
            } else if m.exhaustion_earliest.is_some() {
                0.025
            } else {
                0.0
            };
            f.notes
                .push("exhaustion times and confidence from MSTL+AutoETS".into());
            f.mstl = Some(m);
        }
        Err(e) => f.notes.push(format!(
            "MSTL fit failed ({e}); exhaustion from the envelope forecast"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mstl_sees_a_plain_leak() {
        let pts: Vec<(i64, f64)> = (0..600)
            .map(|i| (i * 300, 10.0 + i as f64 * 0.1 + ((i * 7) % 5) as f64 * 0.05))
            .collect();
        // 0.1 per 5 minutes = 1.2/h, at ~70 now: capacity 90 in ~16.7 h.
        let at = mstl_crossing(&pts, 90.0, 86_400)
            .unwrap()
            .expect("crossing");
        let lead_h = (at - 599 * 300) as f64 / 3600.0;
        assert!((lead_h - 16.7).abs() < 2.5, "{lead_h}");
        assert!(mstl_crossing(&pts[..5], 90.0, 86_400).is_err());
    }

    fn leak() -> Vec<(i64, f64)> {
        (0..2016)
            .map(|i| {
                let daily = (i as f64 * std::f64::consts::TAU / 288.0).sin() * 2.0;
                (
                    i * 300,
                    20.0 + i as f64 * 0.025 + daily + ((i * 7) % 5) as f64 * 0.1,
                )
            })
            .collect()
    }

    #[test]
    fn both_adds_the_cross_check_only_on_at_risk_series() {
        use crate::analyze::{forecast, CrossCheck, ForecastParams};
        let p = ForecastParams {
            cross_check: CrossCheck::Both,
            ..Default::default()
        };
        // ~70 now, +0.3 per hour with a ±2 daily cycle: 74 within a day.
        let pts = leak();
        let env = forecast(&pts, 74.0, &ForecastParams::default()).unwrap();
        let f = forecast(&pts, 74.0, &p).unwrap();
        let m = f.mstl.clone().unwrap_or_else(|| {
            panic!(
                "no cross-check: {:?} {:?} {:?}",
                f.exhaustion_at, f.exhaustion_earliest, f.notes
            )
        });
        assert_eq!(m.periods, vec![288]);
        assert_eq!(m.samples, 2016);
        let lead_h = (m.exhaustion_at.expect("MSTL sees it") - f.now).num_minutes() as f64 / 60.0;
        let env_h = env.lead_secs().expect("envelope sees it") as f64 / 3600.0;
        assert!((lead_h - env_h).abs() < 0.5 * env_h, "{lead_h} vs {env_h}");
        assert_eq!(f.exhaustion_at, env.exhaustion_at);
        assert_eq!(f.confidence, env.confidence);
        assert!(f.exhaustion_earliest <= env.exhaustion_earliest);
        assert!(f.exhaustion_earliest <= m.exhaustion_earliest);
        let json = serde_json::to_value(&f).unwrap();
        assert!(json["mstl"]["exhaustion_at"].is_string(), "{json}");
        // Far from capacity: no fit at all.
        let safe = forecast(&pts, 10_000.0, &p).unwrap();
        assert!(safe.mstl.is_none() && safe.exhaustion_at.is_none());
        // --method mstl: the headline comes from MSTL.
        let p = ForecastParams {
            cross_check: CrossCheck::Mstl,
            ..Default::default()
        };
        let f = forecast(&pts, 74.0, &p).unwrap();
        assert_eq!(f.exhaustion_at, m.exhaustion_at);
        assert!(f.confidence >= 0.5);
    }

    #[test]
    fn the_fit_is_bounded_in_length() {
        // 30 days at 1 minute: only the last 14 days, at most 4032 samples.
        let pts: Vec<(i64, f64)> = (0..43_200).map(|i| (i * 60, i as f64 * 1e-3)).collect();
        let m = mstl_check(&pts, 100.0, 86_400).unwrap();
        assert!(m.samples <= MSTL_MAX_SAMPLES, "{}", m.samples);
        assert!(m.step_secs * m.samples as i64 >= MSTL_WINDOW_SECS - m.step_secs);
        assert_eq!(m.periods.len(), 2, "{:?}", m.periods);
    }
}
