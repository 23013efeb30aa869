//! The fleet-wide state of one alert identity and its firing/resolved state machine.

use serde::{Deserialize, Serialize};

use super::{ClusterId, Fingerprint, Labels, SharedStr, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// What one observation did to an alert identity. The engine forwards everything
/// but `Unchanged` and `Stale` to correlation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// First time this identity is seen, firing.
    New,
    /// First time this identity is seen, already resolved.
    NewResolved,
    /// Firing again after a resolve: a new episode (counts as a flap).
    Refired,
    /// Firing → resolved.
    Resolved,
    /// Same episode, but annotations or links changed.
    Updated,
    /// A re-delivery that changes nothing (group_interval re-sends, HA twins).
    Unchanged,
    /// A late, out-of-order delivery about an older episode; ignored so it can
    /// never resurrect a resolved alert.
    Stale,
}

impl Transition {
    pub fn is_change(self) -> bool {
        !matches!(self, Transition::Unchanged | Transition::Stale)
    }
}

/// One alert as observed in a delivery, already validated and normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub labels: Labels,
    pub annotations: Labels,
    pub status: AlertStatus,
    pub starts_at: Timestamp,
    pub ends_at: Option<Timestamp>,
    pub generator_url: SharedStr,
    pub am_fingerprint: Option<Fingerprint>,
}

/// The current state of one alert identity (cluster + label set), fleet-wide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertState {
    /// Fleet-wide identity: Alertmanager's fingerprint of `labels`, which always
    /// include `cluster`.
    pub id: Fingerprint,
    /// The fingerprint the sending Alertmanager computed (without an added
    /// `cluster` label it differs from `id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub am_fingerprint: Option<Fingerprint>,
    pub cluster: ClusterId,
    pub labels: Labels,
    #[serde(default)]
    pub annotations: Labels,
    pub status: AlertStatus,
    pub starts_at: Timestamp,
    #[serde(default)]
    pub ends_at: Option<Timestamp>,
    #[serde(default)]
    pub generator_url: SharedStr,
    /// The sending Alertmanager's `externalURL`.
    #[serde(default)]
    pub external_url: SharedStr,
    /// The configured source that delivered it last.
    #[serde(default)]
    pub source: SharedStr,
    pub first_received: Timestamp,
    pub last_received: Timestamp,
    /// How many times this identity fired again after resolving.
    #[serde(default)]
    pub flaps: u32,
    /// When the episode before the current one ended, once it fired again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_end: Option<Timestamp>,
    /// Deliveries that carried this identity, duplicates included.
    #[serde(default)]
    pub deliveries: u64,
}

/// Context of the delivery an observation came in.
#[derive(Debug, Clone)]
pub struct DeliveryContext<'a> {
    pub cluster: &'a ClusterId,
    pub source: &'a SharedStr,
    pub external_url: &'a SharedStr,
    pub received_at: Timestamp,
}

impl AlertState {
    /// Creates the state for an identity seen for the first time.
    pub fn first(obs: Observation, ctx: &DeliveryContext<'_>) -> (Self, Transition) {
        Self::first_as(obs.labels.fingerprint(), obs, ctx)
    }

    /// [`first`](Self::first) for a caller that already has the labels'
    /// fingerprint.
    pub fn first_as(
        id: Fingerprint,
        obs: Observation,
        ctx: &DeliveryContext<'_>,
    ) -> (Self, Transition) {
        let transition = match obs.status {
            AlertStatus::Firing => Transition::New,
            AlertStatus::Resolved => Transition::NewResolved,
        };
        let ends_at = match obs.status {
            AlertStatus::Firing => None,
            AlertStatus::Resolved => Some(obs.ends_at.unwrap_or(ctx.received_at)),
        };
        let state = AlertState {
            id,
            am_fingerprint: obs.am_fingerprint,
            cluster: ctx.cluster.clone(),
            labels: obs.labels,
            annotations: obs.annotations,
            status: obs.status,
            starts_at: obs.starts_at,
            ends_at,
            generator_url: obs.generator_url,
            external_url: ctx.external_url.clone(),
            source: ctx.source.clone(),
            first_received: ctx.received_at,
            last_received: ctx.received_at,
            flaps: 0,
            previous_end: None,
            deliveries: 1,
        };
        (state, transition)
    }

