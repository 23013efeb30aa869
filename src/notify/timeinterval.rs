//! Alertmanager `time_intervals`: named sets of recurring time ranges that
//! routes use as `mute_time_intervals` and `active_time_intervals`.
//!
//! Semantics follow Alertmanager: every field given must match, an omitted
//! field matches everything, `times` end exclusively, negative days of the
//! month count from the end, and all of it is evaluated in `location`
//! (default UTC).

use chrono::{Datelike, Timelike};
use serde::{Deserialize, Serialize};

use crate::config::ConfigErrors;
use crate::domain::Timestamp;

/// A named time interval, as in Alertmanager's top-level `time_intervals`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TimeIntervalConfig {
    /// Name routes refer to.
    pub name: String,
    /// The interval matches when any of these ranges does.
    pub time_intervals: Vec<TimeRangeConfig>,
}

/// One recurring range; all given fields must match.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TimeRangeConfig {
    /// `[{start_time: "09:00", end_time: "17:00"}]`, end exclusive.
    pub times: Vec<TimeOfDay>,
    /// `monday`, `monday:friday`.
    pub weekdays: Vec<String>,
    /// `1`, `1:5`, `-1` (last day).
    pub days_of_month: Vec<String>,
    /// `january`, `1:3`.
    pub months: Vec<String>,
    /// `2026`, `2026:2027`.
    pub years: Vec<String>,
    /// IANA time zone (`Asia/Shanghai`); default UTC.
    pub location: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]

pub struct TimeOfDay {
    pub start_time: String,
    pub end_time: String,
}

/// A validated, ready-to-evaluate interval.
#[derive(Debug, Clone)]
pub struct TimeInterval {
    pub name: String,
    ranges: Vec<Range>,
}

#[derive(Debug, Clone)]
struct Range {
    times: Vec<(u32, u32)>,
    weekdays: Vec<(u32, u32)>,
    days: Vec<(i32, i32)>,
    months: Vec<(u32, u32)>,
    years: Vec<(i32, i32)>,
    tz: chrono_tz::Tz,
}

const WEEKDAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];
const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

fn parse_minutes(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return None;
    }
    Some(h * 60 + m)
}

fn parse_range<T: Copy + PartialOrd>(s: &str, one: impl Fn(&str) -> Option<T>) -> Option<(T, T)> {
    match s.split_once(':') {
        Some((a, b)) => Some((one(a.trim())?, one(b.trim())?)),
        None => {
            let v = one(s.trim())?;
            Some((v, v))
        }
    }
}

impl TimeIntervalConfig {
    /// Validates and compiles; errors carry `path` (`time_intervals[0]`).
    pub fn compile(&self, path: &str, errs: &mut ConfigErrors) -> TimeInterval {
        let mut ranges = Vec::new();
        for (i, r) in self.time_intervals.iter().enumerate() {
            let p = format!("{path}.time_intervals[{i}]");
            let mut range = Range {
                times: Vec::new(),
                weekdays: Vec::new(),
                days: Vec::new(),
                months: Vec::new(),
                years: Vec::new(),
                tz: chrono_tz::UTC,
            };
            for (j, t) in r.times.iter().enumerate() {
                match (parse_minutes(&t.start_time), parse_minutes(&t.end_time)) {
                    (Some(a), Some(b)) if a < b => range.times.push((a, b)),
                    _ => errs.push(
                        format!("{p}.times[{j}]"),
                        format!(
                            "invalid time range {:?}-{:?}: expected HH:MM with start before end",
                            t.start_time, t.end_time
                        ),
                    ),
                }
            }
            for (j, w) in r.weekdays.iter().enumerate() {
                let one = |s: &str| {
                    WEEKDAYS
                        .iter()
                        .position(|d| d.eq_ignore_ascii_case(s))
                        .map(|x| x as u32)
                };
                match parse_range(w, one) {
                    Some((a, b)) if a <= b => range.weekdays.push((a, b)),
                    _ => errs.push(
                        format!("{p}.weekdays[{j}]"),
                        format!("invalid weekday range {w:?}: expected e.g. monday:friday"),
                    ),
                }
            }
            for (j, d) in r.days_of_month.iter().enumerate() {
                let one = |s: &str| {
                    s.parse::<i32>()
                        .ok()
                        .filter(|v| *v != 0 && (-31..=31).contains(v))
                };
                match parse_range(d, one) {
                    Some(v) => range.days.push(v),
                    _ => errs.push(
                        format!("{p}.days_of_month[{j}]"),
                        format!("invalid day range {d:?}: expected 1..31 or -31..-1"),
                    ),
                }
            }
            for (j, m) in r.months.iter().enumerate() {
                let one = |s: &str| {
                    MONTHS
                        .iter()
                        .position(|x| x.eq_ignore_ascii_case(s))
                        .map(|x| x as u32 + 1)
                        .or_else(|| s.parse::<u32>().ok().filter(|v| (1..=12).contains(v)))
                };
                match parse_range(m, one) {
                    Some((a, b)) if a <= b => range.months.push((a, b)),
                    _ => errs.push(
                        format!("{p}.months[{j}]"),
                        format!("invalid month range {m:?}: expected e.g. january:march or 1:3"),
                    ),
                }
            }
            for (j, y) in r.years.iter().enumerate() {
                match parse_range(y, |s| s.parse::<i32>().ok()) {
                    Some((a, b)) if a <= b => range.years.push((a, b)),
                    _ => errs.push(
                        format!("{p}.years[{j}]"),
                        format!("invalid year range {y:?}"),
                    ),
                }
            }
            if let Some(loc) = &r.location {
                match loc.parse::<chrono_tz::Tz>() {
                    Ok(tz) => range.tz = tz,
                    Err(_) => errs.push(
                        format!("{p}.location"),
                        format!(
                            "unknown time zone {loc:?}: expected an IANA name like Asia/Shanghai"
                        ),
                    ),
                }
            }
            ranges.push(range);
        }
        TimeInterval {
            name: self.name.clone(),
            ranges,
        }
    }
}

