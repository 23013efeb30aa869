//! Correlation quality bench: simulates dense storms over a fleet with ground
//! truth, runs them through stormcast's replay, and prints pairwise
//! precision/recall/F1, the adjusted Rand index, root-cause accuracy and
//! alerts lost beside an Alertmanager-style baseline (group by cluster and
//! namespace). Then times a 10k-alert storm.
//!
//! `cargo run --release --example correlation_quality` (or without
//! `--release` for a quicker build; timings are then pessimistic).

use stormcast::sim::{self, eval, SimConfig};

fn main() -> anyhow::Result<()> {
    println!("stormcast correlation quality (fixed seeds)");
    let scenarios: Vec<(&str, SimConfig)> = vec![
        (
            "4 clusters, light",
            SimConfig {
                seed: 1,
                clusters: 4,
                faults_per_cluster: 2,
                ..Default::default()
            },
        ),
        (
            "6 clusters, dense",
            SimConfig {
                seed: 2,
                clusters: 6,
                faults_per_cluster: 5,
                ..Default::default()
            },
        ),
        (
            "8 clusters, dense",
            SimConfig {
                seed: 3,
                clusters: 8,
                faults_per_cluster: 6,
                ..Default::default()
            },
        ),
        (
            "12 clusters, dense",
            SimConfig {
                seed: 4,
                clusters: 12,
                faults_per_cluster: 6,
                nodes_per_cluster: 20,
                ..Default::default()
            },
        ),
        (
            "12 clusters, very dense",
            SimConfig {
                seed: 5,
                clusters: 12,
                faults_per_cluster: 10,
                nodes_per_cluster: 30,
                noise_per_hour: 8.0,
                ..Default::default()
            },
        ),
    ];
    for (name, cfg) in scenarios {
        let storm = sim::simulate(&cfg);
        let run = storm.run(true)?;
        let ours = eval::score(
            &eval::groups_from_incidents(&run.result.incidents),
            &storm.truth,
        );
        let labels_only = storm.run(false)?;
        let lo = eval::score(
            &eval::groups_from_incidents(&labels_only.result.incidents),
            &storm.truth,
        );
        let base = eval::score(&eval::baseline_groups(&storm.alerts()), &storm.truth);
        println!(
            "\n{name} (seed {}, {} deliveries):",
            cfg.seed,
            storm.lines.len()
        );
        println!("  stormcast            {ours}");
        println!("  stormcast no topo    {lo}");
        println!("  alertmanager-style   {base}");
        println!(
            "  replay time {:?}, storm mode: {} of {} clusters {:?}, fleet {}",
            run.elapsed,
            run.result.stats.storm_clusters.len(),
            cfg.clusters,
            run.result.stats.storm_clusters,
            run.result.stats.fleet_storm
        );
    }

    // Throughput: a ~10k-alert storm over 100 clusters x 50 nodes.
    let cfg = SimConfig {
        seed: 42,
        clusters: 100,
        nodes_per_cluster: 50,
        faults_per_cluster: 6,
        noise_per_hour: 6.0,
        ..Default::default()
    };
    let storm = sim::simulate(&cfg);
    let run = storm.run(true)?;
    let s = eval::score(
        &eval::groups_from_incidents(&run.result.incidents),
        &storm.truth,
    );
    println!(
        "\nthroughput: {} alerts, {} deliveries over 100 clusters x 50 nodes replayed in {:?} ({:.1} us/alert)",
        storm.alert_count(),
        storm.lines.len(),
        run.elapsed,
        run.elapsed.as_secs_f64() * 1e6 / storm.alert_count().max(1) as f64
    );
    println!("  stormcast            {s}");
    println!(
        "  storm mode: {} of 100 clusters, fleet {}",
        run.result.stats.storm_clusters.len(),
        run.result.stats.fleet_storm
    );
    Ok(())
}
