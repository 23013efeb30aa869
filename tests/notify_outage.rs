//! A ten-minute chat outage on a virtual clock: nothing is lost, each
//! incident's messages arrive in order, Slack keeps to ~1/s and a DingTalk
//! robot never gets more than 20 requests in any minute (a backlog is merged
//! into digests).

mod notify_common;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Duration;
use notify_common::*;
use stormcast::config::{PromDuration, Secret};
use stormcast::notify::dingtalk::{Dingtalk, DingtalkConfig};
use stormcast::notify::dispatch::{ChannelSpec, Dispatcher, NotifyMetrics, RetryPolicy};
use stormcast::notify::notifier::{http_client, Links};
use stormcast::notify::outbox::Outbox;
use stormcast::notify::slack::{Slack, SlackConfig};
use stormcast::notify::{MessageKind, Notification};
use stormcast::store::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_minute_outage_loses_nothing_and_keeps_order_and_limits() {
    let slack_st: StandIn = Arc::default();
    let ding_st: StandIn = Arc::default();
    ding_st.lock().unwrap().secret = Some("SECoutage".into());
    let slack_url = stand_in(slack_st.clone()).await;
    let ding_url = stand_in(ding_st.clone()).await;
    let client = http_client();
    let channels: Vec<ChannelSpec> = vec![
        (
            "ops".into(),
            "ops/slack[0]".into(),
            Arc::new(Slack::new(
                SlackConfig {
                    api_url: Some(Secret::new(format!("{slack_url}/services/x"))),
                    timeout: PromDuration::secs(2),
                    ..Default::default()
                },
                client.clone(),
            )),
        ),
        (
            "ops".into(),
            "ops/dingtalk[0]".into(),
            Arc::new(Dingtalk::new(
                "ops/dingtalk[0]".into(),
                DingtalkConfig {
                    url: Some(Secret::new(format!("{ding_url}/robot/send?access_token=t"))),
                    secret: Some(Secret::new("SECoutage")),
                    timeout: PromDuration::secs(2),
                    ..Default::default()
                },
                client,
            )),
        ),
    ];
    let store = Store::temporary().unwrap();
    let outbox = Outbox::open(&store).unwrap();
    let d = Dispatcher::new(
        outbox.clone(),
        channels,
        RetryPolicy::default(),
        NotifyMetrics::default(),
        None,
    );

    // Both services are down for the first ten minutes.
    slack_st.lock().unwrap().default = Some(Answer::Status(503, None));
    ding_st.lock().unwrap().default = Some(Answer::Status(502, None));

    let t0 = t("2026-11-23T03:00:00Z");
    let n_incidents = 40;
    let mut incidents = HashMap::new();
    for i in 0..n_incidents {
        let id = format!("inc-{i:03}");
        let inc = incident(
            &id,
            t0,
            &[
                ("alertname", "KubeNodeNotReady"),
                ("node", &format!("n{i}")),
            ],
            &["prod-1"],
        );
        incidents.insert(id, inc);
    }
    let mut virtual_attempts: Vec<(stormcast::domain::Timestamp, usize)> = Vec::new();
    let end = t0 + Duration::minutes(40);
    let mut now = t0;
    let mut sec = 0i64;
    while now <= end {
        // Incidents open during the first 80 s (first message), each gets an
        // update four minutes later: all of it during the outage.
        for (j, kind) in [(sec, MessageKind::First), (sec - 240, MessageKind::Update)] {
            if j >= 0 && j % 2 == 0 && j / 2 < n_incidents as i64 {
                let id = format!("inc-{:03}", j / 2);
                let seq = u32::from(kind == MessageKind::Update);
                let n = Notification {
                    at: now,
                    incident: id.clone(),
                    receiver: "ops".into(),
                    status: stormcast::notify::NotificationStatus::Firing,
                    kind,
                    seq,
                    key: format!("{id}/ops/{seq}"),
                };
                d.enqueue(&[n], now, |i| {
                    Some((incidents[i].clone(), Links::default()))
                })
                .unwrap();
            }
        }
        if now == t0 + Duration::minutes(10) {
            slack_st.lock().unwrap().default = Some(Answer::Ok);
            ding_st.lock().unwrap().default = Some(Answer::Ok);
        }
        let before = ding_st.lock().unwrap().received.len();
        d.step(now).await.unwrap();
        let after = ding_st.lock().unwrap().received.len();
        if after > before {
            virtual_attempts.push((now, after - before));
        }
        now += Duration::seconds(1);
        sec += 1;
    }

    // Nothing lost: the outbox is empty and every message arrived on both channels.
    assert_eq!(outbox.depth(), 0, "{:?}", outbox.entries().unwrap().first());
    let slack_ok: Vec<serde_json::Value> = slack_st
        .lock()
        .unwrap()
        .received
        .iter()
        .filter(|r| r.ok)
        .map(|r| r.body.clone())
        .collect();
    assert_eq!(slack_ok.len(), 2 * n_incidents);

    // Order per incident on Slack: FIRING before UPDATED.
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    for b in &slack_ok {
        let title = b["text"].as_str().unwrap().to_owned();
        let ctx = b["blocks"].as_array().unwrap().last().unwrap()["elements"][0]["text"]
            .as_str()
            .unwrap()
            .to_owned();
        let id = ctx.split('`').nth(1).unwrap().to_owned();
        seen.entry(id).or_default().push(title);
    }
    assert_eq!(seen.len(), n_incidents);
    for (id, titles) in &seen {
        assert!(titles[0].starts_with("[FIRING]"), "{id}: {titles:?}");
        assert!(titles[1].starts_with("[UPDATED]"), "{id}: {titles:?}");
    }

    // DingTalk: every message delivered (in digests), in order per incident.
    let ding = ding_st.lock().unwrap();
    assert_eq!(ding.bad_signatures, 0);
    let mut order: HashMap<String, Vec<String>> = HashMap::new();
    for r in ding.received.iter().filter(|r| r.ok) {
        let text = r.body["markdown"]["text"].as_str().unwrap();
        for section in text.split("\n\n---\n\n") {
            let id = section
                .split("stormcast incident ")
                .nth(1)
                .unwrap()
                .trim()
                .to_owned();
            let word = if section.contains("### UPDATED") {
                "UPDATED"
            } else {
                "FIRING"
            };
            order.entry(id).or_default().push(word.to_owned());
        }
    }
    assert_eq!(order.len(), n_incidents);
    for (id, words) in &order {
        assert_eq!(words, &["FIRING", "UPDATED"], "{id}");
    }
    // Never more than 20 requests in any 60 s of virtual time.
    for (i, (t, _)) in virtual_attempts.iter().enumerate() {
        let in_window: usize = virtual_attempts[i..]
            .iter()
            .take_while(|(u, _)| *u < *t + Duration::seconds(60))
            .map(|(_, n)| n)
            .sum();
        assert!(
            in_window <= 20,
            "{in_window} DingTalk requests in the minute from {t}"
        );
    }
    let digests = ding
        .received
        .iter()
        .filter(|r| r.ok)
        .filter(|r| {
            r.body["markdown"]["title"]
                .as_str()
                .unwrap()
                .contains("digest")
        })
        .count();
    assert!(digests > 0, "a backlog should be merged into digests");
}
