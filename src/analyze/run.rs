//! Running forecasts at scale: many series over both cores, capacity matched
//! to usage series, and a model evaluated against live history.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::anomaly::{recent_peer_outliers, score_series_at};
use super::forecast::{forecast, CrossCheck, Forecast, ForecastParams};
use super::history::{HistoryConfig, HistoryError, PromClient};
use super::models::ModelDef;
use super::report::{downsample, SeriesResult};
use super::series::Series;

/// Capacity of one series: a value, or why there is none.
pub type Capacity = Result<f64, String>;

/// Forecasts every series on all available cores. `on_done` is called once
/// per finished series (for a progress bar). Results keep input order.
///
/// With [`CrossCheck::Both`] every envelope forecast is made first, then the
/// MSTL cross-check runs on at most `params.max_cross_checks` at-risk series,
/// the soonest to exhaust first (see [`cross_check_most_urgent`]).
pub fn forecast_many(
    inputs: &[(Series, Capacity)],
    params: &ForecastParams,
    keep_history: usize,
    on_done: &(dyn Fn() + Sync),
) -> (Vec<SeriesResult>, CrossCheckSummary) {
    let both = params.cross_check == CrossCheck::Both;
    let envelope = ForecastParams {
        cross_check: if both {
            CrossCheck::Envelope
        } else {
            params.cross_check
        },
        ..params.clone()
    };
    let mut results = forecast_each(inputs, &envelope, keep_history, on_done);
    let summary = if both {
        let jobs = results
            .iter_mut()
            .zip(inputs)
            .filter_map(|(r, (s, _))| r.forecast.as_mut().map(|f| (s.points.as_slice(), f)))
            .collect();
        cross_check_most_urgent(jobs, params.max_cross_checks)
    } else {
        CrossCheckSummary::default()
    };
    (results, summary)
}

/// What the MSTL cross-check did in one run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CrossCheckSummary {
    /// At-risk series that wanted it ([`Forecast::wants_cross_check`]).
    pub wanted: usize,
    /// Series it ran on.
    pub checked: usize,
    /// Series left with the envelope forecast alone because of the limit.
    pub skipped: usize,
    /// The limit applied (0: none).
    pub limit: usize,
}

/// The order in which at-risk forecasts get the cross-check: the soonest
/// median exhaustion first (series whose median does not cross come after
/// all that do), then the soonest earliest plausible exhaustion, then
/// position. A total order, so the choice never depends on which worker
/// finished first.
pub fn urgency_order(forecasts: &[&Forecast]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..forecasts.len()).collect();
    order.sort_by_key(|&i| {
        let f = forecasts[i];
        (
            f.exhaustion_at.is_none(),
            f.exhaustion_at,
            f.exhaustion_earliest.is_none(),
            f.exhaustion_earliest,
            i,
        )
    });
    order
}

/// Runs the MSTL cross-check, on all cores, on the `limit` most urgent
/// (see [`urgency_order`]; 0: all) of the envelope forecasts in `jobs` that
/// want it, each with its usage samples. The others that want it keep the
/// envelope forecast, marked `cross_check_skipped` with a note; forecasts
/// that do not want it are left alone.
pub fn cross_check_most_urgent(
    jobs: Vec<(&[(i64, f64)], &mut Forecast)>,
    limit: usize,
) -> CrossCheckSummary {
    let wanted: Vec<(&[(i64, f64)], &mut Forecast)> = jobs
        .into_iter()
        .filter(|(_, f)| f.wants_cross_check())
        .collect();
    let order = urgency_order(&wanted.iter().map(|(_, f)| &**f).collect::<Vec<_>>());
    let n = wanted.len();
    let take = if limit == 0 { n } else { limit.min(n) };
    let mut slots: Vec<Option<_>> = wanted.into_iter().map(Some).collect();
    let mut ordered: Vec<(&[(i64, f64)], &mut Forecast)> =
        order.iter().filter_map(|&i| slots[i].take()).collect();
    let skipped = ordered.split_off(take);
    for (_, f) in skipped {
        f.cross_check_skipped = true;
        f.notes.push(format!(
            "MSTL cross-check skipped: this run's limit of {limit} went to series that exhaust sooner"
        ));
    }
    // A fit that panicked leaves its forecast as the envelope made it.
    on_all_cores(ordered, |(points, f)| f.cross_check(points));
    CrossCheckSummary {
        wanted: n,
        checked: take,
        skipped: n - take,
        limit,
    }
}

