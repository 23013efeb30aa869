//! Metric series: the offline formats (CSV, a `query_range` JSON body) and the
//! clean-up every forecast starts from (ordering, duplicates, NaN/Inf).

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// One series: its labels and its samples as (unix seconds, value).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(i64, f64)>,
}

impl Series {
    pub fn new(labels: BTreeMap<String, String>, points: Vec<(i64, f64)>) -> Self {
        Series { labels, points }
    }

    /// `{a="1", b="2"}`, or the metric name first when there is one.
    pub fn name(&self) -> String {
        let mut out = self.labels.get("__name__").cloned().unwrap_or_default();
        let rest: Vec<String> = self
            .labels
            .iter()
            .filter(|(k, _)| k.as_str() != "__name__")
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        if !rest.is_empty() || out.is_empty() {
            out.push('{');
            out.push_str(&rest.join(", "));
            out.push('}');
        }
        out
    }
}

/// An input problem located by line (CSV) or series index (JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// 1-based line number, when the format has lines.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Every problem found in one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputErrors(pub Vec<InputError>);

impl fmt::Display for InputErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 20;
        for (i, e) in self.0.iter().take(SHOWN).enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        if self.0.len() > SHOWN {
            write!(f, "\n... and {} more", self.0.len() - SHOWN)?;
        }
        Ok(())
    }
}

impl std::error::Error for InputErrors {}

fn one(line: Option<usize>, message: impl Into<String>) -> InputErrors {
    InputErrors(vec![InputError {
        line,
        message: message.into(),
    }])
}

/// Parses a timestamp: RFC3339, `YYYY-MM-DD HH:MM:SS[.fff]` (UTC), or unix
/// seconds (fractions allowed, rounded to the second).
pub fn parse_timestamp(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        if !secs.is_finite() || !(0.0..=1e11).contains(&secs) {
            return Err(format!("timestamp {s:?} is out of range for unix seconds"));
        }
        return Ok(secs.round() as i64);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp());
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%.f",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(Utc.from_utc_datetime(&t).timestamp());
        }
    }
    Err(format!(
        "timestamp {s:?} is not RFC3339, `YYYY-MM-DD HH:MM:SS` (UTC) or unix seconds"
    ))
}

/// Parses a sample value. `NaN`, `+Inf` and `-Inf` are accepted (Prometheus
/// writes them) and later treated as gaps.
pub fn parse_value(s: &str) -> Result<f64, String> {
    let s = s.trim();
    match s {
        "NaN" | "nan" => return Ok(f64::NAN),
        "+Inf" | "Inf" | "inf" => return Ok(f64::INFINITY),
        "-Inf" | "-inf" => return Ok(f64::NEG_INFINITY),
        _ => {}
    }
    s.parse::<f64>()
        .map_err(|_| format!("value {s:?} is not a number"))
}

/// One CSV row as read, in input order, with its 1-based line number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CsvRow {
    pub line: usize,
    pub timestamp: i64,
    pub value: f64,
}

/// Parses a `timestamp,value` CSV with that header. Every unparsable row is
/// reported with its line number; nothing is silently skipped.
pub fn parse_csv(text: &str) -> Result<Vec<CsvRow>, InputErrors> {
    let mut errs = Vec::new();
    let mut rows = Vec::new();
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((hline, header)) = lines.next() else {
        return Err(one(
            None,
            "empty input: expected a `timestamp,value` header",
        ));
    };
    let cols: Vec<String> = header
        .trim_start_matches('\u{feff}')
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_ascii_lowercase())
        .collect();
    let ti = cols.iter().position(|c| c == "timestamp" || c == "time");
    let vi = cols.iter().position(|c| c == "value");
    let (Some(ti), Some(vi)) = (ti, vi) else {
        return Err(one(
            Some(hline + 1),
            format!("header {header:?} must name the columns `timestamp,value`"),
        ));
    };
    for (i, line) in lines {
        let no = i + 1;
        if line.trim_start().starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line
            .split(',')
            .map(|f| f.trim().trim_matches('"'))
            .collect();
        if fields.len() != cols.len() {
            errs.push(InputError {
                line: Some(no),
                message: format!("expected {} fields, found {}", cols.len(), fields.len()),
            });
            continue;
        }
        match (parse_timestamp(fields[ti]), parse_value(fields[vi])) {
            (Ok(timestamp), Ok(value)) => rows.push(CsvRow {
                line: no,
                timestamp,
                value,
            }),
            (Err(e), _) | (_, Err(e)) => errs.push(InputError {
                line: Some(no),
                message: e,
            }),
        }
    }
    if !errs.is_empty() {
        return Err(InputErrors(errs));
    }
    Ok(rows)
}

