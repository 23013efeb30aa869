//! The planner on a virtual clock: holds, updates on meaningful change only,
//! rate limits, repeats, acknowledgements, silences and resolved messages.

mod notify_common;

use chrono::Duration;
use notify_common::*;
use stormcast::config::{parse_yaml, Config, ValidateCtx};
use stormcast::correlate::{Change, IncidentEvent};
use stormcast::domain::Incident;
use stormcast::notify::silence::{Silence, SilenceMatcher};
use stormcast::notify::{MessageKind, Notification, Planner};

fn planner(yaml: &str) -> Planner {
    let mut c: Config = parse_yaml(yaml).unwrap();
    let errs = c.validate(&ValidateCtx {
        base_dir: ".".into(),
    });
    assert!(errs.is_empty(), "{errs}");
    Planner::with_settings(stormcast::notify::planner_settings(&c))
}

const CFG: &str = "route: {receiver: team, group_wait: 30s, group_interval: 5m, repeat_interval: 1h}\nreceivers: [{name: team}]\n";

/// Runs the planner's timers up to `until`, like replay does.
fn run_until(p: &mut Planner, until: stormcast::domain::Timestamp, out: &mut Vec<Notification>) {
    while let Some(d) = p.next_deadline() {
        if d > until {
            break;
        }
        out.extend(p.tick(d));
    }
}

fn kinds(v: &[Notification]) -> Vec<(i64, MessageKind)> {
    let t0 = t("2026-11-23T03:00:00Z");
    v.iter()
        .map(|n| ((n.at - t0).num_seconds(), n.kind))
        .collect()
}

fn opened(id: &str) -> IncidentEvent {
    IncidentEvent::Opened { id: id.into() }
}

fn updated(id: &str, change: Change) -> IncidentEvent {
    IncidentEvent::Updated {
        id: id.into(),
        change,
    }
}

/// Resolves `inc` at `at` and plans that.
fn resolve(
    p: &mut Planner,
    inc: &mut Incident,
    at: stormcast::domain::Timestamp,
) -> Vec<Notification> {
    inc.resolved_at = Some(at);
    p.plan(&IncidentEvent::Resolved { id: inc.id.clone() }, inc, at)
}

fn inc() -> Incident {
    incident(
        "inc-1",
        t("2026-11-23T03:00:00Z"),
        &[("alertname", "KubeNodeNotReady"), ("severity", "warning")],
        &["prod-1"],
    )
}

#[test]
fn one_message_after_the_hold_then_updates_rate_limited_then_resolved() {
    let mut p = planner(CFG);
    let t0 = t("2026-11-23T03:00:00Z");
    let mut inc = inc();
    let mut out = p.plan(&opened("inc-1"), &inc, t0);
    assert!(out.is_empty(), "held for group_wait");
    // A member joins and the cause changes during the hold: still one message.
    out.extend(p.plan(
        &updated("inc-1", Change::Members),
        &inc,
        t0 + Duration::seconds(5),
    ));
    out.extend(p.plan(
        &updated("inc-1", Change::RootCause),
        &inc,
        t0 + Duration::seconds(10),
    ));
    run_until(&mut p, t0 + Duration::seconds(60), &mut out);
    assert_eq!(kinds(&out), vec![(30, MessageKind::First)]);
    assert_eq!(out[0].key, "inc-1/team/0");

    // Members alone never notify.
    out.extend(p.plan(
        &updated("inc-1", Change::Members),
        &inc,
        t0 + Duration::seconds(90),
    ));
    run_until(&mut p, t0 + Duration::seconds(120), &mut out);
    assert_eq!(out.len(), 1);

    // Two meaningful changes within group_interval: one update, at last_sent + 5m.
    inc.severity = "critical".into();
    out.extend(p.plan(
        &updated("inc-1", Change::Severity),
        &inc,
        t0 + Duration::seconds(120),
    ));
    out.extend(p.plan(
        &updated("inc-1", Change::Scope),
        &inc,
        t0 + Duration::seconds(200),
    ));
    run_until(&mut p, t0 + Duration::seconds(600), &mut out);
    assert_eq!(
        kinds(&out),
        vec![(30, MessageKind::First), (330, MessageKind::Update)]
    );

    // Repeat after repeat_interval, then resolved at once.
    run_until(&mut p, t0 + Duration::seconds(330 + 3600), &mut out);
    assert_eq!(out.last().unwrap().kind, MessageKind::Repeat);
    out.extend(resolve(&mut p, &mut inc, t0 + Duration::seconds(4000)));
    assert_eq!(out.last().unwrap().kind, MessageKind::Resolved);
    assert_eq!(out.last().unwrap().at, t0 + Duration::seconds(4000));
    let seqs: Vec<u32> = out.iter().map(|n| n.seq).collect();
    assert_eq!(seqs, vec![0, 1, 2, 3]);
    assert_eq!(
        p.next_deadline(),
        None,
        "nothing left for a resolved incident"
    );
}

