//! The dead-man's switch on a virtual clock: a cluster's Watchdog stops, an
//! incident "monitoring pipeline down" opens and is notified, the Watchdog
//! returns, the incident resolves. Watchdog itself never becomes an incident.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use stormcast::app::{self, ReplayOptions};
use stormcast::config::Overrides;
use stormcast::correlate::Correlator;
use stormcast::engine::heartbeat::PIPELINE_DOWN_ALERTNAME;
use stormcast::engine::{Clock, Engine, HeartbeatConfig, ManualClock};
use stormcast::ingest::{parse_delivery, IngestConfig};
use stormcast::notify::{NotificationStatus, Planner};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 8, 0, 0).unwrap()
}

fn alert(name: &str, cluster: &str, status: &str, starts: DateTime<Utc>) -> serde_json::Value {
    json!({
        "status": status,
        "labels": {"alertname": name, "cluster": cluster, "severity": "none"},
        "annotations": {},
        "startsAt": starts.to_rfc3339(),
        "endsAt": if status == "resolved" { (starts + Duration::minutes(1)).to_rfc3339() } else { "0001-01-01T00:00:00Z".to_owned() },
    })
}

fn webhook(alerts: Vec<serde_json::Value>) -> serde_json::Value {
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"Watchdog\"}",
        "status": "firing",
        "receiver": "stormcast",
        "alerts": alerts,
        "externalURL": "http://alertmanager:9093",
    })
}

fn line(at: DateTime<Utc>, payload: serde_json::Value) -> String {
    json!({"at": at.to_rfc3339(), "source": "am", "payload": payload}).to_string()
}

/// Watchdog every minute from both clusters; `prod-a` goes quiet from minute
/// 30 to minute 70, `prod-b` never does.
fn storm() -> String {
    let mut lines = Vec::new();
    for m in 0..=120 {
        let at = t0() + Duration::minutes(m);
        let mut alerts = vec![alert("Watchdog", "prod-b", "firing", t0())];
        if !(30..70).contains(&m) {
            alerts.push(alert("Watchdog", "prod-a", "firing", t0()));
        }
        lines.push(line(at, webhook(alerts)));
    }
    lines.join("\n")
}

fn run(config: &str, input: &str) -> app::ReplayResult {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("stormcast.yaml");
    std::fs::write(&cfg, config).unwrap();
    let jsonl = dir.path().join("in.jsonl");
    std::fs::write(&jsonl, input).unwrap();
    let loaded = app::load(Some(&cfg), &Overrides::default()).expect("valid config");
    let (result, rejections) = app::replay(
        &loaded,
        &ReplayOptions {
            input: jsonl,
            drain: Duration::hours(2),
            progress: false,
        },
    )
    .unwrap();
    assert!(rejections.is_empty(), "{rejections:?}");
    result
}

const CONFIG: &str =
    "heartbeat:\n  alertname: Watchdog\n  expect_every: 1m\n  missing_after: 10m\n";

#[test]
fn silent_cluster_opens_an_incident_that_resolves_when_the_heartbeat_returns() {
    let r = run(CONFIG, &storm());
    assert_eq!(r.incidents.len(), 1, "{:#?}", r.incidents);
    let inc = &r.incidents[0];
    assert_eq!(inc.clusters, vec!["prod-a".to_owned()]);
    assert_eq!(inc.root_cause.labels.alertname(), PIPELINE_DOWN_ALERTNAME);
    assert_eq!(inc.severity, "critical");
    // Last heartbeat at minute 29, missing_after 10m: down at minute 39.
    assert_eq!(inc.opened_at, t0() + Duration::minutes(39));
    // Heartbeat back at minute 70: the alert resolves then.
    assert_eq!(inc.resolved_at, Some(t0() + Duration::minutes(70)));
    assert!(inc
        .alerts
        .iter()
        .all(|a| a.labels.alertname() != "Watchdog"));

    let firing: Vec<_> = r
        .notifications
        .iter()
        .filter(|n| n.status == NotificationStatus::Firing)
        .collect();
    let resolved: Vec<_> = r
        .notifications
        .iter()
        .filter(|n| n.status == NotificationStatus::Resolved)
        .collect();
    assert_eq!(firing.len(), 1, "{:?}", r.notifications);
    // Sent after the planner's short hold (group_wait), well within a minute.
    assert!(firing[0].at >= t0() + Duration::minutes(39));
    assert!(firing[0].at <= t0() + Duration::minutes(40));
    assert_eq!(resolved.len(), 1, "{:?}", r.notifications);
    assert!(resolved[0].at >= t0() + Duration::minutes(70));
    assert!(r.notifications.iter().all(|n| n.incident == inc.id));
}

