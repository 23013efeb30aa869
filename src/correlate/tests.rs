//! Grouping and ranking scenarios on hand-written alerts.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::TimeZone;

use super::*;
use crate::domain::{AlertStatus, ClusterId};

fn t(sec: i64) -> Timestamp {
    chrono::Utc.timestamp_opt(1_700_000_000 + sec, 0).unwrap()
}

fn alert(cluster: &str, pairs: &[(&str, &str)], at: i64) -> AlertState {
    let mut labels: Labels = pairs.iter().copied().collect();
    labels.insert("cluster", cluster);
    AlertState {
        id: labels.fingerprint(),
        am_fingerprint: None,
        cluster: ClusterId::new(cluster),
        labels,
        annotations: Labels::new(),
        status: AlertStatus::Firing,
        starts_at: t(at),
        ends_at: None,
        generator_url: Default::default(),
        external_url: Default::default(),
        source: "test".into(),
        first_received: t(at),
        last_received: t(at),
        flaps: 0,
        previous_end: None,
        deliveries: 1,
    }
}

/// The labels of one kube-state-metrics series.
pub(super) fn series(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn topo() -> Arc<Topology> {
    topo_with(&[])
}

/// `topo()` with more `(pod, node, deployment)` placements in `shop`.
fn topo_with(extra: &[(&str, &str, &str)]) -> Arc<Topology> {
    let mut tp = Topology::default();
    for &(pod, node, owner) in [
        ("web-5d8f7c9b4-aaaaa", "n1", "web"),
        ("web-5d8f7c9b4-bbbbb", "n2", "web"),
        ("api-6c7d8e9f5-ccccc", "n1", "api"),
        ("db-0", "n2", "db"),
    ]
    .iter()
    .chain(extra)
    {
        tp.add_series(
            "kube_pod_info",
            &series(&[
                ("cluster", "c1"),
                ("namespace", "shop"),
                ("pod", pod),
                ("node", node),
            ]),
        );
        tp.add_series(
            "kube_pod_owner",
            &series(&[
                ("cluster", "c1"),
                ("namespace", "shop"),
                ("pod", pod),
                ("owner_kind", "Deployment"),
                ("owner_name", owner),
            ]),
        );
    }
    for (node, zone) in [("n1", "a"), ("n2", "a"), ("n3", "b")] {
        tp.add_series(
            "kube_node_labels",
            &series(&[
                ("cluster", "c1"),
                ("node", node),
                ("label_topology_kubernetes_io_zone", zone),
            ]),
        );
    }
    Arc::new(tp)
}

fn correlator() -> Correlator {
    let mut c = Correlator::new(CorrelateSettings::default());
    c.set_topology(topo());
    c
}

fn feed(c: &mut Correlator, a: &AlertState) -> Vec<IncidentEvent> {
    c.observe(a, Transition::New, a.first_received)
}

/// `a` as received at `at` (seconds), later than it started.
fn arriving(mut a: AlertState, at: i64) -> AlertState {
    a.first_received = t(at);
    a.last_received = t(at);
    a
}

/// KubePodNotReady for pod `name` of namespace `shop` in c1.
fn pod(name: &str, at: i64) -> AlertState {
    alert(
        "c1",
        &[
            ("alertname", "KubePodNotReady"),
            ("namespace", "shop"),
            ("pod", name),
        ],
        at,
    )
}

/// KubeNodeNotReady for `name` in c1.
fn node(name: &str, at: i64) -> AlertState {
    alert(
        "c1",
        &[("alertname", "KubeNodeNotReady"), ("node", name)],
        at,
    )
}

/// KubeDeploymentReplicasMismatch for `shop/web` in c1.
fn web_replicas_mismatch(at: i64) -> AlertState {
    alert(
        "c1",
        &[
            ("alertname", "KubeDeploymentReplicasMismatch"),
            ("namespace", "shop"),
            ("deployment", "web"),
        ],
        at,
    )
}

/// ServiceErrorRateHigh of `shop/checkout` in `cluster`.
fn checkout_errors(cluster: &str, at: i64) -> AlertState {
    alert(
        cluster,
        &[
            ("alertname", "ServiceErrorRateHigh"),
            ("namespace", "shop"),
            ("service", "checkout"),
        ],
        at,
    )
}

/// KubeDeploymentReplicasMismatch for `identity/auth` in `cluster`.
fn auth_mismatch(cluster: &str, at: i64) -> AlertState {
    alert(
        cluster,
        &[
            ("alertname", "KubeDeploymentReplicasMismatch"),
            ("namespace", "identity"),
            ("deployment", "auth"),
        ],
        at,
    )
}

/// The test topology, with `shop/checkout` depending on `web` (its own
/// cluster's) and on `identity/auth` in c9.
fn checkout_on_web_and_auth() -> Correlator {
    let mut rules = Rules::default();
    rules.add(
        rules::parse_rules(
            "services:\n  - name: checkout\n    namespace: shop\n    depends_on:\n      - name: web\n      - name: auth\n        namespace: identity\n        cluster: c9\n",
        )
        .unwrap(),
    );
    let mut c = Correlator::new(CorrelateSettings::from_rules(rules));
    c.set_topology(topo());
    c
}

/// The open incident that holds `a`.
fn open_incident_of<'a>(c: &'a Correlator, a: &AlertState) -> &'a Incident {
    c.incidents()
        .into_iter()
        .find(|i| i.is_open() && i.alerts.iter().any(|m| m.fingerprint == a.id))
        .unwrap()
}

