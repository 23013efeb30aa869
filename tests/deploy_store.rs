//! Operations on the store: backup/restore round trips (library and CLI),
//! schema migrations across a version bump, and damaged snapshot files.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use stormcast::correlate::Correlator;
use stormcast::engine::{Engine, ManualClock};
use stormcast::ingest::{parse_delivery, IngestConfig};
use stormcast::notify::Planner;
use stormcast::store::backup::{self, BackupError};
use stormcast::store::{self as st, JournalEntry, Store, StoreConfig, StoreError, SCHEMA_VERSION};

const BODY: &str = r#"{"version":"4","status":"firing","receiver":"stormcast","groupKey":"{}:{}",
"alerts":[
 {"status":"firing","labels":{"alertname":"KubeNodeNotReady","cluster":"prod-a","node":"n1","severity":"warning"},"startsAt":"2026-11-20T08:00:00Z","endsAt":"0001-01-01T00:00:00Z"},
 {"status":"firing","labels":{"alertname":"KubePodNotReady","cluster":"prod-a","namespace":"shop","pod":"web-1","severity":"warning"},"startsAt":"2026-11-20T08:01:00Z","endsAt":"0001-01-01T00:00:00Z"}
]}"#;

/// Opens a store, waiting for sled's background threads of a handle this
/// test just dropped to release the file lock.
fn open(c: &StoreConfig) -> Result<Store, StoreError> {
    for _ in 0..50 {
        match Store::open(c) {
            Err(StoreError::Sled(sled::Error::Io(e))) if e.to_string().contains("acquire lock") => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            other => return other,
        }
    }
    Store::open(c)
}

fn cfg(path: &Path) -> StoreConfig {
    StoreConfig {
        path: path.to_path_buf(),
        ..Default::default()
    }
}

/// A store with a journal entry, two alerts and two incidents, written by the
/// engine the way `serve` writes it.
fn populate(path: &Path) -> (Vec<String>, Vec<String>) {
    let store = open(&cfg(path)).unwrap();
    let at = Utc.with_ymd_and_hms(2026, 11, 20, 8, 2, 0).unwrap();
    let entry = JournalEntry {
        received_at: at,
        source: "prod-a".into(),
        body: BODY.as_bytes().to_vec(),
    };
    let (seq, _) = futures::executor::block_on(store.append_journal(&entry)).unwrap();
    let clock = Arc::new(ManualClock::new(at));
    let mut engine = Engine::new(clock, Correlator::new(Default::default()), Planner::new())
        .with_store(store.clone());
    let d = parse_delivery(
        BODY.as_bytes(),
        at,
        "prod-a",
        None,
        &IngestConfig::default(),
    )
    .unwrap();
    engine.apply(&d);
    store.mark_applied(seq);
    engine.checkpoint().unwrap();
    store.tree("outbox").unwrap().insert(b"k1", b"v1").unwrap();
    store.flush().unwrap();
    let mut alerts: Vec<String> = store
        .load_alerts()
        .unwrap()
        .iter()
        .map(|a| serde_json::to_string(a).unwrap())
        .collect();
    alerts.sort();
    let mut incidents: Vec<String> = store
        .load_incidents()
        .unwrap()
        .iter()
        .map(|i| serde_json::to_string(i).unwrap())
        .collect();
    incidents.sort();
    assert_eq!(alerts.len(), 2);
    assert_eq!(incidents.len(), 2);
    (alerts, incidents)
}

fn snapshot(store: &Store) -> (Vec<String>, Vec<String>) {
    let mut a: Vec<String> = store
        .load_alerts()
        .unwrap()
        .iter()
        .map(|a| serde_json::to_string(a).unwrap())
        .collect();
    a.sort();
    let mut i: Vec<String> = store
        .load_incidents()
        .unwrap()
        .iter()
        .map(|i| serde_json::to_string(i).unwrap())
        .collect();
    i.sort();
    (a, i)
}

