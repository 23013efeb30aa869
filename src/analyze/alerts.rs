//! Predictive alerts: `ResourceExhaustionPredicted`, `MetricAnomalyDetected`
//! and `MetricPeerOutlierDetected`, written as Alertmanager v4 webhook bodies and parsed with the same
//! [`parse_delivery`] as received alerts, so they go through the same
//! validation, correlation and routing. A predicted disk-full on a node
//! carries that node's labels and joins its incident.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::models::ModelDef;
use super::report::{fmt_lead, fmt_num, SeriesResult};
use super::PREDICTIVE_SOURCE;
use crate::ingest::{parse_delivery, Delivery, IngestConfig, PayloadError};

pub const EXHAUSTION_ALERT: &str = "ResourceExhaustionPredicted";
pub const ANOMALY_ALERT: &str = "MetricAnomalyDetected";
pub const PEER_ALERT: &str = "MetricPeerOutlierDetected";

/// Series labels copied onto alerts as they are.
const COPIED: [&str; 9] = [
    "cluster",
    "node",
    "namespace",
    "pod",
    "container",
    "persistentvolumeclaim",
    "instance",
    "mountpoint",
    "device",
];

fn alert_labels(model: &ModelDef, r: &SeriesResult, alertname: &str) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    for k in COPIED {
        if let Some(v) = r.labels.get(k).filter(|v| !v.is_empty()) {
            l.insert(k.to_owned(), v.clone());
        }
    }
    for (alert_label, series_label) in &model.labels {
        if let Some(v) = r.labels.get(series_label).filter(|v| !v.is_empty()) {
            l.insert(alert_label.clone(), v.clone());
        }
    }
    // Received alerts without a cluster get "unknown" at ingest; say it
    // here so that the identity we track matches the engine's.
    l.entry("cluster".into())
        .or_insert_with(|| "unknown".into());
    l.insert("alertname".into(), alertname.into());
    l.insert("resource".into(), model.resource.clone());
    l.insert("model".into(), model.name.clone());
    l
}

fn subject(model: &ModelDef, l: &BTreeMap<String, String>) -> String {
    let what = ["persistentvolumeclaim", "pod", "node", "instance"]
        .iter()
        .find_map(|k| l.get(*k).map(|v| format!("{k} {v}")))
        .unwrap_or_else(|| "series".into());
    format!("{} of {what}", model.resource)
}

/// The firing alert for one forecast, if it warrants one: exhaustion
/// predicted within the horizon, confidence ≥ the model's minimum, and a
/// severity rule covering the lead time.
pub fn exhaustion_alert(
    model: &ModelDef,
    r: &SeriesResult,
) -> Option<(BTreeMap<String, String>, Value)> {
    let f = r.forecast.as_ref()?;
    let at = f.exhaustion_at?;
    if f.confidence < model.min_confidence {
        return None;
    }
    let lead = (at - f.now).num_seconds().max(0);
    let severity = model.severity_for(Duration::from_secs(lead as u64))?;
    let mut labels = alert_labels(model, r, EXHAUSTION_ALERT);
    labels.insert("severity".into(), severity.into());
    let subj = subject(model, &labels);
    let t = |x: Option<DateTime<Utc>>| x.map_or(String::new(), |t| t.to_rfc3339());
    let annotations = json!({
        "summary": format!("{subj} is predicted to reach capacity in {}", fmt_lead(lead)),
        "description": format!(
            "{} is at {} of {} ({:.0}%) and is predicted to reach capacity at {} (95% interval {} to {}) with {:.0}% confidence.",
            r.name, fmt_num(f.current), fmt_num(f.capacity), 100.0 * f.utilisation(),
            at.to_rfc3339(), t(f.exhaustion_earliest),
            if f.exhaustion_latest.is_some() { t(f.exhaustion_latest) } else { "beyond the horizon".into() },
            100.0 * f.confidence
        ),
        "exhaustion_at": at.to_rfc3339(),
        "exhaustion_earliest": t(f.exhaustion_earliest),
        "exhaustion_latest": t(f.exhaustion_latest),
        "confidence": format!("{:.2}", f.confidence),
        "current_usage": format!("{}", f.current),
        "capacity": format!("{}", f.capacity),
        "utilisation": format!("{:.3}", f.utilisation()),
        "lead_time": fmt_lead(lead),
        "method": format!("{:?}", f.method).to_lowercase(),
    });
    Some((labels, annotations))
}