#[test]
fn resolved_during_the_hold_sends_nothing() {
    let mut p = planner(CFG);
    let t0 = t("2026-11-23T03:00:00Z");
    let mut inc = inc();
    let mut out = p.plan(&opened("inc-1"), &inc, t0);
    out.extend(resolve(&mut p, &mut inc, t0 + Duration::seconds(10)));
    run_until(&mut p, t0 + Duration::hours(5), &mut out);
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn acknowledged_incidents_get_no_repeats_until_they_change() {
    let mut p = planner(CFG);
    let t0 = t("2026-11-23T03:00:00Z");
    let mut inc = inc();
    let mut out = p.plan(&opened("inc-1"), &inc, t0);
    run_until(&mut p, t0 + Duration::seconds(60), &mut out);
    assert_eq!(out.len(), 1);
    assert!(p.ack("inc-1"));
    run_until(&mut p, t0 + Duration::hours(10), &mut out);
    assert_eq!(out.len(), 1, "no repeats while acknowledged: {out:?}");
    // An event that changes nothing the message says keeps the ack.
    let at = t0 + Duration::hours(10);
    out.extend(p.plan(&updated("inc-1", Change::RootCause), &inc, at));
    run_until(&mut p, at + Duration::hours(2), &mut out);
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(p.is_acked("inc-1"));
    // A change clears the ack: update, then repeats resume.
    let at = at + Duration::hours(2);
    inc.clusters.push("prod-2".into());
    out.extend(p.plan(&updated("inc-1", Change::Scope), &inc, at));
    run_until(&mut p, at + Duration::minutes(61), &mut out);
    let k: Vec<MessageKind> = out.iter().map(|n| n.kind).collect();
    assert_eq!(
        k,
        vec![MessageKind::First, MessageKind::Update, MessageKind::Repeat]
    );
    assert!(!p.ack("unknown-incident"));
}

#[test]
fn silences_defer_until_they_end_or_expire() {
    let mut p = planner(CFG);
    let t0 = t("2026-11-23T03:00:00Z");
    let sil = Silence {
        id: "s1".into(),
        matchers: vec![SilenceMatcher {
            name: "cluster".into(),
            value: "prod-.*".into(),
            is_regex: true,
            is_equal: true,
        }],
        starts_at: t0,
        ends_at: t0 + Duration::hours(2),
        created_by: "ops".into(),
        comment: "maintenance".into(),
    };
    p.upsert_silence(sil).unwrap();
    let inc = inc();
    let mut out = p.plan(&opened("inc-1"), &inc, t0);
    run_until(&mut p, t0 + Duration::minutes(30), &mut out);
    assert!(out.is_empty(), "silenced: {out:?}");
    // Expiring the silence early lets the first message out right away.
    let now = t0 + Duration::minutes(30);
    p.expire_silence("s1", now).unwrap();
    run_until(&mut p, now, &mut out);
    assert_eq!(kinds(&out), vec![(1800, MessageKind::First)]);
}

#[test]
fn silences_are_validated() {
    let mut p = planner(CFG);
    let t0 = t("2026-11-23T03:00:00Z");
    let mut s = Silence {
        id: "s".into(),
        matchers: vec![SilenceMatcher {
            name: "team".into(),
            value: ".*".into(),
            is_regex: true,
            is_equal: true,
        }],
        starts_at: t0,
        ends_at: t0 + Duration::hours(1),
        created_by: "ops".into(),
        comment: "x".into(),
    };
    let e = p.upsert_silence(s.clone()).unwrap_err();
    assert!(e.to_string().contains("match everything"), "{e}");
    s.matchers[0].value = "db".into();
    s.ends_at = t0;
    assert!(p
        .upsert_silence(s)
        .unwrap_err()
        .to_string()
        .contains("endsAt"));
}

#[test]
fn time_intervals_defer_messages() {
    let yaml = r#"
route:
  receiver: team
  routes:
    - receiver: office
      matchers: ['severity="warning"']
      active_time_intervals: [office]
receivers: [{name: team}, {name: office}]
time_intervals:
  - name: office
    time_intervals: [{times: [{start_time: '09:00', end_time: '17:00'}]}]
"#;
    let mut p = planner(yaml);
    let t0 = t("2026-11-23T03:00:00Z");
    let mut out = p.plan(&opened("inc-1"), &inc(), t0);
    run_until(&mut p, t0 + Duration::hours(8), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].receiver, "office");
    assert_eq!(out[0].at, t("2026-11-23T09:00:00Z"));
}

