//! Durable state: on sled, the append-only journal of raw deliveries and the
//! trees later stages add (outbox, silences); beside it, snapshot files of the
//! alert and incident state ([`snapshot`]). The schema is versioned and
//! checked on open.
//!
//! Durability: sled only syncs every 500 ms on its own, so [`Store::append_journal`]
//! waits for a flush that covers its write before returning. Concurrent writers
//! share one flush (group commit), which is what makes durable ingest fast.
//!
//! State is not written per alert: sled costs ~20 µs per insert whatever the
//! value, which would cap ingest near 50k alerts/s on its own. The journal
//! already holds every acknowledged delivery, so the engine writes the whole
//! state now and then as a snapshot ([`Store::write_snapshot`]) with the
//! journal watermark it reflects, and start-up re-applies the journal past it.
//! Snapshots are files, not sled values: sled keeps what it writes in its page
//! cache, and a snapshot of 100k alerts held 60–90 MB there.

pub mod backup;
mod journal;
pub mod snapshot;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

pub use journal::JournalEntry;
pub use snapshot::{LoadedSnapshot, SnapshotFiles};

use crate::config::{ConfigErrors, PromDuration};
use crate::domain::{AlertState, Incident, Timestamp};

/// The on-disk layout version this build writes. Bump it with a migration in
/// [`migrate`] whenever a tree's key or value format changes.
pub const SCHEMA_VERSION: u32 = 3;

const SCHEMA_KEY: &[u8] = b"schema_version";
const APPLIED_KEY: &[u8] = b"journal_applied";
const SNAPSHOT_KEY: &[u8] = b"snapshot_generation";
/// The watermark of the snapshot before the current one: the journal is kept
/// past it, so that snapshot can stand in if the current one is damaged.
const PREV_APPLIED_KEY: &[u8] = b"snapshot_previous_applied";

/// Kinds of chunk in the schema 2 `snapshot` tree (read by the 2→3 step).
const KIND_ALERT: u8 = b'a';
const KIND_INCIDENT: u8 = b'i';

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
    #[error("snapshot {file}: {reason}")]
    Snapshot { file: String, reason: String },
}

/// What retention removed in one pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Compacted {
    pub journal: usize,
}

