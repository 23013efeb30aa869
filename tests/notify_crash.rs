//! kill -9 with a full outbox, then restart: every planned message is
//! delivered (at least once). Runs the built binary against a webhook stand-in.

mod notify_common;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify_common::*;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(cfg: &std::path::Path, data: &std::path::Path, port: u16) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_stormcast"))
            .arg("serve")
            .arg("--config")
            .arg(cfg)
            .arg("--data-dir")
            .arg(data)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "stormcast did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_a_full_outbox_then_restart_delivers_everything() {
    let hook: StandIn = Arc::default();
    hook.lock().unwrap().default = Some(Answer::Status(503, None));
    let hook_url = stand_in(hook.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("stormcast.yaml");
    std::fs::write(
        &cfg,
        format!(
            "route: {{receiver: hook, group_wait: 0s, repeat_interval: 24h}}\n\
             receivers:\n  - name: hook\n    webhook_configs: [{{url: '{hook_url}/hook?token=x'}}]\n"
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();

    let mut first = spawn(&cfg, &data, port);
    wait_ready(&client, &base).await;
    let now = chrono::Utc::now().to_rfc3339();
    let n = 12;
    let alerts: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"status":"firing","labels":{{"alertname":"KubeNodeNotReady","node":"n{i}","cluster":"prod-1","severity":"critical"}},
                "annotations":{{}},"startsAt":"{now}","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prom/graph","fingerprint":""}}"#
            )
        })
        .collect();
    let body = format!(
        r#"{{"version":"4","groupKey":"{{}}:{{}}","status":"firing","receiver":"stormcast","externalURL":"http://am.example:9093","alerts":[{}]}}"#,
        alerts.join(",")
    );
    let r = client
        .post(format!("{base}/api/v1/alerts"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());

    // Wait until every message is in the outbox and the hook has refused some.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: serde_json::Value = client
            .get(format!("{base}/api/v1/notifications"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let pending = v["pending"].as_array().unwrap();
        if pending.len() == n && pending.iter().any(|e| e["attempts"].as_u64() > Some(0)) {
            assert_eq!(pending[0]["last_reason"], "http_5xx");
            break;
        }
        assert!(Instant::now() < deadline, "outbox never filled: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!("stormcast_notify_outbox_depth {n}")),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"stormcast_notify_failures_total{receiver="hook",reason="http_5xx"}"#),
        "{metrics}"
    );

    // kill -9, the service comes back, and so does the hook.
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    hook.lock().unwrap().default = Some(Answer::Ok);
    let _second = spawn(&cfg, &data, port);
    wait_ready(&client, &base).await;

    let deadline = Instant::now() + Duration::from_secs(60);
    let delivered = loop {
        let keys: HashSet<String> = hook
            .lock()
            .unwrap()
            .received
            .iter()
            .filter(|r| r.ok)
            .map(|r| r.body["key"].as_str().unwrap().to_owned())
            .collect();
        if keys.len() >= n {
            break keys;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} delivered after restart",
            keys.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(delivered.len(), n, "{delivered:?}");
    assert!(delivered.iter().all(|k| k.ends_with("/hook/0")));
    let v: serde_json::Value = client
        .get(format!("{base}/api/v1/notifications"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["pending"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(v["delivered"].as_array().unwrap().len(), n);
}
