//! The durable outbox: every message is written (and flushed) to sled before
//! any send attempt, and removed only after the channel accepted it. After a
//! crash the dispatcher finds what was pending and sends it again, so delivery
//! is at least once; the idempotency key (`incident/receiver/seq/channel`)
//! travels with the message (webhook `Idempotency-Key`, email Message-ID) so
//! receivers can drop a duplicate.
//!
//! Trees: `outbox` (pending and failed, keyed by a monotonic id so iteration
//! is enqueue order) and `outbox_sent` (recently delivered keys, for
//! idempotency at enqueue time and the API).

use serde::{Deserialize, Serialize};

use super::notifier::Message;
use crate::domain::Timestamp;
use crate::store::{Store, StoreError};

/// Where an entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryState {
    /// Waiting for its first attempt or a retry.
    Pending,
    /// A non-retryable failure; kept for operators to see, never sent again.
    Failed,
    /// Accepted by the channel.
    Delivered,
}

/// One message for one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub id: u64,
    /// Idempotency key.
    pub key: String,
    /// `receiver/type[index]`, e.g. `oncall/dingtalk[0]`.
    pub channel: String,
    pub state: EntryState,
    pub attempts: u32,
    pub created_at: Timestamp,
    pub next_attempt: Timestamp,
    #[serde(default)]
    pub delivered_at: Option<Timestamp>,
    /// Last failure, already free of secrets.
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub last_reason: Option<String>,
    /// Parts of a split message the channel already accepted: a retry or a
    /// restart resumes after them.
    #[serde(default)]
    pub parts_sent: u32,
    pub message: Message,
}

impl OutboxEntry {
    /// A new entry for `channel`, due now; the outbox assigns its id on push.
    pub fn pending(key_base: &str, channel: &str, message: Message, now: Timestamp) -> Self {
        OutboxEntry {
            id: 0,
            key: format!("{key_base}/{channel}"),
            channel: channel.to_owned(),
            state: EntryState::Pending,
            attempts: 0,
            created_at: now,
            next_attempt: now,
            delivered_at: None,
            last_error: None,
            last_reason: None,
            parts_sent: 0,
            message,
        }
    }
}

/// How many delivered entries are kept for the API and duplicate checks.
pub const KEEP_DELIVERED: usize = 10_000;

#[derive(Clone, Debug)]
pub struct Outbox {
    db: sled::Db,
    pending: sled::Tree,
    sent: sled::Tree,
    keys: sled::Tree,
}

fn corrupt(reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        tree: "outbox",
        reason: reason.to_string(),
    }
}

impl Outbox {
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        Ok(Outbox {
            db: store.db().clone(),
            pending: store.tree("outbox")?,
            sent: store.tree("outbox_sent")?,
            keys: store.tree("outbox_keys")?,
        })
    }

    /// Persists new entries (skipping keys already queued or delivered) and
    /// flushes to disk before returning. Returns how many were added.
    pub fn push(&self, entries: Vec<OutboxEntry>) -> Result<usize, StoreError> {
        let mut n = 0;
        for mut e in entries {
            if self.sent.contains_key(e.key.as_bytes())?
                || self.keys.contains_key(e.key.as_bytes())?
            {
                continue;
            }
            e.id = self.db.generate_id()?;
            let v = serde_json::to_vec(&e).map_err(corrupt)?;
            self.keys.insert(e.key.as_bytes(), &e.id.to_be_bytes())?;
            self.pending.insert(e.id.to_be_bytes(), v)?;
            n += 1;
        }
        if n > 0 {
            self.keys.flush()?;
            self.pending.flush()?;
        }
        Ok(n)
    }

    /// Pending and failed entries, in enqueue order.
    pub fn entries(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        self.pending
            .iter()
            .values()
            .map(|v| {
                let v = v?;
                serde_json::from_slice(&v).map_err(corrupt)
            })
            .collect()
    }

    pub fn depth(&self) -> usize {
        self.pending.len()
    }

    /// Rewrites an entry after a failed attempt.
    pub fn update(&self, e: &OutboxEntry) -> Result<(), StoreError> {
        let v = serde_json::to_vec(e).map_err(corrupt)?;
        self.pending.insert(e.id.to_be_bytes(), v)?;
        Ok(())
    }

    /// Moves an entry to the delivered log.
    pub fn delivered(&self, e: &OutboxEntry, now: Timestamp) -> Result<(), StoreError> {
        let mut d = e.clone();
        d.state = EntryState::Delivered;
        d.delivered_at = Some(now);
        let v = serde_json::to_vec(&d).map_err(corrupt)?;
        self.sent.insert(d.key.as_bytes(), v)?;
        self.pending.remove(e.id.to_be_bytes())?;
        self.keys.remove(e.key.as_bytes())?;
        if self.sent.len() > KEEP_DELIVERED + KEEP_DELIVERED / 10 {
            self.prune_sent()?;
        }
        Ok(())
    }

    fn prune_sent(&self) -> Result<(), StoreError> {
        let mut all: Vec<(sled::IVec, u64)> = Vec::new();
        for kv in self.sent.iter() {
            let (k, v) = kv?;
            let e: OutboxEntry = serde_json::from_slice(&v).map_err(corrupt)?;
            all.push((k, e.id));
        }
        all.sort_by_key(|(_, id)| *id);
        let excess = all.len().saturating_sub(KEEP_DELIVERED);
        for (k, _) in all.into_iter().take(excess) {
            self.sent.remove(k)?;
        }
        Ok(())
    }

    /// Recently delivered entries, newest first.
    pub fn recent_delivered(&self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut v: Vec<OutboxEntry> = self
            .sent
            .iter()
            .values()
            .map(|v| serde_json::from_slice(&v?).map_err(corrupt))
            .collect::<Result<_, _>>()?;
        v.sort_by_key(|e| std::cmp::Reverse(e.id));
        v.truncate(limit);
        Ok(v)
    }

    /// The highest message `seq` queued or delivered for an incident and
    /// receiver (keys are `incident/receiver/seq/channel`).
    pub fn last_seq(&self, incident: &str, receiver: &str) -> Option<u32> {
        let prefix = format!("{incident}/{receiver}/");
        let seq_of = |k: &[u8]| {
            std::str::from_utf8(k)
                .ok()?
                .strip_prefix(&prefix)?
                .split('/')
                .next()?
                .parse::<u32>()
                .ok()
        };
        self.sent
            .scan_prefix(prefix.as_bytes())
            .keys()
            .chain(self.keys.scan_prefix(prefix.as_bytes()).keys())
            .filter_map(|k| k.ok())
            .filter_map(|k| seq_of(&k))
            .max()
    }

    /// Drops failed entries created before `cutoff` (they stay visible until then).
    pub fn prune_failed(&self, cutoff: Timestamp) -> Result<usize, StoreError> {
        let mut n = 0;
        for e in self.entries()? {
            if e.state == EntryState::Failed && e.created_at < cutoff {
                self.pending.remove(e.id.to_be_bytes())?;
                self.keys.remove(e.key.as_bytes())?;
                n += 1;
            }
        }
        Ok(n)
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        self.pending.flush()?;
        self.sent.flush()?;
        Ok(())
    }
}
