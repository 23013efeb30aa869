//! The planner: decides when an incident becomes a message, for which receivers.
//!
//! Per (incident, receiver) it holds the first message for the route's
//! `group_wait` so the root cause can arrive, sends an update only on a
//! meaningful change (root cause, a new cluster, higher severity) and no more
//! often than `group_interval` — and only if, when it falls due, the incident
//! still differs in those respects from what the receiver was last told (a
//! root cause that flipped and flipped back is no news) — repeats an unacknowledged firing incident every
//! `repeat_interval`, and sends a resolved message once it ends. Silences and
//! the route's time intervals defer messages. Time only comes in as `now`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::matcher::{all_match, Matcher};
use super::route::{incident_label_sets, Matched, Route, Timing};
use super::silence::{Silence, SilenceError};
use super::timeinterval::TimeInterval;
use super::{MessageKind, Notification, NotificationStatus};
use crate::correlate::{Change, IncidentEvent};
use crate::domain::{Incident, Timestamp};

/// What the planner needs from the configuration.
#[derive(Debug, Clone)]
pub struct PlannerSettings {
    /// The compiled routing tree; `None` routes everything to `default`.
    pub route: Option<Arc<Route>>,
    pub intervals: Arc<HashMap<String, TimeInterval>>,
    /// Receivers none of whose channels send resolved messages.
    pub no_resolved: Arc<HashSet<String>>,
    /// Severities that do not notify on their own: an incident whose highest
    /// severity is one of these waits, unsent, until it rises.
    pub quiet_severities: Arc<HashSet<String>>,
}

impl Default for PlannerSettings {
    fn default() -> Self {
        PlannerSettings {
            route: None,
            intervals: Arc::default(),
            no_resolved: Arc::default(),
            quiet_severities: Arc::new(
                super::NotifyConfig::default()
                    .quiet_severities
                    .into_iter()
                    .collect(),
            ),
        }
    }
}

#[derive(Debug, Clone)]
struct Track {
    matched: Matched,
    due: Option<(Timestamp, MessageKind)>,
    sent_firing: bool,
    last_sent: Option<Timestamp>,
    /// What the last firing message said (unknown after a restart).
    told: Option<Gist>,
    seq: u32,
}

/// What an update is about: the root cause, the clusters affected and the
/// severity. Members coming and going are not news.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Gist {
    cause: crate::domain::Entity,
    clusters: Vec<String>,
    severity: String,
}

/// The root cause as the receiver knows it. A Service and the workload of
/// the same name in its namespace are one cause told two ways: the Service
/// selects that workload's pods, and correlation names the Service first
/// (its callers' error rates fire before the workload's replica alerts) and
/// the workload once those arrive. That is no news to the receiver.
fn told_cause(e: &crate::domain::Entity) -> crate::domain::Entity {
    use crate::domain::EntityKind as K;
    let mut e = e.clone();
    if matches!(
        e.kind,
        K::Deployment | K::StatefulSet | K::DaemonSet | K::Service
    ) {
        e.kind = K::Service;
    }
    e
}

impl Gist {
    fn of(inc: &Incident) -> Self {
        Gist {
            cause: told_cause(&inc.root_cause.entity),
            // Correlation keeps them sorted and deduplicated.
            clusters: inc.clusters.clone(),
            severity: inc.severity.clone(),
        }
    }
}

type Key = (String, String);

/// What the planner keeps about an open incident: enough to match silences,
/// not the members (messages are rendered from the engine's copy).
#[derive(Debug, Clone)]
struct Subject {
    opened_at: Timestamp,
    sets: Vec<crate::domain::Labels>,
    gist: Gist,
}

impl Subject {
    fn of(inc: &Incident) -> Self {
        Subject {
            opened_at: inc.opened_at,
            sets: incident_label_sets(inc),
            gist: Gist::of(inc),
        }
    }
}

/// Turns incident events into planned messages.
#[derive(Debug, Default)]
pub struct Planner {
    settings: PlannerSettings,
    tracks: BTreeMap<Key, Track>,
    due_index: BTreeSet<(Timestamp, Key)>,
    incidents: HashMap<String, Subject>,
    acked: HashSet<String>,
    silences: Vec<(Silence, Vec<Matcher>)>,
}

