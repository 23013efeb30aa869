//! The scheduled forecast digest on a virtual clock: nothing before the
//! slot, nothing without a report, then one message at the slot with the
//! soonest exhaustions first, delivered to the named receiver's channel (a
//! webhook stand-in) through the durable outbox, and never twice per slot.

mod notify_common;

use std::collections::BTreeMap;
use std::sync::Arc;

use notify_common::*;
use prometheus_client::registry::Registry;
use stormcast::analyze::digest::{DigestConfig, DigestTask, Schedule};
use stormcast::analyze::report::{Report, SeriesResult};
use stormcast::analyze::service::store_report;
use stormcast::analyze::{forecast, ForecastParams};
use stormcast::config::{PromDuration, Secret};
use stormcast::notify::dispatch::{Dispatcher, NotifyMetrics, RetryPolicy};
use stormcast::notify::notifier::http_client;
use stormcast::notify::outbox::Outbox;
use stormcast::notify::render::{self, Escape};
use stormcast::notify::webhook::{Webhook, WebhookConfig};
use stormcast::store::Store;

/// A linear leak from `start` to `end` (fraction of 100) over 24 h ending at `now`.
fn leak(name: &str, cluster: &str, start: f64, end: f64, now: i64) -> SeriesResult {
    let n = 289;
    let pts: Vec<(i64, f64)> = (0..n)
        .map(|i| {
            let f = i as f64 / (n - 1) as f64;
            (now - 86_400 + i as i64 * 300, start + (end - start) * f)
        })
        .collect();
    let f = forecast(&pts, 100.0, &ForecastParams::default()).unwrap();
    let mut labels = BTreeMap::new();
    labels.insert("cluster".to_owned(), cluster.to_owned());
    SeriesResult {
        name: name.to_owned(),
        labels,
        model: Some("node-filesystem".to_owned()),
        error: None,
        forecast: Some(f),
        history: pts,
        anomaly_score: None,
        peer_outlier: None,
    }
}

#[test]
fn the_schedule_follows_the_local_time_of_day() {
    let cfg = DigestConfig {
        every: PromDuration::hours(24),
        at: Some("08:30".into()),
        location: Some("Asia/Shanghai".into()),
        receiver: "x".into(),
        max_items: 5,
    };
    let s = Schedule::new(&cfg);
    // 08:30 in Shanghai is 00:30 UTC.
    assert_eq!(
        s.next_after(t("2026-11-22T00:00:00Z")),
        t("2026-11-22T00:30:00Z")
    );
    assert_eq!(
        s.next_after(t("2026-11-22T00:30:00Z")),
        t("2026-11-23T00:30:00Z")
    );
    // Berlin's DST change keeps the wall time: 08:30 CEST, then 08:30 CET.
    let berlin = Schedule::new(&DigestConfig {
        location: Some("Europe/Berlin".into()),
        ..cfg.clone()
    });
    assert_eq!(
        berlin.next_after(t("2026-10-24T12:00:00Z")),
        t("2026-10-25T07:30:00Z")
    );
    assert_eq!(
        berlin.next_after(t("2026-10-25T07:30:00Z")),
        t("2026-10-26T07:30:00Z")
    );
    // Every 6 h from midnight UTC.
    let six = Schedule::new(&DigestConfig {
        every: PromDuration::hours(6),
        at: None,
        location: None,
        ..cfg
    });
    assert_eq!(
        six.next_after(t("2026-11-22T13:10:00Z")),
        t("2026-11-22T18:00:00Z")
    );
}

