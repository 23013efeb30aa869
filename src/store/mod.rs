//! Durable state on sled: the append-only journal of raw deliveries, the current
//! state of every alert, incidents, and the trees later stages add (outbox,
//! silences). The schema is versioned and checked on open.
//!
//! Durability: sled only syncs every 500 ms on its own, so [`Store::append_journal`]
//! waits for a flush that covers its write before returning. Concurrent writers
//! share one flush (group commit), which is what makes durable ingest fast.

pub mod backup;
mod journal;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

pub use journal::JournalEntry;

use crate::config::{ConfigErrors, PromDuration};
use crate::domain::{AlertState, Fingerprint, Incident, Timestamp};

/// The on-disk layout version this build writes. Bump it with a migration in
/// [`migrate`] whenever a tree's key or value format changes.
pub const SCHEMA_VERSION: u32 = 1;

const SCHEMA_KEY: &[u8] = b"schema_version";
const APPLIED_KEY: &[u8] = b"journal_applied";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct StoreConfig {
    /// Folder of the sled database.
    pub path: PathBuf,
    /// How long resolved alerts and incidents are kept.
    pub retention: PromDuration,
    /// How long raw deliveries are kept in the journal.
    pub journal_retention: PromDuration,
    /// How often retention is enforced.
    pub compact_interval: PromDuration,
    /// sled page cache size in bytes.
    pub cache_capacity_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("data"),
            retention: PromDuration::hours(7 * 24),
            journal_retention: PromDuration::hours(3 * 24),
            compact_interval: PromDuration::mins(10),
            cache_capacity_bytes: 64 * 1024 * 1024,
        }
    }
}

impl StoreConfig {
    pub fn validate(&self, path: &str, errs: &mut ConfigErrors) {
        if self.path.as_os_str().is_empty() {
            errs.push(format!("{path}.path"), "required");
        }
        if self.retention.is_zero() {
            errs.push(format!("{path}.retention"), "must be greater than 0");
        }
        if self.journal_retention.is_zero() {
            errs.push(
                format!("{path}.journal_retention"),
                "must be greater than 0",
            );
        }
        if self.compact_interval.is_zero() {
            errs.push(format!("{path}.compact_interval"), "must be greater than 0");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O error: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt record in tree {tree}: {reason}")]
    Corrupt { tree: &'static str, reason: String },
    #[error("the store at {path} has schema version {found}, newer than this build's {SCHEMA_VERSION}; upgrade stormcast")]
    TooNew { path: String, found: u32 },
    #[error("store flusher stopped")]
    FlusherGone,
}

/// What retention removed in one pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Compacted {
    pub journal: usize,
    pub alerts: usize,
    pub incidents: usize,
}

type FlushWaiter = oneshot::Sender<Result<(), String>>;

/// The sled database and its trees. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    journal: sled::Tree,
    alerts: sled::Tree,
    incidents: sled::Tree,
    flush_tx: Option<mpsc::UnboundedSender<FlushWaiter>>,
    inflight: std::sync::Arc<std::sync::Mutex<Inflight>>,
    journal_count: std::sync::Arc<JournalCount>,
}

/// The number of journal entries, kept without scanning the tree (sled's `len`
/// reads every entry). The entries present at open are counted by the first
/// compaction pass, which walks them anyway; appends and removals since are
/// tracked as they happen.
#[derive(Debug, Default)]
struct JournalCount {
    /// The last sequence number present when the store was opened.
    last_at_open: u64,
    /// Entries up to `last_at_open` left after the first compaction pass.
    base: AtomicI64,
    counted: AtomicBool,
    /// Appends minus removals since open.
    delta: AtomicI64,
}

/// Journal entries written but not yet applied by the engine. The applied
/// watermark only moves past an entry once every earlier entry is applied, so
/// recovery never skips a delivery that was acknowledged.
#[derive(Debug, Default)]
struct Inflight {
    pending: std::collections::BTreeSet<u64>,
    max_done: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store, checks the schema version and runs migrations.
    pub fn open(cfg: &StoreConfig) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(&cfg.path)
            .cache_capacity(cfg.cache_capacity_bytes)
            .open()?;
        Self::from_db(db, &cfg.path)
    }