#[test]
fn late_node_root_cause_attaches_and_wins() {
    let mut c = correlator();
    let td = alert(
        "c1",
        &[
            ("alertname", "TargetDown"),
            ("job", "node-exporter"),
            ("namespace", "monitoring"),
            ("service", "node-exporter"),
        ],
        0,
    );
    let p1 = alert(
        "c1",
        &[
            ("alertname", "KubePodNotReady"),
            ("namespace", "shop"),
            ("pod", "web-5d8f7c9b4-aaaaa"),
        ],
        60,
    );
    feed(&mut c, &td);
    feed(&mut c, &p1);
    assert_eq!(c.open_count(), 2, "nothing failing links them yet");
    let node = alert(
        "c1",
        &[("alertname", "KubeNodeNotReady"), ("node", "n1")],
        300,
    );
    let ev = feed(&mut c, &node);
    assert_eq!(c.open_count(), 1, "{ev:?}");
    let inc = c.incidents().into_iter().find(|i| i.is_open()).unwrap();
    assert_eq!(inc.alerts.len(), 3);
    assert_eq!(inc.root_cause.entity.kind, EntityKind::Node);
    assert_eq!(inc.root_cause.fingerprint, Some(node.id));
    assert!(
        inc.root_cause.explanation.contains("explains 3 of 3"),
        "{}",
        inc.root_cause.explanation
    );
    assert!(
        inc.root_cause
            .explanation
            .contains("TargetDown node-exporter"),
        "{}",
        inc.root_cause.explanation
    );
    // The surviving incident is the older one.
    assert!(ev
        .iter()
        .any(|e| matches!(e, IncidentEvent::Resolved { .. })));
    let older = incident_id(td.id, t(0)).min(incident_id(p1.id, t(60)));
    let _ = older;
    assert!(
        c.merged_into(&incident_id(p1.id, t(60))).is_some()
            || c.merged_into(&incident_id(td.id, t(0))).is_some()
    );
}

#[test]
fn two_node_failures_do_not_merge_through_a_shared_deployment() {
    let mut c = correlator();
    feed(
        &mut c,
        &alert(
            "c1",
            &[("alertname", "KubeNodeNotReady"), ("node", "n1")],
            0,
        ),
    );
    feed(
        &mut c,
        &alert(
            "c1",
            &[("alertname", "KubeNodeNotReady"), ("node", "n3")],
            0,
        ),
    );
    feed(
        &mut c,
        &alert(
            "c1",
            &[
                ("alertname", "KubePodNotReady"),
                ("namespace", "shop"),
                ("pod", "web-5d8f7c9b4-aaaaa"),
            ],
            60,
        ),
    );
    feed(
        &mut c,
        &alert(
            "c1",
            &[
                ("alertname", "KubeDeploymentReplicasMismatch"),
                ("namespace", "shop"),
                ("deployment", "web"),
            ],
            90,
        ),
    );
    assert_eq!(c.open_count(), 2);
    let unrelated = alert(
        "c1",
        &[
            ("alertname", "KubePodCrashLooping"),
            ("namespace", "other"),
            ("pod", "x-5d8f7c9b4-zzzzz"),
        ],
        100,
    );
    feed(&mut c, &unrelated);
    assert_eq!(c.open_count(), 3, "same cluster, unrelated: separate");
}

#[test]
fn zone_is_inferred_from_two_failing_nodes() {
    let mut c = correlator();
    feed(
        &mut c,
        &alert(
            "c1",
            &[("alertname", "KubeNodeNotReady"), ("node", "n1")],
            0,
        ),
    );
    feed(
        &mut c,
        &alert(
            "c1",
            &[("alertname", "KubeNodeNotReady"), ("node", "n2")],
            10,
        ),
    );
    assert_eq!(c.open_count(), 1);
    let inc = c.incidents().into_iter().find(|i| i.is_open()).unwrap();
    assert_eq!(inc.root_cause.entity.kind, EntityKind::Zone);
    assert_eq!(inc.root_cause.fingerprint, None);
}

/// Auth in c1 fails about -8m. Its dependents' error-rate alerts (`for: 5m`
/// when declared) fire at 0 and 5 s; the auth Deployment's replicas mismatch
/// (`for: 15m`, shipped) fires at 7 min. Returns the
/// correlator after all three, with the error-rate rule declared or not.
fn dependency_storm(declare_for: bool) -> Correlator {
    let mut rules = Rules::default();
    let alerts = if declare_for {
        "alerts:\n  - {alert: ServiceErrorRateHigh, for: 5m}\n"
    } else {
        ""
    };
    rules.add(
        rules::parse_rules(&format!(
            "{alerts}services:\n  - name: checkout\n    namespace: shop\n    depends_on:\n      - name: auth\n        namespace: identity\n        cluster: c1\n",
        ))
        .unwrap(),
    );
    let mut c = Correlator::new(CorrelateSettings::from_rules(rules));
    for (cluster, at) in [("c2", 0), ("c3", 5)] {
        feed(&mut c, &checkout_errors(cluster, at));
    }
    assert_eq!(c.open_count(), 2);
    feed(&mut c, &auth_mismatch("c1", 420));
    c
}

#[test]
fn dependency_down_explains_dependents_across_clusters() {
    let c = dependency_storm(true);
    assert_eq!(c.open_count(), 1);
    let inc = c.incidents().into_iter().find(|i| i.is_open()).unwrap();
    assert_eq!(inc.root_cause.entity.name, "auth");
    assert_eq!(inc.clusters.len(), 3);
}

