//! Silences and acknowledgements through the API and the `stormcast silence`
//! CLI, against the built binary: a silenced incident is held back until
//! the silence is expired; unknown incidents cannot be acknowledged. With
//! `server.api_token`, every mutating endpoint answers 401 without the token
//! or with a wrong one, and the CLI sends it. An acknowledgement survives a
//! kill -9 and restart.

mod common;
mod notify_common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify_common::*;

fn cli(base: &str, args: &[&str]) -> (bool, String, String) {
    cli_env(base, args, &[])
}

fn cli_env(base: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stormcast"))
        .arg("silence")
        .args(args)
        .arg("--url")
        .arg(base)
        .env_remove("STORMCAST_API_TOKEN")
        .envs(env.iter().copied())
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
    let cfg = hook_config(dir.path(), &hook_url);
    let (_p, base) = serve(&cfg, &dir.path().join("data"));
    let client = reqwest::Client::new();

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

    let status = post_node_down(&client, &base, &["n1", "n2"], chrono::Utc::now()).await;
    assert!(status.is_success());

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
    // The incident JSON says which silence holds it back, and the other's
    // says none does.
    let list = common::get_json(&client, &format!("{base}/api/v1/incidents")).await;
    let silenced: Vec<(String, serde_json::Value)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["root_cause"]["entity"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                i["silenced_by"].clone(),
            )
        })
        .collect();
    assert!(
        silenced.contains(&("n1".into(), serde_json::json!([id.clone()])))
            && silenced.contains(&("n2".into(), serde_json::json!([]))),
        "{silenced:?}"
    );

    let (ok, out, err) = cli(&base, &["expire", &id]);
    assert!(ok, "{out}{err}");
    assert_eq!(wait_for(2).await, ["n2", "n1"]);

    // Acknowledge: known incident → 200, unknown → 404.
    let ids = incident_ids(&client, &base).await;
    let id = &ids[0];
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

/// Posts a webhook with one firing `KubeNodeNotReady` per node; the answer's status.
async fn post_node_down(
    client: &reqwest::Client,
    base: &str,
    nodes: &[&str],
    starts: chrono::DateTime<chrono::Utc>,
) -> reqwest::StatusCode {
    let starts = starts.to_rfc3339();
    let alerts: Vec<serde_json::Value> = nodes
        .iter()
        .map(|n| {
            let labels = [
                ("alertname", "KubeNodeNotReady"),
                ("node", *n),
                ("severity", "critical"),
            ];
            common::alert(&labels, "firing", &starts, "0001-01-01T00:00:00Z")
        })
        .collect();
    client
        .post(format!("{base}/api/v1/alerts"))
        .json(&common::webhook("http://am", &alerts))
        .send()
        .await
        .unwrap()
        .status()
}

