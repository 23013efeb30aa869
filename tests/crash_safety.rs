//! kill -9 under load, then restart: every alert that got a 200 is present.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{alert, webhook, Server};
use stormcast::domain::Labels;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_alerts_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let mut server = Server::start(&db, None);
    let url = server.url("/api/v1/alerts");
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    let mut tasks = Vec::new();
    for worker in 0..8 {
        let (url, acked, client) = (url.clone(), acked.clone(), client.clone());
        tasks.push(tokio::spawn(async move {
            for batch in 0.. {
                let mut ids = Vec::new();
                let alerts: Vec<_> = (0..20)
                    .map(|i| {
                        let pod = format!("w{worker}-b{batch}-p{i}");
                        let labels = [
                            ("alertname", "KubePodNotReady"),
                            ("namespace", "load"),
                            ("pod", pod.as_str()),
                            ("cluster", "crash"),
                        ];
                        ids.push(
                            labels
                                .iter()
                                .copied()
                                .collect::<Labels>()
                                .fingerprint()
                                .to_string(),
                        );
                        alert(
                            &labels,
                            "firing",
                            "2026-11-01T00:00:00Z",
                            "0001-01-01T00:00:00Z",
                        )
                    })
                    .collect();
                let body = webhook("http://am:9093", &alerts);
                match client.post(&url).json(&body).send().await {
                    Ok(r) if r.status().is_success() => acked.lock().unwrap().extend(ids),
                    Ok(_) => {}
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill9();
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 100,
        "too little load before the kill: {}",
        acked.len()
    );

    let server = Server::start(&db, None);
    let stored: Vec<serde_json::Value> = reqwest::get(server.url("/api/v1/alerts?limit=1000000"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let present: HashSet<String> = stored
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    let lost: Vec<_> = acked.difference(&present).collect();
    eprintln!(
        "acknowledged {} alerts before SIGKILL; {} present after restart",
        acked.len(),
        present.len()
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged alerts lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_recovers_state_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let mut server = Server::start(&db, None);
    let client = reqwest::Client::new();
    // Recent times, so that retention (7d by default) keeps everything.
    let starts = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let ended = (chrono::Utc::now() - chrono::Duration::minutes(30)).to_rfc3339();
    for i in 0..30 {
        let pod = format!("api-{i}");
        let labels = [
            ("alertname", "KubePodCrashLooping"),
            ("namespace", "shop"),
            ("pod", pod.as_str()),
            ("cluster", "c1"),
        ];
        let status = if i % 3 == 0 { "resolved" } else { "firing" };
        let ends = if i % 3 == 0 {
            ended.as_str()
        } else {
            "0001-01-01T00:00:00Z"
        };
        for _ in 0..2 {
            let body = webhook(
                "http://am:9093",
                &[alert(&labels, "firing", &starts, "0001-01-01T00:00:00Z")],
            );
            client
                .post(server.url("/api/v1/alerts"))
                .json(&body)
                .send()
                .await
                .unwrap();
        }
        let body = webhook("http://am:9093", &[alert(&labels, status, &starts, ends)]);
        let r = client
            .post(server.url("/api/v1/alerts"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    let snapshot = |s: &Server| {
        let url = s.url("/api/v1/alerts?limit=100000");
        let inc = s.url("/api/v1/incidents?limit=100000");
        async move {
            let mut alerts: Vec<serde_json::Value> =
                reqwest::get(url).await.unwrap().json().await.unwrap();
            alerts.sort_by_key(|a| a["id"].as_str().unwrap().to_owned());
            let mut incidents: Vec<serde_json::Value> =
                reqwest::get(inc).await.unwrap().json().await.unwrap();
            incidents.sort_by_key(|i| i["id"].as_str().unwrap().to_owned());
            (alerts, incidents)
        }
    };
    // Let the engine's ticker resolve incidents whose hold has already passed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = snapshot(&server).await;
    assert_eq!(before.0.len(), 30);
    assert!(
        server.terminate().success(),
        "clean exit on SIGTERM: {}",
        server.logs()
    );
    let server = Server::start(&db, None);
    let after = snapshot(&server).await;
    assert_eq!(before.0, after.0, "alert state differs after restart");
    assert_eq!(before.1, after.1, "incidents differ after restart");
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("stormcast_alerts_active{cluster=\"c1\"} 20"),
        "{metrics}"
    );
}

/// The newest snapshot file is damaged while the service is down: start-up
/// sets it aside, loads the previous one and re-applies the journal past it,
/// and every alert is back as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_snapshot_restarts_from_the_previous_one_and_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let client = reqwest::Client::new();
    let starts = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let send = |s: &Server, from: usize, to: usize| {
        let (url, client, starts) = (s.url("/api/v1/alerts"), client.clone(), starts.clone());
        async move {
            for i in from..to {
                let pod = format!("web-{i}");
                let labels = [
                    ("alertname", "KubePodNotReady"),
                    ("namespace", "shop"),
                    ("pod", pod.as_str()),
                    ("cluster", "c1"),
                ];
                let body = webhook(
                    "http://am:9093",
                    &[alert(&labels, "firing", &starts, "0001-01-01T00:00:00Z")],
                );
                let r = client.post(&url).json(&body).send().await.unwrap();
                assert!(r.status().is_success());
            }
        }
    };
    let alerts = |s: &Server| {
        let url = s.url("/api/v1/alerts?limit=100000");
        async move {
            let mut a: Vec<serde_json::Value> =
                reqwest::get(url).await.unwrap().json().await.unwrap();
            a.sort_by_key(|a| a["id"].as_str().unwrap().to_owned());
            a
        }
    };
    // Two runs, each ending in a snapshot at shutdown: generations 1 and 2.
    let mut server = Server::start(&db, None);
    send(&server, 0, 10).await;
    assert!(server.terminate().success(), "{}", server.logs());
    let mut server = Server::start(&db, None);
    send(&server, 5, 20).await;
    let before = alerts(&server).await;
    assert_eq!(before.len(), 20);
    assert!(server.terminate().success(), "{}", server.logs());

    let snapshots = db.join("snapshots");
    let mut names: Vec<String> = std::fs::read_dir(&snapshots)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "the previous generation is kept: {names:?}");
    let newest = snapshots.join(&names[1]);
    let mut bytes = std::fs::read(&newest).unwrap();
    let at = bytes.windows(6).position(|w| w == b"web-17").unwrap();
    bytes[at + 4] = b'9';
    std::fs::write(&newest, bytes).unwrap();

    let server = Server::start(&db, None);
    let after = alerts(&server).await;
    assert_eq!(after, before, "alert state differs after the fallback");
    let logs = server.logs();
    assert!(logs.contains("Snapshot file is damaged"), "{logs}");
    assert!(logs.contains(&names[1]), "the log names the file: {logs}");
    assert!(snapshots.join(format!("{}.damaged", names[1])).exists());
}
