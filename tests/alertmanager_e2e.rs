//! End to end with a real Alertmanager: alerts posted to its v2 API are
//! dispatched through a `webhook_config` to stormcast, which must store them
//! under the right identity. A second webhook records the exact payloads;
//! `STORMCAST_WRITE_FIXTURES=1` saves them under testdata/webhooks/.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderMap;
use serde_json::{json, Value};
use stormcast::domain::{Fingerprint, Labels};

type Recorded = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn start_recorder() -> (u16, Recorded) {
    let recorded: Recorded = Arc::default();
    let r = recorded.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let r = r.clone();
            async move {
                r.lock().unwrap().push((headers, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, recorded)
}

struct Alertmanager(std::process::Child);

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_for<F: Fn(&Value) -> bool>(url: &str, what: &str, ok: F) -> Value {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Ok(resp) = reqwest::get(url).await {
            if let Ok(v) = resp.json::<Value>().await {
                if ok(&v) {
                    return v;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} at {url}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_alertmanager_delivers_to_stormcast() {
    let Some(am_bin) = common::external(&["prometheus-alertmanager", "alertmanager"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("stormcast.yaml");
    std::fs::write(
        &cfg,
        "sources:\n  - name: am-e2e\n    bearer_token: e2e-token\n",
    )
    .unwrap();
    let sc = common::Server::start(&dir.path().join("db"), Some(&cfg));
    let (rec_port, recorded) = start_recorder().await;

    let am_port = common::free_port();
    let am_cfg = dir.path().join("alertmanager.yml");
    std::fs::write(
        &am_cfg,
        format!(
            r#"route:
  receiver: stormcast
  group_by: [namespace]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: stormcast
    webhook_configs:
      - url: http://{sc}/api/v1/alerts
        send_resolved: true
        max_alerts: 0
        http_config:
          authorization:
            type: Bearer
            credentials: e2e-token
      - url: http://127.0.0.1:{rec_port}/hook
        send_resolved: true
"#,
            sc = sc.addr
        ),
    )
    .unwrap();
    let am_url = format!("http://127.0.0.1:{am_port}");
    let _am = Alertmanager(
        Command::new(am_bin)
            .arg(format!("--config.file={}", am_cfg.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("am").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
            .arg("--web.external-url=http://alertmanager.am-e2e.example:9093/")
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start alertmanager"),
    );
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http
        .get(format!("{am_url}/-/ready"))
        .send()
        .await
        .map(|r| r.status().is_success())
        .ok()
        != Some(true)
    {
        assert!(
            Instant::now() < deadline,
            "alertmanager did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let starts = (chrono::Utc::now() - chrono::Duration::minutes(2)).to_rfc3339();
    let alerts = json!([
        {"labels": {"alertname": "KubeNodeNotReady", "node": "prod-e2e-node03", "namespace": "kube-system", "severity": "warning", "job": "kube-state-metrics"},
         "annotations": {"summary": "Node is not ready.", "description": "prod-e2e-node03 has been unready for more than 15 minutes."},
         "startsAt": starts, "generatorURL": "http://prometheus.example/graph?g0.expr=kube_node_status_condition"},
        {"labels": {"alertname": "KubePodNotReady", "namespace": "shop", "pod": "cart-7d9f8b6c4-x2x9z", "severity": "warning", "cluster": "prod-e2e"},
         "annotations": {"summary": "Pod has been in a non-ready state for more than 15 minutes."},
         "startsAt": starts},
        {"labels": {"alertname": "TargetDown", "job": "node-exporter", "namespace": "monitoring", "service": "node-exporter", "severity": "warning"},
         "annotations": {"summary": "One or more targets are unreachable."},
         "startsAt": starts}
    ]);
    let resp = http
        .post(format!("{am_url}/api/v2/alerts"))
        .json(&alerts)
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "alertmanager refused alerts: {}",
        resp.status()
    );

    let stored = wait_for(&sc.url("/api/v1/alerts"), "3 alerts in stormcast", |v| {
        v.as_array().is_some_and(|a| a.len() == 3)
    })
    .await;
    let am_alerts: Vec<Value> = http
        .get(format!("{am_url}/api/v2/alerts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(am_alerts.len(), 3);
    for am in &am_alerts {
        let am_fp: Fingerprint = am["fingerprint"].as_str().unwrap().parse().unwrap();
        let labels: BTreeMap<String, String> =
            serde_json::from_value(am["labels"].clone()).unwrap();
        let labels: Labels = labels.into_iter().collect();
        // Our FNV-1a recomputation agrees with Alertmanager's.
        assert_eq!(labels.fingerprint(), am_fp, "fingerprint of {labels}");
        let ours = stored
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["am_fingerprint"] == json!(am_fp.to_string()))
            .unwrap_or_else(|| panic!("stormcast lacks {am_fp}: {stored}"));
        let cluster = labels
            .get("cluster")
            .unwrap_or("alertmanager.am-e2e.example");
        assert_eq!(ours["cluster"], cluster);
        assert_eq!(ours["labels"]["cluster"], cluster);
        let mut with_cluster = labels.clone();
        with_cluster.insert("cluster", cluster);
        assert_eq!(ours["id"], json!(with_cluster.fingerprint().to_string()));
        assert_eq!(ours["status"], "firing");
        assert_eq!(ours["source"], "am-e2e");
    }

    // Resolve the node alert through Alertmanager; stormcast sees the transition.
    let mut resolve = alerts[0].clone();
    resolve["endsAt"] = json!(chrono::Utc::now().to_rfc3339());
    let resp = http
        .post(format!("{am_url}/api/v2/alerts"))
        .json(&json!([resolve]))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    wait_for(
        &sc.url("/api/v1/alerts?status=resolved"),
        "the node alert resolved",
        |v| {
            v.as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x["labels"]["alertname"] == "KubeNodeNotReady")
            })
        },
    )
    .await;

    let recorded = recorded.lock().unwrap().clone();
    assert!(
        recorded.len() >= 3,
        "recorder saw {} deliveries",
        recorded.len()
    );
    for (headers, body) in &recorded {
        let ua = headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(ua.starts_with("Alertmanager/"), "{ua}");
        let v: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["version"], "4");
    }
    assert!(!sc.logs().contains("e2e-token"));
    if std::env::var("STORMCAST_WRITE_FIXTURES").as_deref() == Ok("1") {
        let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/webhooks");
        for (i, (_, body)) in recorded.iter().enumerate() {
            let v: Value = serde_json::from_slice(body).unwrap();
            let name = format!("am-0.25-{i:02}-{}.json", v["status"].as_str().unwrap());
            std::fs::write(out.join(name), serde_json::to_string_pretty(&v).unwrap()).unwrap();
        }
    }
}
