//! Correlation rules as data: `rules/*.yaml` hold causal rules per alert name,
//! grouping windows and declared service dependencies (also across clusters).
//!
//! The defaults for kube-prometheus alerts are compiled in from
//! `rules/kube-prometheus.yaml`; files in the rules folder add to them and
//! override an alert's rule by name. `check-config` reports every problem with
//! its file, line and reason.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{parse_yaml, ConfigErrors, PromDuration};

use super::learned::{Learned, LearnedSection};

/// The shipped kube-prometheus rules, always loaded first.
pub const DEFAULT_RULES: &str = include_str!("../../rules/kube-prometheus.yaml");

/// What an alert is about, when its labels alone would say otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AboutKind {
    /// The pod, node, workload... its labels name (the default).
    Labels,
    /// The node named by `node` or `instance`.
    Node,
    /// The cluster's control plane (API server, scheduler, controller manager,
    /// etcd) and its clients' errors.
    ControlPlane,
    /// The workload or service named by its labels.
    Workload,
    /// A scrape job whose targets are the cluster's nodes (`TargetDown` of
    /// node-exporter or kubelet): it attaches to a failing node's incident.
    NodeScrape,
    /// The whole cluster: a healthy hub that never links alerts.
    Cluster,
}

/// How one alert name takes part in correlation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// The alert name (exact).
    pub alert: String,
    /// What the alert is about.
    #[serde(default = "default_about")]
    pub about: AboutKind,
    /// Causal weight: among alerts on the same root entity, the heaviest names
    /// the root cause (KubeNodeNotReady over NodeFilesystemAlmostOutOfSpace over
    /// KubeNodePressure). Also breaks ties between candidates. Default 10.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Whether a firing alert marks its entity failing, so that other alerts
    /// related to that entity join its incident. Informational alerts
    /// (CPUThrottlingHigh, overcommit) set this to false: they explain
    /// nothing, join no incident of a failure and stand alone. Default true.
    #[serde(default = "default_true")]
    pub links: bool,
    /// What the alert can be a symptom of, when not everything its entity
    /// hangs off: `node` (its node and zone failing), `workload` (its
    /// workload or a service it depends on failing), `dependency` (for a
    /// pod's alert: what the Service its workload backs depends on). An
    /// image that fails to pull (`KubeContainerWaiting`) is its workload's
    /// problem, never its node's: a node that is down does not report new
    /// container states. A pod's readiness probe that checks a dependency
    /// fails while the dependency is down (a `KubePodNotReady` rule listing
    /// `dependency`, where probes do); liveness probes should not check
    /// dependencies, so a crash loop does not. Default: `node` and
    /// `workload`; a pod's alert is its dependencies' symptom only when its
    /// rule lists `dependency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symptom_of: Option<Vec<CauseKind>>,
    /// Values of the alert's `reason` label that make it a symptom of its
    /// node under pressure or NotReady as well, whatever `symptom_of` says,
    /// for as long as the node's failure alert still fires (a pod stuck in
    /// `ContainerCreating` waits on its node: its sandbox, its volumes, a
    /// full disk; its long `for` says nothing of when the node's trouble
    /// began).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_reasons: Vec<String>,
    /// The alerting rule's `for`. Prometheus sends `startsAt` as the moment
    /// the alert began firing, `for` after its condition began, so a node
    /// failure's TargetDown (`for: 10m`) starts five minutes before its
    /// KubeNodeNotReady (`for: 15m`). Correlation compares onsets: `startsAt`
    /// minus `for`. Default 0s (the onset is `startsAt`).
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub pending_for: Option<PromDuration>,
}

/// A kind of cause an alert can be a symptom of (`symptom_of`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CauseKind {
    /// Its node, and the node's zone.
    Node,
    /// Its workload, and the services that workload depends on.
    Workload,
    /// For a pod's alert: the services the Service backed by its workload
    /// depends on (readiness probes that check them). Only when listed.
    Dependency,
}

impl AlertRule {
    /// Whether the alert can be a symptom of a cause of `kind`.
    pub fn symptom_of(&self, kind: CauseKind) -> bool {
        match &self.symptom_of {
            Some(k) => k.contains(&kind),
            None => kind != CauseKind::Dependency,
        }
    }
}

