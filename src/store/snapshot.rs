//! Snapshot files: the whole alert and incident state, written beside the
//! sled database rather than inside it, so a snapshot never sits in sled's
//! page cache.
//!
//! Layout: `<store.path>/snapshots/<generation, 20 digits>.snapshot`. A file
//! is a magic line followed by frames, each `tag (1 byte) ++ length (u32, big
//! endian) ++ payload ++ CRC-32 of tag, length and payload (u32)`:
//!
//! - `h`: header, JSON `{"generation", "applied"}` (the journal watermark the
//!   state reflects);
//! - `a` / `i`: a chunk of alert states / incidents, a JSON array;
//! - `e`: end, JSON `{"alerts", "incidents", "frames"}`, and nothing after it.
//!
//! A file missing its end frame, with a bad checksum or a count that does not
//! match is torn or damaged, and is refused as a whole.
//!
//! Writing is crash-safe in this order: the frames go to `<name>.tmp`, which
//! is fsynced and renamed over the final name, then the folder is fsynced;
//! only then does the store record the generation and watermark in its `meta`
//! tree (one atomic batch, flushed). A crash before that leaves the previous
//! generation and watermark in force; the stray file is removed on the next
//! open. The previous generation's file is kept as a fallback (see
//! [`super::Store::load_snapshot`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::domain::{AlertState, Incident};

const MAGIC: &[u8] = b"stormcast-snapshot/1\n";
/// Folder inside the store's path.
pub const SNAPSHOT_DIR: &str = "snapshots";
const SUFFIX: &str = ".snapshot";
const TMP_SUFFIX: &str = ".snapshot.tmp";

/// Records per chunk, or bytes, whichever comes first: bounds what one frame
/// holds in memory while writing and reading.
const CHUNK_RECORDS: usize = 2000;
const CHUNK_BYTES: usize = 1 << 20;
/// Refuses frames larger than this before allocating them (a damaged length).
const MAX_FRAME: u32 = 256 << 20;

const TAG_HEADER: u8 = b'h';
const TAG_ALERTS: u8 = b'a';
const TAG_INCIDENTS: u8 = b'i';
const TAG_END: u8 = b'e';

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    generation: u64,
    applied: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct End {
    alerts: u64,
    incidents: u64,
    frames: u64,
}

/// A snapshot read back whole.
#[derive(Debug, Default)]
pub struct LoadedSnapshot {
    pub generation: u64,
    /// The journal watermark the state reflects.
    pub applied: u64,
    pub alerts: Vec<AlertState>,
    pub incidents: Vec<Incident>,
}

/// Where snapshot files live: a folder for stores on disk, memory for
/// [`super::Store::temporary`] stores. Cheap to clone.
#[derive(Clone, Debug)]
pub enum SnapshotFiles {
    Dir(PathBuf),
    Memory(Arc<Mutex<BTreeMap<u64, Arc<Vec<u8>>>>>),
}

impl SnapshotFiles {
    /// The folder for the store at `store_path`.
    pub fn beside(store_path: &Path) -> Self {
        SnapshotFiles::Dir(store_path.join(SNAPSHOT_DIR))
    }

    pub fn memory() -> Self {
        SnapshotFiles::Memory(Default::default())
    }

    /// The file name of `generation` (also its name in backups).
    pub fn file_name(generation: u64) -> String {
        format!("{generation:020}{SUFFIX}")
    }

    /// The path of `generation`, for messages (`<memory>/…` for in-memory stores).
    pub fn display(&self, generation: u64) -> String {
        match self {
            SnapshotFiles::Dir(d) => d.join(Self::file_name(generation)).display().to_string(),
            SnapshotFiles::Memory(_) => format!("<memory>/{}", Self::file_name(generation)),
        }
    }

