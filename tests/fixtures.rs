//! Every recorded webhook under testdata/webhooks/ parses, and every rejected
//! config under testdata/config/ fails `check-config` with the expected message.

use std::path::Path;

use stormcast::ingest::{parse_delivery, IngestConfig};

#[test]
fn every_webhook_fixture_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/webhooks");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let body = std::fs::read(&path).unwrap();
        let d = parse_delivery(
            &body,
            chrono::Utc::now(),
            "fixture",
            None,
            &IngestConfig::default(),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!d.alerts.is_empty(), "{}", path.display());
        for a in &d.alerts {
            assert!(a.observation.am_fingerprint.is_some(), "{}", path.display());
            assert!(a.observation.labels.get("cluster").is_some());
        }
        n += 1;
    }
    assert!(n >= 4, "expected the recorded fixtures, found {n}");
}

#[test]
fn every_bad_config_is_rejected_with_its_reason() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/config");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if !name.starts_with("bad-") || !name.ends_with(".yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // The first lines say what the error must mention: `# expect: <text>`.
        let expected: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(!expected.is_empty(), "{name} has no '# expect:' line");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_stormcast"))
            .arg("check-config")
            .arg(&path)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("STORMCAST_LOG", "error")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        for e in expected {
            assert!(stderr.contains(e), "{name}: expected {e:?} in:\n{stderr}");
        }
        assert!(
            !stderr.contains("s3cr3t"),
            "{name} leaked a secret:\n{stderr}"
        );
        n += 1;
    }
    assert!(n >= 5, "expected bad configs, found {n}");
}

#[test]
fn the_shipped_example_config_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stormcast"))
        .arg("check-config")
        .arg(root.join("testdata/config/good-example.yaml"))
        .current_dir(root)
        .env("STORMCAST_SH_TOKEN", "from-env")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