impl Planner {
    pub fn new() -> Self {
        Planner::default()
    }

    pub fn with_settings(settings: PlannerSettings) -> Self {
        Planner {
            settings,
            ..Default::default()
        }
    }

    fn routes(&self, inc: &Incident) -> Vec<Matched> {
        match &self.settings.route {
            Some(r) => r.route(inc),
            None => vec![Matched {
                receiver: "default".to_owned(),
                timing: Timing::default(),
                mute: Vec::new(),
                active: Vec::new(),
            }],
        }
    }

    fn set_due(&mut self, key: &Key, due: Option<(Timestamp, MessageKind)>) {
        let Some(t) = self.tracks.get_mut(key) else {
            return;
        };
        if let Some((old, _)) = t.due {
            self.due_index.remove(&(old, key.clone()));
        }
        t.due = due;
        if let Some((at, _)) = due {
            self.due_index.insert((at, key.clone()));
        }
    }

    fn remove(&mut self, key: &Key) {
        self.set_due(key, None);
        self.tracks.remove(key);
    }

    /// Drops an incident that correlation merged into another. Its members now
    /// belong to the survivor, whose messages cover them, so it gets no
    /// "resolved" message of its own (that would tell people the trouble ended).
    pub fn forget(&mut self, id: &str) {
        for key in self.keys_of(id) {
            self.remove(&key);
        }
        self.acked.remove(id);
        self.incidents.remove(id);
    }

    fn keys_of(&self, id: &str) -> Vec<Key> {
        self.tracks
            .range((id.to_owned(), String::new())..)
            .take_while(|(k, _)| k.0 == id)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Adds tracks for receivers the incident newly routes to.
    fn add_routes(&mut self, inc: &Incident, now: Timestamp) {
        for m in self.routes(inc) {
            let key = (inc.id.clone(), m.receiver.clone());
            if self.tracks.contains_key(&key) {
                continue;
            }
            let at = m.first_due(inc.opened_at, now);
            self.tracks.insert(
                key.clone(),
                Track {
                    matched: m,
                    due: None,
                    sent_firing: false,
                    last_sent: None,
                    told: None,
                    seq: 0,
                },
            );
            self.set_due(&key, Some((at, MessageKind::First)));
        }
    }

    pub fn plan(
        &mut self,
        event: &IncidentEvent,
        incident: &Incident,
        now: Timestamp,
    ) -> Vec<Notification> {
        let id = event.id().to_owned();
        if let IncidentEvent::Updated {
            change: Change::Members,
            ..
        } = event
        {
            // Members alone change neither routing nor silencing.
            return Vec::new();
        }
        let subject = Subject::of(incident);
        let gist = subject.gist.clone();
        let before = self.incidents.insert(id.clone(), subject).map(|s| s.gist);
        match event {
            IncidentEvent::Opened { .. } => self.add_routes(incident, now),
            IncidentEvent::Updated { .. } => {
                if before.as_ref() != Some(&gist) {
                    self.acked.remove(&id);
                }
                let quiet = self.is_quiet(&gist);
                for key in self.keys_of(&id) {
                    let t = &self.tracks[&key];
                    if !t.sent_firing {
                        if t.due.is_none() && !quiet {
                            // Held back while quiet: its severity rose, so
                            // the first message goes out now.
                            let at = t.matched.first_due(incident.opened_at, now);
                            self.set_due(&key, Some((at, MessageKind::First)));
                        }
                        continue; // the pending first message will carry the change
                    }
                    if matches!(t.due, Some((_, MessageKind::Update))) {
                        continue;
                    }
                    if t.told.as_ref() == Some(&gist) {
                        continue; // nothing the receiver does not know
                    }
                    let at = t
                        .last_sent
                        .map_or(now, |l| (l + t.matched.timing.group_interval).max(now));
                    self.set_due(&key, Some((at, MessageKind::Update)));
                }
                if incident.is_open() {
                    self.add_routes(incident, now);
                }
            }
            IncidentEvent::Resolved { .. } => {
                for key in self.keys_of(&id) {
                    if self.tracks[&key].sent_firing && !self.settings.no_resolved.contains(&key.1)
                    {
                        self.set_due(&key, Some((now, MessageKind::Resolved)));
                    } else {
                        self.remove(&key);
                    }
                }
                self.acked.remove(&id);
                if self.keys_of(&id).is_empty() {
                    self.incidents.remove(&id);
                }
            }
        }
        // Messages due right away (group_wait 0) go out without waiting for a tick.
        self.tick(now)
    }

    /// Rebuilds timers for incidents still open after a restart. `last_seq`
    /// tells whether (and how far) a receiver was already notified, from the
    /// outbox; unnotified incidents get their first message, notified ones
    /// resume repeats and will get their resolved message.
    pub fn restore(
        &mut self,
        incidents: &[&Incident],
        now: Timestamp,
        last_seq: impl Fn(&str, &str) -> Option<u32>,
    ) {
        for inc in incidents.iter().filter(|i| i.is_open()) {
            self.incidents.insert(inc.id.clone(), Subject::of(inc));
            for m in self.routes(inc) {
                let key = (inc.id.clone(), m.receiver.clone());
                let sent = last_seq(&inc.id, &m.receiver);
                let due = match sent {
                    None => (m.first_due(inc.opened_at, now), MessageKind::First),
                    Some(_) => (now + m.timing.repeat_interval, MessageKind::Repeat),
                };
                self.tracks.insert(
                    key.clone(),
                    Track {
                        matched: m,
                        due: None,
                        sent_firing: sent.is_some(),
                        last_sent: sent.map(|_| now),
                        told: None,
                        seq: sent.map_or(0, |s| s + 1),
                    },
                );
                self.set_due(&key, Some(due));
            }
        }
    }

    /// The next time the planner has work to do (hold timers, repeats).
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.due_index.first().map(|(t, _)| *t)
    }

