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

/// A message whose DingTalk body is about `kib` KiB: a long explanation of
/// Chinese sentences, one per line, plus a fenced block.
fn big_incident(kib: usize) -> stormcast::domain::Incident {
    let mut inc = hostile();
    let sentence = "节点磁盘已满，导致该节点上的所有 Pod 被驱逐，请检查日志轮转配置。";
    let lines = kib * 1024 / sentence.len();
    inc.root_cause.explanation = (0..lines)
        .map(|i| format!("{i:05} {sentence}"))
        .collect::<Vec<_>>()
        .join(" ");
    inc
}

/// The markdown text of a part without its `**(i/n)**` marker and mentions.
fn part_text(body: &serde_json::Value, i: usize, n: usize) -> String {
    let text = body["markdown"]["text"].as_str().unwrap();
    let marker = format!("**({i}/{n})**\n\n");
    assert!(text.starts_with(&marker), "part {i}: {}", &text[..40]);
    text[marker.len()..]
        .trim_end()
        .trim_end_matches("@13800000000")
        .to_owned()
}

#[tokio::test]
async fn dingtalk_large_bodies_are_split_in_order_signed_and_rate_limited() {
    use stormcast::notify::dispatch::{Dispatcher, NotifyMetrics, RetryPolicy};
    use stormcast::notify::outbox::Outbox;
    use stormcast::notify::render::{self, Escape};

    let st: StandIn = Arc::default();
    st.lock().unwrap().secret = Some("SECtestsecret".into());
    let base = stand_in(st.clone()).await;
    let robot = Dingtalk::new(
        "ops/dingtalk[0]".into(),
        DingtalkConfig {
            url: Some(Secret::new(format!("{base}/robot/send?access_token=t0k3n"))),
            secret: Some(Secret::new("SECtestsecret")),
            at_mobiles: vec!["13800000000".into()],
            timeout: PromDuration::secs(2),
            max_per_minute: 2,
            ..Default::default()
        },
        http_client(),
    );
    let big = big_incident(45);
    let msg = message(&big, "ops", MessageKind::First, 0);
    assert_eq!(robot.parts(std::slice::from_ref(&msg)), 3);
    let store = stormcast::store::Store::temporary().unwrap();
    let outbox = Outbox::open(&store).unwrap();
    let d = Dispatcher::new(
        outbox.clone(),
        vec![("ops".into(), "ops/dingtalk[0]".into(), Arc::new(robot))],
        RetryPolicy::default(),
        NotifyMetrics::default(),
        None,
    );
    let t0 = t("2026-11-23T03:00:00Z");
    let small = incident(
        "inc-small",
        t0,
        &[("alertname", "KubePodNotReady")],
        &["c1"],
    );
    for inc in [&big, &small] {
        let n = message(inc, "ops", MessageKind::First, 0).notification;
        let links = msg.links.clone();
        d.enqueue(&[n], t0, |_| Some(((*inc).clone(), links.clone())))
            .unwrap();
    }

    // Two requests a minute: the first two parts now, the third (then the
    // other incident) a minute later; each part is one request.
    let r = d.step(t0).await.unwrap();
    assert_eq!((r.attempts, r.delivered), (2, 0));
    assert_eq!(outbox.entries().unwrap()[0].parts_sent, 2);
    let r = d.step(t0 + chrono::Duration::seconds(30)).await.unwrap();
    assert_eq!(r.attempts, 0, "the robot's minute is used up");
    let r = d.step(t0 + chrono::Duration::seconds(60)).await.unwrap();
    assert_eq!((r.attempts, r.delivered), (2, 2));
    assert_eq!(outbox.depth(), 0);

    let s = st.lock().unwrap();
    assert_eq!(s.bad_signatures, 0, "every part is signed");
    assert_eq!(s.received.len(), 4);
    let mut text = Vec::new();
    for (i, got) in s.received[..3].iter().enumerate() {
        let bytes = serde_json::to_vec(&got.body).unwrap().len();
        assert!(bytes < 20_000, "part {}: {bytes} bytes", i + 1);
        assert!(
            got.query.starts_with("access_token=t0k3n&timestamp="),
            "{}",
            got.query
        );
        let title = got.body["markdown"]["title"].as_str().unwrap();
        assert!(title.ends_with(&format!("({}/3)", i + 1)), "{title}");
        // Only the first part mentions.
        let mentions = got.body["at"]["atMobiles"].as_array().unwrap().len();
        assert_eq!(mentions, usize::from(i == 0), "part {}", i + 1);
        text.push(part_text(&got.body, i + 1, 3));
    }
    assert!(s.received[3].body["markdown"]["text"]
        .as_str()
        .unwrap()
        .contains("KubePodNotReady"));
    // The parts put back together are the whole message, in order.
    let whole = render::render(
        Escape::Dingtalk,
        render::pick(&msg, None, render::DINGTALK),
        &msg,
    )
    .unwrap();
    let words = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(words(&text.join("\n")), words(&whole));
}

