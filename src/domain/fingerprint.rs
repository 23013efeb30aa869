//! Alertmanager's label-set fingerprint (FNV-1a 64 over sorted name/value pairs).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const OFFSET: u64 = 14_695_981_039_346_656_037;
const PRIME: u64 = 1_099_511_628_211;
const SEPARATOR: u8 = 0xff;

/// A 64-bit label-set fingerprint, printed as 16 lowercase hex digits exactly as
/// Alertmanager prints it (`%016x`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub u64);

impl Fingerprint {
    /// Hashes `pairs`, which must already be sorted by name, the way
    /// `model.LabelsToSignature` does in prometheus/common.
    pub fn of_sorted<'a, I>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut h = OFFSET;
        let mut feed = |bytes: &[u8]| {
            for b in bytes {
                h ^= u64::from(*b);
                h = h.wrapping_mul(PRIME);
            }
        };
        for (name, value) in pairs {
            feed(name.as_bytes());
            feed(&[SEPARATOR]);
            feed(value.as_bytes());
            feed(&[SEPARATOR]);
        }
        Fingerprint(h)
    }

    pub fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        Some(Fingerprint(u64::from_be_bytes(b.try_into().ok()?)))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s, 16).map(Fingerprint)
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_label_set_is_the_fnv_offset() {
        assert_eq!(Fingerprint::of_sorted([]).0, OFFSET);
    }

    #[test]
    fn matches_prometheus_common_vectors() {
        // prometheus/common model/signature_test.go (the FNV-1a era that
        // Alertmanager's LabelSet.Fingerprint uses); pairs given sorted by name.
        // tests/alertmanager_e2e.rs checks against a real Alertmanager too.
        assert_eq!(
            Fingerprint::of_sorted([("fear", "love is not enough"), ("name", "garland, briggs")]).0,
            5_799_056_148_416_392_346
        );
    }

    #[test]
    fn round_trips_through_hex() {
        let f = Fingerprint(0x00ab_cdef_0123_4567);
        assert_eq!(f.to_string(), "00abcdef01234567");
        assert_eq!("00abcdef01234567".parse::<Fingerprint>().unwrap(), f);
    }
}