fn default_about() -> AboutKind {
    AboutKind::Labels
}
fn default_weight() -> u32 {
    10
}
fn default_true() -> bool {
    true
}

/// Grouping windows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupingRules {
    /// How long a resolved alert keeps its entity failing for grouping.
    pub window: Option<PromDuration>,
    /// How long an incident stays open after its last member resolved.
    pub resolve_hold: Option<PromDuration>,
    /// Storm mode: a cluster whose alert arrivals per minute exceed this
    /// multiple of its baseline (and `storm_min_per_minute`) is in a storm.
    pub storm_factor: Option<f64>,
    /// Minimum arrivals per minute for storm mode.
    pub storm_min_per_minute: Option<u32>,
}

/// A reference to a service another one depends on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServiceRef {
    pub name: String,
    /// Defaults to the dependent's namespace.
    pub namespace: Option<String>,
    /// Defaults to the dependent's cluster.
    pub cluster: Option<String>,
}

/// A declared service and what it depends on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRule {
    pub name: String,
    pub namespace: String,
    /// Omitted: this service in every cluster.
    pub cluster: Option<String>,
    /// The workload backing the service, when its name differs.
    pub workload: Option<String>,
    #[serde(default)]
    pub depends_on: Vec<ServiceRef>,
}

/// One rules file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulesFile {
    pub grouping: GroupingRules,
    pub alerts: Vec<AlertRule>,
    pub services: Vec<ServiceRule>,
    /// Learned cause scores between alert names (written by `stormcast
    /// learn`): a ranking signal below the causal rules.
    pub learned: Option<LearnedSection>,
}

/// A resolved app (workload or service) id: cluster, namespace, name.
pub type AppRef = (String, String, String);

/// All rules, merged: defaults first, then each file in name order.
#[derive(Debug, Clone)]
pub struct Rules {
    pub window: PromDuration,
    pub resolve_hold: PromDuration,
    pub storm_factor: f64,
    pub storm_min_per_minute: u32,
    alerts: HashMap<String, AlertRule>,
    /// (namespace, name) → entries (cluster-specific or fleet-wide).
    services: HashMap<(String, String), Vec<ServiceRule>>,
    /// (namespace, workload) → services declared with that `workload`
    /// under another name.
    backed_by: HashMap<(String, String), Vec<String>>,
    /// Learned cause scores (empty: ranking uses rules and topology only).
    pub learned: Learned,
    /// Files the rules came from, for logs.
    pub files: Vec<PathBuf>,
}

impl Default for Rules {
    fn default() -> Self {
        let mut r = Rules::empty();
        let file: RulesFile = parse_yaml(DEFAULT_RULES).expect("shipped rules parse");
        r.add(file);
        r
    }
}

impl Rules {
    /// No rules at all (no defaults either).
    pub fn empty() -> Self {
        Rules {
            window: PromDuration::mins(15),
            resolve_hold: PromDuration::mins(5),
            storm_factor: 5.0,
            storm_min_per_minute: 10,
            alerts: HashMap::new(),
            services: HashMap::new(),
            backed_by: HashMap::new(),
            learned: Learned::default(),
            files: Vec::new(),
        }
    }

    /// Adds a parsed file; later rules for the same alert override earlier ones.
    pub fn add(&mut self, f: RulesFile) {
        let g = f.grouping;
        if let Some(w) = g.window {
            self.window = w;
        }
        if let Some(h) = g.resolve_hold {
            self.resolve_hold = h;
        }
        if let Some(s) = g.storm_factor {
            self.storm_factor = s;
        }
        if let Some(m) = g.storm_min_per_minute {
            self.storm_min_per_minute = m;
        }
        for a in f.alerts {
            self.alerts.insert(a.alert.clone(), a);
        }
        for s in f.services {
            if let Some(w) = s.workload.as_ref().filter(|w| **w != s.name) {
                let names = self
                    .backed_by
                    .entry((s.namespace.clone(), w.clone()))
                    .or_default();
                if !names.contains(&s.name) {
                    names.push(s.name.clone());
                }
            }
            self.services
                .entry((s.namespace.clone(), s.name.clone()))
                .or_default()
                .push(s);
        }
        if let Some(l) = &f.learned {
            self.learned.add(l);
        }
    }

    pub fn alert(&self, name: &str) -> Option<&AlertRule> {
        self.alerts.get(name)
    }