    /// Generations present, ascending, and leftover temporary files.
    pub fn list(&self) -> std::io::Result<(Vec<u64>, Vec<PathBuf>)> {
        match self {
            SnapshotFiles::Memory(m) => Ok((
                m.lock().expect("snapshot files").keys().copied().collect(),
                Vec::new(),
            )),
            SnapshotFiles::Dir(d) => {
                let entries = match std::fs::read_dir(d) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Ok((Vec::new(), Vec::new()))
                    }
                    Err(e) => return Err(e),
                };
                let (mut gens, mut tmp) = (Vec::new(), Vec::new());
                for e in entries {
                    let e = e?;
                    let name = e.file_name();
                    let Some(name) = name.to_str() else { continue };
                    if name.ends_with(TMP_SUFFIX) {
                        tmp.push(e.path());
                    } else if let Some(g) = name
                        .strip_suffix(SUFFIX)
                        .and_then(|g| g.parse::<u64>().ok())
                    {
                        gens.push(g);
                    }
                }
                gens.sort_unstable();
                Ok((gens, tmp))
            }
        }
    }

    /// Total bytes of the files, for the store size metric.
    pub fn bytes(&self) -> u64 {
        match self {
            SnapshotFiles::Memory(m) => m
                .lock()
                .expect("snapshot files")
                .values()
                .map(|v| v.len() as u64)
                .sum(),
            SnapshotFiles::Dir(d) => std::fs::read_dir(d)
                .map(|es| {
                    es.filter_map(|e| e.ok()?.metadata().ok())
                        .map(|m| m.len())
                        .sum()
                })
                .unwrap_or(0),
        }
    }

    /// Writes a complete snapshot as `generation` and makes it durable
    /// (file, rename, folder). Returns the counts written.
    pub fn write<'a>(
        &self,
        generation: u64,
        applied: u64,
        alerts: impl Iterator<Item = &'a AlertState>,
        incidents: impl Iterator<Item = &'a Incident>,
    ) -> std::io::Result<(usize, usize)> {
        match self {
            SnapshotFiles::Memory(m) => {
                let mut buf = Vec::new();
                let counts = encode(&mut buf, generation, applied, alerts, incidents)?;
                m.lock()
                    .expect("snapshot files")
                    .insert(generation, Arc::new(buf));
                Ok(counts)
            }
            SnapshotFiles::Dir(d) => {
                std::fs::create_dir_all(d)?;
                let path = d.join(Self::file_name(generation));
                let tmp = d.join(format!("{generation:020}{TMP_SUFFIX}"));
                let written: std::io::Result<(usize, usize)> = (|| {
                    let file = SyncEvery::new(File::create(&tmp)?);
                    let mut out = BufWriter::with_capacity(1 << 16, file);
                    let counts = encode(&mut out, generation, applied, alerts, incidents)?;
                    let file = out.into_inner().map_err(|e| e.into_error())?.file;
                    file.sync_all()?;
                    drop(file);
                    std::fs::rename(&tmp, &path)?;
                    Ok(counts)
                })();
                if written.is_err() {
                    // A full disk must not fill up further with partial files.
                    let _ = std::fs::remove_file(&tmp);
                }
                let counts = written?;
                sync_dir(d)?;
                Ok(counts)
            }
        }
    }

    /// Reads and checks `generation` whole.
    pub fn read(&self, generation: u64) -> Result<LoadedSnapshot, String> {
        self.read_as(generation, true)
    }

    /// Checks `generation`'s framing and checksums without decoding the
    /// records (backups: the state need not fit in memory twice).
    pub fn verify(&self, generation: u64) -> Result<(), String> {
        self.read_as(generation, false).map(drop)
    }

    fn read_as(&self, generation: u64, records: bool) -> Result<LoadedSnapshot, String> {
        let loaded = match self {
            SnapshotFiles::Memory(m) => {
                let bytes = in_memory(m, generation).ok_or_else(|| "missing".to_owned())?;
                decode(&mut bytes.as_slice(), records)?
            }
            SnapshotFiles::Dir(d) => {
                let path = d.join(Self::file_name(generation));
                let file = File::open(&path).map_err(|e| e.to_string())?;
                decode(&mut BufReader::with_capacity(1 << 16, file), records)?
            }
        };
        if loaded.generation != generation {
            return Err(format!("the header names generation {}", loaded.generation));
        }
        Ok(loaded)
    }

    /// The raw bytes of `generation`, for backups.
    pub fn open_raw(&self, generation: u64) -> std::io::Result<Box<dyn Read + '_>> {
        match self {
            SnapshotFiles::Memory(m) => {
                let bytes = in_memory(m, generation)
                    .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
                Ok(Box::new(std::io::Cursor::new(bytes.to_vec())))
            }
            SnapshotFiles::Dir(d) => Ok(Box::new(File::open(d.join(Self::file_name(generation)))?)),
        }
    }

    /// Removes `generation` (absent is fine).
    pub fn remove(&self, generation: u64) -> std::io::Result<()> {
        match self {
            SnapshotFiles::Memory(m) => {
                m.lock().expect("snapshot files").remove(&generation);
                Ok(())
            }
            SnapshotFiles::Dir(d) => {
                match std::fs::remove_file(d.join(Self::file_name(generation))) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                }
            }
        }
    }

    /// Renames a damaged `generation` aside (`….snapshot.damaged`) so it is
    /// kept for inspection but never read again.
    pub fn set_aside(&self, generation: u64) -> std::io::Result<()> {
        match self {
            SnapshotFiles::Memory(_) => self.remove(generation),
            SnapshotFiles::Dir(d) => {
                let path = d.join(Self::file_name(generation));
                let aside = d.join(format!("{}.damaged", Self::file_name(generation)));
                match std::fs::rename(&path, aside) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => sync_dir(d),
                }
            }
        }
    }
}