#[test]
fn backup_and_restore_round_trip_every_tree() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let expected = populate(&src);
    let mut buf = Vec::new();
    let summary = backup::backup(&cfg(&src), &mut buf).unwrap();
    assert_eq!(summary.schema_version, SCHEMA_VERSION);
    let text = String::from_utf8(buf.clone()).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["format"], backup::FORMAT);
    assert_eq!(first["schema_version"], SCHEMA_VERSION);
    assert!(text.lines().last().unwrap().contains("\"end\":true"));
    // The snapshot file travels in the backup, byte for byte.
    assert_eq!(summary.files.len(), 1, "{summary:?}");
    let (name, bytes) = &summary.files[0];
    assert!(text.contains(&format!("\"file\":\"{name}\"")));
    assert_eq!(std::fs::metadata(src.join(name)).unwrap().len(), *bytes);

    let dst = dir.path().join("dst");
    let restored = backup::restore(&cfg(&dst), &mut buf.as_slice(), false).unwrap();
    assert_eq!(restored.records, summary.records);
    assert_eq!(restored.files, summary.files);
    assert_eq!(
        std::fs::read(dst.join(name)).unwrap(),
        std::fs::read(src.join(name)).unwrap()
    );
    let store = open(&cfg(&dst)).unwrap();
    assert_eq!(snapshot(&store), expected);
    assert_eq!(store.journal_len(), 1);
    assert_eq!(store.applied().unwrap(), 1);
    assert_eq!(
        store.tree("outbox").unwrap().get(b"k1").unwrap().as_deref(),
        Some(&b"v1"[..])
    );
    // New deliveries continue the journal instead of overwriting it.
    let entry = JournalEntry {
        received_at: Utc::now(),
        source: "prod-a".into(),
        body: b"{}".to_vec(),
    };
    let (seq, _) = futures::executor::block_on(store.append_journal(&entry)).unwrap();
    assert!(seq > 1, "sequence {seq} would overwrite a restored entry");
    assert_eq!(store.journal_len(), 2);
}

#[test]
fn restore_refuses_a_non_empty_target_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let expected = populate(&src);
    let mut buf = Vec::new();
    backup::backup(&cfg(&src), &mut buf).unwrap();

    let dst = dir.path().join("dst");
    {
        let other = open(&cfg(&dst)).unwrap();
        other
            .tree("outbox")
            .unwrap()
            .insert(b"stale", b"x")
            .unwrap();
        other.flush().unwrap();
    }
    let err = backup::restore(&cfg(&dst), &mut buf.as_slice(), false).unwrap_err();
    assert!(matches!(err, BackupError::TargetNotEmpty(_)), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");

    backup::restore(&cfg(&dst), &mut buf.as_slice(), true).unwrap();
    let store = open(&cfg(&dst)).unwrap();
    assert_eq!(snapshot(&store), expected);
    assert!(
        store
            .tree("outbox")
            .unwrap()
            .get(b"stale")
            .unwrap()
            .is_none(),
        "--force replaces, not merges"
    );
}

#[test]
fn truncated_or_foreign_backups_are_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    populate(&src);
    let mut buf = Vec::new();
    backup::backup(&cfg(&src), &mut buf).unwrap();
    let text = String::from_utf8(buf).unwrap();
    let truncated: String = text
        .lines()
        .take(text.lines().count() - 2)
        .map(|l| format!("{l}\n"))
        .collect();
    let dst = dir.path().join("dst");
    let err = backup::restore(&cfg(&dst), &mut truncated.as_bytes(), false).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    assert!(!dst.exists(), "a refused backup must not create the store");

    let newer = text.replacen(
        &format!("\"schema_version\":{SCHEMA_VERSION}"),
        &format!("\"schema_version\":{}", SCHEMA_VERSION + 1),
        1,
    );
    let err = backup::restore(&cfg(&dst), &mut newer.as_bytes(), false).unwrap_err();
    assert!(matches!(err, BackupError::TooNew(_)), "{err}");

    let err = backup::restore(&cfg(&dst), &mut &b"{\"hello\":1}\n"[..], false).unwrap_err();
    assert!(matches!(err, BackupError::Format { line: 1, .. }), "{err}");
}