#[test]
fn onsets_subtract_each_rules_for_from_starts_at() {
    // Without the error-rate rule's `for`, its onset is taken as its
    // startsAt: it seems to begin eight minutes after the dependency failed.
    // Its condition may have begun up to that unknown `for` earlier, so a
    // caller's alert still joins a dependency that failed within the
    // grouping window before it.
    let c = dependency_storm(false);
    assert_eq!(c.open_count(), 1);
    let rules = Rules::default();
    assert_eq!(rules.pending_for("KubeNodeNotReady").num_minutes(), 15);
    assert_eq!(rules.pending_for("TargetDown").num_minutes(), 10);
    assert_eq!(rules.pending_for("NoSuchAlert").num_seconds(), 0);
}

#[test]
fn resolves_after_hold_and_refire_opens_a_new_incident() {
    let mut c = correlator();
    let mut a = alert(
        "c1",
        &[("alertname", "KubeNodeNotReady"), ("node", "n1")],
        0,
    );
    feed(&mut c, &a);
    a.status = AlertStatus::Resolved;
    a.ends_at = Some(t(100));
    let ev = c.observe(&a, Transition::Resolved, t(100));
    assert!(matches!(
        ev[0],
        IncidentEvent::Updated {
            change: Change::Members,
            ..
        }
    ));
    assert_eq!(c.next_deadline(), Some(t(400)));
    assert!(c.tick(t(399)).is_empty());
    assert_eq!(c.tick(t(400)).len(), 1);
    a.status = AlertStatus::Firing;
    a.ends_at = None;
    a.starts_at = t(1000);
    let ev = c.observe(&a, Transition::Refired, t(1000));
    assert!(matches!(ev[0], IncidentEvent::Opened { .. }));
    assert_eq!(c.incidents().len(), 2);
}

#[test]
fn a_flapping_alert_keeps_its_incident_open_between_episodes() {
    // CPUThrottlingHigh (`for: 15m`, shipped) whose condition clears for a
    // few minutes at a time: each episode fires 15 minutes after the
    // condition returns, well past `resolve_hold`.
    let mut c = correlator();
    let mut a = alert(
        "c1",
        &[
            ("alertname", "CPUThrottlingHigh"),
            ("namespace", "shop"),
            ("pod", "web-5d8f7c9b4-aaaaa"),
        ],
        0,
    );
    feed(&mut c, &a);
    let end = |c: &mut Correlator, a: &mut AlertState, at: i64| {
        a.status = AlertStatus::Resolved;
        a.ends_at = Some(t(at));
        c.observe(a, Transition::Resolved, t(at))
    };
    let refire = |c: &mut Correlator, a: &mut AlertState, starts: i64, received: i64| {
        a.previous_end = a.ends_at;
        a.flaps += 1;
        a.status = AlertStatus::Firing;
        a.ends_at = None;
        a.starts_at = t(starts);
        c.observe(a, Transition::Refired, t(received))
    };
    end(&mut c, &mut a, 120);
    // No sign of flapping yet: resolved after the hold.
    assert_eq!(c.next_deadline(), Some(t(420)));
    assert_eq!(c.tick(t(420)).len(), 1);
    // The condition came back 2 minutes after it cleared (onset 1140 - 900):
    // a flap. It fired at 1140 and arrived at 1300, 1180s after the end.
    let ev = refire(&mut c, &mut a, 1140, 1300);
    assert!(matches!(ev[0], IncidentEvent::Opened { .. }));
    let second = ev[0].id().to_owned();
    end(&mut c, &mut a, 1400);
    assert_eq!(c.next_deadline(), Some(t(1400 + 300 + 1180)));
    assert!(c.tick(t(2500)).is_empty());
    // The next episode rejoins the incident instead of opening another.
    let ev = refire(&mut c, &mut a, 2400, 2500);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].id(), second);
    assert!(matches!(ev[0], IncidentEvent::Updated { .. }));
    assert_eq!(c.incidents().len(), 2);
    end(&mut c, &mut a, 2600);
    assert_eq!(c.tick(t(10_000)).len(), 1);
    assert_eq!(c.open_count(), 0);

    // A re-fire whose condition stayed clear longer than the rule's `for`
    // is a new problem, held only `resolve_hold`.
    let ev = refire(&mut c, &mut a, 10_000 + 2000, 12_100);
    assert!(matches!(ev[0], IncidentEvent::Opened { .. }));
    end(&mut c, &mut a, 12_200);
    assert_eq!(c.next_deadline(), Some(t(12_500)));
    c.check_consistency().unwrap();
}

#[test]
fn arrivals_far_above_baseline_put_a_cluster_in_storm_mode() {
    let mut c = correlator();
    // A quiet hour: one alert every ten minutes.
    for i in 0..6 {
        let a = alert(
            "c1",
            &[
                ("alertname", "KubeJobFailed"),
                ("namespace", "batch"),
                ("job_name", &format!("j{i}")),
            ],
            i * 600,
        );
        feed(&mut c, &a);
    }
    assert!(c.storm_clusters().is_empty());
    // Then 40 new alerts within one minute.
    let mut last = None;
    for i in 0..40 {
        let a = alert(
            "c1",
            &[
                ("alertname", "KubePodCrashLooping"),
                ("namespace", "shop"),
                ("pod", &format!("p{i}")),
            ],
            3600 + i,
        );
        feed(&mut c, &a);
        last = Some(a);
    }
    assert_eq!(c.storm_clusters(), vec!["c1".to_owned()]);
    assert_eq!(c.storm_history(), vec!["c1".to_owned()]);
    let last = last.unwrap();
    let inc = c
        .incidents()
        .into_iter()
        .find(|i| i.alerts.iter().any(|a| a.fingerprint == last.id))
        .unwrap();
    assert!(inc.storm);
}