    /// An in-memory store that vanishes on drop (tests and tools).
    pub fn temporary() -> Result<Store, StoreError> {
        let db = sled::Config::new().temporary(true).open()?;
        Self::from_db(db, Path::new("<temporary>"))
    }

    fn from_db(db: sled::Db, path: &Path) -> Result<Store, StoreError> {
        let meta = db.open_tree("meta")?;
        let found = meta
            .get(SCHEMA_KEY)?
            .map(|v| decode_u32(&v, "meta"))
            .transpose()?;
        match found {
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError::TooNew {
                    path: path.display().to_string(),
                    found: v,
                })
            }
            Some(v) if v < SCHEMA_VERSION => migrate(&db, v)?,
            // A store with data but no schema key predates versioning (version 0).
            None if has_data(&db)? => migrate(&db, 0)?,
            Some(_) => {}
            None => {
                meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
            }
        }
        let flush_tx = tokio::runtime::Handle::try_current().ok().map(|h| {
            let (tx, rx) = mpsc::unbounded_channel();
            h.spawn(group_flusher(db.clone(), rx));
            tx
        });
        let journal = db.open_tree("journal")?;
        let last_at_open = match journal.last()? {
            Some((k, _)) => decode_u64(&k, "journal")?,
            None => 0,
        };
        Ok(Store {
            journal_count: std::sync::Arc::new(JournalCount {
                last_at_open,
                // An empty journal needs no counting pass.
                counted: AtomicBool::new(last_at_open == 0),
                ..Default::default()
            }),
            journal,
            alerts: db.open_tree("alerts")?,
            incidents: db.open_tree("incidents")?,
            meta,
            db,
            flush_tx,
            inflight: Default::default(),
        })
    }

    pub fn schema_version(&self) -> Result<u32, StoreError> {
        self.meta
            .get(SCHEMA_KEY)?
            .map_or(Ok(SCHEMA_VERSION), |v| decode_u32(&v, "meta"))
    }

    /// Opens a named tree for a later stage (outbox, silences).
    pub fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(name)?)
    }

    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Appends a raw delivery and returns once it is on disk. Returns the
    /// journal sequence number and how long the durable write took.
    pub async fn append_journal(
        &self,
        entry: &JournalEntry,
    ) -> Result<(u64, std::time::Duration), StoreError> {
        let started = Instant::now();
        let seq = {
            let mut inflight = self.inflight.lock().expect("inflight lock");
            // Sequence numbers start at 1 so that 0 can mean "nothing applied".
            let seq = self.db.generate_id()? + 1;
            inflight.pending.insert(seq);
            seq
        };
        let written = self.journal.insert(seq.to_be_bytes(), entry.encode());
        if matches!(written, Ok(None)) {
            self.journal_count.delta.fetch_add(1, Ordering::Relaxed);
        }
        let result = match written {
            Ok(_) => self.durable().await,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = result {
            // The sender gets a 5xx and retries; the entry may or may not survive,
            // and applying it twice is harmless.
            self.inflight
                .lock()
                .expect("inflight lock")
                .pending
                .remove(&seq);
            return Err(e);
        }
        Ok((seq, started.elapsed()))
    }

    /// Records that the engine applied journal entry `seq`. Nothing is written:
    /// the applied watermark moves on disk at the engine's next checkpoint,
    /// together with the state that reflects the entry
    /// ([`applied_watermark`](Self::applied_watermark)).
    pub fn mark_applied(&self, seq: u64) {
        let mut inflight = self.inflight.lock().expect("inflight lock");
        inflight.pending.remove(&seq);
        inflight.max_done = inflight.max_done.max(seq);
    }

    /// The highest sequence number such that it and every earlier entry were
    /// marked applied in this process, or `None` before the first mark.
    pub fn applied_watermark(&self) -> Option<u64> {
        let inflight = self.inflight.lock().expect("inflight lock");
        let w = match inflight.pending.first() {
            Some(p) => p.saturating_sub(1).min(inflight.max_done),
            None => inflight.max_done,
        };
        (w > 0).then_some(w)
    }

    /// Waits until everything written before this call is on disk.
    pub async fn durable(&self) -> Result<(), StoreError> {
        match &self.flush_tx {
            Some(tx) => {
                let (done_tx, done_rx) = oneshot::channel();
                tx.send(done_tx).map_err(|_| StoreError::FlusherGone)?;
                done_rx
                    .await
                    .map_err(|_| StoreError::FlusherGone)?
                    .map_err(|e| StoreError::Sled(sled::Error::Io(std::io::Error::other(e))))
            }
            None => {
                self.db.flush()?;
                Ok(())
            }
        }
    }

    /// Blocking flush, for shutdown and CLI tools.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Journal entries with a sequence number above `after`, in order.
    pub fn journal_after(
        &self,
        after: u64,
    ) -> impl Iterator<Item = Result<(u64, JournalEntry), StoreError>> + '_ {
        let start = after.saturating_add(1).to_be_bytes();
        self.journal.range(start..).map(|r| {
            let (k, v) = r?;
            let seq = decode_u64(&k, "journal")?;
            let entry = JournalEntry::decode(&v).map_err(|reason| StoreError::Corrupt {
                tree: "journal",
                reason: format!("entry {seq}: {reason}"),
            })?;
            Ok((seq, entry))
        })
    }

    /// The highest journal sequence number written, or 0.
    pub fn journal_last_seq(&self) -> Result<u64, StoreError> {
        match self.journal.last()? {
            Some((k, _)) => decode_u64(&k, "journal"),
            None => Ok(0),
        }
    }

    /// Writes journal entries received in `[since, until)` as `replay` input
    /// lines (`{"at", "payload", "source"}`), oldest first. Returns the count.
    pub fn export_replay<W: std::io::Write>(
        &self,
        out: &mut W,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
    ) -> Result<usize, StoreError> {
        #[derive(Serialize)]
        struct Line<'a> {
            at: Timestamp,
            payload: &'a serde_json::value::RawValue,
            source: &'a str,
        }
        let mut n = 0;
        for item in self.journal_after(0) {
            let (seq, entry) = item?;
            if since.is_some_and(|s| entry.received_at < s)
                || until.is_some_and(|u| entry.received_at >= u)
            {
                continue;
            }
            let text = std::str::from_utf8(&entry.body).map_err(|e| StoreError::Corrupt {
                tree: "journal",
                reason: format!("entry {seq}: {e}"),
            })?;
            let payload: &serde_json::value::RawValue =
                serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
                    tree: "journal",
                    reason: format!("entry {seq}: {e}"),
                })?;
            let line = Line {
                at: entry.received_at,
                payload,
                source: &entry.source,
            };
            serde_json::to_writer(&mut *out, &line).expect("journal line serialises");
            out.write_all(b"\n")
                .map_err(|e| StoreError::Sled(sled::Error::Io(e)))?;
            n += 1;
        }
        Ok(n)
    }

    /// Counts journal entries by reading them all: for tools and tests. The
    /// service uses [`journal_entries`](Self::journal_entries).
    pub fn journal_len(&self) -> usize {
        self.journal.len()
    }

    /// Journal entries without a scan; `None` until the first compaction pass
    /// after open has counted the entries that were there.
    pub fn journal_entries(&self) -> Option<u64> {
        let c = &self.journal_count;
        c.counted.load(Ordering::Acquire).then(|| {
            let n = c.base.load(Ordering::Relaxed) + c.delta.load(Ordering::Relaxed);
            n.max(0) as u64
        })
    }

    /// The last journal sequence whose effects are in the alert state.
    pub fn applied(&self) -> Result<u64, StoreError> {
        self.meta
            .get(APPLIED_KEY)?
            .map_or(Ok(0), |v| decode_u64(&v, "meta"))
    }

    pub fn set_applied(&self, seq: u64) -> Result<(), StoreError> {
        self.meta.insert(APPLIED_KEY, &seq.to_be_bytes())?;
        Ok(())
    }

    pub fn put_alert(&self, a: &AlertState) -> Result<(), StoreError> {
        self.alerts.insert(a.id.to_bytes(), encode_alert(a))?;
        Ok(())
    }

    /// Writes a batch of alert states (keys and values as [`encode_alert`]).
    pub fn apply_alerts(&self, batch: sled::Batch) -> Result<(), StoreError> {
        self.alerts.apply_batch(batch)?;
        Ok(())
    }

    /// Writes a batch of incidents (keys are ids, values as [`encode_incident`]).
    pub fn apply_incidents(&self, batch: sled::Batch) -> Result<(), StoreError> {
        self.incidents.apply_batch(batch)?;
        Ok(())
    }

    pub fn get_alert(&self, id: Fingerprint) -> Result<Option<AlertState>, StoreError> {
        self.alerts
            .get(id.to_bytes())?
            .map(|v| decode_json(&v, "alerts"))
            .transpose()
    }

    pub fn load_alerts(&self) -> Result<Vec<AlertState>, StoreError> {
        self.alerts
            .iter()
            .map(|r| decode_json(&r?.1, "alerts"))
            .collect()
    }

    pub fn alert_count(&self) -> usize {
        self.alerts.len()
    }

    pub fn put_incident(&self, i: &Incident) -> Result<(), StoreError> {
        self.incidents.insert(i.id.as_bytes(), encode_incident(i))?;
        Ok(())
    }

    pub fn remove_incident(&self, id: &str) -> Result<(), StoreError> {
        self.incidents.remove(id.as_bytes())?;
        Ok(())
    }

    pub fn load_incidents(&self) -> Result<Vec<Incident>, StoreError> {
        self.incidents
            .iter()
            .map(|r| decode_json(&r?.1, "incidents"))
            .collect()
    }

    /// Drops resolved alerts and incidents older than `retention`, and journal
    /// entries older than `journal_retention` that the engine has applied.
    pub fn compact(&self, now: Timestamp, cfg: &StoreConfig) -> Result<Compacted, StoreError> {
        let mut out = Compacted::default();
        let applied = self.applied()?;
        let journal_cutoff = now - cfg.journal_retention.as_chrono();
        let count = &self.journal_count;
        // The first pass walks every entry present at open to count it; later
        // passes stop at the first entry they keep.
        let counting = !count.counted.load(Ordering::Acquire);
        let mut kept_at_open = 0i64;
        for r in self.journal.iter() {
            let (k, v) = r?;
            let seq = decode_u64(&k, "journal")?;
            if counting && seq > count.last_at_open {
                break;
            }
            let removable = seq <= applied
                && JournalEntry::decode_time(&v).is_none_or(|at| at < journal_cutoff);
            if removable {
                self.journal.remove(k)?;
                out.journal += 1;
                if !counting {
                    count.delta.fetch_sub(1, Ordering::Relaxed);
                }
            } else if counting {
                kept_at_open += 1;
            } else {
                break;
            }
        }
        if counting {
            count.base.store(kept_at_open, Ordering::Relaxed);
            count.counted.store(true, Ordering::Release);
        }
        let cutoff = now - cfg.retention.as_chrono();
        for r in self.alerts.iter() {
            let (k, v) = r?;
            let a: AlertState = decode_json(&v, "alerts")?;
            if !a.is_firing()
                && a.ends_at.unwrap_or(a.last_received) < cutoff
                && a.last_received < cutoff
            {
                self.alerts.remove(k)?;
                out.alerts += 1;
            }
        }
        for r in self.incidents.iter() {
            let (k, v) = r?;
            let i: Incident = decode_json(&v, "incidents")?;
            if i.resolved_at.is_some_and(|t| t < cutoff) {
                self.incidents.remove(k)?;
                out.incidents += 1;
            }
        }
        Ok(out)
    }

    /// Bytes on disk, for `/metrics` and the "store near full" alert.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