#[tokio::test]
async fn dingtalk_absurd_bodies_are_cut_after_max_parts_with_a_link() {
    let st: StandIn = Arc::default();
    let base = stand_in(st.clone()).await;
    let r = Dingtalk::new(
        "ops/dingtalk[0]".into(),
        DingtalkConfig {
            url: Some(Secret::new(format!("{base}/robot/send?access_token=t"))),
            max_parts: 2,
            timeout: PromDuration::secs(2),
            ..Default::default()
        },
        http_client(),
    );
    let msg = message(&big_incident(300), "ops", MessageKind::First, 0);
    assert_eq!(r.parts(std::slice::from_ref(&msg)), 2);
    assert_eq!(
        r.send(std::slice::from_ref(&msg)).await,
        SendResult::Delivered
    );
    let s = st.lock().unwrap();
    assert_eq!(s.received.len(), 2);
    for got in &s.received {
        let bytes = serde_json::to_vec(&got.body).unwrap().len();
        assert!(bytes < 20_000, "{bytes} bytes");
    }
    let last = s.received[1].body["markdown"]["text"].as_str().unwrap();
    assert!(last.starts_with("**(2/2)**"), "{}", &last[..20]);
    assert!(
        last.contains("parts needed, at most 2 are sent; full incident: [https://stormcast.example/incidents/inc-9]"),
        "{}",
        &last[last.len() - 300..]
    );
}

#[test]
fn dingtalk_a_huge_title_alone_cannot_overflow_a_body() {
    // A label value of 25 KB ends up in the title (the alert name here).
    let huge = "NodeFilesystemAlmostOutOfSpace".repeat(850);
    let inc = incident(
        "inc-title",
        t("2026-11-23T03:00:00Z"),
        &[("alertname", huge.as_str()), ("severity", "critical")],
        &["c1"],
    );
    let msg = message(&inc, "ops", MessageKind::First, 0);
    let bodies = stormcast::notify::dingtalk::payloads(&DingtalkConfig::default(), &[msg]).unwrap();
    assert!(!bodies.is_empty());
    for b in &bodies {
        let bytes = serde_json::to_vec(b).unwrap().len();
        assert!(bytes < 20_000, "{bytes} bytes");
        let title = b["markdown"]["title"].as_str().unwrap();
        assert!(
            title.chars().count() <= 220,
            "{} chars",
            title.chars().count()
        );
    }
    // The text still carries the whole name, split if it must be.
    let text: String = bodies
        .iter()
        .map(|b| b["markdown"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert!(text.matches("NodeFilesystemAlmostOutOfSpace").count() >= 850);
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

#[tokio::test]
async fn dingtalk_digests_merge_only_what_fits_in_one_request() {
    use stormcast::notify::dispatch::{Dispatcher, NotifyMetrics, RetryPolicy};

    let st: StandIn = Arc::default();
    let base = stand_in(st.clone()).await;
    let robot = robot(&format!("{base}/robot/send?access_token=t"), None);
    let store = stormcast::store::Store::temporary().unwrap();
    let outbox = stormcast::notify::outbox::Outbox::open(&store).unwrap();
    let d = Dispatcher::new(
        outbox.clone(),
        vec![("ops".into(), "ops/dingtalk[0]".into(), Arc::new(robot))],
        RetryPolicy::default(), // a backlog of 4 is merged
        NotifyMetrics::default(),
        None,
    );
    let t0 = t("2026-11-23T03:00:00Z");
    let mut big = big_incident(45);
    big.id = "inc-big".into();
    let small = |id: &str| incident(id, t0, &[("alertname", "KubePodNotReady")], &["c1"]);
    for inc in [small("inc-a"), small("inc-b"), big, small("inc-c")] {
        let m = message(&inc, "ops", MessageKind::First, 0);
        d.enqueue(&[m.notification], t0, |_| {
            Some((inc.clone(), m.links.clone()))
        })
        .unwrap();
    }
    let r = d.step(t0).await.unwrap();
    assert_eq!((r.attempts, r.delivered), (5, 4));
    let s = st.lock().unwrap();
    let texts: Vec<&str> = s
        .received
        .iter()
        .map(|r| r.body["markdown"]["text"].as_str().unwrap())
        .collect();
    // The two small messages before the big one merge; the big one cannot
    // join a digest, so it goes out alone in three parts; then the rest.
    assert!(
        texts[0].starts_with("### stormcast digest: 2 messages"),
        "{}",
        &texts[0][..60]
    );
    for (i, text) in texts[1..4].iter().enumerate() {
        assert!(text.starts_with(&format!("**({}/3)**", i + 1)), "{i}");
    }
    assert!(!texts[4].contains("digest") && texts[4].contains("KubePodNotReady"));
    for r in &s.received {
        assert!(serde_json::to_vec(&r.body).unwrap().len() < 20_000);
    }
}