/// What one snapshot wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Snapshotted {
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
    snapshots: SnapshotFiles,
    /// The last snapshot generation handed out by [`Store::reserve_generation`].
    generation: std::sync::Arc<AtomicU64>,
    /// One snapshot write at a time, in generation order.
    snapshot_write: std::sync::Arc<std::sync::Mutex<()>>,
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
        Self::from_db(db, &cfg.path, SnapshotFiles::beside(&cfg.path))
    }

    /// An in-memory store that vanishes on drop (tests and tools).
    pub fn temporary() -> Result<Store, StoreError> {
        let db = sled::Config::new().temporary(true).open()?;
        Self::from_db(db, Path::new("<temporary>"), SnapshotFiles::memory())
    }

    fn from_db(db: sled::Db, path: &Path, snapshots: SnapshotFiles) -> Result<Store, StoreError> {
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
            Some(v) if v < SCHEMA_VERSION => migrate(&db, &snapshots, v)?,
            // A store with data but no schema key predates versioning (version 0).
            None if has_data(&db)? => migrate(&db, &snapshots, 0)?,
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
        let current = meta_u64(&meta, SNAPSHOT_KEY)?;
        tidy_snapshots(&snapshots, current)?;
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
            snapshots,
            generation: std::sync::Arc::new(AtomicU64::new(current)),
            snapshot_write: Default::default(),
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

    /// The last journal sequence whose effects are in the alert state: the
    /// watermark recorded with the current snapshot.
    pub fn applied(&self) -> Result<u64, StoreError> {
        meta_u64(&self.meta, APPLIED_KEY)
    }

    /// Where the snapshot files are.
    pub fn snapshot_files(&self) -> &SnapshotFiles {
        &self.snapshots
    }

    /// The generation of the current snapshot, 0 before the first.
    pub fn snapshot_generation(&self) -> Result<u64, StoreError> {
        meta_u64(&self.meta, SNAPSHOT_KEY)
    }

    /// Takes the next snapshot generation. The engine takes it while it
    /// captures the state, so [`write_snapshot_as`](Self::write_snapshot_as)
    /// can tell a capture overtaken by a later one and skip it.
    pub fn reserve_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Writes the whole alert and incident state as a new snapshot with the
    /// journal watermark `applied` it reflects (see
    /// [`write_snapshot_as`](Self::write_snapshot_as)).
    pub fn write_snapshot<'a>(
        &self,
        alerts: impl Iterator<Item = &'a AlertState>,
        incidents: impl Iterator<Item = &'a Incident>,
        applied: Option<u64>,
    ) -> Result<Snapshotted, StoreError> {
        let generation = self.reserve_generation();
        self.write_snapshot_as(generation, alerts, incidents, applied)
    }

    /// Writes a snapshot as `generation` (from
    /// [`reserve_generation`](Self::reserve_generation)): the file is made
    /// durable first, then the generation and watermark are recorded together
    /// in `meta` and flushed, then generations before the previous one are
    /// deleted. A crash at any point leaves either the old snapshot with the
    /// old watermark or the new one with the new watermark. The watermark
    /// never moves back; a generation older than the current one is skipped
    /// (a capture overtaken by a later one), returning zero counts.
    pub fn write_snapshot_as<'a>(
        &self,
        generation: u64,
        alerts: impl Iterator<Item = &'a AlertState>,
        incidents: impl Iterator<Item = &'a Incident>,
        applied: Option<u64>,
    ) -> Result<Snapshotted, StoreError> {
        let _one_at_a_time = self.snapshot_write.lock().expect("snapshot write lock");
        let current = meta_u64(&self.meta, SNAPSHOT_KEY)?;
        if generation <= current {
            tracing::debug!(
                generation,
                current,
                "Snapshot overtaken by a later one; skipped"
            );
            return Ok(Snapshotted::default());
        }
        let old_applied = meta_u64(&self.meta, APPLIED_KEY)?;
        let applied = applied.unwrap_or(0).max(old_applied);
        let (alerts, incidents) = self
            .snapshots
            .write(generation, applied, alerts, incidents)
            .map_err(|e| StoreError::Snapshot {
                file: self.snapshots.display(generation),
                reason: e.to_string(),
            })?;
        record_snapshot(&self.meta, generation, applied, old_applied)?;
        self.db.flush()?;
        // Keep the previous generation as the fallback; older ones go.
        let (gens, _) = self.snapshots.list().map_err(|e| StoreError::Snapshot {
            file: self.snapshots.display(generation),
            reason: format!("listing snapshots: {e}"),
        })?;
        for g in gens.into_iter().filter(|g| *g < current) {
            if let Err(e) = self.snapshots.remove(g) {
                tracing::warn!(file = %self.snapshots.display(g), error = %e, "Cannot delete an old snapshot");
            }
        }
        Ok(Snapshotted { alerts, incidents })
    }

    /// Reads the current snapshot whole. If its file is torn or damaged, the
    /// previous generation stands in when the journal still holds every entry
    /// past that one's watermark (compaction keeps them for this): the damaged
    /// file is renamed to `….snapshot.damaged`, `meta` is pointed at the
    /// previous generation, and start-up re-applies the journal from its
    /// watermark, losing nothing. Otherwise this fails with an error naming
    /// the file; starting from a partial state would silently lose alerts.
    pub fn load_snapshot(&self) -> Result<LoadedSnapshot, StoreError> {
        let _one_at_a_time = self.snapshot_write.lock().expect("snapshot write lock");
        let current = meta_u64(&self.meta, SNAPSHOT_KEY)?;
        let applied = meta_u64(&self.meta, APPLIED_KEY)?;
        if current == 0 {
            return Ok(LoadedSnapshot {
                applied,
                ..Default::default()
            });
        }
        let damage = match self.snapshots.read(current) {
            Ok(mut s) => {
                s.applied = applied;
                return Ok(s);
            }
            Err(reason) => reason,
        };
        let file = self.snapshots.display(current);
        tracing::error!(%file, reason = %damage, "Snapshot file is damaged");
        let floor = self.journal_floor()?;
        let (gens, _) = self.snapshots.list().map_err(|e| StoreError::Snapshot {
            file: file.clone(),
            reason: format!("listing snapshots: {e}"),
        })?;
        for g in gens.into_iter().rev().filter(|g| *g < current) {
            let prev_file = self.snapshots.display(g);
            match self.snapshots.read(g) {
                Ok(s) if s.applied >= floor => {
                    self.snapshots
                        .set_aside(current)
                        .map_err(|e| StoreError::Snapshot {
                            file: file.clone(),
                            reason: format!("setting the damaged file aside: {e}"),
                        })?;
                    record_snapshot(&self.meta, g, s.applied, s.applied)?;
                    self.db.flush()?;
                    tracing::warn!(damaged = %file, file = %prev_file, applied = s.applied, "Recovering from the previous snapshot and the journal past it");
                    return Ok(s);
                }
                Ok(s) => {
                    tracing::error!(file = %prev_file, applied = s.applied, floor, "Previous snapshot predates the journal kept; not usable")
                }
                Err(reason) => {
                    tracing::error!(file = %prev_file, %reason, "Previous snapshot is damaged too")
                }
            }
        }
        Err(StoreError::Snapshot {
            file,
            reason: format!(
                "{damage}; no earlier snapshot is usable with the journal kept, so the state \
                 cannot be recovered without loss. Restore a backup (`stormcast restore`)"
            ),
        })
    }

    /// Checks the current snapshot file's framing and checksums without
    /// loading it (nor falling back: nothing is changed).
    pub fn verify_snapshot(&self) -> Result<(), StoreError> {
        let current = meta_u64(&self.meta, SNAPSHOT_KEY)?;
        if current == 0 {
            return Ok(());
        }
        self.snapshots
            .verify(current)
            .map_err(|reason| StoreError::Snapshot {
                file: self.snapshots.display(current),
                reason: format!(
                    "{reason}; start stormcast once (it recovers from the previous \
                     snapshot when one is usable), then back up"
                ),
            })
    }

    /// Every alert state in the latest snapshot.
    pub fn load_alerts(&self) -> Result<Vec<AlertState>, StoreError> {
        Ok(self.load_snapshot()?.alerts)
    }

    /// Every incident in the latest snapshot.
    pub fn load_incidents(&self) -> Result<Vec<Incident>, StoreError> {
        Ok(self.load_snapshot()?.incidents)
    }

    /// Journal entries up to this sequence may be compacted away: the lower
    /// of the current and the previous snapshot's watermarks, so either
    /// snapshot can be brought up to date from the journal.
    fn journal_floor(&self) -> Result<u64, StoreError> {
        let applied = meta_u64(&self.meta, APPLIED_KEY)?;
        Ok(match self.meta.get(PREV_APPLIED_KEY)? {
            Some(v) => decode_u64(&v, "meta")?.min(applied),
            None => applied,
        })
    }

    /// Drops journal entries older than `journal_retention` that both kept
    /// snapshots reflect ([`journal_floor`](Self::journal_floor)). (Resolved alerts and incidents past `retention` leave the
    /// engine's memory, and so the next snapshot.)
    pub fn compact(&self, now: Timestamp, cfg: &StoreConfig) -> Result<Compacted, StoreError> {
        let mut out = Compacted::default();
        let applied = self.journal_floor()?;
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
        Ok(out)
    }

    /// Bytes on disk, for `/metrics` and the "store near full" alert.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0) + self.snapshots.bytes()
    }
}