    /// Applies a later observation of the same identity. Idempotent: applying the
    /// same observation twice yields `Unchanged` the second time.
    pub fn observe(&mut self, obs: Observation, ctx: &DeliveryContext<'_>) -> Transition {
        self.deliveries += 1;
        if ctx.received_at > self.last_received {
            self.last_received = ctx.received_at;
        }
        let transition = match (self.status, obs.status) {
            (AlertStatus::Firing, AlertStatus::Firing) => {
                if obs.starts_at < self.starts_at {
                    // An HA twin or a restarted Prometheus may report an earlier start.
                    self.starts_at = obs.starts_at;
                }
                self.refresh_details(&obs)
            }
            (AlertStatus::Firing, AlertStatus::Resolved) => {
                let ends = obs.ends_at.unwrap_or(ctx.received_at);
                if ends < self.starts_at {
                    // The resolve of an episode older than the one firing now.
                    Transition::Stale
                } else {
                    self.status = AlertStatus::Resolved;
                    self.ends_at = Some(ends);
                    self.refresh_details(&obs);
                    Transition::Resolved
                }
            }
            (AlertStatus::Resolved, AlertStatus::Firing) => {
                let resolved_at = self.ends_at.unwrap_or(self.last_received);
                if obs.starts_at > resolved_at {
                    self.status = AlertStatus::Firing;
                    self.starts_at = obs.starts_at;
                    self.ends_at = None;
                    self.flaps += 1;
                    self.previous_end = Some(resolved_at);
                    self.refresh_details(&obs);
                    Transition::Refired
                } else {
                    Transition::Stale
                }
            }
            (AlertStatus::Resolved, AlertStatus::Resolved) => {
                let resolved_at = self.ends_at.unwrap_or(self.last_received);
                if obs.starts_at > resolved_at {
                    // A whole episode whose firing delivery never reached us.
                    self.starts_at = obs.starts_at;
                    self.ends_at = Some(obs.ends_at.unwrap_or(ctx.received_at));
                    self.flaps += 1;
                    self.previous_end = Some(resolved_at);
                    self.refresh_details(&obs);
                    Transition::Refired
                } else {
                    Transition::Unchanged
                }
            }
        };
        if transition.is_change() {
            self.source = ctx.source.clone();
            if !ctx.external_url.is_empty() {
                self.external_url = ctx.external_url.clone();
            }
        }
        transition
    }

    fn refresh_details(&mut self, obs: &Observation) -> Transition {
        let mut changed = false;
        if obs.annotations != self.annotations {
            self.annotations = obs.annotations.clone();
            changed = true;
        }
        if !obs.generator_url.is_empty() && obs.generator_url != self.generator_url {
            self.generator_url = obs.generator_url.clone();
            changed = true;
        }
        if obs.am_fingerprint.is_some() && obs.am_fingerprint != self.am_fingerprint {
            self.am_fingerprint = obs.am_fingerprint;
        }
        if changed {
            Transition::Updated
        } else {
            Transition::Unchanged
        }
    }

    pub fn is_firing(&self) -> bool {
        self.status == AlertStatus::Firing
    }

    pub fn severity(&self) -> &str {
        self.labels.get_or_empty("severity")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(min: i64) -> Timestamp {
        chrono::Utc
            .timestamp_opt(1_700_000_000 + min * 60, 0)
            .unwrap()
    }

    fn obs(status: AlertStatus, starts: i64, ends: Option<i64>) -> Observation {
        Observation {
            labels: [("alertname", "X"), ("cluster", "c")].into_iter().collect(),
            annotations: Labels::new(),
            status,
            starts_at: t(starts),
            ends_at: ends.map(t),
            generator_url: Default::default(),
            am_fingerprint: None,
        }
    }

    fn ctx(cluster: &ClusterId, at: i64) -> DeliveryContext<'_> {
        DeliveryContext {
            cluster,
            source: Box::leak(Box::new("s".into())),
            external_url: Box::leak(Box::default()),
            received_at: t(at),
        }
    }