    /// How long before its `startsAt` an alert's condition began: its rule's
    /// `for`, or zero for an alert without one.
    pub fn pending_for(&self, name: &str) -> chrono::Duration {
        self.alerts
            .get(name)
            .and_then(|r| r.pending_for)
            .map_or(chrono::Duration::zero(), PromDuration::as_chrono)
    }

    pub fn weight(&self, name: &str) -> u32 {
        self.alerts.get(name).map_or(default_weight(), |r| r.weight)
    }

    fn service(&self, cluster: &str, ns: &str, name: &str) -> Option<&ServiceRule> {
        let entries = self.services.get(&(ns.to_owned(), name.to_owned()))?;
        entries
            .iter()
            .find(|s| s.cluster.as_deref() == Some(cluster))
            .or_else(|| entries.iter().find(|s| s.cluster.is_none()))
    }

    /// The workload backing a service, by the service's name.
    pub fn backing_workload<'a>(&'a self, cluster: &str, ns: &str, name: &'a str) -> &'a str {
        self.declared_workload(cluster, ns, name).unwrap_or(name)
    }

    /// The workload a service is declared with (`services[].workload`).
    pub fn declared_workload(&self, cluster: &str, ns: &str, name: &str) -> Option<&str> {
        self.service(cluster, ns, name)
            .and_then(|s| s.workload.as_deref())
    }

    /// The apps `app` depends on, directly.
    pub fn depends_on(&self, cluster: &str, ns: &str, name: &str) -> Vec<AppRef> {
        let Some(s) = self.service(cluster, ns, name) else {
            return Vec::new();
        };
        s.depends_on
            .iter()
            .map(|d| {
                let c = d.cluster.as_deref().unwrap_or(cluster);
                let n = d.namespace.as_deref().unwrap_or(ns);
                let w = self.backing_workload(c, n, &d.name).to_owned();
                (c.to_owned(), n.to_owned(), w)
            })
            .collect()
    }

