//! stormcast's own metrics, served at `/metrics` in Prometheus text format.
//! Names follow `stormcast_<subsystem>_<thing>`; fingerprints and pod names
//! never become labels.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabel {
    pub cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabel {
    pub transition: String,
}

/// Ingest and engine metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub deliveries: Family<SourceLabel, Counter>,
    pub alerts_received: Family<SourceLabel, Counter>,
    pub rejections: Family<ReasonLabel, Counter>,
    pub transitions: Family<TransitionLabel, Counter>,
    pub store_write_seconds: Histogram,
    /// Engine lock hold time to capture the state for a snapshot.
    pub snapshot_capture_seconds: Histogram,
    /// Time to serialise and write a snapshot file durably (off the lock).
    pub snapshot_write_seconds: Histogram,
    pub active_alerts: Family<ClusterLabel, Gauge>,
    pub open_incidents: Gauge,
    pub journal_entries: Gauge,
    pub store_bytes: Gauge,
}

impl Metrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            deliveries: Family::default(),
            alerts_received: Family::default(),
            rejections: Family::default(),
            transitions: Family::default(),
            store_write_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 16)),
            snapshot_capture_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 18)),
            snapshot_write_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            active_alerts: Family::default(),
            open_incidents: Gauge::default(),
            journal_entries: Gauge::default(),
            store_bytes: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("stormcast");
        r.register(
            "ingest_deliveries",
            "Webhook deliveries accepted (durably written), by source",
            m.deliveries.clone(),
        );
        r.register(
            "ingest_alerts",
            "Alerts received in accepted deliveries, duplicates included, by source",
            m.alerts_received.clone(),
        );
        r.register(
            "ingest_rejections",
            "Webhook deliveries rejected, by reason",
            m.rejections.clone(),
        );
        r.register(
            "engine_alert_transitions",
            "Alert state transitions (new, refired, resolved, updated, unchanged, stale)",
            m.transitions.clone(),
        );
        r.register(
            "store_write_duration_seconds",
            "Time to write a delivery to the journal durably (including flush)",
            m.store_write_seconds.clone(),
        );
        r.register(
            "store_snapshot_capture_duration_seconds",
            "Time the engine is locked to capture the state for a snapshot",
            m.snapshot_capture_seconds.clone(),
        );
        r.register(
            "store_snapshot_write_duration_seconds",
            "Time to write a snapshot file durably, off the engine lock",
            m.snapshot_write_seconds.clone(),
        );
        r.register(
            "alerts_active",
            "Alerts currently firing, by cluster",
            m.active_alerts.clone(),
        );
        r.register(
            "incidents_open",
            "Incidents currently open",
            m.open_incidents.clone(),
        );
        r.register(
            "store_journal_entries",
            "Raw deliveries kept in the journal",
            m.journal_entries.clone(),
        );
        r.register(
            "store_size_bytes",
            "Bytes the store uses on disk",
            m.store_bytes.clone(),
        );
        m
    }

    pub fn reject(&self, reason: &str) {
        self.rejections
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }
}

/// Renders a registry in Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).expect("writing to a String");
    out
}
