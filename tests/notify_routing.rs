//! Routing tree and receiver validation, from YAML as operators write it.

mod notify_common;

use std::path::PathBuf;

use notify_common::*;
use stormcast::config::{parse_yaml, Config, ValidateCtx};

const CONFIG: &str = r#"
route:
  receiver: default
  group_wait: 20s
  repeat_interval: 2h
  routes:
    - matchers: ['severity="critical"', 'cluster=~"prod-.*"']
      receiver: pager
      continue: true
      group_wait: 5s
    - matchers: ['{predictive="true"}']
      receiver: capacity
    - matchers: ['alertname=~"Kube.*"']
      receiver: platform
      mute_time_intervals: [weekends]
      routes:
        - matchers: ['namespace="payments"']
          receiver: payments
receivers:
  - name: default
  - name: pager
  - name: capacity
  - name: platform
  - name: payments
time_intervals:
  - name: weekends
    time_intervals:
      - weekdays: ['saturday', 'sunday']
        location: Asia/Shanghai
"#;

fn load(yaml: &str) -> Result<Config, stormcast::config::ConfigErrors> {
    let mut c: Config = parse_yaml(yaml)?;
    let errs = c.validate(&ValidateCtx {
        base_dir: PathBuf::from("."),
    });
    errs.into_result(c)
}

fn receivers(cfg: &Config, inc: &stormcast::domain::Incident) -> Vec<(String, i64, i64)> {
    let s = stormcast::notify::planner_settings(cfg);
    s.route
        .unwrap()
        .route(inc)
        .into_iter()
        .map(|m| {
            (
                m.receiver,
                m.timing.group_wait.num_seconds(),
                m.timing.repeat_interval.num_seconds(),
            )
        })
        .collect()
}

#[test]
fn continue_inheritance_and_nesting() {
    let cfg = load(CONFIG).unwrap();
    let t0 = t("2026-11-23T03:00:00Z");
    // Critical in a prod cluster: pager (continue) then platform → payments.
    let inc = incident(
        "i1",
        t0,
        &[
            ("alertname", "KubeNodeNotReady"),
            ("severity", "critical"),
            ("namespace", "payments"),
        ],
        &["dev-1", "prod-eu-1"],
    );
    assert_eq!(
        receivers(&cfg, &inc),
        vec![
            ("pager".to_owned(), 5, 7200),
            ("payments".to_owned(), 20, 7200)
        ]
    );
    // Only dev clusters: the pager route does not match.
    let inc = incident(
        "i2",
        t0,
        &[
            ("alertname", "KubePodCrashLooping"),
            ("severity", "critical"),
        ],
        &["dev-1"],
    );
    assert_eq!(
        receivers(&cfg, &inc),
        vec![("platform".to_owned(), 20, 7200)]
    );
    // Nothing matches: the root's receiver.
    let inc = incident("i3", t0, &[("alertname", "Watchdog")], &["dev-1"]);
    assert_eq!(
        receivers(&cfg, &inc),
        vec![("default".to_owned(), 20, 7200)]
    );
    // Predictive incidents match on the `predictive` attribute.
    let mut inc = incident("i4", t0, &[("alertname", "DiskFull")], &["dev-1"]);
    inc.predictive = true;
    assert_eq!(
        receivers(&cfg, &inc),
        vec![("capacity".to_owned(), 20, 7200)]
    );
}

#[test]
fn mute_time_intervals_are_evaluated_in_their_location() {
    let cfg = load(CONFIG).unwrap();
    let s = stormcast::notify::planner_settings(&cfg);
    let inc = incident(
        "i",
        t("2026-11-23T03:00:00Z"),
        &[("alertname", "KubeX")],
        &["c"],
    );
    let m = s.route.as_ref().unwrap().route(&inc).remove(0);
    assert_eq!(m.receiver, "platform");
    // Friday 2026-11-27 17:00 UTC is Saturday 01:00 in Shanghai: muted.
    assert!(!m.allowed_at(t("2026-11-27T17:00:00Z"), &s.intervals));
    assert!(m.allowed_at(t("2026-11-27T15:00:00Z"), &s.intervals));
}

fn bad(file: &str) -> Vec<String> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/config")
        .join(file);
    let text = std::fs::read_to_string(&p).unwrap();
    load(&text)
        .unwrap_err()
        .0
        .into_iter()
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn unknown_receiver_is_an_error_with_its_path() {
    let errs = bad("bad-unknown-receiver.yaml");
    assert!(
        errs.iter()
            .any(|e| e.starts_with("route.routes[0].receiver: undefined receiver \"oncall\"")),
        "{errs:?}"
    );
}

#[test]
fn bad_matcher_and_interval_reference_are_reported_together() {
    let errs = bad("bad-route-matchers.yaml");
    assert!(
        errs.iter()
            .any(|e| e.starts_with("route.routes[0].matchers[1]:") && e.contains("operator")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("route.routes[0].mute_time_intervals[0]:")
                && e.contains("nights")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("receivers[0].slack_configs[0].api_url")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("receivers[0].dingtalk_configs[0].max_per_minute")),
        "{errs:?}"
    );
}

#[test]
fn secrets_from_env_and_file_never_print() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("slack-url"),
        "https://hooks.example/T0/B0/tok3n\n",
    )
    .unwrap();
    std::env::set_var("STORMCAST_TEST_DT_SECRET", "SECsupersecret");
    let yaml = r#"
route: {receiver: r}
receivers:
  - name: r
    slack_configs: [{api_url_file: slack-url}]
    dingtalk_configs: [{url: "https://oapi.example/robot/send?access_token=abc123", secret_env: STORMCAST_TEST_DT_SECRET}]
"#;
    let mut c: Config = parse_yaml(yaml).unwrap();
    let errs = c.validate(&ValidateCtx {
        base_dir: dir.path().to_path_buf(),
    });
    assert!(errs.is_empty(), "{errs}");
    let r = &c.receivers[0];
    assert_eq!(
        r.slack_configs[0].api_url.as_ref().unwrap().expose(),
        "https://hooks.example/T0/B0/tok3n"
    );
    let dbg = format!("{c:?}");
    for secret in ["tok3n", "abc123", "SECsupersecret"] {
        assert!(!dbg.contains(secret), "{secret} leaked in {dbg}");
    }
}

#[test]
fn the_shipped_example_config_is_valid() {
    for (k, v) in [
        (
            "STORMCAST_SLACK_URL",
            "https://hooks.slack.com/services/T/B/x",
        ),
        ("STORMCAST_SMTP_PASSWORD", "pw"),
        (
            "STORMCAST_DINGTALK_URL",
            "https://oapi.dingtalk.com/robot/send?access_token=x",
        ),
        ("STORMCAST_DINGTALK_SECRET", "SECx"),
        ("STORMCAST_WEBHOOK_TOKEN", "tok"),
    ] {
        std::env::set_var(k, v);
    }
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/stormcast-notify.yaml"),
    )
    .unwrap();
    let cfg = load(&text).unwrap_or_else(|e| panic!("{e}"));
    let inc = incident(
        "i",
        t("2026-11-23T03:00:00Z"),
        &[
            ("alertname", "KubeNodeNotReady"),
            ("severity", "critical"),
            ("namespace", "payments"),
        ],
        &["prod-sh-1"],
    );
    let got: Vec<String> = receivers(&cfg, &inc).into_iter().map(|r| r.0).collect();
    assert_eq!(got, ["oncall-email", "payments-webhook"]);
}
