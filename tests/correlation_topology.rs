//! Topology from kube-state-metrics query bodies (`replay --topology`) joins
//! alerts that share no labels; broken topology degrades to labels only; bad
//! rule files are refused with file, line and reason.

use std::path::Path;

use stormcast::app::{self, ReplayOptions};
use stormcast::config::Overrides;

fn line(at: &str, alerts: &str) -> String {
    format!(
        r#"{{"at":"{at}","source":"am","payload":{{"version":"4","groupKey":"{{}}:{{}}","status":"firing","receiver":"stormcast","groupLabels":{{}},"commonLabels":{{}},"commonAnnotations":{{}},"externalURL":"http://am","alerts":[{alerts}]}}}}"#
    )
}

fn alert(labels: &str, starts: &str) -> String {
    format!(
        r#"{{"status":"firing","labels":{{{labels}}},"annotations":{{}},"startsAt":"{starts}","endsAt":"0001-01-01T00:00:00Z","generatorURL":"","fingerprint":""}}"#
    )
}

fn storm() -> String {
    // A pod alert first (no node label), then its node: only kube_pod_info
    // says they are related.
    let pod = alert(
        r#""alertname":"KubePodNotReady","cluster":"prod-bj-1","namespace":"shop","pod":"frontend-k26hp59727-fn884","severity":"warning""#,
        "2026-01-01T00:00:00Z",
    );
    let node = alert(
        r#""alertname":"KubeNodeNotReady","cluster":"prod-bj-1","node":"prod-bj-1-node04","severity":"warning""#,
        "2026-01-01T00:01:00Z",
    );
    format!(
        "{}\n{}\n",
        line("2026-01-01T00:15:30Z", &pod),
        line("2026-01-01T00:16:30Z", &node)
    )
}

fn opts() -> ReplayOptions {
    ReplayOptions {
        input: "-".into(),
        drain: chrono::Duration::hours(1),
        progress: false,
    }
}

#[test]
fn kube_pod_info_joins_a_pod_alert_to_its_node() {
    let mut loaded = app::load(None, &Overrides::default()).expect("default config");
    app::load_topology_dir(&mut loaded, Path::new("testdata/topology"));
    let (result, rejected) = app::replay_text(&loaded, &storm(), &opts()).unwrap();
    assert!(rejected.is_empty(), "{rejected:?}");
    let incidents: Vec<_> = result
        .incidents
        .iter()
        .filter(|i| !i.alerts.is_empty())
        .collect();
    assert_eq!(incidents.len(), 1, "{incidents:#?}");
    let root = &incidents[0].root_cause;
    assert_eq!(root.entity.name, "prod-bj-1-node04");
    assert!(
        root.explanation.contains("explains 2 of 2 alerts"),
        "{}",
        root.explanation
    );
}

#[test]
fn missing_or_malformed_topology_degrades_to_labels() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kube_pod_info.json"), "{\"status\":").unwrap();
    let mut loaded = app::load(None, &Overrides::default()).expect("default config");
    app::load_topology_dir(&mut loaded, dir.path());
    let (result, _) = app::replay_text(&loaded, &storm(), &opts()).unwrap();
    let incidents: Vec<_> = result
        .incidents
        .iter()
        .filter(|i| !i.alerts.is_empty())
        .collect();
    // Without pod → node, the two alerts stay apart, and none is lost.
    assert_eq!(incidents.len(), 2);
    assert_eq!(incidents.iter().map(|i| i.alerts.len()).sum::<usize>(), 2);
}

#[test]
fn a_bad_rule_file_is_refused_with_file_line_and_reason() {
    let overrides = Overrides {
        rules_dir: Some("testdata/rules/bad".into()),
        ..Default::default()
    };
    let errs = app::load(None, &overrides).unwrap_err().to_string();
    assert!(errs.contains("bad-about.yaml"), "{errs}");
    assert!(errs.contains("bad-about.yaml:3: alerts[0].about"), "{errs}");
    assert!(errs.contains("unknown variant `planet`"), "{errs}");
}

#[test]
fn shipped_rules_folder_is_valid() {
    let overrides = Overrides {
        rules_dir: Some("rules".into()),
        ..Default::default()
    };
    app::load(None, &overrides).expect("shipped rules are valid");
}