    /// Emits every message due at `now`.
    pub fn tick(&mut self, now: Timestamp) -> Vec<Notification> {
        let mut out = Vec::new();
        while let Some((at, key)) = self.due_index.first().cloned() {
            if at > now {
                break;
            }
            let Some(track) = self.tracks.get(&key).cloned() else {
                self.due_index.remove(&(at, key));
                continue;
            };
            let Some((_, kind)) = track.due else {
                self.due_index.remove(&(at, key));
                continue;
            };
            let Some(inc) = self.incidents.get(&key.0) else {
                self.remove(&key);
                continue;
            };
            if let Some(until) = self.silenced_until(inc, now) {
                if kind == MessageKind::Resolved {
                    // Nothing to resolve for people who were told nothing new.
                    self.remove(&key);
                } else {
                    self.set_due(&key, Some((until, kind)));
                }
                continue;
            }
            if !track.matched.allowed_at(now, &self.settings.intervals) {
                // Intervals are minute-grained: re-check at the next minute.
                let ms = now.timestamp_millis();
                let next =
                    chrono::DateTime::from_timestamp_millis(ms - ms.rem_euclid(60_000) + 60_000)
                        .unwrap_or(now + chrono::Duration::minutes(1));
                self.set_due(&key, Some((next, kind)));
                continue;
            }
            if kind == MessageKind::First && self.is_quiet(&inc.gist) {
                // Nothing but quiet alerts (kube-prometheus' info level): kept
                // and shown, sent once a louder alert joins.
                self.set_due(&key, None);
                continue;
            }
            let repeat = track.matched.timing.repeat_interval;
            if kind == MessageKind::Update && track.told.as_ref() == Some(&inc.gist) {
                // Changed and changed back while the update waited: the
                // receiver already knows this. Back to the repeat timer.
                let next = match (self.acked.contains(&key.0), track.last_sent) {
                    (false, Some(l)) => Some(((l + repeat).max(now), MessageKind::Repeat)),
                    _ => None,
                };
                self.set_due(&key, next);
                continue;
            }
            let gist = inc.gist.clone();
            let status = if kind == MessageKind::Resolved {
                NotificationStatus::Resolved
            } else {
                NotificationStatus::Firing
            };
            out.push(Notification {
                at: now,
                incident: key.0.clone(),
                receiver: key.1.clone(),
                status,
                kind,
                seq: track.seq,
                key: format!("{}/{}/{}", key.0, key.1, track.seq),
            });
            if kind == MessageKind::Resolved {
                self.remove(&key);
                if self.keys_of(&key.0).is_empty() {
                    self.incidents.remove(&key.0);
                }
                continue;
            }
            if let Some(t) = self.tracks.get_mut(&key) {
                t.sent_firing = true;
                t.last_sent = Some(now);
                t.told = Some(gist);
                t.seq += 1;
            }
            let next = if self.acked.contains(&key.0) {
                None
            } else {
                Some((now + repeat, MessageKind::Repeat))
            };
            self.set_due(&key, next);
        }
        out
    }

