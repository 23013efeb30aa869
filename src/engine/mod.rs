//! The clock-driven core shared by `serve` and `replay`.
//!
//! Deliveries go in through [`Engine::apply`], time goes in through
//! [`Engine::tick`]; both read "now" from the [`Clock`] the engine was given.
//! The engine keeps the current state of every alert identity, feeds
//! transitions to correlation and incident events to the notification planner,
//! and writes what changed to the store when it has one.

mod clock;
pub mod heartbeat;

use std::collections::hash_map::Entry;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use clock::{Clock, ManualClock, RecoveryClock, SystemClock};
pub use heartbeat::{Heartbeat, HeartbeatConfig, HeartbeatMetrics};

use crate::config::{ConfigErrors, PromDuration};
use crate::correlate::{Correlator, IncidentEvent};
use crate::domain::{AlertState, DeliveryContext, Fingerprint, Incident, Timestamp, Transition};
use crate::ingest::Delivery;
use crate::metrics::{ClusterLabel, Metrics, TransitionLabel};
use crate::notify::{Notification, Planner};
use crate::store::{Snapshotted, Store, StoreError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineConfig {
    /// How often `serve` advances the engine's clock (resolve holds, notification
    /// timers). `replay` jumps straight to each deadline instead.
    pub tick_interval: PromDuration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            tick_interval: PromDuration::secs(1),
        }
    }
}

impl EngineConfig {
    pub fn validate(&self, path: &str, errs: &mut ConfigErrors) {
        if self.tick_interval.is_zero() {
            errs.push(format!("{path}.tick_interval"), "must be greater than 0");
        }
    }
}

/// Store tree of each watched cluster's last heartbeat: cluster name →
/// Unix milliseconds (8 bytes, big-endian) + 1 byte "has sent a heartbeat".
pub const HEARTBEAT_TREE: &str = "heartbeat";

/// `None` when the store predates the tree.
#[allow(clippy::type_complexity)]
fn load_heartbeats(
    store: &Store,
) -> Result<Option<Vec<(crate::domain::ClusterId, Timestamp, bool)>>, StoreError> {
    use chrono::TimeZone;
    let exists = store
        .db()
        .tree_names()
        .iter()
        .any(|n| n.as_ref() == HEARTBEAT_TREE.as_bytes());
    if !exists {
        return Ok(None);
    }
    let mut out = Vec::new();
    for r in store.tree(HEARTBEAT_TREE)?.iter() {
        let (k, v) = r?;
        let corrupt = |reason: &str| StoreError::Corrupt {
            tree: "heartbeat",
            reason: reason.to_owned(),
        };
        let cluster = std::str::from_utf8(&k).map_err(|_| corrupt("non-UTF-8 cluster"))?;
        if v.len() != 9 {
            return Err(corrupt("expected 9 bytes"));
        }
        let ms = i64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
        let at = chrono::Utc
            .timestamp_millis_opt(ms)
            .single()
            .ok_or_else(|| corrupt("time out of range"))?;
        out.push((crate::domain::ClusterId::new(cluster), at, v[8] == 1));
    }
    Ok(Some(out))
}

/// Counts of what one delivery did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyOutcome {
    pub alerts: usize,
    pub new: usize,
    pub refired: usize,
    pub resolved: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub stale: usize,
}

impl ApplyOutcome {
    fn count(&mut self, t: Transition) {
        self.alerts += 1;
        match t {
            Transition::New | Transition::NewResolved => self.new += 1,
            Transition::Refired => self.refired += 1,
            Transition::Resolved => self.resolved += 1,
            Transition::Updated => self.updated += 1,
            Transition::Unchanged => self.unchanged += 1,
            Transition::Stale => self.stale += 1,
        }
    }
}

/// Every transition, in the order of [`transition_index`].
const TRANSITIONS: [Transition; 7] = [
    Transition::New,
    Transition::NewResolved,
    Transition::Refired,
    Transition::Resolved,
    Transition::Updated,
    Transition::Unchanged,
    Transition::Stale,
];

