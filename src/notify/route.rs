//! The routing tree, in Alertmanager's syntax and semantics.
//!
//! An incident is matched as a label set: its root cause's labels, plus
//! `severity` (the highest member severity), `predictive` (`"true"`/`"false"`)
//! and `cluster`. An incident spanning several clusters matches a route when
//! any one of its clusters does. Children inherit timing and the receiver;
//! the first matching child wins unless it sets `continue: true`; when no
//! child matches, the node itself handles the incident.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::matcher::{all_match, Matcher};
use super::timeinterval::TimeInterval;
use crate::config::{ConfigErrors, PromDuration};
use crate::domain::{Incident, Labels, Timestamp};

/// One node of the routing tree (the root is the top-level `route`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteConfig {
    /// Receiver for incidents no child route matches (inherited).
    pub receiver: Option<String>,
    /// Accepted for Alertmanager compatibility; an incident is always its own
    /// group, so grouping labels do not split or merge messages.
    pub group_by: Vec<String>,
    /// How long to hold a new incident before its first message, so the root
    /// cause can arrive (default 30s, inherited).
    pub group_wait: Option<PromDuration>,
    /// Minimum time between two messages about the same incident (default 5m,
    /// inherited): updates arriving faster are merged into one.
    pub group_interval: Option<PromDuration>,
    /// Re-send an unacknowledged firing incident this often (default 4h, inherited).
    pub repeat_interval: Option<PromDuration>,
    /// Alertmanager matcher strings: `severity="critical"`, `cluster=~"prod-.*"`.
    pub matchers: Vec<String>,
    /// Deprecated equality matchers (`match:`), still accepted.
    #[serde(rename = "match")]
    pub match_eq: BTreeMap<String, String>,
    /// Deprecated regex matchers (`match_re:`), still accepted.
    pub match_re: BTreeMap<String, String>,
    /// Keep looking at later siblings after this route matched.
    #[serde(rename = "continue")]
    pub continue_: bool,
    /// Child routes.
    pub routes: Vec<RouteConfig>,
    /// Names of `time_intervals` during which this route sends nothing.
    pub mute_time_intervals: Vec<String>,
    /// Names of `time_intervals` outside of which this route sends nothing.
    pub active_time_intervals: Vec<String>,
}

/// Effective timing of a matched route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub group_wait: chrono::Duration,
    pub group_interval: chrono::Duration,
    pub repeat_interval: chrono::Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            group_wait: chrono::Duration::seconds(30),
            group_interval: chrono::Duration::minutes(5),
            repeat_interval: chrono::Duration::hours(4),
        }
    }
}

/// A compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Position in the tree, e.g. `route.routes[1]`, for logs and errors.
    pub path: String,
    pub receiver: String,
    pub matchers: Vec<Matcher>,
    pub continue_: bool,
    pub timing: Timing,
    pub mute: Vec<String>,
    pub active: Vec<String>,
    pub routes: Vec<Route>,
}

/// A route an incident matched: where to send and with which timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub receiver: String,
    pub timing: Timing,
    pub mute: Vec<String>,
    pub active: Vec<String>,
}

impl RouteConfig {
    /// Validates and compiles the tree. `receivers` are the defined names.
    pub fn compile(
        &self,
        receivers: &[&str],
        intervals: &HashMap<String, TimeInterval>,
        errs: &mut ConfigErrors,
    ) -> Route {
        let root = compile_node(
            self,
            "route",
            None,
            Timing::default(),
            receivers,
            intervals,
            errs,
        );
        if root.receiver.is_empty() {
            errs.push("route.receiver", "the root route needs a receiver");
        }
        if !self.matchers.is_empty() || !self.match_eq.is_empty() || !self.match_re.is_empty() {
            errs.push(
                "route.matchers",
                "the root route matches everything; remove its matchers",
            );
        }
        if !self.mute_time_intervals.is_empty() || !self.active_time_intervals.is_empty() {
            errs.push(
                "route.mute_time_intervals",
                "mute_time_intervals and active_time_intervals are not allowed on the root route",
            );
        }
        root
    }
}

