//! Checks of everything under `deploy/` with the real tools operators use:
//! promtool (rules and their unit tests, dashboard PromQL), amtool (the
//! Alertmanager snippet merged into a full config and its routing),
//! `kubectl kustomize` (the base renders; key fields), the Helm chart's
//! templates against its values, systemd-analyze, and the Dockerfile's build
//! against the README's.
//!
//! A missing tool skips its test with a note, unless STORMCAST_REQUIRE_EXTERNAL=1.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_norway::Value;

const BUILD: &str = "cargo build --release --locked";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy(p: &str) -> PathBuf {
    root().join("deploy").join(p)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn yaml(p: &Path) -> Value {
    serde_norway::from_str(&read(p)).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// The tool's path, or `None` (after a skip note) when it is not installed.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("STORMCAST_REQUIRE_EXTERNAL").as_deref() == Ok("1") {
            panic!("{name} is required (STORMCAST_REQUIRE_EXTERNAL=1) but not installed");
        }
        eprintln!("skipping: {name} is not installed");
    }
    found
}

/// A tool whose checks have a fallback (or are extra): its absence only
/// narrows the test, even in CI.
fn optional_tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        eprintln!("{name} is not installed: checking without it");
    }
    found
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn get<'a>(v: &'a Value, path: &str) -> &'a Value {
    let mut cur = v;
    for key in path.split('.') {
        cur = match key.parse::<usize>() {
            Ok(i) => cur.get(i),
            Err(_) => cur.get(key),
        }
        .unwrap_or_else(|| panic!("missing {path} (at {key}) in {v:?}"));
    }
    cur
}

fn s<'a>(v: &'a Value, path: &str) -> &'a str {
    get(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string"))
}

// ---------------------------------------------------------------- Prometheus

fn rule_groups() -> Value {
    let pr = yaml(&deploy("kubernetes/base/prometheusrule.yaml"));
    assert_eq!(s(&pr, "kind"), "PrometheusRule");
    get(&pr, "spec").clone()
}

#[test]
fn prometheus_rule_copies_are_identical() {
    let spec = rule_groups();
    for copy in [
        "prometheus/stormcast-alerts.rules.yaml",
        "helm/stormcast/files/stormcast-alerts.rules.yaml",
    ] {
        assert_eq!(
            yaml(&deploy(copy)),
            spec,
            "{copy} differs from the PrometheusRule"
        );
    }
}

#[test]
fn prometheus_rules_cover_every_failure_and_pass_promtool() {
    let spec = rule_groups();
    let names: Vec<&str> = get(&spec, "groups.0.rules")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| s(r, "alert"))
        .collect();
    for want in [
        "StormcastDown",
        "StormcastNotIngesting",
        "StormcastOutboxBackingUp",
        "StormcastChannelFailing",
        "StormcastStoreNearFull",
        "StormcastHistorySourceUnreachable",
        "StormcastMonitoringPipelineDown",
    ] {
        assert!(names.contains(&want), "no {want} alert in {names:?}");
    }
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("stormcast-alerts.rules.yaml");
    std::fs::write(&rules, serde_norway::to_string(&spec).unwrap()).unwrap();
    let out = run(Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(&rules));
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", names.len())),
        "{out}"
    );
}

#[test]
fn promtool_unit_tests_of_stormcasts_alerts_pass() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    // Run against the PrometheusRule's own groups, not a copy.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("stormcast-alerts.rules.yaml"),
        serde_norway::to_string(&rule_groups()).unwrap(),
    )
    .unwrap();
    let tests = dir.path().join("stormcast-alerts.test.yaml");
    std::fs::copy(deploy("prometheus/stormcast-alerts.test.yaml"), &tests).unwrap();
    let out = run(Command::new(&promtool).arg("test").arg("rules").arg(&tests));
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert has at least one test where it fires.
    let t = yaml(&tests);
    let mut fired = std::collections::BTreeSet::new();
    for case in get(&t, "tests").as_sequence().unwrap() {
        for a in get(case, "alert_rule_test").as_sequence().unwrap() {
            if !get(a, "exp_alerts").as_sequence().unwrap().is_empty() {
                fired.insert(s(a, "alertname").to_owned());
            }
        }
    }
    for r in get(&rule_groups(), "groups.0.rules").as_sequence().unwrap() {
        assert!(
            fired.contains(s(r, "alert")),
            "no firing test for {}",
            s(r, "alert")
        );
    }
}

