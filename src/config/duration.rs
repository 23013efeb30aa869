//! Prometheus-style durations (`30s`, `5m`, `1h30m`, `7d`), as Alertmanager configs use.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written the way Prometheus and Alertmanager write them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PromDuration(pub Duration);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {0:?}: expected e.g. 30s, 5m, 1h30m, 7d (units ms, s, m, h, d, w, y)")]
pub struct DurationError(pub String);

const UNITS: [(&str, u64); 7] = [
    ("y", 365 * 24 * 3600 * 1000),
    ("w", 7 * 24 * 3600 * 1000),
    ("d", 24 * 3600 * 1000),
    ("h", 3600 * 1000),
    ("m", 60 * 1000),
    ("s", 1000),
    ("ms", 1),
];

impl PromDuration {
    pub const fn secs(s: u64) -> Self {
        PromDuration(Duration::from_secs(s))
    }

    pub const fn mins(m: u64) -> Self {
        PromDuration(Duration::from_secs(m * 60))
    }

    pub const fn hours(h: u64) -> Self {
        PromDuration(Duration::from_secs(h * 3600))
    }

    pub fn as_std(self) -> Duration {
        self.0
    }

    pub fn as_chrono(self) -> chrono::Duration {
        chrono::Duration::from_std(self.0).unwrap_or(chrono::Duration::MAX)
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl FromStr for PromDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DurationError(s.to_owned());
        if s == "0" {
            return Ok(PromDuration::default());
        }
        if s.is_empty() {
            return Err(err());
        }
        let mut rest = s;
        let mut total: u64 = 0;
        // Units must appear largest first, each at most once, as in Prometheus.
        let mut last_unit = 0usize;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(err());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| err())?;
            rest = &rest[digits..];
            let (idx, unit, ms) = UNITS
                .iter()
                .enumerate()
                .filter(|(_, (u, _))| rest.starts_with(u) && !(*u == "m" && rest.starts_with("ms")))
                .map(|(i, (u, ms))| (i + 1, *u, *ms))
                .next()
                .ok_or_else(err)?;
            if idx <= last_unit {
                return Err(err());
            }
            last_unit = idx;
            rest = &rest[unit.len()..];
            total = n
                .checked_mul(ms)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(err)?;
        }
        Ok(PromDuration(Duration::from_millis(total)))
    }
}

impl fmt::Display for PromDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0.as_millis() as u64;
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in UNITS {
            if ms >= size {
                write!(f, "{}{}", ms / size, unit)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for PromDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for PromDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PromDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_forms() {
        let p = |s: &str| s.parse::<PromDuration>().unwrap().0;
        assert_eq!(p("30s"), Duration::from_secs(30));
        assert_eq!(p("5m"), Duration::from_secs(300));
        assert_eq!(p("1h30m"), Duration::from_secs(5400));
        assert_eq!(p("7d"), Duration::from_secs(7 * 86400));
        assert_eq!(p("250ms"), Duration::from_millis(250));
        assert_eq!(p("1m500ms"), Duration::from_millis(60_500));
        assert_eq!(p("0"), Duration::ZERO);
    }

    #[test]
    fn rejects_bad_forms() {
        for bad in [
            "",
            "5",
            "m",
            "1.5h",
            "5m1h",
            "1h1h",
            "-1s",
            "5 m",
            "99999999999999999y",
        ] {
            assert!(bad.parse::<PromDuration>().is_err(), "{bad}");
        }
    }

    #[test]
    fn displays_round_trip() {
        for s in ["30s", "5m", "1h30m", "1d", "1w", "1m500ms"] {
            assert_eq!(s.parse::<PromDuration>().unwrap().to_string(), s);
        }
    }
}