#[tokio::test]
async fn a_digest_goes_to_the_named_receiver_at_its_slot() {
    let st: StandIn = Arc::default();
    let base = stand_in(st.clone()).await;
    let store = Store::temporary().unwrap();
    let outbox = Outbox::open(&store).unwrap();
    let mut reg = Registry::default();
    let hook = Webhook::new(
        WebhookConfig {
            url: Some(Secret::new(format!("{base}/hook"))),
            ..Default::default()
        },
        http_client(),
    );
    let d = Dispatcher::new(
        outbox.clone(),
        vec![(
            "capacity".into(),
            "capacity/webhook[0]".into(),
            Arc::new(hook),
        )],
        RetryPolicy::default(),
        NotifyMetrics::register(&mut reg),
        Some("https://stormcast.example".into()),
    );
    let cfg = DigestConfig {
        every: PromDuration::hours(24),
        at: Some("08:00".into()),
        location: None,
        receiver: "capacity".into(),
        max_items: 2,
    };
    let t0 = t("2026-11-22T05:00:00Z");
    let mut task = DigestTask::new(cfg, Some("https://stormcast.example/"), t0);
    assert_eq!(task.next_deadline(), t("2026-11-22T08:00:00Z"));

    // Before the slot: nothing.
    assert_eq!(task.step(t("2026-11-22T07:59:59Z"), &store, &d), 0);
    // At the slot without a report: skipped quietly, schedule moves on.
    assert_eq!(task.step(t("2026-11-22T08:00:00Z"), &store, &d), 0);
    assert_eq!(outbox.depth(), 0);
    assert_eq!(task.next_deadline(), t("2026-11-23T08:00:00Z"));

    // A report with three at-risk series and one healthy one.
    let now = t("2026-11-23T07:00:00Z").timestamp();
    let report = Report::new(
        t("2026-11-23T07:00:00Z"),
        vec![
            leak("disk <b>slow</b>", "prod-1", 10.0, 60.0, now), // ~19 h left
            leak("disk fast", "prod-2", 20.0, 90.0, now),        // ~3.4 h left
            leak("disk flat", "prod-1", 40.0, 40.0, now),        // never
            leak("disk medium", "prod-3", 30.0, 80.0, now),      // ~9.6 h left
        ],
    );
    assert_eq!(report.at_risk().count(), 3);
    store_report(&store, &report);

    assert_eq!(task.step(t("2026-11-23T07:59:00Z"), &store, &d), 0);
    assert_eq!(task.step(t("2026-11-23T08:00:30Z"), &store, &d), 1);
    assert_eq!(outbox.depth(), 1);
    // The same slot is never queued twice, even by a fresh task (restart).
    let entry = outbox.entries().unwrap().remove(0);
    assert_eq!(
        entry.key,
        "digest-20261123T0800Z/capacity/0/capacity/webhook[0]"
    );
    assert_eq!(
        d.enqueue_digest(
            "digest-20261123T0800Z",
            "capacity",
            entry.message.digest.clone().unwrap(),
            t("2026-11-23T08:01:00Z")
        )
        .unwrap(),
        0
    );

    // Delivered through the dispatcher to the receiver's webhook.
    let rep = d.step(t("2026-11-23T08:00:30Z")).await.unwrap();
    assert_eq!(rep.delivered, 1, "{rep:?}");
    let body = st.lock().unwrap().received[0].body.clone();
    assert_eq!(body["kind"], "digest");
    assert_eq!(body["receiver"], "capacity");
    let dg = &body["digest"];
    assert_eq!(dg["title"], "stormcast forecast: 3 resources at risk");
    assert_eq!(dg["at_risk"], 3);
    assert_eq!(dg["report_url"], "https://stormcast.example/api/v1/report");
    let items = dg["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "max_items");
    assert_eq!(items[0]["name"], "disk fast");
    assert_eq!(items[0]["cluster"], "prod-2");
    assert_eq!(items[1]["name"], "disk medium");
    assert!(items[0]["confidence"].as_f64().unwrap() > 0.9);
    assert_eq!(items[0]["current"], "90");
    let lead = items[0]["lead"].as_str().unwrap();
    assert!(lead.starts_with("3h"), "{lead}");
    assert_eq!(outbox.depth(), 0);
    assert_eq!(task.next_deadline(), t("2026-11-24T08:00:00Z"));

    // Each channel renders it with its own escaping and the report link.
    let msg = entry.message;
    let slack =
        render::render(Escape::Slack, render::pick(&msg, None, render::SLACK), &msg).unwrap();
    assert!(slack.contains("disk fast"), "{slack}");
    assert!(slack.contains("<https://stormcast.example/api/v1/report|Full report>"));
    assert!(slack.contains("… and 1 more"), "{slack}");
    // A custom incident template does not apply to digests.
    let html = render::render(
        Escape::Html,
        render::pick(&msg, Some("{{ cause.alertname }}"), render::EMAIL_HTML),
        &msg,
    )
    .unwrap();
    assert!(html.contains("<td>disk fast</td>"), "{html}");
    assert!(html.contains("Full report"), "{html}");
    let subject = render::render(
        Escape::Text,
        render::pick(&msg, None, render::EMAIL_SUBJECT),
        &msg,
    )
    .unwrap();
    assert_eq!(subject.trim(), "stormcast forecast: 3 resources at risk");
}
