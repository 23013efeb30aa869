//! Journal records: one raw delivery, exactly as received, with its receive
//! time and source. Encoded as a JSON header line followed by the body,
//! LZ4-compressed when the header says `"enc":"lz4"` (webhook JSON shrinks
//! several times, which keeps sled's tree nodes small enough to stay out of
//! its blob files); records without `enc` hold the body as it came.

use crate::domain::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    pub received_at: Timestamp,
    pub source: String,
    /// The request body, byte for byte.
    pub body: Vec<u8>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    at: Timestamp,
    source: String,
    /// How the body is encoded: absent for the raw body, `lz4` for an LZ4
    /// block with its length prepended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    enc: Option<String>,
}

/// Bodies at least this long are compressed; shorter ones gain little.
const COMPRESS_FROM: usize = 512;

impl JournalEntry {
    pub fn encode(&self) -> Vec<u8> {
        let compress = self.body.len() >= COMPRESS_FROM;
        let header = serde_json::to_vec(&Header {
            at: self.received_at,
            source: self.source.clone(),
            enc: compress.then(|| "lz4".to_owned()),
        })
        .expect("header serialises");
        let body = if compress {
            std::borrow::Cow::Owned(lz4_flex::compress_prepend_size(&self.body))
        } else {
            std::borrow::Cow::Borrowed(self.body.as_slice())
        };
        let mut out = Vec::with_capacity(header.len() + 1 + body.len());
        out.extend_from_slice(&header);
        out.push(b'\n');
        out.extend_from_slice(&body);
        out
    }

    pub fn decode(v: &[u8]) -> Result<JournalEntry, String> {
        let nl = v.iter().position(|b| *b == b'\n').ok_or("no header line")?;
        let h: Header = serde_json::from_slice(&v[..nl]).map_err(|e| e.to_string())?;
        let raw = &v[nl + 1..];
        let body = match h.enc.as_deref() {
            None => raw.to_vec(),
            Some("lz4") => {
                lz4_flex::decompress_size_prepended(raw).map_err(|e| format!("lz4 body: {e}"))?
            }
            Some(other) => return Err(format!("unknown body encoding {other:?}")),
        };
        Ok(JournalEntry {
            received_at: h.at,
            source: h.source,
            body,
        })
    }

    /// Reads only the receive time (for compaction).
    pub fn decode_time(v: &[u8]) -> Option<Timestamp> {
        let nl = v.iter().position(|b| *b == b'\n')?;
        serde_json::from_slice::<Header>(&v[..nl])
            .ok()
            .map(|h| h.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: Vec<u8>) -> JournalEntry {
        JournalEntry {
            received_at: "2026-11-30T04:00:00Z".parse().unwrap(),
            source: "prod".into(),
            body,
        }
    }

    #[test]
    fn bodies_round_trip_compressed_or_not() {
        let alert = r#"{"status":"firing","labels":{"alertname":"KubePodNotReady","pod":"p"}}"#;
        let big = format!(
            r#"{{"version":"4","alerts":[{}]}}"#,
            vec![alert; 200].join(",")
        );
        for body in [b"{}".to_vec(), big.clone().into_bytes()] {
            let e = entry(body);
            let v = e.encode();
            assert_eq!(JournalEntry::decode(&v).unwrap(), e);
            assert_eq!(JournalEntry::decode_time(&v), Some(e.received_at));
        }
        assert!(entry(big.clone().into_bytes()).encode().len() < big.len() / 4);
    }

    #[test]
    fn records_written_before_compression_still_read() {
        let old = b"{\"at\":\"2026-11-30T04:00:00Z\",\"source\":\"prod\"}\n{\"version\":\"4\"}";
        let e = JournalEntry::decode(old).unwrap();
        assert_eq!(e.body, br#"{"version":"4"}"#);
    }

    #[test]
    fn a_damaged_compressed_body_is_an_error() {
        let mut v = entry(vec![b'x'; 4096]).encode();
        let n = v.len();
        v.truncate(n - 10);
        assert!(JournalEntry::decode(&v).unwrap_err().contains("lz4"));
        let v = br#"{"at":"2026-11-30T04:00:00Z","source":"p","enc":"zz"}
x"#;
        assert!(JournalEntry::decode(v).unwrap_err().contains("zz"));
    }
}
