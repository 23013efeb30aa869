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

use prometheus_client::metrics::family::Family;
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
    /// Stop watching a cluster (and resolve its "pipeline down" incident)
    /// after this much silence, so a decommissioned cluster does not stay down
    /// forever. Clusters listed in `clusters` are never forgotten.
    pub forget_after: PromDuration,
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
            forget_after: PromDuration::hours(7 * 24),
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
        if self.forget_after <= self.missing_after {
            errs.push(
                format!("{path}.forget_after"),
                format!("must be longer than missing_after ({})", self.missing_after),
            );
        }
    }
}

/// `stormcast_heartbeat_*` metrics.
#[derive(Clone, Debug, Default)]
pub struct HeartbeatMetrics {
    pub clusters_silent: Gauge,
    pub clusters_watched: Gauge,
    /// Unix time of each watched cluster's last heartbeat (engine clock).
    pub last_heartbeat: Family<crate::metrics::ClusterLabel, Gauge>,
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
        r.register(
            "heartbeat_last_seen_timestamp_seconds",
            "When each watched cluster was last heard from (Unix time)",
            m.last_heartbeat.clone(),
        );
        m
    }
}

#[derive(Debug, Clone)]
struct Watched {
    /// Last heartbeat, or for clusters without one, the last delivery or the
    /// time watching started.
    last: Timestamp,
    /// Silence is counted from the later of `last` and this: the time watching
    /// (re)started, so a restart gives every cluster a fresh `missing_after`.
    counting_from: Timestamp,
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
    /// Clusters whose last-heard time changed since [`Heartbeat::take_updates`].
    dirty: BTreeSet<ClusterId>,
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
                        counting_from: now,
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
            dirty: BTreeSet::new(),
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

    /// Rebuilds state after a restart. `last_heard` is what
    /// [`take_updates`](Self::take_updates) persisted (`None` for a store from
    /// before it was persisted: then heartbeat alerts say which clusters to
    /// watch); restored alert states
    /// say which clusters were reported down. Every watched cluster gets a
    /// fresh `missing_after` from `now` (the time stormcast was down says
    /// nothing about them), and down clusters stay down until their heartbeat
    /// returns or `forget_after` passes.
    pub fn restore<'a>(
        &mut self,
        alerts: impl IntoIterator<Item = &'a AlertState>,
        last_heard: Option<Vec<(ClusterId, Timestamp, bool)>>,
        now: Timestamp,
    ) {
        let persisted = last_heard.is_some();
        for (cluster, last, has_heartbeat) in last_heard.into_iter().flatten() {
            let w = self.watch(&cluster, now);
            w.last = last;
            w.has_heartbeat = has_heartbeat;
        }
        for a in alerts {
            if self.is_heartbeat(&a.labels) && !persisted {
                // A store written before last-heard times were persisted.
                let w = self.watch(&a.cluster, now);
                w.has_heartbeat = true;
            } else if a.source == SOURCE
                && a.labels.alertname() == PIPELINE_DOWN_ALERTNAME
                && a.is_firing()
            {
                let w = self.watch(&a.cluster, now);
                w.down_since = Some(a.starts_at);
            }
        }
        for w in self.clusters.values_mut() {
            w.counting_from = now;
        }
        self.dirty.clear();
        self.update_gauges();
    }

    /// Last-heard times that changed since the previous call, for the engine
    /// to persist: `Some((time, has_heartbeat))`, or `None` when the cluster
    /// is no longer watched.
    pub fn take_updates(&mut self) -> Vec<(ClusterId, Option<(Timestamp, bool)>)> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|c| {
                let v = self.clusters.get(&c).map(|w| (w.last, w.has_heartbeat));
                (c, v)
            })
            .collect()
    }

    fn watch(&mut self, cluster: &ClusterId, now: Timestamp) -> &mut Watched {
        self.clusters.entry(cluster.clone()).or_insert(Watched {
            last: now,
            counting_from: now,
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
        let watched_before = self.clusters.len();
        let mut heard = Vec::new();
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
                heard.push(da.cluster.clone());
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
        // Gauges only move when a heartbeat landed (a Watchdog every minute
        // per cluster), not on every delivery of a storm.
        if !heard.is_empty() || self.clusters.len() != watched_before {
            self.update_gauges();
        }
        self.dirty.extend(heard);
        (!back.is_empty()).then(|| delivery(back, now))
    }

    /// Returns synthetic "firing" alerts for clusters silent past
    /// `missing_after`, and "resolved" ones for clusters forgotten after
    /// `forget_after`.
    pub fn check(&mut self, now: Timestamp) -> Option<Delivery> {
        if !self.active {
            return None;
        }
        let limit = self.cfg.missing_after.as_chrono();
        let mut changed = Vec::new();
        let mut forget = Vec::new();
        for (cluster, w) in &mut self.clusters {
            match w.down_since {
                None if w.last.max(w.counting_from) + limit <= now => {
                    tracing::warn!(%cluster, last_heard = %w.last, "Heartbeat missing: monitoring pipeline down");
                    w.down_since = Some(now);
                    changed.push(synthetic(&self.cfg, cluster, AlertStatus::Firing, now, now));
                }
                Some(since) if forget_at(&self.cfg, cluster, w).is_some_and(|t| t <= now) => {
                    tracing::warn!(%cluster, last_heard = %w.last, "Cluster silent past forget_after: no longer watched");
                    let mut a = synthetic(&self.cfg, cluster, AlertStatus::Resolved, since, now);
                    a.observation.annotations.insert(
                        "description",
                        format!(
                            "stormcast stopped watching cluster {cluster}: no heartbeat for more than {}. \
                             If the cluster still exists, its monitoring pipeline is still down.",
                            self.cfg.forget_after
                        ),
                    );
                    changed.push(a);
                    forget.push(cluster.clone());
                }
                _ => {}
            }
        }
        for c in forget {
            self.clusters.remove(&c);
            self.dirty.insert(c);
        }
        if !changed.is_empty() {
            self.update_gauges();
        }
        (!changed.is_empty()).then(|| delivery(changed, now))
    }

    /// When the next cluster goes silent (or is forgotten), if nothing is
    /// heard before then.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        if !self.active {
            return None;
        }
        let limit = self.cfg.missing_after.as_chrono();
        self.clusters
            .iter()
            .filter_map(|(c, w)| match w.down_since {
                None => Some(w.last.max(w.counting_from) + limit),
                Some(_) => forget_at(&self.cfg, c, w),
            })
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
            for (cluster, w) in &self.clusters {
                let label = crate::metrics::ClusterLabel {
                    cluster: cluster.to_string(),
                };
                m.last_heartbeat
                    .get_or_create(&label)
                    .set(w.last.timestamp());
            }
        }
    }
}

/// When a down cluster is forgotten, unless it is listed in `clusters`.
fn forget_at(cfg: &HeartbeatConfig, cluster: &ClusterId, w: &Watched) -> Option<Timestamp> {
    let listed = cfg.clusters.iter().any(|c| c == cluster.as_str());
    (w.down_since.is_some() && !listed).then(|| w.last + cfg.forget_after.as_chrono())
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
            generator_url: Default::default(),
            am_fingerprint: None,
        },
    }
}

fn delivery(alerts: Vec<DeliveryAlert>, now: Timestamp) -> Delivery {
    Delivery {
        received_at: now,
        source: SOURCE.into(),
        receiver: String::new(),
        group_key: String::new(),
        external_url: Default::default(),
        truncated_alerts: 0,
        alerts,
    }
}