/// One step of the on-disk layout: upgrades a store from `to - 1` to `to`.
pub struct Migration {
    /// The schema version this step produces.
    pub to: u32,
    /// What changes, for the start-up log.
    pub what: &'static str,
    /// Rewrites the trees. Must be safe to run again on a store it already
    /// migrated: the version is stamped after the step, so a crash between
    /// the two re-runs the step on the next start.
    pub run: fn(&sled::Db) -> Result<(), StoreError>,
}

/// Every layout change since the first release, in order. To change a tree's
/// key or value format: bump [`SCHEMA_VERSION`], append a step here, and add
/// a test that opens a store written in the old layout.
pub const MIGRATIONS: &[Migration] = &[Migration {
    to: 1,
    what:
        "stamp the schema version on stores that predate it; check every alert and incident decodes",
    run: migrate_0_to_1,
}];

/// Stores written before the schema key existed share version 1's layout;
/// the step only proves it by decoding every record, so a store that is not
/// a stormcast store fails loudly instead of being stamped.
fn migrate_0_to_1(db: &sled::Db) -> Result<(), StoreError> {
    for r in db.open_tree("alerts")?.iter() {
        decode_json::<AlertState>(&r?.1, "alerts")?;
    }
    for r in db.open_tree("incidents")?.iter() {
        decode_json::<Incident>(&r?.1, "incidents")?;
    }
    Ok(())
}

