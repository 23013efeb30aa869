//! The "median seasonal forecast" a user would run with augurs or
//! statsforecast: MSTL (period snapped to one day) with an AutoETS trend,
//! alarming when the median forecast crosses capacity. stormcast uses it as a
//! second baseline in the evaluation, beside `predict_linear`, and as an
//! optional cross-check (`stormcast forecast --mstl`) on series near capacity.

use augurs::ets::AutoETS;
use augurs::mstl::MSTLModel;
use augurs::{Fit as _, Predict as _};

use super::series::clean;
use super::stats::median_mut;

const DAY: i64 = 86_400;

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
    let mut d: Vec<f64> = pts.windows(2).map(|w| (w[1].0 - w[0].0) as f64).collect();
    let step = median_mut(&mut d).unwrap_or(60.0).max(1.0) as i64;
    let start = pts[0].0;
    let n = ((now - start) / step + 1) as usize;
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
    let period = (DAY / step) as usize;
    let periods = if period >= 2 && y.len() >= 2 * period {
        vec![period]
    } else {
        Vec::new()
    };
    let h = (horizon_secs / step).max(1) as usize;
    let fc = if periods.is_empty() {
        let fitted = AutoETS::non_seasonal().fit(&y).map_err(|e| e.to_string())?;
        fitted.predict(h, None).map_err(|e| e.to_string())?
    } else {
        let model = MSTLModel::new(periods, AutoETS::non_seasonal().into_trend_model());
        let fitted = model.fit(&y).map_err(|e| e.to_string())?;
        fitted.predict(h, None).map_err(|e| e.to_string())?
    };
    // The fitted series ends at the last grid point, which may precede `now`.
    let grid_end = start + (n as i64 - 1) * step;
    Ok(fc
        .point
        .iter()
        .position(|v| *v >= capacity)
        .map(|i| grid_end + (i as i64 + 1) * step))
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
}