/// One step of the on-disk layout: upgrades a store from `to - 1` to `to`.
pub struct Migration {
    /// The schema version this step produces.
    pub to: u32,
    /// What changes, for the start-up log.
    pub what: &'static str,
    /// Rewrites the trees (and the snapshot files). Must be safe to run
    /// again on a store it already migrated: the version is stamped after the
    /// step, so a crash between the two re-runs the step on the next start.
    pub run: fn(&sled::Db, &SnapshotFiles) -> Result<(), StoreError>,
}

/// Every layout change since the first release, in order. To change a tree's
/// key or value format: bump [`SCHEMA_VERSION`], append a step here, and add
/// a test that opens a store written in the old layout.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        to: 1,
        what: "stamp the schema version on stores that predate it; check every alert and incident decodes",
        run: migrate_0_to_1,
    },
    Migration {
        to: 2,
        what: "move alert and incident records into a snapshot written once per checkpoint",
        run: migrate_1_to_2,
    },
    Migration {
        to: 3,
        what: "move the snapshot out of sled into a file beside it",
        run: migrate_2_to_3,
    },
];

/// Version 1 kept one record per alert identity and per incident, written as
/// they changed; version 2 keeps them in chunked snapshots. Safe to re-run:
/// the old trees are cleared only after the snapshot is stamped.
fn migrate_1_to_2(db: &sled::Db, files: &SnapshotFiles) -> Result<(), StoreError> {
    let (alerts, incidents) = (db.open_tree("alerts")?, db.open_tree("incidents")?);
    if alerts.is_empty() && incidents.is_empty() {
        return Ok(());
    }
    let a: Vec<AlertState> = alerts
        .iter()
        .map(|r| decode_json(&r?.1, "alerts"))
        .collect::<Result<_, _>>()?;
    let i: Vec<Incident> = incidents
        .iter()
        .map(|r| decode_json(&r?.1, "incidents"))
        .collect::<Result<_, _>>()?;
    // Straight to the schema 3 layout, a file: the 2→3 step then finds no
    // `snapshot` tree to move.
    let meta = db.open_tree("meta")?;
    let generation = meta_u64(&meta, SNAPSHOT_KEY)? + 1;
    write_migrated_snapshot(db, &meta, files, generation, &a, &i)?;
    alerts.clear()?;
    incidents.clear()?;
    Ok(())
}

