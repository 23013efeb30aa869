//! The dispatcher: drains the outbox into the channels.
//!
//! Retries, backoff with jitter, per-channel rate limits, digests and the
//! circuit breaker are written once here. Time comes in as `now` for each
//! [`Dispatcher::step`], so `serve` drives it from the wall clock and tests
//! run a ten-minute outage on a virtual clock without sleeping.
//!
//! Ordering: a channel sends an incident's messages in the order they were
//! planned; a message waiting for a retry holds back later messages about
//! the same incident on that channel (other incidents go ahead).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rand::Rng;

use super::notifier::{http_client, Digest, Links, Message, Notifier, SendResult};
use super::outbox::{EntryState, Outbox, OutboxEntry};
use super::{dingtalk, email, slack, webhook, Notification, NotificationStatus, ReceiverConfig};
use crate::domain::{Incident, Timestamp};
use crate::store::StoreError;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub receiver: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabel {
    pub receiver: String,
    pub reason: String,
}

/// Notification metrics.
#[derive(Clone, Debug, Default)]
pub struct NotifyMetrics {
    pub messages: Family<OutcomeLabel, Counter>,
    pub outbox_depth: Gauge,
    pub failures: Family<FailureLabel, Counter>,
}

impl NotifyMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = NotifyMetrics::default();
        registry.register(
            "stormcast_notify_messages",
            "Messages by receiver and outcome (delivered, retry, failed, digested)",
            m.messages.clone(),
        );
        registry.register(
            "stormcast_notify_outbox_depth",
            "Messages pending or failed in the outbox",
            m.outbox_depth.clone(),
        );
        registry.register(
            "stormcast_notify_failures",
            "Failed send attempts by receiver and reason",
            m.failures.clone(),
        );
        m
    }
}

/// Retry and breaker tuning.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// Consecutive failures that open a channel's circuit.
    pub breaker_threshold: u32,
    /// How long an open circuit stays open before one probe.
    pub breaker_open: Duration,
    /// Ready messages that make a digest channel merge its backlog.
    pub digest_backlog: usize,
    /// Most messages in one digest.
    pub digest_max: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(300),
            breaker_threshold: 5,
            breaker_open: Duration::from_secs(60),
            digest_backlog: 4,
            digest_max: 10,
        }
    }
}

struct Channel {
    name: String,
    receiver: String,
    notifier: Arc<dyn Notifier>,
}

#[derive(Default, Debug)]
struct ChannelState {
    attempts: VecDeque<Timestamp>,
    consecutive_failures: u32,
    open_until: Option<Timestamp>,
}

/// What one [`Dispatcher::step`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StepReport {
    /// Requests made (a digest counts once, each part of a split message once).
    pub attempts: usize,
    /// Messages accepted (each message of a digest counts).
    pub delivered: usize,
    pub retried: usize,
    pub failed: usize,
}

/// Drains the outbox.
pub struct Dispatcher {
    outbox: Outbox,
    channels: HashMap<String, Vec<Channel>>,
    state: Mutex<HashMap<String, ChannelState>>,
    policy: RetryPolicy,
    metrics: NotifyMetrics,
    external_url: Option<String>,
}

/// A channel as the dispatcher takes it: `(receiver, channel name, notifier)`.
pub type ChannelSpec = (String, String, Arc<dyn Notifier>);

