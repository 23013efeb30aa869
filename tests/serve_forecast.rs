//! `serve` with metric history configured: the forecasting task queries a
//! (fake) Prometheus, raises `ResourceExhaustionPredicted`,
//! `MetricPeerOutlierDetected` and `MetricAnomalyDetected` through the engine, serves the report and
//! counts its runs.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::extract::Query;
use axum::http::HeaderMap;
use axum::routing::get;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn labels() -> &'static str {
    r#"{"cluster":"c1","instance":"node-1","mountpoint":"/var"}"#
}

/// Memory used (% of a constant 100) per node: in c1 five nodes near 40%
/// but node-c near 85%; in c2 node-x near 80% but only three nodes, too few
/// to compare.
fn memory_nodes() -> Vec<(&'static str, &'static str, f64)> {
    vec![
        ("c1", "node-a", 40.0),
        ("c1", "node-b", 41.0),
        ("c1", "node-c", 85.0),
        ("c1", "node-d", 39.0),
        ("c1", "node-e", 40.0),
        ("c2", "node-x", 80.0),
        ("c2", "node-y", 20.0),
        ("c2", "node-z", 21.0),
    ]
}

fn memory_range(s: i64, e: i64, st: i64) -> String {
    let series: Vec<String> = memory_nodes()
        .into_iter()
        .enumerate()
        .map(|(k, (cluster, node, level))| {
            let vals: Vec<String> = (0..)
                .map(|j| s + j * st)
                .take_while(|t| *t <= e)
                .map(|t| {
                    // A shared daily swing plus each node's own jitter.
                    let day = 5.0 * (t as f64 * std::f64::consts::TAU / 86_400.0).sin();
                    let jitter = 1.5 * (t as f64 * 0.37 + k as f64 * 11.0).sin();
                    format!("[{t},\"{}\"]", level + day + jitter)
                })
                .collect();
            format!(
                r#"{{"metric":{{"cluster":"{cluster}","instance":"{node}"}},"values":[{}]}}"#,
                vals.join(",")
            )
        })
        .collect();
    format!(
        r#"{{"status":"success","data":{{"resultType":"matrix","result":[{}]}}}}"#,
        series.join(",")
    )
}

/// `start`, `end` and `step` of a query_range request.
fn range_args(q: &BTreeMap<String, String>) -> (i64, i64, i64) {
    let arg = |k: &str| q[k].parse().unwrap();
    (arg("start"), arg("end"), arg("step"))
}

async fn query_range(headers: HeaderMap, Query(q): Query<BTreeMap<String, String>>) -> String {
    assert_eq!(
        headers.get("authorization").and_then(|v| v.to_str().ok()),
        Some("Bearer s3cret")
    );
    let (s, e, st) = range_args(&q);
    if q["query"] == "memory_used_percent" {
        return memory_range(s, e, st);
    }
    // A disk filling 2% per hour, at 90% now: full in about 5 hours.
    let vals: Vec<String> = (0..)
        .map(|k| s + k * st)
        .take_while(|t| *t <= e)
        .map(|t| format!("[{t},\"{}\"]", 90.0 - 2.0 * (e - t) as f64 / 3600.0))
        .collect();
    format!(
        r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{},"values":[{}]}}]}}}}"#,
        labels(),
        vals.join(",")
    )
}

async fn query(Query(q): Query<BTreeMap<String, String>>) -> String {
    format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{},"value":[{},"100"]}}]}}}}"#,
        labels(),
        q["time"]
    )
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fake Prometheus serving `app` on a free loopback port.
async fn fake_prometheus(app: axum::Router) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