#[test]
fn cli_backup_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let expected = populate(&src);
    let file = dir.path().join("stormcast.backup.jsonl");
    let bin = env!("CARGO_BIN_EXE_stormcast");
    let out = Command::new(bin)
        .args(["backup", "--data-dir"])
        .arg(&src)
        .arg("--output")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("backed up"));

    let dst = dir.path().join("dst");
    let restore = |force: bool| {
        let mut c = Command::new(bin);
        c.args(["restore", "--input"])
            .arg(&file)
            .arg("--data-dir")
            .arg(&dst);
        if force {
            c.arg("--force");
        }
        c.output().unwrap()
    };
    let out = restore(false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = restore(false);
    assert!(
        !out.status.success(),
        "restoring over a store needs --force"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
    let out = restore(true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = open(&cfg(&dst)).unwrap();
    assert_eq!(snapshot(&store), expected);
}

/// A store from before the schema key existed (version 0): same trees, no
/// `meta.schema_version`. Opening it migrates it and keeps every record.
#[test]
fn version_0_store_is_migrated_on_open_with_data_intact() {
    let dir = tempfile::tempdir().unwrap();
    let (expected, buf) = populated_backup(dir.path());

    // Write the old layout by hand: the journal, outbox and watermark, one
    // record per alert and per incident, and no schema key.
    let old = dir.path().join("old");
    {
        let db = sled::open(&old).unwrap();
        copy_trees(
            &db,
            &buf,
            &[
                b"schema_version",
                b"snapshot_generation",
                b"snapshot_previous_applied",
            ],
        );
        for (i, a) in expected.0.iter().enumerate() {
            db.open_tree("alerts")
                .unwrap()
                .insert(i.to_be_bytes(), a.as_bytes())
                .unwrap();
        }
        for (i, inc) in expected.1.iter().enumerate() {
            db.open_tree("incidents")
                .unwrap()
                .insert(i.to_be_bytes(), inc.as_bytes())
                .unwrap();
        }
        assert!(db
            .open_tree("meta")
            .unwrap()
            .get(b"schema_version")
            .unwrap()
            .is_none());
        db.flush().unwrap();
    }
    let store = open(&cfg(&old)).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(snapshot(&store), expected);
    assert_eq!(store.applied().unwrap(), 1);
    assert!(store.tree("alerts").unwrap().is_empty());
}

/// A store [`populate`]d under `dir`, and its backup: the records an older
/// layout is built from.
fn populated_backup(dir: &Path) -> ((Vec<String>, Vec<String>), Vec<u8>) {
    let modern = dir.join("modern");
    let expected = populate(&modern);
    let mut buf = Vec::new();
    backup::backup(&cfg(&modern), &mut buf).unwrap();
    (expected, buf)
}

/// Copies the sled trees of a backup into `db`, leaving out the `meta` keys
/// named (the layout a test simulates did not have them) and snapshot files.
fn copy_trees(db: &sled::Db, backup: &[u8], skip_meta: &[&[u8]]) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let text = std::str::from_utf8(backup).unwrap();
    for l in text.lines().skip(1) {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let Some(tree) = v["tree"].as_str() else {
            continue;
        };
        let k = b64.decode(v["key"].as_str().unwrap()).unwrap();
        if tree == "meta" && skip_meta.contains(&k.as_slice()) {
            continue;
        }
        let val = b64.decode(v["value"].as_str().unwrap()).unwrap();
        db.open_tree(tree).unwrap().insert(k, val).unwrap();
    }
}

/// A version 2 store kept its snapshot as chunks in the `snapshot` tree.
/// Opening it moves the snapshot into a file and drops the tree.
#[test]
fn version_2_store_snapshot_moves_into_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let (expected, buf) = populated_backup(dir.path());

    let old = dir.path().join("old");
    {
        let db = sled::open(&old).unwrap();
        copy_trees(&db, &buf, &[b"snapshot_previous_applied"]);
        let meta = db.open_tree("meta").unwrap();
        meta.insert(b"schema_version", &2u32.to_be_bytes()).unwrap();
        meta.insert(b"snapshot_generation", &4u64.to_be_bytes())
            .unwrap();
        let tree = db.open_tree("snapshot").unwrap();
        for (kind, records) in [(b'a', &expected.0), (b'i', &expected.1)] {
            // Two chunks per kind, as the chunked writer left them.
            for (n, part) in records.chunks(1).enumerate() {
                let mut key = 4u64.to_be_bytes().to_vec();
                key.push(kind);
                key.extend_from_slice(&(n as u32).to_be_bytes());
                tree.insert(key, format!("[{}]", part.join(",")).as_bytes())
                    .unwrap();
            }
        }
        // A leftover chunk of an older generation is ignored.
        let mut stale = 3u64.to_be_bytes().to_vec();
        stale.extend_from_slice(b"a\0\0\0\0");
        tree.insert(stale, &b"[]"[..]).unwrap();
        db.flush().unwrap();
    }
    let store = open(&cfg(&old)).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(snapshot(&store), expected);
    assert_eq!(store.applied().unwrap(), 1);
    assert_eq!(store.snapshot_generation().unwrap(), 4);
    assert!(old.join("snapshots/00000000000000000004.snapshot").exists());
    assert!(
        !store
            .db()
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == b"snapshot"),
        "the in-sled snapshot is gone"
    );
}