#[test]
fn two_clusters_in_a_storm_at_once_put_the_fleet_in_storm_mode() {
    let mut c = correlator();
    for (k, cluster) in ["c1", "c2"].into_iter().enumerate() {
        assert!(!c.fleet_storm() || k > 0);
        for i in 0..12 {
            let a = alert(
                cluster,
                &[
                    ("alertname", "KubePodCrashLooping"),
                    ("namespace", "shop"),
                    ("pod", &format!("p{i}")),
                ],
                60 * k as i64 + i,
            );
            feed(&mut c, &a);
        }
    }
    assert_eq!(c.storm_history(), vec!["c1".to_owned(), "c2".to_owned()]);
    assert!(c.fleet_storm());
    assert!(c.fleet_storm_history());
}

#[test]
fn a_symptom_that_began_long_after_its_node_failed_is_not_about_it() {
    let mut c = correlator();
    let node = alert(
        "c1",
        &[("alertname", "KubeNodeNotReady"), ("node", "n1")],
        0,
    );
    let pod = |at: i64| {
        alert(
            "c1",
            &[
                ("alertname", "KubePodNotReady"),
                ("namespace", "shop"),
                ("pod", "web-5d8f7c9b4-aaaaa"),
            ],
            at,
        )
    };
    let late = alert(
        "c1",
        &[
            ("alertname", "KubeContainerWaiting"),
            ("namespace", "shop"),
            ("pod", "api-6c7d8e9f5-ccccc"),
        ],
        1800,
    );
    feed(&mut c, &node);
    let p = pod(60);
    feed(&mut c, &p);
    feed(&mut c, &late);
    assert_eq!(c.open_count(), 2);
    let inc = c
        .incidents()
        .into_iter()
        .find(|i| i.alerts.iter().any(|a| a.fingerprint == node.id))
        .unwrap();
    assert_eq!(
        inc.alerts.len(),
        2,
        "the pod that failed with the node joins"
    );
}

#[test]
fn informational_alerts_stand_alone() {
    let mut c = correlator();
    let node = alert(
        "c1",
        &[("alertname", "KubeNodeNotReady"), ("node", "n1")],
        0,
    );
    let throttled = alert(
        "c1",
        &[
            ("alertname", "CPUThrottlingHigh"),
            ("namespace", "shop"),
            ("pod", "web-5d8f7c9b4-aaaaa"),
        ],
        60,
    );
    feed(&mut c, &node);
    feed(&mut c, &throttled);
    assert_eq!(c.open_count(), 2);
}

#[test]
fn a_workload_failing_on_healthy_nodes_keeps_its_pod_when_the_node_fails() {
    let mut c = correlator();
    // web crashes on both of its nodes; then n1 goes down.
    let stuck = alert(
        "c1",
        &[
            ("alertname", "KubeDeploymentRolloutStuck"),
            ("namespace", "shop"),
            ("deployment", "web"),
        ],
        0,
    );
    let crash = |pod: &str, at: i64| {
        alert(
            "c1",
            &[
                ("alertname", "KubePodCrashLooping"),
                ("namespace", "shop"),
                ("pod", pod),
            ],
            at,
        )
    };
    let a = crash("web-5d8f7c9b4-aaaaa", 30);
    let b = crash("web-5d8f7c9b4-bbbbb", 40);
    let x = crash("web-5d8f7c9b4-xxxxx", 50);
    feed(&mut c, &stuck);
    feed(&mut c, &a);
    feed(&mut c, &b);
    feed(&mut c, &x);
    assert_eq!(c.open_count(), 1, "the rollout explains its pods");
    let api = alert(
        "c1",
        &[
            ("alertname", "KubePodNotReady"),
            ("namespace", "shop"),
            ("pod", "api-6c7d8e9f5-ccccc"),
        ],
        100,
    );
    let node = alert(
        "c1",
        &[("alertname", "KubeNodeNotReady"), ("node", "n1")],
        90,
    );
    feed(&mut c, &api);
    feed(&mut c, &node);
    assert_eq!(
        c.open_count(),
        2,
        "the node does not take the rollout's pod"
    );
    let n = c
        .incidents()
        .into_iter()
        .find(|i| i.alerts.iter().any(|m| m.fingerprint == node.id))
        .unwrap();
    assert_eq!(n.alerts.len(), 2);
    assert!(n.alerts.iter().any(|m| m.fingerprint == api.id));
}

/// Alertmanager groups kube-prometheus alerts by namespace, so a Deployment's
/// alerts (namespace `shop`) often arrive before its node's (`monitoring`).
#[test]
fn a_workload_alert_that_came_before_its_node_explains_no_later_pods() {
    let mut c = correlator();
    // n1 goes down at 0; its pod and the Deployment's replica count follow,
    // and reach stormcast before the node's own alert.
    let p1 = arriving(pod("web-5d8f7c9b4-aaaaa", 60), 960);
    let mismatch = arriving(web_replicas_mismatch(90), 990);
    let n1 = arriving(node("n1", 0), 1000);
    // n2 fails on its own four minutes later: its pod's alert arrives first.
    let p2 = arriving(pod("web-5d8f7c9b4-bbbbb", 300), 1200);
    let n2 = arriving(node("n2", 250), 1210);
    for a in [&p1, &mismatch, &n1, &p2, &n2] {
        feed(&mut c, a);
    }
    assert_eq!(open_incident_of(&c, &p1).id, open_incident_of(&c, &n1).id);
    assert_eq!(
        open_incident_of(&c, &mismatch).id,
        open_incident_of(&c, &n1).id,
        "the lost replica is n1's"
    );
    assert_eq!(open_incident_of(&c, &p2).id, open_incident_of(&c, &n2).id);
    assert_ne!(
        open_incident_of(&c, &n1).id,
        open_incident_of(&c, &n2).id,
        "the replica count mirrors n1: it does not pull n2's pod"
    );
}

