//! The scheduled forecast digest: on a fixed schedule, the latest report's
//! most urgent at-risk resources go to one receiver as a short message,
//! through the same durable outbox, retries and rate limits as incident
//! messages.
//!
//! ```yaml
//! report_digest:
//!   every: 24h            # the schedule's period
//!   at: "08:30"           # time of day the schedule is anchored to (default 00:00)
//!   location: Asia/Shanghai   # time zone of `at` (default UTC)
//!   receiver: capacity-team   # a configured receiver
//!   max_items: 10
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::report::{fmt_lead, fmt_num, Report};
use crate::config::{ConfigErrors, PromDuration};
use crate::engine::Engine;
use crate::notify::dispatch::Dispatcher;
use crate::notify::notifier::{Digest, DigestItem};
use crate::store::Store;

/// `report_digest:` in the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DigestConfig {
    /// Period of the schedule (at least 1m).
    pub every: PromDuration,
    /// Time of day (`HH:MM` or `HH:MM:SS`) the schedule is anchored to; slots are
    /// `at + k × every` counted from a Monday, in `location`.
    pub at: Option<String>,
    /// IANA time zone of `at`, e.g. `Europe/Berlin`. Default UTC.
    pub location: Option<String>,
    /// The receiver (from `receivers`) the digest goes to.
    pub receiver: String,
    /// At most this many resources are listed (1–100).
    pub max_items: usize,
}

impl Default for DigestConfig {
    fn default() -> Self {
        DigestConfig {
            every: PromDuration::hours(24),
            at: None,
            location: None,
            receiver: String::new(),
            max_items: 10,
        }
    }
}

