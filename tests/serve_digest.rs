//! The scheduled forecast digest inside `stormcast serve`: the forecasting
//! task reads a (fake) Prometheus over loopback, and at the digest's slot one
//! email reaches a real SMTP server on loopback (aiosmtpd, started by the
//! test) with the at-risk resources in it, once per slot, also across a
//! restart. The same run checks `history.max_cross_checks` end to end.
//!
//! `report_digest.every` is at least 1m, so the schedule is `every: 1m` with
//! `at` given to the second (`HH:MM:SS`, allowed by the config): the first
//! slot falls a few seconds after start instead of up to a minute later. If
//! a slot comes before the first report exists it is skipped (as documented)
//! and the next one, a minute later, sends: slower, never flaky.

mod common;
mod smtp;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::extract::Query;
use axum::routing::get;

use common::Server;
use smtp::Mailbox;

/// Two disks filling 2% per hour with capacity 100: `/var` on node-1 at 90%
/// (full in about 5 h) and `/data` on node-2 at 60% (about 20 h).
const DISKS: [(&str, &str, f64); 2] = [("node-1", "/var", 90.0), ("node-2", "/data", 60.0)];

fn metric(node: &str, mount: &str) -> String {
    format!(r#"{{"cluster":"c1","instance":"{node}","mountpoint":"{mount}"}}"#)
}

async fn query_range(Query(q): Query<BTreeMap<String, String>>) -> String {
    let (s, e, st): (i64, i64, i64) = (
        q["start"].parse().unwrap(),
        q["end"].parse().unwrap(),
        q["step"].parse().unwrap(),
    );
    let result: Vec<String> = DISKS
        .iter()
        .map(|(node, mount, now)| {
            let vals: Vec<String> = (0..)
                .map(|k| s + k * st)
                .take_while(|t| *t <= e)
                .map(|t| format!("[{t},\"{}\"]", now - 2.0 * (e - t) as f64 / 3600.0))
                .collect();
            format!(
                r#"{{"metric":{},"values":[{}]}}"#,
                metric(node, mount),
                vals.join(",")
            )
        })
        .collect();
    format!(
        r#"{{"status":"success","data":{{"resultType":"matrix","result":[{}]}}}}"#,
        result.join(",")
    )
}

async fn query(Query(q): Query<BTreeMap<String, String>>) -> String {
    let result: Vec<String> = DISKS
        .iter()
        .map(|(node, mount, _)| {
            format!(
                r#"{{"metric":{},"value":[{},"100"]}}"#,
                metric(node, mount),
                q["time"]
            )
        })
        .collect();
    format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
        result.join(",")
    )
}

/// The fake Prometheus, on its own thread and runtime.
fn start_prometheus() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new()
                .route("/api/v1/query_range", get(query_range))
                .route("/api/v1/query", get(query));
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });
    addr
}