#[test]
fn a_node_that_fails_again_after_an_old_problem_counts_for_its_zone() {
    let mut c = correlator();
    // n1's disk filled up and was cleaned: resolved, but within the grouping
    // window it still marks n1 failing.
    let mut disk = alert(
        "c1",
        &[
            ("alertname", "NodeFilesystemAlmostOutOfSpace"),
            ("instance", "n1"),
            ("job", "node-exporter"),
            ("namespace", "monitoring"),
        ],
        0,
    );
    feed(&mut c, &disk);
    disk.status = AlertStatus::Resolved;
    disk.ends_at = Some(t(1500));
    c.observe(&disk, Transition::Resolved, t(1500));
    // Then zone a (n1, n2) goes down.
    let n2 = node("n2", 2000);
    let n1 = node("n1", 2010);
    feed(&mut c, &n2);
    feed(&mut c, &n1);
    assert_eq!(
        open_incident_of(&c, &n1).id,
        open_incident_of(&c, &n2).id,
        "both nodes of zone a failed together"
    );
    assert_eq!(
        open_incident_of(&c, &n1).root_cause.entity.kind,
        EntityKind::Zone
    );
    assert_ne!(
        open_incident_of(&c, &disk).id,
        open_incident_of(&c, &n1).id,
        "the old disk problem stays apart"
    );
}

#[test]
fn a_pod_does_not_take_a_replica_alert_that_began_long_before_it() {
    let mut c = correlator();
    let mismatch = web_replicas_mismatch(0);
    let pod = pod("web-5d8f7c9b4-aaaaa", 1300);
    feed(&mut c, &mismatch);
    feed(&mut c, &pod);
    assert_eq!(c.open_count(), 2, "twenty minutes apart: two problems");
}

#[test]
fn an_image_pull_failure_is_not_a_symptom_of_its_node() {
    let mut c = correlator();
    let node = node("n1", 0);
    let pod = pod("web-5d8f7c9b4-aaaaa", 40);
    // rules: KubeContainerWaiting is `symptom_of: [workload]`.
    let waiting = alert(
        "c1",
        &[
            ("alertname", "KubeContainerWaiting"),
            ("namespace", "shop"),
            ("pod", "api-6c7d8e9f5-ccccc"),
            ("reason", "ImagePullBackOff"),
        ],
        60,
    );
    for a in [&node, &pod, &waiting] {
        feed(&mut c, a);
    }
    assert_eq!(c.open_count(), 2);
    let inc = c
        .incidents()
        .into_iter()
        .find(|i| i.alerts.iter().any(|a| a.fingerprint == waiting.id))
        .unwrap();
    assert_eq!(inc.alerts.len(), 1, "{:?}", inc.root_cause.explanation);
}

/// A workload inferred failing from a pod and another pod that was already
/// explained (by an earlier replica alert) groups nothing with that pod: the
/// pod is no symptom linked through the workload, and its node failing under
/// it takes it.
#[test]
fn a_pod_standing_alone_for_an_inferred_workload_joins_its_failing_node() {
    let mut c = correlator();
    let mismatch = web_replicas_mismatch(0);
    // web loses two replicas (one on n2, one not yet scheduled); later its
    // pod on n1 fails when n1 goes down, whose alert arrives last.
    let b = arriving(pod("web-5d8f7c9b4-bbbbb", 250), 300);
    let x = arriving(pod("web-5d8f7c9b4-xxxxx", 260), 310);
    let a = arriving(pod("web-5d8f7c9b4-aaaaa", 400), 450);
    let n1 = arriving(node("n1", 380), 1300);
    for al in [&mismatch, &b, &x, &a, &n1] {
        feed(&mut c, al);
    }
    assert_eq!(
        open_incident_of(&c, &b).id,
        open_incident_of(&c, &mismatch).id
    );
    assert_eq!(
        open_incident_of(&c, &x).id,
        open_incident_of(&c, &mismatch).id
    );
    assert_eq!(
        open_incident_of(&c, &a).id,
        open_incident_of(&c, &n1).id,
        "the pod is its node's"
    );
    assert_ne!(
        open_incident_of(&c, &a).id,
        open_incident_of(&c, &mismatch).id
    );
}

