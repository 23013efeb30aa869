//! The dead-man's switch: every cluster's Alertmanager sends the always-firing
//! `Watchdog` alert at its repeat interval. When a cluster stops sending it for
//! `missing_after`, its monitoring pipeline (Prometheus, Alertmanager, or the
//! network to stormcast) is down, and silence would otherwise look like health.
//!
//! The engine feeds every delivered alert to [`Heartbeat::observe`] and asks
//! [`Heartbeat::check`] on each tick. Both return synthetic alerts
//! (`StormcastMonitoringPipelineDown`, firing or resolved) that the engine
//! applies like any other delivery, so correlation and notification handle them.
//! The `Watchdog` itself never reaches correlation. Time comes only from the
//! engine's clock; the next silence deadline is part of `next_deadline`, so
//! `replay` jumps straight to it.

use std::collections::{BTreeMap, BTreeSet};

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::config::{ConfigErrors, PromDuration};
use crate::domain::{AlertState, AlertStatus, ClusterId, Labels, Observation, Timestamp};
use crate::ingest::{Delivery, DeliveryAlert};

/// The source synthetic heartbeat alerts are delivered under.
pub const SOURCE: &str = "stormcast-heartbeat";

/// The alert name of the synthetic "monitoring pipeline down" alert.
pub const PIPELINE_DOWN_ALERTNAME: &str = "StormcastMonitoringPipelineDown";

/// `heartbeat:` in the configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HeartbeatConfig {
    /// Open a "monitoring pipeline down" incident when a cluster goes silent.
    /// The heartbeat alert is kept out of correlation either way.
    pub enabled: bool,
    /// Name of the always-firing heartbeat alert (kube-prometheus: `Watchdog`).
    pub alertname: String,
    /// How often each Alertmanager re-sends the heartbeat: the `repeat_interval`
    /// of its Watchdog route. Documentation for operators and a sanity bound
    /// for `missing_after`.
    pub expect_every: PromDuration,
    /// How long a cluster may stay silent before it counts as down. Allow a few
    /// missed heartbeats: Alertmanager retries and group intervals add jitter.
    pub missing_after: PromDuration,
    /// Clusters expected to send a heartbeat even if stormcast has never heard
    /// from them. Other clusters are watched from their first heartbeat on.
    pub clusters: Vec<String>,
    /// Also watch clusters that never sent a heartbeat, judging them by their
    /// last delivery of anything. Off by default: a quiet cluster without a
    /// Watchdog route would page.
    pub watch_clusters_without_heartbeat: bool,
    /// Severity label of the synthetic alert.
    pub severity: String,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            enabled: true,
            alertname: "Watchdog".to_owned(),
            expect_every: PromDuration::mins(5),
            missing_after: PromDuration::mins(15),
            clusters: Vec::new(),
            watch_clusters_without_heartbeat: false,
            severity: "critical".to_owned(),
        }
    }
}

impl HeartbeatConfig {
    pub fn validate(&self, path: &str, errs: &mut ConfigErrors) {
        if self.alertname.is_empty() {
            errs.push(format!("{path}.alertname"), "required");
        }
        if self.expect_every.is_zero() {
            errs.push(format!("{path}.expect_every"), "must be greater than 0");
        }
        if self.missing_after <= self.expect_every {
            errs.push(
                format!("{path}.missing_after"),
                format!(
                    "must be longer than expect_every ({}), or every late heartbeat pages",
                    self.expect_every
                ),
            );
        }
        let mut seen = BTreeSet::new();
        for (i, c) in self.clusters.iter().enumerate() {
            if c.is_empty() {
                errs.push(format!("{path}.clusters[{i}]"), "must not be empty");
            } else if !seen.insert(c) {
                errs.push(
                    format!("{path}.clusters[{i}]"),
                    format!("duplicate cluster {c:?}"),
                );
            }
        }
        if self.severity.is_empty() {
            errs.push(format!("{path}.severity"), "required");
        }
    }
}

/// `stormcast_heartbeat_*` metrics.
#[derive(Clone, Debug, Default)]
pub struct HeartbeatMetrics {
    pub clusters_silent: Gauge,
    pub clusters_watched: Gauge,
}