fn transition_index(t: Transition) -> usize {
    match t {
        Transition::New => 0,
        Transition::NewResolved => 1,
        Transition::Refired => 2,
        Transition::Resolved => 3,
        Transition::Updated => 4,
        Transition::Unchanged => 5,
        Transition::Stale => 6,
    }
}

fn transition_name(t: Transition) -> &'static str {
    match t {
        Transition::New => "new",
        Transition::NewResolved => "new_resolved",
        Transition::Refired => "refired",
        Transition::Resolved => "resolved",
        Transition::Updated => "updated",
        Transition::Unchanged => "unchanged",
        Transition::Stale => "stale",
    }
}

/// A snapshot is written once this many observations and incident events
/// accumulated (or as many as there are alert identities, if more)...
const SNAPSHOT_CHANGES: u64 = 50_000;

/// ...or once this long passed with any change.
const SNAPSHOT_INTERVAL: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// The alert and incident state captured for a snapshot by
/// [`Engine::capture`], written without the engine lock.
pub struct PendingSnapshot {
    store: Store,
    generation: u64,
    applied: Option<u64>,
    alerts: Vec<Arc<AlertState>>,
    incidents: Vec<Incident>,
    changes: u64,
    write_seconds: Option<prometheus_client::metrics::histogram::Histogram>,
}

impl std::fmt::Debug for PendingSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingSnapshot")
            .field("generation", &self.generation)
            .field("applied", &self.applied)
            .field("alerts", &self.alerts.len())
            .field("incidents", &self.incidents.len())
            .finish_non_exhaustive()
    }
}

impl PendingSnapshot {
    /// Observations and incident events the snapshot covers (hand them back
    /// with [`Engine::snapshot_failed`] if the write fails).
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Serialises, writes and records the snapshot durably (blocking I/O).
    pub fn write(self) -> Result<Snapshotted, StoreError> {
        let started = std::time::Instant::now();
        let done = self.store.write_snapshot_as(
            self.generation,
            self.alerts.iter().map(|a| &**a),
            self.incidents.iter(),
            self.applied,
        )?;
        let took = started.elapsed();
        if let Some(h) = &self.write_seconds {
            h.observe(took.as_secs_f64());
        }
        tracing::debug!(
            alerts = done.alerts,
            incidents = done.incidents,
            generation = self.generation,
            took_ms = took.as_millis() as u64,
            "Snapshot written"
        );
        Ok(done)
    }
}

/// Totals since the engine started (or since replay began).
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub struct EngineStats {
    pub deliveries: u64,
    pub observations: u64,
    pub stale: u64,
    pub flaps: u64,
}

/// The alert state, correlation and notification planning, driven by a clock.
pub struct Engine {
    clock: Arc<dyn Clock>,
    /// Shared so a checkpoint captures the state by cloning pointers under
    /// the engine lock; a state changed while the snapshot is being written
    /// is copied on write (`Arc::make_mut`). A pointer also means growing the
    /// map moves 16 bytes per alert instead of a whole state.
    alerts: foldhash::HashMap<Fingerprint, Arc<AlertState>>,
    correlator: Correlator,
    planner: Planner,
    store: Option<Store>,
    metrics: Option<Metrics>,
    stats: EngineStats,
    planned: Vec<Notification>,
    heartbeat: Heartbeat,
    /// Observations and incident events since the last snapshot.
    changes: u64,
    last_snapshot: Timestamp,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("alerts", &self.alerts.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Err(e) = self.checkpoint() {
            tracing::error!(error = %e, "Final checkpoint failed; the journal still holds every delivery");
        }
    }
}

impl Engine {
    pub fn new(clock: Arc<dyn Clock>, correlator: Correlator, planner: Planner) -> Self {
        Engine {
            clock: clock.clone(),
            alerts: foldhash::HashMap::default(),
            correlator,
            planner,
            store: None,
            metrics: None,
            stats: EngineStats::default(),
            planned: Vec::new(),
            heartbeat: Heartbeat::disabled(),
            changes: 0,
            last_snapshot: clock.now(),
        }
    }

    /// Watches every cluster's heartbeat (the dead-man's switch). Without this
    /// the heartbeat alert is still kept out of correlation, but silence never pages.
    pub fn with_heartbeat(
        mut self,
        cfg: HeartbeatConfig,
        metrics: Option<HeartbeatMetrics>,
    ) -> Self {
        let mut hb = Heartbeat::new(cfg, self.clock.now());
        if let Some(m) = metrics {
            hb = hb.with_metrics(m);
        }
        self.heartbeat = hb;
        self
    }

