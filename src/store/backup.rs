//! `stormcast backup` and `stormcast restore`: the whole store as JSON lines.
//!
//! The first line is a header with the schema version the records are in;
//! then one line per record (`tree`, base64 `key` and `value`), every tree
//! included, so trees later stages add (outbox, silences) travel too; then
//! the current snapshot file (schema 3 on) as `file`, `offset` and base64
//! `data` pieces, so the restored store recovers the same state; the last
//! line is a trailer with the record count, so a truncated file is refused.
//! Restoring writes the records in their original layout and then opens the
//! store normally, which runs any migration a newer build needs.
//!
//! sled allows one process per database: back up and restore with the
//! service stopped (scale the StatefulSet to 0, or stop the unit).

use std::io::{BufRead, Write};
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::snapshot::SNAPSHOT_DIR;
use super::{SnapshotFiles, Store, StoreConfig, StoreError, SCHEMA_KEY, SCHEMA_VERSION};

/// Identifies the file format, independent of the store's schema version.
pub const FORMAT: &str = "stormcast-backup/1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupHeader {
    pub format: String,
    pub schema_version: u32,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub stormcast_version: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    tree: String,
    key: String,
    value: String,
}

/// A piece of a snapshot file: `file` is its path inside the store's folder.
#[derive(Debug, Serialize, Deserialize)]
struct FileRecord {
    file: String,
    offset: u64,
    data: String,
}

/// Raw bytes per file record.
const FILE_PIECE: usize = 768 * 1024;

#[derive(Debug, Serialize, Deserialize)]
struct Trailer {
    end: bool,
    records: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line}: {reason}")]
    Format { line: usize, reason: String },
    #[error(
        "{0} is not empty; restore into an empty folder or pass --force to replace its contents"
    )]
    TargetNotEmpty(String),
    #[error("the backup has schema version {0}, newer than this build's {SCHEMA_VERSION}; restore it with a newer stormcast")]
    TooNew(u32),
}

/// What a backup or restore covered.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct BackupSummary {
    pub schema_version: u32,
    pub records: u64,
    pub trees: Vec<(String, u64)>,
    /// Snapshot files and their sizes in bytes.
    pub files: Vec<(String, u64)>,
}