#[test]
fn a_caller_that_joined_through_a_replica_count_mirroring_its_node_leaves_for_its_own_dependency() {
    let mut c = checkout_on_web_and_auth();
    // checkout's error rate rises with auth (c9) failing; web loses its
    // replica on n1 at about the same time, because n1 went down. The alerts
    // arrive in the order Alertmanager's namespace groups happen to send them.
    // Times are firing times: kube-prometheus' rules have `for: 15m`, the
    // error rate declares none here.
    let errors = arriving(checkout_errors("c1", 100), 400);
    let mismatch = arriving(web_replicas_mismatch(960), 1000);
    let p1 = arriving(pod("web-5d8f7c9b4-aaaaa", 950), 1010);
    feed(&mut c, &errors);
    feed(&mut c, &mismatch);
    feed(&mut c, &p1);
    assert_eq!(
        open_incident_of(&c, &errors).id,
        open_incident_of(&c, &mismatch).id,
        "nothing tells the lost replica from a failing dependency yet"
    );
    let n1 = arriving(node("n1", 900), 1600);
    let events = feed(&mut c, &n1);
    let node_incident = open_incident_of(&c, &n1).id.clone();
    assert_eq!(open_incident_of(&c, &mismatch).id, node_incident);
    let released = open_incident_of(&c, &errors).id.clone();
    assert_ne!(released, node_incident, "the replica count mirrors n1");
    assert!(
        events.contains(&IncidentEvent::Opened {
            id: released.clone()
        }),
        "{events:?}"
    );
    assert_eq!(open_incident_of(&c, &errors).alerts.len(), 1);
    assert!(open_incident_of(&c, &n1)
        .alerts
        .iter()
        .all(|a| a.fingerprint != errors.id));
    let auth = arriving(auth_mismatch("c9", 990), 1700);
    feed(&mut c, &auth);
    assert_eq!(
        open_incident_of(&c, &errors).id,
        open_incident_of(&c, &auth).id,
        "auth explains the error rate"
    );
    assert_ne!(open_incident_of(&c, &auth).id, node_incident);
}

#[test]
fn a_zone_node_whose_own_alert_came_first_joins_nodes_inferred_from_pods() {
    let mut tp = Topology::default();
    for n in ["m1", "m2", "m3", "m4"] {
        tp.add_series(
            "kube_node_labels",
            &series(&[
                ("cluster", "c1"),
                ("node", n),
                ("label_topology_kubernetes_io_zone", "z"),
            ]),
        );
        for p in ["x", "y"] {
            tp.add_series(
                "kube_pod_info",
                &series(&[
                    ("cluster", "c1"),
                    ("namespace", "shop"),
                    ("pod", &format!("{n}-{p}")),
                    ("node", n),
                ]),
            );
        }
    }
    let mut c = Correlator::new(CorrelateSettings::default());
    c.set_topology(Arc::new(tp));
    // Zone z goes down at 0. m1's NotReady comes first; m2 and m3 are known
    // from their pods, each reported a scrape or two apart.
    let m1 = node("m1", 0);
    feed(&mut c, &m1);
    let mut last = None;
    for (n, first, second) in [("m2", 40, 130), ("m3", 45, 135)] {
        feed(&mut c, &pod(&format!("{n}-x"), first));
        let p = pod(&format!("{n}-y"), second);
        feed(&mut c, &p);
        last = Some(p);
    }
    let last = last.unwrap();
    assert_eq!(
        open_incident_of(&c, &m1).id,
        open_incident_of(&c, &last).id,
        "m1 failed with the nodes its zone was inferred from"
    );
    assert_eq!(
        open_incident_of(&c, &m1).root_cause.entity.kind,
        EntityKind::Zone
    );
}

#[test]
fn a_replica_count_moves_to_the_pod_that_failed_closer_to_it() {
    let mut c = correlator();
    // n1 goes down at 0 and n2, on its own, at 200; web loses its replica
    // on n2. The replica count reaches stormcast before n2's alerts, while
    // the only failing web pod known is n1's. Times are firing times
    // (`for: 15m`).
    let n1 = arriving(node("n1", 900), 1000);
    let pa = arriving(pod("web-5d8f7c9b4-aaaaa", 940), 1010);
    let mismatch = arriving(web_replicas_mismatch(1160), 1200);
    let n2 = arriving(node("n2", 1100), 1300);
    let pb = arriving(pod("web-5d8f7c9b4-bbbbb", 1150), 1310);
    for a in [&n1, &pa, &mismatch] {
        feed(&mut c, a);
    }
    assert_eq!(
        open_incident_of(&c, &mismatch).id,
        open_incident_of(&c, &n1).id,
        "the only failing web pod known yet is n1's"
    );
    feed(&mut c, &n2);
    feed(&mut c, &pb);
    assert_eq!(open_incident_of(&c, &pb).id, open_incident_of(&c, &n2).id);
    assert_eq!(
        open_incident_of(&c, &mismatch).id,
        open_incident_of(&c, &n2).id,
        "the replica count is about n2's pod"
    );
    assert_ne!(open_incident_of(&c, &n1).id, open_incident_of(&c, &n2).id);
    assert_eq!(open_incident_of(&c, &n1).alerts.len(), 2);
}

/// What `any_storm` can send: alerts on the test topology and a declared
/// dependency, by kind.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Node(usize),
    Pod(usize),
    WebMismatch,
    CheckoutErrors,
    AuthMismatch,
}

fn storm_alert(kind: Kind, starts: i64) -> AlertState {
    const PODS: [&str; 4] = [
        "web-5d8f7c9b4-aaaaa",
        "web-5d8f7c9b4-bbbbb",
        "api-6c7d8e9f5-ccccc",
        "db-0",
    ];
    match kind {
        Kind::Node(n) => node(["n1", "n2", "n3"][n % 3], starts),
        Kind::Pod(p) => pod(PODS[p % 4], starts),
        Kind::WebMismatch => web_replicas_mismatch(starts),
        Kind::CheckoutErrors => checkout_errors("c1", starts),
        Kind::AuthMismatch => auth_mismatch("c9", starts),
    }
}

