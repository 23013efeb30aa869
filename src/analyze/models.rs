//! Forecast models: what to watch. Each `models/*.yaml` file holds a list of
//! models; a usage query, a capacity (a query or a constant), the horizon,
//! how often to evaluate, seasonality, severity by lead time and how series
//! labels map onto alert labels.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::forecast::Seasonality;
use crate::config::{parse_yaml, ConfigErrors, PromDuration};
use crate::domain::is_valid_label_name;

/// The models shipped with stormcast, used when no models folder exists.
pub const BUILTIN: &str = include_str!("../../models/kubernetes.yaml");

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelFile {
    pub models: Vec<ModelDef>,
}

/// Capacity: a PromQL query (matched to usage series on `match_on`) or a constant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CapacityDef {
    pub query: Option<String>,
    pub value: Option<f64>,
}

/// A severity that applies when exhaustion is predicted within `within`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeverityRule {
    pub within: PromDuration,
    pub severity: String,
}

/// One thing to watch.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelDef {
    /// Unique name across all model files.
    pub name: String,
    /// The `resource` label of predictive alerts (disk, memory, cpu, pvc, pods...).
    pub resource: String,
    /// PromQL giving usage, one series per resource instance.
    pub usage: String,
    pub capacity: CapacityDef,
    /// Labels a capacity series must share with a usage series. Empty: every
    /// label of the capacity series (except `__name__`) must match.
    pub match_on: Vec<String>,
    pub horizon: PromDuration,
    /// How often `serve` evaluates this model.
    pub interval: PromDuration,
    /// History read per evaluation (defaults to `history.lookback`).
    pub lookback: Option<PromDuration>,
    pub seasonality: Seasonality,
    /// Severity by lead time, checked shortest `within` first.
    pub severity: Vec<SeverityRule>,
    /// Alert label ← series label (e.g. `node: instance`). `cluster`,
    /// `namespace`, `pod`, `persistentvolumeclaim`, `node` are copied as-is
    /// when present and not mapped.
    pub labels: BTreeMap<String, String>,
    /// Alert only when the probability of exhaustion within the horizon is at
    /// least this.
    pub min_confidence: f64,
    /// Also raise anomaly alerts for this model's usage series.
    pub anomaly: bool,
    /// The false-alert / miss trade-off of those alerts.
    pub anomaly_profile: super::anomaly::Profile,
    /// Also raise peer-outlier alerts: a series unlike the other series of
    /// this model in its cluster (the history's `cluster_label`) over the
    /// last `peer_window`. Clusters with fewer than 4 such series are skipped.
    pub peers: bool,
    /// How far from its cluster's median, in robust deviations (1.4826 × the
    /// median absolute deviation across the cluster at that moment), a series
    /// must be to count as unlike its peers. Lower flags more.
    pub peer_threshold: f64,
    /// The recent stretch compared; a series must be unlike its peers for at
    /// least half of it.
    pub peer_window: PromDuration,
    pub enabled: bool,
}

impl Default for ModelDef {
    fn default() -> Self {
        ModelDef {
            name: String::new(),
            resource: String::new(),
            usage: String::new(),
            capacity: CapacityDef::default(),
            match_on: Vec::new(),
            horizon: PromDuration::hours(24),
            interval: PromDuration::mins(15),
            lookback: None,
            seasonality: Seasonality::Auto,
            severity: vec![
                SeverityRule {
                    within: PromDuration::hours(4),
                    severity: "critical".into(),
                },
                SeverityRule {
                    within: PromDuration::hours(24),
                    severity: "warning".into(),
                },
            ],
            labels: BTreeMap::new(),
            min_confidence: 0.5,
            anomaly: false,
            anomaly_profile: Default::default(),
            peers: false,
            peer_threshold: 4.0,
            peer_window: PromDuration::hours(1),
            enabled: true,
        }
    }
}

const SEVERITIES: [&str; 4] = ["critical", "warning", "info", "none"];

impl ModelDef {
    /// Severity for a lead time, or `None` when beyond every rule.
    pub fn severity_for(&self, lead: Duration) -> Option<&str> {
        let mut rules: Vec<&SeverityRule> = self.severity.iter().collect();
        rules.sort_by_key(|r| r.within);
        rules
            .into_iter()
            .find(|r| lead <= r.within.as_std())
            .map(|r| r.severity.as_str())
    }