/// A second delivery on top of [`populate`], checkpointed as generation 2.
const BODY2: &str = r#"{"version":"4","status":"firing","receiver":"stormcast","groupKey":"{}:{}",
"alerts":[
 {"status":"firing","labels":{"alertname":"KubePodCrashLooping","cluster":"prod-a","namespace":"shop","pod":"web-2","severity":"warning"},"startsAt":"2026-11-20T08:03:00Z","endsAt":"0001-01-01T00:00:00Z"}
]}"#;

fn engine_on(store: &Store, at: chrono::DateTime<Utc>) -> Engine {
    Engine::new(
        Arc::new(ManualClock::new(at)),
        Correlator::new(Default::default()),
        Planner::new(),
    )
    .with_store(store.clone())
}

/// Recovers the way `serve` does: the snapshot, then the journal past its watermark.
fn recover(store: &Store) -> Vec<String> {
    let at = Utc.with_ymd_and_hms(2026, 11, 20, 8, 5, 0).unwrap();
    let mut engine = engine_on(store, at);
    engine.restore().unwrap();
    let applied = store.applied().unwrap();
    for item in store.journal_after(applied) {
        let (_, e) = item.unwrap();
        let d = parse_delivery(
            &e.body,
            e.received_at,
            &e.source,
            None,
            &IngestConfig::default(),
        )
        .unwrap();
        engine.apply(&d);
    }
    let mut alerts: Vec<String> = engine
        .alerts()
        .map(|a| serde_json::to_string(a).unwrap())
        .collect();
    alerts.sort();
    alerts
}

#[test]
fn damaged_snapshot_falls_back_to_the_previous_generation_and_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    populate(&path);
    let full = {
        let store = open(&cfg(&path)).unwrap();
        let at = Utc.with_ymd_and_hms(2026, 11, 20, 8, 4, 0).unwrap();
        let entry = JournalEntry {
            received_at: at,
            source: "prod-a".into(),
            body: BODY2.as_bytes().to_vec(),
        };
        let (seq, _) = futures::executor::block_on(store.append_journal(&entry)).unwrap();
        let mut engine = engine_on(&store, at);
        engine.restore().unwrap();
        let d = parse_delivery(
            BODY2.as_bytes(),
            at,
            "prod-a",
            None,
            &IngestConfig::default(),
        )
        .unwrap();
        engine.apply(&d);
        store.mark_applied(seq);
        engine.checkpoint().unwrap();
        drop(engine);
        assert_eq!(store.snapshot_generation().unwrap(), 2);
        assert_eq!(store.applied().unwrap(), seq);
        store.flush().unwrap();
        let (alerts, _) = snapshot(&store);
        assert_eq!(alerts.len(), 3);
        alerts
    };
    // Tear the newest file: cut it in the middle of a frame.
    let newest = path.join("snapshots/00000000000000000002.snapshot");
    let len = std::fs::metadata(&newest).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap();
    f.set_len(len - 7).unwrap();
    drop(f);

    let store = open(&cfg(&path)).unwrap();
    let loaded = store.load_snapshot().unwrap();
    assert_eq!(loaded.generation, 1, "the previous generation stands in");
    assert_eq!(store.applied().unwrap(), 1, "and its watermark");
    assert!(path
        .join("snapshots/00000000000000000002.snapshot.damaged")
        .exists());
    assert!(!newest.exists());
    // The journal past generation 1 brings the state back exactly.
    assert_eq!(recover(&store), full);
}