#[derive(Deserialize)]
struct PromEnvelope {
    status: String,
    #[serde(default)]
    data: Option<PromData>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct PromData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct PromSeries {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, String)>,
    #[serde(default)]
    value: Option<(f64, String)>,
}

/// Parses a Prometheus `/api/v1/query_range` (matrix) or `/api/v1/query`
/// (vector or scalar) response body into series.
pub fn parse_prom_response(body: &[u8]) -> Result<Vec<Series>, InputErrors> {
    let env: PromEnvelope = serde_json::from_slice(body).map_err(|e| {
        one(
            Some(e.line()),
            format!("not a Prometheus API response: {e}"),
        )
    })?;
    if env.status != "success" {
        return Err(one(
            None,
            format!(
                "Prometheus returned {}: {} {}",
                env.status,
                env.error_type.unwrap_or_default(),
                env.error.unwrap_or_default()
            ),
        ));
    }
    let Some(data) = env.data else {
        return Err(one(None, "response has no `data`"));
    };
    let mut out = Vec::new();
    let mut errs = Vec::new();
    match data.result_type.as_str() {
        "matrix" | "vector" => {
            let series: Vec<PromSeries> = serde_json::from_value(data.result)
                .map_err(|e| one(None, format!("data.result: {e}")))?;
            for (i, s) in series.into_iter().enumerate() {
                let mut points = Vec::with_capacity(s.values.len() + 1);
                for (t, v) in s.values.iter().chain(s.value.iter()) {
                    match parse_value(v) {
                        Ok(v) => points.push((t.round() as i64, v)),
                        Err(e) => errs.push(InputError {
                            line: None,
                            message: format!("data.result[{i}]: {e}"),
                        }),
                    }
                }
                out.push(Series::new(s.metric, points));
            }
        }
        "scalar" => {
            let (t, v): (f64, String) = serde_json::from_value(data.result)
                .map_err(|e| one(None, format!("data.result: {e}")))?;
            let v = parse_value(&v).map_err(|e| one(None, format!("data.result: {e}")))?;
            out.push(Series::new(BTreeMap::new(), vec![(t.round() as i64, v)]));
        }
        other => {
            return Err(one(
                None,
                format!("unsupported resultType {other:?} (expected matrix, vector or scalar)"),
            ))
        }
    }
    if !errs.is_empty() {
        return Err(InputErrors(errs));
    }
    Ok(out)
}

/// Reads an offline input: a Prometheus JSON body if it starts with `{`,
/// otherwise a `timestamp,value` CSV (one unlabelled series).
pub fn parse_input(text: &str) -> Result<Vec<Series>, InputErrors> {
    if text.trim_start().starts_with('{') {
        parse_prom_response(text.as_bytes())
    } else {
        let rows = parse_csv(text)?;
        Ok(vec![Series::new(
            BTreeMap::new(),
            rows.into_iter().map(|r| (r.timestamp, r.value)).collect(),
        )])
    }
}

/// What [`clean`] had to do to a series; surfaced as notes in the output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanReport {
    /// NaN or ±Inf samples dropped (treated as gaps).
    pub non_finite: usize,
    /// Samples sharing a timestamp with a later one (the later value wins).
    pub duplicates: usize,
    /// Whether the input was out of time order (it is sorted).
    pub reordered: bool,
}