/// A counter in the meta tree, 0 when absent (the applied watermark, the
/// snapshot generation).
fn meta_u64(meta: &sled::Tree, key: &[u8]) -> Result<u64, StoreError> {
    meta.get(key)?.map_or(Ok(0), |v| decode_u64(&v, "meta"))
}

/// Version 2 kept the snapshot as chunks in the `snapshot` tree; version 3
/// writes it to a file beside the database. Safe to re-run: the tree is
/// dropped only after the file is durable, and an empty tree means done.
fn migrate_2_to_3(db: &sled::Db, files: &SnapshotFiles) -> Result<(), StoreError> {
    if !db.tree_names().iter().any(|n| n.as_ref() == b"snapshot") {
        return Ok(());
    }
    let (meta, tree) = (db.open_tree("meta")?, db.open_tree("snapshot")?);
    let generation = meta_u64(&meta, SNAPSHOT_KEY)?;
    // A snapshot of an empty state has no chunks, and still needs its file.
    if generation > 0 {
        let load = |kind: u8| -> Result<Vec<Vec<u8>>, StoreError> {
            let mut prefix = generation.to_be_bytes().to_vec();
            prefix.push(kind);
            tree.scan_prefix(prefix)
                .map(|r| Ok(r?.1.to_vec()))
                .collect()
        };
        let mut alerts: Vec<AlertState> = Vec::new();
        for chunk in load(KIND_ALERT)? {
            alerts.extend(decode_json::<Vec<AlertState>>(&chunk, "snapshot")?);
        }
        let mut incidents: Vec<Incident> = Vec::new();
        for chunk in load(KIND_INCIDENT)? {
            incidents.extend(decode_json::<Vec<Incident>>(&chunk, "snapshot")?);
        }
        write_migrated_snapshot(db, &meta, files, generation, &alerts, &incidents)?;
    }
    drop(tree);
    db.drop_tree("snapshot")?;
    Ok(())
}

