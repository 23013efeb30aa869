//! Clocks. The engine never reads the wall clock itself: `serve` gives it a
//! [`SystemClock`], `replay` and tests a [`ManualClock`] they advance.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{TimeZone, Utc};

use crate::domain::Timestamp;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// Wall-clock time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Utc::now()
    }
}

fn from_millis(ms: i64) -> Timestamp {
    Utc.timestamp_millis_opt(ms)
        .single()
        .expect("clock within chrono's range")
}

/// Wall-clock time, except while pinned: start-up pins it to each journal
/// entry's receive time (and the deadlines between) while it re-applies the
/// journal, so recovery runs as the original deliveries did, with the same
/// incident ids and notification keys. Pinned time has millisecond
/// resolution and never goes backwards.
#[derive(Debug)]
pub struct RecoveryClock {
    /// Unix milliseconds, or `i64::MIN` for the wall clock.
    pinned: AtomicI64,
}

impl Default for RecoveryClock {
    fn default() -> Self {
        RecoveryClock {
            pinned: AtomicI64::new(i64::MIN),
        }
    }
}

impl RecoveryClock {
    /// Pins the clock to `t`, or keeps it where it is if that is later.
    pub fn pin(&self, t: Timestamp) {
        self.pinned
            .fetch_max(t.timestamp_millis(), Ordering::SeqCst);
    }

    /// Back to the wall clock.
    pub fn release(&self) {
        self.pinned.store(i64::MIN, Ordering::SeqCst);
    }
}

impl Clock for RecoveryClock {
    fn now(&self) -> Timestamp {
        match self.pinned.load(Ordering::SeqCst) {
            i64::MIN => Utc::now(),
            ms => from_millis(ms),
        }
    }
}

/// A clock that only moves when told to, with millisecond resolution. Time never
/// goes backwards: setting an earlier time is ignored.
#[derive(Debug)]
pub struct ManualClock {
    millis: AtomicI64,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            millis: AtomicI64::new(start.timestamp_millis()),
        }
    }

    /// Moves the clock to `t` if `t` is later than now.
    pub fn set(&self, t: Timestamp) {
        self.millis
            .fetch_max(t.timestamp_millis(), Ordering::SeqCst);
    }

    pub fn advance(&self, d: chrono::Duration) {
        self.millis
            .fetch_add(d.num_milliseconds(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        from_millis(self.millis.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_never_goes_back() {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let c = ManualClock::new(t0);
        c.advance(chrono::Duration::hours(6));
        assert_eq!(c.now(), t0 + chrono::Duration::hours(6));
        c.set(t0);
        assert_eq!(c.now(), t0 + chrono::Duration::hours(6));
    }
}