/// Writes every tree of the store at `cfg.path` to `out`.
pub fn backup(cfg: &StoreConfig, out: &mut dyn Write) -> Result<BackupSummary, BackupError> {
    let store = open_when_released(cfg)?;
    // A damaged snapshot is refused here rather than copied.
    store.verify_snapshot()?;
    let db = store.db();
    let header = BackupHeader {
        format: FORMAT.to_owned(),
        schema_version: store.schema_version()?,
        created_at: chrono::Utc::now(),
        stormcast_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    write_line(out, &header)?;
    let mut summary = BackupSummary {
        schema_version: header.schema_version,
        ..Default::default()
    };
    let mut names: Vec<Vec<u8>> = db.tree_names().iter().map(|n| n.to_vec()).collect();
    names.sort();
    for name in names {
        let tree_name = String::from_utf8(name.clone()).map_err(|_| StoreError::Corrupt {
            tree: "(tree names)",
            reason: "non-UTF-8 tree name".into(),
        })?;
        let tree = db.open_tree(&name).map_err(StoreError::from)?;
        let mut n = 0;
        for r in tree.iter() {
            let (k, v) = r.map_err(StoreError::from)?;
            write_line(
                out,
                &Record {
                    tree: tree_name.clone(),
                    key: B64.encode(&k),
                    value: B64.encode(&v),
                },
            )?;
            n += 1;
        }
        if n > 0 {
            summary.trees.push((tree_name, n));
        }
        summary.records += n;
    }
    let generation = store.snapshot_generation()?;
    if generation > 0 {
        let name = format!("{SNAPSHOT_DIR}/{}", SnapshotFiles::file_name(generation));
        let mut input = store.snapshot_files().open_raw(generation)?;
        let mut piece = vec![0u8; FILE_PIECE];
        let mut offset = 0u64;
        loop {
            let n = read_full(&mut input, &mut piece)?;
            if n == 0 && offset > 0 {
                break;
            }
            write_line(
                out,
                &FileRecord {
                    file: name.clone(),
                    offset,
                    data: B64.encode(&piece[..n]),
                },
            )?;
            summary.records += 1;
            offset += n as u64;
            if n < piece.len() {
                break;
            }
        }
        summary.files.push((name, offset));
    }
    write_line(
        out,
        &Trailer {
            end: true,
            records: summary.records,
        },
    )?;
    out.flush()?;
    Ok(summary)
}

/// Reads a backup into the store at `cfg.path`, which must be empty unless
/// `force` (then its contents are replaced). Runs migrations afterwards.
pub fn restore(
    cfg: &StoreConfig,
    input: &mut dyn BufRead,
    force: bool,
) -> Result<BackupSummary, BackupError> {
    let path = &cfg.path;
    if !force && !is_empty_dir(path)? {
        return Err(BackupError::TargetNotEmpty(path.display().to_string()));
    }
    let mut lines = input.lines().enumerate();
    let header: BackupHeader = match lines.next() {
        Some((_, l)) => parse_line(1, &l?)?,
        None => {
            return Err(BackupError::Format {
                line: 1,
                reason: "empty file".into(),
            })
        }
    };
    if header.format != FORMAT {
        return Err(BackupError::Format {
            line: 1,
            reason: format!("not a stormcast backup (format {:?})", header.format),
        });
    }
    if header.schema_version > SCHEMA_VERSION {
        return Err(BackupError::TooNew(header.schema_version));
    }
    // Parse everything before touching the target, so a bad file changes nothing.
    let mut records = Vec::new();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut file_records = 0usize;
    let mut trailer = None;
    for (i, l) in lines {
        let l = l?;
        if l.trim().is_empty() {
            continue;
        }
        if trailer.is_some() {
            return Err(BackupError::Format {
                line: i + 1,
                reason: "data after the end marker".into(),
            });
        }
        let v: serde_json::Value = parse_line(i + 1, &l)?;
        if v.get("end").is_some() {
            trailer = Some(parse_line::<Trailer>(i + 1, &l)?);
            continue;
        }
        if v.get("file").is_some() {
            let f: FileRecord = parse_line(i + 1, &l)?;
            let data = decode(i + 1, &f.data)?;
            add_piece(&mut files, i + 1, f, data)?;
            file_records += 1;
            continue;
        }
        let r: Record = parse_line(i + 1, &l)?;
        let key = decode(i + 1, &r.key)?;
        let value = decode(i + 1, &r.value)?;
        records.push((r.tree, key, value));
    }
    let total = records.len() + file_records;
    match trailer {
        Some(t) if t.records == total as u64 => {}
        Some(t) => {
            return Err(BackupError::Format {
                line: total + 2,
                reason: format!(
                    "the end marker counts {} records but the file has {total}",
                    t.records,
                ),
            })
        }
        None => {
            return Err(BackupError::Format {
                line: total + 2,
                reason: "no end marker: the backup is truncated".into(),
            })
        }
    }

    // The snapshot crossed a file that may have been edited or damaged in
    // transit: refuse it now rather than at the service's next start.
    for (name, bytes) in &files {
        let damaged = |reason: String| StoreError::Snapshot {
            file: format!("{name} in the backup"),
            reason,
        };
        let generation = super::snapshot::verify_bytes(bytes).map_err(damaged)?;
        if !name.ends_with(&SnapshotFiles::file_name(generation)) {
            return Err(damaged(format!("its header names generation {generation}")).into());
        }
    }

    {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cfg.cache_capacity_bytes)
            .open()
            .map_err(StoreError::from)?;
        if force {
            for name in db.tree_names() {
                if name.as_ref() == b"__sled__default" {
                    db.clear().map_err(StoreError::from)?;
                } else {
                    db.drop_tree(&name).map_err(StoreError::from)?;
                }
            }
        }
        let mut summary = BackupSummary {
            schema_version: header.schema_version,
            ..Default::default()
        };
        for (tree, key, value) in records {
            let t = db.open_tree(tree.as_bytes()).map_err(StoreError::from)?;
            t.insert(key, value).map_err(StoreError::from)?;
            match summary.trees.last_mut() {
                Some((name, n)) if *name == tree => *n += 1,
                _ => summary.trees.push((tree, 1)),
            }
            summary.records += 1;
        }
        // The records carry the schema key; make sure it is the header's.
        db.open_tree("meta")
            .and_then(|m| m.insert(SCHEMA_KEY, &header.schema_version.to_be_bytes()))
            .map_err(StoreError::from)?;
        db.flush().map_err(StoreError::from)?;
        drop(db);
        let dir = path.join(SNAPSHOT_DIR);
        if force {
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        for (name, bytes) in files {
            std::fs::create_dir_all(&dir)?;
            let target = path.join(&name);
            let tmp = path.join(format!("{name}.tmp"));
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &target)?;
            std::fs::File::open(&dir)?.sync_all()?;
            summary.files.push((name, bytes.len() as u64));
        }
        summary.records += file_records as u64;
        // Opening normally checks the version and runs migrations.
        let store = open_when_released(cfg)?;
        summary.schema_version = store.schema_version()?;
        // Journal sequence numbers come from sled's id generator, which is
        // not part of any tree: move it past the restored journal so new
        // deliveries never overwrite restored ones.
        let last_seq = store.journal_last_seq()?;
        while store.db().generate_id().map_err(StoreError::from)? < last_seq {}
        store.flush()?;
        Ok(summary)
    }
}