/// Builds the channels of every receiver. Configs are validated already;
/// a channel that still cannot be built (TLS setup) is reported.
pub fn build_channels(receivers: &[ReceiverConfig]) -> Result<Vec<ChannelSpec>, String> {
    let client = http_client();
    let mut out: Vec<ChannelSpec> = Vec::new();
    for r in receivers {
        for (i, c) in r.email_configs.iter().enumerate() {
            let n = email::Email::new(c.clone())
                .map_err(|e| format!("receiver {} email[{i}]: {e}", r.name))?;
            out.push((
                r.name.clone(),
                format!("{}/email[{i}]", r.name),
                Arc::new(n),
            ));
        }
        for (i, c) in r.slack_configs.iter().enumerate() {
            let n = slack::Slack::new(c.clone(), client.clone());
            out.push((
                r.name.clone(),
                format!("{}/slack[{i}]", r.name),
                Arc::new(n),
            ));
        }
        for (i, c) in r.dingtalk_configs.iter().enumerate() {
            let name = format!("{}/dingtalk[{i}]", r.name);
            let n = dingtalk::Dingtalk::new(name.clone(), c.clone(), client.clone());
            out.push((r.name.clone(), name, Arc::new(n)));
        }
        for (i, c) in r.webhook_configs.iter().enumerate() {
            let n = webhook::Webhook::new(c.clone(), client.clone());
            out.push((
                r.name.clone(),
                format!("{}/webhook[{i}]", r.name),
                Arc::new(n),
            ));
        }
    }
    Ok(out)
}

fn to_std(d: chrono::Duration) -> Duration {
    d.to_std().unwrap_or_default()
}