fn compile_node(
    c: &RouteConfig,
    path: &str,
    parent: Option<&Route>,
    parent_timing: Timing,
    receivers: &[&str],
    intervals: &HashMap<String, TimeInterval>,
    errs: &mut ConfigErrors,
) -> Route {
    let receiver = match &c.receiver {
        Some(r) => {
            if !receivers.contains(&r.as_str()) {
                errs.push(
                    format!("{path}.receiver"),
                    format!(
                        "undefined receiver {r:?} (defined: {})",
                        if receivers.is_empty() {
                            "none".to_owned()
                        } else {
                            receivers.join(", ")
                        }
                    ),
                );
            }
            r.clone()
        }
        None => parent.map(|p| p.receiver.clone()).unwrap_or_default(),
    };
    let mut matchers = Vec::new();
    for (i, s) in c.matchers.iter().enumerate() {
        match Matcher::parse_list(s) {
            Ok(ms) => matchers.extend(ms),
            Err(e) => errs.push(format!("{path}.matchers[{i}]"), e.to_string()),
        }
    }
    for (k, v) in &c.match_eq {
        match Matcher::new(k, super::matcher::MatchOp::Equal, v) {
            Ok(m) => matchers.push(m),
            Err(e) => errs.push(format!("{path}.match.{k}"), e.to_string()),
        }
    }
    for (k, v) in &c.match_re {
        match Matcher::new(k, super::matcher::MatchOp::Regex, v) {
            Ok(m) => matchers.push(m),
            Err(e) => errs.push(format!("{path}.match_re.{k}"), e.to_string()),
        }
    }
    let mut timing = parent_timing;
    if let Some(d) = c.group_wait {
        timing.group_wait = d.as_chrono();
    }
    if let Some(d) = c.group_interval {
        if d.is_zero() {
            errs.push(format!("{path}.group_interval"), "must be greater than 0");
        }
        timing.group_interval = d.as_chrono();
    }
    if let Some(d) = c.repeat_interval {
        if d.is_zero() {
            errs.push(format!("{path}.repeat_interval"), "must be greater than 0");
        }
        timing.repeat_interval = d.as_chrono();
    }
    for (key, names) in [
        ("mute_time_intervals", &c.mute_time_intervals),
        ("active_time_intervals", &c.active_time_intervals),
    ] {
        for (i, n) in names.iter().enumerate() {
            if !intervals.contains_key(n) {
                errs.push(
                    format!("{path}.{key}[{i}]"),
                    format!("undefined time interval {n:?}"),
                );
            }
        }
    }
    let mut node = Route {
        path: path.to_owned(),
        receiver,
        matchers,
        continue_: c.continue_,
        timing,
        mute: c.mute_time_intervals.clone(),
        active: c.active_time_intervals.clone(),
        routes: Vec::new(),
    };
    let children: Vec<Route> = c
        .routes
        .iter()
        .enumerate()
        .map(|(i, child)| {
            compile_node(
                child,
                &format!("{path}.routes[{i}]"),
                Some(&node),
                timing,
                receivers,
                intervals,
                errs,
            )
        })
        .collect();
    node.routes = children;
    node
}

/// The label sets an incident is matched as: one per affected cluster (or a
/// single one when it names no cluster).
pub fn incident_label_sets(inc: &Incident) -> Vec<Labels> {
    let mut base = inc.root_cause.labels.clone();
    if !inc.severity.is_empty() {
        base.insert("severity", inc.severity.clone());
    }
    base.insert("predictive", if inc.predictive { "true" } else { "false" });
    if inc.clusters.is_empty() {
        return vec![base];
    }
    inc.clusters
        .iter()
        .map(|c| {
            let mut l = base.clone();
            l.insert("cluster", c.clone());
            l
        })
        .collect()
}

impl Route {
    fn matches_any(&self, sets: &[Labels]) -> bool {
        sets.iter().any(|l| all_match(&self.matchers, l))
    }

    /// Every route that handles the incident, in tree order, deduplicated by receiver.
    pub fn route(&self, inc: &Incident) -> Vec<Matched> {
        let sets = incident_label_sets(inc);
        let mut out = Vec::new();
        self.walk(&sets, &mut out);
        let mut seen = std::collections::HashSet::new();
        out.retain(|m: &Matched| seen.insert(m.receiver.clone()));
        out
    }

    fn walk(&self, sets: &[Labels], out: &mut Vec<Matched>) {
        let mut any = false;
        for child in &self.routes {
            if child.matches_any(sets) {
                any = true;
                child.walk(sets, out);
                if !child.continue_ {
                    break;
                }
            }
        }
        if !any {
            out.push(Matched {
                receiver: self.receiver.clone(),
                timing: self.timing,
                mute: self.mute.clone(),
                active: self.active.clone(),
            });
        }
    }
}

impl Matched {
    /// When the first message about an incident opened at `opened_at` is
    /// due: after the route's `group_wait`, and not before `now`.
    pub fn first_due(&self, opened_at: Timestamp, now: Timestamp) -> Timestamp {
        (opened_at + self.timing.group_wait).max(now)
    }

    /// Whether sending is allowed at `now` by the route's time intervals.
    pub fn allowed_at(&self, now: Timestamp, intervals: &HashMap<String, TimeInterval>) -> bool {
        let muted = self
            .mute
            .iter()
            .any(|n| intervals.get(n).is_some_and(|t| t.contains(now)));
        let active = self.active.is_empty()
            || self
                .active
                .iter()
                .any(|n| intervals.get(n).is_some_and(|t| t.contains(now)));
        !muted && active
    }
}