    #[test]
    fn redelivery_is_unchanged() {
        let c = ClusterId::new("c");
        let (mut a, tr) = AlertState::first(obs(AlertStatus::Firing, 0, None), &ctx(&c, 1));
        assert_eq!(tr, Transition::New);
        let tr = a.observe(obs(AlertStatus::Firing, 0, None), &ctx(&c, 6));
        assert_eq!(tr, Transition::Unchanged);
        assert_eq!(a.deliveries, 2);
    }

    #[test]
    fn late_firing_never_resurrects_a_resolved_alert() {
        let c = ClusterId::new("c");
        let (mut a, _) = AlertState::first(obs(AlertStatus::Firing, 0, None), &ctx(&c, 1));
        assert_eq!(
            a.observe(obs(AlertStatus::Resolved, 0, Some(10)), &ctx(&c, 11)),
            Transition::Resolved
        );
        assert_eq!(
            a.observe(obs(AlertStatus::Firing, 0, None), &ctx(&c, 12)),
            Transition::Stale
        );
        assert_eq!(a.status, AlertStatus::Resolved);
        assert_eq!(
            a.observe(obs(AlertStatus::Firing, 20, None), &ctx(&c, 21)),
            Transition::Refired
        );
        assert_eq!(a.flaps, 1);
        assert!(a.is_firing());
    }

    #[test]
    fn resolve_of_an_older_episode_is_stale() {
        let c = ClusterId::new("c");
        let (mut a, _) = AlertState::first(obs(AlertStatus::Firing, 20, None), &ctx(&c, 21));
        assert_eq!(
            a.observe(obs(AlertStatus::Resolved, 0, Some(10)), &ctx(&c, 22)),
            Transition::Stale
        );
        assert!(a.is_firing());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn obs(firing: bool, starts: i64, ends: i64) -> Observation {
        let t = |m: i64| {
            chrono::Utc
                .timestamp_opt(1_700_000_000 + m * 60, 0)
                .unwrap()
        };
        Observation {
            labels: [("alertname", "X")].into_iter().collect(),
            annotations: Labels::new(),
            status: if firing {
                AlertStatus::Firing
            } else {
                AlertStatus::Resolved
            },
            starts_at: t(starts),
            ends_at: (!firing).then(|| t(starts + ends)),
            generator_url: Default::default(),
            am_fingerprint: None,
        }
    }

    proptest! {
        /// Delivering anything twice (group_interval re-sends, HA twins) changes
        /// nothing the second time, whatever came before.
        #[test]
        fn duplicates_never_change_state(seq in prop::collection::vec((any::<bool>(), 0i64..50, 1i64..20), 1..30)) {
            let c = ClusterId::new("c");
            let ctx = DeliveryContext { cluster: &c, source: &"s".into(), external_url: &SharedStr::default(), received_at: chrono::Utc.timestamp_opt(1_800_000_000, 0).unwrap() };
            let (first, rest) = seq.split_first().unwrap();
            let (mut a, _) = AlertState::first(obs(first.0, first.1, first.2), &ctx);
            for (f, s, e) in rest {
                a.observe(obs(*f, *s, *e), &ctx);
                let before = a.clone();
                let t = a.observe(obs(*f, *s, *e), &ctx);
                prop_assert!(!t.is_change(), "second copy was {:?}", t);
                let mut expected = before;
                expected.deliveries += 1;
                prop_assert_eq!(&a, &expected);
            }
        }

        /// A resolved alert only fires again for an episode that starts after it resolved.
        #[test]
        fn resolved_alerts_only_refire_for_later_episodes(starts in 0i64..50, len in 1i64..20, late in 0i64..80) {
            let c = ClusterId::new("c");
            let ctx = DeliveryContext { cluster: &c, source: &"s".into(), external_url: &SharedStr::default(), received_at: chrono::Utc.timestamp_opt(1_800_000_000, 0).unwrap() };
            let (mut a, _) = AlertState::first(obs(true, starts, 0), &ctx);
            a.observe(obs(false, starts, len), &ctx);
            let resolved_at = a.ends_at.unwrap();
            let t = a.observe(obs(true, late, 0), &ctx);
            if obs(true, late, 0).starts_at > resolved_at {
                prop_assert_eq!(t, Transition::Refired);
            } else {
                prop_assert_eq!(t, Transition::Stale);
                prop_assert_eq!(a.status, AlertStatus::Resolved);
            }
        }
    }
}
