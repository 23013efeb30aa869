//! `stormcast replay`: the documented result contract, nothing lost, virtual
//! time only, deterministic output, and hours of alerts in well under a second.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::time::Instant;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::{alert, webhook};
use serde_json::Value;

/// Six hours of a small fleet: each cluster's Alertmanager re-sends its groups
/// every 5 minutes, some alerts resolve, an HA twin sometimes delivers twice,
/// and one delivery arrives late, after the resolve it predates.
fn six_hour_storm(path: &std::path::Path) -> (usize, usize) {
    let t0: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 0).unwrap();
    let mut lines = Vec::new();
    let mut identities = std::collections::HashSet::new();
    for step in 0..72 {
        let now = t0 + Duration::minutes(5 * step);
        for cluster in ["prod-bj-1", "prod-sh-2", "staging-1"] {
            let mut alerts = Vec::new();
            for node in 0..10 {
                let node_name = format!("{cluster}-node{node:02}");
                let starts = t0 + Duration::minutes(node * 7);
                if starts > now {
                    continue;
                }
                let resolve_at = starts + Duration::hours(2 + node % 3);
                let labels = [
                    ("alertname", "NodeFilesystemAlmostOutOfSpace"),
                    ("instance", node_name.as_str()),
                    ("severity", "warning"),
                    ("cluster", cluster),
                ];
                identities.insert(format!("{cluster}/{node_name}"));
                if now < resolve_at {
                    alerts.push(alert(
                        &labels,
                        "firing",
                        &starts.to_rfc3339(),
                        "0001-01-01T00:00:00Z",
                    ));
                } else if now < resolve_at + Duration::minutes(15) {
                    alerts.push(alert(
                        &labels,
                        "resolved",
                        &starts.to_rfc3339(),
                        &resolve_at.to_rfc3339(),
                    ));
                }
            }
            if alerts.is_empty() {
                continue;
            }
            let body = webhook(&format!("http://alertmanager.{cluster}:9093"), &alerts);
            let line =
                serde_json::json!({"at": now.to_rfc3339(), "payload": body, "source": cluster});
            lines.push(line.to_string());
            if step % 7 == 0 {
                lines.push(line.to_string()); // HA twin
            }
        }
    }
    // A delivery from the first step arrives at the very end: it must not resurrect anything.
    let late = lines[0].replace(
        "2026-11-01T08:00:00+00:00\",\"payload",
        "2026-11-01T14:10:00+00:00\",\"payload",
    );
    lines.push(late);
    lines.push("{this line is not JSON".into());
    let mut f = std::fs::File::create(path).unwrap();
    for l in &lines {
        writeln!(f, "{l}").unwrap();
    }
    (lines.len() - 1, identities.len())
}

fn run_replay(input: &std::path::Path, output: &std::path::Path) -> (Value, String) {
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stormcast"))
        .args(["replay", "--input"])
        .arg(input)
        .arg("--output")
        .arg(output)
        .env("STORMCAST_LOG", "warn")
        .output()
        .unwrap();
    eprintln!("replay took {:?}", started.elapsed());
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (
        serde_json::from_slice(&std::fs::read(output).unwrap()).unwrap(),
        stderr,
    )
}

