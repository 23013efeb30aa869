//! Running forecasts at scale: many series over both cores, capacity matched
//! to usage series, and a model evaluated against live history.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::anomaly::{recent_peer_outliers, score_series};
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
                peer_outlier: None,
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
        peer_outlier: None,
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

/// Peer groups: the indices of the series sharing a value of
/// `cluster_label` (series without it form one group), groups in order of
/// first appearance. One pass over the series.
pub fn peer_groups<'a>(
    labels: impl IntoIterator<Item = &'a BTreeMap<String, String>>,
    cluster_label: &str,
) -> Vec<Vec<usize>> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, l) in labels.into_iter().enumerate() {
        let cluster = l.get(cluster_label).map_or("", String::as_str);
        let g = *index.entry(cluster).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    groups
}

/// Smallest robust deviation when peers compare utilisation: one percentage
/// point of capacity.
pub const PEER_MIN_UTILISATION_DEVIATION: f64 = 0.01;

/// Sets `peer_outlier` on the results of series unlike the other series of
/// their cluster over the last `window_secs` ([`recent_peer_outliers`]). A
/// group compares utilisation when every series in it has a capacity (nodes
/// of different sizes are then still peers), raw usage otherwise. On
/// utilisation a robust deviation is at least one percentage point, so in a
/// cluster of idle nodes one at 3% is not called unlike the others at 1%.
pub fn mark_peer_outliers(
    results: &mut [SeriesResult],
    inputs: &[(Series, Capacity)],
    cluster_label: &str,
    now: i64,
    window_secs: i64,
    threshold: f64,
) {
    let from = now - window_secs;
    for group in peer_groups(inputs.iter().map(|(s, _)| &s.labels), cluster_label) {
        let utilisation = group.iter().all(|&i| inputs[i].1.is_ok());
        let windows: Vec<Vec<(i64, f64)>> = group
            .iter()
            .map(|&i| {
                let (s, cap) = &inputs[i];
                let scale = cap
                    .as_ref()
                    .ok()
                    .filter(|_| utilisation)
                    .copied()
                    .unwrap_or(1.0);
                s.points
                    .iter()
                    .filter(|p| p.0 > from)
                    .map(|&(t, v)| (t, v / scale))
                    .collect()
            })
            .collect();
        let refs: Vec<&[(i64, f64)]> = windows.iter().map(Vec::as_slice).collect();
        let min_deviation = if utilisation {
            PEER_MIN_UTILISATION_DEVIATION
        } else {
            0.0
        };
        for (k, mut p) in recent_peer_outliers(&refs, now, window_secs, threshold, min_deviation) {
            p.utilisation = utilisation;
            results[group[k]].peer_outlier = Some(p);
        }
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
    let peers = model.peers.then(|| {
        (
            model.peer_window.as_std().as_secs() as i64,
            model.peer_threshold,
        )
    });
    let cluster_label = cfg.cluster_label.clone();
    let results = tokio::task::spawn_blocking(move || {
        let mut r = forecast_many(&inputs, &params, keep_history, &|| {});
        for (x, (s, _)) in r.iter_mut().zip(&inputs) {
            x.model = Some(name.clone());
            if anomaly {
                x.anomaly_score = score_series(&s.points).into_iter().rev().flatten().next();
            }
        }
        if let Some((window, threshold)) = peers {
            mark_peer_outliers(&mut r, &inputs, &cluster_label, now, window, threshold);
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

    fn node(
        cluster: Option<&str>,
        instance: &str,
        level: f64,
        cap: Capacity,
    ) -> (Series, Capacity) {
        let mut labels: BTreeMap<String, String> =
            [("instance".to_string(), instance.to_string())].into();
        if let Some(c) = cluster {
            labels.insert("cluster".into(), c.into());
        }
        let k = instance.len() as f64 + instance.bytes().map(f64::from).sum::<f64>();
        let points = (0..48)
            .map(|i| {
                let noise = (((i as f64 + k) * 78.233).sin() * 43_758.545_3).fract();
                (i * 300, level * (1.0 + 0.02 * noise))
            })
            .collect();
        (Series::new(labels, points), cap)
    }

    fn outliers(inputs: &[(Series, Capacity)]) -> Vec<(String, PeerOutlierSummary)> {
        let mut results: Vec<SeriesResult> = inputs
            .iter()
            .map(|(s, _)| SeriesResult {
                name: s.name(),
                labels: s.labels.clone(),
                model: None,
                error: None,
                forecast: None,
                history: Vec::new(),
                anomaly_score: None,
                peer_outlier: None,
            })
            .collect();
        mark_peer_outliers(&mut results, inputs, "cluster", 47 * 300, 3600, 4.0);
        results
            .into_iter()
            .filter_map(|r| {
                let p = r.peer_outlier?;
                Some((r.labels["instance"].clone(), (p.peers, p.utilisation)))
            })
            .collect()
    }

    type PeerOutlierSummary = (usize, bool);

    #[test]
    fn peer_groups_follow_the_cluster_label() {
        let ls: Vec<BTreeMap<String, String>> = ["a", "b", "a", "", "c", "b"]
            .iter()
            .map(|c| {
                if c.is_empty() {
                    BTreeMap::new()
                } else {
                    [("cluster".to_string(), c.to_string())].into()
                }
            })
            .collect();
        assert_eq!(
            peer_groups(&ls, "cluster"),
            vec![vec![0, 2], vec![1, 5], vec![3], vec![4]]
        );
        assert_eq!(peer_groups(&ls, "region"), vec![vec![0, 1, 2, 3, 4, 5]]);
    }

    #[test]
    fn peers_are_compared_within_each_cluster_of_enough_series() {
        let mut inputs = Vec::new();
        // c1: five nodes, node-c1-3 at twice the others' usage.
        for i in 0..5 {
            let level = if i == 3 { 80.0 } else { 40.0 };
            inputs.push(node(Some("c1"), &format!("node-c1-{i}"), level, Ok(100.0)));
        }
        // c2: three nodes, one far off, too few to call any of them unlike the rest.
        for i in 0..3 {
            let level = if i == 0 { 95.0 } else { 10.0 };
            inputs.push(node(Some("c2"), &format!("node-c2-{i}"), level, Ok(100.0)));
        }
        // c3: one node four times the size of the others; each uses 40% of
        // its own, so none stands out.
        for i in 0..5 {
            let cap = if i == 2 { 400.0 } else { 100.0 };
            inputs.push(node(
                Some("c3"),
                &format!("node-c3-{i}"),
                0.4 * cap,
                Ok(cap),
            ));
        }
        // c4: idle nodes at 1% of their CPUs, one at 3%: two points of
        // capacity are not unlike, however tight the others are.
        for i in 0..5 {
            let level = if i == 4 { 3.0 } else { 1.0 };
            inputs.push(node(Some("c4"), &format!("node-c4-{i}"), level, Ok(100.0)));
        }
        assert_eq!(
            outliers(&inputs),
            vec![("node-c1-3".to_string(), (5, true))]
        );

        // Interleaved order does not change the groups.
        inputs.reverse();
        assert_eq!(
            outliers(&inputs),
            vec![("node-c1-3".to_string(), (5, true))]
        );

        // Without every capacity, c3 compares raw usage: the large node
        // (160 against 40) is now unlike its peers.
        let mut raw = inputs.clone();
        for (s, cap) in raw.iter_mut() {
            if s.labels["instance"] == "node-c3-0" {
                *cap = Err("no capacity series matches this usage series".into());
            }
        }
        let got = outliers(&raw);
        assert!(
            got.contains(&("node-c3-2".to_string(), (5, false))),
            "{got:?}"
        );
        assert!(
            got.contains(&("node-c1-3".to_string(), (5, true))),
            "{got:?}"
        );
    }
}