// -------------------------------------------------------------- Alertmanager

/// kube-prometheus' default Alertmanager configuration.
const KUBE_PROMETHEUS_AM: &str = r#"
global:
  resolve_timeout: 5m
inhibit_rules:
  - source_matchers: ['severity = critical']
    target_matchers: ['severity =~ warning|info']
    equal: [namespace, alertname]
  - source_matchers: ['severity = warning']
    target_matchers: ['severity = info']
    equal: [namespace, alertname]
receivers:
  - name: Default
  - name: Watchdog
  - name: Critical
  - name: 'null'
route:
  group_by: [namespace]
  group_interval: 5m
  group_wait: 30s
  receiver: Default
  repeat_interval: 12h
  routes:
    - matchers: ['alertname = Watchdog']
      receiver: Watchdog
    - matchers: ['alertname = InfoInhibitor']
      receiver: 'null'
    - matchers: ['severity = critical']
      receiver: Critical
"#;

/// Merges the snippet as the README says: receivers appended, routes first,
/// and a last route back to the root receiver.
fn merged_am_config() -> Value {
    let snippet = yaml(&deploy("alertmanager/stormcast-snippet.yaml"));
    let mut base: Value = serde_norway::from_str(KUBE_PROMETHEUS_AM).unwrap();
    let receivers = base["receivers"].as_sequence_mut().unwrap();
    receivers.extend(get(&snippet, "receivers").as_sequence().unwrap().clone());
    let mut routes = get(&snippet, "route.routes").as_sequence().unwrap().clone();
    routes.extend(base["route"]["routes"].as_sequence().unwrap().clone());
    routes.push(serde_norway::from_str("receiver: Default").unwrap());
    base["route"]["routes"] = Value::Sequence(routes);
    base
}

#[test]
fn alertmanager_snippet_has_the_contract_fields() {
    let snippet = yaml(&deploy("alertmanager/stormcast-snippet.yaml"));
    let wh = get(&snippet, "receivers.0.webhook_configs.0");
    assert!(s(wh, "url").ends_with("/api/v1/alerts"));
    assert_eq!(get(wh, "send_resolved").as_bool(), Some(true));
    assert_eq!(get(wh, "max_alerts").as_u64(), Some(0));
    assert_eq!(s(wh, "http_config.authorization.type"), "Bearer");
    assert!(get(wh, "http_config.authorization")
        .get("credentials_file")
        .is_some());
    let watchdog = get(&snippet, "route.routes.0");
    assert_eq!(s(watchdog, "receiver"), "stormcast");
    assert!(s(watchdog, "matchers.0").contains("Watchdog"));
    let repeat: stormcast::config::PromDuration = s(watchdog, "repeat_interval").parse().unwrap();
    assert!(
        repeat <= "5m".parse().unwrap(),
        "Watchdog must repeat well within heartbeat.missing_after"
    );
    assert_eq!(
        get(&snippet, "route.routes.1.continue").as_bool(),
        Some(true)
    );
}

