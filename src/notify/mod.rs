//! Notification: decides which incident events become messages, for which
//! receivers, and (in `serve`) delivers them from a durable outbox.
//!
//! Flow: [`Planner`] (routing tree, holds, updates, repeats, silences, acks)
//! → [`outbox::Outbox`] (sled, persisted before any send) → [`dispatch::Dispatcher`]
//! (rate limits, retries with backoff, circuit breaker) → one [`notifier::Notifier`]
//! per channel config: [`email`], [`slack`], [`dingtalk`], [`webhook`].
//! [`render`] turns an incident into each channel's text with minijinja.

pub mod api;
pub mod cli;
pub mod dingtalk;
pub mod dispatch;
pub mod email;
pub mod matcher;
pub mod mdsplit;
pub mod notifier;
pub mod outbox;
mod planner;
pub mod render;
pub mod route;
pub mod silence;
pub mod slack;
pub mod timeinterval;
pub mod webhook;

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use planner::{Planner, PlannerSettings};
pub use route::RouteConfig;
pub use timeinterval::TimeIntervalConfig;

use crate::config::{Config, ConfigErrors, ValidateCtx};
use crate::domain::Timestamp;

/// A notification receiver: a name routes refer to, and the channels it
/// delivers to (Alertmanager's `*_configs` lists).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ReceiverConfig {
    /// Name routes refer to.
    pub name: String,
    /// SMTP deliveries.
    pub email_configs: Vec<email::EmailConfig>,
    /// Slack incoming webhooks.
    pub slack_configs: Vec<slack::SlackConfig>,
    /// DingTalk custom robots.
    pub dingtalk_configs: Vec<dingtalk::DingtalkConfig>,
    /// Generic JSON webhooks.
    pub webhook_configs: Vec<webhook::WebhookConfig>,
}

/// `notify:` in the configuration: what is worth a message at all.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct NotifyConfig {
    /// Severities that do not notify on their own. An incident whose every
    /// alert has one of these is kept and shown in the API and UI, and its
    /// first message waits until an alert of another severity joins it. The
    /// default follows kube-prometheus, whose `InfoInhibitor` holds back
    /// `severity="info"` alerts unless a warning or critical alert fires with
    /// them. `[]` notifies every incident.
    pub quiet_severities: Vec<String>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            quiet_severities: vec!["info".to_owned()],
        }
    }
}

fn compile_intervals(
    config: &Config,
    errs: &mut ConfigErrors,
) -> HashMap<String, timeinterval::TimeInterval> {
    let mut out = HashMap::new();
    for (i, t) in config.time_intervals.iter().enumerate() {
        let path = format!("time_intervals[{i}]");
        if t.name.is_empty() {
            errs.push(format!("{path}.name"), "required");
            continue;
        }
        let ti = t.compile(&path, errs);
        if out.insert(t.name.clone(), ti).is_some() {
            errs.push(
                format!("{path}.name"),
                format!("duplicate time interval {:?}", t.name),
            );
        }
    }
    out
}

/// Validates `route`, `receivers` and `time_intervals` together, resolving
/// channel secrets in place.
pub fn validate_config(config: &mut Config, ctx: &ValidateCtx, errs: &mut ConfigErrors) {
    let mut names = std::collections::HashSet::new();
    for (i, r) in config.receivers.iter_mut().enumerate() {
        let path = format!("receivers[{i}]");
        if r.name.is_empty() {
            errs.push(format!("{path}.name"), "required");
        } else if !names.insert(r.name.clone()) {
            errs.push(
                format!("{path}.name"),
                format!("duplicate receiver {:?}", r.name),
            );
        }
        for (j, c) in r.email_configs.iter_mut().enumerate() {
            c.validate(&format!("{path}.email_configs[{j}]"), ctx, errs);
        }
        for (j, c) in r.slack_configs.iter_mut().enumerate() {
            c.validate(&format!("{path}.slack_configs[{j}]"), ctx, errs);
        }
        for (j, c) in r.dingtalk_configs.iter_mut().enumerate() {
            c.validate(&format!("{path}.dingtalk_configs[{j}]"), ctx, errs);
        }
        for (j, c) in r.webhook_configs.iter_mut().enumerate() {
            c.validate(&format!("{path}.webhook_configs[{j}]"), ctx, errs);
        }
    }
    if let Some(ext) = &config.server.external_url {
        if !(ext.starts_with("http://") || ext.starts_with("https://")) {
            errs.push(
                "server.external_url",
                format!("{ext:?} must start with http:// or https://"),
            );
        }
    }
    let intervals = compile_intervals(config, errs);
    match &config.route {
        Some(route) => {
            let receivers: Vec<&str> = config.receivers.iter().map(|r| r.name.as_str()).collect();
            route.compile(&receivers, &intervals, errs);
        }
        None if !config.receivers.is_empty() => {
            errs.push("route", "receivers are defined but no route sends to them");
        }
        None => {}
    }
}

/// Builds the planner's settings from a validated config.
pub fn planner_settings(config: &Config) -> PlannerSettings {
    let mut errs = ConfigErrors::default();
    let intervals = compile_intervals(config, &mut errs);
    let route = config.route.as_ref().map(|r| {
        let receivers: Vec<&str> = config.receivers.iter().map(|r| r.name.as_str()).collect();
        Arc::new(r.compile(&receivers, &intervals, &mut errs))
    });
    let no_resolved = config
        .receivers
        .iter()
        .filter(|r| {
            let flags: Vec<bool> = r
                .email_configs
                .iter()
                .map(|c| c.send_resolved)
                .chain(r.slack_configs.iter().map(|c| c.send_resolved))
                .chain(r.dingtalk_configs.iter().map(|c| c.send_resolved))
                .chain(r.webhook_configs.iter().map(|c| c.send_resolved))
                .collect();
            !flags.is_empty() && flags.iter().all(|s| !s)
        })
        .map(|r| r.name.clone())
        .collect();
    PlannerSettings {
        route,
        intervals: Arc::new(intervals),
        no_resolved: Arc::new(no_resolved),
        quiet_severities: Arc::new(config.notify.quiet_severities.iter().cloned().collect()),
    }
}

/// Whether a message announces trouble or its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationStatus {
    Firing,
    Resolved,
}

/// Why a message is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    /// The first message about an incident.
    #[default]
    First,
    /// The root cause, scope or severity changed.
    Update,
    /// `repeat_interval` passed without an acknowledgement.
    Repeat,
    /// The incident ended.
    Resolved,
    /// A scheduled summary not tied to an incident (the forecast digest);
    /// the message carries a [`notifier::Digest`].
    Digest,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::First => "first",
            MessageKind::Update => "update",
            MessageKind::Repeat => "repeat",
            MessageKind::Resolved => "resolved",
            MessageKind::Digest => "digest",
        }
    }
}

/// One planned message, as `replay` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub at: Timestamp,
    pub incident: String,
    pub receiver: String,
    pub status: NotificationStatus,
    /// Why it is sent.
    #[serde(default)]
    pub kind: MessageKind,
    /// 0 for the first message to this receiver about this incident, then 1, 2…
    #[serde(default)]
    pub seq: u32,
    /// Idempotency key: `incident/receiver/seq`.
    #[serde(default)]
    pub key: String,
}
