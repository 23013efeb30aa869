//! Correlation: turns alert transitions into incidents with a root cause.
//!
//! The engine calls [`Correlator::observe`] for every alert transition and
//! [`Correlator::tick`] as time passes; both return [`IncidentEvent`]s that the
//! notification planner turns into messages.
//!
//! # How alerts become incidents
//! 1. Every alert is resolved to the most specific entity it is about and its
//!    causal parents ([`entity`]): pod → node → zone, pod → workload → the
//!    services it depends on (declared in `rules/`, also across clusters),
//!    a Service → the workloads its endpoints list (or the one declared for
//!    it, or the one of its name), control-plane clients → control plane.
//! 2. Alerts are grouped by causal reachability with an incremental
//!    union-find: an alert joins the alerts of a *failing* parent (one with a
//!    firing alert of its own, or one resolved less than `grouping.window`
//!    ago, or an inferred one). A healthy cluster or namespace never links
//!    anything. A pod links through its node when the node is failing and
//!    through its workload otherwise, so that two node failures do not merge
//!    through a Deployment spread over both. Scrape-job aggregates over nodes
//!    (`TargetDown{job="node-exporter"}`) attach to one failing node.
//!    A pod's alert whose rule lists `dependency` in `symptom_of` (a
//!    readiness probe that checks what its Service calls) also has, after
//!    its workload, the dependencies of the Service that workload backs
//!    (workloads before services, nearest first, as for the service's own
//!    alerts): a caller's pod NotReady joins the dependency that is down,
//!    through the dependency's own failure rather than another caller's
//!    symptom. A pod on a failing node still goes with its node; one that
//!    joined a dependency first leaves for its node's incident when the
//!    node turns out to fail with it, as it would have had the node's alert
//!    come first.
//! 3. A link needs compatible onsets, because a cause and its symptoms begin
//!    together. An alert's onset is its `startsAt` minus its rule's `for`
//!    (Prometheus stamps `startsAt` when the alert fires): a symptom of a failing node or zone began at most 5 minutes
//!    before the failure alert it links to and within `grouping.window`
//!    after it (a full disk evicts pods 25 minutes in, but next to its
//!    DiskPressure); a symptom of a failing workload or dependency began
//!    within 5 minutes of it, and links to the one that began closest.
//! 4. One alert never bridges two problems. A pod whose workload also fails
//!    on healthy nodes (a bad rollout, a crashing dependency) is the
//!    workload's symptom, not its node's, and a node that fails later does
//!    not take it; but a pod's readiness that failed within 2 minutes of
//!    its own node is the node's (the node lifecycle controller marks a lost
//!    node's pods NotReady as it marks the node). A workload aggregate (`KubeDeploymentReplicasMismatch`)
//!    whose failing pods are all on failing nodes joins the node's incident
//!    through the pod that failed closest to it (a pod reported later that
//!    failed closer takes it over), and then explains no callers. A second alert on an entity joins the first only when it
//!    began within 5 minutes of it (or, for node conditions, while it fires)
//!    and is not already explained by another cause. Informational alerts
//!    (`links: false`) stand alone, and an alert is never linked to a cause
//!    its rule's `symptom_of` leaves out (an image pull failure is not its
//!    node's). A workload alert that arrived before its nodes' alerts
//!    (Alertmanager groups by namespace) mirrors them once a node pulls its
//!    pod; a lone workload alert joins a pod only within 5 minutes of it.
//!    A pod that a workload was inferred from, grouping nothing else through
//!    it, is not the workload's symptom yet: a node failing under it takes it.
//! 5. Parents are inferred when children fail together: a node when at least
//!    half of its pods fail within 5 minutes (pods explained by their own
//!    workload do not count; the node's failure begins with the first), a workload when two of its pods on healthy
//!    nodes do, a zone when at least two nodes (and 30 % of the zone) fail
//!    within 2 minutes and most of the zone's nodes are down.
//! 6. Each incident ranks its failing entities by how many members they
//!    explain (causal descendants), then rule weight, learned cause scores
//!    (when the rules have a `learned:` section, [`learned`]), entity kind,
//!    severity and start time, and explains the winner in one sentence.
//!
//! # Storm mode
//! A cluster is in storm mode while new alerts arrive faster than
//! `grouping.storm_factor` times its baseline (an exponential average over
//! about 30 minutes) and at least `grouping.storm_min_per_minute`; the fleet
//! is when its total rate is (three times the minimum), or when two or more
//! clusters are at once. Incidents opened in a storm say so.
//!
//! # Merge and split
//! A late root cause attaches to the incident its symptoms opened. When an
//! alert bridges two open incidents they merge: the older incident keeps its
//! id and absorbs the other's members; the younger one is closed at once
//! (`Resolved` event, [`Correlator::merged_into`] names the survivor, and its
//! explanation says so). An alert that resolves leaves its incident as it is
//! until every member resolved and `grouping.resolve_hold` passed. A re-fire
//! after that opens a new incident. An alert that flaps (its condition came
//! back within its rule's `for` of the end of its previous episode) holds
//! its incident open, once quiet, `resolve_hold` plus as long as it last
//! stayed quiet, so that its next re-fire rejoins the incident instead of
//! paging again.
//!
//! Two links are revised as later alerts arrive, so that the grouping does
//! not depend on which Alertmanager sent first:
//! - a caller's alert (an error rate) that joined through a failing
//!   workload, when that workload's failure turns out to mirror failing
//!   nodes (its lost pods were on them, and the nodes' alerts came later).
//!   Had the nodes' alerts come first, the caller would never have joined,
//!   so it leaves, with anything that joined through it, for the incident of
//!   another failing dependency that explains it, or for an incident of its
//!   own (`Opened`) until one fails;
//! - a workload alert mirroring failing nodes moves to the incident of a pod
//!   reported later that failed closer to it.
//!
//! The incident left is `Updated`. Nothing else splits an open incident.

pub mod entity;
pub mod learn;
pub mod learned;
pub mod live;
pub mod rules;
pub mod ruletest;
pub mod topology;

use std::sync::Arc;

// The correlator's maps are keyed by entity ids, incident ids and slots on
// every alert; SipHash was a tenth of the cost of applying a delivery.
use foldhash::{HashMap, HashSet};

use crate::config::PromDuration;
use crate::domain::{
    severity_rank, AlertState, Entity, EntityKind, Fingerprint, Incident, IncidentAlert, Labels,
    RootCause, Timestamp, Transition,
};

pub use rules::Rules;
pub use topology::{Topology, TopologyConfig, TopologyError};

/// Correlation settings that come from `rules/`.
#[derive(Debug, Clone)]
pub struct CorrelateSettings {
    /// How long an incident stays open after its last member resolved, so a
    /// quick re-fire rejoins it instead of opening a new one.
    pub resolve_hold: PromDuration,
    /// Causal rules, grouping windows and service dependencies.
    pub rules: Arc<Rules>,
}

impl Default for CorrelateSettings {
    fn default() -> Self {
        CorrelateSettings::from_rules(Rules::default())
    }
}

impl CorrelateSettings {
    pub fn from_rules(rules: Rules) -> Self {
        CorrelateSettings {
            resolve_hold: rules.resolve_hold,
            rules: Arc::new(rules),
        }
    }
}

/// A change to an incident, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncidentEvent {
    Opened { id: String },
    Updated { id: String, change: Change },
    Resolved { id: String },
}

impl IncidentEvent {
    pub fn id(&self) -> &str {
        match self {
            IncidentEvent::Opened { id }
            | IncidentEvent::Updated { id, .. }
            | IncidentEvent::Resolved { id } => id,
        }
    }
}

/// What about an open incident changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Members joined, left or changed state; scope and cause are the same.
    Members,
    /// The ranked root cause is a different entity now.
    RootCause,
    /// A cluster not affected before is affected now.
    Scope,
    /// The highest member severity went up.
    Severity,
}

/// Deterministic incident id from the alert that opened it and when.
pub fn incident_id(seed: Fingerprint, opened_at: Timestamp) -> String {
    let ms = opened_at.timestamp_millis().to_string();
    let fp = Fingerprint::of_sorted([("seed", seed.to_string().as_str()), ("at", ms.as_str())]);
    format!("inc-{fp}")
}

type Key = u32;

/// A node-wide scrape failure and its node's failure begin this close
/// together: their `for` durations differ (TargetDown 10m, KubeNodeNotReady
/// 15m) and node readiness lags a lost node by up to a few minutes.
const SCRAPE_ONSET_SECS: i64 = 600;
/// Alerts already grouped with others that began this far apart from a node
/// failure stay with their own problem when the node fails; pods count as
/// failing together for node inference within it.
const ZONE_ONSET_SECS: i64 = 300;
/// Nodes of a zone that goes down lose their kubelets together and are marked
/// NotReady within one node-monitor grace period (40-50s) plus a
/// kube-state-metrics scrape and a rule evaluation (30s each) of each other:
/// only nodes whose failures began this close together share a zone cause.
const ZONE_TOGETHER_SECS: i64 = 120;
/// How long before its cause's own alert condition a symptom may begin: a
/// node is marked NotReady 40-50s after it is lost, while its pods' scrapes
/// and callers fail at once, and kube-state-metrics reports each a scrape
/// interval or two later.
const SYMPTOM_LEAD_SECS: i64 = 300;
/// A failing workload or service and the alerts it explains (its pods, its
/// callers' error rates) begin this close together: a dependency that fails
/// hurts its callers at once.
const LOGICAL_ONSET_SECS: i64 = 300;

/// One alert episode in the union-find.
#[derive(Debug, Clone)]
struct Slot {
    fp: Fingerprint,
    parent: usize,
    size: u32,
    alive: bool,
    firing: bool,
    ends_at: Option<Timestamp>,
    starts_at: Timestamp,
    primary: Key,
    infra: Box<[Key]>,
    logical: Box<[Key]>,
    ancestors: Box<[Key]>,
    owner: Option<Key>,
    /// Linked through a failing infrastructure parent (node, zone).
    infra_mode: bool,
    links: bool,
    node_scrape: bool,
    /// Its rule declares no `for`: the onset is `startsAt`, and the condition
    /// may have begun up to the rule's unknown `for` earlier.
    onset_unknown: bool,
    /// Spread over the nodes in `infra` (a DaemonSet): joins one of them.
    spread: bool,
    /// A symptom of its node while the node's failure alert fires,
    /// whatever the onsets (a rule's `node_reasons`).
    node_while_failing: bool,
    /// A pod's readiness (see `entity::Resolved::readiness`).
    readiness: bool,
    /// The node a scrape aggregate attached to.
    attached: Option<Key>,
    /// A workload alert that joined an infrastructure incident because all
    /// its failing pods were on failing nodes: it does not make the workload
    /// a cause for its dependents.
    attached_infra: bool,
    /// Already joined through a logical parent: a later failing parent does
    /// not pull it again (one alert never bridges two causes).
    logical_linked: bool,
    /// The one link that joined this alert and that later evidence revises:
    /// for a caller's alert (an error rate), the failing workload's alert
    /// it joined through, which it leaves if that alert turns out to mirror
    /// failing nodes; for a workload alert mirroring failing nodes, the pod
    /// it hangs from, which a pod that failed closer to it replaces.
    via: Option<usize>,
    /// For a pod's alert that joined through a failing dependency of its
    /// workload's Service (a probe that checks it): the dependency's alert
    /// it joined. Its node failing with it takes it, as had the node's
    /// alert come first.
    dep_via: Option<usize>,
    /// Joined through a failing dependency rather than its own workload or
    /// service: a symptom of what it calls, which explains no pod's
    /// readiness (the pod joins the dependency that is down itself).
    through_dep: bool,
    /// A stormcast prediction rather than a received alert.
    predictive: bool,
    /// How long this alert stayed quiet before it last came back, when it
    /// flaps (see [`Correlator::flap_quiet`]): its incident, once quiet,
    /// stays open this much longer than `resolve_hold`.
    flap_hold: chrono::Duration,
    weight: u32,
    severity: u8,
    cluster: Arc<str>,
}