#[test]
fn damaged_snapshot_without_a_usable_fallback_fails_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    populate(&path);
    let file = path.join("snapshots/00000000000000000001.snapshot");
    let mut bytes = std::fs::read(&file).unwrap();
    // One bit flipped inside an alert record.
    let at = bytes
        .windows(b"KubePodNotReady".len())
        .position(|w| w == b"KubePodNotReady")
        .unwrap();
    bytes[at] ^= 0x20;
    std::fs::write(&file, bytes).unwrap();

    let store = open(&cfg(&path)).unwrap();
    let err = store.load_snapshot().unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Snapshot { .. }), "{text}");
    assert!(text.contains(&file.display().to_string()), "{text}");
    assert!(text.contains("checksum"), "{text}");
    // Nothing was changed: the file stays for inspection, meta still names it.
    assert!(file.exists());
    assert_eq!(store.snapshot_generation().unwrap(), 1);
    // A backup refuses to copy a damaged snapshot.
    drop(store);
    let err = backup::backup(&cfg(&path), &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
}

#[test]
fn version_0_store_that_does_not_decode_is_refused_not_stamped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let db = sled::open(&path).unwrap();
        db.open_tree("alerts")
            .unwrap()
            .insert(b"x", b"not json")
            .unwrap();
        db.flush().unwrap();
    }
    let err = open(&cfg(&path)).unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt { tree: "alerts", .. }),
        "{err}"
    );
    // sled's flusher thread lets go of the file lock a moment after the
    // refused store is dropped.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let db = loop {
        match sled::open(&path) {
            Ok(db) => break db,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("the refused store still holds its lock: {e}"),
        }
    };
    assert!(db
        .open_tree("meta")
        .unwrap()
        .get(b"schema_version")
        .unwrap()
        .is_none());
}

/// The migration runner across a version bump: a simulated version-2 step that
/// re-keys a tree runs once, in order, stamps the version after itself, and is
/// skipped for stores already past it.
#[test]
fn migration_steps_run_in_order_and_stamp_the_version() {
    fn rekey(db: &sled::Db, _: &st::SnapshotFiles) -> Result<(), StoreError> {
        let old = db.open_tree("legacy")?;
        let new = db.open_tree("rekeyed")?;
        for r in old.iter() {
            let (k, v) = r?;
            let mut nk = b"v2/".to_vec();
            nk.extend_from_slice(&k);
            new.insert(nk, v)?;
        }
        db.drop_tree("legacy")?;
        Ok(())
    }
    const STEPS: &[st::Migration] = &[
        st::Migration {
            to: 1,
            what: "stamp",
            run: |_, _| Ok(()),
        },
        st::Migration {
            to: 2,
            what: "re-key legacy into rekeyed",
            run: rekey,
        },
    ];
    let db = sled::Config::new().temporary(true).open().unwrap();
    db.open_tree("legacy").unwrap().insert(b"a", b"1").unwrap();
    db.open_tree("meta")
        .unwrap()
        .insert(b"schema_version", &1u32.to_be_bytes())
        .unwrap();
    let files = st::SnapshotFiles::memory();
    st::run_migrations(&db, &files, 1, STEPS).unwrap();
    let meta = db.open_tree("meta").unwrap();
    assert_eq!(
        meta.get(b"schema_version").unwrap().as_deref(),
        Some(&2u32.to_be_bytes()[..])
    );
    assert_eq!(
        db.open_tree("rekeyed")
            .unwrap()
            .get(b"v2/a")
            .unwrap()
            .as_deref(),
        Some(&b"1"[..])
    );
    // Already at version 2: nothing runs again.
    db.open_tree("legacy").unwrap().insert(b"b", b"2").unwrap();
    st::run_migrations(&db, &files, 2, STEPS).unwrap();
    assert!(db
        .open_tree("rekeyed")
        .unwrap()
        .get(b"v2/b")
        .unwrap()
        .is_none());
}

