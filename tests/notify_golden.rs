//! Golden files: the default templates rendered per channel for one storm
//! incident (several clusters, a hostile label, links). Run with
//! `STORMCAST_UPDATE_GOLDEN=1` to rewrite them after an intended change.

mod notify_common;

use std::path::PathBuf;

use notify_common::*;
use stormcast::domain::{AlertStatus, IncidentAlert};
use stormcast::notify::dingtalk::{self, DingtalkConfig};
use stormcast::notify::render::{self, Escape};
use stormcast::notify::slack::{self, SlackConfig};
use stormcast::notify::{webhook, MessageKind};

fn storm() -> stormcast::notify::notifier::Message {
    let t0 = t("2026-11-23T03:00:00Z");
    let mut inc = incident(
        "inc-5f2c9a01d3e4b7c8",
        t0,
        &[
            ("alertname", "KubeNodeNotReady"),
            ("cluster", "prod-sh-1"),
            ("node", "node-7"),
            ("severity", "warning"),
        ],
        &["prod-sh-1", "prod-sh-2"],
    );
    inc.severity = "critical".into();
    for (i, (name, extra)) in [
        ("KubePodNotReady", ("pod", "api-7d9f-x2")),
        ("KubeDeploymentReplicasMismatch", ("deployment", "api")),
        ("TargetDown", ("job", "<script>alert(1)</script>")),
        (
            "KubePodCrashLooping",
            ("pod", "*@all* [click](http://evil)"),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let l = labels(&[
            ("alertname", name),
            (
                "cluster",
                if i % 2 == 0 { "prod-sh-1" } else { "prod-sh-2" },
            ),
            ("namespace", "payments"),
            ("severity", if i == 0 { "critical" } else { "warning" }),
            extra,
        ]);
        inc.alerts.push(IncidentAlert {
            fingerprint: l.fingerprint(),
            labels: l,
            status: if i == 3 {
                AlertStatus::Resolved
            } else {
                AlertStatus::Firing
            },
            starts_at: t0 + chrono::Duration::seconds(30 * (i as i64 + 1)),
            ends_at: None,
        });
    }
    let mut msg = message(&inc, "ops", MessageKind::First, 0);
    let root = inc.alerts[0].fingerprint.to_string();
    msg.links.generators.insert(
        root,
        "http://prometheus.prod-sh-1:9090/graph?g0.expr=up&g0.tab=1".into(),
    );
    msg
}

fn check(name: &str, got: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/golden")
        .join(name);
    if std::env::var("STORMCAST_UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with STORMCAST_UPDATE_GOLDEN=1)",
            path.display()
        )
    });
    assert_eq!(got, want, "{name} differs from its golden file");
}

#[test]
fn email_golden() {
    let m = storm();
    check(
        "email.subject.txt",
        &render::render(Escape::Text, render::EMAIL_SUBJECT, &m).unwrap(),
    );
    check(
        "email.txt",
        &render::render(Escape::Text, render::EMAIL_TEXT, &m).unwrap(),
    );
    check(
        "email.html",
        &render::render(Escape::Html, render::EMAIL_HTML, &m).unwrap(),
    );
}

#[test]
fn slack_golden() {
    let v = slack::payload(&SlackConfig::default(), &storm()).unwrap();
    check("slack.json", &serde_json::to_string_pretty(&v).unwrap());
}

#[test]
fn dingtalk_golden() {
    let cfg = DingtalkConfig {
        at_mobiles: vec!["13800000000".into()],
        ..Default::default()
    };
    let v = dingtalk::payload(&cfg, &[storm()]).unwrap();
    check("dingtalk.json", &serde_json::to_string_pretty(&v).unwrap());
    let mut second = storm();
    second.notification.kind = MessageKind::Update;
    second.notification.seq = 1;
    let v = dingtalk::payload(&cfg, &[storm(), second]).unwrap();
    check(
        "dingtalk-digest.json",
        &serde_json::to_string_pretty(&v).unwrap(),
    );
}

#[test]
fn webhook_golden() {
    let v = webhook::payload(&storm());
    check("webhook.json", &serde_json::to_string_pretty(&v).unwrap());
}

#[test]
fn a_receiver_template_overrides_the_default() {
    let cfg = SlackConfig {
        text: Some("{{ cause.alertname }} in {{ clusters|join(' & ') }}".into()),
        ..Default::default()
    };
    let v = slack::payload(&cfg, &storm()).unwrap();
    assert_eq!(
        v["blocks"][1]["text"]["text"],
        "KubeNodeNotReady in prod-sh-1 &amp; prod-sh-2"
    );
}

#[test]
fn cut_lists_say_how_many_they_left_out_and_an_inferred_cause_has_a_name() {
    let t0 = t("2026-11-23T03:00:00Z");
    // A workload no alert names, inferred from its twelve pods.
    let mut inc = incident("inc-1", t0, &[("cluster", "c1")], &["c1"]);
    inc.root_cause.fingerprint = None;
    inc.alerts.clear();
    for i in 0..12 {
        let pod = format!("bulk-{i}");
        let l = labels(&[
            ("alertname", "KubePodNotReady"),
            ("cluster", "c1"),
            ("pod", &pod),
            ("severity", "warning"),
        ]);
        inc.alerts.push(IncidentAlert {
            fingerprint: l.fingerprint(),
            labels: l,
            status: AlertStatus::Firing,
            starts_at: t0 + chrono::Duration::seconds(i),
            ends_at: None,
        });
    }
    let m = message(&inc, "ops", MessageKind::First, 0);
    let subject = render::render(Escape::Text, render::EMAIL_SUBJECT, &m).unwrap();
    assert!(
        subject.starts_with("[FIRING] KubePodNotReady on "),
        "{subject}"
    );
    let text = render::render(Escape::Text, render::EMAIL_TEXT, &m).unwrap();
    let listed = text.lines().filter(|l| l.starts_with("- [firing]")).count();
    assert_eq!(listed, render::TOP_ALERTS);
    assert!(text.contains("- and 2 more alerts\n"), "{text}");
    assert!(text.contains("- and 6 more alerts started\n"), "{text}");
    let slack = slack::payload(&SlackConfig::default(), &m)
        .unwrap()
        .to_string();
    assert!(slack.contains("and 2 more alerts"), "{slack}");
}