#[derive(Debug, Clone)]
struct Ent {
    entity: Entity,
    /// Alerts about this entity that mark it failing.
    failing: Vec<usize>,
    /// Alerts that have this entity as a direct parent.
    touch: Vec<usize>,
    /// An alert standing for the entity when it was inferred failing.
    inferred: Option<usize>,
    /// Failing child nodes (zones only).
    failing_children: Vec<Key>,
    /// A StatefulSet, seen as one in any alert or owner series: its pods
    /// are not interchangeable (each holds its own identity and data, such
    /// as a database primary), so losing one hurts its callers.
    stateful: bool,
}

#[derive(Debug, Clone)]
struct Open {
    incident: Incident,
    /// When the last member resolved, if all have.
    quiet_since: Option<Timestamp>,
    slots: Vec<usize>,
}

/// Per-cluster arrival rates for storm mode.
#[derive(Debug, Clone, Default)]
struct Rate {
    minute: i64,
    count: u32,
    baseline: f64,
    storm: bool,
}

/// Groups alerts into incidents.
#[derive(Debug, Default)]
pub struct Correlator {
    settings: CorrelateSettings,
    topology: Arc<Topology>,
    open: HashMap<String, Open>,
    by_alert: HashMap<Fingerprint, (String, usize)>,
    closed: Vec<Incident>,
    merged: HashMap<String, String>,
    /// The links that joined each component (by its root), so that a link
    /// found wrong later can be taken out again.
    edges: HashMap<usize, Vec<(usize, usize)>>,
    slot_data: Vec<Slot>,
    free: Vec<usize>,
    comp_inc: HashMap<usize, String>,
    keys: HashMap<String, Key>,
    ents: Vec<Ent>,
    /// Failing nodes per cluster, for scrape aggregates.
    failing_nodes: HashMap<Arc<str>, Vec<Key>>,
    pending_scrape: HashMap<Arc<str>, Vec<usize>>,
    rates: HashMap<Arc<str>, Rate>,
    fleet_rate: Rate,
    /// Clusters that were in storm mode at some point.
    ever_storm: std::collections::BTreeSet<String>,
    /// Whether the fleet was in storm mode at some point.
    ever_fleet_storm: bool,
    staged: Staged,
}

/// Observations staged since the last [`Correlator::finish`].
#[derive(Debug, Default)]
struct Staged {
    /// Opened events and member updates, in staging order.
    events: Vec<IncidentEvent>,
    /// Incidents to rank; `\u{0}`-prefixed ids were merged away.
    touched: Vec<String>,
    /// Each touched incident as it was before the first staged alert.
    before: HashMap<String, (Option<Entity>, usize, u8)>,
}

/// What ranking found for one incident.
struct Ranked {
    candidates: Vec<RootCause>,
}

impl Correlator {
    pub fn new(settings: CorrelateSettings) -> Self {
        Correlator {
            settings,
            ..Default::default()
        }
    }

    /// Replaces the topology (kube-state-metrics series). Alerts already
    /// grouped keep their incidents; new alerts resolve against it.
    pub fn set_topology(&mut self, topology: Arc<Topology>) {
        self.topology = topology;
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Clusters in storm mode now.
    pub fn storm_clusters(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .rates
            .iter()
            .filter(|(_, r)| r.storm)
            .map(|(c, _)| c.to_string())
            .collect();
        v.sort();
        v
    }

    /// Clusters that entered storm mode at some point (replay stats).
    pub fn storm_history(&self) -> Vec<String> {
        self.ever_storm.iter().cloned().collect()
    }

    /// Whether the fleet entered storm mode at some point (replay stats).
    pub fn fleet_storm_history(&self) -> bool {
        self.ever_fleet_storm
    }

    /// Whether the whole fleet's arrival rate is in storm mode.
    pub fn fleet_storm(&self) -> bool {
        self.fleet_rate.storm
    }

    /// The incident an absorbed incident was merged into.
    pub fn merged_into(&self, id: &str) -> Option<&str> {
        self.merged.get(id).map(String::as_str)
    }

    fn intern(&mut self, n: entity::Node) -> Key {
        if let Some(k) = self.keys.get(&n.key) {
            // A workload first seen through a service name gets its real kind.
            let ent = &mut self.ents[*k as usize];
            ent.stateful |= n.entity.kind == EntityKind::StatefulSet;
            let e = &mut ent.entity;
            if e.kind == EntityKind::Service && n.entity.kind != EntityKind::Service {
                e.kind = n.entity.kind;
            }
            return *k;
        }
        let stateful = n.entity.kind == EntityKind::StatefulSet;
        let k = self.ents.len() as Key;
        self.keys.insert(n.key, k);
        self.ents.push(Ent {
            entity: n.entity,
            failing: Vec::new(),
            touch: Vec::new(),
            inferred: None,
            failing_children: Vec::new(),
            stateful,
        });
        k
    }

    fn find(&mut self, mut s: usize) -> usize {
        while self.slot_data[s].parent != s {
            let p = self.slot_data[s].parent;
            self.slot_data[s].parent = self.slot_data[p].parent;
            s = p;
        }
        s
    }

    fn active(&self, s: usize, now: Timestamp) -> bool {
        let d = &self.slot_data[s];
        let window = self.settings.rules.window.as_chrono();
        d.alive && (d.firing || d.ends_at.is_some_and(|e| e + window > now))
    }

    /// A live alert standing for `k` if it is failing.
    fn failing_rep(&self, k: Key, now: Timestamp) -> Option<usize> {
        let e = &self.ents[k as usize];
        e.failing
            .iter()
            .copied()
            .find(|s| self.active(*s, now))
            .or_else(|| e.inferred.filter(|s| self.slot_data[*s].alive))
    }

    /// Like [`failing_rep`](Self::failing_rep), the one whose onset is
    /// closest to `at`: a node with an old, resolved problem and a new one
    /// counts for its zone by the new one.
    fn failing_rep_at(&self, k: Key, at: Timestamp, now: Timestamp) -> Option<usize> {
        let e = &self.ents[k as usize];
        e.failing
            .iter()
            .copied()
            .filter(|s| self.active(*s, now))
            .chain(e.inferred.filter(|s| self.slot_data[*s].alive))
            .min_by_key(|s| (self.slot_data[*s].starts_at - at).num_seconds().abs())
    }

    /// The live alert of failing `k` whose onset is closest to `s`'s, if one
    /// began within the grouping window of it (an inferred failure counts by
    /// the onset of the alert it was inferred from). A symptom begins with its
    /// cause: an alert that starts long after a node went down is not about
    /// the node being down.
    fn failing_near(&self, k: Key, s: usize, now: Timestamp) -> Option<usize> {
        let e = &self.ents[k as usize];
        let at = self.slot_data[s].starts_at;
        e.failing
            .iter()
            .copied()
            .filter(|f| self.active(*f, now) && self.explains(*f, s))
            .chain(
                e.inferred
                    .filter(|f| self.slot_data[*f].alive && self.explains(*f, s)),
            )
            .min_by_key(|f| (self.slot_data[*f].starts_at - at).num_seconds().abs())
    }

    /// For an alert that is its node's symptom while the node fails (a pod
    /// stuck in `ContainerCreating` on a node under disk pressure): the
    /// node's failure alert that still fires, the one whose onset is
    /// closest to it.
    fn still_failing(&self, k: Key, s: usize) -> Option<usize> {
        if !self.slot_data[s].node_while_failing {
            return None;
        }
        self.ents[k as usize]
            .failing
            .iter()
            .copied()
            .filter(|f| self.slot_data[*f].alive && self.slot_data[*f].firing)
            .min_by_key(|f| self.onset_gap(*f, s))
    }

    /// Whether the failure alert `cause` can explain alert `effect` by time:
    /// the effect began at most `SYMPTOM_LEAD_SECS` before the cause (an
    /// alert condition on the cause can lag the failure itself) and within the
    /// grouping window after it.
    /// Seconds between two alerts' onsets, either way round.
    fn onset_gap(&self, a: usize, b: usize) -> i64 {
        (self.slot_data[a].starts_at - self.slot_data[b].starts_at)
            .num_seconds()
            .abs()
    }

    fn explains(&self, cause: usize, effect: usize) -> bool {
        let w = self.settings.rules.window.as_chrono().num_seconds();
        let gap =
            (self.slot_data[effect].starts_at - self.slot_data[cause].starts_at).num_seconds();
        (-SYMPTOM_LEAD_SECS..=w).contains(&gap)
    }

    /// Whether two alerts began within the grouping window of each other.
    fn near(&self, a: usize, b: usize) -> bool {
        let w = self.settings.rules.window.as_chrono();
        let (x, y) = (self.slot_data[a].starts_at, self.slot_data[b].starts_at);
        (x - y).abs() <= w
    }

    /// The failure alert of logical parent `k` (a workload or service) that
    /// can explain `s`: among its live failing alerts that do not only mirror
    /// failing nodes, the one whose onset is closest to `s`'s, if within
    /// `LOGICAL_ONSET_SECS` of it. A failing dependency hurts its callers at
    /// once, so an error rate that rose ten minutes after a Deployment lost a
    /// replica is not about that.
    fn logical_near(&self, k: Key, s: usize, now: Timestamp) -> Option<usize> {
        let e = &self.ents[k as usize];
        let at = self.slot_data[s].starts_at;
        let gap = |f: usize| (self.slot_data[f].starts_at - at).num_seconds().abs();
        // A caller's alert whose rule declares no `for` (a latency or error
        // rule of the user's own) may have begun up to that `for` before its
        // startsAt: it joins a failure that began before it within the
        // window, as a node's symptoms do.
        let caller = self.late_onset_caller(s);
        e.failing
            .iter()
            .copied()
            .filter(|f| !self.slot_data[*f].attached_infra && self.active(*f, now))
            .chain(
                e.inferred
                    .filter(|f| self.slot_data[*f].alive && !self.slot_data[*f].infra_mode),
            )
            .filter(|f| self.probe_cause(s, k, *f))
            .filter(|f| {
                if caller {
                    self.explains(*f, s)
                } else {
                    gap(*f) <= LOGICAL_ONSET_SECS
                }
            })
            .min_by_key(|f| gap(*f))
    }

    /// Whether alert `f`, standing for failing logical parent `k`, can be a
    /// cause of `s` as far as dependencies go: a pod's readiness joins a
    /// dependency through the dependency's own failure, not through another
    /// caller's symptom of something further down (an error rate that
    /// joined what it calls); what is down further down is among the pod's
    /// dependencies too.
    fn probe_cause(&self, s: usize, k: Key, f: usize) -> bool {
        self.dep_via(s, k, f).is_none() || !self.slot_data[f].through_dep
    }

    /// Whether `s`, linked to failing logical parent `k`, joined through a
    /// dependency: `k` is neither the alert's own entity nor its first
    /// logical parent (a pod's workload, the workload backing a service).
    fn through_dep(&self, s: usize, k: Key) -> bool {
        let sd = &self.slot_data[s];
        sd.primary != k && sd.logical.first().is_some_and(|own| *own != k)
    }

    /// Whether workload `w` is failing on its own: it failed near `s` (an
    /// alert of its own that does not mirror failing nodes, or inferred from
    /// its pods on healthy nodes), and two other pods of it fail away from
    /// `node` on nodes that are not failing themselves, or one does and its
    /// callers' alerts began with it. Such a pod problem is the workload's (a
    /// bad rollout, a crashing dependency), and its node's trouble does not
    /// explain it.
    fn failing_elsewhere(&self, w: Key, node: Key, s: usize, now: Timestamp) -> bool {
        if self.logical_near(w, s, now).is_none() {
            return false;
        }
        let me = self.slot_data[s].primary;
        // The first two distinct pods (or one and a caller) settle it: a
        // workload's touch list grows with the storm, so stop early.
        let mut pod: Option<Key> = None;
        let mut callers = 0;
        for t in &self.ents[w as usize].touch {
            let td = &self.slot_data[*t];
            if !td.links || td.primary == me || !self.active(*t, now) {
                continue;
            }
            if td.owner == Some(w) {
                if td
                    .infra
                    .first()
                    .is_none_or(|n| *n != node && self.failing_rep(*n, now).is_none())
                {
                    match pod {
                        Some(p) if p != td.primary => return true,
                        _ => pod = Some(td.primary),
                    }
                }
            } else if self.onset_gap(*t, s) <= LOGICAL_ONSET_SECS {
                callers += 1;
            }
            if pod.is_some() && callers > 0 {
                return true;
            }
        }
        false
    }

    /// When an alert's condition began, as far as its rules tell: Prometheus
    /// stamps `startsAt` when the alert fires, its rule's `for` later.
    fn onset(&self, alert: &AlertState) -> Timestamp {
        alert.starts_at - self.settings.rules.pending_for(alert.labels.alertname())
    }

    /// For an alert that fired again (received at `now`): how long it stayed
    /// quiet, from the end of its previous episode to this delivery, if it
    /// flaps. It flaps when its condition came back (the new episode's onset)
    /// within its rule's `for` of the previous end, or within
    /// `resolve_hold`: a condition that must hold for `for` to count as a
    /// problem, and that cleared for less than that, gave no sign the problem
    /// ended. Prometheus only fires it again `for` after the condition
    /// returns, and the sender batches it by its own timers, so such a
    /// re-fire arrives well after `resolve_hold` and would page afresh.
    fn flap_quiet(&self, alert: &AlertState, now: Timestamp) -> chrono::Duration {
        let Some(end) = alert.previous_end else {
            return chrono::Duration::zero();
        };
        let pending = self.settings.rules.pending_for(alert.labels.alertname());
        let hold = self.settings.resolve_hold.as_chrono();
        if self.onset(alert) - end > pending.max(hold) {
            return chrono::Duration::zero();
        }
        (now - end).max(chrono::Duration::zero())
    }

    /// When a quiet incident resolves: `resolve_hold` after its last member
    /// resolved, and for a flapping member as long again as it last stayed
    /// quiet before coming back.
    fn resolves_at(&self, o: &Open) -> Option<Timestamp> {
        let q = o.quiet_since?;
        let flap = o
            .slots
            .iter()
            .map(|s| self.slot_data[*s].flap_hold)
            .max()
            .unwrap_or_else(chrono::Duration::zero);
        Some(q + self.settings.resolve_hold.as_chrono() + flap)
    }

    fn new_slot(&mut self, alert: &AlertState) -> usize {
        let r = entity::resolve(
            &alert.labels,
            alert.cluster.as_str(),
            &self.settings.rules,
            &self.topology,
        );
        let primary = self.intern(r.primary);
        let infra: Vec<Key> = r.infra.into_iter().map(|n| self.intern(n)).collect();
        let logical: Vec<Key> = r.logical.into_iter().map(|n| self.intern(n)).collect();
        let mut ancestors: Vec<Key> = std::iter::once(primary)
            .chain(infra.iter().copied())
            .chain(logical.iter().copied())
            .collect();
        for n in r.more_ancestors {
            let k = self.intern(n);
            ancestors.push(k);
        }
        ancestors.sort_unstable();
        ancestors.dedup();
        let owner = r.owner.as_ref().and_then(|o| self.keys.get(o).copied());
        let slot = Slot {
            fp: alert.id,
            parent: 0,
            size: 1,
            alive: true,
            firing: alert.is_firing(),
            ends_at: alert.ends_at,
            starts_at: self.onset(alert),
            primary,
            infra: infra.into(),
            logical: logical.into(),
            ancestors: ancestors.into(),
            owner,
            infra_mode: false,
            links: r.links,
            node_scrape: r.node_scrape,
            spread: r.spread,
            node_while_failing: r.node_while_failing,
            readiness: r.readiness,
            onset_unknown: self
                .settings
                .rules
                .alert(alert.labels.alertname())
                .is_none_or(|r| r.pending_for.is_none()),
            attached: None,
            attached_infra: false,
            logical_linked: false,
            via: None,
            dep_via: None,
            through_dep: false,
            predictive: alert.source == crate::analyze::PREDICTIVE_SOURCE,
            flap_hold: chrono::Duration::zero(),
            weight: r.weight,
            severity: severity_rank(alert.severity()),
            cluster: alert.cluster.shared(),
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.slot_data[i] = slot;
                i
            }
            None => {
                self.slot_data.push(slot);
                self.slot_data.len() - 1
            }
        };
        self.slot_data[idx].parent = idx;
        idx
    }