impl HeartbeatMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = HeartbeatMetrics::default();
        let r = registry.sub_registry_with_prefix("stormcast");
        r.register(
            "heartbeat_clusters_silent",
            "Clusters whose heartbeat (Watchdog) is missing: their monitoring pipeline is down",
            m.clusters_silent.clone(),
        );
        r.register(
            "heartbeat_clusters_watched",
            "Clusters the dead-man's switch watches",
            m.clusters_watched.clone(),
        );
        m
    }
}

#[derive(Debug, Clone)]
struct Watched {
    /// Last heartbeat, or for clusters without one, the last delivery or the
    /// time watching started.
    last: Timestamp,
    has_heartbeat: bool,
    down_since: Option<Timestamp>,
}

/// Per-cluster heartbeat tracking.
#[derive(Debug)]
pub struct Heartbeat {
    cfg: HeartbeatConfig,
    active: bool,
    clusters: BTreeMap<ClusterId, Watched>,
    metrics: Option<HeartbeatMetrics>,
}

impl Heartbeat {
    /// Starts watching at `now`: clusters listed in the config count as heard
    /// from at `now`, so they get one `missing_after` to report.
    pub fn new(cfg: HeartbeatConfig, now: Timestamp) -> Self {
        let active = cfg.enabled;
        let clusters = cfg
            .clusters
            .iter()
            .map(|c| {
                (
                    ClusterId::new(c),
                    Watched {
                        last: now,
                        has_heartbeat: false,
                        down_since: None,
                    },
                )
            })
            .collect();
        let hb = Heartbeat {
            cfg,
            active,
            clusters,
            metrics: None,
        };
        hb.update_gauges();
        hb
    }

    /// Only filters the heartbeat alert out of correlation; never pages.
    pub fn disabled() -> Self {
        Heartbeat::new(
            HeartbeatConfig {
                enabled: false,
                ..Default::default()
            },
            chrono::DateTime::UNIX_EPOCH,
        )
    }

    pub fn with_metrics(mut self, m: HeartbeatMetrics) -> Self {
        self.metrics = Some(m);
        self.update_gauges();
        self
    }

    pub fn config(&self) -> &HeartbeatConfig {
        &self.cfg
    }

    /// Whether `labels` are the heartbeat alert, which never becomes an incident.
    pub fn is_heartbeat(&self, labels: &Labels) -> bool {
        labels.alertname() == self.cfg.alertname
    }

    /// Stops silence detection, e.g. when a replay's recording has ended and
    /// the missing heartbeats after it say nothing about the clusters.
    pub fn suspend(&mut self) {
        self.active = false;
    }