/// A migration's snapshot: written as file `generation` with the store's
/// applied watermark, recorded in `meta` and flushed before the step drops
/// the old layout.
fn write_migrated_snapshot(
    db: &sled::Db,
    meta: &sled::Tree,
    files: &SnapshotFiles,
    generation: u64,
    alerts: &[AlertState],
    incidents: &[Incident],
) -> Result<(), StoreError> {
    let applied = meta_u64(meta, APPLIED_KEY)?;
    files
        .write(generation, applied, alerts.iter(), incidents.iter())
        .map_err(|e| StoreError::Snapshot {
            file: files.display(generation),
            reason: e.to_string(),
        })?;
    record_snapshot(meta, generation, applied, applied)?;
    db.flush()?;
    Ok(())
}

/// Records `generation` as the current snapshot with its watermark, and the
/// previous snapshot's watermark, in one atomic batch.
fn record_snapshot(
    meta: &sled::Tree,
    generation: u64,
    applied: u64,
    previous_applied: u64,
) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    batch.insert(SNAPSHOT_KEY, &generation.to_be_bytes());
    batch.insert(APPLIED_KEY, &applied.to_be_bytes());
    batch.insert(PREV_APPLIED_KEY, &previous_applied.to_be_bytes());
    meta.apply_batch(batch)?;
    Ok(())
}

/// At open: removes temporary files of an interrupted write and generations
/// newer than the recorded one (written, but the crash came before `meta`
/// recorded them).
fn tidy_snapshots(files: &SnapshotFiles, current: u64) -> Result<(), StoreError> {
    let snapshot_err = |e: std::io::Error| StoreError::Snapshot {
        file: files.display(current),
        reason: format!("tidying the snapshot folder: {e}"),
    };
    let (gens, tmp) = files.list().map_err(snapshot_err)?;
    for path in tmp {
        std::fs::remove_file(&path).map_err(snapshot_err)?;
    }
    for g in gens.into_iter().filter(|g| *g > current) {
        files.remove(g).map_err(snapshot_err)?;
    }
    Ok(())
}

/// Stores written before the schema key existed share version 1's layout;
/// the step only proves it by decoding every record, so a store that is not
/// a stormcast store fails loudly instead of being stamped.
fn migrate_0_to_1(db: &sled::Db, _: &SnapshotFiles) -> Result<(), StoreError> {
    for r in db.open_tree("alerts")?.iter() {
        decode_json::<AlertState>(&r?.1, "alerts")?;
    }
    for r in db.open_tree("incidents")?.iter() {
        decode_json::<Incident>(&r?.1, "incidents")?;
    }
    Ok(())
}

/// Upgrades the layout from `from` to [`SCHEMA_VERSION`] with [`MIGRATIONS`].
fn migrate(db: &sled::Db, files: &SnapshotFiles, from: u32) -> Result<(), StoreError> {
    run_migrations(db, files, from, MIGRATIONS)
}

/// Runs every step of `steps` above `from`, in order, stamping the version and
/// flushing after each so an interrupted upgrade resumes where it stopped.
pub fn run_migrations(
    db: &sled::Db,
    files: &SnapshotFiles,
    from: u32,
    steps: &[Migration],
) -> Result<(), StoreError> {
    let meta = db.open_tree("meta")?;
    for step in steps.iter().filter(|s| s.to > from) {
        tracing::info!(to = step.to, what = step.what, "Migrating store schema");
        (step.run)(db, files)?;
        meta.insert(SCHEMA_KEY, &step.to.to_be_bytes())?;
        db.flush()?;
    }
    Ok(())
}

