//! Durable ingest over loopback HTTP, against a real Alertmanager on the same
//! alerts in the same run. Prints figures; asserts nothing about speed.
//!
//! `cargo bench --bench ingest` (or `scripts/bench-ingest`). Environment:
//! `BENCH_SECONDS` (default 10) per throughput phase, `BENCH_CONCURRENCY` (16);
//! `BENCH_STORMCAST_LOG` (e.g. `stormcast=debug`) passes stormcast's log
//! filter through and its log to this program's stderr (snapshot capture and
//! write times are logged at debug); `BENCH_LARGE_ALERTS` (e.g. 1000000) adds
//! a phase on a fresh store holding that many alerts: re-deliveries at
//! `BENCH_LARGE_RATE` webhooks/s (50) for 75 s, long enough for the 60 s
//! snapshot interval, to show what a snapshot of a large state does to ingest.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "support/webhooks.rs"]
mod webhooks;
use webhooks::{labels, stormcast_body, ALERTS_PER_WEBHOOK};

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

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn alertmanager_body(batch: u64) -> Vec<u8> {
    let mut out = String::with_capacity(ALERTS_PER_WEBHOOK * 200);
    out.push('[');
    for i in 0..ALERTS_PER_WEBHOOK {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"labels":"#);
        out.push_str(&labels(batch, i));
        out.push_str(r#","annotations":{"summary":"bench"},"startsAt":"2026-11-01T00:00:00Z"}"#);
    }
    out.push(']');
    out.into_bytes()
}

async fn wait_ready(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(url)
        .await
        .map(|r| r.status().is_success())
        .ok()
        != Some(true)
    {
        assert!(Instant::now() < deadline, "{url} not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Closed-loop load: `concurrency` senders post as fast as they are answered.
async fn throughput(
    url: &str,
    seconds: u64,
    concurrency: u64,
    body: fn(u64) -> Vec<u8>,
    start_batch: u64,
) -> (f64, u64) {
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicU64::new(start_batch));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, next, ok, failed) = (
            client.clone(),
            url.to_owned(),
            next.clone(),
            ok.clone(),
            failed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let b = body(next.fetch_add(1, Ordering::Relaxed));
                match client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(b)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let alerts = ok.load(Ordering::Relaxed) * ALERTS_PER_WEBHOOK as u64;
    (alerts as f64 / secs, failed.load(Ordering::Relaxed))
}

/// Open-loop load at a fixed rate of new alerts; returns (p50, p99, max)
/// latency in ms and the failed requests.
async fn latency_at(
    url: &str,
    per_second: u64,
    seconds: u64,
    start_batch: u64,
) -> (f64, f64, f64, u64) {
    latency_of(url, per_second, seconds, |i| start_batch + i).await
}

/// Open-loop load at a fixed rate, request `i` sending webhook `batch(i)`.
async fn latency_of(
    url: &str,
    per_second: u64,
    seconds: u64,
    batch: impl Fn(u64) -> u64,
) -> (f64, f64, f64, u64) {
    let client = reqwest::Client::new();
    let interval = Duration::from_secs_f64(1.0 / per_second as f64);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::new();
    for i in 0..per_second * seconds {
        ticker.tick().await;
        let (client, url) = (client.clone(), url.to_owned());
        let b = stormcast_body(batch(i));
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = client
                .post(&url)
                .header("content-type", "application/json")
                .body(b)
                .send()
                .await;
            (
                t.elapsed(),
                r.map(|r| r.status().is_success()).unwrap_or(false),
            )
        }));
    }
    let mut lat = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (d, ok) = t.await.unwrap();
        if ok {
            lat.push(d.as_secs_f64() * 1000.0);
        } else {
            failed += 1;
        }
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
    (q(0.5), q(0.99), *lat.last().unwrap(), failed)
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn find(names: &[&str]) -> Option<std::path::PathBuf> {
    names
        .iter()
        .map(|n| Path::new("/usr/bin").join(n))
        .find(|p| p.exists())
}

/// A stormcast `serve` on a fresh store, on its own port.
async fn start_stormcast(dir: &Path) -> (Proc, String) {
    let port = free_port();
    let log = std::env::var("BENCH_STORMCAST_LOG").ok();
    let p = Proc(
        Command::new(env!("CARGO_BIN_EXE_stormcast"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir)
            .env("STORMCAST_LOG", log.as_deref().unwrap_or("warn"))
            .stdout(Stdio::null())
            .stderr(if log.is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/readyz")).await;
    (p, base)
}

/// Sends `webhooks` distinct webhooks, `concurrency` at a time.
async fn fill(url: &str, webhooks: u64, concurrency: u64, start_batch: u64) {
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicU64::new(start_batch));
    let end = start_batch + webhooks;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, next) = (client.clone(), url.to_owned(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= end {
                    break;
                }
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(stormcast_body(b))
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "fill: {}", r.status());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Mean and count of a histogram in stormcast's `/metrics` (`None` if absent).
async fn histogram_mean(base: &str, name: &str) -> Option<(f64, u64)> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let value = |suffix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}_{suffix} ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let (sum, count) = (value("sum")?, value("count")?);
    (count > 0.0).then(|| (sum / count, count as u64))
}

/// The snapshot lock hold and write times so far, as one line.
async fn snapshot_times(base: &str) -> String {
    let show = |h: Option<(f64, u64)>| match h {
        Some((mean, n)) => format!("mean {:.1} ms over {n}", mean * 1e3),
        None => "n/a".to_owned(),
    };
    format!(
        "lock hold {}; file write {}",
        show(histogram_mean(base, "stormcast_store_snapshot_capture_duration_seconds").await),
        show(histogram_mean(base, "stormcast_store_snapshot_write_duration_seconds").await)
    )
}

async fn active_alerts(base: &str) -> u64 {
    let status: Value = reqwest::get(format!("{base}/api/v1/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    status["alerts"].as_u64().unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let seconds = env_or("BENCH_SECONDS", 10);
    let concurrency = env_or("BENCH_CONCURRENCY", 16);
    let dir = tempfile::tempdir().unwrap();
    println!("stormcast ingest benchmark: {ALERTS_PER_WEBHOOK}-alert webhooks, {concurrency} concurrent senders, {seconds}s per phase");

    // Memory, on a fresh store: exactly 100k active alerts, then a few ticks
    // so the checkpoint has written them.
    {
        let (sc, base) = start_stormcast(&dir.path().join("rss")).await;
        let url = format!("{base}/api/v1/alerts");
        fill(
            &url,
            100_000 / ALERTS_PER_WEBHOOK as u64,
            concurrency,
            50_000_000,
        )
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        println!(
            "stormcast RSS:                 {:>10.1} MB with {} active alerts",
            rss_mb(sc.0.id()),
            active_alerts(&base).await
        );
        println!(
            "stormcast snapshots:           {}",
            snapshot_times(&base).await
        );
    }

    let (sc, base) = start_stormcast(&dir.path().join("db")).await;
    let url = format!("{base}/api/v1/alerts");
    let (sc_rate, sc_failed) = throughput(&url, seconds, concurrency, stormcast_body, 0).await;
    println!(
        "stormcast durable ingest:      {sc_rate:>10.0} alerts/s ({sc_failed} failed requests)"
    );

    // Open loop: 500 webhooks/s is the issue's 50k alerts/s; 800 probes above it.
    for (i, rate) in [500u64, 800].into_iter().enumerate() {
        let started = Instant::now();
        let (p50, p99, max, failed) =
            latency_at(&url, rate, 5, 10_000_000 + i as u64 * 1_000_000).await;
        let achieved = (rate * 5 - failed) as f64 * ALERTS_PER_WEBHOOK as f64
            / started.elapsed().as_secs_f64();
        println!("stormcast at {rate} webhooks/s:   p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms ({failed} failed; {achieved:.0} alerts/s answered)");
    }
    println!(
        "stormcast RSS after the load:  {:>10.1} MB with {} active alerts",
        rss_mb(sc.0.id()),
        active_alerts(&base).await
    );
    println!(
        "stormcast snapshots:           {}",
        snapshot_times(&base).await
    );
    drop(sc);

    let large = env_or("BENCH_LARGE_ALERTS", 0) / ALERTS_PER_WEBHOOK as u64;
    if large > 0 {
        let (sc, base) = start_stormcast(&dir.path().join("large")).await;
        let url = format!("{base}/api/v1/alerts");
        fill(&url, large, concurrency, 0).await;
        let rate = env_or("BENCH_LARGE_RATE", 50);
        let (p50, p99, max, failed) = latency_of(&url, rate, 75, |i| (i * 7919) % large).await;
        println!(
            "stormcast at {} alerts, re-deliveries at {rate} webhooks/s for 75s: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms ({failed} failed)",
            active_alerts(&base).await
        );
        println!(
            "stormcast snapshots:           {}",
            snapshot_times(&base).await
        );
        println!(
            "stormcast RSS:                 {:>10.1} MB",
            rss_mb(sc.0.id())
        );
        drop(sc);
    }

    let Some(am_bin) = find(&["prometheus-alertmanager", "alertmanager"]) else {
        println!("alertmanager not installed: skipping the comparison");
        return;
    };
    let am_port = free_port();
    let am_cfg = dir.path().join("am.yml");
    std::fs::write(
        &am_cfg,
        "route:\n  receiver: none\nreceivers:\n  - name: none\n",
    )
    .unwrap();
    let _am = Proc(
        Command::new(am_bin)
            .arg(format!("--config.file={}", am_cfg.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("am").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let am_base = format!("http://127.0.0.1:{am_port}");
    wait_ready(&format!("{am_base}/-/ready")).await;
    let (am_rate, am_failed) = throughput(
        &format!("{am_base}/api/v2/alerts"),
        seconds,
        concurrency,
        alertmanager_body,
        0,
    )
    .await;
    println!("alertmanager POST /api/v2/alerts: {am_rate:>7.0} alerts/s ({am_failed} failed requests; in memory, no fsync)");
    println!("ratio stormcast / alertmanager: {:.2}x", sc_rate / am_rate);
}