    /// The apps `app` depends on, transitively (bounded depth, cycles cut).
    pub fn depends_on_transitive(&self, cluster: &str, ns: &str, name: &str) -> Vec<AppRef> {
        let mut out: Vec<AppRef> = Vec::new();
        let mut frontier = vec![(cluster.to_owned(), ns.to_owned(), name.to_owned())];
        for _ in 0..6 {
            let mut next = Vec::new();
            for (c, n, a) in &frontier {
                for d in self.depends_on(c, n, a) {
                    if !out.contains(&d) && (d.0 != cluster || d.1 != ns || d.2 != name) {
                        out.push(d.clone());
                        next.push(d);
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
        out
    }

    /// What the services backed by workload `workload` depend on,
    /// transitively (nearest first, as [`depends_on_transitive`]): the
    /// service of the same name unless it is declared with another
    /// workload, and services declared with `workload: <workload>`.
    ///
    /// [`depends_on_transitive`]: Self::depends_on_transitive
    pub fn workload_depends_on(&self, cluster: &str, ns: &str, workload: &str) -> Vec<AppRef> {
        let others = self
            .backed_by
            .get(&(ns.to_owned(), workload.to_owned()))
            .map_or(&[][..], Vec::as_slice);
        let mut out: Vec<AppRef> = Vec::new();
        for svc in std::iter::once(workload).chain(others.iter().map(String::as_str)) {
            if self.backing_workload(cluster, ns, svc) != workload {
                continue;
            }
            for d in self.depends_on_transitive(cluster, ns, svc) {
                let own = d.0 == cluster && d.1 == ns && d.2 == workload;
                if !own && !out.contains(&d) {
                    out.push(d);
                }
            }
        }
        out
    }

    /// Loads the defaults plus every `*.yaml`/`*.yml` file directly in `dir`
    /// (a missing folder means defaults only). Errors carry file and line.
    pub fn load_dir(dir: &Path) -> Result<Rules, ConfigErrors> {
        let mut rules = Rules::default();
        let mut errs = ConfigErrors::default();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(rules),
            Err(e) => {
                errs.push(dir.display().to_string(), format!("cannot read: {e}"));
                return Err(errs);
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        for path in files {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    errs.push(path.display().to_string(), format!("cannot read: {e}"));
                    continue;
                }
            };
            match parse_rules(&text) {
                Ok(f) => {
                    rules.add(f);
                    rules.files.push(path);
                }
                Err(e) => errs.extend(e.in_file(&path)),
            }
        }
        errs.into_result(rules)
    }
}

/// 1-based line of the first line containing `needle` at or after `from`.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

/// Parses and validates one rules file; errors carry the key path and line.
pub fn parse_rules(text: &str) -> Result<RulesFile, ConfigErrors> {
    let f: RulesFile = parse_yaml(text)?;
    let mut errs = ConfigErrors::default();
    let at = |needle: &str| line_of(text, needle).map_or(String::new(), |l| format!("line {l}: "));
    let mut seen = HashMap::new();
    for (i, a) in f.alerts.iter().enumerate() {
        let path = format!("alerts[{i}].alert");
        if a.alert.is_empty() {
            errs.push(path, format!("{}required", at("alert:")));
        } else if let Some(j) = seen.insert(a.alert.as_str(), i) {
            errs.push(
                path,
                format!(
                    "{}duplicate rule for {} (also alerts[{j}])",
                    at(&format!("alert: {}", a.alert)),
                    a.alert
                ),
            );
        }
    }
    for (i, s) in f.services.iter().enumerate() {
        let here = at(&format!("name: {}", s.name));
        if s.name.is_empty() {
            errs.push(format!("services[{i}].name"), format!("{here}required"));
        }
        if s.namespace.is_empty() {
            errs.push(
                format!("services[{i}].namespace"),
                format!("{here}required"),
            );
        }
        for (j, d) in s.depends_on.iter().enumerate() {
            if d.name.is_empty() {
                errs.push(
                    format!("services[{i}].depends_on[{j}].name"),
                    format!("{here}required"),
                );
            }
            let same_cluster = d.cluster.is_none() || d.cluster == s.cluster;
            if d.name == s.name
                && d.namespace.as_ref().is_none_or(|n| *n == s.namespace)
                && same_cluster
            {
                errs.push(
                    format!("services[{i}].depends_on[{j}]"),
                    format!(
                        "{}a service cannot depend on itself",
                        at(&format!("name: {}", d.name))
                    ),
                );
            }
        }
    }
    if let Some(w) = &f.grouping.window {
        if w.is_zero() {
            errs.push(
                "grouping.window",
                format!("{}must be greater than 0", at("window:")),
            );
        }
    }
    if let Some(l) = &f.learned {
        super::learned::validate(l, &at, &mut errs);
    }
    if let Some(s) = f.grouping.storm_factor {
        if s.is_nan() || s <= 1.0 {
            errs.push(
                "grouping.storm_factor",
                format!("{}must be greater than 1", at("storm_factor:")),
            );
        }
    }
    errs.into_result(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_defaults_parse_and_rank_node_causes() {
        let r = Rules::default();
        assert!(r.weight("KubeNodeNotReady") > r.weight("KubePodNotReady"));
        assert_eq!(
            r.alert("KubeAPIDown").unwrap().about,
            AboutKind::ControlPlane
        );
    }

    #[test]
    fn dependencies_default_namespace_and_cluster() {
        let f = parse_rules(
            "services:\n  - name: checkout\n    namespace: payments\n    depends_on:\n      - name: payment\n      - name: auth\n        namespace: identity\n        cluster: prod-bj-1\n",
        )
        .unwrap();
        let mut r = Rules::empty();
        r.add(f);
        let deps = r.depends_on("prod-sh-2", "payments", "checkout");
        assert_eq!(
            deps,
            vec![
                ("prod-sh-2".into(), "payments".into(), "payment".into()),
                ("prod-bj-1".into(), "identity".into(), "auth".into())
            ]
        );
    }

    #[test]
    fn errors_carry_line_and_reason() {
        let errs = parse_rules("alerts:\n  - alert: A\n  - alert: A\n    weight: 3\n").unwrap_err();
        assert!(errs.to_string().contains("line 2"), "{errs}");
        assert!(errs.to_string().contains("duplicate rule for A"), "{errs}");
        let errs = parse_rules("alerts:\n  - alert: A\n    about: planet\n").unwrap_err();
        assert!(errs.to_string().contains("line 3"), "{errs}");
        let errs = parse_rules("grouping:\n  windw: 5m\n").unwrap_err();
        assert!(errs.to_string().contains("grouping.windw"), "{errs}");
    }
}