/// The ids `GET /api/v1/incidents` lists, newest first.
async fn incident_ids(client: &reqwest::Client, base: &str) -> Vec<String> {
    let list: Vec<serde_json::Value> = client
        .get(format!("{base}/api/v1/incidents"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list.iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Writes a config in `dir` that sends every incident at once to the stand-in
/// at `hook_url`; returns its path.
fn hook_config(dir: &std::path::Path, hook_url: &str) -> std::path::PathBuf {
    let cfg = dir.join("stormcast.yaml");
    std::fs::write(
        &cfg,
        format!(
            "route: {{receiver: hook, group_wait: 0s}}\n\
             receivers:\n  - name: hook\n    webhook_configs: [{{url: '{hook_url}/hook'}}]\n"
        ),
    )
    .unwrap();
    cfg
}

/// Starts `stormcast serve` on a free loopback port; returns it with its base URL
/// once ready.
fn serve(cfg: &std::path::Path, data: &std::path::Path) -> (common::Server, String) {
    let server = common::Server::start(data, Some(cfg));
    let base = server.url("");
    (server, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_token_guards_every_mutating_endpoint() {
    const TOKEN: &str = "s3cr3t-api-token-0123456789";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("api-token"), format!("{TOKEN}\n")).unwrap();
    let cfg = dir.path().join("stormcast.yaml");
    // A loopback listener: the token is still required once it is configured.
    std::fs::write(
        &cfg,
        "server: {api_token_file: api-token}\n\
         route: {receiver: nobody, group_wait: 0s}\n\
         receivers: [{name: nobody}]\n",
    )
    .unwrap();
    let (_p, base) = serve(&cfg, &dir.path().join("data"));
    let client = reqwest::Client::new();
    let now = chrono::Utc::now();
    let silence = serde_json::json!({
        "matchers": [{"name": "node", "value": "n1", "isRegex": false, "isEqual": true}],
        "startsAt": now.to_rfc3339(),
        "endsAt": (now + chrono::Duration::hours(1)).to_rfc3339(),
        "createdBy": "alice",
        "comment": "maintenance",
    });
    let with = |req: reqwest::RequestBuilder, token: Option<&str>| match token {
        Some(t) => req.bearer_auth(t),
        None => req,
    };
    let wrong = "s3cr3t-api-token-0123456780";

    // Creating a silence.
    for token in [None, Some(wrong)] {
        let r = with(client.post(format!("{base}/api/v1/silences")), token)
            .json(&silence)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "token {token:?}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let body = r.text().await.unwrap();
        assert!(
            body.contains("unauthorized") && !body.contains(TOKEN),
            "{body}"
        );
    }
    let r = with(client.post(format!("{base}/api/v1/silences")), Some(TOKEN))
        .json(&silence)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.json::<serde_json::Value>().await.unwrap()["silenceID"]
        .as_str()
        .unwrap()
        .to_owned();

    // Reading stays open (the web UI is read-only and sends no token).
    for path in [
        "/api/v1/silences",
        "/api/v1/incidents",
        "/api/v1/notifications",
        "/",
    ] {
        let r = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }

    // The webhook receiver keeps its own (source) authentication: open on
    // loopback without sources, whatever the API token.
    assert_eq!(post_node_down(&client, &base, &["n2"], now).await, 200);

    // Acknowledging an incident.
    let deadline = Instant::now() + Duration::from_secs(20);
    let incident = loop {
        if let Some(id) = incident_ids(&client, &base).await.into_iter().next() {
            break id;
        }
        assert!(Instant::now() < deadline, "no incident opened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ack = format!("{base}/api/v1/incidents/{incident}/ack");
    for token in [None, Some(wrong)] {
        let r = with(client.post(&ack), token).send().await.unwrap();
        assert_eq!(r.status(), 401, "token {token:?}");
    }
    let r = with(client.post(&ack), Some(TOKEN)).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // Expiring a silence.
    let expire = format!("{base}/api/v1/silences/{id}");
    for token in [None, Some(wrong)] {
        let r = with(client.delete(&expire), token).send().await.unwrap();
        assert_eq!(r.status(), 401, "token {token:?}");
    }
    let r = with(client.delete(&expire), Some(TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The CLI: refused without the token (with a hint), accepted with it from
    // the environment or a file.
    let add = ["add", "node=\"n3\"", "-c", "x"];
    let (ok, _, err) = cli(&base, &add);
    assert!(
        !ok && err.contains("401") && err.contains("--token-file"),
        "{err}"
    );
    let (ok, _, err) = cli_env(&base, &add, &[("STORMCAST_API_TOKEN", wrong)]);
    assert!(!ok && err.contains("401") && !err.contains(wrong), "{err}");
    let (ok, id, err) = cli_env(&base, &add, &[("STORMCAST_API_TOKEN", TOKEN)]);
    assert!(ok, "{err}");
    let token_file = dir.path().join("api-token").display().to_string();
    let (ok, out, err) = cli(&base, &["expire", id.trim(), "--token-file", &token_file]);
    assert!(ok, "{out}{err}");
    let (ok, table, err) = cli(&base, &["list", "--expired"]);
    assert!(ok && table.contains(id.trim()), "{table}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledgement_survives_a_kill_and_restart() {
    let hook: StandIn = Arc::default();
    let hook_url = stand_in(hook.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = hook_config(dir.path(), &hook_url);
    let data = dir.path().join("data");
    let (mut server, base) = serve(&cfg, &data);
    let client = reqwest::Client::new();
    assert!(post_node_down(&client, &base, &["n1"], chrono::Utc::now())
        .await
        .is_success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        if let Some(id) = incident_ids(&client, &base).await.first() {
            break id.clone();
        }
        assert!(Instant::now() < deadline, "no incident");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let state = |base: String, id: String| {
        let client = client.clone();
        async move {
            let r = client
                .get(format!("{base}/api/v1/incidents/{id}/ack"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<serde_json::Value>().await.unwrap()["acknowledged"].clone()
        }
    };
    assert_eq!(state(base.clone(), id.clone()).await, false);
    let r = client
        .post(format!("{base}/api/v1/incidents/{id}/ack"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(state(base.clone(), id.clone()).await, true);

    server.kill9();
    let port = base.rsplit(':').next().unwrap().parse().unwrap();
    let server = common::Server::start_on(&data, Some(&cfg), port);
    assert_eq!(
        state(server.url(""), id.clone()).await,
        true,
        "{}",
        server.logs()
    );
    let r = client
        .get(format!("{base}/api/v1/incidents/inc-nope/ack"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
