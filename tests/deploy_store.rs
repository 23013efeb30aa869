//! Operations on the store: backup/restore round trips (library and CLI) and
//! schema migrations across a version bump.

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

    let dst = dir.path().join("dst");
    let restored = backup::restore(&cfg(&dst), &mut buf.as_slice(), false).unwrap();
    assert_eq!(restored.records, summary.records);
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
    let modern = dir.path().join("modern");
    let expected = populate(&modern);
    let mut buf = Vec::new();
    backup::backup(&cfg(&modern), &mut buf).unwrap();

    // Write the old layout by hand: every tree but the schema key.
    let old = dir.path().join("old");
    {
        let db = sled::open(&old).unwrap();
        let text = String::from_utf8(buf).unwrap();
        for l in text.lines().skip(1) {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let Some(tree) = v["tree"].as_str() else {
                continue;
            };
            use base64::Engine as _;
            let k = base64::engine::general_purpose::STANDARD
                .decode(v["key"].as_str().unwrap())
                .unwrap();
            if tree == "meta" && k == b"schema_version" {
                continue;
            }
            let val = base64::engine::general_purpose::STANDARD
                .decode(v["value"].as_str().unwrap())
                .unwrap();
            db.open_tree(tree).unwrap().insert(k, val).unwrap();
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
    let db = sled::open(&path).unwrap();
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
    fn rekey(db: &sled::Db) -> Result<(), StoreError> {
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
            run: |_| Ok(()),
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
    st::run_migrations(&db, 1, STEPS).unwrap();
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
    st::run_migrations(&db, 2, STEPS).unwrap();
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
