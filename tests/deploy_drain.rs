//! SIGTERM drains: the real binary receives alerts, gets SIGTERM, exits
//! cleanly within the grace period with its state persisted, and the next
//! start finds every alert and incident without replaying the journal.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A minimal HTTP/1.1 client: (status, body).
fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer drain-test-token\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    Ok((status, body))
}

fn start(dir: &Path, port: u16, log: &str) -> Child {
    start_with(dir, port, log, "")
}

// The caller owns the child and waits for it in `sigterm_and_wait`.
#[allow(clippy::zombie_processes)]
fn start_with(dir: &Path, port: u16, log: &str, extra_config: &str) -> Child {
    let config = dir.join("stormcast.yaml");
    std::fs::write(
        &config,
        format!(
            "sources:\n  - name: prod-a\n    cluster: prod-a\n    bearer_token: drain-test-token\n{extra_config}"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::create_dir_all(dir.join("models")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_stormcast"))
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--rules")
        .arg(dir.join("rules"))
        .arg("--models")
        .arg(dir.join("models"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(log)).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, _)) = http(port, "GET", "/readyz", "") {
            return child;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("stormcast did not become ready");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sigterm_and_wait(mut child: Child) -> (std::process::ExitStatus, Duration) {
    let started = Instant::now();
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM failed");
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(40) {
            let _ = child.kill();
            panic!("stormcast did not exit within the grace period after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn log_event(dir: &Path, log: &str, message: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join(log)).unwrap();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == message)
        .unwrap_or_else(|| panic!("no {message:?} in the log:\n{text}"))
}

const PAYLOAD: &str = r#"{"version":"4","status":"firing","receiver":"stormcast","groupKey":"{}:{}",
"externalURL":"http://alertmanager.prod-a:9093","alerts":[
 {"status":"firing","labels":{"alertname":"KubeNodeNotReady","node":"n1","severity":"warning"},"startsAt":"2026-11-20T08:00:00Z","endsAt":"0001-01-01T00:00:00Z"},
 {"status":"firing","labels":{"alertname":"KubePodCrashLooping","namespace":"shop","pod":"web-1","container":"web","severity":"warning"},"startsAt":"2026-11-20T08:01:00Z","endsAt":"0001-01-01T00:00:00Z"},
 {"status":"firing","labels":{"alertname":"Watchdog","severity":"none"},"startsAt":"2026-11-20T07:00:00Z","endsAt":"0001-01-01T00:00:00Z"}
]}"#;

#[test]
fn sigterm_persists_state_and_restart_finds_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = start(dir.path(), port, "first.log");
    let (status, body) = http(port, "POST", "/api/v1/alerts", PAYLOAD).unwrap();
    assert_eq!(status, 200, "{body}");
    let (_, before) = http(port, "GET", "/api/v1/incidents", "").unwrap();
    let before: Vec<serde_json::Value> = serde_json::from_str(&before).unwrap();
    assert_eq!(before.len(), 2, "Watchdog is not an incident: {before:#?}");
    let (_, metrics) = http(port, "GET", "/metrics", "").unwrap();
    assert!(
        metrics.contains("stormcast_heartbeat_clusters_silent 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("stormcast_heartbeat_clusters_watched 1"),
        "prod-a sent its Watchdog: {metrics}"
    );
    assert!(
        metrics.contains("stormcast_heartbeat_last_seen_timestamp_seconds{cluster=\"prod-a\"}"),
        "{metrics}"
    );

    let (exit, took) = sigterm_and_wait(child);
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        took < stormcast::app::SHUTDOWN_GRACE,
        "drain took {took:?}, longer than the grace period"
    );
    log_event(dir.path(), "first.log", "Stopped: state persisted");

    let port = free_port();
    let child = start(dir.path(), port, "second.log");
    let recovered = log_event(dir.path(), "second.log", "State recovered");
    assert_eq!(recovered["fields"]["alerts"], 3, "{recovered}");
    assert_eq!(
        recovered["fields"]["journal_replayed"], 0,
        "everything acknowledged was applied and persisted before exit: {recovered}"
    );
    let (_, after) = http(port, "GET", "/api/v1/incidents", "").unwrap();
    let after: Vec<serde_json::Value> = serde_json::from_str(&after).unwrap();
    let ids = |v: &[serde_json::Value]| {
        let mut ids: Vec<String> = v.iter().map(|i| i["id"].to_string()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&after), ids(&before));
    let (exit, _) = sigterm_and_wait(child);
    assert!(exit.success());
}

/// Webhooks keep arriving while SIGTERM lands: every delivery that was
/// acknowledged (200) is in the state after the restart.
#[test]
fn sigterm_under_load_loses_no_acknowledged_alert() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = start(dir.path(), port, "load.log");
    let senders: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0..400 {
                    let pod = format!("web-{t}-{i}");
                    let body = PAYLOAD_ONE.replace("POD", &pod);
                    match http(port, "POST", "/api/v1/alerts", &body) {
                        Ok((200, _)) => acked.push(pod),
                        Ok((503, _)) | Err(_) => break,
                        Ok((status, body)) => panic!("{status}: {body}"),
                    }
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (exit, _) = sigterm_and_wait(child);
    assert!(exit.success(), "exit status {exit:?}");
    let acked: Vec<String> = senders
        .into_iter()
        .flat_map(|s| s.join().unwrap())
        .collect();
    assert!(
        !acked.is_empty(),
        "no delivery was acknowledged before SIGTERM"
    );
    eprintln!("{} deliveries acknowledged before shutdown", acked.len());

    let port = free_port();
    let child = start(dir.path(), port, "load-restart.log");
    let (_, body) = http(port, "GET", "/api/v1/alerts?limit=100000", "").unwrap();
    let alerts: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let pods: std::collections::HashSet<&str> = alerts
        .iter()
        .filter_map(|a| a["labels"]["pod"].as_str())
        .collect();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|p| !pods.contains(p.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged alerts lost: {lost:?}",
        lost.len(),
        acked.len()
    );
    let (exit, _) = sigterm_and_wait(child);
    assert!(exit.success());
}

const PAYLOAD_ONE: &str = r#"{"version":"4","status":"firing","receiver":"stormcast","groupKey":"{}:{}",
"alerts":[{"status":"firing","labels":{"alertname":"KubePodNotReady","namespace":"shop","pod":"POD","severity":"warning"},"startsAt":"2026-11-20T08:00:00Z","endsAt":"0001-01-01T00:00:00Z"}]}"#;

/// A channel that accepts the connection and never answers (with a 120s
/// channel timeout) must not hold shutdown past the grace period.
#[test]
fn a_hanging_channel_does_not_outlast_the_grace_period() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let hook = TcpListener::bind("127.0.0.1:0").unwrap();
    let hook_port = hook.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    {
        // Accept and hold every connection without answering.
        let accepted = accepted.clone();
        let hook = hook.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in hook.incoming() {
                match s {
                    Ok(s) => {
                        accepted.fetch_add(1, Ordering::SeqCst);
                        held.push(s);
                    }
                    Err(_) => break,
                }
            }
        });
    }
    let receivers = format!(
        "route: {{receiver: hook, group_wait: 0s}}\n\
         receivers:\n  - name: hook\n    webhook_configs: [{{url: 'http://127.0.0.1:{hook_port}/hook', timeout: 120s}}]\n"
    );
    let port = free_port();
    let child = start_with(dir.path(), port, "hang.log", &receivers);
    let (status, body) = http(port, "POST", "/api/v1/alerts", PAYLOAD).unwrap();
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while accepted.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the webhook was never called");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (exit, took) = sigterm_and_wait(child);
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        took < stormcast::app::SHUTDOWN_GRACE,
        "a hanging channel held shutdown for {took:?}"
    );
}