fn amtool_routes(amtool: &Path, config: &Path, labels: &[&str]) -> String {
    let out = Command::new(amtool)
        .args(["config", "routes", "test"])
        .arg(format!("--config.file={}", config.display()))
        .args(labels)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn amtool_accepts_the_merged_config_and_routes_as_documented() {
    let Some(amtool) = tool("amtool") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let merged = dir.path().join("alertmanager.yaml");
    std::fs::write(
        &merged,
        serde_norway::to_string(&merged_am_config()).unwrap(),
    )
    .unwrap();
    for config in [merged, deploy("alertmanager/alertmanager.example.yaml")] {
        let out = run(Command::new(&amtool).arg("check-config").arg(&config));
        assert!(out.contains("SUCCESS"), "{out}");
        // Watchdog goes to stormcast only (not to the old Watchdog receiver).
        assert_eq!(
            amtool_routes(&amtool, &config, &["alertname=Watchdog"]),
            "stormcast"
        );
        // Everything else reaches stormcast and still the existing receivers.
        assert_eq!(
            amtool_routes(
                &amtool,
                &config,
                &["alertname=KubeNodeNotReady", "severity=critical"]
            ),
            "stormcast,Critical"
        );
        assert_eq!(
            amtool_routes(
                &amtool,
                &config,
                &["alertname=KubePodNotReady", "severity=warning"]
            ),
            "stormcast,Default"
        );
    }
}

// ---------------------------------------------------------------- Kubernetes

/// The base's objects: rendered by `kubectl kustomize` when kubectl is
/// installed, otherwise parsed from the manifests with the generator and
/// namespace applied by hand (the hashed ConfigMap name is then unknown).
fn kustomize_objects() -> (Vec<Value>, bool) {
    let base = deploy("kubernetes/base");
    if let Some(kubectl) = optional_tool("kubectl") {
        let out = run(Command::new(kubectl).arg("kustomize").arg(&base));
        return (yaml_docs(&out), true);
    }
    let k = yaml(&base.join("kustomization.yaml"));
    let ns = s(&k, "namespace").to_owned();
    let mut objs: Vec<Value> = get(&k, "resources")
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|f| yaml_docs(&read(&base.join(f.as_str().unwrap()))))
        .collect();
    for g in get(&k, "configMapGenerator").as_sequence().unwrap() {
        let mut data = serde_norway::Mapping::new();
        for f in get(g, "files").as_sequence().unwrap() {
            let f = f.as_str().unwrap();
            let key = Path::new(f).file_name().unwrap().to_str().unwrap();
            data.insert(key.into(), read(&base.join(f)).into());
        }
        let mut cm: Value =
            serde_norway::from_str("apiVersion: v1\nkind: ConfigMap\nmetadata: {}").unwrap();
        cm["metadata"]["name"] = get(g, "name").clone();
        cm["data"] = Value::Mapping(data);
        objs.push(cm);
    }
    for o in &mut objs {
        o["metadata"]["namespace"] = Value::String(ns.clone());
    }
    (objs, false)
}

fn find<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    objs.iter()
        .find(|o| s(o, "kind") == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn kinds(objs: &[Value]) -> std::collections::BTreeSet<String> {
    objs.iter().map(|o| s(o, "kind").to_owned()).collect()
}

/// Checks a StatefulSet the way an operator reviewing it would.
fn check_statefulset(sts: &Value, config_map: &str) {
    assert_eq!(
        get(sts, "spec.replicas").as_u64(),
        Some(1),
        "sled is single-writer"
    );
    let pod = get(sts, "spec.template.spec");
    assert_eq!(
        get(pod, "securityContext.runAsNonRoot").as_bool(),
        Some(true)
    );
    assert_ne!(get(pod, "securityContext.runAsUser").as_u64(), Some(0));
    let grace = get(pod, "terminationGracePeriodSeconds").as_u64().unwrap();
    assert!(
        grace > stormcast::app::SHUTDOWN_GRACE.as_secs(),
        "grace {grace}s must exceed stormcast's drain budget"
    );
    let c = get(pod, "containers.0");
    assert!(s(c, "image").contains("stormcast:"), "{}", s(c, "image"));
    assert_eq!(get(c, "securityContext.runAsNonRoot").as_bool(), Some(true));
    assert_eq!(
        get(c, "securityContext.readOnlyRootFilesystem").as_bool(),
        Some(true)
    );
    assert_eq!(
        get(c, "securityContext.allowPrivilegeEscalation").as_bool(),
        Some(false)
    );
    assert_eq!(get(c, "ports.0.containerPort").as_u64(), Some(9797));
    assert_eq!(s(c, "ports.0.name"), "http");
    assert_eq!(s(c, "readinessProbe.httpGet.path"), "/readyz");
    assert_eq!(s(c, "livenessProbe.httpGet.path"), "/healthz");
    assert_eq!(s(c, "readinessProbe.httpGet.port"), "http");
    let args: Vec<&str> = get(c, "args")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "serve");
    assert!(args.contains(&"--listen=0.0.0.0:9797"), "{args:?}");
    let data_dir = args
        .iter()
        .find_map(|a| a.strip_prefix("--data-dir="))
        .expect("--data-dir");
    let mounts = get(c, "volumeMounts").as_sequence().unwrap();
    let data = mounts
        .iter()
        .find(|m| s(m, "name") == "data")
        .expect("data mount");
    assert_eq!(
        s(data, "mountPath"),
        data_dir,
        "the store lives on the volume claim"
    );
    let claim = get(sts, "spec.volumeClaimTemplates.0");
    assert_eq!(s(claim, "metadata.name"), "data");
    assert_eq!(s(claim, "spec.accessModes.0"), "ReadWriteOnce");
    assert!(get(claim, "spec.resources.requests")
        .get("storage")
        .is_some());
    let volumes = get(pod, "volumes").as_sequence().unwrap();
    let config = volumes.iter().find(|v| s(v, "name") == "config").unwrap();
    assert_eq!(s(config, "configMap.name"), config_map);
}