/// Runs `f` on every item, on all cores, items taken in order; each result
/// in its item's place, `None` for the items of a worker that panicked.
fn on_all_cores<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<Option<R>> {
    let n = items.len();
    let threads = std::thread::available_parallelism()
        .map_or(2, |t| t.get())
        .min(n)
        .max(1);
    let queue = Mutex::new(items.into_iter().enumerate());
    let done: Vec<Vec<(usize, R)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let next = queue.lock().map(|mut q| q.next()).unwrap_or(None);
                        let Some((i, item)) = next else { break };
                        out.push((i, f(item)));
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
    let mut slots: Vec<Option<R>> = (0..n).map(|_| None).collect();
    for (i, r) in done.into_iter().flatten() {
        slots[i] = Some(r);
    }
    slots
}

/// The envelope (or `params.cross_check`) forecast of every series, each on
/// its own, on all cores.
fn forecast_each(
    inputs: &[(Series, Capacity)],
    params: &ForecastParams,
    keep_history: usize,
    on_done: &(dyn Fn() + Sync),
) -> Vec<SeriesResult> {
    let results = on_all_cores(inputs.iter().collect(), |input| {
        let r = forecast_one(input, params, keep_history);
        on_done();
        r
    });
    results
        .into_iter()
        .zip(inputs)
        .map(|(r, (s, _))| {
            r.unwrap_or_else(|| SeriesResult {
                error: Some("forecast worker failed".into()),
                ..SeriesResult::of(s)
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
        error,
        forecast,
        history: if keep_history > 0 {
            downsample(&s.points, keep_history)
        } else {
            Vec::new()
        },
        ..SeriesResult::of(s)
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

/// One model evaluated against one endpoint, envelope forecasts only: the
/// MSTL cross-check is chosen across the whole run (see
/// [`cross_check_most_urgent`]).
#[derive(Debug, Default)]
pub struct Evaluation {
    pub results: Vec<SeriesResult>,
    /// Usage samples of the results (by index) that want the cross-check.
    pub pending: Vec<(usize, Vec<(i64, f64)>)>,
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
) -> Result<Evaluation, HistoryError> {
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
        cross_check: CrossCheck::Envelope,
        ..Default::default()
    };
    let name = model.name.clone();
    // Points since the previous evaluation: a series rests after an
    // anomalous point, so the latest point alone would miss one between runs.
    let anomaly = model.anomaly.then(|| {
        (
            now - model.interval.as_std().as_secs() as i64,
            model.anomaly_profile.threshold(),
        )
    });
    let peers = model.peers.then(|| {
        (
            model.peer_window.as_std().as_secs() as i64,
            model.peer_threshold,
        )
    });
    let cluster_label = cfg.cluster_label.clone();
    let evaluation = tokio::task::spawn_blocking(move || {
        let (mut r, _) = forecast_many(&inputs, &params, keep_history, &|| {});
        for (x, (s, _)) in r.iter_mut().zip(&inputs) {
            x.model = Some(name.clone());
            if let Some((since, threshold)) = anomaly {
                x.anomaly_score = s
                    .points
                    .iter()
                    .zip(score_series_at(&s.points, threshold))
                    .filter(|(p, _)| p.0 > since)
                    .filter_map(|(_, sc)| sc)
                    .reduce(f64::max);
            }
        }
        if let Some((window, threshold)) = peers {
            mark_peer_outliers(&mut r, &inputs, &cluster_label, now, window, threshold);
        }
        let pending = r
            .iter()
            .zip(inputs)
            .enumerate()
            .filter(|(_, (x, _))| x.forecast.as_ref().is_some_and(Forecast::wants_cross_check))
            .map(|(i, (_, (s, _)))| (i, s.points))
            .collect();
        Evaluation {
            results: r,
            pending,
        }
    })
    .await
    .map_err(|e| HistoryError::Response {
        url: String::new(),
        error: format!("forecast task failed: {e}"),
    })?;
    Ok(evaluation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

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

    /// 12 h of 5-minute samples climbing 2 per hour to `lead_h` hours from
    /// capacity 100 (with a little deterministic noise).
    fn leak(lead_h: f64) -> Series {
        let now = 100.0 - 2.0 * lead_h;
        let points = (0..144)
            .map(|k| {
                let ago = (143 - k) as f64 / 12.0;
                let noise = ((k as f64 * 12.9898).sin() * 43_758.545_3).fract() * 0.2;
                (1_700_000_000 + k * 300, now - 2.0 * ago + noise)
            })
            .collect();
        Series::new([("lead".to_string(), format!("{lead_h}"))].into(), points)
    }

    fn both(limit: usize) -> ForecastParams {
        ForecastParams {
            cross_check: CrossCheck::Both,
            max_cross_checks: limit,
            ..Default::default()
        }
    }

    /// At-risk leaks out of urgency order, one safe series and one already
    /// full.
    fn fleet() -> Vec<(Series, Capacity)> {
        let mut v: Vec<(Series, Capacity)> = [14.0, 2.0, 20.0, 5.0, 9.0]
            .iter()
            .map(|&h| (leak(h), Ok(100.0)))
            .collect();
        v.push((leak(10.0), Ok(1e6)));
        v.push((leak(10.0), Ok(50.0)));
        v
    }

    fn checked(r: &[SeriesResult]) -> Vec<String> {
        r.iter()
            .filter(|r| r.forecast.as_ref().is_some_and(|f| f.mstl.is_some()))
            .map(|r| r.labels["lead"].clone())
            .collect()
    }

    fn skipped(r: &[SeriesResult]) -> Vec<String> {
        r.iter()
            .filter(|r| r.forecast.as_ref().is_some_and(|f| f.cross_check_skipped))
            .map(|r| r.labels["lead"].clone())
            .collect()
    }

    #[test]
    fn the_cross_check_limit_goes_to_the_soonest_exhaustions() {
        let inputs = fleet();
        let (r, sum) = forecast_many(&inputs, &both(2), 0, &|| {});
        assert_eq!(
            sum,
            CrossCheckSummary {
                wanted: 5,
                checked: 2,
                skipped: 3,
                limit: 2
            }
        );
        // Input order is kept; the two soonest (2 h, 5 h) were checked.
        assert_eq!(checked(&r), ["2", "5"]);
        assert_eq!(skipped(&r), ["14", "20", "9"]);
        for s in r.iter().filter_map(|r| r.forecast.as_ref()) {
            if s.cross_check_skipped {
                assert!(s.mstl.is_none());
                assert!(
                    s.notes.iter().any(|n| n.contains("cross-check skipped")),
                    "{:?}",
                    s.notes
                );
            }
        }
        // The safe and the full series neither count nor are marked.
        for x in &r[5..] {
            let f = x.forecast.as_ref().unwrap();
            assert!(f.mstl.is_none() && !f.cross_check_skipped);
        }
        let json = serde_json::to_value(&r[2]).unwrap();
        assert_eq!(json["cross_check_skipped"], true, "{json}");
        let json = serde_json::to_value(&r[1]).unwrap();
        assert!(json.get("cross_check_skipped").is_none(), "{json}");
        // The same choice on every run, whatever the scheduling.
        for _ in 0..3 {
            let (again, s2) = forecast_many(&inputs, &both(2), 0, &|| {});
            assert_eq!(s2, sum);
            let a: Vec<_> = again.iter().map(|x| x.forecast.clone()).collect();
            let b: Vec<_> = r.iter().map(|x| x.forecast.clone()).collect();
            assert_eq!(a, b);
        }
    }

    #[test]
    fn zero_means_no_limit_and_matches_the_inline_cross_check() {
        let inputs = fleet();
        let (r, sum) = forecast_many(&inputs, &both(0), 0, &|| {});
        assert_eq!((sum.wanted, sum.checked, sum.skipped), (5, 5, 0));
        assert_eq!(checked(&r), ["14", "2", "20", "5", "9"]);
        assert!(skipped(&r).is_empty());
        // A limit at or above the number at risk does not bind either.
        assert_eq!(forecast_many(&inputs, &both(5), 0, &|| {}).1.skipped, 0);
        // Two phases give exactly what forecasting each series alone does.
        for (x, (s, cap)) in r.iter().zip(&inputs) {
            let alone = forecast(&s.points, *cap.as_ref().unwrap(), &both(1)).unwrap();
            assert_eq!(x.forecast.as_ref(), Some(&alone));
        }
        // Envelope only: nothing wanted, nothing marked.
        let (r, sum) = forecast_many(&inputs, &ForecastParams::default(), 0, &|| {});
        assert_eq!(sum, CrossCheckSummary::default());
        assert!(checked(&r).is_empty() && skipped(&r).is_empty());
    }

    #[test]
    fn urgency_is_the_median_crossing_then_the_earliest_then_position() {
        let base = forecast(&leak(5.0).points, 100.0, &ForecastParams::default()).unwrap();
        let at = |mid: Option<i64>, early: i64| {
            let mut f = base.clone();
            f.exhaustion_at = mid.map(|h| f.now + chrono::Duration::hours(h));
            f.exhaustion_earliest = Some(f.now + chrono::Duration::hours(early));
            f
        };
        let fs = [
            at(None, 1),
            at(Some(8), 6),
            at(Some(3), 2),
            at(Some(8), 5),
            at(None, 1),
            at(Some(3), 2),
        ];
        let refs: Vec<&Forecast> = fs.iter().collect();
        assert_eq!(urgency_order(&refs), [2, 5, 3, 1, 0, 4]);
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
        let (r, _) = forecast_many(&inputs, &ForecastParams::default(), 10, &|| {
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
        let mut results: Vec<SeriesResult> =
            inputs.iter().map(|(s, _)| SeriesResult::of(s)).collect();
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
