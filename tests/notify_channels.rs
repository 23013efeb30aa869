//! Each channel against a stand-in on loopback: payload contract, DingTalk's
//! signature, error classification, escaping of hostile labels, and no
//! secret in any error.

mod notify_common;

use std::sync::Arc;
use std::time::Duration;

use notify_common::*;
use stormcast::config::{PromDuration, Secret};
use stormcast::notify::dingtalk::{Dingtalk, DingtalkConfig};
use stormcast::notify::notifier::{http_client, Notifier, SendResult};
use stormcast::notify::slack::{Slack, SlackConfig};
use stormcast::notify::webhook::{Webhook, WebhookConfig};
use stormcast::notify::MessageKind;

fn hostile() -> stormcast::domain::Incident {
    incident(
        "inc-9",
        t("2026-11-23T03:00:00Z"),
        &[
            ("alertname", "KubeNodeNotReady"),
            ("node", "<script>alert(1)</script>"),
            ("team", "*@all* <!channel> [x](javascript:y)"),
            ("severity", "critical"),
        ],
        &["prod-1"],
    )
}

fn slack(url: &str) -> Slack {
    Slack::new(
        SlackConfig {
            api_url: Some(Secret::new(url)),
            timeout: PromDuration::secs(1),
            ..Default::default()
        },
        http_client(),
    )
}

fn robot(url: &str, secret: Option<&str>) -> Dingtalk {
    Dingtalk::new(
        "ops/dingtalk[0]".into(),
        DingtalkConfig {
            url: Some(Secret::new(url)),
            secret: secret.map(Secret::new),
            at_mobiles: vec!["13800000000".into()],
            timeout: PromDuration::secs(1),
            ..Default::default()
        },
        http_client(),
    )
}