    /// Joins the components of `a` and `b`, merging their incidents.
    fn union(&mut self, a: usize, b: usize, now: Timestamp, touched: &mut Vec<String>) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return;
        }
        let ia = self.comp_inc.remove(&ra);
        let ib = self.comp_inc.remove(&rb);
        let big = self.link_roots(ra, rb);
        let small = if big == ra { rb } else { ra };
        self.join_edges(big, small, (a, b));
        let inc = match (ia, ib) {
            (Some(x), Some(y)) if x != y => Some(self.merge_incidents(x, y, now, touched)),
            (Some(x), _) | (None, Some(x)) => Some(x),
            (None, None) => None,
        };
        if let Some(i) = inc {
            self.comp_inc.insert(big, i);
        }
    }

    /// Moves the links of component `small` to `big`, which absorbed it, and
    /// adds the link that joined them.
    fn join_edges(&mut self, big: usize, small: usize, link: (usize, usize)) {
        let mut moved = self.edges.remove(&small).unwrap_or_default();
        let kept = self.edges.entry(big).or_default();
        if kept.len() < moved.len() {
            std::mem::swap(kept, &mut moved);
        }
        kept.append(&mut moved);
        kept.push(link);
    }

    /// Merges two open incidents; the older keeps its id.
    fn merge_incidents(
        &mut self,
        x: String,
        y: String,
        now: Timestamp,
        touched: &mut Vec<String>,
    ) -> String {
        let older = |a: &Open, b: &Open| {
            (a.incident.opened_at, &a.incident.id) <= (b.incident.opened_at, &b.incident.id)
        };
        let (keep, gone) = match (self.open.get(&x), self.open.get(&y)) {
            (Some(a), Some(b)) if older(a, b) => (x, y),
            (Some(_), Some(_)) => (y, x),
            (Some(_), None) => return x,
            _ => return y,
        };
        let mut absorbed = self.open.remove(&gone).expect("checked above");
        for s in &absorbed.slots {
            let fp = self.slot_data[*s].fp;
            self.by_alert.insert(fp, (keep.clone(), *s));
        }
        let survivor = self.open.get_mut(&keep).expect("checked above");
        survivor
            .incident
            .alerts
            .append(&mut absorbed.incident.alerts);
        survivor.slots.append(&mut absorbed.slots);
        survivor.incident.updated_at = now;
        survivor.incident.predictive |= absorbed.incident.predictive;
        survivor.quiet_since = (survivor.incident.firing_count() == 0).then_some(now);
        absorbed.incident.resolved_at = Some(now);
        absorbed.incident.updated_at = now;
        absorbed.incident.root_cause.explanation = format!(
            "merged into {keep}: {}",
            absorbed.incident.root_cause.explanation
        );
        self.merged.insert(gone.clone(), keep.clone());
        self.closed.push(absorbed.incident);
        touched.retain(|t| *t != gone);
        touched.push(format!("\u{0}{gone}"));
        touched.push(keep.clone());
        keep
    }

    /// `k` became failing: pull in the alerts it can explain.
    fn on_failing(
        &mut self,
        k: Key,
        rep: usize,
        infra: bool,
        now: Timestamp,
        touched: &mut Vec<String>,
    ) {
        let touchers = self.ents[k as usize].touch.clone();
        if infra {
            for t in touchers {
                // An alert spread over many nodes joins the first of them
                // that fails; another node failing later (a second incident
                // in the cluster) does not bridge to it.
                if self.slot_data[t].spread && self.slot_data[t].infra_mode {
                    continue;
                }
                if self.active(t, now) && self.explains(rep, t) {
                    // A pod already grouped with its workload's own failure
                    // (its pods fail on healthy nodes too) stays there.
                    let td = &self.slot_data[t];
                    if td.logical_linked
                        && td
                            .owner
                            .is_some_and(|w| self.failing_elsewhere(w, k, t, now))
                    {
                        continue;
                    }
                    // An alert already grouped with others (a bad rollout's
                    // pod) that began well apart from this failure stays
                    // with its own problem instead of merging two incidents.
                    let tr = self.find(t);
                    if tr != self.find(rep)
                        && self.slot_data[tr].size > 1
                        && self.onset_gap(t, rep) > ZONE_ONSET_SECS
                    {
                        continue;
                    }
                    // A pod that joined a failing dependency its probes
                    // check goes with its node failing with it, as it would
                    // have had the node's alert come first: it leaves the
                    // dependency's incident (with what joined through it)
                    // rather than bridging the two; still joined to it
                    // another way, it stays there.
                    if let Some(f) = self.slot_data[t].dep_via {
                        if tr == self.find(f)
                            && tr != self.find(rep)
                            && !self.relink(t, f, Some(rep), now, touched)
                        {
                            continue;
                        }
                        self.slot_data[t].dep_via = None;
                        self.slot_data[t].via = None;
                    }
                    self.slot_data[t].infra_mode = true;
                    let was_logical = self.slot_data[t].logical_linked;
                    self.union(rep, t, now, touched);
                    if was_logical {
                        self.mirror_infra(t, now, touched);
                    }
                    self.pull_callers(t, now, touched);
                    // A workload inferred from this pod failing on a healthy
                    // node was this node's failure all along.
                    if let Some(w) = self.slot_data[t].owner {
                        if self.ents[w as usize].inferred == Some(t) {
                            self.release_callers(t, w, now, touched);
                        }
                    }
                }
            }
        } else {
            // Its own pods first: when all of them that fail near this
            // failure are on failing nodes, the workload alert mirrors the
            // nodes (a lost replica) and joins the pod that failed closest
            // to it; it then explains no callers. Otherwise it is a failure
            // of its own and pulls in its pods and the callers' alerts that
            // began with it and are not explained yet.
            let mut own_elsewhere = false;
            let mut fallback: Option<(i64, usize)> = None;
            let mut pull = Vec::new();
            for t in touchers {
                if !self.active(t, now) {
                    continue;
                }
                let td = &self.slot_data[t];
                let gap = self.onset_gap(t, rep);
                let late_caller = self.late_onset_caller(t) && self.explains(rep, t);
                if gap > LOGICAL_ONSET_SECS && !late_caller {
                    continue;
                }
                let own = td.owner == Some(k);
                // Only its own pods can show that it mirrors failing nodes:
                // a caller's pod down with its node says nothing about it.
                if td.infra_mode {
                    if own && fallback.is_none_or(|(g, _)| gap < g) {
                        fallback = Some((gap, t));
                    }
                } else {
                    own_elsewhere |= own;
                    if !td.logical_linked && self.probe_cause(t, k, rep) {
                        pull.push(t);
                    }
                }
            }
            match fallback {
                Some((_, t)) if !own_elsewhere => {
                    self.slot_data[rep].attached_infra = true;
                    self.slot_data[rep].via = Some(t);
                    self.union(rep, t, now, touched);
                }
                // The alert standing for an inferred failure counts as
                // linked through it only when the failure groups other
                // alerts with it; alone, it is no symptom of anything yet,
                // and a node that fails under it later takes it.
                _ if pull.iter().all(|t| *t == rep) => {}
                _ => {
                    for t in pull {
                        self.set_logical_link(t, Some((k, rep)));
                        self.union(rep, t, now, touched);
                    }
                }
            }
        }
        let ent = &self.ents[k as usize];
        if ent.entity.kind == EntityKind::Node {
            let cluster: Arc<str> = Arc::from(ent.entity.cluster.as_deref().unwrap_or(""));
            let nodes = self.failing_nodes.entry(cluster.clone()).or_default();
            if !nodes.contains(&k) {
                nodes.push(k);
            }
            let onset = self.slot_data[rep].starts_at;
            let mut waiting = Vec::new();
            for s in self.pending_scrape.remove(&cluster).unwrap_or_default() {
                if self.active(s, now) {
                    let r = self.find(s);
                    if self.slot_data[r].size != 1 {
                        continue;
                    }
                    if (self.slot_data[s].starts_at - onset).num_seconds().abs()
                        <= SCRAPE_ONSET_SECS
                    {
                        self.slot_data[s].attached = Some(k);
                        self.union(rep, s, now, touched);
                    } else {
                        waiting.push(s);
                    }
                }
            }
            if !waiting.is_empty() {
                self.pending_scrape.insert(cluster.clone(), waiting);
            }
            self.zone_check(k, rep, now, touched);
        }
    }

    /// Pod `t`, grouped with its workload's failure before its node was
    /// known to fail, now joined that node's incident (kube-prometheus'
    /// Alertmanager groups by namespace, so a Deployment's alerts often
    /// arrive before its nodes'). The workload alerts grouped with it mirror
    /// failing nodes, as they would had the node's alert come first: they
    /// explain no later pods or callers.
    fn mirror_infra(&mut self, t: usize, now: Timestamp, touched: &mut Vec<String>) {
        let Some(w) = self.slot_data[t].owner else {
            return;
        };
        let root = self.find(t);
        for f in self.ents[w as usize].failing.clone() {
            if self.find(f) == root && !self.slot_data[f].attached_infra {
                self.slot_data[f].attached_infra = true;
                self.release_callers(f, w, now, touched);
            }
        }
    }

    /// Alert `f`, standing for workload `w`'s failure (its own alert, or the
    /// pod it was inferred from), turned out to mirror failing nodes, so it
    /// explains no callers: callers' alerts that joined through it alone
    /// leave its incident (with whatever joined through them), as they
    /// would have stayed apart had the nodes' alerts come first. Each then
    /// links to another failing dependency that explains it, or stands
    /// alone until one fails.
    fn release_callers(&mut self, f: usize, w: Key, now: Timestamp, touched: &mut Vec<String>) {
        // A StatefulSet's pod down with its node is the callers' trouble too
        // (see `pod_down_with_node`): they stay.
        if self.ents[w as usize].stateful {
            return;
        }
        let callers: Vec<usize> = self.ents[w as usize]
            .touch
            .iter()
            .copied()
            .filter(|t| self.slot_data[*t].via == Some(f))
            .collect();
        for t in callers {
            // A pod that joined through a dependency goes with its node
            // when that fails with it, as it would have at first.
            let node = self.slot_data[t]
                .dep_via
                .and_then(|_| self.slot_data[t].infra.first().copied())
                .and_then(|n| self.failing_near(n, t, now));
            if let Some(r) = node {
                if self.relink(t, f, Some(r), now, touched) {
                    let td = &mut self.slot_data[t];
                    td.infra_mode = true;
                    td.via = None;
                    td.dep_via = None;
                    td.through_dep = false;
                }
                continue;
            }
            // What explains it instead, if anything fails near it now.
            let to = self.logical_cause(t, now);
            if self.relink(t, f, to.map(|(_, r)| r), now, touched) {
                self.set_logical_link(t, to);
            }
        }
    }

    /// The failing logical parent of `s` whose failure began closest to it,
    /// with the alert standing for it.
    fn logical_cause(&self, s: usize, now: Timestamp) -> Option<(Key, usize)> {
        self.slot_data[s]
            .logical
            .iter()
            .filter_map(|k| Some((*k, self.logical_near(*k, s, now)?)))
            .min_by_key(|(_, r)| self.onset_gap(*r, s))
    }

    /// Links `s` to the one failing logical parent whose failure began
    /// closest to it (a cause and its symptoms start together; `for`
    /// durations blur the order).
    fn link_logical(&mut self, s: usize, now: Timestamp, touched: &mut Vec<String>) {
        if let Some((k, r)) = self.logical_cause(s, now) {
            self.set_logical_link(s, Some((k, r)));
            self.union(s, r, now, touched);
        }
    }

    /// Records how `s` links to a failing logical parent: through alert `r`
    /// standing for parent `k`, or (`None`) through none.
    fn set_logical_link(&mut self, s: usize, to: Option<(Key, usize)>) {
        let via = to.and_then(|(k, r)| self.caller_via(s, k, r));
        let dep_via = to.and_then(|(k, r)| self.dep_via(s, k, r));
        let through_dep = to.is_some_and(|(k, _)| self.through_dep(s, k));
        let sd = &mut self.slot_data[s];
        sd.logical_linked = to.is_some();
        sd.via = via;
        sd.dep_via = dep_via;
        sd.through_dep = through_dep;
    }

    /// `dep_via` for alert `s` linked to alert `r`, which stands for failing
    /// logical parent `k`: `r` when `s` is a pod's alert and `k` is not its
    /// workload (a dependency its probes check).
    fn dep_via(&self, s: usize, k: Key, r: usize) -> Option<usize> {
        let sd = &self.slot_data[s];
        let pod = self.ents[sd.primary as usize].entity.kind == EntityKind::Pod;
        (pod && sd.owner.is_some_and(|o| o != k)).then_some(r)
    }

    /// Whether `s` is a caller's alert: about a service (its error rate,
    /// its latency) or a scrape job, with the workloads it runs on or
    /// depends on as logical parents.
    fn is_caller(&self, s: usize) -> bool {
        matches!(
            self.ents[self.slot_data[s].primary as usize].entity.kind,
            EntityKind::Service | EntityKind::ScrapeJob
        ) && !self.slot_data[s].node_scrape
    }

    /// A caller's alert whose onset is uncertain (no declared `for`).
    fn late_onset_caller(&self, s: usize) -> bool {
        self.slot_data[s].onset_unknown && self.is_caller(s)
    }

    /// A pod of StatefulSet `w` that is down with its node (or zone) and
    /// whose failure explains caller alert `s` by time, the one closest to
    /// it: a service using a StatefulSet (a database) whose pod ran on a
    /// failed node fails with it. A Deployment's replicas stand in for each
    /// other, so one lost with its node explains no caller.
    fn pod_down_with_node(&self, w: Key, s: usize, now: Timestamp) -> Option<usize> {
        if !self.ents[w as usize].stateful {
            return None;
        }
        self.ents[w as usize]
            .touch
            .iter()
            .copied()
            .filter(|t| {
                let td = &self.slot_data[*t];
                td.owner == Some(w)
                    && td.infra_mode
                    && td.links
                    && self.active(*t, now)
                    && self.explains(*t, s)
            })
            .min_by_key(|t| self.onset_gap(*t, s))
    }

    /// Pod `t` of a StatefulSet just joined its node's failure: the callers'
    /// alerts of its workload (and of the services depending on it) that its failure
    /// explains and that nothing explains yet join it. Error rates fire
    /// minutes before KubeNodeNotReady, so they usually wait for this.
    fn pull_callers(&mut self, t: usize, now: Timestamp, touched: &mut Vec<String>) {
        let Some(w) = self.slot_data[t]
            .owner
            .filter(|w| self.ents[*w as usize].stateful)
        else {
            return;
        };
        let callers: Vec<usize> = self.ents[w as usize]
            .touch
            .iter()
            .copied()
            .filter(|c| {
                let cd = &self.slot_data[*c];
                *c != t
                    && cd.owner != Some(w)
                    && cd.links
                    && !cd.infra_mode
                    && !cd.logical_linked
                    && self.is_caller(*c)
                    && self.active(*c, now)
                    && self.explains(t, *c)
            })
            .collect();
        for c in callers {
            if self.find(c) != self.find(t) {
                self.slot_data[c].logical_linked = true;
                self.slot_data[c].through_dep = self.through_dep(c, w);
                self.union(t, c, now, touched);
            }
        }
    }

    /// `via` for alert `s` linked to alert `r`, which stands for failing
    /// logical parent `k`: `r` when `k` is a workload and `s` is not one of
    /// its pods' alerts or its own (a caller's error rate).
    fn caller_via(&self, s: usize, k: Key, r: usize) -> Option<usize> {
        let sd = &self.slot_data[s];
        let workload = matches!(
            self.ents[k as usize].entity.kind,
            EntityKind::Deployment | EntityKind::StatefulSet | EntityKind::DaemonSet
        );
        (workload && sd.owner != Some(k) && sd.primary != k).then_some(r)
    }

    /// Moves alert `t`, which joined through alert `f` alone, away from it:
    /// takes their link out of the component and, when nothing else joins
    /// them, `t`'s side (with whatever joined through `t`) leaves `f`'s
    /// incident for the incident of `to` (the alert that explains `t`
    /// instead), or for a new incident of its own (`Opened`). Both incidents
    /// are ranked again. Returns whether `t` left.
    fn relink(
        &mut self,
        t: usize,
        f: usize,
        to: Option<usize>,
        now: Timestamp,
        touched: &mut Vec<String>,
    ) -> bool {
        let root = self.find(f);
        if self.find(t) != root {
            return false;
        }
        let Some(mut edges) = self.edges.remove(&root) else {
            return false;
        };
        let before = edges.len();
        edges.retain(|&(a, b)| (a, b) != (t, f) && (a, b) != (f, t));
        let side = linked(&edges, t);
        // Still joined another way (or the link was never recorded): `t`
        // stays, and does not bridge to `to` either.
        if edges.len() == before || side.contains(&f) || to.is_some_and(|x| side.contains(&x)) {
            self.edges.insert(root, edges);
            return false;
        }
        // Rebuild both components from their links.
        for m in edges.iter().flat_map(|&(a, b)| [a, b]).chain([t, f]) {
            self.slot_data[m].parent = m;
            self.slot_data[m].size = 1;
        }
        let (mine, theirs): (Vec<_>, Vec<_>) =
            edges.into_iter().partition(|(a, _)| side.contains(a));
        for &(a, b) in mine.iter().chain(theirs.iter()) {
            self.link_roots(a, b);
        }
        let (rt, rf) = (self.find(t), self.find(f));
        self.edges.insert(rt, mine);
        self.edges.insert(rf, theirs);
        let id = self.comp_inc.remove(&root);
        if let Some(id) = &id {
            self.comp_inc.insert(rf, id.clone());
        }
        // `to` on `f`'s side: `t` only hangs from another alert now.
        if let Some(x) = to.filter(|x| self.find(*x) == rf) {
            self.join_components(t, x);
            return true;
        }
        // `t`'s side joins `to`'s component, and its members move to that
        // component's incident (or a new one).
        if let Some(x) = to {
            self.join_components(t, x);
        }
        let moved: Vec<usize> = match id.as_ref().and_then(|i| self.open.get(i)) {
            Some(open) => open
                .slots
                .iter()
                .copied()
                .filter(|s| side.contains(s))
                .collect(),
            None => Vec::new(),
        };
        // The alert being staged is in no incident's slots yet: the
        // incident of its component takes it.
        let (Some(id), false) = (id, moved.is_empty()) else {
            return true;
        };
        let open = self.open.get_mut(&id).expect("checked above");
        open.slots.retain(|s| !side.contains(s));
        let fps: HashSet<Fingerprint> = moved.iter().map(|s| self.slot_data[*s].fp).collect();
        let (mut alerts, stay): (Vec<IncidentAlert>, Vec<IncidentAlert>) = open
            .incident
            .alerts
            .drain(..)
            .partition(|a| fps.contains(&a.fingerprint));
        open.incident.alerts = stay;
        open.incident.updated_at = now;
        open.quiet_since = (open.incident.firing_count() == 0).then_some(now);
        let storm = open.incident.storm;
        let before = (
            Some(open.incident.root_cause.entity.clone()),
            open.incident.clusters.len(),
            severity_rank(&open.incident.severity),
        );
        self.staged.before.entry(id.clone()).or_insert(before);
        touched.push(id);
        let rt = self.find(t);
        if let Some(dest) = self.comp_inc.get(&rt).cloned() {
            if let Some(o) = self.open.get_mut(&dest) {
                let before = (
                    Some(o.incident.root_cause.entity.clone()),
                    o.incident.clusters.len(),
                    severity_rank(&o.incident.severity),
                );
                o.incident.alerts.append(&mut alerts);
                o.slots.extend(moved.iter().copied());
                o.incident.updated_at = now;
                o.incident.predictive |= moved.iter().any(|s| self.slot_data[*s].predictive);
                o.quiet_since = (o.incident.firing_count() == 0).then_some(now);
                self.staged.before.entry(dest.clone()).or_insert(before);
                for s in &moved {
                    self.by_alert
                        .insert(self.slot_data[*s].fp, (dest.clone(), *s));
                }
                touched.push(dest);
                return true;
            }
        }
        // Named after its first alert, like any incident; should that name
        // be taken (the same alert split off twice at one instant), after
        // the next one's.
        let pick = moved
            .iter()
            .copied()
            .find(|s| {
                let id = incident_id(self.slot_data[*s].fp, now);
                !self.open.contains_key(&id) && !self.merged.contains_key(&id)
            })
            .unwrap_or(moved[0]);
        let first = &self.slot_data[pick];
        let new_id = incident_id(first.fp, now);
        let lead = alerts
            .iter()
            .find(|a| a.fingerprint == first.fp)
            .or(alerts.first())
            .map(|a| a.labels.clone())
            .unwrap_or_default();
        let incident = Incident {
            id: new_id.clone(),
            opened_at: now,
            updated_at: now,
            resolved_at: None,
            candidates: Vec::new(),
            root_cause: RootCause {
                fingerprint: Some(first.fp),
                labels: lead,
                entity: self.ents[first.primary as usize].entity.clone(),
                explanation: String::new(),
                score: 1.0,
            },
            clusters: Vec::new(),
            severity: String::new(),
            predictive: moved.iter().any(|s| self.slot_data[*s].predictive),
            storm,
            alerts,
        };
        for s in &moved {
            self.by_alert
                .insert(self.slot_data[*s].fp, (new_id.clone(), *s));
        }
        let quiet_since = (incident.firing_count() == 0).then_some(now);
        self.open.insert(
            new_id.clone(),
            Open {
                incident,
                quiet_since,
                slots: moved,
            },
        );
        self.comp_inc.insert(rt, new_id.clone());
        self.staged
            .events
            .push(IncidentEvent::Opened { id: new_id.clone() });
        self.staged.before.insert(new_id.clone(), (None, 0, 0));
        touched.push(new_id);
        true
    }

    /// Joins the components of `a` and `b` through the link `(a, b)`,
    /// keeping the incident of `b`'s component (incidents are the caller's
    /// business).
    fn join_components(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return;
        }
        let inc = self.comp_inc.remove(&rb);
        self.comp_inc.remove(&ra);
        let root = self.link_roots(ra, rb);
        let other = if root == ra { rb } else { ra };
        self.join_edges(root, other, (a, b));
        if let Some(i) = inc {
            self.comp_inc.insert(root, i);
        }
    }

    /// Joins the components of `a` and `b` in the union-find alone (no
    /// incidents, no links recorded); returns the root.
    fn link_roots(&mut self, a: usize, b: usize) -> usize {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return ra;
        }
        let (big, small) = if self.slot_data[ra].size >= self.slot_data[rb].size {
            (ra, rb)
        } else {
            (rb, ra)
        };
        self.slot_data[small].parent = big;
        self.slot_data[big].size += self.slot_data[small].size;
        big
    }

    /// A node is failing: infer its zone when enough of the zone fails.
    fn zone_check(&mut self, node: Key, rep: usize, now: Timestamp, touched: &mut Vec<String>) {
        let ent = &self.ents[node as usize];
        let cluster = ent.entity.cluster.clone().unwrap_or_default();
        let Some(zone) = self
            .topology
            .node_zone(&cluster, &ent.entity.name)
            .map(str::to_owned)
        else {
            return;
        };
        let z = self.intern(entity::zone_entity(&cluster, &zone));
        let onset = self.slot_data[rep].starts_at;
        let near = |a: Timestamp, b: Timestamp| (a - b).num_seconds().abs() <= ZONE_TOGETHER_SECS;
        if let Some(zrep) = self.failing_rep(z, now) {
            // Only nodes that failed together with the zone belong to it.
            if near(self.slot_data[zrep].starts_at, onset) {
                self.union(zrep, rep, now, touched);
            }
            return;
        }
        let children = &mut self.ents[z as usize].failing_children;
        if !children.contains(&node) {
            children.push(node);
        }
        let size = self.topology.nodes_in_zone(&cluster, &zone);
        let need = 2usize.max((size as f64 * 0.3).ceil() as usize);
        let children: Vec<Key> = self.ents[z as usize].failing_children.clone();
        let failing: Vec<usize> = children
            .into_iter()
            .filter_map(|n| self.failing_rep_at(n, onset, now))
            .collect();
        // Most of the zone must be down (counting nodes that failed earlier),
        // so that two unrelated node failures in a small zone stay apart.
        let majority = size == 0 || failing.len() * 2 > size;
        let together: Vec<usize> = failing
            .into_iter()
            .filter(|r| near(self.slot_data[*r].starts_at, onset))
            .collect();
        if together.len() >= need && majority {
            self.ents[z as usize].inferred = Some(rep);
            for r in together {
                self.union(rep, r, now, touched);
            }
        }
    }

    /// Links a new alert slot to what is failing around it.
    fn link(&mut self, s: usize, now: Timestamp, touched: &mut Vec<String>) {
        let d = self.slot_data[s].clone();
        if !d.links {
            // Informational alerts (CPU throttling, a maxed-out autoscaler)
            // are no failure: they explain nothing and nothing explains them.
            return;
        }
        for k in d.infra.iter().chain(d.logical.iter()) {
            self.ents[*k as usize].touch.push(s);
        }
        // Through failing infrastructure first, logical parents otherwise;
        // but a pod whose workload is failing on healthy nodes too is a
        // symptom of the workload, not of its node.
        let mut infra_linked = false;
        // The node lifecycle controller marks a lost node's pods NotReady as
        // it marks the node: a pod whose readiness failed together with its
        // own node is the node's, even when its workload fails elsewhere too.
        let with_node = d.readiness
            && d.infra.first().is_some_and(|n| {
                self.failing_near(*n, s, now)
                    .is_some_and(|r| self.onset_gap(r, s) <= ZONE_TOGETHER_SECS)
            });
        let own_cause = !with_node
            && d.owner.is_some_and(|w| {
                d.infra
                    .first()
                    .is_some_and(|n| self.failing_elsewhere(w, *n, s, now))
            });
        let mut infra_causes: Vec<(Key, usize)> = d
            .infra
            .iter()
            .filter(|_| !own_cause)
            .filter_map(|k| {
                let r = self
                    .failing_near(*k, s, now)
                    .or_else(|| self.still_failing(*k, s))?;
                Some((*k, r))
            })
            .filter(|(k, r)| {
                self.ents[*k as usize].entity.kind != EntityKind::Zone
                    || self.onset_gap(*r, s) <= ZONE_TOGETHER_SECS
            })
            .collect();
        if d.spread {
            // One node of many: the one whose failure began closest to it.
            infra_causes.sort_by_key(|(_, r)| self.onset_gap(*r, s));
            infra_causes.truncate(1);
        }
        for (_, r) in infra_causes {
            self.union(s, r, now, touched);
            infra_linked = true;
        }
        self.slot_data[s].infra_mode = infra_linked;
        if !infra_linked {
            // One failing logical parent only.
            self.link_logical(s, now, touched);
        }
        if infra_linked {
            self.pull_callers(s, now, touched);
        } else if !self.slot_data[s].logical_linked && self.is_caller(s) {
            // No workload or service it uses fails on its own: one whose
            // pods are down with their nodes explains it.
            let down = d
                .logical
                .iter()
                .filter_map(|k| Some((*k, self.pod_down_with_node(*k, s, now)?)))
                .min_by_key(|(_, t)| self.onset_gap(*t, s));
            if let Some((k, t)) = down {
                self.slot_data[s].logical_linked = true;
                self.slot_data[s].through_dep = self.through_dep(s, k);
                self.union(s, t, now, touched);
            }
        }
        // A workload alert that arrived before its pods' alerts sits alone:
        // pull it into the incident of the pod that explains it, by time too
        // (a replica count that dropped twenty minutes before this pod
        // failed is about another pod).
        if let Some(w) = d.owner {
            let orphans: Vec<usize> = self.ents[w as usize]
                .failing
                .iter()
                .copied()
                .filter(|f| {
                    *f != s
                        && self.active(*f, now)
                        && !self.slot_data[*f].logical_linked
                        && self.explains(s, *f)
                })
                .collect();
            for f in orphans {
                // Alone, or grouped only with the callers it explains (no
                // pod of its own): a workload alert that arrived before its
                // pods' alerts.
                let r = self.find(f);
                let pods: Vec<usize> = self.ents[w as usize]
                    .touch
                    .iter()
                    .copied()
                    .filter(|t| *t != s && self.slot_data[*t].owner == Some(w))
                    .collect();
                let own_pods = pods.into_iter().any(|t| self.find(t) == r);
                if self.slot_data[r].size == 1 || !own_pods {
                    let infra = self.slot_data[s].infra_mode;
                    self.slot_data[f].attached_infra = infra;
                    if infra {
                        self.slot_data[f].via = Some(s);
                    }
                    self.union(s, f, now, touched);
                    // It mirrors failing nodes: the callers that joined
                    // through it leave unless its pods are not
                    // interchangeable.
                    if infra {
                        self.release_callers(f, w, now, touched);
                    }
                }
            }
            // A workload alert that mirrors failing nodes hangs from the pod
            // that failed closest to it; a pod reported later that failed
            // closer takes it (with Alertmanager grouping by namespace, the
            // replica count can arrive before the pod it is about).
            if self.slot_data[s].infra_mode {
                let closer: Vec<(usize, usize)> = self.ents[w as usize]
                    .failing
                    .iter()
                    .copied()
                    .filter_map(|f| {
                        let fd = &self.slot_data[f];
                        let p = fd.via.filter(|p| *p != s)?;
                        (fd.attached_infra
                            && self.active(f, now)
                            && self.explains(s, f)
                            && self.onset_gap(s, f) < self.onset_gap(p, f))
                        .then_some((f, p))
                    })
                    .collect();
                for (f, p) in closer {
                    if self.find(f) != self.find(s) && self.relink(f, p, Some(s), now, touched) {
                        self.slot_data[f].via = Some(s);
                    }
                }
            }
        }
        if d.node_scrape {
            let nodes = self
                .failing_nodes
                .get(&d.cluster)
                .cloned()
                .unwrap_or_default();
            // The failing node whose trouble began closest to this alert's,
            // and together with it: a node failing for another reason (a
            // full disk) does not stop its exporter answering. Otherwise
            // wait for the node to fail (KubeNodeNotReady fires later).
            let target = nodes
                .into_iter()
                .filter_map(|n| {
                    let r = self.failing_rep(n, now)?;
                    let since = self.slot_data[r].starts_at;
                    Some(((since - d.starts_at).num_seconds().abs(), n, r))
                })
                .filter(|(gap, _, _)| *gap <= SCRAPE_ONSET_SECS)
                .min()
                .map(|(_, n, r)| (n, r));
            match target {
                Some((n, r)) => {
                    self.slot_data[s].attached = Some(n);
                    self.union(s, r, now, touched);
                }
                None => self
                    .pending_scrape
                    .entry(d.cluster.clone())
                    .or_default()
                    .push(s),
            }
        }
        if d.links && d.firing {
            let k = d.primary;
            let was = self.failing_rep(k, now);
            // Another alert on the same entity joins it when it began within
            // the grouping window or while the other is still firing (a full
            // disk raises DiskPressure 25 minutes in); otherwise it is a new
            // problem.
            let node = self.ents[k as usize].entity.kind == EntityKind::Node;
            let same = self.ents[k as usize]
                .failing
                .iter()
                .copied()
                .filter(|f| self.active(*f, now))
                .filter(|f| {
                    let gap = self.onset_gap(*f, s);
                    if node {
                        self.near(*f, s) || self.slot_data[*f].firing
                    } else {
                        gap <= LOGICAL_ONSET_SECS
                    }
                })
                .chain(
                    self.ents[k as usize]
                        .inferred
                        .filter(|f| self.slot_data[*f].alive && self.near(*f, s)),
                )
                .min_by_key(|f| self.onset_gap(*f, s));
            let new_problem = same.is_none();
            // An alert already explained by a cause does not bridge it to
            // another problem on the same entity.
            let same = same.filter(|r| {
                let (a, b) = (self.find(s), self.find(*r));
                a == b || self.slot_data[a].size == 1 || self.slot_data[b].size == 1
            });
            self.ents[k as usize].failing.push(s);
            match was {
                Some(_) if same.is_some() => {
                    let r = same.unwrap_or(s);
                    self.union(s, r, now, touched)
                }
                Some(_) if !new_problem => {}
                // Nothing failing here began near it or still fires (a
                // resolved disk alert still counts for `window`): a new
                // problem, which explains its own symptoms and counts
                // toward its zone like a first failure.
                _ => {
                    let infra = matches!(
                        self.ents[k as usize].entity.kind,
                        EntityKind::Node | EntityKind::Zone | EntityKind::ControlPlane
                    );
                    self.on_failing(k, s, infra, now, touched);
                }
            }
        }
        // Infer a workload from two or more of its pods failing on healthy nodes.
        if let (Some(w), false, true) = (d.owner, self.slot_data[s].infra_mode, d.links && d.firing)
        {
            if self.logical_near(w, s, now).is_none() {
                let mut failing: Vec<Key> = self.ents[w as usize]
                    .touch
                    .iter()
                    .filter(|t| {
                        let td = &self.slot_data[**t];
                        self.active(**t, now)
                            && td.links
                            && !td.infra_mode
                            && self.onset_gap(**t, s) <= LOGICAL_ONSET_SECS
                    })
                    .map(|t| self.slot_data[*t].primary)
                    .collect();
                failing.sort_unstable();
                failing.dedup();
                if failing.len() >= 2 {
                    self.ents[w as usize].inferred = Some(s);
                    self.on_failing(w, s, false, now, touched);
                }
            }
        }
        // Infer a node from its failing pods.
        if self.ents[d.primary as usize].entity.kind == EntityKind::Pod && d.links && d.firing {
            if let Some(&n) = d.infra.first() {
                if self.failing_rep(n, now).is_none() {
                    let ent = &self.ents[n as usize];
                    let pods = self.topology.pods_on_node(
                        ent.entity.cluster.as_deref().unwrap_or(""),
                        &ent.entity.name,
                    );
                    // Pods that failed together with this one, leaving out
                    // pods explained by their own workload's failure (it
                    // fails on healthy nodes too): they say nothing about
                    // the node.
                    let evidence: Vec<usize> = ent
                        .touch
                        .iter()
                        .copied()
                        .filter(|t| {
                            let td = &self.slot_data[*t];
                            self.active(*t, now)
                                && td.links
                                && !td.spread
                                && self.onset_gap(*t, s) <= ZONE_ONSET_SECS
                                && !(td.logical_linked
                                    && td
                                        .owner
                                        .is_some_and(|w| self.failing_elsewhere(w, n, *t, now)))
                        })
                        .collect();
                    let mut failing: Vec<Key> = evidence
                        .iter()
                        .map(|t| self.slot_data[*t].primary)
                        .collect();
                    failing.sort_unstable();
                    failing.dedup();
                    let need = if pods > 0 {
                        2usize.max(pods.div_ceil(2))
                    } else {
                        3
                    };
                    // The node failed no later than its first failing pod:
                    // that pod stands for it, so that nodes of a zone
                    // inferred from pods reported a scrape or two apart still
                    // count as failing together.
                    let rep = evidence
                        .iter()
                        .copied()
                        .min_by_key(|t| self.slot_data[*t].starts_at);
                    if let (true, Some(rep)) = (failing.len() >= need, rep) {
                        self.ents[n as usize].inferred = Some(rep);
                        self.on_failing(n, rep, true, now, touched);
                    }
                }
            }
        }
    }

    fn member(alert: &AlertState) -> IncidentAlert {
        IncidentAlert {
            fingerprint: alert.id,
            labels: alert.labels.clone(),
            status: alert.status,
            starts_at: alert.starts_at,
            ends_at: alert.ends_at,
        }
    }

    fn count_arrival(&mut self, cluster: &str, now: Timestamp) -> bool {
        let minute = now.timestamp().div_euclid(60);
        let rules = &self.settings.rules;
        let (factor, min) = (rules.storm_factor, f64::from(rules.storm_min_per_minute));
        let step = |r: &mut Rate, min: f64| {
            if r.minute != minute {
                let gap = (minute - r.minute).clamp(1, 60) as i32;
                // Exponential baseline over ~30 minutes, quiet minutes included.
                let a = 1.0 / 30.0;
                r.baseline = r.baseline * (1.0 - a) + f64::from(r.count) * a;
                r.baseline *= (1.0 - a).powi(gap - 1);
                r.minute = minute;
                r.count = 0;
            }
            r.count += 1;
            let c = f64::from(r.count);
            r.storm = c >= min && c > factor * r.baseline.max(1.0);
            r.storm
        };
        let rate = match self.rates.get_mut(cluster) {
            Some(r) => r,
            None => self.rates.entry(Arc::from(cluster)).or_default(),
        };
        let storm = step(rate, min);
        // The fleet is in a storm when its own arrival rate is, or when two
        // or more clusters are at once (within one Alertmanager
        // group_interval of each other).
        let fleet = step(&mut self.fleet_rate, min * 3.0);
        let concurrent = self
            .rates
            .values()
            .filter(|r| r.storm && minute - r.minute <= 5)
            .count();
        self.fleet_rate.storm = fleet || concurrent >= 2;
        if storm && !self.ever_storm.contains(cluster) {
            tracing::warn!(cluster, "Cluster entered storm mode");
            self.ever_storm.insert(cluster.to_owned());
        }
        if self.fleet_rate.storm && !self.ever_fleet_storm {
            tracing::warn!(clusters = concurrent, "Fleet entered storm mode");
            self.ever_fleet_storm = true;
        }
        storm
    }

    /// Records an alert transition and returns what it did to incidents.
    pub fn observe(
        &mut self,
        alert: &AlertState,
        transition: Transition,
        now: Timestamp,
    ) -> Vec<IncidentEvent> {
        self.stage(alert, transition, now);
        self.finish()
    }

    /// Groups one alert without ranking yet: a delivery carries up to
    /// hundreds of alerts for the same incidents, so the engine stages them
    /// all and calls [`finish`](Self::finish) once, which ranks each touched
    /// incident once. Ranking is linear in an incident's size; per alert it
    /// would make a large storm quadratic.
    pub fn stage(&mut self, alert: &AlertState, transition: Transition, now: Timestamp) {
        if !transition.is_change() {
            return;
        }
        let member = Self::member(alert);
        let onset = self.onset(alert);
        let mut touched: Vec<String> = Vec::new();
        if let Some((id, s)) = self.by_alert.get(&alert.id).cloned() {
            let flap = self.flap_quiet(alert, now);
            if let Some(open) = self.open.get_mut(&id) {
                let inc = &mut open.incident;
                inc.updated_at = now;
                let sev_before = severity_rank(&inc.severity);
                match inc.alerts.iter_mut().find(|a| a.fingerprint == alert.id) {
                    Some(a) => *a = member,
                    None => inc.alerts.push(member),
                }
                if severity_rank(alert.severity()) > sev_before {
                    inc.severity = alert.severity().to_owned();
                }
                open.quiet_since =
                    (inc.firing_count() == 0).then_some(alert.ends_at.unwrap_or(now));
                let d = &mut self.slot_data[s];
                let refired = alert.is_firing() && !d.firing;
                if refired {
                    d.flap_hold = d.flap_hold.max(flap);
                }
                d.firing = alert.is_firing();
                d.ends_at = alert.ends_at;
                if refired {
                    d.starts_at = onset;
                    if d.links {
                        let k = d.primary;
                        if !self.ents[k as usize].failing.contains(&s) {
                            self.ents[k as usize].failing.push(s);
                        }
                    }
                }
                let change = if severity_rank(&inc.severity) > sev_before {
                    Change::Severity
                } else {
                    Change::Members
                };
                self.staged
                    .events
                    .push(IncidentEvent::Updated { id, change });
                return;
            }
        }
        let storm = self.count_arrival(alert.cluster.as_str(), now);
        let s = self.new_slot(alert);
        self.slot_data[s].flap_hold = self.flap_quiet(alert, now);
        self.link(s, now, &mut touched);
        let root = self.find(s);
        let id = match self.comp_inc.get(&root).cloned() {
            Some(id) => {
                let open = self.open.get_mut(&id).expect("component incident is open");
                self.staged.before.entry(id.clone()).or_insert_with(|| {
                    (
                        Some(open.incident.root_cause.entity.clone()),
                        open.incident.clusters.len(),
                        severity_rank(&open.incident.severity),
                    )
                });
                open.incident.alerts.push(member);
                open.slots.push(s);
                open.incident.updated_at = now;
                open.incident.storm |= storm;
                if alert.is_firing() {
                    open.quiet_since = None;
                } else if open.incident.firing_count() == 0 {
                    open.quiet_since = Some(alert.ends_at.unwrap_or(now));
                }
                touched.push(id.clone());
                id
            }
            None => {
                let id = incident_id(alert.id, now);
                let placeholder = RootCause {
                    fingerprint: Some(alert.id),
                    labels: alert.labels.clone(),
                    entity: self.ents[self.slot_data[s].primary as usize].entity.clone(),
                    explanation: String::new(),
                    score: 1.0,
                };
                let incident = Incident {
                    id: id.clone(),
                    opened_at: now,
                    updated_at: now,
                    resolved_at: None,
                    candidates: Vec::new(),
                    root_cause: placeholder,
                    alerts: vec![member],
                    clusters: vec![alert.cluster.to_string()],
                    severity: alert.severity().to_owned(),
                    predictive: alert.source == crate::analyze::PREDICTIVE_SOURCE,
                    storm: storm || self.fleet_rate.storm,
                };
                self.open.insert(
                    id.clone(),
                    Open {
                        incident,
                        quiet_since: (!alert.is_firing()).then_some(alert.ends_at.unwrap_or(now)),
                        slots: vec![s],
                    },
                );
                self.comp_inc.insert(root, id.clone());
                self.staged
                    .events
                    .push(IncidentEvent::Opened { id: id.clone() });
                self.staged.before.insert(id.clone(), (None, 0, 0));
                id
            }
        };
        self.by_alert.insert(alert.id, (id.clone(), s));
        self.staged.touched.extend(touched);
        self.staged.touched.push(id);
    }

    /// Ranks every incident staged alerts touched and returns the events, in
    /// the order the alerts were staged.
    pub fn finish(&mut self) -> Vec<IncidentEvent> {
        let Staged {
            mut events,
            touched,
            before,
        } = std::mem::take(&mut self.staged);
        let mut seen = HashSet::default();
        for t in &touched {
            if let Some(gone) = t.strip_prefix('\u{0}') {
                if seen.insert(t.clone()) {
                    events.push(IncidentEvent::Resolved {
                        id: gone.to_owned(),
                    });
                }
                continue;
            }
            if !seen.insert(t.clone()) || !self.open.contains_key(t) {
                continue;
            }
            let prev = before.get(t).cloned().unwrap_or_else(|| {
                let o = &self.open[t];
                (
                    Some(o.incident.root_cause.entity.clone()),
                    o.incident.clusters.len(),
                    severity_rank(&o.incident.severity),
                )
            });
            self.refresh(t);
            let o = &self.open[t];
            if prev.0.is_none() {
                continue; // just opened
            }
            let change = if prev.0.as_ref() != Some(&o.incident.root_cause.entity) {
                Change::RootCause
            } else if o.incident.clusters.len() > prev.1 {
                Change::Scope
            } else if severity_rank(&o.incident.severity) > prev.2 {
                Change::Severity
            } else {
                Change::Members
            };
            events.push(IncidentEvent::Updated {
                id: t.clone(),
                change,
            });
        }
        events
    }

    /// Recomputes clusters, severity and the ranked root cause of an incident.
    fn refresh(&mut self, id: &str) {
        let ranked = self.rank(id);
        let open = self.open.get_mut(id).expect("refresh of an open incident");
        let inc = &mut open.incident;
        let clusters: std::collections::BTreeSet<&str> = inc
            .alerts
            .iter()
            .map(|a| a.labels.get_or_empty("cluster"))
            .collect();
        inc.clusters = clusters.into_iter().map(str::to_owned).collect();
        inc.severity = inc
            .alerts
            .iter()
            .map(|a| a.labels.get_or_empty("severity"))
            .max_by_key(|s| severity_rank(s))
            .unwrap_or("")
            .to_owned();
        let mut candidates = ranked.candidates;
        // Keep the current root while it ranks as high as the best: re-ranking
        // must not churn notifications.
        if let Some(pos) = candidates.iter().position(|c| {
            c.entity == inc.root_cause.entity && c.fingerprint == inc.root_cause.fingerprint
        }) {
            if pos > 0 && (candidates[pos].score - candidates[0].score).abs() < 1e-9 {
                let cur = candidates.remove(pos);
                candidates.insert(0, cur);
            }
        }
        if let Some(first) = candidates.first() {
            inc.root_cause = first.clone();
        }
        candidates.truncate(5);
        inc.candidates = candidates;
    }

    fn rank(&mut self, id: &str) -> Ranked {
        let slots = self.open[id].slots.clone();
        let n = slots.len().max(1);
        // Ancestors of each member, extended: a workload alert counts as
        // explained by what explains its failing pods; a node scrape aggregate
        // by the node it attached to.
        let mut pod_anc: HashMap<Key, HashSet<Key>> = HashMap::default();
        for s in &slots {
            let d = &self.slot_data[*s];
            if let Some(o) = d.owner {
                pod_anc
                    .entry(o)
                    .or_default()
                    .extend(d.ancestors.iter().copied());
            }
        }
        let mut cover: HashMap<Key, Vec<usize>> = HashMap::default();
        let mut anc: Vec<Key> = Vec::new();
        for s in &slots {
            let d = &self.slot_data[*s];
            // A few keys: a sorted, deduplicated Vec reused across members
            // instead of a set per member.
            anc.clear();
            anc.extend_from_slice(&d.ancestors);
            if let Some(extra) = pod_anc.get(&d.primary) {
                anc.extend(extra.iter().copied());
            }
            // A caller's alert is explained by what explains the failing
            // pods of a StatefulSet it uses (their node, their zone).
            if self.is_caller(*s) {
                for k in d
                    .logical
                    .iter()
                    .filter(|k| self.ents[**k as usize].stateful)
                {
                    if let Some(extra) = pod_anc.get(k) {
                        anc.extend(extra.iter().copied());
                    }
                }
            }
            if let Some(a) = d.attached {
                anc.push(a);
                if let Some(z) = self.ents[a as usize]
                    .entity
                    .cluster
                    .as_deref()
                    .and_then(|c| {
                        self.topology
                            .node_zone(c, &self.ents[a as usize].entity.name)
                    })
                    .map(|z| {
                        entity::zone_entity(
                            self.ents[a as usize]
                                .entity
                                .cluster
                                .as_deref()
                                .unwrap_or(""),
                            z,
                        )
                        .key
                    })
                    .and_then(|k| self.keys.get(&k).copied())
                {
                    anc.push(z);
                }
            }
            anc.sort_unstable();
            anc.dedup();
            for k in &anc {
                cover.entry(*k).or_default().push(*s);
            }
        }
        // Candidates: failing entities (with a linking alert in this incident,
        // or inferred).
        let member_set: HashSet<usize> = slots.iter().copied().collect();
        let names = self.learned_names(id);
        let mut cands: Vec<(Key, Option<usize>, usize)> = Vec::new();
        for (k, covered) in &cover {
            let e = &self.ents[*k as usize];
            let own: Vec<usize> = e
                .failing
                .iter()
                .copied()
                .filter(|s| member_set.contains(s))
                .collect();
            let best = own.iter().copied().max_by(|a, b| {
                let (x, y) = (&self.slot_data[*a], &self.slot_data[*b]);
                let (lx, ly) = (names.value(x.fp), names.value(y.fp));
                (x.weight, lx, x.severity, std::cmp::Reverse(x.starts_at)).cmp(&(
                    y.weight,
                    ly,
                    y.severity,
                    std::cmp::Reverse(y.starts_at),
                ))
            });
            let inferred = e.inferred.is_some_and(|s| self.slot_data[s].alive);
            if best.is_none() && !inferred {
                continue;
            }
            cands.push((*k, best, covered.len()));
        }
        if cands.is_empty() {
            // Nothing links (informational alerts): the strongest alert names itself.
            let best = slots
                .iter()
                .copied()
                .max_by_key(|s| {
                    let d = &self.slot_data[*s];
                    (d.weight, d.severity, std::cmp::Reverse(d.starts_at))
                })
                .unwrap_or(slots[0]);
            let k = self.slot_data[best].primary;
            cands.push((k, Some(best), cover.get(&k).map_or(1, Vec::len)));
        }
        let kind_rank = |k: EntityKind| match k {
            EntityKind::Zone => 6,
            EntityKind::ControlPlane => 5,
            EntityKind::Node => 4,
            EntityKind::Deployment
            | EntityKind::StatefulSet
            | EntityKind::DaemonSet
            | EntityKind::Service => 3,
            EntityKind::PersistentVolumeClaim | EntityKind::ScrapeJob => 2,
            EntityKind::Pod | EntityKind::Container => 1,
            _ => 0,
        };
        // Learned cause scores (rules `learned:`) order candidates that tie
        // on coverage and rule weight.
        let learned = self.learned_candidates(id, &names, &cands);
        cands.sort_by(|a, b| {
            let key = |c: &(Key, Option<usize>, usize)| {
                let d = c.1.map(|s| &self.slot_data[s]);
                (
                    c.2,
                    d.map_or(0, |d| d.weight),
                    learned.get(&c.0).map_or(0, |l| l.0),
                    kind_rank(self.ents[c.0 as usize].entity.kind),
                    d.map_or(0, |d| d.severity),
                    std::cmp::Reverse(d.map(|d| d.starts_at)),
                )
            };
            key(b).cmp(&key(a)).then_with(|| a.0.cmp(&b.0))
        });
        let incident = &self.open[id].incident;
        let labels_of: HashMap<Fingerprint, &Labels> = incident
            .alerts
            .iter()
            .map(|a| (a.fingerprint, &a.labels))
            .collect();
        let candidates = cands
            .iter()
            .take(5)
            .map(|(k, best, covered)| {
                let ent = &self.ents[*k as usize];
                let fp = best.map(|s| self.slot_data[s].fp);
                let labels = fp
                    .and_then(|f| labels_of.get(&f).map(|l| (*l).clone()))
                    .unwrap_or_default();
                let what = match fp {
                    Some(_) => labels.alertname().to_owned(),
                    None => {
                        // What the inference rests on: failing children among
                        // the members it explains.
                        let child = match ent.entity.kind {
                            EntityKind::Zone => EntityKind::Node,
                            _ => EntityKind::Pod,
                        };
                        let mut kids: Vec<Key> = cover
                            .get(k)
                            .map(|v| v.as_slice())
                            .unwrap_or_default()
                            .iter()
                            .map(|s| self.slot_data[*s].primary)
                            .filter(|p| self.ents[*p as usize].entity.kind == child)
                            .collect();
                        kids.sort_unstable();
                        kids.dedup();
                        let noun = if child == EntityKind::Node {
                            "nodes"
                        } else {
                            "pods"
                        };
                        format!("inferred failing ({} of its {noun} failing)", kids.len())
                    }
                };
                let explanation =
                    self.explain(*k, &what, cover.get(k).map_or(&[][..], Vec::as_slice), n);
                let explanation = match learned.get(k).and_then(|l| l.1.as_deref()) {
                    Some(note) => format!("{explanation}; {note}"),
                    None => explanation,
                };
                RootCause {
                    fingerprint: fp,
                    labels,
                    entity: ent.entity.clone(),
                    explanation,
                    score: *covered as f64 / n as f64,
                }
            })
            .collect();
        Ranked { candidates }
    }

    fn explain(&self, k: Key, what: &str, covered: &[usize], total: usize) -> String {
        let ent = &self.ents[k as usize];
        let mut kinds: std::collections::BTreeMap<&str, usize> = Default::default();
        let mut scrape: Vec<String> = Vec::new();
        let mut seen = HashSet::default();
        for s in covered {
            let d = &self.slot_data[*s];
            let e = &self.ents[d.primary as usize].entity;
            if d.primary == k {
                continue;
            }
            if !seen.insert(d.primary) {
                continue;
            }
            let label = match e.kind {
                EntityKind::Pod | EntityKind::Container => "pods",
                EntityKind::Node => "nodes",
                EntityKind::Deployment | EntityKind::StatefulSet | EntityKind::DaemonSet => {
                    "workloads"
                }
                EntityKind::Service => "services",
                EntityKind::PersistentVolumeClaim => "volumes",
                EntityKind::ControlPlane => "control planes",
                EntityKind::ScrapeJob => {
                    scrape.push(format!("TargetDown {}", e.name));
                    continue;
                }
                _ => "others",
            };
            *kinds.entry(label).or_default() += 1;
        }
        let mut parts: Vec<String> = kinds.iter().map(|(k, v)| format!("{v} {k}")).collect();
        parts.extend(scrape);
        let served = self.services_served(k, covered);
        let subject = format!(
            "{} {}",
            ent.entity.kind.as_str().replace('_', " "),
            ent.entity.name
        );
        let scope = ent
            .entity
            .cluster
            .as_deref()
            .map(|c| match &ent.entity.namespace {
                Some(ns) => format!(" in {c}/{ns}"),
                None => format!(" in {c}"),
            })
            .unwrap_or_default();
        let mut s = format!(
            "{subject}{scope} {what} explains {} of {total} alerts",
            covered.len()
        );
        if !parts.is_empty() {
            s.push_str(": ");
            s.push_str(&parts.join(", "));
        }
        if !served.is_empty() {
            const LISTED: usize = 4;
            s.push_str("; serves ");
            s.push_str(&served[..served.len().min(LISTED)].join(", "));
            if served.len() > LISTED {
                s.push_str(&format!(" and {} more", served.len() - LISTED));
            }
        }
        s
    }

    /// The Services among the covered alerts that workload `k` serves, each
    /// with how that link was made (declared, endpoints, or same name).
    fn services_served(&self, k: Key, covered: &[usize]) -> Vec<String> {
        let ent = &self.ents[k as usize].entity;
        if !matches!(
            ent.kind,
            EntityKind::Deployment | EntityKind::StatefulSet | EntityKind::DaemonSet
        ) {
            return Vec::new();
        }
        let (cluster, ns) = (
            ent.cluster.as_deref().unwrap_or(""),
            ent.namespace.as_deref().unwrap_or(""),
        );
        let mut out: Vec<String> = Vec::new();
        let mut seen = HashSet::default();
        for s in covered {
            let p = self.slot_data[*s].primary;
            let svc = &self.ents[p as usize].entity;
            if svc.kind != EntityKind::Service
                || svc.cluster.as_deref() != ent.cluster.as_deref()
                || svc.namespace.as_deref() != ent.namespace.as_deref()
                || !seen.insert(p)
            {
                continue;
            }
            let b = entity::backing(&self.settings.rules, &self.topology, cluster, ns, &svc.name);
            if let Some((_, _, via)) = b.iter().find(|(_, w, _)| *w == ent.name) {
                out.push(format!("service {} ({})", svc.name, via.describe()));
            }
        }
        out.sort();
        out
    }

    /// Restores open incidents after a restart.
    pub fn restore(&mut self, incidents: Vec<Incident>) {
        for inc in incidents {
            if !inc.is_open() {
                self.closed.push(inc);
                continue;
            }
            let mut slots = Vec::new();
            for a in &inc.alerts {
                let state = AlertState {
                    id: a.fingerprint,
                    am_fingerprint: None,
                    cluster: crate::domain::ClusterId::new(a.labels.get_or_empty("cluster")),
                    labels: a.labels.clone(),
                    annotations: Labels::new(),
                    status: a.status,
                    starts_at: a.starts_at,
                    ends_at: a.ends_at,
                    generator_url: Default::default(),
                    external_url: Default::default(),
                    source: Default::default(),
                    first_received: a.starts_at,
                    last_received: a.starts_at,
                    flaps: 0,
                    previous_end: None,
                    deliveries: 0,
                };
                let s = self.new_slot(&state);
                let d = self.slot_data[s].clone();
                for k in d.infra.iter().chain(d.logical.iter()) {
                    self.ents[*k as usize].touch.push(s);
                }
                if d.links && d.firing {
                    self.ents[d.primary as usize].failing.push(s);
                }
                if let Some(first) = slots.first().copied() {
                    let (ra, rb) = (self.find(first), self.find(s));
                    if ra != rb {
                        self.slot_data[rb].parent = ra;
                        self.slot_data[ra].size += self.slot_data[rb].size;
                        self.join_edges(ra, rb, (first, s));
                    }
                }
                self.by_alert.insert(a.fingerprint, (inc.id.clone(), s));
                slots.push(s);
            }
            if let Some(first) = slots.first().copied() {
                let r = self.find(first);
                self.comp_inc.insert(r, inc.id.clone());
            }
            let quiet_since = (inc.firing_count() == 0).then(|| {
                inc.alerts
                    .iter()
                    .filter_map(|a| a.ends_at)
                    .max()
                    .unwrap_or(inc.updated_at)
            });
            self.open.insert(
                inc.id.clone(),
                Open {
                    incident: inc,
                    quiet_since,
                    slots,
                },
            );
        }
    }

    /// Resolves incidents whose members have all been resolved for the hold time.
    pub fn tick(&mut self, now: Timestamp) -> Vec<IncidentEvent> {
        let mut done: Vec<String> = self
            .open
            .iter()
            .filter(|(_, o)| self.resolves_at(o).is_some_and(|t| t <= now))
            .map(|(id, _)| id.clone())
            .collect();
        done.sort();
        let mut events = Vec::with_capacity(done.len());
        let mut dead_keys: HashSet<Key> = HashSet::default();
        for id in done {
            let mut open = self.open.remove(&id).expect("listed above");
            open.incident.resolved_at = open.quiet_since;
            open.incident.updated_at = now;
            for s in &open.slots {
                let d = &mut self.slot_data[*s];
                d.alive = false;
                dead_keys.extend(d.ancestors.iter().copied());
                dead_keys.extend(d.infra.iter().copied());
                dead_keys.extend(d.logical.iter().copied());
                if self.by_alert.get(&d.fp).is_some_and(|(i, _)| *i == id) {
                    self.by_alert.remove(&d.fp);
                }
            }
            if let Some(&first) = open.slots.first() {
                let root = self.find(first);
                self.comp_inc.remove(&root);
                self.edges.remove(&root);
            }
            self.free.extend(open.slots.iter().copied());
            self.closed.push(open.incident);
            events.push(IncidentEvent::Resolved { id });
        }
        if !dead_keys.is_empty() {
            let alive: Vec<bool> = self.slot_data.iter().map(|d| d.alive).collect();
            for k in dead_keys {
                let e = &mut self.ents[k as usize];
                e.failing.retain(|s| alive[*s]);
                e.touch.retain(|s| alive[*s]);
                if e.inferred.is_some_and(|s| !alive[s]) {
                    e.inferred = None;
                }
                e.failing_children.clear();
            }
            for v in self.failing_nodes.values_mut() {
                let ents = &self.ents;
                v.retain(|k| {
                    !ents[*k as usize].failing.is_empty() || ents[*k as usize].inferred.is_some()
                });
            }
            for v in self.pending_scrape.values_mut() {
                v.retain(|s| alive[*s]);
            }
        }
        events
    }

    /// The next time [`tick`](Self::tick) has work to do.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.open.values().filter_map(|o| self.resolves_at(o)).min()
    }

    pub fn incident(&self, id: &str) -> Option<&Incident> {
        self.open
            .get(id)
            .map(|o| &o.incident)
            .or_else(|| self.closed.iter().rev().find(|i| i.id == id))
    }

    /// All incidents, open and closed, oldest first.
    pub fn incidents(&self) -> Vec<&Incident> {
        let mut all: Vec<&Incident> = self
            .closed
            .iter()
            .chain(self.open.values().map(|o| &o.incident))
            .collect();
        all.sort_by(|a, b| a.opened_at.cmp(&b.opened_at).then_with(|| a.id.cmp(&b.id)));
        all
    }

    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Forgets closed incidents resolved before `cutoff` (retention).
    pub fn forget_closed_before(&mut self, cutoff: Timestamp) {
        self.closed
            .retain(|i| i.resolved_at.is_none_or(|t| t >= cutoff));
        let kept: HashSet<&str> = self.closed.iter().map(|i| i.id.as_str()).collect();
        self.merged.retain(|gone, _| kept.contains(gone.as_str()));
    }
}