#[test]
fn restore_after_restart_resumes_without_resending() {
    let t0 = t("2026-11-23T03:00:00Z");
    let now = t0 + Duration::minutes(10);
    let notified = inc();
    let mut fresh = incident(
        "inc-2",
        now,
        &[("alertname", "KubeNodeNotReady")],
        &["prod-2"],
    );
    fresh.opened_at = now;
    let mut p = planner(CFG);
    // inc-1 had message seq 0 queued before the crash; inc-2 had nothing yet.
    p.restore(&[&notified, &fresh], now, |i, _| {
        (i == "inc-1").then_some(0)
    });
    let mut out = Vec::new();
    run_until(&mut p, now + Duration::seconds(30), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].incident.as_str(), out[0].kind),
        ("inc-2", MessageKind::First)
    );
    // inc-1 resolves: its resolved message continues the sequence.
    let mut r = notified.clone();
    r.resolved_at = Some(now + Duration::minutes(1));
    let done = p.plan(
        &IncidentEvent::Resolved { id: "inc-1".into() },
        &r,
        now + Duration::minutes(1),
    );
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].kind, done[0].seq), (MessageKind::Resolved, 1));
}

#[test]
fn no_resolved_message_when_no_channel_wants_one() {
    let yaml = "route: {receiver: quiet, group_wait: 0s}\nreceivers:\n  - name: quiet\n    slack_configs: [{api_url: 'https://hooks.example/x', send_resolved: false}]\n";
    let mut p = planner(yaml);
    let t0 = t("2026-11-23T03:00:00Z");
    let mut inc = inc();
    let mut out = p.plan(&opened("inc-1"), &inc, t0);
    assert_eq!(out.len(), 1, "group_wait 0s sends at once");
    out.extend(resolve(&mut p, &mut inc, t0 + Duration::minutes(5)));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(p.next_deadline(), None);
}

#[test]
fn an_update_that_no_longer_changes_anything_is_not_sent() {
    let mut p = planner(CFG);
    let t0 = t("2026-11-23T03:00:00Z");
    let mut inc = inc();
    let mut out = p.plan(&opened("inc-1"), &inc, t0);
    run_until(&mut p, t0 + Duration::seconds(60), &mut out);
    assert_eq!(kinds(&out), vec![(30, MessageKind::First)]);
    let told = inc.root_cause.entity.clone();

    // The root cause moves to another node, then back, before the update
    // may go out (group_interval): the receiver already knows this cause.
    inc.root_cause.entity.name = "node-other".into();
    out.extend(p.plan(
        &updated("inc-1", Change::RootCause),
        &inc,
        t0 + Duration::seconds(90),
    ));
    inc.root_cause.entity = told;
    out.extend(p.plan(
        &updated("inc-1", Change::RootCause),
        &inc,
        t0 + Duration::seconds(120),
    ));
    run_until(&mut p, t0 + Duration::seconds(1800), &mut out);
    assert_eq!(kinds(&out), vec![(30, MessageKind::First)]);
    // The repeat timer still runs from the last message.
    assert_eq!(p.next_deadline(), Some(t0 + Duration::seconds(30 + 3600)));

    // A change that sticks is sent (at once: group_interval has passed).
    inc.clusters.push("prod-2".into());
    out.extend(p.plan(
        &updated("inc-1", Change::Scope),
        &inc,
        t0 + Duration::seconds(1800),
    ));
    assert_eq!(
        kinds(&out),
        vec![(30, MessageKind::First), (1800, MessageKind::Update)]
    );
}