/// Runs `stormcast check-config` on a config whose secret files are replaced
/// by temporary ones, exactly as the pod would validate it at start-up.
fn check_config(text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    let mut text = text.replace(
        "/etc/stormcast/secrets/",
        &format!("{}/", secrets.display()),
    );
    text = text.replace(
        "/var/lib/stormcast",
        &dir.path().join("data").display().to_string(),
    );
    for line in text.lines() {
        if let Some((_, p)) = line.split_once("_file: ") {
            let p = Path::new(p.trim());
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            // What the Secret holds: a webhook URL or a token.
            let content = if p.to_string_lossy().contains("url") {
                "https://hooks.slack.com/services/T0000/B0000/XXXXXXXXXXXXXXXX"
            } else {
                "0123456789abcdef0123456789abcdef"
            };
            std::fs::write(p, content).unwrap();
        }
    }
    let file = dir.path().join("stormcast.yaml");
    std::fs::write(&file, &text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stormcast"))
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the shipped config does not pass check-config:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kustomize_base_renders_with_the_key_fields() {
    let (objs, rendered) = kustomize_objects();
    for want in [
        "StatefulSet",
        "Service",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
        "PrometheusRule",
        "ServiceAccount",
    ] {
        assert!(kinds(&objs).contains(want), "no {want} in the base");
    }
    for o in &objs {
        assert_eq!(s(o, "metadata.namespace"), "monitoring", "{o:?}");
    }
    let cm = find(&objs, "ConfigMap");
    let cm_name = s(cm, "metadata.name");
    if rendered {
        assert!(
            cm_name.starts_with("stormcast-config-"),
            "hashed name: {cm_name}"
        );
    }
    check_statefulset(find(&objs, "StatefulSet"), cm_name);
    let svc = find(&objs, "Service");
    assert_eq!(get(svc, "spec.ports.0.port").as_u64(), Some(9797));
    assert_eq!(s(svc, "spec.ports.0.targetPort"), "http");
    let sts = find(&objs, "StatefulSet");
    assert_eq!(s(sts, "spec.serviceName"), s(svc, "metadata.name"));
    assert_eq!(
        get(svc, "spec.selector"),
        get(sts, "spec.selector.matchLabels"),
        "the Service selects the pod"
    );
    let secrets: Vec<&str> = objs
        .iter()
        .filter(|o| s(o, "kind") == "Secret")
        .map(|o| s(o, "metadata.name"))
        .collect();
    for v in get(sts, "spec.template.spec.volumes")
        .as_sequence()
        .unwrap()
    {
        if let Some(name) = v.get("secret").and_then(|x| x.get("secretName")) {
            assert!(
                secrets.contains(&name.as_str().unwrap()),
                "{name:?} not in the base"
            );
        }
    }
    let sm = find(&objs, "ServiceMonitor");
    assert_eq!(s(sm, "spec.endpoints.0.port"), "http");
    assert_eq!(s(sm, "spec.endpoints.0.path"), "/metrics");
    assert_eq!(
        get(find(&objs, "PodDisruptionBudget"), "spec.selector"),
        get(sts, "spec.selector"),
        "the budget covers the pod"
    );
    assert_eq!(
        get(find(&objs, "NetworkPolicy"), "spec.podSelector"),
        get(sts, "spec.selector"),
        "the policy covers the pod"
    );
    // The config in the ConfigMap passes the same validation as start-up,
    // and every source's token file comes from the sources Secret.
    let config = get(cm, "data")
        .get("stormcast.yaml")
        .and_then(Value::as_str)
        .expect("data[stormcast.yaml]");
    let secret = objs
        .iter()
        .find(|o| s(o, "kind") == "Secret" && s(o, "metadata.name") == "stormcast-sources")
        .unwrap();
    let parsed: Value = serde_norway::from_str(config).unwrap();
    for src in get(&parsed, "sources").as_sequence().unwrap() {
        let file = s(src, "bearer_token_file");
        let key = file
            .strip_prefix("/etc/stormcast/secrets/sources/")
            .unwrap();
        assert!(
            get(secret, "stringData").get(key).is_some(),
            "no token {key}"
        );
    }
    check_config(config);
}

// ---------------------------------------------------------------------- Helm

fn helm(p: &str) -> PathBuf {
    deploy("helm/stormcast").join(p)
}

/// Every `.Values.a.b` a template reads, as `a.b`.
fn values_refs(text: &str) -> Vec<String> {
    let re = regex::Regex::new(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)").unwrap();
    re.captures_iter(text)
        .map(|c| c[1].trim_start_matches('.').to_owned())
        .collect()
}

#[test]
fn helm_chart_templates_match_values_and_the_kustomize_base() {
    let chart = yaml(&helm("Chart.yaml"));
    assert_eq!(s(&chart, "apiVersion"), "v2");
    assert_eq!(s(&chart, "name"), "stormcast");
    assert_eq!(s(&chart, "appVersion"), env!("CARGO_PKG_VERSION"));
    let values = yaml(&helm("values.yaml"));
    let mut template_kinds = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(helm("templates")).unwrap() {
        let path = entry.unwrap().path();
        let text = read(&path);
        for r in values_refs(&text) {
            let mut cur = &values;
            for key in r.split('.') {
                cur = cur.get(key).unwrap_or_else(|| {
                    panic!(
                        "{} reads .Values.{r}, which values.yaml lacks",
                        path.display()
                    )
                });
            }
        }
        for line in text.lines() {
            if let Some(k) = line.strip_prefix("kind: ") {
                template_kinds.insert(k.trim().to_owned());
            }
        }
    }
    // Same objects as the kustomize base (the chart adds the optional dashboard).
    let base_kinds: std::collections::BTreeSet<String> = [
        "serviceaccount.yaml",
        "secrets.yaml",
        "statefulset.yaml",
        "service.yaml",
        "poddisruptionbudget.yaml",
        "networkpolicy.yaml",
        "servicemonitor.yaml",
        "prometheusrule.yaml",
    ]
    .iter()
    .flat_map(|f| yaml_docs(&read(&deploy("kubernetes/base").join(f))))
    .map(|o| s(&o, "kind").to_owned())
    .chain(["ConfigMap".to_owned()])
    .collect();
    assert_eq!(template_kinds, base_kinds);
    // The values the pod spec takes must match the reviewed base.
    assert_eq!(
        get(&values, "podSecurityContext.runAsNonRoot").as_bool(),
        Some(true)
    );
    assert_eq!(
        get(&values, "securityContext.runAsNonRoot").as_bool(),
        Some(true)
    );
    assert_eq!(
        get(&values, "securityContext.readOnlyRootFilesystem").as_bool(),
        Some(true)
    );
    assert_eq!(get(&values, "service.port").as_u64(), Some(9797));
    assert_eq!(
        s(&values, "config.store.path"),
        s(&values, "persistence.mountPath")
    );
    assert!(
        get(&values, "terminationGracePeriodSeconds")
            .as_u64()
            .unwrap()
            > stormcast::app::SHUTDOWN_GRACE.as_secs()
    );
    let sts = read(&helm("templates/statefulset.yaml"));
    for needle in [
        "path: /readyz",
        "path: /healthz",
        "volumeClaimTemplates:",
        "name: data",
    ] {
        assert!(
            sts.contains(needle),
            "statefulset template lacks {needle:?}"
        );
    }
    assert_eq!(
        read(&helm("files/stormcast-dashboard.json")),
        read(&deploy("grafana/stormcast-dashboard.json")),
        "the chart's dashboard copy differs"
    );
    // The default values' config passes start-up validation.
    check_config(&serde_norway::to_string(get(&values, "config")).unwrap());
}

// ------------------------------------------------------- Grafana, systemd, Docker

#[test]
fn grafana_dashboard_panels_are_valid_promql_over_stormcast_metrics() {
    let text = read(&deploy("grafana/stormcast-dashboard.json"));
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let panels = dash["panels"].as_array().unwrap();
    let mut ids = std::collections::BTreeSet::new();
    let mut exprs = Vec::new();
    let mut titles = Vec::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id");
        titles.push(p["title"].as_str().unwrap().to_owned());
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().unwrap().to_owned());
        }
    }
    for want in [
        "Webhook deliveries by source",
        "Open incidents",
        "Storm mode per cluster",
        "Notifications by channel and outcome",
        "Outbox depth",
        "Forecast runs",
    ] {
        assert!(titles.iter().any(|t| t == want), "no panel {want:?}");
    }
    let metric = regex::Regex::new(r"stormcast_[a-z_]+").unwrap();
    for e in &exprs {
        assert!(
            metric.is_match(e),
            "panel query without a stormcast metric: {e}"
        );
    }
    let Some(promtool) = tool("promtool") else {
        return;
    };
    // promtool parses each query as a recording rule.
    let rules: Vec<serde_json::Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let e = e.replace("$__rate_interval", "5m").replace("$job", ".*");
            serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": e})
        })
        .collect();
    let doc = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard.rules.yaml");
    std::fs::write(&file, serde_json::to_string(&doc).unwrap()).unwrap();
    run(Command::new(promtool).arg("check").arg("rules").arg(&file));
}

