//! When a late root cause merges two open incidents, people hear about the
//! merged incident, never a "resolved" for the one that was absorbed.

mod common;

use std::io::Write;

use chrono::{Duration, TimeZone, Utc};
use common::{alert, webhook};
use serde_json::Value;

#[test]
fn an_absorbed_incident_sends_no_resolved_message() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("storm.jsonl");
    let t0 = Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 0).unwrap();
    let line = |at: chrono::DateTime<Utc>, labels: &[(&str, &str)]| {
        let body = webhook(
            "http://am.prod-bj-1:9093",
            &[alert(
                labels,
                "firing",
                &at.to_rfc3339(),
                "0001-01-01T00:00:00Z",
            )],
        );
        serde_json::json!({"at": at.to_rfc3339(), "payload": body}).to_string()
    };
    let lines = [
        // Symptoms first, as kube-prometheus' `for` durations order them.
        line(
            t0,
            &[
                ("alertname", "TargetDown"),
                ("job", "node-exporter"),
                ("namespace", "monitoring"),
                ("service", "node-exporter"),
                ("cluster", "prod-bj-1"),
            ],
        ),
        line(
            t0 + Duration::minutes(1),
            &[
                ("alertname", "KubePodNotReady"),
                ("namespace", "shop"),
                ("pod", "frontend-k26hp59727-47q2c"),
                ("cluster", "prod-bj-1"),
            ],
        ),
        // The cause, 5 minutes later: both incidents' first messages are out by now.
        line(
            t0 + Duration::minutes(5),
            &[
                ("alertname", "KubeNodeNotReady"),
                ("node", "prod-bj-1-node03"),
                ("severity", "warning"),
                ("cluster", "prod-bj-1"),
            ],
        ),
    ];
    let mut f = std::fs::File::create(&input).unwrap();
    for l in &lines {
        writeln!(f, "{l}").unwrap();
    }
    drop(f);
    let output = dir.path().join("result.json");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stormcast"))
        .args(["replay", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .arg("--topology")
        .arg(root.join("testdata/topology"))
        .arg("--rules")
        .arg(root.join("rules"))
        .env("STORMCAST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&std::fs::read(&output).unwrap()).unwrap();
    let incidents = result["incidents"].as_array().unwrap();
    let with_members: Vec<&Value> = incidents
        .iter()
        .filter(|i| !i["alerts"].as_array().unwrap().is_empty())
        .collect();
    assert_eq!(
        with_members.len(),
        1,
        "the node explains everything: {incidents:#?}"
    );
    assert_eq!(with_members[0]["root_cause"]["entity"]["kind"], "node");
    let survivor = with_members[0]["id"].as_str().unwrap();
    let notifications = result["notifications"].as_array().unwrap();
    for n in notifications {
        if n["status"] == "resolved" {
            assert_eq!(
                n["incident"], survivor,
                "a resolved message for an absorbed incident: {n}"
            );
        }
    }
    assert!(
        notifications.iter().any(|n| n["incident"] == survivor),
        "the surviving incident is notified: {notifications:#?}"
    );
}