/// The slots that `links` join to `start`, `start` included.
fn linked(links: &[(usize, usize)], start: usize) -> HashSet<usize> {
    let mut adj: HashMap<usize, Vec<usize>> = HashMap::default();
    for &(a, b) in links {
        adj.entry(a).or_default().push(b);
        adj.entry(b).or_default().push(a);
    }
    let mut seen: HashSet<usize> = HashSet::default();
    let mut stack = vec![start];
    seen.insert(start);
    while let Some(x) = stack.pop() {
        for y in adj.get(&x).into_iter().flatten() {
            if seen.insert(*y) {
                stack.push(*y);
            }
        }
    }
    seen
}

#[cfg(test)]
impl Correlator {
    /// Checks that open incidents, the union-find, the recorded links and
    /// the alert index agree: each open incident is one component, joined
    /// by its links, holding exactly its members.
    fn check_consistency(&mut self) -> Result<(), String> {
        let ids: Vec<String> = self.open.keys().cloned().collect();
        for id in ids {
            let slots = self.open[&id].slots.clone();
            let alerts: HashSet<Fingerprint> = self.open[&id]
                .incident
                .alerts
                .iter()
                .map(|a| a.fingerprint)
                .collect();
            let Some(&first) = slots.first() else {
                return Err(format!("{id} has no members"));
            };
            if alerts.len() != slots.len() {
                return Err(format!(
                    "{id}: {} alerts, {} slots",
                    alerts.len(),
                    slots.len()
                ));
            }
            let root = self.find(first);
            if self.comp_inc.get(&root) != Some(&id) {
                return Err(format!(
                    "{id}: its component names {:?}",
                    self.comp_inc.get(&root)
                ));
            }
            if self.slot_data[root].size as usize != slots.len() {
                return Err(format!(
                    "{id}: component of {} for {} members",
                    self.slot_data[root].size,
                    slots.len()
                ));
            }
            for s in &slots {
                let fp = self.slot_data[*s].fp;
                if self.find(*s) != root || !alerts.contains(&fp) {
                    return Err(format!("{id}: member {fp} is elsewhere"));
                }
                if self.by_alert.get(&fp) != Some(&(id.clone(), *s)) {
                    return Err(format!(
                        "{id}: {fp} indexed as {:?}",
                        self.by_alert.get(&fp)
                    ));
                }
            }
            // The links join exactly the members.
            let seen = linked(self.edges.get(&root).map_or(&[][..], Vec::as_slice), first);
            let members: HashSet<usize> = slots.iter().copied().collect();
            if seen != members {
                return Err(format!(
                    "{id}: links reach {} of {} members",
                    seen.len(),
                    members.len()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
