//! `stormcast backup` and `stormcast restore`: the whole store as JSON lines.
//!
//! The first line is a header with the schema version the records are in;
//! then one line per record (`tree`, base64 `key` and `value`), every tree
//! included, so trees later stages add (outbox, silences) travel too; the last
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

use super::{Store, StoreConfig, StoreError, SCHEMA_KEY, SCHEMA_VERSION};

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
}

/// Writes every tree of the store at `cfg.path` to `out`.
pub fn backup(cfg: &StoreConfig, out: &mut dyn Write) -> Result<BackupSummary, BackupError> {
    let store = open_when_released(cfg)?;
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
        let r: Record = parse_line(i + 1, &l)?;
        let key = decode(i + 1, &r.key)?;
        let value = decode(i + 1, &r.value)?;
        records.push((r.tree, key, value));
    }
    match trailer {
        Some(t) if t.records == records.len() as u64 => {}
        Some(t) => {
            return Err(BackupError::Format {
                line: records.len() + 2,
                reason: format!(
                    "the end marker counts {} records but the file has {}",
                    t.records,
                    records.len()
                ),
            })
        }
        None => {
            return Err(BackupError::Format {
                line: records.len() + 2,
                reason: "no end marker: the backup is truncated".into(),
            })
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
