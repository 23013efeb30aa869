//! Running forecasts at scale: many series over both cores, capacity matched
//! to usage series, and a model evaluated against live history.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::anomaly::score_series;
use super::forecast::{forecast, CrossCheck, ForecastParams};
use super::history::{HistoryConfig, HistoryError, PromClient};
use super::models::ModelDef;
use super::report::{downsample, SeriesResult};
use super::series::Series;

/// Capacity of one series: a value, or why there is none.
pub type Capacity = Result<f64, String>;

/// Forecasts every series on all available cores. `on_done` is called once
/// per finished series (for a progress bar). Results keep input order.
pub fn forecast_many(
    inputs: &[(Series, Capacity)],
    params: &ForecastParams,
    keep_history: usize,
    on_done: &(dyn Fn() + Sync),
) -> Vec<SeriesResult> {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(inputs.len().max(1));
    let next = AtomicUsize::new(0);
    let mut slots: Vec<Option<SeriesResult>> = vec![None; inputs.len()];
    let chunks: Vec<Vec<(usize, SeriesResult)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= inputs.len() {
                            break;
                        }
                        out.push((i, forecast_one(&inputs[i], params, keep_history)));
                        on_done();
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    for (i, r) in chunks.into_iter().flatten() {
        slots[i] = Some(r);
    }
    slots
        .into_iter()
        .zip(inputs)
        .map(|(r, (s, _))| {
            r.unwrap_or_else(|| SeriesResult {
                name: s.name(),
                labels: s.labels.clone(),
                model: None,
                error: Some("forecast worker failed".into()),
                forecast: None,
                history: Vec::new(),
                anomaly_score: None,
            })
        })
        .collect()
}

fn forecast_one(
    (s, cap): &(Series, Capacity),
    params: &ForecastParams,
    keep_history: usize,
) -> SeriesResult {
    let (forecast, error) = match cap {
        Ok(c) => match forecast(&s.points, *c, params) {
            Ok(f) => (Some(f), None),
            Err(e) => (None, Some(e.to_string())),
        },
        Err(e) => (None, Some(e.clone())),
    };
    SeriesResult {
        name: s.name(),
        labels: s.labels.clone(),
        model: None,
        error,
        forecast,
        history: if keep_history > 0 {
            downsample(&s.points, keep_history)
        } else {
            Vec::new()
        },
        anomaly_score: None,
    }
}

/// Finds the capacity series for a usage series: the labels in `match_on`
/// must be equal (absent counts as empty); with `match_on` empty, every label
/// of the capacity series but `__name__` must be on the usage series. The
/// capacity's latest finite value is used.
pub fn match_capacity(usage: &Series, caps: &[Series], match_on: &[String]) -> Capacity {
    let get = |l: &BTreeMap<String, String>, k: &str| l.get(k).cloned().unwrap_or_default();
    let found = caps.iter().find(|c| {
        if match_on.is_empty() {
            c.labels
                .iter()
                .filter(|(k, _)| k.as_str() != "__name__")
                .all(|(k, v)| usage.labels.get(k) == Some(v))
        } else {
            match_on
                .iter()
                .all(|k| get(&c.labels, k) == get(&usage.labels, k))
        }
    });
    let Some(c) = found else {
        return Err("no capacity series matches this usage series".into());
    };
    match c.points.iter().rev().find(|p| p.1.is_finite()) {
        Some(&(_, v)) if v > 0.0 => Ok(v),
        Some(&(_, v)) => Err(format!("capacity {v} is not positive")),
        None => Err("the capacity series has no finite value".into()),
    }
}

