//! Correlation: turns alert transitions into incidents with a root cause.
//!
//! The engine calls [`Correlator::observe`] for every alert transition and
//! [`Correlator::tick`] as time passes; both return [`IncidentEvent`]s that the
//! notification planner turns into messages. This first version keeps one
//! incident per alert identity; topology-aware grouping replaces it.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigErrors, PromDuration, ValidateCtx};
use crate::domain::{
    severity_rank, AlertState, Entity, EntityKind, Fingerprint, Incident, IncidentAlert, RootCause,
    Timestamp, Transition,
};

/// Where topology comes from (kube-state-metrics series).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TopologyConfig {}

impl TopologyConfig {
    pub fn validate(&self, _path: &str, _ctx: &ValidateCtx, _errs: &mut ConfigErrors) {}
}

/// Correlation settings that come from `rules/`.
#[derive(Debug, Clone)]
pub struct CorrelateSettings {
    /// How long an incident stays open after its last member resolved, so a
    /// quick re-fire rejoins it instead of opening a new one.
    pub resolve_hold: PromDuration,
}

impl Default for CorrelateSettings {
    fn default() -> Self {
        CorrelateSettings {
            resolve_hold: PromDuration::mins(5),
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

#[derive(Debug, Clone)]
struct Open {
    incident: Incident,
    /// When the last member resolved, if all have.
    quiet_since: Option<Timestamp>,
}

/// Groups alerts into incidents.
#[derive(Debug, Default)]
pub struct Correlator {
    settings: CorrelateSettings,
    open: HashMap<String, Open>,
    by_alert: HashMap<Fingerprint, String>,
    closed: Vec<Incident>,
}

impl Correlator {
    pub fn new(settings: CorrelateSettings) -> Self {
        Correlator {
            settings,
            ..Default::default()
        }
    }

    /// Restores open incidents after a restart.
    pub fn restore(&mut self, incidents: Vec<Incident>) {
        for inc in incidents {
            if inc.is_open() {
                for a in &inc.alerts {
                    self.by_alert.insert(a.fingerprint, inc.id.clone());
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
                    },
                );
            } else {
                self.closed.push(inc);
            }
        }
    }

    /// Records an alert transition and returns what it did to incidents.
    pub fn observe(
        &mut self,
        alert: &AlertState,
        transition: Transition,
        now: Timestamp,
    ) -> Vec<IncidentEvent> {
        if !transition.is_change() {
            return Vec::new();
        }
        let member = IncidentAlert {
            fingerprint: alert.id,
            labels: alert.labels.clone(),
            status: alert.status,
            starts_at: alert.starts_at,
            ends_at: alert.ends_at,
        };
        if let Some(open) = self
            .by_alert
            .get(&alert.id)
            .and_then(|id| self.open.get_mut(id))
        {
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
            open.quiet_since = (inc.firing_count() == 0).then_some(alert.ends_at.unwrap_or(now));
            let change = if severity_rank(&inc.severity) > sev_before {
                Change::Severity
            } else {
                Change::Members
            };
            return vec![IncidentEvent::Updated {
                id: inc.id.clone(),
                change,
            }];
        }
        let id = incident_id(alert.id, now);
        let entity = Entity::new(
            EntityKind::Alert,
            alert.cluster.as_str(),
            alert.labels.get("namespace"),
            alert.labels.alertname(),
        );
        let root = RootCause {
            fingerprint: Some(alert.id),
            labels: alert.labels.clone(),
            explanation: format!(
                "{} {} in {}",
                alert.labels.alertname(),
                alert.status.as_str(),
                alert.cluster
            ),
            entity,
            score: 1.0,
        };
        let firing = alert.is_firing();
        let incident = Incident {
            id: id.clone(),
            opened_at: now,
            updated_at: now,
            resolved_at: None,
            candidates: vec![root.clone()],
            root_cause: root,
            alerts: vec![member],
            clusters: vec![alert.cluster.to_string()],
            severity: alert.severity().to_owned(),
            predictive: alert.source == crate::analyze::PREDICTIVE_SOURCE,
            storm: false,
        };
        self.by_alert.insert(alert.id, id.clone());
        self.open.insert(
            id.clone(),
            Open {
                incident,
                quiet_since: (!firing).then_some(alert.ends_at.unwrap_or(now)),
            },
        );
        vec![IncidentEvent::Opened { id }]
    }

    /// Resolves incidents whose members have all been resolved for the hold time.
    pub fn tick(&mut self, now: Timestamp) -> Vec<IncidentEvent> {
        let hold = self.settings.resolve_hold.as_chrono();
        let mut done: Vec<String> = self
            .open
            .iter()
            .filter(|(_, o)| o.quiet_since.is_some_and(|q| q + hold <= now))
            .map(|(id, _)| id.clone())
            .collect();
        done.sort();
        let mut events = Vec::with_capacity(done.len());
        for id in done {
            let mut open = self.open.remove(&id).expect("listed above");
            open.incident.resolved_at = open.quiet_since;
            open.incident.updated_at = now;
            for a in &open.incident.alerts {
                self.by_alert.remove(&a.fingerprint);
            }
            self.closed.push(open.incident);
            events.push(IncidentEvent::Resolved { id });
        }
        events
    }

    /// The next time [`tick`](Self::tick) has work to do.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let hold = self.settings.resolve_hold.as_chrono();
        self.open
            .values()
            .filter_map(|o| o.quiet_since)
            .min()
            .map(|q| q + hold)
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
    }
}