/// Upgrades the layout from `from` to [`SCHEMA_VERSION`] with [`MIGRATIONS`].
fn migrate(db: &sled::Db, from: u32) -> Result<(), StoreError> {
    run_migrations(db, from, MIGRATIONS)
}

/// Runs every step of `steps` above `from`, in order, stamping the version and
/// flushing after each so an interrupted upgrade resumes where it stopped.
pub fn run_migrations(db: &sled::Db, from: u32, steps: &[Migration]) -> Result<(), StoreError> {
    let meta = db.open_tree("meta")?;
    for step in steps.iter().filter(|s| s.to > from) {
        tracing::info!(to = step.to, what = step.what, "Migrating store schema");
        (step.run)(db)?;
        meta.insert(SCHEMA_KEY, &step.to.to_be_bytes())?;
        db.flush()?;
    }
    Ok(())
}

fn has_data(db: &sled::Db) -> Result<bool, StoreError> {
    for name in ["alerts", "incidents", "journal"] {
        if db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == name.as_bytes())
            && !db.open_tree(name)?.is_empty()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn group_flusher(db: sled::Db, mut rx: mpsc::UnboundedReceiver<FlushWaiter>) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        // Every waiter wrote before sending, so this flush covers them all.
        let result = db
            .flush_async()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        for w in batch.drain(..) {
            let _ = w.send(result.clone());
        }
    }
}