/// Opens the store, waiting briefly for sled's background threads of a
/// just-dropped handle in this process to release the file lock.
fn open_when_released(cfg: &StoreConfig) -> Result<Store, StoreError> {
    let mut tries = 0;
    loop {
        match Store::open(cfg) {
            Err(StoreError::Sled(sled::Error::Io(e)))
                if e.to_string().contains("could not acquire lock") && tries < 50 =>
            {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Adds a snapshot file piece, checking the name (only the snapshot folder,
/// never a path out of the store) and that pieces come in order.
fn add_piece(
    files: &mut Vec<(String, Vec<u8>)>,
    line: usize,
    f: FileRecord,
    data: Vec<u8>,
) -> Result<(), BackupError> {
    let valid = f
        .file
        .strip_prefix(SNAPSHOT_DIR)
        .and_then(|n| n.strip_prefix('/'))
        .and_then(|n| n.strip_suffix(".snapshot"))
        .is_some_and(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit()));
    if !valid {
        return Err(BackupError::Format {
            line,
            reason: format!("unexpected file {:?}", f.file),
        });
    }
    match files.last_mut() {
        Some((name, bytes)) if *name == f.file => {
            if f.offset != bytes.len() as u64 {
                return Err(BackupError::Format {
                    line,
                    reason: format!(
                        "{} piece at offset {} follows {} bytes",
                        f.file,
                        f.offset,
                        bytes.len()
                    ),
                });
            }
            bytes.extend_from_slice(&data);
        }
        _ if f.offset != 0 => {
            return Err(BackupError::Format {
                line,
                reason: format!("{} starts at offset {}", f.file, f.offset),
            })
        }
        _ => files.push((f.file, data)),
    }
    Ok(())
}

/// Reads until `buf` is full or the input ends.
fn read_full(input: &mut dyn std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn is_empty_dir(path: &Path) -> Result<bool, std::io::Error> {
    match std::fs::read_dir(path) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}

fn write_line<T: Serialize>(out: &mut dyn Write, v: &T) -> Result<(), BackupError> {
    serde_json::to_writer(&mut *out, v).map_err(std::io::Error::from)?;
    out.write_all(b"\n")?;
    Ok(())
}

fn parse_line<T: serde::de::DeserializeOwned>(line: usize, text: &str) -> Result<T, BackupError> {
    serde_json::from_str(text).map_err(|e| BackupError::Format {
        line,
        reason: e.to_string(),
    })
}

fn decode(line: usize, s: &str) -> Result<Vec<u8>, BackupError> {
    B64.decode(s).map_err(|e| BackupError::Format {
        line,
        reason: format!("bad base64: {e}"),
    })
}
