//! Change points in the trend as well as the level: penalised piecewise-linear
//! segmentation of a (seasonally adjusted, bucketed) series.
//!
//! A leak that started this morning is a *bend*, not a jump: the level is
//! continuous, only the slope changes. Each segment here is a least-squares
//! line of its own, so one model finds both. Binary segmentation splits an
//! interval where the two lines fit best and keeps the split when it lowers
//! the residual sum of squares by more than a BIC-style penalty
//! (`penalty × σ²`, σ a robust noise scale given by the caller). Segment costs
//! come from prefix sums, so the whole search is O(n log n).

/// Prefix sums of 1, x, y, x², xy, y² for O(1) line fits on any `[a, b)`.
struct Prefix {
    s: Vec<[f64; 6]>,
}

impl Prefix {
    fn new(x: &[f64], y: &[f64]) -> Self {
        let mut s = Vec::with_capacity(x.len() + 1);
        let mut acc = [0.0; 6];
        s.push(acc);
        for (xi, yi) in x.iter().zip(y) {
            acc[0] += 1.0;
            acc[1] += xi;
            acc[2] += yi;
            acc[3] += xi * xi;
            acc[4] += xi * yi;
            acc[5] += yi * yi;
            s.push(acc);
        }
        Prefix { s }
    }

    fn sums(&self, a: usize, b: usize) -> [f64; 6] {
        let (hi, lo) = (&self.s[b], &self.s[a]);
        std::array::from_fn(|i| hi[i] - lo[i])
    }

    /// Least-squares slope on `[a, b)` (0 when x does not vary).
    fn slope(&self, a: usize, b: usize) -> f64 {
        let [n, sx, sy, sxx, sxy, _] = self.sums(a, b);
        if n < 2.0 {
            return 0.0;
        }
        let vxx = sxx - sx * sx / n;
        if vxx <= 0.0 {
            return 0.0;
        }
        (sxy - sx * sy / n) / vxx
    }

    /// Residual sum of squares of the least-squares line on `[a, b)`.
    fn cost(&self, a: usize, b: usize) -> f64 {
        let [n, sx, sy, sxx, sxy, syy] = self.sums(a, b);
        if n < 1.0 {
            return 0.0;
        }
        let vyy = syy - sy * sy / n;
        let vxx = sxx - sx * sx / n;
        let vxy = sxy - sx * sy / n;
        let rss = if vxx > 0.0 {
            vyy - vxy * vxy / vxx
        } else {
            vyy
        };
        rss.max(0.0)
    }
}

/// Piecewise-linear fit of `y` over `x` (both in the caller's units).
pub struct Segmentation {
    prefix: Prefix,
    /// Index of the first sample of every segment after the first, ascending.
    pub changes: Vec<usize>,
}

impl Segmentation {
    /// Start index of the last segment (0 when there is no change).
    pub fn last_start(&self) -> usize {
        self.changes.last().copied().unwrap_or(0)
    }

    /// Least-squares slope of `y` on `[a, b)`.
    pub fn slope(&self, a: usize, b: usize) -> f64 {
        self.prefix.slope(a, b)
    }
}

/// Binary segmentation into lines. A split is kept when it lowers the
/// residual sum of squares by more than `penalty × sigma²`; no segment is
/// shorter than `min_len` samples.
pub fn segment(x: &[f64], y: &[f64], sigma: f64, min_len: usize, penalty: f64) -> Segmentation {
    let n = x.len().min(y.len());
    let prefix = Prefix::new(&x[..n], &y[..n]);
    let min_len = min_len.max(2);
    let thr = penalty * sigma * sigma;
    let mut changes = Vec::new();
    let mut stack = vec![(0usize, n)];
    while let Some((a, b)) = stack.pop() {
        if b - a < 2 * min_len {
            continue;
        }
        let whole = prefix.cost(a, b);
        let mut best = (f64::INFINITY, 0usize);
        for k in a + min_len..=b - min_len {
            let c = prefix.cost(a, k) + prefix.cost(k, b);
            if c < best.0 {
                best = (c, k);
            }
        }
        if whole - best.0 > thr {
            changes.push(best.1);
            stack.push((a, best.1));
            stack.push((best.1, b));
        }
    }
    changes.sort_unstable();
    Segmentation { prefix, changes }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic uniform noise in [-0.5, 0.5) (a 64-bit hash of `i`).
    fn noise(i: f64) -> f64 {
        let mut z = (i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }

    #[test]
    fn finds_a_bend_where_the_level_is_continuous() {
        // Flat for 100 samples, then climbing 0.5 per sample.
        let x: Vec<f64> = (0..140).map(f64::from).collect();
        let y: Vec<f64> = x
            .iter()
            .map(|&t| 10.0 + 0.5 * (t - 100.0).max(0.0) + 0.2 * noise(t))
            .collect();
        let s = segment(&x, &y, 0.1, 4, 3.0 * (x.len() as f64).ln());
        let last = s.last_start();
        assert!((98..=103).contains(&last), "changes {:?}", s.changes);
        assert!((s.slope(last, x.len()) - 0.5).abs() < 0.05);
        assert!(s.slope(0, last).abs() < 0.05);
    }

    #[test]
    fn finds_a_step_and_leaves_pure_noise_alone() {
        let x: Vec<f64> = (0..200).map(f64::from).collect();
        let y: Vec<f64> = x
            .iter()
            .map(|&t| if t < 120.0 { 5.0 } else { 8.0 } + noise(t))
            .collect();
        let s = segment(&x, &y, 0.3, 4, 3.0 * (x.len() as f64).ln());
        assert_eq!(s.changes, vec![120]);
        let flat: Vec<f64> = x.iter().map(|&t| 5.0 + noise(t)).collect();
        let s = segment(&x, &flat, 0.3, 4, 3.0 * (x.len() as f64).ln());
        assert!(s.changes.is_empty(), "{:?}", s.changes);
    }
}