/// The stored form of an alert state.
pub fn encode_alert(a: &AlertState) -> Vec<u8> {
    serde_json::to_vec(a).expect("alert state serialises")
}

/// The stored form of an incident.
pub fn encode_incident(i: &Incident) -> Vec<u8> {
    serde_json::to_vec(i).expect("incident serialises")
}

fn decode_u32(v: &[u8], tree: &'static str) -> Result<u32, StoreError> {
    v.try_into()
        .map(u32::from_be_bytes)
        .map_err(|_| StoreError::Corrupt {
            tree,
            reason: "expected 4 bytes".into(),
        })
}

fn decode_u64(v: &[u8], tree: &'static str) -> Result<u64, StoreError> {
    v.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt {
            tree,
            reason: "expected 8 bytes".into(),
        })
}

fn decode_json<T: serde::de::DeserializeOwned>(
    v: &[u8],
    tree: &'static str,
) -> Result<T, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
        tree,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn schema_version_is_written_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            path: dir.path().join("db"),
            ..Default::default()
        };
        {
            let s = Store::open(&cfg).unwrap();
            assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
            s.meta
                .insert(SCHEMA_KEY, &(SCHEMA_VERSION + 1).to_be_bytes())
                .unwrap();
            s.flush().unwrap();
        }
        let err = Store::open(&cfg).unwrap_err();
        assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
    }

    #[tokio::test]
    async fn journal_round_trip_and_compaction() {
        let s = Store::temporary().unwrap();
        let t0 = chrono::Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        for i in 0..3 {
            let e = JournalEntry {
                received_at: t0 + chrono::Duration::days(i),
                source: "s".into(),
                body: br#"{"version":"4","alerts":[]}"#.to_vec(),
            };
            s.append_journal(&e).await.unwrap();
        }
        let all: Vec<_> = s.journal_after(0).collect::<Result<_, _>>().unwrap();
        assert_eq!(all.len(), 3);
        s.set_applied(all[2].0).unwrap();
        let cfg = StoreConfig {
            journal_retention: PromDuration::hours(36),
            ..Default::default()
        };
        let c = s.compact(t0 + chrono::Duration::days(2), &cfg).unwrap();
        assert_eq!(c.journal, 1);
        assert_eq!(s.journal_len(), 2);
    }
}
