//! `stormcast test-rules`: unit tests for correlation rules, in the spirit of
//! `promtool test rules`. Each test gives alerts at times (and optional
//! topology) and expects incidents with their members and root cause.
//!
//! ```yaml
//! tests:
//!   - name: node down explains its pods
//!     topology:
//!       pods: [{cluster: c1, namespace: shop, pod: web-1, node: n1, owner: web}]
//!       nodes: [{cluster: c1, node: n1, zone: a}]
//!       services: [{cluster: c1, namespace: shop, service: web-svc, pods: [web-1]}]
//!     alerts:
//!       - {at: 0s, labels: {alertname: KubePodNotReady, cluster: c1, namespace: shop, pod: web-1}}
//!       - {at: 5m, labels: {alertname: KubeNodeNotReady, cluster: c1, node: n1}}
//!     expect:
//!       - alerts: [{alertname: KubePodNotReady}, {alertname: KubeNodeNotReady}]
//!         root: {kind: node, name: n1}
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use chrono::TimeZone;
use serde::Deserialize;

use crate::config::{parse_yaml, ConfigErrors, PromDuration};
use crate::domain::{AlertState, AlertStatus, ClusterId, Labels, Transition};

use super::{CorrelateSettings, Correlator, Rules, Topology};

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TestFile {
    pub tests: Vec<RuleTest>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleTest {
    pub name: String,
    pub topology: TestTopology,
    pub alerts: Vec<TestAlert>,
    pub expect: Vec<ExpectedIncident>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TestTopology {
    pub pods: Vec<TestPod>,
    pub nodes: Vec<TestNode>,
    /// Services and the pods their EndpointSlices list.
    pub services: Vec<TestService>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestPod {
    pub cluster: String,
    pub namespace: String,
    pub pod: String,
    pub node: String,
    /// The owning workload.
    pub owner: Option<String>,
    /// Its kind: `Deployment` (default), `StatefulSet` or `DaemonSet`.
    pub owner_kind: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestService {
    pub cluster: String,
    pub namespace: String,
    pub service: String,
    /// The pods its endpoints list (in its namespace).
    pub pods: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestNode {
    pub cluster: String,
    pub node: String,
    pub zone: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestAlert {
    /// Offset from the start of the test.
    pub at: PromDuration,
    pub labels: BTreeMap<String, String>,
    /// Offset at which it resolves, if it does.
    pub resolved_at: Option<PromDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedIncident {
    /// Label subsets; each must match exactly one member, and every member
    /// must be matched.
    pub alerts: Vec<BTreeMap<String, String>>,
    pub root: Option<ExpectedRoot>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedRoot {
    pub kind: String,
    pub name: String,
}

/// The outcome of one test.
#[derive(Debug)]
pub struct TestOutcome {
    pub name: String,
    pub failures: Vec<String>,
}

fn matches(labels: &Labels, subset: &BTreeMap<String, String>) -> bool {
    subset
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v.as_str()))
}

/// Runs every test of a file against `rules`.
pub fn run_file(path: &Path, rules: &Rules) -> Result<Vec<TestOutcome>, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let mut errs = ConfigErrors::default();
        errs.push(path.display().to_string(), format!("cannot read: {e}"));
        errs
    })?;
    let file: TestFile = parse_yaml(&text).map_err(|e| e.in_file(path))?;
    Ok(file.tests.iter().map(|t| run_test(t, rules)).collect())
}

/// Runs one test.
pub fn run_test(test: &RuleTest, rules: &Rules) -> TestOutcome {
    let mut topo = Topology::default();
    let series = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    for p in &test.topology.pods {
        topo.add_series(
            "kube_pod_info",
            &series(&[
                ("cluster", &p.cluster),
                ("namespace", &p.namespace),
                ("pod", &p.pod),
                ("node", &p.node),
            ]),
        );
        if let Some(o) = &p.owner {
            topo.add_series(
                "kube_pod_owner",
                &series(&[
                    ("cluster", &p.cluster),
                    ("namespace", &p.namespace),
                    ("pod", &p.pod),
                    (
                        "owner_kind",
                        p.owner_kind.as_deref().unwrap_or("Deployment"),
                    ),
                    ("owner_name", o),
                ]),
            );
        }
    }
    for n in &test.topology.nodes {
        topo.add_series(
            "kube_node_labels",
            &series(&[
                ("cluster", &n.cluster),
                ("node", &n.node),
                ("label_topology_kubernetes_io_zone", &n.zone),
            ]),
        );
    }
    for s in &test.topology.services {
        let slice = format!("{}-test", s.service);
        topo.add_series(
            "kube_endpointslice_labels",
            &series(&[
                ("cluster", &s.cluster),
                ("namespace", &s.namespace),
                ("endpointslice", &slice),
                ("label_kubernetes_io_service_name", &s.service),
            ]),
        );
        for pod in &s.pods {
            topo.add_series(
                "kube_endpointslice_endpoints",
                &series(&[
                    ("cluster", &s.cluster),
                    ("namespace", &s.namespace),
                    ("endpointslice", &slice),
                    ("targetref_kind", "Pod"),
                    ("targetref_name", pod),
                ]),
            );
        }
    }
    let mut c = Correlator::new(CorrelateSettings::from_rules(rules.clone()));
    c.set_topology(Arc::new(topo));
    let t0 = chrono::Utc
        .timestamp_opt(1_700_000_000, 0)
        .single()
        .expect("valid");
    // Events: (time, index, firing?)
    let mut events: Vec<(chrono::Duration, usize, bool)> = Vec::new();
    for (i, a) in test.alerts.iter().enumerate() {
        events.push((a.at.as_chrono(), i, true));
        if let Some(r) = &a.resolved_at {
            events.push((r.as_chrono(), i, false));
        }
    }
    events.sort_by_key(|e| (e.0, !e.2, e.1));
    let mut states: HashMap<usize, AlertState> = HashMap::new();
    for (at, i, firing) in events {
        let now = t0 + at;
        c.tick(now);
        let a = &test.alerts[i];
        let mut labels: Labels = a
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !labels.contains("cluster") {
            labels.insert("cluster", "default");
        }
        let cluster = ClusterId::new(labels.get_or_empty("cluster"));
        let st = states.entry(i).or_insert_with(|| AlertState {
            id: labels.fingerprint(),
            am_fingerprint: None,
            cluster,
            labels: labels.clone(),
            annotations: Labels::new(),
            status: AlertStatus::Firing,
            starts_at: now,
            ends_at: None,
            generator_url: Default::default(),
            external_url: Default::default(),
            source: "test-rules".into(),
            first_received: now,
            last_received: now,
            flaps: 0,
            previous_end: None,
            deliveries: 1,
        });
        let transition = if firing {
            Transition::New
        } else {
            st.status = AlertStatus::Resolved;
            st.ends_at = Some(now);
            Transition::Resolved
        };
        c.observe(st, transition, now);
    }
    let mut failures = Vec::new();
    let incidents: Vec<_> = c
        .incidents()
        .into_iter()
        .filter(|i| !i.alerts.is_empty())
        .collect();
    if incidents.len() != test.expect.len() {
        failures.push(format!(
            "expected {} incidents, got {}: {}",
            test.expect.len(),
            incidents.len(),
            incidents
                .iter()
                .map(|i| format!(
                    "[{}]",
                    i.alerts
                        .iter()
                        .map(|a| a.labels.alertname().to_owned())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    for (n, exp) in test.expect.iter().enumerate() {
        let Some(first) = exp.alerts.first() else {
            failures.push(format!("expect[{n}]: no alerts given"));
            continue;
        };
        let Some(inc) = incidents
            .iter()
            .find(|i| i.alerts.iter().any(|a| matches(&a.labels, first)))
        else {
            failures.push(format!("expect[{n}]: no incident holds {first:?}"));
            continue;
        };
        let all_matched = inc
            .alerts
            .iter()
            .all(|a| exp.alerts.iter().any(|m| matches(&a.labels, m)));
        let all_present = exp
            .alerts
            .iter()
            .all(|m| inc.alerts.iter().any(|a| matches(&a.labels, m)));
        if !all_matched || !all_present || inc.alerts.len() != exp.alerts.len() {
            failures.push(format!(
                "expect[{n}]: incident members differ: got [{}]",
                inc.alerts
                    .iter()
                    .map(|a| a.labels.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if let Some(root) = &exp.root {
            let got = &inc.root_cause.entity;
            if got.kind.as_str() != root.kind || got.name != root.name {
                failures.push(format!(
                    "expect[{n}]: root cause {} {}, got {} {} ({})",
                    root.kind,
                    root.name,
                    got.kind.as_str(),
                    got.name,
                    inc.root_cause.explanation
                ));
            }
        }
    }
    TestOutcome {
        name: test.name.clone(),
        failures,
    }
}