async fn get_text(http: &reqwest::Client, url: &str) -> Option<(u16, String)> {
    let r = http.get(url).send().await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

/// The value of a counter line `name{labels} value` in a Prometheus exposition.
fn counter(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_sends_the_scheduled_digest_once_per_slot() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mailbox) = Mailbox::start(&dir.path().join("mail"), &[]) else {
        return;
    };
    let prom = start_prometheus();

    std::fs::create_dir(dir.path().join("models")).unwrap();
    std::fs::write(
        dir.path().join("models/disk.yaml"),
        "models:\n  - name: disk\n    resource: disk\n    usage: disk_used_percent\n    capacity: {query: disk_size_percent}\n    match_on: [instance, mountpoint]\n    interval: 30s\n    labels: {node: instance}\n",
    )
    .unwrap();
    // The first slot a few seconds from now; then one a minute.
    let first_slot = chrono::Utc::now() + chrono::Duration::seconds(8);
    let at = first_slot.format("%H:%M:%S");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "server: {{external_url: \"https://stormcast.example\"}}
models_dir: models
history:
  lookback: 1d
  max_cross_checks: 1
  endpoints:
    - url: http://{prom}
# Incidents (the predictive alerts make one) go nowhere: the mailbox is
# the digest's alone.
route:
  receiver: nobody
receivers:
  - name: nobody
  - name: capacity
    email_configs:
      - to: capacity@example.com
        from: stormcast@example.com
        smarthost: {smarthost}
        hello: stormcast.test
        require_tls: false
report_digest:
  every: 1m
  at: \"{at}\"
  location: UTC
  receiver: capacity
  max_items: 10
",
            smarthost = mailbox.smarthost()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, Some(&config));
    let http = reqwest::Client::new();

    // One digest email: the first slot, or the next one if the first came
    // before the first report (allowing for a loaded machine).
    let deadline = Instant::now() + Duration::from_secs(150);
    let first = loop {
        if let Some(m) = mailbox.mails().into_iter().next() {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "no digest email within 150s; stormcast log:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let id = first["headers"]["Message-ID"].as_str().unwrap().to_owned();
    assert!(
        id.starts_with("<digest-") && id.ends_with(".capacity@stormcast.test>"),
        "{first}"
    );
    let slot = chrono::NaiveDateTime::parse_from_str(&id[8..21], "%Y%m%dT%H%M")
        .unwrap()
        .and_utc();
    // Slot ids name the minute.
    assert!(
        slot.timestamp() >= first_slot.timestamp() - first_slot.timestamp() % 60,
        "slot {slot} before the first one configured ({first_slot})"
    );
    assert_eq!(
        first["headers"]["Subject"], "stormcast forecast: 2 resources at risk",
        "{first}"
    );
    assert_eq!(first["headers"]["To"], "capacity@example.com");
    let text = first["parts"]["text/plain"].as_str().unwrap();
    let html = first["parts"]["text/html"].as_str().unwrap();
    // Soonest first: /var on node-1 (about 5 h), then /data on node-2.
    let var = text.find("node-1").expect(text);
    let data_at = text.find("node-2").expect(text);
    assert!(var < data_at, "{text}");
    assert!(text.contains("/var") && text.contains("[c1]"), "{text}");
    assert!(text.contains("of 100 (90.0%)"), "{text}");
    assert!(text.contains("model disk"), "{text}");
    assert!(
        text.contains("Full report: https://stormcast.example/api/v1/report"),
        "{text}"
    );
    assert!(html.contains("node-1"), "{html}");

    // history.max_cross_checks: 1: the soonest exhaustion was cross-checked,
    // the other kept its envelope forecast and says so.
    let (status, body) = get_text(&http, &server.url("/api/v1/report?format=json"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    let series = report["series"].as_array().unwrap();
    let by_node = |n: &str| {
        series
            .iter()
            .find(|s| s["labels"]["instance"] == n)
            .unwrap_or_else(|| panic!("{n} not in {body}"))
    };
    let (n1, n2) = (by_node("node-1"), by_node("node-2"));
    assert!(n1["mstl"].is_object(), "{n1}");
    assert!(n1.get("cross_check_skipped").is_none(), "{n1}");
    assert!(n2["mstl"].is_null(), "{n2}");
    assert_eq!(n2["cross_check_skipped"], true, "{n2}");
    let (_, metrics) = get_text(&http, &server.url("/metrics")).await.unwrap();
    let checked = counter(
        &metrics,
        "stormcast_forecast_cross_checks_total{model=\"disk\"}",
    );
    let skipped = counter(
        &metrics,
        "stormcast_forecast_cross_checks_skipped_total{model=\"disk\"}",
    );
    assert!(checked >= Some(1.0), "{metrics}");
    assert!(skipped >= Some(1.0), "{metrics}");
    assert!(
        server.logs().contains("MSTL cross-check limit reached"),
        "{}",
        server.logs()
    );

    // Not twice for the same slot: not while running, not after a restart
    // (the outbox entry is delivered; the schedule resumes at the next slot).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(server.terminate().success());
    let server = Server::start(&data, Some(&config));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = mailbox.mails();
    let mut per_slot: BTreeMap<String, usize> = BTreeMap::new();
    for m in &all {
        let id = m["headers"]["Message-ID"].as_str().unwrap_or_default();
        *per_slot.entry(id.to_owned()).or_default() += 1;
    }
    assert_eq!(per_slot.get(&id), Some(&1), "{per_slot:?}");
    assert!(per_slot.values().all(|n| *n == 1), "{per_slot:?}");
    drop(server);
}