    pub fn heartbeat(&self) -> &Heartbeat {
        &self.heartbeat
    }

    /// Stops heartbeat silence detection (the input of a replay has ended).
    pub fn suspend_heartbeat(&mut self) {
        self.heartbeat.suspend();
    }

    /// Persists the state to `store` as snapshots: when
    /// [`capture_if_due`](Self::capture_if_due) finds one due (`serve` asks
    /// after every tick and writes it off the lock), on
    /// [`checkpoint`](Self::checkpoint), and when the engine is dropped.
    pub fn with_store(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The notification planner (silences, acknowledgements).
    pub fn planner(&self) -> &Planner {
        &self.planner
    }

    pub fn planner_mut(&mut self) -> &mut Planner {
        &mut self.planner
    }

    /// Loads alert and incident state from the store. Call once, before the
    /// first delivery; then re-apply the journal past [`Store::applied`].
    pub fn restore(&mut self) -> Result<usize, StoreError> {
        let Some(store) = &self.store else {
            return Ok(0);
        };
        let snapshot = store.load_snapshot()?;
        for a in snapshot.alerts {
            if a.is_firing() {
                if let Some(m) = &self.metrics {
                    m.active_alerts
                        .get_or_create(&ClusterLabel {
                            cluster: a.cluster.to_string(),
                        })
                        .inc();
                }
            }
            self.alerts.insert(a.id, Arc::new(a));
        }
        self.correlator.restore(snapshot.incidents);
        let last_heard = load_heartbeats(store)?;
        self.heartbeat.restore(
            self.alerts.values().map(|a| &**a),
            last_heard,
            self.clock.now(),
        );
        self.update_gauges();
        Ok(self.alerts.len())
    }

    /// Applies one validated delivery at its receive time (which the caller
    /// took from the same clock), so that re-applying a journal entry after a
    /// crash gives the same incident ids and times as the first time.
    pub fn apply(&mut self, d: &Delivery) -> ApplyOutcome {
        let now = d.received_at;
        self.stats.deliveries += 1;
        let outcome = self.apply_alerts(d, now);
        if let Some(back) = self.heartbeat.observe(d, now) {
            self.apply_alerts(&back, now);
        }
        self.persist_heartbeats();
        outcome
    }

    /// Writes changed last-heard times to the store's `heartbeat` tree, so a
    /// restart knows how long each cluster has been silent.
    fn persist_heartbeats(&mut self) {
        let updates = self.heartbeat.take_updates();
        let Some(store) = &self.store else {
            return;
        };
        if updates.is_empty() {
            return;
        }
        let tree = match store.tree(HEARTBEAT_TREE) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "Cannot open the heartbeat tree");
                return;
            }
        };
        for (cluster, v) in updates {
            let r = match v {
                Some((last, has_heartbeat)) => {
                    let mut val = last.timestamp_millis().to_be_bytes().to_vec();
                    val.push(u8::from(has_heartbeat));
                    tree.insert(cluster.as_str().as_bytes(), val).map(|_| ())
                }
                None => tree.remove(cluster.as_str().as_bytes()).map(|_| ()),
            };
            if let Err(e) = r {
                tracing::error!(error = %e, %cluster, "Cannot persist heartbeat");
            }
        }
    }

    fn apply_alerts(&mut self, d: &Delivery, now: Timestamp) -> ApplyOutcome {
        let mut outcome = ApplyOutcome::default();
        // Metrics are counted per delivery: a labelled metric costs a lookup
        // and a label string each time it is touched.
        let mut transitions = [0u64; TRANSITIONS.len()];
        let mut firing_delta: Vec<(&crate::domain::ClusterId, i64)> = Vec::new();
        for da in &d.alerts {
            let ctx = DeliveryContext {
                cluster: &da.cluster,
                source: &d.source,
                external_url: &d.external_url,
                received_at: d.received_at,
            };
            let id = da.observation.labels.fingerprint();
            let obs = da.observation.clone();
            let (was_firing, transition) = match self.alerts.entry(id) {
                Entry::Occupied(mut e) => {
                    let state = Arc::make_mut(e.get_mut());
                    (state.is_firing(), state.observe(obs, &ctx))
                }
                Entry::Vacant(e) => {
                    let (state, t) = AlertState::first_as(id, obs, &ctx);
                    e.insert(Arc::new(state));
                    (false, t)
                }
            };
            outcome.count(transition);
            self.stats.observations += 1;
            let state = &self.alerts[&id];
            if transition == Transition::Stale {
                self.stats.stale += 1;
            }
            if transition == Transition::Refired {
                self.stats.flaps += 1;
            }
            transitions[transition_index(transition)] += 1;
            if was_firing != state.is_firing() {
                let delta = if state.is_firing() { 1 } else { -1 };
                match firing_delta.iter_mut().find(|(c, _)| **c == da.cluster) {
                    Some((_, n)) => *n += delta,
                    None => firing_delta.push((&da.cluster, delta)),
                }
            }
            // Re-deliveries bump counters too, so every observation marks the
            // state for the next checkpoint; only changes reach correlation.
            self.changes += 1;
            // The heartbeat proves the pipeline works; it is never an incident.
            if transition.is_change() && !self.heartbeat.is_heartbeat(&state.labels) {
                self.correlator.stage(state, transition, now);
            }
        }
        if let Some(m) = &self.metrics {
            for (t, n) in TRANSITIONS.iter().zip(transitions) {
                if n > 0 {
                    m.transitions
                        .get_or_create(&TransitionLabel {
                            transition: transition_name(*t).to_owned(),
                        })
                        .inc_by(n);
                }
            }
            for (cluster, n) in firing_delta {
                if n != 0 {
                    m.active_alerts
                        .get_or_create(&ClusterLabel {
                            cluster: cluster.to_string(),
                        })
                        .inc_by(n);
                }
            }
        }
        let events = self.correlator.finish();
        self.handle_events(events, now);
        self.update_gauges();
        outcome
    }

    /// Advances to the clock's current time: resolves incidents whose hold has
    /// passed and runs notification timers.
    pub fn tick(&mut self) {
        let now = self.clock.now();
        if let Some(down) = self.heartbeat.check(now) {
            self.apply_alerts(&down, now);
        }
        self.persist_heartbeats();
        let events = self.correlator.tick(now);
        self.handle_events(events, now);
        let due = self.planner.tick(now);
        self.planned.extend(due);
        self.update_gauges();
    }

    /// A snapshot is due once enough changed to be worth rewriting the state
    /// (so its cost per observation stays constant as the state grows), or
    /// anything changed and [`SNAPSHOT_INTERVAL`] passed (so a restart
    /// re-applies little of the journal).
    fn snapshot_due(&self, now: Timestamp) -> bool {
        self.store.is_some()
            && self.changes > 0
            && (self.changes >= SNAPSHOT_CHANGES.max(self.alerts.len() as u64)
                || now - self.last_snapshot >= SNAPSHOT_INTERVAL)
    }

    /// Writes a snapshot of the whole alert and incident state now, on this
    /// thread, if anything changed since the last one (start-up recovery,
    /// shutdown, tools and tests; `serve` uses
    /// [`capture_if_due`](Self::capture_if_due) to write off the engine lock).
    ///
    /// The journal is the durable record of every acknowledged delivery, so
    /// state need not reach disk per observation: after a crash, start-up
    /// loads the last snapshot and re-applies the journal past its watermark
    /// (re-applying a delivery is harmless).
    pub fn checkpoint(&mut self) -> Result<Snapshotted, StoreError> {
        let Some(pending) = self.capture() else {
            return Ok(Snapshotted::default());
        };
        let changes = pending.changes;
        pending
            .write()
            .inspect_err(|_| self.snapshot_failed(changes))
    }

    /// Captures the state for a snapshot when one is due. Cheap: it clones
    /// pointers to the alert states and the incidents, so the caller can
    /// release the engine lock and [`PendingSnapshot::write`] on a blocking
    /// thread while deliveries go on. Write captures in the order taken; one
    /// overtaken by a later capture is skipped.
    pub fn capture_if_due(&mut self) -> Option<PendingSnapshot> {
        if !self.snapshot_due(self.clock.now()) {
            return None;
        }
        self.capture()
    }

    /// Captures the state for a snapshot now if anything changed since the last one.
    pub fn capture(&mut self) -> Option<PendingSnapshot> {
        let store = self.store.as_ref()?;
        if self.changes == 0 {
            return None;
        }
        let started = std::time::Instant::now();
        // The watermark under the same lock as the state: every entry marked
        // applied by now is in it (entries applied but not yet marked are
        // re-applied after a crash, which is harmless).
        let applied = store.applied_watermark();
        let generation = store.reserve_generation();
        let alerts: Vec<Arc<AlertState>> = self.alerts.values().cloned().collect();
        let alerts_took = started.elapsed();
        let incidents: Vec<Incident> = self.correlator.incidents().into_iter().cloned().collect();
        let captured = started.elapsed();
        if let Some(m) = &self.metrics {
            m.snapshot_capture_seconds.observe(captured.as_secs_f64());
        }
        tracing::debug!(
            alerts = alerts.len(),
            incidents = incidents.len(),
            generation,
            lock_held_ms = captured.as_secs_f64() * 1e3,
            alert_refs_ms = alerts_took.as_secs_f64() * 1e3,
            "Snapshot captured"
        );
        let pending = PendingSnapshot {
            store: store.clone(),
            generation,
            applied,
            alerts,
            incidents,
            changes: self.changes,
            write_seconds: self
                .metrics
                .as_ref()
                .map(|m| m.snapshot_write_seconds.clone()),
        };
        self.changes = 0;
        self.last_snapshot = self.clock.now();
        Some(pending)
    }

    /// A captured snapshot could not be written: its changes count again, so
    /// the next due check retries.
    pub fn snapshot_failed(&mut self, changes: u64) {
        self.changes += changes;
    }

    /// The earliest time [`tick`](Self::tick) has work to do.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        [
            self.correlator.next_deadline(),
            self.planner.next_deadline(),
            self.heartbeat.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn handle_events(&mut self, events: Vec<IncidentEvent>, now: Timestamp) {
        for ev in events {
            let Some(incident) = self.correlator.incident(ev.id()) else {
                continue;
            };
            self.changes += 1;
            if matches!(ev, IncidentEvent::Resolved { .. })
                && self.correlator.merged_into(ev.id()).is_some()
            {
                self.planner.forget(ev.id());
                continue;
            }
            let planned = self.planner.plan(&ev, incident, now);
            self.planned.extend(planned);
        }
    }

    fn update_gauges(&self) {
        if let Some(m) = &self.metrics {
            m.open_incidents.set(self.correlator.open_count() as i64);
        }
    }

    /// Notifications planned since the last call.
    pub fn take_planned(&mut self) -> Vec<Notification> {
        std::mem::take(&mut self.planned)
    }

    pub fn alert(&self, id: Fingerprint) -> Option<&AlertState> {
        self.alerts.get(&id).map(|a| &**a)
    }

    pub fn alerts(&self) -> impl Iterator<Item = &AlertState> {
        self.alerts.values().map(|a| &**a)
    }

    pub fn alert_count(&self) -> usize {
        self.alerts.len()
    }

    pub fn incidents(&self) -> Vec<&Incident> {
        self.correlator.incidents()
    }

    pub fn incident(&self, id: &str) -> Option<&Incident> {
        self.correlator.incident(id)
    }

    pub fn correlator(&self) -> &Correlator {
        &self.correlator
    }

    /// For live topology refreshes.
    pub fn correlator_mut(&mut self) -> &mut Correlator {
        &mut self.correlator
    }

    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// Drops resolved alerts and incidents past retention from memory (the
    /// store compacts itself separately).
    pub fn forget_before(&mut self, cutoff: Timestamp) {
        self.changes += 1;
        self.alerts.retain(|_, a| {
            a.is_firing()
                || a.ends_at.unwrap_or(a.last_received) >= cutoff
                || a.last_received >= cutoff
        });
        self.correlator.forget_closed_before(cutoff);
    }
}