fn has_data(db: &sled::Db) -> Result<bool, StoreError> {
    for name in ["alerts", "incidents", "journal", "snapshot"] {
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

    /// A firing alert state, `pod` p{i}, for snapshot tests.
    pub(crate) fn state(i: u32) -> AlertState {
        let labels: crate::domain::Labels =
            [("alertname", "A".to_owned()), ("pod", format!("p{i}"))]
                .into_iter()
                .collect();
        let t = chrono::Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        AlertState {
            id: labels.fingerprint(),
            am_fingerprint: None,
            cluster: crate::domain::ClusterId::new("c"),
            labels,
            annotations: Default::default(),
            status: crate::domain::AlertStatus::Firing,
            starts_at: t,
            ends_at: None,
            generator_url: Default::default(),
            external_url: Default::default(),
            source: "s".into(),
            first_received: t,
            last_received: t,
            flaps: 0,
            previous_end: None,
            deliveries: 1,
        }
    }

    #[test]
    fn snapshots_replace_each_other_and_move_the_watermark() {
        let s = Store::temporary().unwrap();
        assert!(s.load_alerts().unwrap().is_empty());
        let first: Vec<AlertState> = (0..450).map(state).collect();
        let w = s
            .write_snapshot(first.iter(), std::iter::empty(), Some(7))
            .unwrap();
        assert_eq!(w.alerts, 450);
        assert_eq!(s.load_alerts().unwrap(), first);
        assert_eq!(s.applied().unwrap(), 7);

        // A smaller state later: nothing of the first snapshot survives, and
        // the watermark never moves back.
        let second: Vec<AlertState> = (1000..1010).map(state).collect();
        s.write_snapshot(second.iter(), std::iter::empty(), Some(3))
            .unwrap();
        assert_eq!(s.load_alerts().unwrap(), second);
        assert_eq!(s.applied().unwrap(), 7);
        // The previous generation stays as the fallback, older ones go.
        s.write_snapshot(first.iter(), std::iter::empty(), Some(9))
            .unwrap();
        assert_eq!(s.snapshots.list().unwrap().0, vec![2, 3]);
        assert_eq!(s.load_snapshot().unwrap().applied, 9);
    }

    #[test]
    fn an_overtaken_capture_is_not_written() {
        let s = Store::temporary().unwrap();
        let (older, newer) = (s.reserve_generation(), s.reserve_generation());
        let a: Vec<AlertState> = (0..3).map(state).collect();
        s.write_snapshot_as(newer, a.iter(), std::iter::empty(), Some(5))
            .unwrap();
        let skipped = s
            .write_snapshot_as(older, a[..1].iter(), std::iter::empty(), Some(2))
            .unwrap();
        assert_eq!(skipped, Snapshotted::default());
        assert_eq!(s.load_alerts().unwrap(), a);
        assert_eq!(s.applied().unwrap(), 5);
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
        s.write_snapshot(std::iter::empty(), std::iter::empty(), Some(all[2].0))
            .unwrap();
        // Compaction keeps what the previous snapshot (none: 0) needs...
        let cfg0 = StoreConfig {
            journal_retention: PromDuration::hours(36),
            ..Default::default()
        };
        assert_eq!(
            s.compact(t0 + chrono::Duration::days(2), &cfg0)
                .unwrap()
                .journal,
            0
        );
        // ...until a second snapshot reflects the same entries.
        s.write_snapshot(std::iter::empty(), std::iter::empty(), Some(all[2].0))
            .unwrap();
        let cfg = StoreConfig {
            journal_retention: PromDuration::hours(36),
            ..Default::default()
        };
        let c = s.compact(t0 + chrono::Duration::days(2), &cfg).unwrap();
        assert_eq!(c.journal, 1);
        assert_eq!(s.journal_len(), 2);
        assert_eq!(s.journal_entries(), Some(2), "kept count matches the tree");
    }
}