fn parse_at(s: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(s.trim(), "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(s.trim(), "%H:%M:%S"))
        .ok()
}

impl DigestConfig {
    /// Checks the schedule and that `receiver` is one of `receivers`.
    pub fn validate(&self, path: &str, receivers: &[&str], errs: &mut ConfigErrors) {
        if self.every.as_std() < Duration::from_secs(60) {
            errs.push(format!("{path}.every"), "must be at least 1m");
        }
        if let Some(at) = &self.at {
            if parse_at(at).is_none() {
                errs.push(
                    format!("{path}.at"),
                    format!("{at:?} is not a time of day (HH:MM or HH:MM:SS)"),
                );
            }
        }
        if let Some(loc) = &self.location {
            if loc.parse::<chrono_tz::Tz>().is_err() {
                errs.push(
                    format!("{path}.location"),
                    format!("unknown time zone {loc:?}"),
                );
            }
        }
        if self.receiver.is_empty() {
            errs.push(format!("{path}.receiver"), "required");
        } else if !receivers.contains(&self.receiver.as_str()) {
            errs.push(
                format!("{path}.receiver"),
                format!("unknown receiver {:?}", self.receiver),
            );
        }
        if !(1..=100).contains(&self.max_items) {
            errs.push(format!("{path}.max_items"), "must be between 1 and 100");
        }
    }
}

/// The digest schedule: slots `anchor + k × every` in local time.
#[derive(Debug, Clone)]
pub struct Schedule {
    every: chrono::Duration,
    anchor: NaiveDateTime,
    tz: chrono_tz::Tz,
}

impl Schedule {
    /// From a validated config (invalid parts fall back to the defaults).
    pub fn new(cfg: &DigestConfig) -> Self {
        let at = cfg
            .at
            .as_deref()
            .and_then(parse_at)
            .unwrap_or(NaiveTime::MIN);
        // 1970-01-05 is a Monday, so weekly digests land on Mondays.
        let day = NaiveDate::from_ymd_opt(1970, 1, 5).expect("valid date");
        Schedule {
            every: cfg.every.as_chrono().max(chrono::Duration::minutes(1)),
            anchor: day.and_time(at),
            tz: cfg
                .location
                .as_deref()
                .and_then(|l| l.parse().ok())
                .unwrap_or(chrono_tz::UTC),
        }
    }

    fn to_utc(&self, local: NaiveDateTime) -> DateTime<Utc> {
        match self.tz.from_local_datetime(&local) {
            chrono::LocalResult::Single(t) => t.with_timezone(&Utc),
            chrono::LocalResult::Ambiguous(a, _) => a.with_timezone(&Utc),
            // Skipped by a DST change: the same wall time an hour later.
            chrono::LocalResult::None => self.to_utc(local + chrono::Duration::hours(1)),
        }
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        let local = t.with_timezone(&self.tz).naive_local();
        let every = self.every.num_seconds().max(60);
        let since = (local - self.anchor).num_seconds();
        let mut k = since.div_euclid(every);
        loop {
            let slot = self.to_utc(self.anchor + chrono::Duration::seconds(k * every));
            if slot > t {
                return slot;
            }
            k += 1;
        }
    }
}

/// Summarises `report`: its `max_items` soonest exhaustions.
pub fn build_digest(report: &Report, max_items: usize, report_url: Option<String>) -> Digest {
    let mut at_risk: Vec<_> = report.at_risk().collect();
    at_risk.sort_by_key(|s| s.lead_secs().unwrap_or(i64::MAX));
    let items: Vec<DigestItem> = at_risk
        .iter()
        .take(max_items)
        .filter_map(|s| {
            let f = s.forecast.as_ref()?;
            Some(DigestItem {
                name: s.name.clone(),
                model: s.model.clone(),
                cluster: s.labels.get("cluster").cloned(),
                exhaustion_at: f.exhaustion_at?,
                lead: fmt_lead(s.lead_secs()?),
                confidence: f.confidence,
                current: fmt_num(f.current),
                capacity: fmt_num(f.capacity),
                utilisation_pct: if f.utilisation().is_finite() {
                    f.utilisation() * 100.0
                } else {
                    0.0
                },
            })
        })
        .collect();
    let title = match at_risk.len() {
        0 => "stormcast forecast: no resource at risk".to_owned(),
        1 => "stormcast forecast: 1 resource at risk".to_owned(),
        n => format!("stormcast forecast: {n} resources at risk"),
    };
    Digest {
        title,
        report_at: report.generated_at,
        at_risk: at_risk.len(),
        report_url,
        items,
    }
}

/// The digest's schedule and content settings; [`tick`](Self::tick) is pure
/// in time, so tests drive it with a virtual clock.
#[derive(Debug, Clone)]
pub struct DigestTask {
    cfg: DigestConfig,
    schedule: Schedule,
    report_url: Option<String>,
    next: DateTime<Utc>,
}

impl DigestTask {
    /// The first digest goes out at the first slot after `now`.
    pub fn new(cfg: DigestConfig, external_url: Option<&str>, now: DateTime<Utc>) -> Self {
        let schedule = Schedule::new(&cfg);
        let next = schedule.next_after(now);
        DigestTask {
            report_url: external_url.map(|u| format!("{}/api/v1/report", u.trim_end_matches('/'))),
            cfg,
            schedule,
            next,
        }
    }

    /// When the next digest is due.
    pub fn next_deadline(&self) -> DateTime<Utc> {
        self.next
    }

    pub fn receiver(&self) -> &str {
        &self.cfg.receiver
    }

    /// When a slot is due at `now`: moves to the next slot and returns the
    /// due slot's id (`digest-YYYYMMDDTHHMMZ`) and digest, or `None` for the
    /// digest when no report exists yet (that slot is skipped). Slots missed
    /// while stopped are not sent late.
    pub fn tick(
        &mut self,
        now: DateTime<Utc>,
        report: impl FnOnce() -> Option<Report>,
    ) -> Option<(String, Option<Digest>)> {
        if now < self.next {
            return None;
        }
        let slot = self.next;
        self.next = self.schedule.next_after(now);
        let id = format!("digest-{}", slot.format("%Y%m%dT%H%MZ"));
        let digest =
            report().map(|r| build_digest(&r, self.cfg.max_items, self.report_url.clone()));
        Some((id, digest))
    }

    /// One step: sends the due digest, if any, through `dispatcher`.
    /// Returns how many outbox entries were added.
    pub fn step(&mut self, now: DateTime<Utc>, store: &Store, dispatcher: &Dispatcher) -> usize {
        let Some((id, digest)) = self.tick(now, || super::service::latest_report(store)) else {
            return 0;
        };
        let Some(digest) = digest else {
            tracing::debug!(slot = %id, "No forecast report yet; digest skipped");
            return 0;
        };
        match dispatcher.enqueue_digest(&id, &self.cfg.receiver, digest, now) {
            Ok(n) => {
                tracing::info!(slot = %id, receiver = %self.cfg.receiver, entries = n, "Forecast digest queued");
                n
            }
            Err(e) => {
                tracing::error!(error = %e, "Cannot persist the forecast digest in the outbox");
                0
            }
        }
    }
}

/// The digest loop in `serve`: time comes from the engine's clock; the task
/// wakes at least every minute to follow it.
pub async fn run(
    mut task: DigestTask,
    engine: Arc<Mutex<Engine>>,
    store: Store,
    dispatcher: Arc<Dispatcher>,
    wake: Arc<tokio::sync::Notify>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    tracing::info!(receiver = %task.receiver(), next = %task.next_deadline(), "Forecast digest scheduled");
    loop {
        let now = engine.lock().expect("engine lock").now();
        let (store2, d2) = (store.clone(), dispatcher.clone());
        let (t, added) = tokio::task::spawn_blocking(move || {
            let n = task.step(now, &store2, &d2);
            (task, n)
        })
        .await
        .expect("digest step");
        task = t;
        if added > 0 {
            wake.notify_waiters();
        }
        let now = engine.lock().expect("engine lock").now();
        let wait = (task.next_deadline() - now)
            .to_std()
            .unwrap_or_default()
            .clamp(Duration::from_millis(200), Duration::from_secs(60));
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
