//! Times correlation of a large simulated storm (100 clusters x 50 nodes by
//! default): the whole replay (payload parsing, alert state, correlation),
//! and the correlator alone fed the same alert transitions.
//!
//! `cargo run --release --example storm_throughput [SEED] [FAULTS_PER_CLUSTER] [CLUSTERS] [NODES_PER_CLUSTER]`

use std::sync::Arc;
use std::time::Instant;

use stormcast::correlate::{CorrelateSettings, Correlator};
use stormcast::domain::{AlertState, AlertStatus, ClusterId, Labels, Transition};
use stormcast::sim::{self, eval, SimConfig};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let seed = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(42);
    let faults = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(12);
    let clusters = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100);
    let nodes = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(50);
    let cfg = SimConfig {
        seed,
        clusters,
        nodes_per_cluster: nodes,
        faults_per_cluster: faults,
        noise_per_hour: 10.0,
        ..Default::default()
    };
    let storm = sim::simulate(&cfg);
    let run = storm.run(true)?;
    let s = eval::score(
        &eval::groups_from_incidents(&run.result.incidents),
        &storm.truth,
    );
    println!(
        "replay: {} alerts, {} deliveries, {} observations over {clusters} clusters x {nodes} nodes in {:?} ({:.1} us/alert)",
        storm.alert_count(),
        storm.lines.len(),
        run.result.stats.observations,
        run.elapsed,
        run.elapsed.as_secs_f64() * 1e6 / storm.alert_count().max(1) as f64
    );
    println!("  quality: {s}");

    // The correlator alone: one New transition per alert identity, in start order.
    let mut alerts = storm.alerts();
    alerts.sort_by_key(|a| a.2);
    let mut c = Correlator::new(CorrelateSettings::from_rules(storm.rules()));
    c.set_topology(Arc::new(storm.topology()));
    let states: Vec<AlertState> = alerts
        .iter()
        .map(|(fp, labels, at)| AlertState {
            id: *fp,
            am_fingerprint: None,
            cluster: ClusterId::new(labels.get_or_empty("cluster")),
            labels: labels.clone(),
            annotations: Labels::new(),
            status: AlertStatus::Firing,
            starts_at: *at,
            ends_at: None,
            generator_url: Default::default(),
            external_url: Default::default(),
            source: "bench".into(),
            first_received: *at,
            last_received: *at,
            flaps: 0,
            previous_end: None,
            deliveries: 1,
        })
        .collect();
    let started = Instant::now();
    for a in &states {
        c.observe(a, Transition::New, a.starts_at);
    }
    let took = started.elapsed();
    println!(
        "correlator alone: {} alerts in {:?} ({:.1} us/alert), {} incidents",
        states.len(),
        took,
        took.as_secs_f64() * 1e6 / states.len().max(1) as f64,
        c.incidents().len()
    );
    Ok(())
}