#[test]
fn systemd_unit_verifies() {
    let unit = read(&deploy("systemd/stormcast.service"));
    assert!(unit.contains("KillSignal=SIGTERM"));
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(stop > stormcast::app::SHUTDOWN_GRACE.as_secs());
    assert!(unit.contains("User=stormcast"));
    let Some(analyze) = optional_tool("systemd-analyze") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stormcast.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/stormcast", env!("CARGO_BIN_EXE_stormcast")),
    )
    .unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Only complaints about this unit count (the host's own units may warn).
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("stormcast.service"))
        .collect();
    assert!(ours.is_empty(), "{err}");
}

/// Cargo flags before any `--` (what follows is the program's arguments).
fn build_flags(rest: &str) -> std::collections::BTreeSet<String> {
    rest.split(" -- ")
        .next()
        .unwrap_or("")
        .split_whitespace()
        .take_while(|w| !w.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn dockerfile_builds_like_the_readme_and_runs_as_non_root() {
    let docker = read(&deploy("Dockerfile"));
    assert!(docker.contains(BUILD), "the Dockerfile must run `{BUILD}`");
    let readme = root().join("README.md");
    if readme.exists() {
        // The README may show `cargo build` or `cargo run`: either builds the
        // binary with the same profile and flags the image uses.
        let text = read(&readme);
        let readme_build = text
            .lines()
            .map(str::trim)
            .find_map(|l| {
                l.strip_prefix("cargo build")
                    .or_else(|| l.strip_prefix("cargo run"))
            })
            .expect("README.md documents how to build (cargo build or cargo run)");
        assert_eq!(
            build_flags(readme_build),
            build_flags(BUILD.strip_prefix("cargo build").unwrap()),
            "README.md builds with different flags than the image's `{BUILD}`"
        );
    }
    let deploy_readme = read(&deploy("README.md"));
    assert!(deploy_readme.contains(BUILD));
    let stages: Vec<&str> = docker.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(stages.len() >= 2, "multi-stage build");
    let final_stage = &docker[docker.rfind("\nFROM ").unwrap()..];
    let user = final_stage
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the final stage sets USER");
    assert!(
        !user.starts_with('0') && !user.starts_with("root"),
        "USER {user}"
    );
    for path in [
        "/usr/share/stormcast/rules",
        "/usr/share/stormcast/models",
        "/usr/local/bin/stormcast",
    ] {
        assert!(final_stage.contains(path), "the image lacks {path}");
    }
    let dockerignore = read(&root().join(".dockerignore"));
    assert!(dockerignore.lines().any(|l| l.trim() == "target/"));
}
