//! Whatever the input, forecasting and scoring never panic and their results
//! stay within their documented ranges.

use proptest::prelude::*;
use stormcast::analyze::anomaly::score_series;
use stormcast::analyze::{forecast, ForecastParams};

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => -1e3f64..1e3,
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(0.0),
        1 => Just(1e300),
        1 => Just(-1e300),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn forecast_is_total_and_sane(
        pts in prop::collection::vec((0i64..400_000, value()), 0..400),
        capacity in prop_oneof![-10.0f64..2e3, Just(f64::NAN)],
        horizon in 1i64..200_000,
    ) {
        let params = ForecastParams { horizon_secs: horizon, ..Default::default() };
        if let Ok(f) = forecast(&pts, capacity, &params) {
            prop_assert!((0.0..=1.0).contains(&f.confidence));
            prop_assert!(f.current.is_finite());
            if let Some(at) = f.exhaustion_at {
                prop_assert!(at >= f.now);
                prop_assert!((at - f.now).num_seconds() <= horizon);
                prop_assert!(f.confidence >= 0.5);
            } else {
                prop_assert!(f.confidence <= 0.5);
            }
            for p in &f.points {
                prop_assert!(p.timestamp > f.now);
                prop_assert!(!(p.lower > p.value || p.value > p.upper));
            }
        }
    }

    #[test]
    fn anomaly_scores_are_in_range_one_per_row(
        pts in prop::collection::vec((0i64..400_000, value()), 0..400),
    ) {
        let s = score_series(&pts);
        prop_assert_eq!(s.len(), pts.len());
        for (p, sc) in pts.iter().zip(&s) {
            match sc {
                Some(v) => prop_assert!((0.0..=1.0).contains(v) && p.1.is_finite()),
                None => prop_assert!(!p.1.is_finite()),
            }
        }
    }
}
