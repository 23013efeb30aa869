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
    // The at-risk node shows the MSTL cross-check beside the method.
    assert_eq!(text.matches("MSTL+ETS").count(), 1, "{text}");
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

async fn fake_prometheus() -> String {
    use axum::extract::Query;
    use axum::routing::get;
    use std::collections::BTreeMap;
    async fn range(Query(q): Query<BTreeMap<String, String>>) -> String {
        let (s, e, st): (i64, i64, i64) = (
            q["start"].parse().unwrap(),
            q["end"].parse().unwrap(),
            q["step"].parse().unwrap(),
        );
        let series: Vec<String> = [("a", 1.0), ("b", 0.0)]
            .iter()
            .map(|(pvc, rate)| {
                let vals: Vec<String> = (0..)
                    .map(|k| s + k * st)
                    .take_while(|t| *t <= e)
                    .map(|t| format!("[{t},\"{}\"]", 80.0 - rate * (e - t) as f64 / 3600.0))
                    .collect();
                format!(
                    r#"{{"metric":{{"persistentvolumeclaim":"{pvc}"}},"values":[{}]}}"#,
                    vals.join(",")
                )
            })
            .collect();
        format!(
            r#"{{"status":"success","data":{{"resultType":"matrix","result":[{}]}}}}"#,
            series.join(",")
        )
    }
    async fn instant(Query(q): Query<BTreeMap<String, String>>) -> String {
        if q["query"] == "broken(" {
            return r#"{"status":"error","errorType":"bad_data","error":"unexpected end of input"}"#.into();
        }
        let t = &q["time"];
        format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{"persistentvolumeclaim":"a"}},"value":[{t},"100"]}},{{"metric":{{"persistentvolumeclaim":"b"}},"value":[{t},"100"]}}]}}}}"#
        )
    }
    let app = axum::Router::new()
        .route("/api/v1/query_range", get(range))
        .route("/api/v1/query", get(instant));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forecast_from_prometheus_with_a_capacity_query() {
    let url = fake_prometheus().await;
    let args = move |cap: &str| {
        vec![
            "forecast".to_string(),
            "--prometheus".into(),
            url.clone(),
            "--query".into(),
            "kubelet_volume_stats_used_bytes".into(),
            "--capacity".into(),
            cap.into(),
            "--lookback".into(),
            "2d".into(),
            "--output".into(),
            "json".into(),
        ]
    };
    let out = tokio::task::spawn_blocking(move || {
        let ok = stormcast()
            .args(args("kubelet_volume_stats_capacity_bytes"))
            .output()
            .unwrap();
        let bad = stormcast().args(args("broken(")).output().unwrap();
        (ok, bad)
    })
    .await
    .unwrap();
    let (ok, bad) = out;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(v["series"][0]["labels"]["persistentvolumeclaim"], "a");
    let lead =
        chrono::DateTime::parse_from_rfc3339(v["series"][0]["exhaustion_at"].as_str().unwrap())
            .unwrap()
            .timestamp()
            - chrono::Utc::now().timestamp();
    assert!((19 * 3600..21 * 3600).contains(&lead), "lead {lead}");
    assert!(v["series"][1]["exhaustion_at"].is_null());
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("unexpected end of input"), "{err}");
}

#[test]
fn forecast_method_controls_the_mstl_cross_check() {
    let run = |method: &str| -> serde_json::Value {
        let out = stormcast()
            .args([
                "forecast",
                "--input",
                &data("nodes_matrix.json"),
                "--capacity",
                "100",
                "--output",
                "json",
                "--method",
                method,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let both = run("both");
    let series = both["series"].as_array().unwrap();
    // Only the at-risk node gets the MSTL fit.
    assert_eq!(series[0]["labels"]["instance"], "node-3");
    assert!(
        series[0]["mstl"]["samples"].as_u64().unwrap() >= 10,
        "{}",
        series[0]
    );
    for s in &series[1..] {
        assert!(s.get("mstl").is_none(), "{s}");
    }
    let env = run("envelope");
    let series_env = env["series"].as_array().unwrap();
    assert!(series_env.iter().all(|s| s.get("mstl").is_none()));
    assert_eq!(series_env[0]["exhaustion_at"], series[0]["exhaustion_at"]);
    // mstl: every series is fitted.
    let m = run("mstl");
    assert!(m["series"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s.get("mstl").is_some()));
}

#[test]
fn max_cross_checks_limits_the_mstl_fits_and_says_so() {
    // At capacity 50, three nodes' upper bands reach it within the horizon
    // (the fourth is already over it).
    let run = |limit: &str| -> (serde_json::Value, String) {
        let out = stormcast()
            .args([
                "forecast",
                "--input",
                &data("nodes_matrix.json"),
                "--capacity",
                "50",
                "--output",
                "json",
                "--max-cross-checks",
                limit,
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        (serde_json::from_slice(&out.stdout).unwrap(), err)
    };
    let count = |v: &serde_json::Value, key: &str| {
        v["series"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s.get(key).is_some())
            .count()
    };
    let (one, err) = run("1");
    assert_eq!(count(&one, "mstl"), 1, "{one}");
    assert_eq!(count(&one, "cross_check_skipped"), 2, "{one}");
    assert!(
        err.contains("MSTL cross-check on the 1 soonest of 3 at-risk series; skipped on 2"),
        "{err}"
    );
    let (all, err) = run("0");
    assert_eq!(count(&all, "mstl"), 3, "{all}");
    assert_eq!(count(&all, "cross_check_skipped"), 0, "{all}");
    assert!(!err.contains("MSTL cross-check"), "{err}");
}