    fn validate(&self, path: &str, errs: &mut ConfigErrors) {
        if self.name.trim().is_empty() {
            errs.push(format!("{path}.name"), "required");
        }
        if self.resource.trim().is_empty() {
            errs.push(
                format!("{path}.resource"),
                "required (e.g. disk, memory, cpu)",
            );
        }
        if self.usage.trim().is_empty() {
            errs.push(format!("{path}.usage"), "required: a PromQL query");
        }
        match (&self.capacity.query, self.capacity.value) {
            (Some(_), Some(_)) => errs.push(
                format!("{path}.capacity"),
                "give either query or value, not both",
            ),
            (None, None) => errs.push(format!("{path}.capacity"), "give a query or a value"),
            (Some(q), None) if q.trim().is_empty() => {
                errs.push(format!("{path}.capacity.query"), "must not be empty")
            }
            (None, Some(v)) if !(v.is_finite() && v > 0.0) => errs.push(
                format!("{path}.capacity.value"),
                format!("{v} must be a positive number"),
            ),
            _ => {}
        }
        if self.horizon.as_std() < Duration::from_secs(600) {
            errs.push(format!("{path}.horizon"), "must be at least 10m");
        }
        if self.interval.as_std() < Duration::from_secs(30) {
            errs.push(format!("{path}.interval"), "must be at least 30s");
        }
        if let Some(l) = self.lookback {
            if l.as_std() < Duration::from_secs(3600) {
                errs.push(format!("{path}.lookback"), "must be at least 1h");
            }
        }
        if self.severity.is_empty() {
            errs.push(format!("{path}.severity"), "needs at least one rule");
        }
        for (i, r) in self.severity.iter().enumerate() {
            if !SEVERITIES.contains(&r.severity.as_str()) {
                errs.push(
                    format!("{path}.severity[{i}].severity"),
                    format!("{:?} is not one of {}", r.severity, SEVERITIES.join(", ")),
                );
            }
            if r.within.is_zero() {
                errs.push(
                    format!("{path}.severity[{i}].within"),
                    "must be greater than 0",
                );
            }
        }
        if !(self.min_confidence > 0.0 && self.min_confidence <= 1.0) {
            errs.push(
                format!("{path}.min_confidence"),
                format!("{} must be in (0, 1]", self.min_confidence),
            );
        }
        if !(self.peer_threshold.is_finite() && self.peer_threshold >= 1.0) {
            errs.push(
                format!("{path}.peer_threshold"),
                format!("{} must be a number of at least 1", self.peer_threshold),
            );
        }
        if self.peer_window.as_std() < Duration::from_secs(300) {
            errs.push(format!("{path}.peer_window"), "must be at least 5m");
        }
        for (k, v) in &self.labels {
            if !is_valid_label_name(k) {
                errs.push(format!("{path}.labels.{k}"), "is not a valid label name");
            }
            if !is_valid_label_name(v) {
                errs.push(
                    format!("{path}.labels.{k}"),
                    format!("{v:?} is not a valid label name"),
                );
            }
        }
        for (i, l) in self.match_on.iter().enumerate() {
            if !is_valid_label_name(l) {
                errs.push(
                    format!("{path}.match_on[{i}]"),
                    format!("{l:?} is not a valid label name"),
                );
            }
        }
    }
}

/// Parses and validates one model file's text. Errors carry key paths.
pub fn parse_models(text: &str) -> Result<Vec<ModelDef>, ConfigErrors> {
    let file: ModelFile = parse_yaml(text)?;
    let mut errs = ConfigErrors::default();
    for (i, m) in file.models.iter().enumerate() {
        m.validate(&format!("models[{i}]"), &mut errs);
    }
    errs.into_result(file.models)
}