/// Checks a snapshot held in memory (framing, checksums) and returns the
/// generation its header names.
pub fn verify_bytes(mut bytes: &[u8]) -> Result<u64, String> {
    decode(&mut bytes, false).map(|s| s.generation)
}

fn sync_dir(d: &Path) -> std::io::Result<()> {
    File::open(d)?.sync_all()
}

/// The bytes of `generation` in an in-memory store.
fn in_memory(m: &Mutex<BTreeMap<u64, Arc<Vec<u8>>>>, generation: u64) -> Option<Arc<Vec<u8>>> {
    m.lock().expect("snapshot files").get(&generation).cloned()
}

/// Bytes written between intermediate syncs of a snapshot file.
const SYNC_EVERY_BYTES: u64 = 8 << 20;

/// A file that syncs its data every [`SYNC_EVERY_BYTES`]. A snapshot of a
/// million alerts is hundreds of megabytes; left dirty for one final fsync,
/// its writeback would hold up the journal's group-commit fsyncs (the file
/// system commits them together) and stall acknowledgements for seconds.
struct SyncEvery {
    file: File,
    since: u64,
}

impl SyncEvery {
    fn new(file: File) -> Self {
        SyncEvery { file, since: 0 }
    }
}

impl Write for SyncEvery {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.since += n as u64;
        if self.since >= SYNC_EVERY_BYTES {
            self.file.sync_data()?;
            self.since = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

fn frame(out: &mut dyn Write, tag: u8, payload: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|l| *l <= MAX_FRAME)
        .ok_or_else(|| std::io::Error::other("snapshot frame too large"))?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[tag]);
    crc.update(&len.to_be_bytes());
    crc.update(payload);
    out.write_all(&[tag])?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(payload)?;
    out.write_all(&crc.finalize().to_be_bytes())
}

/// Writes `items` as chunk frames tagged `tag`, one chunk in memory at a time.
fn chunks<'a, T: Serialize + 'a>(
    out: &mut dyn Write,
    tag: u8,
    items: impl Iterator<Item = &'a T>,
    frames: &mut u64,
) -> std::io::Result<usize> {
    let (mut written, mut in_chunk) = (0usize, 0usize);
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK_BYTES + (CHUNK_BYTES >> 2));
    for item in items {
        buf.push(if in_chunk == 0 { b'[' } else { b',' });
        serde_json::to_writer(&mut buf, item).expect("snapshot serialises");
        in_chunk += 1;
        written += 1;
        if in_chunk == CHUNK_RECORDS || buf.len() >= CHUNK_BYTES {
            buf.push(b']');
            frame(out, tag, &buf)?;
            *frames += 1;
            buf.clear();
            in_chunk = 0;
        }
    }
    if in_chunk > 0 {
        buf.push(b']');
        frame(out, tag, &buf)?;
        *frames += 1;
    }
    Ok(written)
}

fn encode<'a>(
    out: &mut dyn Write,
    generation: u64,
    applied: u64,
    alerts: impl Iterator<Item = &'a AlertState>,
    incidents: impl Iterator<Item = &'a Incident>,
) -> std::io::Result<(usize, usize)> {
    out.write_all(MAGIC)?;
    let header = serde_json::to_vec(&Header {
        generation,
        applied,
    })
    .expect("header serialises");
    frame(out, TAG_HEADER, &header)?;
    let mut frames = 1;
    let a = chunks(out, TAG_ALERTS, alerts, &mut frames)?;
    let i = chunks(out, TAG_INCIDENTS, incidents, &mut frames)?;
    let end = serde_json::to_vec(&End {
        alerts: a as u64,
        incidents: i as u64,
        frames,
    })
    .expect("end serialises");
    frame(out, TAG_END, &end)?;
    out.flush()?;
    Ok((a, i))
}

/// Reads one frame; `None` at a clean end of input.
fn read_frame(input: &mut dyn Read, at: u64) -> Result<Option<(u8, Vec<u8>)>, String> {
    let mut head = [0u8; 5];
    let mut got = 0;
    while got < head.len() {
        match input.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(format!("torn frame {at}: the file ends inside it")),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    let tag = head[0];
    let len = u32::from_be_bytes(head[1..].try_into().expect("4 bytes"));
    if len > MAX_FRAME {
        return Err(format!("frame {at}: length {len} is impossible"));
    }
    let mut payload = vec![0u8; len as usize];
    let mut crc_bytes = [0u8; 4];
    input
        .read_exact(&mut payload)
        .and_then(|_| input.read_exact(&mut crc_bytes))
        .map_err(|_| format!("torn frame {at}: the file ends inside it"))?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head);
    crc.update(&payload);
    if crc.finalize() != u32::from_be_bytes(crc_bytes) {
        return Err(format!("frame {at}: checksum mismatch"));
    }
    Ok(Some((tag, payload)))
}

