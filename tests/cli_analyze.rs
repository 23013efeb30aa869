//! The `forecast`, `anomaly` and `report` commands end to end, on the files
//! in testdata/series.

use std::path::Path;
use std::process::Command;

fn stormcast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stormcast"))
}

fn data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/series")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn forecast_json_gives_exhaustion_confidence_and_points() {
    let out = stormcast()
        .args([
            "forecast",
            "--input",
            &data("nodes_matrix.json"),
            "--capacity",
            "100",
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let series = v["series"].as_array().unwrap();
    assert_eq!(series.len(), 4);
    // The leaking node comes first, with an RFC3339 exhaustion time.
    assert_eq!(series[0]["labels"]["instance"], "node-3");
    let at = series[0]["exhaustion_at"].as_str().unwrap();
    chrono::DateTime::parse_from_rfc3339(at).unwrap();
    assert!(series[0]["confidence"].as_f64().unwrap() > 0.9);
    let p = &series[0]["points"][0];
    assert!(p["lower"].as_f64().unwrap() <= p["value"].as_f64().unwrap());
    assert!(p["upper"].as_f64().unwrap() >= p["value"].as_f64().unwrap());
    for s in &series[1..] {
        assert!(s["exhaustion_at"].is_null(), "{s}");
        assert!(s["confidence"].as_f64().unwrap() < 0.5);
    }
}

#[test]
fn forecast_reports_bad_rows_with_line_numbers() {
    let out = stormcast()
        .args([
            "forecast",
            "--input",
            &data("bad_rows.csv"),
            "--capacity",
            "10",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for want in ["line 3:", "line 4:", "line 6:"] {
        assert!(err.contains(want), "{want} missing from {err}");
    }
    let out = stormcast()
        .args([
            "forecast",
            "--input",
            &data("disk_leak.csv"),
            "--capacity",
            "disk_size_bytes",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("need --prometheus"));
}

#[test]
fn anomaly_writes_one_scored_row_per_input_row() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("scores.csv");
    let input = data("seasonal_with_spike.csv");
    let st = stormcast()
        .args([
            "anomaly",
            "--input",
            &input,
            "--output",
            out_path.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let input_text = std::fs::read_to_string(&input).unwrap();
    let text = std::fs::read_to_string(&out_path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "timestamp,value,anomaly_score");
    assert_eq!(lines.len(), input_text.lines().count());
    let mut top = (0.0, "");
    for (row, inp) in lines[1..].iter().zip(input_text.lines().skip(1)) {
        let f: Vec<&str> = row.split(',').collect();
        // Timestamps are written back as given, in input order.
        assert_eq!(f[0], inp.split(',').next().unwrap());
        let s: f64 = f[2].parse().unwrap();
        assert!((0.0..=1.0).contains(&s));
        if s > top.0 {
            top = (s, f[0]);
        }
    }
    // The injected spike (row 701) scores highest.
    assert_eq!(top.1, "2025-11-19T10:20:00Z");
}

#[test]
fn report_renders_html_with_a_chart_per_risk() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("report.html");
    let st = stormcast()
        .args([
            "report",
            "--input",
            &data("nodes_matrix.json"),
            "--capacity",
            "100",
            "--output",
            html.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let text = std::fs::read_to_string(&html).unwrap();
    assert_eq!(text.matches("<svg").count(), 1);
    assert!(text.contains("node-3"));
    let md = dir.path().join("report.md");
    let st = stormcast()
        .args([
            "report",
            "--input",
            &data("disk_leak.csv"),
            "--capacity",
            "100",
            "--output",
            md.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(std::fs::read_to_string(&md)
        .unwrap()
        .starts_with("# stormcast forecast report"));
}