fn days_in_month(year: i32, month: u32) -> i32 {
    let (ny, nm) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    chrono::NaiveDate::from_ymd_opt(ny, nm, 1)
        .and_then(|d| d.pred_opt())
        .map_or(31, |d| d.day() as i32)
}

impl TimeInterval {
    /// Whether `t` falls inside the interval.
    pub fn contains(&self, t: Timestamp) -> bool {
        self.ranges.iter().any(|r| r.contains(t))
    }
}

impl Range {
    fn contains(&self, t: Timestamp) -> bool {
        let local = t.with_timezone(&self.tz);
        let mins = local.hour() * 60 + local.minute();
        if !self.times.is_empty() && !self.times.iter().any(|(a, b)| mins >= *a && mins < *b) {
            return false;
        }
        let wd = local.weekday().num_days_from_sunday();
        if !self.weekdays.is_empty() && !self.weekdays.iter().any(|(a, b)| wd >= *a && wd <= *b) {
            return false;
        }
        if !self.days.is_empty() {
            let n = days_in_month(local.year(), local.month());
            let day = local.day() as i32;
            let abs = |d: i32| if d < 0 { n + d + 1 } else { d.min(n) };
            if !self
                .days
                .iter()
                .any(|(a, b)| day >= abs(*a) && day <= abs(*b))
            {
                return false;
            }
        }
        let m = local.month();
        if !self.months.is_empty() && !self.months.iter().any(|(a, b)| m >= *a && m <= *b) {
            return false;
        }
        let y = local.year();
        if !self.years.is_empty() && !self.years.iter().any(|(a, b)| y >= *a && y <= *b) {
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(yaml: &str) -> TimeInterval {
        let c: TimeIntervalConfig = serde_norway::from_str(yaml).unwrap();
        let mut errs = ConfigErrors::default();
        let ti = c.compile("time_intervals[0]", &mut errs);
        assert!(errs.is_empty(), "{errs}");
        ti
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn business_hours_in_shanghai() {
        let ti = compile(
            "name: office\ntime_intervals:\n- times: [{start_time: '09:00', end_time: '18:00'}]\n  weekdays: ['monday:friday']\n  location: Asia/Shanghai\n",
        );
        // 2026-11-23 is a Monday. 01:00Z is 09:00 in Shanghai.
        assert!(ti.contains(at("2026-11-23T01:00:00Z")));
        assert!(!ti.contains(at("2026-11-23T00:59:00Z")));
        // 18:00 local is exclusive.
        assert!(!ti.contains(at("2026-11-23T10:00:00Z")));
        // Saturday.
        assert!(!ti.contains(at("2026-11-28T02:00:00Z")));
    }

    #[test]
    fn last_day_of_month_and_months() {
        let ti = compile(
            "name: eom\ntime_intervals:\n- days_of_month: ['-1']\n  months: ['february']\n",
        );
        assert!(ti.contains(at("2027-02-28T12:00:00Z")));
        assert!(!ti.contains(at("2028-02-28T12:00:00Z"))); // leap year
        assert!(ti.contains(at("2028-02-29T12:00:00Z")));
        assert!(!ti.contains(at("2027-03-31T12:00:00Z")));
    }

    #[test]
    fn bad_values_have_paths() {
        let c: TimeIntervalConfig = serde_norway::from_str(
            "name: x\ntime_intervals:\n- times: [{start_time: '18:00', end_time: '09:00'}]\n  weekdays: [funday]\n  location: Mars/Olympus\n",
        )
        .unwrap();
        let mut errs = ConfigErrors::default();
        c.compile("time_intervals[0]", &mut errs);
        let paths: Vec<_> = errs.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "time_intervals[0].time_intervals[0].times[0]",
                "time_intervals[0].time_intervals[0].weekdays[0]",
                "time_intervals[0].time_intervals[0].location"
            ]
        );
    }
}