#[test]
fn a_service_named_again_as_its_workload_is_no_update() {
    use stormcast::domain::{Entity, EntityKind};
    let mut p = planner(CFG);
    let t0 = t("2026-11-23T03:00:00Z");
    let mut inc = inc();
    inc.root_cause.entity = Entity::new(EntityKind::Service, "prod-1", Some("data"), "postgres");
    let mut out = p.plan(&opened("inc-1"), &inc, t0);
    run_until(&mut p, t0 + Duration::seconds(60), &mut out);
    assert_eq!(kinds(&out), vec![(30, MessageKind::First)]);

    // The workload's own alerts arrive and name it: the same cause.
    inc.root_cause.entity.kind = EntityKind::StatefulSet;
    out.extend(p.plan(
        &updated("inc-1", Change::RootCause),
        &inc,
        t0 + Duration::seconds(120),
    ));
    run_until(&mut p, t0 + Duration::seconds(900), &mut out);
    assert_eq!(kinds(&out), vec![(30, MessageKind::First)]);

    // Another workload is news.
    inc.root_cause.entity.name = "redis".into();
    out.extend(p.plan(
        &updated("inc-1", Change::RootCause),
        &inc,
        t0 + Duration::seconds(900),
    ));
    run_until(&mut p, t0 + Duration::seconds(1000), &mut out);
    assert_eq!(
        kinds(&out),
        vec![(30, MessageKind::First), (900, MessageKind::Update)]
    );
}

fn info_incident() -> Incident {
    incident(
        "inc-1",
        t("2026-11-23T03:00:00Z"),
        &[
            ("alertname", "CPUThrottlingHigh"),
            ("namespace", "shop"),
            ("severity", "info"),
        ],
        &["prod-1"],
    )
}

#[test]
fn info_alone_sends_nothing_until_a_louder_alert_joins() {
    let mut p = planner(CFG);
    let t0 = t("2026-11-23T03:00:00Z");
    let mut inc = info_incident();
    let mut out = p.plan(&opened("inc-1"), &inc, t0);
    run_until(&mut p, t0 + Duration::minutes(30), &mut out);
    assert!(out.is_empty(), "info alone is quiet: {out:?}");
    assert_eq!(p.next_deadline(), None, "no timer runs for it");

    // A warning joins ten minutes in: the first message goes out at once,
    // since its group_wait is long over, and carries the new severity.
    inc.severity = "warning".into();
    out.extend(p.plan(
        &updated("inc-1", Change::Severity),
        &inc,
        t0 + Duration::minutes(10),
    ));
    assert_eq!(kinds(&out), vec![(600, MessageKind::First)]);
    assert_eq!(out[0].seq, 0);
}

#[test]
fn a_quiet_incident_that_resolves_sends_no_resolved_message() {
    let mut p = planner(CFG);
    let t0 = t("2026-11-23T03:00:00Z");
    let mut inc = info_incident();
    let mut out = p.plan(&opened("inc-1"), &inc, t0);
    run_until(&mut p, t0 + Duration::minutes(20), &mut out);
    out.extend(resolve(&mut p, &mut inc, t0 + Duration::minutes(20)));
    run_until(&mut p, t0 + Duration::hours(5), &mut out);
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn quiet_severities_can_be_emptied_to_hear_of_every_incident() {
    let mut p = planner(&format!("{CFG}notify: {{quiet_severities: []}}\n"));
    let t0 = t("2026-11-23T03:00:00Z");
    let mut out = p.plan(&opened("inc-1"), &info_incident(), t0);
    run_until(&mut p, t0 + Duration::minutes(5), &mut out);
    assert_eq!(kinds(&out), vec![(30, MessageKind::First)]);

    // And any severity can be made quiet.
    let mut p = planner(&format!(
        "{CFG}notify: {{quiet_severities: [info, warning]}}\n"
    ));
    let mut out = p.plan(&opened("inc-1"), &inc(), t0);
    run_until(&mut p, t0 + Duration::minutes(5), &mut out);
    assert!(out.is_empty(), "{out:?}");
}