/// The firing anomaly alert for a series whose latest point is anomalous.
pub fn anomaly_alert(
    model: &ModelDef,
    r: &SeriesResult,
) -> Option<(BTreeMap<String, String>, Value)> {
    if !model.anomaly {
        return None;
    }
    // The highest score since the previous evaluation (see `run`).
    let score = r
        .anomaly_score
        .filter(|s| *s >= model.anomaly_profile.threshold())?;
    let mut labels = alert_labels(model, r, ANOMALY_ALERT);
    labels.insert("severity".into(), "info".into());
    let subj = subject(model, &labels);
    let current = r.history.last().map_or(String::new(), |p| fmt_num(p.1));
    let annotations = json!({
        "summary": format!("{subj} behaves unusually"),
        "description": format!("{} is at {current}, unusual for its recent behaviour (anomaly score {score:.2}).", r.name),
        "anomaly_score": format!("{score:.2}"),
        "current_usage": current,
    });
    Some((labels, annotations))
}

/// The firing peer-outlier alert for a series unlike the other series of its
/// model in its cluster (see [`super::run::mark_peer_outliers`]).
pub fn peer_alert(model: &ModelDef, r: &SeriesResult) -> Option<(BTreeMap<String, String>, Value)> {
    if !model.peers {
        return None;
    }
    let p = r.peer_outlier.as_ref()?;
    let mut labels = alert_labels(model, r, PEER_ALERT);
    labels.insert("severity".into(), "info".into());
    let subj = subject(model, &labels);
    let cluster = labels.get("cluster").cloned().unwrap_or_default();
    let show = |v: f64| p.show(v);
    let side = if p.value >= p.peer_median {
        "above"
    } else {
        "below"
    };
    let ratio = p
        .ratio()
        .map_or(String::new(), |x| format!("{x:.2}x the median, "));
    let window = fmt_lead(p.window_secs);
    let current = r.history.last().map_or(String::new(), |q| fmt_num(q.1));
    let annotations = json!({
        "summary": format!("{subj} is unlike its peers in cluster {cluster}"),
        "description": format!(
            "{} was at {} {} over the last {window}, {side} the median of {} across the {} series of model {} in cluster {cluster} ({ratio}{:.1} robust deviations away, outlying at {:.0}% of samples).",
            r.name,
            show(p.value),
            if p.utilisation { "of capacity" } else { "" },
            show(p.peer_median),
            p.peers,
            model.name,
            p.score,
            100.0 * p.outlying,
        ).replace("  ", " "),
        "peer_value": show(p.value),
        "peer_median": show(p.peer_median),
        "peer_count": p.peers.to_string(),
        "peer_score": format!("{:.1}", p.score),
        "peer_outlying": format!("{:.2}", p.outlying),
        "peer_window": window,
        "compared": if p.utilisation { "utilisation" } else { "usage" },
        "current_usage": current,
    });
    Some((labels, annotations))
}

/// One model's firing alerts: label set → (startsAt, last annotations).
type ModelAlerts = BTreeMap<BTreeMap<String, String>, (DateTime<Utc>, Value)>;

/// Tracks which predictive alerts are firing, so that the ones no longer
/// predicted are sent as resolved.
#[derive(Debug, Default)]
pub struct PredictiveState {
    /// Per model: label set → (startsAt, last annotations).
    active: BTreeMap<String, ModelAlerts>,
}

impl PredictiveState {
    /// Remembers a predictive alert that is firing in the engine (after a
    /// restart), so that it is resolved if the prediction no longer holds.
    pub fn restore(&mut self, alert: &crate::domain::AlertState) {
        if alert.source != PREDICTIVE_SOURCE || !alert.is_firing() {
            return;
        }
        let Some(model) = alert.labels.get("model") else {
            return;
        };
        let labels: BTreeMap<String, String> = alert
            .labels
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let ann: serde_json::Map<String, Value> = alert
            .annotations
            .iter()
            .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
            .collect();
        self.active
            .entry(model.to_owned())
            .or_default()
            .insert(labels, (alert.starts_at, Value::Object(ann)));
    }

