//! Silences and acknowledgements through the API and the `stormcast silence`
//! CLI, against the built binary: a silenced incident is held back until
//! the silence is expired; unknown incidents cannot be acknowledged.

mod notify_common;

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

fn cli(base: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stormcast"))
        .arg("silence")
        .args(args)
        .arg("--url")
        .arg(base)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn delivered_incidents(hook: &StandIn) -> Vec<String> {
    hook.lock()
        .unwrap()
        .received
        .iter()
        .filter(|r| r.ok)
        .map(|r| {
            r.body["incident"]["root_cause"]["labels"]["node"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_cli_holds_back_matching_incidents_until_expired() {
    let hook: StandIn = Arc::default();
    let hook_url = stand_in(hook.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("stormcast.yaml");
    std::fs::write(
        &cfg,
        format!(
            "route: {{receiver: hook, group_wait: 0s}}\n\
             receivers:\n  - name: hook\n    webhook_configs: [{{url: '{hook_url}/hook'}}]\n"
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let _p = Proc(
        Command::new(env!("CARGO_BIN_EXE_stormcast"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A malformed matcher is refused with a clear message.
    let (ok, _, err) = cli(&base, &["add", "node==\"n1\"", "-c", "x"]);
    assert!(!ok && err.contains("invalid matcher"), "{err}");
    let (ok, id, err) = cli(
        &base,
        &[
            "add",
            "node=\"n1\"",
            "-c",
            "kernel upgrade",
            "-a",
            "alice",
            "-d",
            "2h",
        ],
    );
    assert!(ok, "{err}");
    let id = id.trim().to_owned();
    let (ok, table, _) = cli(&base, &["list"]);
    assert!(
        ok && table.contains(&id) && table.contains("alice") && table.contains("node=\"n1\""),
        "{table}"
    );

    let now = chrono::Utc::now().to_rfc3339();
    let alert = |node: &str| {
        format!(
            r#"{{"status":"firing","labels":{{"alertname":"KubeNodeNotReady","node":"{node}","severity":"critical"}},
            "annotations":{{}},"startsAt":"{now}","endsAt":"0001-01-01T00:00:00Z","generatorURL":"","fingerprint":""}}"#
        )
    };
    let body = format!(
        r#"{{"version":"4","groupKey":"{{}}:{{}}","status":"firing","receiver":"x","externalURL":"http://am","alerts":[{},{}]}}"#,
        alert("n1"),
        alert("n2")
    );
    let r = client
        .post(format!("{base}/api/v1/alerts"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    let wait_for = |want: usize| {
        let hook = hook.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let got = delivered_incidents(&hook);
                if got.len() >= want {
                    return got;
                }
                assert!(Instant::now() < deadline, "only {got:?} delivered");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(wait_for(1).await, ["n2"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(delivered_incidents(&hook), ["n2"], "n1 is silenced");

    let (ok, out, err) = cli(&base, &["expire", &id]);
    assert!(ok, "{out}{err}");
    assert_eq!(wait_for(2).await, ["n2", "n1"]);

    // Acknowledge: known incident → 200, unknown → 404.
    let incidents: serde_json::Value = client
        .get(format!("{base}/api/v1/incidents"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list = incidents
        .as_array()
        .cloned()
        .or_else(|| incidents["incidents"].as_array().cloned())
        .unwrap_or_default();
    let id = list[0]["id"].as_str().unwrap();
    let r = client
        .post(format!("{base}/api/v1/incidents/{id}/ack"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .post(format!("{base}/api/v1/incidents/inc-nope/ack"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