/// Reads a snapshot; without `records`, checks the framing, checksums and
/// frame count only.
fn decode(input: &mut dyn Read, records: bool) -> Result<LoadedSnapshot, String> {
    let mut magic = [0u8; MAGIC.len()];
    input
        .read_exact(&mut magic)
        .map_err(|_| "too short to be a snapshot".to_owned())?;
    if magic != MAGIC {
        return Err("not a stormcast snapshot file".into());
    }
    let json = |what: &str, at: u64, e: serde_json::Error| format!("frame {at} ({what}): {e}");
    let mut out = LoadedSnapshot::default();
    let mut frames = 0u64;
    let mut end = None;
    while let Some((tag, payload)) = read_frame(input, frames)? {
        if end.is_some() {
            return Err("data after the end frame".into());
        }
        match (frames, tag) {
            (0, TAG_HEADER) => {
                let h: Header =
                    serde_json::from_slice(&payload).map_err(|e| json("header", 0, e))?;
                out.generation = h.generation;
                out.applied = h.applied;
            }
            (0, _) => return Err("the first frame is not a header".into()),
            (_, TAG_ALERTS | TAG_INCIDENTS) if !records => {}
            (_, TAG_ALERTS) => out.alerts.extend(
                serde_json::from_slice::<Vec<AlertState>>(&payload)
                    .map_err(|e| json("alerts", frames, e))?,
            ),
            (_, TAG_INCIDENTS) => out.incidents.extend(
                serde_json::from_slice::<Vec<Incident>>(&payload)
                    .map_err(|e| json("incidents", frames, e))?,
            ),
            (_, TAG_END) => {
                end = Some(
                    serde_json::from_slice::<End>(&payload).map_err(|e| json("end", frames, e))?,
                )
            }
            (_, t) => return Err(format!("frame {frames}: unknown tag {t}")),
        }
        frames += 1;
    }
    let Some(end) = end else {
        return Err("no end frame: the file is torn".into());
    };
    if end.frames + 1 != frames
        || records
            && (end.alerts != out.alerts.len() as u64
                || end.incidents != out.incidents.len() as u64)
    {
        return Err(format!(
            "the end frame counts {} frames, {} alerts, {} incidents; the file has {}, {}, {}",
            end.frames + 1,
            end.alerts,
            end.incidents,
            frames,
            out.alerts.len(),
            out.incidents.len()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intermediate_syncs_write_every_byte_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let data: Vec<u8> = (0..(SYNC_EVERY_BYTES * 2 + 12_345))
            .map(|i| (i % 251) as u8)
            .collect();
        let mut out =
            BufWriter::with_capacity(1 << 16, SyncEvery::new(File::create(&path).unwrap()));
        out.write_all(&data).unwrap();
        let inner = out.into_inner().map_err(|e| e.into_error()).unwrap();
        assert!(inner.since < SYNC_EVERY_BYTES, "synced along the way");
        inner.file.sync_all().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    fn sample() -> (Vec<AlertState>, Vec<u8>) {
        let alerts: Vec<AlertState> = (0..5).map(crate::store::tests::state).collect();
        let mut buf = Vec::new();
        encode(&mut buf, 3, 42, alerts.iter(), std::iter::empty()).unwrap();
        (alerts, buf)
    }

    #[test]
    fn round_trip() {
        let (alerts, buf) = sample();
        let s = decode(&mut buf.as_slice(), true).unwrap();
        assert_eq!((s.generation, s.applied), (3, 42));
        assert_eq!(s.alerts, alerts);
        assert!(s.incidents.is_empty());
    }

    #[test]
    fn every_truncation_and_every_bit_flip_is_detected() {
        let (_, buf) = sample();
        for len in 0..buf.len() {
            assert!(
                decode(&mut &buf[..len], true).is_err(),
                "truncated to {len} bytes of {}",
                buf.len()
            );
        }
        for at in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[at] ^= 1 << bit;
                assert!(
                    decode(&mut bad.as_slice(), false).is_err(),
                    "bit {bit} of byte {at} flipped"
                );
            }
        }
        let mut longer = buf.clone();
        longer.extend_from_slice(&buf[MAGIC.len()..]);
        let err = decode(&mut longer.as_slice(), true).unwrap_err();
        assert!(err.contains("after the end frame"), "{err}");
    }
}