#[test]
fn watchdog_alone_never_becomes_an_incident_and_the_end_of_a_recording_never_pages() {
    // Steady heartbeats, then the recording ends and replay drains two hours.
    let mut lines = Vec::new();
    for m in 0..60 {
        lines.push(line(
            t0() + Duration::minutes(m),
            webhook(vec![alert("Watchdog", "prod-a", "firing", t0())]),
        ));
    }
    let r = run(CONFIG, &lines.join("\n"));
    assert!(r.incidents.is_empty(), "{:#?}", r.incidents);
    assert!(r.notifications.is_empty());
    assert_eq!(r.stats.deliveries, 60);
}

#[test]
fn disabled_heartbeat_filters_watchdog_but_never_pages() {
    let r = run(
        "heartbeat:\n  enabled: false\n  expect_every: 1m\n  missing_after: 10m\n",
        &storm(),
    );
    assert!(r.incidents.is_empty(), "{:#?}", r.incidents);
}

#[test]
fn expected_cluster_that_never_reports_is_down_after_missing_after() {
    let clock = Arc::new(ManualClock::new(t0()));
    let cfg = HeartbeatConfig {
        expect_every: "1m".parse().unwrap(),
        missing_after: "10m".parse().unwrap(),
        clusters: vec!["prod-c".into()],
        ..Default::default()
    };
    let mut engine = Engine::new(
        clock.clone(),
        Correlator::new(Default::default()),
        Planner::new(),
    )
    .with_heartbeat(cfg, None);
    assert_eq!(
        engine.next_deadline(),
        Some(t0() + Duration::minutes(10)),
        "the silence deadline drives the virtual clock"
    );
    clock.set(t0() + Duration::minutes(9));
    engine.tick();
    assert!(engine.incidents().is_empty());
    clock.set(t0() + Duration::minutes(10));
    engine.tick();
    let incidents = engine.incidents();
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0].clusters, vec!["prod-c".to_owned()]);
    assert!(incidents[0].root_cause.explanation.contains("prod-c"));
    assert_eq!(engine.heartbeat().silent_clusters().len(), 1);
    // Only the notification hold (group_wait) remains to wait for; the
    // heartbeat itself has no further deadline while the cluster is down.
    assert!(
        engine
            .next_deadline()
            .is_none_or(|d| d <= t0() + Duration::minutes(11)),
        "no heartbeat deadline left: {:?}",
        engine.next_deadline()
    );

    // The notification hold passes: the incident's first message is planned.
    if let Some(hold) = engine.next_deadline() {
        clock.set(hold);
        engine.tick();
    }
    let planned = engine.take_planned();
    assert_eq!(planned.len(), 1, "opened");
    assert_eq!(planned[0].status, NotificationStatus::Firing);

    // The first heartbeat arrives: the synthetic alert resolves.
    clock.set(t0() + Duration::minutes(12));
    let body = webhook(vec![alert("Watchdog", "prod-c", "firing", t0())]).to_string();
    let d = parse_delivery(
        body.as_bytes(),
        clock.now(),
        "am",
        None,
        &IngestConfig::default(),
    )
    .unwrap();
    engine.apply(&d);
    assert!(engine.heartbeat().silent_clusters().is_empty());
    // The incident resolves after correlation's resolve hold.
    let hold_end = engine.next_deadline().unwrap();
    clock.set(hold_end);
    engine.tick();
    let incidents = engine.incidents();
    assert_eq!(incidents[0].resolved_at, Some(t0() + Duration::minutes(12)));
    let planned = engine.take_planned();
    assert_eq!(planned.len(), 1);
    assert_eq!(planned[0].status, NotificationStatus::Resolved);
}

#[test]
fn bad_heartbeat_fixture_fails_check_config_with_every_reason() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("testdata/config/bad-heartbeat.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stormcast"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for e in text.lines().filter_map(|l| l.strip_prefix("# expect: ")) {
        assert!(stderr.contains(e), "expected {e:?} in:\n{stderr}");
    }
}

#[test]
fn invalid_heartbeat_config_is_reported_with_key_paths() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.yaml");
    std::fs::write(
        &cfg,
        "heartbeat:\n  alertname: ''\n  expect_every: 5m\n  missing_after: 5m\n  clusters: [a, a]\n",
    )
    .unwrap();
    let errs = app::load(Some(&cfg), &Overrides::default()).unwrap_err();
    let text = errs.to_string();
    assert!(text.contains("heartbeat.alertname: required"), "{text}");
    assert!(
        text.contains("heartbeat.missing_after: must be longer than expect_every"),
        "{text}"
    );
    assert!(
        text.contains("heartbeat.clusters[1]: duplicate cluster"),
        "{text}"
    );
}

