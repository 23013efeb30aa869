//! Live upkeep for `serve`: periodic topology refresh from a
//! Prometheus-compatible API, and correlation gauges on `/metrics`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::config::ValidateCtx;
use crate::engine::Engine;

use super::{Topology, TopologyConfig, TopologyError};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StormLabel {
    pub cluster: String,
}

/// Correlation metrics (`stormcast_correlate_*`).
#[derive(Clone, Debug, Default)]
pub struct CorrelateMetrics {
    /// Topology fetches or files that failed (correlation fell back to labels).
    pub topology_errors: Counter,
    /// 1 while the topology is older than `topology.max_age` or missing.
    pub topology_stale: Gauge,
    /// Pods known from `kube_pod_info`.
    pub topology_pods: Gauge,
    /// 1 per cluster in storm mode.
    pub storm: Family<StormLabel, Gauge>,
    /// 1 while the fleet-wide arrival rate is in storm mode.
    pub fleet_storm: Gauge,
}

impl CorrelateMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = CorrelateMetrics::default();
        let r = registry.sub_registry_with_prefix("stormcast_correlate");
        r.register(
            "topology_errors",
            "Topology fetches or files that failed; correlation used alert labels only",
            m.topology_errors.clone(),
        );
        r.register(
            "topology_stale",
            "1 while the topology is missing or older than topology.max_age",
            m.topology_stale.clone(),
        );
        r.register(
            "topology_pods",
            "Pods known from kube_pod_info",
            m.topology_pods.clone(),
        );
        r.register(
            "storm",
            "1 while a cluster is in storm mode",
            m.storm.clone(),
        );
        r.register(
            "fleet_storm",
            "1 while the fleet-wide alert arrival rate is in storm mode",
            m.fleet_storm.clone(),
        );
        m
    }
}

/// Reports topology load problems: a warning per problem and the error counter.
pub fn report_topology_errors(errors: &[TopologyError], metrics: Option<&CorrelateMetrics>) {
    for e in errors {
        tracing::warn!(error = %e, "Topology degraded: correlating on alert labels for what is missing");
        if let Some(m) = metrics {
            m.topology_errors.inc();
        }
    }
}

/// Refreshes topology and correlation gauges until `stop` changes.
pub async fn run(
    engine: Arc<Mutex<Engine>>,
    cfg: TopologyConfig,
    ctx: ValidateCtx,
    metrics: CorrelateMetrics,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let client = reqwest::Client::builder()
        .timeout(cfg.timeout.as_std())
        .build()
        .unwrap_or_default();
    let mut gauges = tokio::time::interval(Duration::from_secs(10));
    let mut refresh = tokio::time::interval(cfg.refresh_interval.as_std());
    let mut last_ok: Option<Instant> = None;
    metrics.topology_stale.set(i64::from(cfg.url.is_some()));
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = gauges.tick() => {
                let (storms, fleet) = {
                    let e = engine.lock().expect("engine lock");
                    (e.correlator().storm_clusters(), e.correlator().fleet_storm())
                };
                metrics.storm.clear();
                for c in storms {
                    metrics.storm.get_or_create(&StormLabel { cluster: c }).set(1);
                }
                metrics.fleet_storm.set(i64::from(fleet));
                let stale = cfg.url.is_some()
                    && last_ok.is_none_or(|t| t.elapsed() > cfg.max_age.as_std());
                if stale && metrics.topology_stale.get() == 0 {
                    tracing::warn!("Topology is stale: correlating with the last good topology and alert labels");
                }
                metrics.topology_stale.set(i64::from(stale));
            }
            _ = refresh.tick(), if cfg.url.is_some() => {
                let (topo, errors) = Topology::fetch(&client, &cfg, &ctx).await;
                report_topology_errors(&errors, Some(&metrics));
                if topo.is_empty() {
                    // Keep the last good topology rather than forgetting it.
                    continue;
                }
                let (pods, owners, nodes) = topo.size();
                tracing::info!(pods, owners, nodes, "Topology refreshed");
                metrics.topology_pods.set(pods as i64);
                last_ok = Some(Instant::now());
                engine
                    .lock()
                    .expect("engine lock")
                    .correlator_mut()
                    .set_topology(Arc::new(topo));
            }
        }
    }
}