fn chrono_of(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Dispatcher {
    /// `channels` are `(receiver, channel name, notifier)`.
    pub fn new(
        outbox: Outbox,
        channels: Vec<ChannelSpec>,
        policy: RetryPolicy,
        metrics: NotifyMetrics,
        external_url: Option<String>,
    ) -> Self {
        let mut map: HashMap<String, Vec<Channel>> = HashMap::new();
        for (receiver, name, notifier) in channels {
            map.entry(receiver.clone()).or_default().push(Channel {
                name,
                receiver,
                notifier,
            });
        }
        let d = Dispatcher {
            outbox,
            channels: map,
            state: Mutex::new(HashMap::new()),
            policy,
            metrics,
            external_url,
        };
        d.metrics.outbox_depth.set(d.outbox.depth() as i64);
        d
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Persists planned notifications, one entry per channel of their
    /// receiver, before anything is sent. `lookup` gives the incident and its
    /// links at planning time.
    pub fn enqueue(
        &self,
        planned: &[Notification],
        now: Timestamp,
        lookup: impl Fn(&str) -> Option<(Incident, Links)>,
    ) -> Result<usize, StoreError> {
        let mut entries = Vec::new();
        for n in planned {
            let Some(chans) = self.channels.get(&n.receiver) else {
                tracing::debug!(receiver = %n.receiver, incident = %n.incident, "Receiver has no channels; nothing to send");
                continue;
            };
            let Some((incident, mut links)) = lookup(&n.incident) else {
                tracing::warn!(incident = %n.incident, "Planned message for an unknown incident; skipped");
                continue;
            };
            if links.incident_url.is_none() {
                if let Some(base) = &self.external_url {
                    links.incident_url = Some(format!(
                        "{}/incidents/{}",
                        base.trim_end_matches('/'),
                        n.incident
                    ));
                }
            }
            for c in chans {
                if n.status == NotificationStatus::Resolved && !c.notifier.send_resolved() {
                    continue;
                }
                entries.push(OutboxEntry::pending(
                    &n.key,
                    &c.name,
                    Message {
                        notification: n.clone(),
                        incident: incident.clone(),
                        links: links.clone(),
                        digest: None,
                    },
                    now,
                ));
            }
        }
        let n = self.outbox.push(entries)?;
        self.metrics.outbox_depth.set(self.outbox.depth() as i64);
        Ok(n)
    }

    /// Persists one digest message for every channel of `receiver`, keyed
    /// `id/receiver/0/channel` so a digest slot is queued at most once.
    /// Returns how many entries were added (0 when the receiver has no
    /// channels or the digest was queued already).
    pub fn enqueue_digest(
        &self,
        id: &str,
        receiver: &str,
        digest: Digest,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        let Some(chans) = self.channels.get(receiver) else {
            tracing::debug!(%receiver, "Digest receiver has no channels; nothing to send");
            return Ok(0);
        };
        let n = Notification {
            at: now,
            incident: id.to_owned(),
            receiver: receiver.to_owned(),
            status: NotificationStatus::Firing,
            kind: super::MessageKind::Digest,
            seq: 0,
            key: format!("{id}/{receiver}/0"),
        };
        let links = Links {
            incident_url: digest.report_url.clone(),
            ..Links::default()
        };
        let incident = Digest::placeholder_incident(id, now);
        let entries = chans
            .iter()
            .map(|c| {
                OutboxEntry::pending(
                    &n.key,
                    &c.name,
                    Message {
                        notification: n.clone(),
                        incident: incident.clone(),
                        links: links.clone(),
                        digest: Some(digest.clone()),
                    },
                    now,
                )
            })
            .collect();
        let added = self.outbox.push(entries)?;
        self.metrics.outbox_depth.set(self.outbox.depth() as i64);
        Ok(added)
    }

    fn channel(&self, name: &str) -> Option<&Channel> {
        self.channels.values().flatten().find(|c| c.name == name)
    }

    /// Sends everything due at `now` that the rate limits allow.
    pub async fn step(&self, now: Timestamp) -> Result<StepReport, StoreError> {
        let entries = self.outbox.entries()?;
        let mut by_channel: HashMap<String, Vec<OutboxEntry>> = HashMap::new();
        for e in entries {
            if e.state == EntryState::Pending {
                by_channel.entry(e.channel.clone()).or_default().push(e);
            }
        }
        let mut work = Vec::new();
        for (name, list) in by_channel {
            let Some(chan) = self.channel(&name) else {
                continue; // receiver removed from the config; kept for the API
            };
            work.push(self.run_channel(chan, list, now));
        }
        let mut report = StepReport::default();
        for r in futures::future::join_all(work).await {
            let r = r?;
            report.attempts += r.attempts;
            report.delivered += r.delivered;
            report.retried += r.retried;
            report.failed += r.failed;
        }
        self.metrics.outbox_depth.set(self.outbox.depth() as i64);
        Ok(report)
    }

    /// Capacity left in the channel's rate window, or 0 while its circuit is open.
    fn capacity(&self, chan: &Channel, now: Timestamp) -> usize {
        let mut st = self.state.lock().expect("dispatch state");
        let s = st.entry(chan.name.clone()).or_default();
        let limit = chan.notifier.rate_limit();
        let window = chrono_of(limit.window);
        while s.attempts.front().is_some_and(|t| *t + window <= now) {
            s.attempts.pop_front();
        }
        if let Some(until) = s.open_until {
            if now < until {
                return 0;
            }
            // Half-open: one probe.
            return usize::from(s.attempts.len() < limit.max as usize);
        }
        (limit.max as usize).saturating_sub(s.attempts.len())
    }

    fn note_attempt(&self, chan: &Channel, now: Timestamp) {
        let mut st = self.state.lock().expect("dispatch state");
        st.entry(chan.name.clone())
            .or_default()
            .attempts
            .push_back(now);
    }

    async fn run_channel(
        &self,
        chan: &Channel,
        list: Vec<OutboxEntry>,
        now: Timestamp,
    ) -> Result<StepReport, StoreError> {
        let mut report = StepReport::default();
        // Per-incident order: once one message of an incident is not ready,
        // later ones wait.
        let mut blocked: HashSet<String> = HashSet::new();
        let mut ready = Vec::new();
        for e in list {
            let inc = e.message.notification.incident.clone();
            if blocked.contains(&inc) {
                continue;
            }
            if e.next_attempt > now {
                blocked.insert(inc);
                continue;
            }
            ready.push(e);
        }
        if ready.is_empty() {
            return Ok(report);
        }
        // A message whose first parts went out finishes before anything else,
        // so its parts stay together on the channel.
        ready.sort_by_key(|e| e.parts_sent == 0);
        let mut cap = self.capacity(chan, now);
        let digest = chan.notifier.digest()
            && (ready.len() >= self.policy.digest_backlog || ready.len() > cap);
        let mut queue: VecDeque<OutboxEntry> = ready.into();
        while cap > 0 && !queue.is_empty() {
            let mut take = if digest {
                // Only fresh messages merge; a half-sent one finishes alone.
                queue
                    .iter()
                    .take(self.policy.digest_max)
                    .take_while(|e| e.parts_sent == 0)
                    .count()
                    .max(1)
            } else {
                1
            };
            let mut msgs: Vec<Message> =
                queue.iter().take(take).map(|e| e.message.clone()).collect();
            let mut parts = chan.notifier.parts(&msgs);
            // A digest saves requests only if it fits in one: merge fewer.
            while take > 1 && parts > 1 {
                take -= 1;
                msgs.truncate(take);
                parts = chan.notifier.parts(&msgs);
            }
            let mut batch: Vec<OutboxEntry> = queue.drain(..take).collect();
            let mut done = batch[0].parts_sent.min(parts.saturating_sub(1));
            let result = loop {
                self.note_attempt(chan, now);
                report.attempts += 1;
                cap -= 1;
                let r = chan.notifier.send_part(&msgs, done).await;
                if r != SendResult::Delivered {
                    break r;
                }
                done += 1;
                if done >= parts {
                    break r;
                }
                // Record each accepted part, so a restart resends at most one.
                for e in &mut batch {
                    e.parts_sent = done;
                    self.outbox.update(e)?;
                }
                if cap == 0 {
                    break r;
                }
            };
            for e in &mut batch {
                e.parts_sent = done;
            }
            if result == SendResult::Delivered && done < parts {
                tracing::info!(channel = %chan.name, part = done, parts, incident = %batch[0].message.notification.incident, "Split message paused by the rate limit");
                break;
            }
            match result {
                SendResult::Delivered => {
                    for e in &batch {
                        self.outbox.delivered(e, now)?;
                    }
                    report.delivered += batch.len();
                    let outcome = if batch.len() > 1 {
                        "digested"
                    } else {
                        "delivered"
                    };
                    self.metrics
                        .messages
                        .get_or_create(&OutcomeLabel {
                            receiver: chan.receiver.clone(),
                            outcome: outcome.to_owned(),
                        })
                        .inc_by(batch.len() as u64);
                    let mut st = self.state.lock().expect("dispatch state");
                    let s = st.entry(chan.name.clone()).or_default();
                    s.consecutive_failures = 0;
                    s.open_until = None;
                    tracing::info!(channel = %chan.name, messages = batch.len(), incident = %batch[0].message.notification.incident, "Notification delivered");
                }
                SendResult::Retryable {
                    after,
                    reason,
                    detail,
                } => {
                    self.metrics
                        .failures
                        .get_or_create(&FailureLabel {
                            receiver: chan.receiver.clone(),
                            reason: reason.to_owned(),
                        })
                        .inc();
                    let opened = {
                        let mut st = self.state.lock().expect("dispatch state");
                        let s = st.entry(chan.name.clone()).or_default();
                        s.consecutive_failures += 1;
                        if s.consecutive_failures >= self.policy.breaker_threshold {
                            s.open_until = Some(now + chrono_of(self.policy.breaker_open));
                            true
                        } else {
                            false
                        }
                    };
                    for mut e in batch {
                        e.attempts += 1;
                        let backoff = self.backoff(e.attempts);
                        let delay = after.map_or(backoff, |a| a.max(Duration::from_millis(500)));
                        e.next_attempt = now + chrono_of(delay);
                        e.last_error = Some(detail.clone());
                        e.last_reason = Some(reason.to_owned());
                        self.outbox.update(&e)?;
                        report.retried += 1;
                        self.metrics
                            .messages
                            .get_or_create(&OutcomeLabel {
                                receiver: chan.receiver.clone(),
                                outcome: "retry".to_owned(),
                            })
                            .inc();
                    }
                    tracing::warn!(channel = %chan.name, reason, error = %detail, breaker_open = opened, "Notification failed; will retry");
                    // Keep order: nothing else goes out on this channel this step.
                    break;
                }
                SendResult::Permanent { reason, detail } => {
                    self.metrics
                        .failures
                        .get_or_create(&FailureLabel {
                            receiver: chan.receiver.clone(),
                            reason: reason.to_owned(),
                        })
                        .inc();
                    for mut e in batch {
                        e.attempts += 1;
                        e.state = EntryState::Failed;
                        e.last_error = Some(detail.clone());
                        e.last_reason = Some(reason.to_owned());
                        self.outbox.update(&e)?;
                        report.failed += 1;
                        self.metrics
                            .messages
                            .get_or_create(&OutcomeLabel {
                                receiver: chan.receiver.clone(),
                                outcome: "failed".to_owned(),
                            })
                            .inc();
                    }
                    tracing::error!(channel = %chan.name, reason, error = %detail, "Notification failed permanently; fix the receiver configuration");
                }
            }
        }
        Ok(report)
    }

    /// Exponential backoff with ±20% jitter.
    fn backoff(&self, attempts: u32) -> Duration {
        let base = self.policy.initial.as_secs_f64()
            * 2f64.powi(attempts.saturating_sub(1).min(20) as i32);
        let capped = base.min(self.policy.max.as_secs_f64());
        let jitter = rand::thread_rng().gen_range(0.8..1.2);
        Duration::from_secs_f64(capped * jitter)
    }

    /// Sends what is due on one channel only (`serve` runs one loop per
    /// channel, so a hanging service never delays the others).
    pub async fn step_channel(&self, name: &str, now: Timestamp) -> Result<StepReport, StoreError> {
        let Some(chan) = self.channel(name) else {
            return Ok(StepReport::default());
        };
        let list: Vec<OutboxEntry> = self
            .outbox
            .entries()?
            .into_iter()
            .filter(|e| e.state == EntryState::Pending && e.channel == name)
            .collect();
        let r = self.run_channel(chan, list, now).await?;
        self.metrics.outbox_depth.set(self.outbox.depth() as i64);
        Ok(r)
    }

    /// The earliest time a pending entry of `channel` is due.
    fn next_due_for(&self, channel: &str) -> Option<Timestamp> {
        self.outbox
            .entries()
            .ok()?
            .into_iter()
            .filter(|e| e.state == EntryState::Pending && e.channel == channel)
            .map(|e| e.next_attempt)
            .min()
    }

    /// Runs one loop per channel until `stop` flips; each steps at its next
    /// due time (at least every second) or when `wake` is notified.
    pub async fn run(
        self: Arc<Self>,
        clock: Arc<dyn crate::engine::Clock>,
        wake: Arc<tokio::sync::Notify>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let names: Vec<String> = self
            .channels
            .values()
            .flatten()
            .map(|c| c.name.clone())
            .collect();
        let mut tasks = Vec::new();
        for name in names {
            let d = self.clone();
            let clock = clock.clone();
            let wake = wake.clone();
            let mut stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let max_sleep = Duration::from_secs(1);
                loop {
                    if *stop.borrow() {
                        break;
                    }
                    if let Err(e) = d.step_channel(&name, clock.now()).await {
                        tracing::error!(channel = %name, error = %e, "Outbox step failed");
                    }
                    let sleep = d
                        .next_due_for(&name)
                        .map(|t| to_std(t - clock.now()))
                        .unwrap_or(max_sleep)
                        .min(max_sleep);
                    tokio::select! {
                        _ = tokio::time::sleep(sleep) => {}
                        _ = wake.notified() => {}
                        _ = stop.changed() => {}
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}