fn any_kind() -> impl proptest::strategy::Strategy<Value = Kind> {
    use proptest::prelude::*;
    prop_oneof![
        (0usize..3).prop_map(Kind::Node),
        (0usize..4).prop_map(Kind::Pod),
        Just(Kind::WebMismatch),
        Just(Kind::CheckoutErrors),
        Just(Kind::AuthMismatch),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    /// Storms on one small topology, in any arrival order, with resolutions
    /// and time passing: whatever links are made and revised, every open
    /// incident stays one component joined by its links, holding exactly
    /// its members, and no alert is lost.
    #[test]
    fn incidents_components_and_links_stay_consistent(
        events in proptest::collection::vec(
            (any_kind(), 0i64..1500, 0i64..900, proptest::option::of(60i64..1800)),
            1..30,
        ),
    ) {
        let mut c = checkout_on_web_and_auth();
        // (arrival, alert, resolved after): each alert fires once, the
        // first time its identity comes up.
        let mut seen = std::collections::HashSet::new();
        let mut arrivals: Vec<(i64, AlertState, Option<i64>)> = Vec::new();
        for (kind, onset, delay, resolves) in events {
            let a = storm_alert(kind, onset + 900);
            if seen.insert(a.id) {
                arrivals.push((onset + 900 + delay, arriving(a, onset + 900 + delay), resolves));
            }
        }
        arrivals.sort_by_key(|(at, a, _)| (*at, a.id));
        let mut resolutions: Vec<(i64, AlertState)> = Vec::new();
        for (at, a, resolves) in &arrivals {
            // Resolutions due by now come first, as time passes.
            resolutions.sort_by_key(|(t, r)| (*t, r.id));
            while resolutions.first().is_some_and(|(t, _)| t <= at) {
                let (t, r) = resolutions.remove(0);
                c.observe(&r, Transition::Resolved, super::tests::t(t));
                c.tick(super::tests::t(t));
                proptest::prop_assert_eq!(c.check_consistency(), Ok(()));
            }
            c.observe(a, Transition::New, super::tests::t(*at));
            proptest::prop_assert_eq!(c.check_consistency(), Ok(()));
            if let Some(after) = resolves {
                let mut r = a.clone();
                r.status = AlertStatus::Resolved;
                r.ends_at = Some(super::tests::t(at + after));
                resolutions.push((at + after, r));
            }
        }
        for (a_at, a, _) in &arrivals {
            let held = c
                .incidents()
                .into_iter()
                .any(|i| i.alerts.iter().any(|m| m.fingerprint == a.id));
            proptest::prop_assert!(held, "alert of {} lost", a_at);
        }
    }
}

/// The test topology, with the Service backed by `shop/web` depending on
/// `shop/db`, and readiness probes that check dependencies.
fn web_on_db() -> Correlator {
    let mut rules = Rules::default();
    rules.add(
        rules::parse_rules(
            "alerts:\n  - {alert: KubePodNotReady, weight: 15, symptom_of: [node, workload, dependency], for: 15m}\nservices:\n  - name: web\n    namespace: shop\n    depends_on:\n      - name: db\n",
        )
        .unwrap(),
    );
    let mut c = Correlator::new(CorrelateSettings::from_rules(rules));
    c.set_topology(topo());
    c
}

/// The `shop/db` service's own alert: the database is down.
fn db_down(at: i64) -> AlertState {
    alert(
        "c1",
        &[
            ("alertname", "DatabaseDown"),
            ("namespace", "shop"),
            ("service", "db"),
        ],
        at,
    )
}

#[test]
fn a_callers_pod_not_ready_joins_the_dependency_that_is_down() {
    // The database fails at 0; a web pod's readiness probe, which checks
    // it, fails 20 s later and KubePodNotReady fires 15 minutes after that.
    let mut c = web_on_db();
    let db = db_down(0);
    feed(&mut c, &db);
    let p = arriving(pod("web-5d8f7c9b4-aaaaa", 920), 950);
    feed(&mut c, &p);
    assert_eq!(c.open_count(), 1);
    let inc = open_incident_of(&c, &p);
    assert!(inc.alerts.iter().any(|m| m.fingerprint == db.id));
    assert_eq!(inc.root_cause.entity.name, "db");
    c.check_consistency().unwrap();

    // A crash loop is not a readiness probe: it is no symptom of the
    // database (liveness probes do not check dependencies).
    let crash = arriving(
        alert(
            "c1",
            &[
                ("alertname", "KubePodCrashLooping"),
                ("namespace", "shop"),
                ("pod", "web-5d8f7c9b4-bbbbb"),
            ],
            925,
        ),
        950,
    );
    feed(&mut c, &crash);
    assert!(!open_incident_of(&c, &crash)
        .alerts
        .iter()
        .any(|m| m.fingerprint == db.id));
}

#[test]
fn a_callers_pod_on_a_failing_node_stays_with_its_node() {
    for node_first in [true, false] {
        let mut c = web_on_db();
        let db = db_down(0);
        feed(&mut c, &db);
        let n1 = arriving(node("n1", 910), 960);
        let p = arriving(pod("web-5d8f7c9b4-aaaaa", 920), 950);
        if node_first {
            feed(&mut c, &arriving(n1.clone(), 940));
            feed(&mut c, &p);
        } else {
            // The pod joined the database first; its node failing with it
            // takes it, as had the node's alert come first.
            feed(&mut c, &p);
            assert!(open_incident_of(&c, &p)
                .alerts
                .iter()
                .any(|m| m.fingerprint == db.id));
            feed(&mut c, &n1);
        }
        let inc = open_incident_of(&c, &p);
        assert!(
            inc.alerts.iter().any(|m| m.fingerprint == n1.id),
            "node first: {node_first}"
        );
        assert!(
            !inc.alerts.iter().any(|m| m.fingerprint == db.id),
            "node first: {node_first}"
        );
        assert_eq!(c.open_count(), 2);
        c.check_consistency().unwrap();
    }
}

#[test]
fn a_pod_that_fails_with_its_node_is_the_nodes_while_its_workload_fails_elsewhere() {
    // The database goes down at 0 and web's pods on n2 and n3 go NotReady
    // with it: web fails on healthy nodes. Moments later n1 is lost, and
    // web's pod there goes NotReady together with it: the node lifecycle
    // controller marked it so with its node.
    let mut c = web_on_db();
    c.set_topology(topo_with(&[("web-5d8f7c9b4-ddddd", "n3", "web")]));
    let db = db_down(0);
    feed(&mut c, &db);
    feed(&mut c, &arriving(pod("web-5d8f7c9b4-bbbbb", 920), 950));
    feed(&mut c, &arriving(pod("web-5d8f7c9b4-ddddd", 925), 950));
    assert_eq!(c.open_count(), 1, "web's pods join the database");
    let n1 = arriving(node("n1", 940), 970);
    feed(&mut c, &n1);
    let p = arriving(pod("web-5d8f7c9b4-aaaaa", 950), 980);
    feed(&mut c, &p);
    let inc = open_incident_of(&c, &p);
    assert!(inc.alerts.iter().any(|m| m.fingerprint == n1.id));
    assert!(!inc.alerts.iter().any(|m| m.fingerprint == db.id));
    assert_eq!(c.open_count(), 2);
    c.check_consistency().unwrap();
}

#[test]
fn a_service_joins_the_workload_its_endpoints_list_and_the_explanation_says_how() {
    // `checkout-api` is served by the Deployment `web` (its Endpoints list
    // web's pod IPs); `web` is also the Service of the same name.
    let mut tp = (*topo()).clone();
    for (pod, ip) in [
        ("web-5d8f7c9b4-aaaaa", "10.0.0.1"),
        ("web-5d8f7c9b4-bbbbb", "10.0.0.2"),
    ] {
        tp.add_series(
            "kube_pod_info",
            &series(&[
                ("cluster", "c1"),
                ("namespace", "shop"),
                ("pod", pod),
                ("node", "n1"),
                ("pod_ip", ip),
            ]),
        );
        tp.add_series(
            "kube_endpoint_address",
            &series(&[
                ("cluster", "c1"),
                ("namespace", "shop"),
                ("endpoint", "checkout-api"),
                ("ip", ip),
                ("ready", "false"),
            ]),
        );
    }
    let mut c = Correlator::new(CorrelateSettings::default());
    c.set_topology(Arc::new(tp));
    let service = |name: &str, at: i64| {
        alert(
            "c1",
            &[
                ("alertname", "ServiceErrorRateHigh"),
                ("namespace", "shop"),
                ("service", name),
            ],
            at,
        )
    };
    feed(&mut c, &service("checkout-api", 0));
    feed(&mut c, &service("web", 20));
    let rollout = alert(
        "c1",
        &[
            ("alertname", "KubeDeploymentRolloutStuck"),
            ("namespace", "shop"),
            ("deployment", "web"),
        ],
        30,
    );
    feed(&mut c, &rollout);
    assert_eq!(c.open_count(), 1);
    let inc = c.incidents().into_iter().find(|i| i.is_open()).unwrap();
    assert_eq!(inc.root_cause.fingerprint, Some(rollout.id));
    let why = &inc.root_cause.explanation;
    assert!(
        why.contains("serves service checkout-api (its Endpoints list the pods)"),
        "{why}"
    );
    assert!(
        why.contains("service web (same name, no endpoint series)"),
        "{why}"
    );
}

#[test]
fn a_readiness_alert_reaches_a_dependency_through_services_known_by_their_endpoints() {
    // `storefront` depends on `orders-db`. Neither shares a name with its
    // workload: storefront's EndpointSlice lists web's pods, orders-db's
    // lists db's. A web pod's readiness (which checks the database) joins
    // db's failure through both links.
    let mut rules = Rules::default();
    rules.add(
        rules::parse_rules(
            "alerts:\n  - {alert: KubePodNotReady, weight: 15, symptom_of: [node, workload, dependency], for: 15m}\nservices:\n  - name: storefront\n    namespace: shop\n    depends_on:\n      - name: orders-db\n",
        )
        .unwrap(),
    );
    let mut tp = (*topo()).clone();
    for (slice, pod) in [
        ("storefront-h7x2q", "web-5d8f7c9b4-aaaaa"),
        ("storefront-h7x2q", "web-5d8f7c9b4-bbbbb"),
        ("orders-db-m4n5p", "db-0"),
    ] {
        tp.add_series(
            "kube_endpointslice_endpoints",
            &series(&[
                ("cluster", "c1"),
                ("namespace", "shop"),
                ("endpointslice", slice),
                ("targetref_kind", "Pod"),
                ("targetref_name", pod),
            ]),
        );
    }
    let mut c = Correlator::new(CorrelateSettings::from_rules(rules));
    c.set_topology(Arc::new(tp));
    let db = alert(
        "c1",
        &[
            ("alertname", "KubeDeploymentRolloutStuck"),
            ("namespace", "shop"),
            ("deployment", "db"),
        ],
        900,
    );
    // The rollout (`for: 15m`) began at 0, the pod's readiness (15m) at 20 s.
    feed(&mut c, &db);
    let p = arriving(pod("web-5d8f7c9b4-aaaaa", 920), 950);
    feed(&mut c, &p);
    assert_eq!(c.open_count(), 1);
    let inc = open_incident_of(&c, &p);
    assert!(inc.alerts.iter().any(|m| m.fingerprint == db.id));
    assert_eq!(inc.root_cause.entity.name, "db");
    c.check_consistency().unwrap();
}