#[tokio::test]
async fn slack_block_kit_with_fallback_and_escaping() {
    let st: StandIn = Arc::default();
    let base = stand_in(st.clone()).await;
    let s = slack(&format!("{base}/services/T0/B0/s3cr3tT0ken"));
    let inc = hostile();
    let msg = message(&inc, "ops", MessageKind::First, 0);
    assert_eq!(
        s.send(std::slice::from_ref(&msg)).await,
        SendResult::Delivered
    );
    let got = st.lock().unwrap().received[0].body.clone();
    let text = got["text"].as_str().unwrap();
    assert!(text.starts_with("[FIRING] KubeNodeNotReady"), "{text}");
    let blocks = got["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[1]["text"]["type"], "mrkdwn");
    let body: String = blocks
        .iter()
        .filter(|b| b["text"]["type"] == "mrkdwn")
        .filter_map(|b| b["text"]["text"].as_str())
        .collect();
    assert!(
        body.contains("*Root cause:* node stopped reporting"),
        "{body}"
    );
    // Hostile labels cannot open a tag, a link or a <!channel> mention.
    assert!(body.contains("&lt;script&gt;"), "{body}");
    assert!(body.contains("&lt;!channel&gt;"), "{body}");
    assert!(
        !body.contains("<!channel>") && !body.contains("<script"),
        "{body}"
    );
    assert!(body.contains("<https://stormcast.example/incidents/inc-9|Incident page>"));
}

#[tokio::test]
async fn slack_errors_are_classified_and_never_show_the_url() {
    let st: StandIn = Arc::default();
    let base = stand_in(st.clone()).await;
    let s = slack(&format!("{base}/services/T0/B0/s3cr3tT0ken"));
    let msg = message(&hostile(), "ops", MessageKind::First, 0);
    let msgs = std::slice::from_ref(&msg);
    st.lock().unwrap().answers.extend([
        Answer::Status(429, Some(7)),
        Answer::Status(500, None),
        Answer::Status(404, None),
        Answer::Hang,
    ]);
    match s.send(msgs).await {
        SendResult::Retryable { after, reason, .. } => {
            assert_eq!(after, Some(Duration::from_secs(7)));
            assert_eq!(reason, "rate_limited");
        }
        r => panic!("{r:?}"),
    }
    assert!(matches!(
        s.send(msgs).await,
        SendResult::Retryable {
            reason: "http_5xx",
            ..
        }
    ));
    let permanent = s.send(msgs).await;
    assert!(
        matches!(
            permanent,
            SendResult::Permanent {
                reason: "http_4xx",
                ..
            }
        ),
        "{permanent:?}"
    );
    let hang = s.send(msgs).await;
    assert!(
        matches!(
            hang,
            SendResult::Retryable {
                reason: "timeout",
                ..
            }
        ),
        "{hang:?}"
    );
    // Nothing listening: a connection error, without the URL's token.
    let dead = slack("http://127.0.0.1:9/services/T0/B0/s3cr3tT0ken");
    let r = dead.send(msgs).await;
    for r in [permanent, hang, r] {
        let text = format!("{r:?}");
        assert!(
            !text.contains("s3cr3tT0ken") && !text.contains("/services/"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn dingtalk_signed_markdown_with_mentions() {
    let st: StandIn = Arc::default();
    st.lock().unwrap().secret = Some("SECtestsecret".into());
    let base = stand_in(st.clone()).await;
    let r = robot(
        &format!("{base}/robot/send?access_token=t0k3n"),
        Some("SECtestsecret"),
    );
    let msg = message(&hostile(), "ops", MessageKind::First, 0);
    assert_eq!(
        r.send(std::slice::from_ref(&msg)).await,
        SendResult::Delivered
    );
    let s = st.lock().unwrap();
    assert_eq!(s.bad_signatures, 0, "signature must verify");
    let got = &s.received[0];
    assert!(
        got.query.starts_with("access_token=t0k3n&timestamp="),
        "{}",
        got.query
    );
    assert_eq!(got.body["msgtype"], "markdown");
    assert_eq!(got.body["at"]["atMobiles"][0], "13800000000");
    assert_eq!(got.body["at"]["isAtAll"], false);
    let text = got.body["markdown"]["text"].as_str().unwrap();
    assert!(
        text.trim_end().ends_with("@13800000000"),
        "mention must be in the text: {text}"
    );
    // The only @ is the configured mention; hostile markup is escaped.
    assert_eq!(text.matches('@').count(), 1, "{text}");
    assert!(text.contains("＊＠all＊"), "{text}");
    assert!(!text.contains("<script"), "{text}");
}

#[tokio::test]
async fn dingtalk_errcodes() {
    let st: StandIn = Arc::default();
    let base = stand_in(st.clone()).await;
    let r = robot(
        &format!("{base}/robot/send?access_token=t0k3n"),
        Some("SECx"),
    );
    let msg = message(&hostile(), "ops", MessageKind::First, 0);
    let msgs = std::slice::from_ref(&msg);
    st.lock().unwrap().answers.extend([
        Answer::Errcode(130101, "send too fast, exceed 20 times per minute"),
        Answer::Errcode(310000, "sign not match"),
    ]);
    match r.send(msgs).await {
        SendResult::Retryable { after, reason, .. } => {
            assert_eq!(reason, "dingtalk_throttled");
            assert!(after >= Some(Duration::from_secs(60)));
        }
        x => panic!("{x:?}"),
    }
    match r.send(msgs).await {
        SendResult::Permanent { reason, detail } => {
            assert_eq!(reason, "dingtalk_config");
            assert!(detail.contains("robot ops/dingtalk[0]"), "{detail}");
            assert!(!detail.contains("t0k3n"), "{detail}");
        }
        x => panic!("{x:?}"),
    }
}

#[tokio::test]
async fn dingtalk_large_bodies_are_truncated_with_a_link() {
    let st: StandIn = Arc::default();
    let base = stand_in(st.clone()).await;
    let r = robot(&format!("{base}/robot/send?access_token=t"), None);
    let mut inc = hostile();
    inc.root_cause.explanation = "很长的解释 ".repeat(3000);
    let msg = message(&inc, "ops", MessageKind::First, 0);
    assert_eq!(
        r.send(std::slice::from_ref(&msg)).await,
        SendResult::Delivered
    );
    let s = st.lock().unwrap();
    let body = serde_json::to_vec(&s.received[0].body).unwrap();
    assert!(body.len() < 20_000, "{} bytes", body.len());
    let text = s.received[0].body["markdown"]["text"].as_str().unwrap();
    assert!(
        text.contains("truncated; full incident: [https://stormcast.example/incidents/inc-9]"),
        "{}",
        &text[text.len() - 300..]
    );
}

#[tokio::test]
async fn webhook_carries_the_idempotency_key_and_hides_its_token() {
    let st: StandIn = Arc::default();
    let base = stand_in(st.clone()).await;
    let w = Webhook::new(
        WebhookConfig {
            url: Some(Secret::new(format!("{base}/hook?token=w3bt0ken"))),
            ..Default::default()
        },
        http_client(),
    );
    let msg = message(&hostile(), "ops", MessageKind::Update, 2);
    assert_eq!(
        w.send(std::slice::from_ref(&msg)).await,
        SendResult::Delivered
    );
    let got = st.lock().unwrap().received[0].body.clone();
    assert_eq!(got["key"], "inc-9/ops/2");
    assert_eq!(got["kind"], "update");
    assert_eq!(got["incident"]["id"], "inc-9");
    let dead = Webhook::new(
        WebhookConfig {
            url: Some(Secret::new("http://127.0.0.1:9/hook?token=w3bt0ken")),
            ..Default::default()
        },
        http_client(),
    );
    let r = format!("{:?}", dead.send(std::slice::from_ref(&msg)).await);
    assert!(r.contains("connect") && !r.contains("w3bt0ken"), "{r}");
}