impl CleanReport {
    pub fn notes(&self) -> Vec<String> {
        let mut n = Vec::new();
        if self.non_finite > 0 {
            n.push(format!("{} NaN/Inf samples ignored", self.non_finite));
        }
        if self.duplicates > 0 {
            n.push(format!(
                "{} duplicate timestamps (kept the last value)",
                self.duplicates
            ));
        }
        if self.reordered {
            n.push("samples were out of time order and were sorted".into());
        }
        n
    }
}

/// Sorts by time (stably), keeps the last value of duplicate timestamps and
/// drops non-finite values.
pub fn clean(points: &[(i64, f64)]) -> (Vec<(i64, f64)>, CleanReport) {
    let mut rep = CleanReport::default();
    let mut v: Vec<(i64, f64)> = Vec::with_capacity(points.len());
    for &(t, y) in points {
        if y.is_finite() {
            v.push((t, y));
        } else {
            rep.non_finite += 1;
        }
    }
    if v.windows(2).any(|w| w[1].0 < w[0].0) {
        rep.reordered = true;
        v.sort_by_key(|p| p.0);
    }
    let mut out: Vec<(i64, f64)> = Vec::with_capacity(v.len());
    for p in v {
        match out.last_mut() {
            Some(last) if last.0 == p.0 => {
                *last = p;
                rep.duplicates += 1;
            }
            _ => out.push(p),
        }
    }
    (out, rep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_three_formats() {
        assert_eq!(parse_timestamp("1700000000").unwrap(), 1_700_000_000);
        assert_eq!(parse_timestamp("1700000000.6").unwrap(), 1_700_000_001);
        assert_eq!(
            parse_timestamp("2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000
        );
        assert_eq!(
            parse_timestamp("2023-11-15T00:13:20+02:00").unwrap(),
            1_700_000_000
        );
        assert_eq!(
            parse_timestamp("2023-11-14 22:13:20").unwrap(),
            1_700_000_000
        );
        assert!(parse_timestamp("yesterday").is_err());
        assert!(parse_timestamp("-5").is_err());
    }

    #[test]
    fn csv_reports_every_bad_line() {
        let text = "timestamp,value\n1700000000,1\nbad,2\n1700000600,x\n\n1700000900,NaN\n1700001200,3,4\n";
        let errs = parse_csv(text).unwrap_err();
        let lines: Vec<_> = errs.0.iter().map(|e| e.line.unwrap()).collect();
        assert_eq!(lines, vec![3, 4, 7]);
        assert!(errs.to_string().contains("line 3: timestamp \"bad\""));
        assert!(parse_csv("").is_err());
        assert!(parse_csv("a,b\n1,2\n").unwrap_err().0[0]
            .message
            .contains("header"));
        let ok = parse_csv("value,timestamp\n5,2023-11-14 22:13:20\n").unwrap();
        assert_eq!(ok[0].timestamp, 1_700_000_000);
        assert_eq!(ok[0].value, 5.0);
    }

    #[test]
    fn prometheus_matrix_and_errors() {
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"__name__":"up","node":"a"},"values":[[1700000000,"1"],[1700000060.5,"NaN"]]},
            {"metric":{"node":"b"},"values":[[1700000000,"2"]]}]}}"#;
        let s = parse_prom_response(body).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].points[1].0, 1_700_000_061);
        assert!(s[0].points[1].1.is_nan());
        assert_eq!(s[0].name(), "up{node=\"a\"}");
        let err = parse_prom_response(
            br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("bad_data"), "{err}");
        assert!(parse_prom_response(b"<html>").is_err());
    }

    #[test]
    fn clean_sorts_dedups_and_drops_non_finite() {
        let (c, r) = clean(&[
            (3, 1.0),
            (1, f64::NAN),
            (2, 2.0),
            (2, 5.0),
            (4, f64::INFINITY),
        ]);
        assert_eq!(c, vec![(2, 5.0), (3, 1.0)]);
        assert_eq!(r.non_finite, 2);
        assert_eq!(r.duplicates, 1);
        assert!(r.reordered);
    }
}