#[test]
fn restart_keeps_a_down_cluster_down_and_gives_watched_clusters_a_fresh_grace() {
    let store = stormcast::store::Store::temporary().unwrap();
    let cfg = HeartbeatConfig {
        expect_every: "1m".parse().unwrap(),
        missing_after: "10m".parse().unwrap(),
        ..Default::default()
    };
    let engine_at = |t: DateTime<Utc>| {
        let clock = Arc::new(ManualClock::new(t));
        let e = Engine::new(
            clock.clone(),
            Correlator::new(Default::default()),
            Planner::new(),
        )
        .with_store(store.clone())
        .with_heartbeat(cfg.clone(), None);
        (e, clock)
    };
    let watchdog = |cluster: &str, at: DateTime<Utc>| {
        let body = webhook(vec![alert("Watchdog", cluster, "firing", t0())]).to_string();
        parse_delivery(body.as_bytes(), at, "am", None, &IngestConfig::default()).unwrap()
    };

    let (mut e, clock) = engine_at(t0());
    e.apply(&watchdog("prod-a", t0()));
    e.apply(&watchdog("prod-b", t0()));
    clock.set(t0() + Duration::minutes(5));
    e.apply(&watchdog("prod-b", clock.now()));
    clock.set(t0() + Duration::minutes(10));
    e.tick();
    assert_eq!(e.heartbeat().silent_clusters().len(), 1, "prod-a is down");
    assert_eq!(e.incidents().len(), 1);
    drop(e);

    // stormcast restarts 30 minutes later.
    let restart = t0() + Duration::minutes(40);
    let (mut e, clock) = engine_at(restart);
    e.restore().unwrap();
    let silent: Vec<String> = e
        .heartbeat()
        .silent_clusters()
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(
        silent,
        vec!["prod-a".to_owned()],
        "down survives the restart"
    );
    // prod-b was fine before the restart: it gets missing_after from now, not
    // from its last heartbeat before stormcast went down.
    assert_eq!(e.next_deadline(), Some(restart + Duration::minutes(10)));
    clock.set(restart + Duration::minutes(1));
    e.tick();
    assert_eq!(
        e.incidents().len(),
        1,
        "no page for the time stormcast was down"
    );
    assert!(e.take_planned().is_empty());

    // prod-a's heartbeat returns: the restored incident resolves.
    e.apply(&watchdog("prod-a", clock.now()));
    assert!(e.heartbeat().silent_clusters().is_empty());
    let hold = e.next_deadline().unwrap();
    clock.set(hold);
    e.tick();
    let incidents = e.incidents();
    assert_eq!(incidents.len(), 1);
    assert_eq!(
        incidents[0].resolved_at,
        Some(restart + Duration::minutes(1))
    );
}

#[test]
fn a_cluster_silent_past_forget_after_is_resolved_and_no_longer_watched() {
    let store = stormcast::store::Store::temporary().unwrap();
    let cfg = HeartbeatConfig {
        expect_every: "1m".parse().unwrap(),
        missing_after: "10m".parse().unwrap(),
        forget_after: "1d".parse().unwrap(),
        ..Default::default()
    };
    let clock = Arc::new(ManualClock::new(t0()));
    let mut e = Engine::new(
        clock.clone(),
        Correlator::new(Default::default()),
        Planner::new(),
    )
    .with_store(store.clone())
    .with_heartbeat(cfg.clone(), None);
    let body = webhook(vec![alert("Watchdog", "old", "firing", t0())]).to_string();
    let d = parse_delivery(body.as_bytes(), t0(), "am", None, &IngestConfig::default()).unwrap();
    e.apply(&d);
    // Replay-style: jump from deadline to deadline.
    while let Some(next) = e.next_deadline() {
        clock.set(next);
        e.tick();
    }
    let incidents = e.incidents();
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0].opened_at, t0() + Duration::minutes(10));
    assert_eq!(
        incidents[0].resolved_at,
        Some(t0() + Duration::days(1)),
        "forgotten a day after the last heartbeat"
    );
    assert!(e.heartbeat().last_heard("old").is_none());
    drop(e);

    // A restart does not bring the forgotten cluster back.
    let clock = Arc::new(ManualClock::new(t0() + Duration::days(2)));
    let mut e = Engine::new(
        clock.clone(),
        Correlator::new(Default::default()),
        Planner::new(),
    )
    .with_store(store)
    .with_heartbeat(cfg, None);
    e.restore().unwrap();
    assert!(e.heartbeat().last_heard("old").is_none());
    assert_eq!(e.next_deadline(), None);
}