    fn is_quiet(&self, gist: &Gist) -> bool {
        self.settings.quiet_severities.contains(&gist.severity)
    }

    /// The silences active at `now` that match the incident `inc`.
    fn silences_on<'a>(
        &'a self,
        inc: &'a Subject,
        now: Timestamp,
    ) -> impl Iterator<Item = &'a Silence> + 'a {
        self.silences
            .iter()
            .filter(move |(s, ms)| {
                s.starts_at <= now && now < s.ends_at && inc.sets.iter().any(|l| all_match(ms, l))
            })
            .map(|(s, _)| s)
    }

    fn silenced_until(&self, inc: &Subject, now: Timestamp) -> Option<Timestamp> {
        self.silences_on(inc, now).map(|s| s.ends_at).max()
    }

    /// Acknowledges an incident: no repeats until it changes. Returns false
    /// when the planner does not know the incident.
    pub fn ack(&mut self, id: &str) -> bool {
        if !self.incidents.contains_key(id) {
            return false;
        }
        self.acked.insert(id.to_owned());
        for key in self.keys_of(id) {
            if matches!(self.tracks[&key].due, Some((_, MessageKind::Repeat))) {
                self.set_due(&key, None);
            }
        }
        true
    }

    pub fn is_acked(&self, id: &str) -> bool {
        self.acked.contains(id)
    }

    /// The ids of the silences that hold back messages about incident `id`
    /// at `now` (empty for an incident the planner does not track).
    pub fn silenced_by(&self, id: &str, now: Timestamp) -> Vec<String> {
        self.incidents.get(id).map_or_else(Vec::new, |inc| {
            self.silences_on(inc, now).map(|s| s.id.clone()).collect()
        })
    }

    /// Adds or replaces a silence (by id).
    pub fn upsert_silence(&mut self, s: Silence) -> Result<(), SilenceError> {
        let ms = s.validate()?;
        self.silences.retain(|(x, _)| x.id != s.id);
        self.silences.push((s, ms));
        Ok(())
    }

    /// Ends a silence at `now`. Returns it, or `None` if unknown.
    pub fn expire_silence(&mut self, id: &str, now: Timestamp) -> Option<Silence> {
        let (s, _) = self.silences.iter_mut().find(|(s, _)| s.id == id)?;
        if s.ends_at > now {
            s.ends_at = now.max(s.starts_at + chrono::Duration::milliseconds(1));
        }
        let s = s.clone();
        // Messages deferred by silences re-check at their normal time.
        let keys: Vec<Key> = self.tracks.keys().cloned().collect();
        for k in keys {
            let t = &self.tracks[&k];
            let normal = match t.due {
                Some((at, MessageKind::First)) if at > now => self
                    .incidents
                    .get(&k.0)
                    .map(|i| t.matched.first_due(i.opened_at, now)),
                Some((at, MessageKind::Update)) if at > now => t
                    .last_sent
                    .map(|l| (l + t.matched.timing.group_interval).max(now)),
                _ => None,
            };
            if let (Some(n), Some((_, kind))) = (normal, t.due) {
                self.set_due(&k, Some((n, kind)));
            }
        }
        Some(s)
    }

    pub fn silences(&self) -> impl Iterator<Item = &Silence> {
        self.silences.iter().map(|(s, _)| s)
    }

    /// Drops silences that expired before `cutoff`.
    pub fn forget_silences_before(&mut self, cutoff: Timestamp) {
        self.silences.retain(|(s, _)| s.ends_at >= cutoff);
    }
}