/// Reads a model's usage history and capacity from one endpoint and
/// forecasts every series. History errors fail the whole evaluation (the
/// caller counts and logs them); per-series problems are in the results.
pub async fn evaluate_model(
    client: &PromClient,
    model: &ModelDef,
    cfg: &HistoryConfig,
    now: i64,
    keep_history: usize,
) -> Result<Vec<SeriesResult>, HistoryError> {
    let lookback = model.lookback.unwrap_or(cfg.lookback).as_std();
    let step = cfg.step_for(lookback).as_secs() as i64;
    let start = now - lookback.as_secs() as i64;
    let usage = client.query_range(&model.usage, start, now, step).await?;
    let caps: Vec<Series> = match &model.capacity.query {
        Some(q) => client.query(q, now).await?,
        None => Vec::new(),
    };
    let inputs: Vec<(Series, Capacity)> = usage
        .into_iter()
        .map(|mut s| {
            if let (Some(c), false) = (&client.cluster, s.labels.contains_key(&cfg.cluster_label)) {
                s.labels.insert(cfg.cluster_label.clone(), c.clone());
            }
            let cap = match model.capacity.value {
                Some(v) => Ok(v),
                None => match_capacity(&s, &caps, &model.match_on),
            };
            (s, cap)
        })
        .collect();
    let params = ForecastParams {
        horizon_secs: model.horizon.as_std().as_secs() as i64,
        seasonality: model.seasonality,
        cross_check: CrossCheck::Both,
        ..Default::default()
    };
    let name = model.name.clone();
    let anomaly = model.anomaly;
    let results = tokio::task::spawn_blocking(move || {
        let mut r = forecast_many(&inputs, &params, keep_history, &|| {});
        for (x, (s, _)) in r.iter_mut().zip(&inputs) {
            x.model = Some(name.clone());
            if anomaly {
                x.anomaly_score = score_series(&s.points).into_iter().rev().flatten().next();
            }
        }
        r
    })
    .await
    .map_err(|e| HistoryError::Response {
        url: String::new(),
        error: format!("forecast task failed: {e}"),
    })?;
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(labels: &[(&str, &str)], v: f64) -> Series {
        Series::new(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            vec![(0, v), (60, f64::NAN)],
        )
    }

    #[test]
    fn capacity_matching() {
        let usage = s(
            &[("instance", "a"), ("mountpoint", "/"), ("cluster", "c1")],
            1.0,
        );
        let caps = vec![
            s(
                &[("__name__", "size"), ("instance", "b"), ("mountpoint", "/")],
                5.0,
            ),
            s(
                &[("__name__", "size"), ("instance", "a"), ("mountpoint", "/")],
                10.0,
            ),
        ];
        assert_eq!(match_capacity(&usage, &caps, &[]), Ok(10.0));
        let on = vec!["instance".to_string(), "mountpoint".to_string()];
        assert_eq!(match_capacity(&usage, &caps, &on), Ok(10.0));
        let on = vec!["cluster".to_string()];
        assert!(match_capacity(&usage, &caps, &on).is_err());
        let zero = vec![s(&[("instance", "a")], 0.0)];
        assert!(match_capacity(&usage, &zero, &[])
            .unwrap_err()
            .contains("not positive"));
    }

    #[test]
    fn many_series_keep_order_and_report_errors() {
        let good: Vec<(i64, f64)> = (0..100).map(|i| (i * 300, i as f64)).collect();
        let inputs = vec![
            (Series::new(BTreeMap::new(), good.clone()), Ok(1000.0)),
            (Series::new(BTreeMap::new(), vec![(0, 1.0)]), Ok(10.0)),
            (
                Series::new(BTreeMap::new(), good),
                Err("no capacity".to_string()),
            ),
        ];
        let done = AtomicUsize::new(0);
        let r = forecast_many(&inputs, &ForecastParams::default(), 10, &|| {
            done.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(done.load(Ordering::Relaxed), 3);
        assert!(r[0].forecast.is_some());
        assert!(r[0].history.len() <= 11);
        assert!(r[1]
            .error
            .as_ref()
            .unwrap()
            .contains("insufficient history"));
        assert_eq!(r[2].error.as_deref(), Some("no capacity"));
    }
}
