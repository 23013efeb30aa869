//! Dispatcher behaviour on a virtual clock: Retry-After is honoured, a
//! permanent failure stays visible (outbox, metrics) and does not block
//! other incidents, the circuit breaker stops hammering a dead service, and
//! a duplicate key is never queued twice.

mod notify_common;

use std::sync::Arc;

use chrono::Duration;
use notify_common::*;
use prometheus_client::registry::Registry;
use stormcast::config::{PromDuration, Secret};
use stormcast::notify::dingtalk::{Dingtalk, DingtalkConfig};
use stormcast::notify::dispatch::{ChannelSpec, Dispatcher, NotifyMetrics, RetryPolicy};
use stormcast::notify::notifier::{http_client, Links};
use stormcast::notify::outbox::{EntryState, Outbox};
use stormcast::notify::slack::{Slack, SlackConfig};
use stormcast::notify::MessageKind;
use stormcast::store::Store;

fn setup(chan: ChannelSpec) -> (Dispatcher, Outbox, Registry) {
    let store = Store::temporary().unwrap();
    let outbox = Outbox::open(&store).unwrap();
    let mut reg = Registry::default();
    let metrics = NotifyMetrics::register(&mut reg);
    let d = Dispatcher::new(
        outbox.clone(),
        vec![chan],
        RetryPolicy::default(),
        metrics,
        None,
    );
    (d, outbox, reg)
}

fn enqueue(d: &Dispatcher, id: &str, now: stormcast::domain::Timestamp) {
    let inc = incident(id, now, &[("alertname", "KubeNodeNotReady")], &["c1"]);
    let n = message(&inc, "ops", MessageKind::First, 0).notification;
    d.enqueue(&[n], now, |_| Some((inc.clone(), Links::default())))
        .unwrap();
}

fn metrics_text(reg: &Registry) -> String {
    let mut s = String::new();
    prometheus_client::encoding::text::encode(&mut s, reg).unwrap();
    s
}