    /// Rebuilds state after a restart from the restored alert states: clusters
    /// that sent a heartbeat are watched again with a fresh grace period from
    /// `now` (the time stormcast was down says nothing about them), and
    /// clusters already reported down stay down until their heartbeat returns.
    pub fn restore<'a>(
        &mut self,
        alerts: impl IntoIterator<Item = &'a AlertState>,
        now: Timestamp,
    ) {
        for a in alerts {
            if self.is_heartbeat(&a.labels) {
                let w = self.watch(&a.cluster, now);
                w.has_heartbeat = true;
                w.last = w.last.max(now);
            } else if a.source == SOURCE
                && a.labels.alertname() == PIPELINE_DOWN_ALERTNAME
                && a.is_firing()
            {
                let w = self.watch(&a.cluster, now);
                w.down_since = Some(a.starts_at);
            }
        }
        self.update_gauges();
    }

    fn watch(&mut self, cluster: &ClusterId, now: Timestamp) -> &mut Watched {
        self.clusters.entry(cluster.clone()).or_insert(Watched {
            last: now,
            has_heartbeat: false,
            down_since: None,
        })
    }

    /// Records a delivery. Returns synthetic "resolved" alerts for clusters
    /// whose heartbeat came back.
    pub fn observe(&mut self, d: &Delivery, now: Timestamp) -> Option<Delivery> {
        if d.source == SOURCE || d.source == crate::analyze::PREDICTIVE_SOURCE {
            return None;
        }
        let mut back = Vec::new();
        for da in &d.alerts {
            let heartbeat = self.is_heartbeat(&da.observation.labels)
                && da.observation.status == AlertStatus::Firing;
            let watch_any = self.cfg.watch_clusters_without_heartbeat;
            let known = self.clusters.contains_key(&da.cluster);
            if !heartbeat && !known && !watch_any {
                continue;
            }
            let w = self.watch(&da.cluster, now);
            if heartbeat {
                w.has_heartbeat = true;
            }
            if heartbeat || !w.has_heartbeat {
                w.last = w.last.max(now);
                if let Some(since) = w.down_since.take() {
                    tracing::info!(cluster = %da.cluster, down_since = %since, "Heartbeat is back");
                    back.push(synthetic(
                        &self.cfg,
                        &da.cluster,
                        AlertStatus::Resolved,
                        since,
                        now,
                    ));
                }
            }
        }
        self.update_gauges();
        (!back.is_empty()).then(|| delivery(back, now))
    }

    /// Returns synthetic "firing" alerts for clusters silent past `missing_after`.
    pub fn check(&mut self, now: Timestamp) -> Option<Delivery> {
        if !self.active {
            return None;
        }
        let limit = self.cfg.missing_after.as_chrono();
        let mut down = Vec::new();
        for (cluster, w) in &mut self.clusters {
            if w.down_since.is_none() && w.last + limit <= now {
                tracing::warn!(%cluster, last_heard = %w.last, "Heartbeat missing: monitoring pipeline down");
                w.down_since = Some(now);
                down.push(synthetic(&self.cfg, cluster, AlertStatus::Firing, now, now));
            }
        }
        self.update_gauges();
        (!down.is_empty()).then(|| delivery(down, now))
    }

    /// When the next cluster goes silent, if nothing is heard before then.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        if !self.active {
            return None;
        }
        let limit = self.cfg.missing_after.as_chrono();
        self.clusters
            .values()
            .filter(|w| w.down_since.is_none())
            .map(|w| w.last + limit)
            .min()
    }

    /// Clusters currently considered down.
    pub fn silent_clusters(&self) -> Vec<&ClusterId> {
        self.clusters
            .iter()
            .filter(|(_, w)| w.down_since.is_some())
            .map(|(c, _)| c)
            .collect()
    }

    /// When `cluster` was last heard from, if it is watched.
    pub fn last_heard(&self, cluster: &str) -> Option<Timestamp> {
        self.clusters.get(&ClusterId::new(cluster)).map(|w| w.last)
    }

    fn update_gauges(&self) {
        if let Some(m) = &self.metrics {
            m.clusters_silent.set(self.silent_clusters().len() as i64);
            m.clusters_watched.set(self.clusters.len() as i64);
        }
    }
}

fn synthetic(
    cfg: &HeartbeatConfig,
    cluster: &ClusterId,
    status: AlertStatus,
    starts_at: Timestamp,
    now: Timestamp,
) -> DeliveryAlert {
    let labels: Labels = [
        ("alertname", PIPELINE_DOWN_ALERTNAME),
        ("cluster", cluster.as_str()),
        ("severity", cfg.severity.as_str()),
    ]
    .into_iter()
    .collect();
    let annotations: Labels = [
        (
            "summary",
            format!("monitoring pipeline down in cluster {cluster}"),
        ),
        (
            "description",
            format!(
                "stormcast has not received the {} heartbeat from cluster {cluster} for more than {}. \
                 Prometheus, Alertmanager or the path from Alertmanager to stormcast is down, so \
                 alerts from this cluster are not arriving.",
                cfg.alertname, cfg.missing_after
            ),
        ),
    ]
    .into_iter()
    .collect();
    DeliveryAlert {
        cluster: cluster.clone(),
        observation: Observation {
            labels,
            annotations,
            status,
            starts_at,
            ends_at: (status == AlertStatus::Resolved).then_some(now),
            generator_url: String::new(),
            am_fingerprint: None,
        },
    }
}

fn delivery(alerts: Vec<DeliveryAlert>, now: Timestamp) -> Delivery {
    Delivery {
        received_at: now,
        source: SOURCE.to_owned(),
        receiver: String::new(),
        group_key: String::new(),
        external_url: String::new(),
        truncated_alerts: 0,
        alerts,
    }
}
