//! Notification: decides which incident events become messages, for which
//! receivers, and (in `serve`) delivers them from a durable outbox.
//!
//! This first version plans one message when an incident opens and one when it
//! resolves, for a single `default` receiver; routing, channels and the outbox
//! build on the same [`Planner`] interface.

use serde::{Deserialize, Serialize};

use crate::config::{Config, ConfigErrors, ValidateCtx};
use crate::correlate::IncidentEvent;
use crate::domain::{Incident, Timestamp};

/// The routing tree root, in Alertmanager's syntax.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteConfig {
    /// Receiver for incidents no child route matches.
    pub receiver: Option<String>,
}

/// A notification receiver.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ReceiverConfig {
    pub name: String,
}

/// A named set of time ranges, as in Alertmanager's `time_intervals`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TimeIntervalConfig {
    pub name: String,
}

/// Validates `route`, `receivers` and `time_intervals` together.
pub fn validate_config(config: &mut Config, _ctx: &ValidateCtx, errs: &mut ConfigErrors) {
    let mut names = std::collections::HashSet::new();
    for (i, r) in config.receivers.iter().enumerate() {
        if r.name.is_empty() {
            errs.push(format!("receivers[{i}].name"), "required");
        } else if !names.insert(r.name.as_str()) {
            errs.push(
                format!("receivers[{i}].name"),
                format!("duplicate receiver {:?}", r.name),
            );
        }
    }
    if let Some(recv) = config.route.as_ref().and_then(|r| r.receiver.as_ref()) {
        if !names.contains(recv.as_str()) {
            errs.push("route.receiver", format!("undefined receiver {recv:?}"));
        }
    }
}

/// Whether a message announces trouble or its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationStatus {
    Firing,
    Resolved,
}

/// One planned message, as `replay` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub at: Timestamp,
    pub incident: String,
    pub receiver: String,
    pub status: NotificationStatus,
}

/// Turns incident events into planned messages.
#[derive(Debug, Default)]
pub struct Planner {}

impl Planner {
    pub fn new() -> Self {
        Planner {}
    }

    pub fn plan(
        &mut self,
        event: &IncidentEvent,
        _incident: &Incident,
        now: Timestamp,
    ) -> Vec<Notification> {
        let status = match event {
            IncidentEvent::Opened { .. } => NotificationStatus::Firing,
            IncidentEvent::Resolved { .. } => NotificationStatus::Resolved,
            IncidentEvent::Updated { .. } => return Vec::new(),
        };
        vec![Notification {
            at: now,
            incident: event.id().to_owned(),
            receiver: "default".to_owned(),
            status,
        }]
    }

    /// The next time the planner has work to do (hold timers, repeats).
    pub fn next_deadline(&self) -> Option<Timestamp> {
        None
    }

    pub fn tick(&mut self, _now: Timestamp) -> Vec<Notification> {
        Vec::new()
    }
}