#[test]
fn replay_honours_the_contract_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("storm.jsonl");
    let (deliveries, identities) = six_hour_storm(&input);
    let (result, stderr) = run_replay(&input, &dir.path().join("a.json"));
    assert!(
        stderr.contains(":") && stderr.contains("not a replay line"),
        "bad line reported with its number: {stderr}"
    );

    let stats = &result["stats"];
    assert_eq!(stats["deliveries"], deliveries as u64);
    assert_eq!(stats["alerts"], identities as u64);
    assert_eq!(stats["rejected"], 1);
    assert!(
        stats["stale"].as_u64().unwrap() >= 1,
        "the late delivery is counted stale: {stats}"
    );
    assert!(stats["virtual_seconds"].as_i64().unwrap() >= 6 * 3600);

    let incidents = result["incidents"].as_array().unwrap();
    assert_eq!(stats["incidents"], incidents.len() as u64);
    // Every alert identity appears in exactly one incident.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for inc in incidents {
        for key in ["id", "opened_at", "resolved_at", "root_cause", "alerts"] {
            assert!(inc.get(key).is_some(), "incident lacks {key}: {inc}");
        }
        for key in ["fingerprint", "labels", "entity", "explanation"] {
            assert!(
                inc["root_cause"].get(key).is_some(),
                "root_cause lacks {key}"
            );
        }
        for a in inc["alerts"].as_array().unwrap() {
            for key in ["fingerprint", "labels", "status", "starts_at", "ends_at"] {
                assert!(a.get(key).is_some(), "alert lacks {key}");
            }
            *seen
                .entry(a["fingerprint"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    assert_eq!(seen.len(), identities, "every identity is in an incident");
    assert!(
        seen.values().all(|n| *n == 1),
        "no identity is in two incidents"
    );
    // Everything resolved within the input, and the run drained past the holds.
    assert!(
        incidents.iter().all(|i| !i["resolved_at"].is_null()),
        "all incidents resolved"
    );
    // No late delivery resurrected anything.
    for inc in incidents {
        for a in inc["alerts"].as_array().unwrap() {
            assert_eq!(a["status"], "resolved", "{a}");
        }
    }

    // Notifications carry virtual times inside the replayed window.
    let first = "2026-11-01T08:00:00Z".parse::<DateTime<Utc>>().unwrap();
    let notifications = result["notifications"].as_array().unwrap();
    assert!(!notifications.is_empty());
    for n in notifications {
        let at: DateTime<Utc> = n["at"].as_str().unwrap().parse().unwrap();
        assert!(
            at >= first && at <= first + Duration::hours(8),
            "notification at {at}"
        );
        for key in ["incident", "receiver", "status"] {
            assert!(n.get(key).is_some());
        }
    }
}

#[test]
fn replay_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("storm.jsonl");
    six_hour_storm(&input);
    let (a, _) = run_replay(&input, &dir.path().join("a.json"));
    let (b, _) = run_replay(&input, &dir.path().join("b.json"));
    assert_eq!(a, b);
}

/// The same deliveries, live and replayed from the journal, end in the same
/// alert states and the same incident membership.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_run_and_replay_of_its_journal_agree() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let mut server = common::Server::start(&db, None);
    let client = reqwest::Client::new();
    let starts = (Utc::now() - Duration::minutes(30)).to_rfc3339();
    let ended = (Utc::now() - Duration::minutes(1)).to_rfc3339();
    for round in 0..3 {
        let mut alerts = Vec::new();
        for i in 0..12 {
            let pod = format!("web-{i}");
            let labels = [
                ("alertname", "KubePodNotReady"),
                ("namespace", "shop"),
                ("pod", pod.as_str()),
                ("cluster", "live"),
            ];
            if round == 2 && i % 2 == 0 {
                alerts.push(alert(&labels, "resolved", &starts, &ended));
            } else {
                alerts.push(alert(&labels, "firing", &starts, "0001-01-01T00:00:00Z"));
            }
        }
        let r = client
            .post(server.url("/api/v1/alerts"))
            .json(&webhook("http://am:9093", &alerts))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let live: Vec<Value> = client
        .get(server.url("/api/v1/alerts?limit=1000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let live_incidents: Vec<Value> = client
        .get(server.url("/api/v1/incidents?limit=1000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(server.terminate().success());

    let exported = dir.path().join("storm.jsonl");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stormcast"))
        .args(["export-journal", "--data-dir"])
        .arg(&db)
        .arg("--output")
        .arg(&exported)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("exported 3 deliveries"));
    let (replayed, _) = run_replay(&exported, &dir.path().join("result.json"));

    let mut live_states: Vec<(String, String)> = live
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap().to_owned(),
                a["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut replay_states: Vec<(String, String)> = replayed["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["alerts"].as_array().unwrap().iter())
        .map(|a| {
            (
                a["fingerprint"].as_str().unwrap().to_owned(),
                a["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    live_states.sort();
    replay_states.sort();
    assert_eq!(live_states, replay_states);

    let membership = |incidents: &[Value]| {
        let mut groups: Vec<Vec<String>> = incidents
            .iter()
            .map(|i| {
                let mut m: Vec<String> = i["alerts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a["fingerprint"].as_str().unwrap().to_owned())
                    .collect();
                m.sort();
                m
            })
            .collect();
        groups.sort();
        groups
    };
    assert_eq!(
        membership(&live_incidents),
        membership(replayed["incidents"].as_array().unwrap())
    );
}
