//! Replay throughput: a 100k-alert storm input through the whole pipeline on a
//! virtual clock. Prints figures; asserts nothing about speed.
//!
//! `cargo bench --bench replay`; `BENCH_ALERTS` sets the input size.

use std::io::Write;
use std::time::Instant;

use chrono::{Duration, TimeZone, Utc};
use serde_json::json;
use stormcast::app::{self, ReplayOptions};
use stormcast::config::Overrides;

fn main() {
    let total: usize = std::env::var("BENCH_ALERTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("storm.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
    let t0 = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
    let per_delivery = 100;
    let mut lines = 0;
    for d in 0..total / per_delivery {
        let at = t0 + Duration::milliseconds(d as i64 * 250);
        let cluster = format!("prod-{}", d % 20);
        let alerts: Vec<_> = (0..per_delivery)
            .map(|i| {
                let n = d * per_delivery + i;
                json!({"status": "firing",
                       "labels": {"alertname": "KubePodNotReady", "namespace": format!("ns-{}", n % 40),
                                  "pod": format!("app-{n}"), "node": format!("{cluster}-node{}", n % 50),
                                  "severity": "warning", "cluster": cluster},
                       "annotations": {"summary": "bench"}, "startsAt": at.to_rfc3339(),
                       "endsAt": "0001-01-01T00:00:00Z", "fingerprint": ""})
            })
            .collect();
        let payload = json!({"version": "4", "groupKey": "{}:{}", "status": "firing", "receiver": "stormcast",
                             "externalURL": "http://am:9093", "alerts": alerts});
        writeln!(f, "{}", json!({"at": at.to_rfc3339(), "payload": payload})).unwrap();
        lines += 1;
    }
    f.flush().unwrap();
    drop(f);

    let loaded = app::load(None, &Overrides::default()).expect("default config");
    let opts = ReplayOptions {
        input,
        drain: Duration::hours(1),
        progress: false,
    };
    let started = Instant::now();
    let (result, rejected) = app::replay(&loaded, &opts).unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert!(rejected.is_empty());
    println!(
        "replay: {} alerts in {lines} deliveries -> {} incidents, {} notifications in {secs:.2}s = {:.0} alerts/s ({}s of virtual time)",
        result.stats.alerts,
        result.stats.incidents,
        result.notifications.len(),
        result.stats.observations as f64 / secs,
        result.stats.virtual_seconds
    );
}