    /// The webhook alerts for one model's evaluation: every alert it
    /// predicts (firing) plus every previously firing one it no longer
    /// predicts (resolved).
    pub fn update(
        &mut self,
        model: &ModelDef,
        results: &[SeriesResult],
        now: DateTime<Utc>,
    ) -> Vec<Value> {
        let prev = self.active.remove(&model.name).unwrap_or_default();
        let mut next = BTreeMap::new();
        let mut out = Vec::new();
        for r in results {
            for (labels, ann) in [
                exhaustion_alert(model, r),
                anomaly_alert(model, r),
                peer_alert(model, r),
            ]
            .into_iter()
            .flatten()
            {
                let starts = prev.get(&labels).map_or(now, |(s, _)| *s);
                out.push(json!({
                    "status": "firing",
                    "labels": labels,
                    "annotations": ann,
                    "startsAt": starts.to_rfc3339(),
                    "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "",
                }));
                next.insert(labels, (starts, ann));
            }
        }
        for (labels, (starts, ann)) in prev {
            if !next.contains_key(&labels) {
                out.push(json!({
                    "status": "resolved",
                    "labels": labels,
                    "annotations": ann,
                    "startsAt": starts.to_rfc3339(),
                    "endsAt": now.to_rfc3339(),
                    "generatorURL": "",
                }));
            }
        }
        self.active.insert(model.name.clone(), next);
        out
    }
}

/// The webhook body for a batch of predictive alerts.
pub fn webhook_body(model: &str, alerts: &[Value]) -> Vec<u8> {
    let firing = alerts.iter().any(|a| a["status"] == "firing");
    serde_json::to_vec(&json!({
        "version": "4",
        "receiver": "stormcast",
        "status": if firing { "firing" } else { "resolved" },
        "groupKey": format!("{{}}:{{model=\"{model}\"}}"),
        "truncatedAlerts": 0,
        "groupLabels": {"model": model},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "",
        "alerts": alerts,
    }))
    .unwrap_or_default()
}

