//! Journal records: one raw delivery, exactly as received, with its receive
//! time and source. Encoded as a JSON header line followed by the raw body, so
//! the journal can be exported as `replay` input without re-encoding.

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
}

impl JournalEntry {
    pub fn encode(&self) -> Vec<u8> {
        let header = serde_json::to_vec(&Header {
            at: self.received_at,
            source: self.source.clone(),
        })
        .expect("header serialises");
        let mut out = Vec::with_capacity(header.len() + 1 + self.body.len());
        out.extend_from_slice(&header);
        out.push(b'\n');
        out.extend_from_slice(&self.body);
        out
    }

    pub fn decode(v: &[u8]) -> Result<JournalEntry, String> {
        let nl = v.iter().position(|b| *b == b'\n').ok_or("no header line")?;
        let h: Header = serde_json::from_slice(&v[..nl]).map_err(|e| e.to_string())?;
        Ok(JournalEntry {
            received_at: h.at,
            source: h.source,
            body: v[nl + 1..].to_vec(),
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
