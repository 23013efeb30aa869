//! Small robust statistics shared by forecasting and anomaly scoring.

/// Median of `v` (reorders it). NaN-free input expected; `None` when empty.
pub fn median_mut(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let n = v.len();
    let mid = n / 2;
    v.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
    let hi = v[mid];
    if n % 2 == 1 {
        return Some(hi);
    }
    let lo = v[..mid].iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((lo + hi) / 2.0)
}

pub fn median(v: &[f64]) -> Option<f64> {
    median_mut(&mut v.to_vec())
}

/// Quantile by linear interpolation, `q` in [0, 1].
pub fn quantile(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let pos = q.clamp(0.0, 1.0) * (s.len() - 1) as f64;
    let i = pos.floor() as usize;
    let j = (i + 1).min(s.len() - 1);
    Some(s[i] + (s[j] - s[i]) * (pos - i as f64))
}

/// Scales a median absolute deviation to a standard deviation under
/// normality.
pub const MAD_TO_SIGMA: f64 = 1.4826;

/// Median absolute deviation scaled to a normal standard deviation.
pub fn mad_sigma(v: &[f64]) -> f64 {
    let Some(m) = median(v) else { return 0.0 };
    let mut dev: Vec<f64> = v.iter().map(|x| (x - m).abs()).collect();
    MAD_TO_SIGMA * median_mut(&mut dev).unwrap_or(0.0)
}

/// Theil–Sen slope, subsampling to at most `max_points` points (evenly) so the
/// pairwise step stays cheap. `None` with fewer than two distinct x.
pub fn theil_sen(x: &[f64], y: &[f64], max_points: usize) -> Option<f64> {
    let n = x.len().min(y.len());
    if n < 2 {
        return None;
    }
    let stride = n.div_ceil(max_points.max(2));
    let idx: Vec<usize> = (0..n).step_by(stride.max(1)).collect();
    let mut slopes = Vec::with_capacity(idx.len() * idx.len() / 2);
    for (a, &i) in idx.iter().enumerate() {
        for &j in &idx[a + 1..] {
            let dx = x[j] - x[i];
            if dx.abs() > 0.0 {
                slopes.push((y[j] - y[i]) / dx);
            }
        }
    }
    median_mut(&mut slopes)
}

/// Least-squares line of `y` over `x`: `(intercept at x = 0, slope)`, or
/// `None` with fewer than two points or when `x` does not vary.
pub fn ls_line(x: &[f64], y: &[f64]) -> Option<(f64, f64)> {
    let n = x.len().min(y.len());
    if n < 2 {
        return None;
    }
    let (x, y) = (&x[..n], &y[..n]);
    let mx = x.iter().sum::<f64>() / n as f64;
    let my = y.iter().sum::<f64>() / n as f64;
    let sxx: f64 = x.iter().map(|v| (v - mx).powi(2)).sum();
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    Some((my - slope * mx, slope))
}

/// Standard normal CDF (Abramowitz–Stegun 7.1.26 via erf, error < 1.5e-7).
pub fn normal_cdf(z: f64) -> f64 {
    if z.is_nan() {
        return 0.5;
    }
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    let erf = if x >= 0.0 { erf } else { -erf };
    0.5 * (1.0 + erf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robust_basics() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(quantile(&[0.0, 10.0], 0.25), Some(2.5));
        let x: Vec<f64> = (0..50).map(f64::from).collect();
        let mut y: Vec<f64> = x.iter().map(|v| 2.0 * v + 1.0).collect();
        y[10] = 1e6; // an outlier does not move Theil–Sen
        assert!((theil_sen(&x, &y, 100).unwrap() - 2.0).abs() < 1e-9);
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.96) - 0.975).abs() < 1e-3);
        assert!(mad_sigma(&[1.0, 1.0, 1.0]) == 0.0);
    }
}