#[tokio::test]
async fn retry_after_is_honoured_and_duplicates_are_not_queued() {
    let st: StandIn = Arc::default();
    let base = stand_in(st.clone()).await;
    let slack = Slack::new(
        SlackConfig {
            api_url: Some(Secret::new(format!("{base}/services/x"))),
            timeout: PromDuration::secs(2),
            ..Default::default()
        },
        http_client(),
    );
    let (d, outbox, reg) = setup(("ops".into(), "ops/slack[0]".into(), Arc::new(slack)));
    let t0 = t("2026-11-23T03:00:00Z");
    enqueue(&d, "inc-a", t0);
    enqueue(&d, "inc-a", t0); // same key: ignored
    assert_eq!(outbox.depth(), 1);
    st.lock()
        .unwrap()
        .answers
        .push_back(Answer::Status(429, Some(30)));
    let r = d.step(t0).await.unwrap();
    assert_eq!((r.attempts, r.retried), (1, 1));
    let e = &outbox.entries().unwrap()[0];
    assert_eq!(e.next_attempt, t0 + Duration::seconds(30));
    assert_eq!(e.last_reason.as_deref(), Some("rate_limited"));
    // Nothing before Retry-After passes.
    assert_eq!(
        d.step(t0 + Duration::seconds(29)).await.unwrap().attempts,
        0
    );
    let r = d.step(t0 + Duration::seconds(30)).await.unwrap();
    assert_eq!(r.delivered, 1);
    assert_eq!(outbox.depth(), 0);
    // Delivered keys are remembered: re-planning the same message is a no-op.
    enqueue(&d, "inc-a", t0 + Duration::seconds(31));
    assert_eq!(outbox.depth(), 0);
    let m = metrics_text(&reg);
    assert!(
        m.contains(r#"stormcast_notify_messages_total{receiver="ops",outcome="delivered"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"stormcast_notify_failures_total{receiver="ops",reason="rate_limited"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn permanent_failures_stay_visible_and_the_breaker_opens() {
    let st: StandIn = Arc::default();
    let base = stand_in(st.clone()).await;
    let robot = Dingtalk::new(
        "ops/dingtalk[0]".into(),
        DingtalkConfig {
            url: Some(Secret::new(format!("{base}/robot/send?access_token=t0k"))),
            timeout: PromDuration::secs(2),
            ..Default::default()
        },
        http_client(),
    );
    let (d, outbox, reg) = setup(("ops".into(), "ops/dingtalk[0]".into(), Arc::new(robot)));
    let t0 = t("2026-11-23T03:00:00Z");
    enqueue(&d, "inc-a", t0);
    st.lock()
        .unwrap()
        .answers
        .push_back(Answer::Errcode(310000, "sign not match"));
    d.step(t0).await.unwrap();
    let e = &outbox.entries().unwrap()[0];
    assert_eq!(e.state, EntryState::Failed);
    assert!(e
        .last_error
        .as_ref()
        .unwrap()
        .contains("robot ops/dingtalk[0]"));
    assert!(!e.last_error.as_ref().unwrap().contains("t0k"));
    let m = metrics_text(&reg);
    assert!(m.contains(r#"reason="dingtalk_config"} 1"#), "{m}");
    assert!(m.contains("stormcast_notify_outbox_depth 1"), "{m}");

    // A failed message does not hold back other incidents.
    enqueue(&d, "inc-b", t0);
    assert_eq!(
        d.step(t0 + Duration::seconds(1)).await.unwrap().delivered,
        1
    );

    // Five failures in a row open the circuit: no requests for a minute.
    st.lock().unwrap().default = Some(Answer::Status(500, None));
    enqueue(&d, "inc-c", t0);
    let mut now = t0 + Duration::seconds(2);
    let mut attempts = 0;
    while attempts < 5 {
        attempts += d.step(now).await.unwrap().attempts;
        now += Duration::seconds(1);
    }
    let before = st.lock().unwrap().received.len();
    let open_from = now;
    while now < open_from + Duration::seconds(55) {
        d.step(now).await.unwrap();
        now += Duration::seconds(1);
    }
    assert_eq!(
        st.lock().unwrap().received.len(),
        before,
        "breaker must hold requests back"
    );
    st.lock().unwrap().default = Some(Answer::Ok);
    while outbox
        .entries()
        .unwrap()
        .iter()
        .any(|e| e.state == EntryState::Pending)
    {
        d.step(now).await.unwrap();
        now += Duration::seconds(1);
        assert!(now < t0 + Duration::minutes(30), "never recovered");
    }
    // The failed entry stays visible until retention prunes it.
    assert_eq!(outbox.depth(), 1);
    assert_eq!(outbox.prune_failed(t0).unwrap(), 0);
    assert_eq!(outbox.prune_failed(t0 + Duration::days(7)).unwrap(), 1);
    assert_eq!(outbox.depth(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_channel_does_not_delay_the_others() {
    let hung: StandIn = Arc::default();
    hung.lock().unwrap().default = Some(Answer::Hang);
    let fine: StandIn = Arc::default();
    let hung_url = stand_in(hung.clone()).await;
    let fine_url = stand_in(fine.clone()).await;
    let mk = |url: String| {
        Arc::new(Slack::new(
            SlackConfig {
                api_url: Some(Secret::new(url)),
                timeout: PromDuration::secs(30),
                ..Default::default()
            },
            http_client(),
        ))
    };
    let store = Store::temporary().unwrap();
    let outbox = Outbox::open(&store).unwrap();
    let d = Arc::new(Dispatcher::new(
        outbox.clone(),
        vec![
            (
                "ops".into(),
                "ops/slack[0]".into(),
                mk(format!("{hung_url}/a")),
            ),
            (
                "ops".into(),
                "ops/slack[1]".into(),
                mk(format!("{fine_url}/b")),
            ),
        ],
        RetryPolicy::default(),
        NotifyMetrics::default(),
        None,
    ));
    let clock: Arc<dyn stormcast::engine::Clock> = Arc::new(stormcast::engine::SystemClock);
    let now = clock.now();
    enqueue(&d, "inc-a", now);
    enqueue(&d, "inc-b", now);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let wake = Arc::new(tokio::sync::Notify::new());
    let task = tokio::spawn(d.clone().run(clock, wake, stop_rx));
    let start = std::time::Instant::now();
    while fine.lock().unwrap().received.len() < 2 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "healthy channel was held up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        hung.lock().unwrap().received.len(),
        1,
        "the hung channel is still waiting on its first request"
    );
    let _ = stop_tx.send(true);
    task.abort();
}