/// `stormcast serve` on a free loopback port, with `models` (file name and
/// YAML) in `dir/models`, the `history` block of its config, and `envs`.
/// Returns the process, killed on drop, and its base URL.
fn start_serve(
    dir: &std::path::Path,
    models: &[(&str, &str)],
    history: &str,
    envs: &[(&str, &str)],
) -> (Kill, String) {
    std::fs::create_dir(dir.join("models")).unwrap();
    for (file, yaml) in models {
        std::fs::write(dir.join("models").join(file), yaml).unwrap();
    }
    let port = free_port();
    let data = dir.join("data").display().to_string();
    std::fs::write(
        dir.join("config.yaml"),
        format!(
            "server: {{listen: \"127.0.0.1:{port}\"}}\nstore: {{path: \"{data}\"}}\nmodels_dir: models\n{history}"
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_stormcast"))
        .args([
            "serve",
            "--config",
            dir.join("config.yaml").to_str().unwrap(),
        ])
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (Kill(child), format!("http://127.0.0.1:{port}"))
}

/// `stormcast serve` with one `memory` model, evaluated every 30s on a week
/// of `memory_used_percent` from the fake Prometheus at `prom`; `fields`
/// adds to the model's YAML.
fn start_memory_serve(
    dir: &std::path::Path,
    prom: std::net::SocketAddr,
    fields: &str,
) -> (Kill, String) {
    let model = format!(
        "models:\n  - name: memory\n    resource: memory\n    usage: memory_used_percent\n    interval: 30s\n    labels: {{node: instance}}\n{fields}"
    );
    start_serve(
        dir,
        &[("memory.yaml", &model)],
        &format!("history:\n  lookback: 7d\n  endpoints:\n    - url: http://{prom}\n"),
        &[],
    )
}

/// The active alerts named `name`, or `None` while serve does not answer.
async fn alerts_named(
    http: &reqwest::Client,
    base: &str,
    name: &str,
) -> Option<Vec<serde_json::Value>> {
    let r = http
        .get(format!("{base}/api/v1/alerts"))
        .send()
        .await
        .ok()?;
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    Some(
        v.as_array()?
            .iter()
            .filter(|a| a["labels"]["alertname"] == name)
            .cloned()
            .collect(),
    )
}

/// Polls until alerts named `name` are active or `deadline` passes; returns
/// them (none when the deadline passed first).
async fn wait_for_alerts(
    http: &reqwest::Client,
    base: &str,
    name: &str,
    deadline: Instant,
) -> Vec<serde_json::Value> {
    loop {
        let found = alerts_named(http, base, name).await.unwrap_or_default();
        if !found.is_empty() || Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The `node` label of each alert.
fn nodes(alerts: &[serde_json::Value]) -> Vec<&str> {
    alerts
        .iter()
        .map(|a| a["labels"]["node"].as_str().unwrap())
        .collect()
}

/// Seconds from now to an RFC 3339 time.
fn lead_secs(at: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(at)
        .unwrap()
        .timestamp()
        - chrono::Utc::now().timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_raises_predictive_alerts_and_serves_the_report() {
    let prom = fake_prometheus(
        axum::Router::new()
            .route("/api/v1/query_range", get(query_range))
            .route("/api/v1/query", get(query)),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (_child, base) = start_serve(
        dir.path(),
        &[
            (
                "disk.yaml",
                "models:\n  - name: disk\n    resource: disk\n    usage: disk_used_percent\n    capacity: {query: disk_size_percent}\n    match_on: [instance, mountpoint]\n    interval: 30s\n    labels: {node: instance}\n",
            ),
            (
                "memory.yaml",
                "models:\n  - name: memory\n    resource: memory\n    usage: memory_used_percent\n    capacity: {value: 100}\n    interval: 30s\n    labels: {node: instance}\n    peers: true\n",
            ),
        ],
        &format!(
            "history:\n  lookback: 1d\n  endpoints:\n    - url: http://{prom}\n      bearer_token_env: STORMCAST_TEST_PROM_TOKEN\n"
        ),
        &[("STORMCAST_TEST_PROM_TOKEN", "s3cret")],
    );
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    // Only the disk is asserted on: node-c's memory has a single day of
    // history, too little to tell its daily swing from a trend near the
    // swing's peak, so whether it warns depends on the time of day.
    let alert = loop {
        let disk = alerts_named(&http, &base, "ResourceExhaustionPredicted")
            .await
            .unwrap_or_default()
            .into_iter()
            .find(|a| a["labels"]["resource"] == "disk");
        if disk.is_some() || Instant::now() >= deadline {
            break disk.expect("no predictive disk alert within 30s");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(alert["labels"]["node"], "node-1");
    assert_eq!(alert["labels"]["cluster"], "c1");
    assert_eq!(alert["labels"]["severity"], "warning");
    assert_eq!(alert["labels"]["resource"], "disk");
    let conf: f64 = alert["annotations"]["confidence"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(conf > 0.9, "{alert}");

    // Both models run in the same pass and each model's alerts are applied
    // together, so once one peer alert is there, all of that run's are.
    let peer_alerts = wait_for_alerts(&http, &base, "MetricPeerOutlierDetected", deadline).await;
    assert_eq!(nodes(&peer_alerts), ["node-c"], "{peer_alerts:?}");
    let peer = &peer_alerts[0];
    assert_eq!(peer["labels"]["cluster"], "c1");
    assert_eq!(peer["labels"]["instance"], "node-c");
    assert_eq!(peer["labels"]["resource"], "memory");
    assert_eq!(peer["labels"]["model"], "memory");
    assert_eq!(peer["labels"]["severity"], "info");
    assert_eq!(
        peer["annotations"]["summary"],
        "memory of node node-c is unlike its peers in cluster c1"
    );
    assert_eq!(peer["annotations"]["peer_count"], "5");
    assert_eq!(peer["annotations"]["compared"], "utilisation");
    let value: f64 = peer["annotations"]["peer_value"]
        .as_str()
        .unwrap()
        .trim_end_matches('%')
        .parse()
        .unwrap();
    let median: f64 = peer["annotations"]["peer_median"]
        .as_str()
        .unwrap()
        .trim_end_matches('%')
        .parse()
        .unwrap();
    assert!(value - median > 35.0, "{peer}");

    let report = loop {
        let r = http
            .get(format!("{base}/api/v1/report?format=json"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break r.json::<serde_json::Value>().await.unwrap();
        }
        assert!(Instant::now() < deadline, "no report");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let disk = report["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["labels"]["mountpoint"] == "/var")
        .expect("the disk in the report");
    let lead = lead_secs(disk["exhaustion_at"].as_str().unwrap());
    assert!((4 * 3600..6 * 3600).contains(&lead), "lead {lead}s");
    let html = http
        .get(format!("{base}/api/v1/report"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("<svg"));
    // The report shows node-c against its cluster's median, and no other node.
    let peers = &html[html.find("Unlike their peers").expect("a peer section")..];
    assert!(peers.contains("node-c"), "{peers}");
    assert!(
        !peers.contains("node-x") && !peers.contains("node-a"),
        "{peers}"
    );
    let r = http
        .get(format!("{base}/api/v1/report?format=pdf"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("stormcast_forecast_runs_total{model=\"disk\"} "),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE stormcast_history_query_failures counter"),
        "{metrics}"
    );
    assert!(
        metrics.contains("stormcast_forecast_peer_outliers{model=\"memory\"} 1\n"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("stormcast_forecast_peer_outliers{model=\"disk\"}"),
        "{metrics}"
    );
}

/// Three memory series over 7 days, relative to the query's end ("now"):
/// node-leak flat near 45% until 3 h ago, then climbing so it is full 5 h
/// from now; node-saw ramping from 40% to 92% every day and reset by a log
/// rotation at 02:00; node-season swinging daily between 58% and 92%. Only
/// the leak will reach capacity.
fn bends_range(s: i64, e: i64, st: i64) -> String {
    let noise = |t: i64, k: f64| 0.6 * ((t as f64 * 0.0123 + k).sin() * 7_919.0).sin();
    let onset = e - 3 * 3600;
    let rate = 55.0 / (8.0 * 3600.0);
    type Usage = Box<dyn Fn(i64) -> f64>;
    let series: [(&str, Usage); 3] = [
        (
            "node-leak",
            Box::new(move |t| 45.0 + rate * (t - onset).max(0) as f64 + noise(t, 1.0)),
        ),
        (
            "node-saw",
            Box::new(move |t| {
                let since = (t - 2 * 3600).rem_euclid(86_400) as f64 / 86_400.0;
                40.0 + 52.0 * since + 0.3 * noise(t, 2.0)
            }),
        ),
        (
            "node-season",
            Box::new(move |t| {
                75.0 + 15.0 * (t as f64 * std::f64::consts::TAU / 86_400.0).sin() + noise(t, 3.0)
            }),
        ),
    ];
    let result: Vec<String> = series
        .iter()
        .map(|(node, f)| {
            let vals: Vec<String> = (0..)
                .map(|j| s + j * st)
                .take_while(|t| *t <= e)
                .map(|t| format!("[{t},\"{}\"]", f(t)))
                .collect();
            format!(
                r#"{{"metric":{{"cluster":"c1","instance":"{node}"}},"values":[{}]}}"#,
                vals.join(",")
            )
        })
        .collect();
    format!(
        r#"{{"status":"success","data":{{"resultType":"matrix","result":[{}]}}}}"#,
        result.join(",")
    )
}

async fn bends_query_range(Query(q): Query<BTreeMap<String, String>>) -> String {
    let (s, e, st) = range_args(&q);
    bends_range(s, e, st)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_warns_of_a_fresh_leak_but_not_of_a_sawtooth_or_a_daily_swing() {
    let prom =
        fake_prometheus(axum::Router::new().route("/api/v1/query_range", get(bends_query_range)))
            .await;
    let dir = tempfile::tempdir().unwrap();
    let (_child, base) = start_memory_serve(dir.path(), prom, "    capacity: {value: 100}\n");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    // The report lists every series of the run; the run's alerts are
    // applied with it, so once it has all three the alerts are final.
    let report = loop {
        assert!(Instant::now() < deadline, "no report of all three series");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let Ok(r) = http
            .get(format!("{base}/api/v1/report?format=json"))
            .send()
            .await
        else {
            continue;
        };
        if r.status() != 200 {
            continue;
        }
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        if v["series"].as_array().is_some_and(|s| s.len() == 3) {
            break v;
        }
    };
    let alerts = wait_for_alerts(&http, &base, "ResourceExhaustionPredicted", deadline).await;
    assert_eq!(
        nodes(&alerts),
        ["node-leak"],
        "{alerts:?}\nreport: {report}"
    );
    let leak = &alerts[0];
    assert_eq!(leak["labels"]["severity"], "warning");
    let lead = lead_secs(leak["annotations"]["exhaustion_at"].as_str().unwrap());
    assert!((4 * 3600..6 * 3600).contains(&lead), "lead {lead}s: {leak}");
    let methods: Vec<(&str, &str)> = report["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["labels"]["instance"].as_str().unwrap_or(""),
                s["method"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(methods.contains(&("node-saw", "sawtooth")), "{methods:?}");
}

/// Two node series over 7 days with the same daily swing and noise; on
/// node-shift every sample from `shift_at` on is 8 points higher.
fn shift_range(s: i64, e: i64, st: i64, shift_at: i64) -> String {
    let noise = |t: i64, k: f64| 0.6 * ((t as f64 * 0.0123 + k).sin() * 7_919.0).sin();
    let result: Vec<String> = [("node-normal", 1.0), ("node-shift", 2.0)]
        .iter()
        .map(|(node, k)| {
            let vals: Vec<String> = (0..)
                .map(|j| s + j * st)
                .take_while(|t| *t <= e)
                .map(|t| {
                    let day = 15.0 * (t as f64 * std::f64::consts::TAU / 86_400.0).sin();
                    let shift = if *node == "node-shift" && t >= shift_at {
                        8.0
                    } else {
                        0.0
                    };
                    format!("[{t},\"{}\"]", 50.0 + day + noise(t, *k) + shift)
                })
                .collect();
            format!(
                r#"{{"metric":{{"cluster":"c1","instance":"{node}"}},"values":[{}]}}"#,
                vals.join(",")
            )
        })
        .collect();
    format!(
        r#"{{"status":"success","data":{{"resultType":"matrix","result":[{}]}}}}"#,
        result.join(",")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_flags_a_level_shift_but_not_a_normal_daily_cycle() {
    let shift_at = chrono::Utc::now().timestamp();
    let prom = fake_prometheus(axum::Router::new().route(
        "/api/v1/query_range",
        get(
            move |Query(q): Query<BTreeMap<String, String>>| async move {
                let (s, e, st) = range_args(&q);
                shift_range(s, e, st, shift_at)
            },
        ),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (_child, base) = start_memory_serve(
        dir.path(),
        prom,
        "    capacity: {value: 1000}\n    anomaly: true\n",
    );
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let alerts = wait_for_alerts(&http, &base, "MetricAnomalyDetected", deadline).await;
    assert_eq!(nodes(&alerts), ["node-shift"], "{alerts:?}");
    let score: f64 = alerts[0]["annotations"]["anomaly_score"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(score >= 0.5, "{score}");
    assert!(
        alerts_named(&http, &base, "ResourceExhaustionPredicted")
            .await
            .unwrap_or_default()
            .is_empty(),
        "neither series nears its capacity"
    );
}