/// Loads every `*.yaml`/`*.yml` in `dir` (sorted by name), collecting every
/// error with its file and key path. A missing folder yields the built-in
/// models when `required` is false, and an error otherwise.
pub fn load_models(dir: &Path, required: bool) -> Result<Vec<ModelDef>, ConfigErrors> {
    let mut errs = ConfigErrors::default();
    if !dir.is_dir() {
        if required {
            errs.push("models_dir", format!("{} is not a folder", dir.display()));
            return Err(errs);
        }
        return parse_models(BUILTIN);
    }
    let mut files: Vec<_> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml") | Some("yml")
                )
            })
            .collect(),
        Err(e) => {
            errs.push("models_dir", format!("cannot read {}: {e}", dir.display()));
            return Err(errs);
        }
    };
    files.sort();
    let mut out = Vec::new();
    let mut names: BTreeSet<String> = BTreeSet::new();
    for f in files {
        let text = match std::fs::read_to_string(&f) {
            Ok(t) => t,
            Err(e) => {
                errs.push(f.display().to_string(), format!("cannot read: {e}"));
                continue;
            }
        };
        match parse_models(&text) {
            Ok(ms) => {
                let mut file_errs = ConfigErrors::default();
                for (i, m) in ms.into_iter().enumerate() {
                    if !names.insert(m.name.clone()) {
                        file_errs.push(
                            format!("models[{i}].name"),
                            format!("{:?} is already defined", m.name),
                        );
                    }
                    out.push(m);
                }
                errs.extend(file_errs.in_file(&f));
            }
            Err(e) => errs.extend(e.in_file(&f)),
        }
    }
    errs.into_result(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_models_are_valid() {
        let ms = parse_models(BUILTIN).unwrap();
        let names: Vec<&str> = ms.iter().map(|m| m.name.as_str()).collect();
        for n in [
            "node-filesystem",
            "node-memory",
            "node-cpu",
            "pvc-usage",
            "container-memory",
            "node-pods",
        ] {
            assert!(names.contains(&n), "{n} missing from {names:?}");
        }
        let fs = &ms[0];
        assert_eq!(fs.severity_for(Duration::from_secs(3600)), Some("critical"));
        assert_eq!(
            fs.severity_for(Duration::from_secs(10 * 3600)),
            Some("warning")
        );
        assert_eq!(fs.severity_for(Duration::from_secs(100 * 3600)), None);
    }

    #[test]
    fn errors_name_file_key_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.yaml"),
            "models:\n  - name: x\n    resource: disk\n    usage: u\n    capacity: {value: 5}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("b.yaml"),
            "models:\n  - name: x\n    resource: disk\n    usage: u\n    capacity: {query: q, value: 1}\n    horizon: 1m\n    severity: [{within: 1h, severity: page}]\n    min_confidence: 2\n  - name: y\n    usage: u\n    capacity: {value: 1}\n    colour: red\n",
        )
        .unwrap();
        let errs = load_models(dir.path(), true).unwrap_err().to_string();
        let want = "b.yaml:12: models[1].colour: unknown field";
        assert!(errs.contains(want), "{want:?} not in\n{errs}");
        // Fix the unknown key: the semantic errors are reported together.
        std::fs::write(
            dir.path().join("b.yaml"),
            "models:\n  - name: x\n    resource: disk\n    usage: u\n    capacity: {query: q, value: 1}\n    horizon: 1m\n    severity: [{within: 1h, severity: page}]\n    min_confidence: 2\n",
        )
        .unwrap();
        let errs = load_models(dir.path(), true).unwrap_err().to_string();
        for want in [
            "b.yaml: models[0].capacity: give either query or value",
            "b.yaml: models[0].horizon: must be at least 10m",
            "b.yaml: models[0].severity[0].severity: \"page\"",
            "b.yaml: models[0].min_confidence",
        ] {
            assert!(errs.contains(want), "{want:?} not in\n{errs}");
        }
        std::fs::write(
            dir.path().join("b.yaml"),
            "models:\n  - name: x\n    resource: disk\n    usage: u\n    capacity: {value: 1}\n",
        )
        .unwrap();
        let errs = load_models(dir.path(), true).unwrap_err().to_string();
        assert!(
            errs.contains("b.yaml: models[0].name: \"x\" is already defined"),
            "{errs}"
        );
        assert!(load_models(&dir.path().join("nope"), true).is_err());
        assert!(!load_models(&dir.path().join("nope"), false)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn peer_fields_default_parse_and_validate() {
        let base =
            "models:\n  - name: m\n    resource: memory\n    usage: u\n    capacity: {value: 1}\n";
        let m = parse_models(base).unwrap().remove(0);
        assert!(!m.peers);
        assert_eq!(m.peer_threshold, 4.0);
        assert_eq!(m.peer_window, PromDuration::hours(1));
        let m = parse_models(&format!(
            "{base}    peers: true\n    peer_threshold: 6\n    peer_window: 30m\n"
        ))
        .unwrap()
        .remove(0);
        assert!(m.peers);
        assert_eq!(m.peer_threshold, 6.0);
        assert_eq!(m.peer_window, PromDuration::mins(30));
        for (field, want) in [
            (
                "peer_threshold: 0.5",
                "models[0].peer_threshold: 0.5 must be a number of at least 1",
            ),
            (
                "peer_threshold: .nan",
                "models[0].peer_threshold: NaN must be a number of at least 1",
            ),
            (
                "peer_window: 4m",
                "models[0].peer_window: must be at least 5m",
            ),
            ("peers: often", "models[0].peers"),
        ] {
            let errs = parse_models(&format!("{base}    {field}\n"))
                .unwrap_err()
                .to_string();
            assert!(errs.contains(want), "{want:?} not in\n{errs}");
        }
        let ms = parse_models(BUILTIN).unwrap();
        let peers: Vec<&str> = ms
            .iter()
            .filter(|m| m.peers)
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(peers, ["node-memory", "node-cpu"]);
    }
}
