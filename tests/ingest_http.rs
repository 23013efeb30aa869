//! The webhook receiver over real HTTP: status codes, field-naming errors, auth,
//! idempotent re-delivery and out-of-order deliveries.

mod common;

use common::{alert, webhook, Server};
use serde_json::{json, Value};

const ZERO: &str = "0001-01-01T00:00:00Z";

async fn post(s: &Server, body: Vec<u8>, content_type: &str, auth: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(s.url("/api/v1/alerts"))
        .header("content-type", content_type)
        .body(body);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn post_json(s: &Server, v: &Value) -> (u16, Value) {
    post(s, serde_json::to_vec(v).unwrap(), "application/json", None).await
}

async fn get(s: &Server, path: &str) -> Value {
    reqwest::get(s.url(path))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("db"), None);
    let good = alert(
        &[
            ("alertname", "KubeNodeNotReady"),
            ("node", "n1"),
            ("cluster", "c1"),
        ],
        "firing",
        "2026-11-01T00:00:00Z",
        ZERO,
    );

    let cases: Vec<(Vec<u8>, &str, u16, &str)> = vec![
        (b"{not json".to_vec(), "application/json", 400, "body"),
        (
            serde_json::to_vec(&json!({"version": "3", "alerts": [good.clone()]})).unwrap(),
            "application/json",
            400,
            "version",
        ),
        (
            serde_json::to_vec(&webhook("", &[])).unwrap(),
            "application/json",
            400,
            "alerts",
        ),
        (
            serde_json::to_vec(&webhook(
                "",
                &[alert(&[], "firing", "2026-11-01T00:00:00Z", ZERO)],
            ))
            .unwrap(),
            "application/json",
            400,
            "alerts[0].labels",
        ),
        (
            serde_json::to_vec(&webhook(
                "",
                &[alert(
                    &[("node", "n1")],
                    "firing",
                    "2026-11-01T00:00:00Z",
                    ZERO,
                )],
            ))
            .unwrap(),
            "application/json",
            400,
            "alerts[0].labels.alertname",
        ),
        (
            serde_json::to_vec(&webhook(
                "",
                &[alert(
                    &[("alertname", "X"), ("bad-name", "v")],
                    "firing",
                    "2026-11-01T00:00:00Z",
                    ZERO,
                )],
            ))
            .unwrap(),
            "application/json",
            400,
            "alerts[0].labels.bad-name",
        ),
        (
            serde_json::to_vec(&webhook(
                "",
                &[alert(
                    &[("alertname", "X")],
                    "firing",
                    "2026-13-01T00:00:00Z",
                    ZERO,
                )],
            ))
            .unwrap(),
            "application/json",
            400,
            "alerts[0].startsAt",
        ),
        (
            serde_json::to_vec(&webhook(
                "",
                &[alert(
                    &[("alertname", "X")],
                    "resolved",
                    "2026-11-01T00:00:00Z",
                    "soon",
                )],
            ))
            .unwrap(),
            "application/json",
            400,
            "alerts[0].endsAt",
        ),
    ];
    for (body, ct, want, field) in cases {
        let (status, resp) = post(&s, body, ct, None).await;
        assert_eq!(status, want, "{resp}");
        assert_eq!(resp["field"], field, "{resp}");
        assert_eq!(resp["status"], "error");
    }

    // Invalid UTF-8 inside a label value.
    let mut raw = serde_json::to_vec(&webhook("", std::slice::from_ref(&good))).unwrap();
    let at = raw.windows(2).position(|w| w == b"n1").unwrap();
    raw[at] = 0xc3;
    raw[at + 1] = 0x28;
    let (status, resp) = post(&s, raw, "application/json", None).await;
    assert_eq!(status, 400, "{resp}");

    // Wrong content type.
    let (status, _) = post(
        &s,
        serde_json::to_vec(&webhook("", std::slice::from_ref(&good))).unwrap(),
        "text/plain",
        None,
    )
    .await;
    assert_eq!(status, 415);

    // 100k labels: rejected by the label limit, not by running out of memory.
    let mut many: Vec<(String, String)> = (0..100_000)
        .map(|i| (format!("l{i}"), "v".into()))
        .collect();
    many.push(("alertname".into(), "X".into()));
    let refs: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let (status, resp) = post_json(
        &s,
        &webhook("", &[alert(&refs, "firing", "2026-11-01T00:00:00Z", ZERO)]),
    )
    .await;
    assert_eq!(status, 400, "{resp}");
    assert_eq!(resp["field"], "alerts[0].labels");

    // Over the body limit (8 MiB by default).
    let huge = vec![b' '; 9 * 1024 * 1024];
    let (status, resp) = post(&s, huge, "application/json", None).await;
    assert_eq!(status, 413, "{resp}");

    // None of it was stored.
    let alerts = get(&s, "/api/v1/alerts").await;
    assert_eq!(alerts.as_array().unwrap().len(), 0, "{alerts}");
    let metrics = reqwest::get(s.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("stormcast_ingest_rejections_total{reason=\"bad_payload\"} 10"),
        "{metrics}"
    );
    assert!(
        metrics.contains("stormcast_ingest_rejections_total{reason=\"too_large\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn redelivery_is_idempotent_and_late_deliveries_never_resurrect() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("db"), None);
    let labels = [
        ("alertname", "KubePodCrashLooping"),
        ("namespace", "shop"),
        ("pod", "cart-7d9f-x2"),
        ("cluster", "prod-bj-1"),
    ];
    let firing = webhook(
        "http://am:9093",
        &[alert(&labels, "firing", "2026-11-01T00:00:00Z", ZERO)],
    );
    let resolved = webhook(
        "http://am:9093",
        &[alert(
            &labels,
            "resolved",
            "2026-11-01T00:00:00Z",
            "2026-11-01T00:10:00Z",
        )],
    );

    let (st, first) = post_json(&s, &firing).await;
    assert_eq!(st, 200);
    assert_eq!(first["new"], 1);
    // group_interval re-send and the HA twin's copy.
    for _ in 0..2 {
        let (st, again) = post_json(&s, &firing).await;
        assert_eq!(st, 200);
        assert_eq!(again["unchanged"], 1, "{again}");
    }
    let (_, r) = post_json(&s, &resolved).await;
    assert_eq!(r["resolved"], 1, "{r}");
    // A delayed copy of the old firing delivery arrives after the resolve.
    let (st, late) = post_json(&s, &firing).await;
    assert_eq!(st, 200);
    assert_eq!(late["stale"], 1, "{late}");

    let alerts = get(&s, "/api/v1/alerts").await;
    let a = &alerts.as_array().unwrap()[0];
    assert_eq!(a["status"], "resolved");
    assert_eq!(a["deliveries"], 5);
    assert_eq!(a["flaps"], 0);

    // A genuinely new episode fires again and counts as a flap.
    let refire = webhook(
        "http://am:9093",
        &[alert(&labels, "firing", "2026-11-01T00:20:00Z", ZERO)],
    );
    let (_, r) = post_json(&s, &refire).await;
    assert_eq!(r["refired"], 1, "{r}");
    let alerts = get(&s, "/api/v1/alerts?status=firing").await;
    assert_eq!(alerts.as_array().unwrap().len(), 1);
    assert_eq!(alerts[0]["flaps"], 1);
}

#[tokio::test]
async fn sources_authenticate_and_name_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("stormcast.yaml");
    std::fs::write(dir.path().join("sh.token"), "sh-token\n").unwrap();
    std::fs::write(
        &cfg,
        r#"
sources:
  - name: bj
    cluster: prod-bj-1
    bearer_token: bj-token
  - name: sh
    bearer_token_file: sh.token
  - name: gz
    cluster: prod-gz-1
    basic_auth:
      username: alertmanager
      password: gz-pass
"#,
    )
    .unwrap();
    let s = Server::start(&dir.path().join("db"), Some(&cfg));
    let body = serde_json::to_vec(&webhook(
        "http://alertmanager.prod-sh-2.example:9093",
        &[alert(
            &[("alertname", "TargetDown"), ("job", "node-exporter")],
            "firing",
            "2026-11-01T00:00:00Z",
            ZERO,
        )],
    ))
    .unwrap();

    let (st, _) = post(&s, body.clone(), "application/json", None).await;
    assert_eq!(st, 401);
    let (st, _) = post(&s, body.clone(), "application/json", Some("Bearer wrong")).await;
    assert_eq!(st, 403);
    let (st, _) = post(
        &s,
        body.clone(),
        "application/json",
        Some("Bearer bj-token"),
    )
    .await;
    assert_eq!(st, 200);
    let (st, _) = post(
        &s,
        body.clone(),
        "application/json",
        Some("Bearer sh-token"),
    )
    .await;
    assert_eq!(st, 200);
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alertmanager:gz-pass")
    );
    let (st, _) = post(&s, body.clone(), "application/json", Some(&basic)).await;
    assert_eq!(st, 200);

    // Same labels from three sources: three clusters, three identities.
    let alerts = get(&s, "/api/v1/alerts").await;
    let mut clusters: Vec<String> = alerts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["cluster"].as_str().unwrap().to_owned())
        .collect();
    clusters.sort();
    assert_eq!(
        clusters,
        ["alertmanager.prod-sh-2.example", "prod-bj-1", "prod-gz-1"]
    );
    assert!(!s.logs().contains("bj-token") && !s.logs().contains("gz-pass"));
}

#[test]
fn refuses_a_public_address_without_auth() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stormcast"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("db"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.listen") && err.contains("allow_unauthenticated"),
        "{err}"
    );
    assert!(
        !dir.path().join("db").exists(),
        "nothing written before validation passes"
    );
}