#[test]
fn cli_backup_streams_through_stdout_and_stdin() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let expected = populate(&src);
    let bin = env!("CARGO_BIN_EXE_stormcast");
    let out = Command::new(bin)
        .args(["backup", "--output", "-", "--data-dir"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // stdout is the backup and nothing else: every line is JSON.
    for l in String::from_utf8(out.stdout.clone()).unwrap().lines() {
        serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{l}: {e}"));
    }
    let dst = dir.path().join("dst");
    let mut child = Command::new(bin)
        .args(["restore", "--input", "-", "--data-dir"])
        .arg(&dst)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let done = child.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(snapshot(&open(&cfg(&dst)).unwrap()), expected);
}

/// A capture holds the state and watermark of one instant: deliveries applied
/// while its file is written are in neither, and recovery re-applies them.
#[test]
fn a_snapshot_written_off_the_lock_has_exactly_the_captured_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&cfg(&dir.path().join("db"))).unwrap();
    let at = Utc.with_ymd_and_hms(2026, 11, 20, 8, 2, 0).unwrap();
    let mut engine = engine_on(&store, at);
    let deliver = |engine: &mut Engine, body: &str| {
        let entry = JournalEntry {
            received_at: at,
            source: "prod-a".into(),
            body: body.as_bytes().to_vec(),
        };
        let (seq, _) = futures::executor::block_on(store.append_journal(&entry)).unwrap();
        let d = parse_delivery(
            body.as_bytes(),
            at,
            "prod-a",
            None,
            &IngestConfig::default(),
        )
        .unwrap();
        engine.apply(&d);
        store.mark_applied(seq);
        seq
    };
    let first = deliver(&mut engine, BODY);
    let pending = engine.capture().expect("changes to capture");
    let before: Vec<String> = {
        let mut a: Vec<String> = engine
            .alerts()
            .map(|a| serde_json::to_string(a).unwrap())
            .collect();
        a.sort();
        a
    };
    // Meanwhile: a new alert, and a re-delivery that changes a captured one
    // (its copy in the capture must not change).
    deliver(&mut engine, BODY2);
    deliver(&mut engine, BODY);
    let done = pending.write().unwrap();
    assert_eq!(done.alerts, 2);
    assert_eq!(store.applied().unwrap(), first);
    assert_eq!(snapshot(&store).0, before);

    let mut after: Vec<String> = engine
        .alerts()
        .map(|a| serde_json::to_string(a).unwrap())
        .collect();
    after.sort();
    assert_ne!(after, before);
    // Recovery from the captured snapshot re-applies what came after it.
    assert_eq!(recover(&store), after);
}

/// A snapshot damaged inside a backup file (still valid JSON and base64) is
/// refused by `restore`, naming the file, rather than at the next start.
#[test]
fn restore_refuses_a_damaged_snapshot_in_the_backup() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let dir = tempfile::tempdir().unwrap();
    let (_, buf) = populated_backup(dir.path());
    let text = String::from_utf8(buf).unwrap();
    let damaged: String = text
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            if v.get("file").is_some() {
                let mut data = b64.decode(v["data"].as_str().unwrap()).unwrap();
                let at = data
                    .windows(b"KubePodNotReady".len())
                    .position(|w| w == b"KubePodNotReady")
                    .unwrap();
                data[at] ^= 0x20;
                v["data"] = b64.encode(data).into();
            }
            format!("{v}\n")
        })
        .collect();
    let dst = dir.path().join("dst");
    let err = backup::restore(&cfg(&dst), &mut damaged.as_bytes(), false).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("checksum"), "{msg}");
    assert!(msg.contains("00000000000000000001.snapshot"), "{msg}");
    assert!(!dst.exists(), "a refused backup must not create the store");
}