/// Parses a predictive webhook body into a [`Delivery`] from
/// [`PREDICTIVE_SOURCE`], exactly as a received one would be.
pub fn delivery(body: &[u8], now: DateTime<Utc>) -> Result<Delivery, PayloadError> {
    parse_delivery(body, now, PREDICTIVE_SOURCE, None, &IngestConfig::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::anomaly::PeerOutlier;
    use crate::analyze::forecast::{forecast, ForecastParams};
    use crate::analyze::models::parse_models;

    fn disk_result(rate: f64) -> SeriesResult {
        let pts: Vec<(i64, f64)> = (0..600)
            .map(|i| (1_700_000_000 + i * 300, 10.0 + rate * i as f64 / 12.0))
            .collect();
        let labels: BTreeMap<String, String> = [
            ("cluster", "prod-bj"),
            ("instance", "node-7"),
            ("mountpoint", "/var"),
            ("job", "node-exporter"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        SeriesResult {
            name: "disk".into(),
            labels,
            model: None,
            error: None,
            forecast: Some(forecast(&pts, 100.0, &ForecastParams::default()).unwrap()),
            history: pts,
            anomaly_score: None,
            peer_outlier: None,
        }
    }

    #[test]
    fn exhaustion_alert_fires_then_resolves() {
        let model = parse_models(super::super::models::BUILTIN)
            .unwrap()
            .remove(0);
        assert_eq!(model.name, "node-filesystem");
        let now = Utc::now();
        let mut st = PredictiveState::default();
        // 1.7/h from ~95: about 3h left → critical.
        let alerts = st.update(&model, &[disk_result(1.7)], now);
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_eq!(a["status"], "firing");
        assert_eq!(a["labels"]["alertname"], EXHAUSTION_ALERT);
        assert_eq!(a["labels"]["node"], "node-7");
        assert_eq!(a["labels"]["cluster"], "prod-bj");
        assert_eq!(a["labels"]["resource"], "disk");
        assert_eq!(a["labels"]["severity"], "critical");
        assert!(a["labels"].get("job").is_none());
        assert!(a["annotations"]["exhaustion_at"].as_str().unwrap().len() > 10);
        assert!(
            a["annotations"]["confidence"]
                .as_str()
                .unwrap()
                .parse::<f64>()
                .unwrap()
                > 0.9
        );
        let d = delivery(&webhook_body(&model.name, &alerts), now).unwrap();
        assert_eq!(d.source, PREDICTIVE_SOURCE);
        assert_eq!(d.alerts.len(), 1);
        assert_eq!(d.alerts[0].cluster.as_str(), "prod-bj");

        // Usage flattens: the alert resolves, once.
        let alerts = st.update(&model, &[disk_result(0.0)], now);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0]["status"], "resolved");
        delivery(&webhook_body(&model.name, &alerts), now).unwrap();
        assert!(st.update(&model, &[disk_result(0.0)], now).is_empty());
    }

    #[test]
    fn firing_alerts_are_restored_from_the_engine_and_resolved() {
        use crate::correlate::{CorrelateSettings, Correlator};
        use crate::engine::{Engine, ManualClock};
        use crate::notify::Planner;
        let model = parse_models(super::super::models::BUILTIN)
            .unwrap()
            .remove(0);
        let now = Utc::now();
        let mut engine = Engine::new(
            std::sync::Arc::new(ManualClock::new(now)),
            Correlator::new(CorrelateSettings::default()),
            Planner::new(),
        );
        let mut r = disk_result(1.7);
        r.labels.remove("cluster");
        let alerts = PredictiveState::default().update(&model, &[r.clone()], now);
        engine.apply(&delivery(&webhook_body(&model.name, &alerts), now).unwrap());
        // A restarted service knows only what the engine knows.
        let mut st = PredictiveState::default();
        for a in engine.alerts() {
            st.restore(a);
        }
        let mut flat = disk_result(0.0);
        flat.labels.remove("cluster");
        let out = st.update(&model, &[flat], now);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["status"], "resolved");
        assert_eq!(out[0]["labels"], alerts[0]["labels"]);
        engine.apply(&delivery(&webhook_body(&model.name, &out), now).unwrap());
        assert!(engine.alerts().all(|a| !a.is_firing()));
    }

    fn node_result(instance: &str, peer: Option<PeerOutlier>) -> SeriesResult {
        let labels: BTreeMap<String, String> = [
            ("cluster", "prod-bj"),
            ("instance", instance),
            ("job", "node-exporter"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        SeriesResult {
            name: format!("mem{{instance={instance:?}}}"),
            labels,
            model: Some("node-memory".into()),
            error: None,
            forecast: None,
            history: vec![(1_700_000_000, 7.5e9)],
            anomaly_score: None,
            peer_outlier: peer,
        }
    }

    #[test]
    fn peer_alert_names_the_node_says_by_how_much_and_resolves() {
        let model = parse_models(super::super::models::BUILTIN)
            .unwrap()
            .into_iter()
            .find(|m| m.name == "node-memory")
            .unwrap();
        assert!(model.peers);
        let unlike = PeerOutlier {
            value: 0.92,
            peer_median: 0.41,
            peers: 6,
            score: 7.25,
            outlying: 1.0,
            window_secs: 3600,
            utilisation: true,
        };
        let results = [
            node_result("node-1", None),
            node_result("node-2", Some(unlike)),
            node_result("node-3", None),
        ];
        let now = Utc::now();
        let mut st = PredictiveState::default();
        let alerts = st.update(&model, &results, now);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        let a = &alerts[0];
        assert_eq!(a["status"], "firing");
        assert_eq!(a["labels"]["alertname"], PEER_ALERT);
        assert_eq!(a["labels"]["node"], "node-2");
        assert_eq!(a["labels"]["instance"], "node-2");
        assert_eq!(a["labels"]["cluster"], "prod-bj");
        assert_eq!(a["labels"]["resource"], "memory");
        assert_eq!(a["labels"]["model"], "node-memory");
        assert_eq!(a["labels"]["severity"], "info");
        assert!(a["labels"].get("job").is_none());
        assert_eq!(
            a["annotations"]["summary"],
            "memory of node node-2 is unlike its peers in cluster prod-bj"
        );
        let d = a["annotations"]["description"].as_str().unwrap();
        for want in [
            "92.0% of capacity over the last 1h00m",
            "above the median of 41.0% across the 6 series",
            "2.24x the median",
            "7.2 robust deviations",
        ] {
            assert!(d.contains(want), "{want:?} not in {d:?}");
        }
        assert_eq!(a["annotations"]["compared"], "utilisation");
        assert_eq!(a["annotations"]["peer_count"], "6");
        let del = delivery(&webhook_body(&model.name, &alerts), now).unwrap();
        assert_eq!(del.alerts.len(), 1);

        // Still unlike its peers: the same alert keeps its start.
        let later = now + chrono::Duration::minutes(10);
        let again = st.update(&model, &results, later);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0]["startsAt"], a["startsAt"]);

        // Back in line with its peers: resolved once, then nothing.
        let normal = [node_result("node-1", None), node_result("node-2", None)];
        let out = st.update(&model, &normal, later);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["status"], "resolved");
        assert_eq!(out[0]["labels"], a["labels"]);
        assert!(st.update(&model, &normal, later).is_empty());

        // A model without `peers` never raises one.
        let mut off = model.clone();
        off.peers = false;
        assert!(PredictiveState::default()
            .update(&off, &results, now)
            .is_empty());
    }
}
