//! Notification benchmark: replays dense storms (many clusters, Alertmanager
//! re-sending every few minutes) through the real correlator (shipped rules,
//! kube-state-metrics topology, declared dependencies) and the routing tree,
//! and prints per storm and overall:
//! - messages per receiver (first / update / repeat / resolved);
//! - messages per true incident and receiver (first + updates + repeats, the
//!   target: at most 1.5), with resolved messages and over all receivers
//!   alongside;
//! - the ratio of messages to the raw Alertmanager deliveries in the input;
//! - the virtual time from a true incident's first alert arriving to its
//!   first message (target: 90% within 60 s), and how many true incidents
//!   were notified at all (target: every one).
//!
//! Storms: a hand-built node-failure cascade over 60 clusters, and the
//! fleet simulator's storms (node, zone, dependency, disk, control-plane,
//! rollout, cross-cluster faults and background noise) over several seeds.
//! Figures only; nothing is asserted.
//!
//! `cargo run --release --example notify_storm [-- quick]`

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use stormcast::app::{self, Loaded, ReplayOptions};
use stormcast::config::{parse_yaml, Config, ValidateCtx};
use stormcast::correlate::{CorrelateSettings, Rules, Topology};
use stormcast::domain::{Fingerprint, Labels, Timestamp};
use stormcast::notify::{MessageKind, NotificationStatus};
use stormcast::sim::{self, ReplayLine, SimConfig};

/// The bench's routing: every incident to the team, critical ones also page
/// (`continue`), forecasts to capacity. Alertmanager's usual timers.
const ROUTES: &str = r#"
route:
  receiver: team
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 4h
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
      continue: true
    - matchers: ['predictive="true"']
      receiver: capacity
receivers:
  - name: team
  - name: pager
  - name: capacity
"#;

/// A storm to replay, with its ground truth.
struct Case {
    name: String,
    lines: Vec<ReplayLine>,
    /// Alert fingerprint → true incident.
    truth: BTreeMap<Fingerprint, usize>,
    rules: Rules,
    topology: Topology,
}

#[derive(Default, Clone)]
struct Figures {
    alerts: usize,
    true_incidents: usize,
    notified: usize,
    deliveries: usize,
    incidents: usize,
    /// Messages by receiver and kind.
    by_receiver: BTreeMap<String, BTreeMap<&'static str, usize>>,
    firing: usize,
    resolved: usize,
    /// (true incident, receiver) pairs that got a message.
    reached: usize,
    /// Messages about incidents that correlation later merged away (their
    /// members moved to the survivor): they count, but reach no pair.
    unmapped: usize,
    latencies: Vec<i64>,
}

impl Figures {
    fn within(&self, secs: i64) -> f64 {
        let n = self.latencies.iter().filter(|s| **s <= secs).count();
        100.0 * n as f64 / self.latencies.len().max(1) as f64
    }

    fn pct(&self, p: f64) -> i64 {
        let mut v = self.latencies.clone();
        v.sort_unstable();
        v.get(((v.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(-1)
    }

    fn add(&mut self, o: &Figures) {
        self.alerts += o.alerts;
        self.true_incidents += o.true_incidents;
        self.notified += o.notified;
        self.deliveries += o.deliveries;
        self.incidents += o.incidents;
        for (r, kinds) in &o.by_receiver {
            for (k, n) in kinds {
                *self
                    .by_receiver
                    .entry(r.clone())
                    .or_default()
                    .entry(k)
                    .or_default() += n;
            }
        }
        self.firing += o.firing;
        self.resolved += o.resolved;
        self.reached += o.reached;
        self.unmapped += o.unmapped;
        self.latencies.extend(&o.latencies);
    }

    fn print(&self) {
        println!(
            "  {} alerts, {} true incidents, {} raw Alertmanager deliveries, {} stormcast incidents",
            self.alerts, self.true_incidents, self.deliveries, self.incidents
        );
        println!("  messages per receiver (first / update / repeat / resolved):");
        for (r, k) in &self.by_receiver {
            let g = |x: &str| k.get(x).copied().unwrap_or(0);
            println!(
                "    {r:<9} {:>5} / {:>4} / {:>4} / {:>5}",
                g("first"),
                g("update"),
                g("repeat"),
                g("resolved")
            );
        }
        let total = self.firing + self.resolved;
        println!(
            "  true incidents notified: {} of {} ({} messages about incidents later merged into another)",
            self.notified, self.true_incidents, self.unmapped
        );
        println!(
            "  messages per true incident and receiver: {:.2} (first+updates+repeats; {} pairs), {:.2} with resolved",
            self.firing as f64 / self.reached.max(1) as f64,
            self.reached,
            total as f64 / self.reached.max(1) as f64
        );
        println!(
            "  messages per true incident, all receivers: {:.2} firing, {:.2} with resolved",
            self.firing as f64 / self.true_incidents.max(1) as f64,
            total as f64 / self.true_incidents.max(1) as f64
        );
        println!(
            "  messages / raw deliveries: {:.4} ({total} / {})",
            total as f64 / self.deliveries.max(1) as f64,
            self.deliveries
        );
        println!(
            "  first alert -> first message (virtual s): p50 {} p90 {} max {}; within 60 s: {:.1}%",
            self.pct(0.5),
            self.pct(0.9),
            self.pct(1.0),
            self.within(60)
        );
    }
}

fn loaded(case: &Case) -> anyhow::Result<Loaded> {
    let mut config: Config = parse_yaml(ROUTES).map_err(|e| anyhow::anyhow!("{e}"))?;
    let ctx = ValidateCtx {
        base_dir: ".".into(),
    };
    let errs = config.validate(&ctx);
    anyhow::ensure!(errs.is_empty(), "bench routes: {errs}");
    Ok(Loaded {
        notify: stormcast::notify::planner_settings(&config),
        config,
        ctx,
        correlate: CorrelateSettings::from_rules(case.rules.clone()),
        models: Vec::new(),
        topology: Arc::new(case.topology.clone()),
    })
}

fn firing_alerts(l: &ReplayLine) -> Vec<Fingerprint> {
    let Some(alerts) = l.payload.get("alerts").and_then(|a| a.as_array()) else {
        return Vec::new();
    };
    alerts
        .iter()
        .filter(|a| a["status"] == "firing")
        .filter_map(|a| serde_json::from_value::<Labels>(a["labels"].clone()).ok())
        .map(|l| l.fingerprint())
        .collect()
}

fn measure(case: &Case) -> anyhow::Result<Figures> {
    let loaded = loaded(case)?;
    let jsonl: String = case
        .lines
        .iter()
        .map(|l| serde_json::to_string(l).map(|s| s + "\n"))
        .collect::<Result<_, _>>()?;
    let opts = ReplayOptions {
        input: "-".into(),
        drain: Duration::hours(1),
        progress: false,
    };
    let (result, rejected) = app::replay_text(&loaded, &jsonl, &opts)?;
    anyhow::ensure!(rejected.is_empty(), "rejected: {:?}", rejected.first());

    // When each true incident's first alert arrived.
    let mut arrival: HashMap<usize, Timestamp> = HashMap::new();
    for l in &case.lines {
        for fp in firing_alerts(l) {
            if let Some(t) = case.truth.get(&fp) {
                let a = arrival.entry(*t).or_insert(l.at);
                *a = (*a).min(l.at);
            }
        }
    }
    // The true incidents each stormcast incident holds.
    let mut holds: HashMap<&str, HashSet<usize>> = HashMap::new();
    for inc in &result.incidents {
        let h = holds.entry(&inc.id).or_default();
        for a in &inc.alerts {
            if let Some(t) = case.truth.get(&a.fingerprint) {
                h.insert(*t);
            }
        }
    }
    // A fault whose alerts never reached Alertmanager's receiver is no
    // incident anyone could be told about.
    let mut f = Figures {
        alerts: result.stats.alerts as usize,
        true_incidents: arrival.len(),
        deliveries: case.lines.len(),
        incidents: result
            .incidents
            .iter()
            .filter(|i| !i.alerts.is_empty())
            .count(),
        ..Default::default()
    };
    let mut first_msg: HashMap<usize, Timestamp> = HashMap::new();
    let mut reached: HashSet<(usize, &str)> = HashSet::new();
    for n in &result.notifications {
        *f.by_receiver
            .entry(n.receiver.clone())
            .or_default()
            .entry(n.kind.as_str())
            .or_default() += 1;
        if n.status == NotificationStatus::Resolved {
            f.resolved += 1;
        } else {
            f.firing += 1;
        }
        let truths = holds.get(n.incident.as_str());
        if truths.is_none_or(HashSet::is_empty) {
            f.unmapped += 1;
        }
        for t in truths.into_iter().flatten() {
            reached.insert((*t, n.receiver.as_str()));
            if n.kind == MessageKind::First {
                let m = first_msg.entry(*t).or_insert(n.at);
                *m = (*m).min(n.at);
            }
        }
    }
    f.reached = reached.len();
    f.notified = first_msg.len();
    f.latencies = first_msg
        .iter()
        .filter_map(|(t, at)| Some((*at - *arrival.get(t)?).num_seconds()))
        .collect();
    Ok(f)
}

/// A Prometheus instant-query body holding `series` (kube-state-metrics).
fn query_body(series: &[serde_json::Value]) -> Vec<u8> {
    let result: Vec<serde_json::Value> = series
        .iter()
        .map(|m| serde_json::json!({"metric": m, "value": [1_795_000_000, "1"]}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "status": "success",
        "data": {"resultType": "vector", "result": result},
    }))
    .expect("serialisable")
}

/// Node failures cascading into pod and workload alerts, one true incident
/// per failure; one alert per Alertmanager delivery, re-sent every 5 minutes.
/// The pods' nodes and owners are in kube-state-metrics topology, as the
/// correlator would read them from Prometheus.
fn cascade(clusters: usize, per_cluster: usize, seed: u64) -> anyhow::Result<Case> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let t0 = Utc.with_ymd_and_hms(2026, 11, 23, 3, 0, 0).unwrap();
    let mut lines = Vec::new();
    let mut truth = BTreeMap::new();
    let (mut pod_info, mut pod_owner, mut rs_owner) = (Vec::new(), Vec::new(), Vec::new());
    let mut n = 0;
    for c in 0..clusters {
        let cluster = format!("prod-{c:03}");
        for f in 0..per_cluster {
            let start = t0 + Duration::seconds(rng.gen_range(0..3 * 3600));
            let ends = start + Duration::seconds(rng.gen_range(600..5400));
            let node = format!("node-{f}");
            let ns = format!("team-{}", f % 3);
            let deploy = format!("api-{f}");
            let rs = format!("{deploy}-7d9f8c");
            rs_owner.push(serde_json::json!({"cluster": cluster, "namespace": ns,
                "replicaset": rs, "owner_kind": "Deployment", "owner_name": deploy}));
            let mut alerts: Vec<(Vec<(&str, String)>, i64)> = vec![
                (
                    vec![
                        ("alertname", "KubeNodeNotReady".into()),
                        ("severity", "warning".into()),
                        ("node", node.clone()),
                    ],
                    0,
                ),
                (
                    vec![
                        ("alertname", "NodeFilesystemAlmostOutOfSpace".into()),
                        ("severity", "critical".into()),
                        ("instance", node.clone()),
                        ("mountpoint", "/".into()),
                    ],
                    20,
                ),
                (
                    vec![
                        ("alertname", "KubeDeploymentReplicasMismatch".into()),
                        ("severity", "warning".into()),
                        ("namespace", ns.clone()),
                        ("deployment", deploy.clone()),
                    ],
                    240,
                ),
            ];
            for p in 0..rng.gen_range(4..12) {
                let pod = format!("{rs}-x{p:03}");
                pod_info.push(serde_json::json!({"cluster": cluster, "namespace": ns,
                    "pod": pod, "node": node}));
                pod_owner.push(serde_json::json!({"cluster": cluster, "namespace": ns,
                    "pod": pod, "owner_kind": "ReplicaSet", "owner_name": rs}));
                alerts.push((
                    vec![
                        ("alertname", "KubePodNotReady".into()),
                        ("severity", "warning".into()),
                        ("namespace", ns.clone()),
                        ("pod", pod),
                    ],
                    rng.gen_range(30..300),
                ));
            }
            for (pairs, lag) in alerts {
                let mut labels: BTreeMap<String, String> =
                    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                labels.insert("cluster".into(), cluster.clone());
                let l = Labels::try_from_map(labels.clone())?;
                truth.insert(l.fingerprint(), n);
                let starts = start + Duration::seconds(lag);
                let mut at = starts;
                while at < ends {
                    lines.push(line(&labels, &cluster, starts, None, at));
                    at += Duration::minutes(5);
                }
                lines.push(line(&labels, &cluster, starts, Some(ends), ends));
            }
            n += 1;
        }
    }
    lines.sort_by_key(|l| l.at);
    let mut topology = Topology::default();
    for (metric, series) in [
        ("kube_pod_info", &pod_info),
        ("kube_pod_owner", &pod_owner),
        ("kube_replicaset_owner", &rs_owner),
    ] {
        topology
            .add_query_body(metric, &query_body(series))
            .map_err(|e| anyhow::anyhow!("{metric}: {e:?}"))?;
    }
    Ok(Case {
        name: format!("node-failure cascade: {clusters} clusters x {per_cluster} failures"),
        lines,
        truth,
        rules: Rules::default(),
        topology,
    })
}

fn line(
    labels: &BTreeMap<String, String>,
    cluster: &str,
    starts: Timestamp,
    ends: Option<Timestamp>,
    at: Timestamp,
) -> ReplayLine {
    let status = if ends.is_some() { "resolved" } else { "firing" };
    let ends = ends.map_or("0001-01-01T00:00:00Z".to_owned(), |e| e.to_rfc3339());
    ReplayLine {
        at,
        payload: serde_json::json!({
            "version": "4", "groupKey": "{}:{}", "status": status, "receiver": "stormcast",
            "externalURL": format!("http://am.{cluster}.example:9093"),
            "alerts": [{
                "status": status, "labels": labels, "annotations": {},
                "startsAt": starts.to_rfc3339(), "endsAt": ends,
                "generatorURL": "http://prom/graph", "fingerprint": "",
            }],
        }),
        source: "am".into(),
    }
}

fn simulated(name: &str, cfg: SimConfig) -> Case {
    let storm = sim::simulate(&cfg);
    Case {
        name: format!(
            "{name} (seed {}, {} clusters x {} faults, {} nodes each)",
            cfg.seed, cfg.clusters, cfg.faults_per_cluster, cfg.nodes_per_cluster
        ),
        rules: storm.rules(),
        topology: storm.topology(),
        truth: storm.truth.alerts.clone(),
        lines: storm.lines,
    }
}

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().nth(1).as_deref() == Some("quick");
    let mut cases = vec![cascade(if quick { 20 } else { 60 }, 3, 7)?];
    let seeds: &[u64] = if quick { &[11] } else { &[11, 12, 13] };
    for &seed in seeds {
        cases.push(simulated(
            "simulated dense storm",
            SimConfig {
                seed,
                clusters: if quick { 12 } else { 24 },
                faults_per_cluster: 6,
                nodes_per_cluster: 20,
                noise_per_hour: 6.0,
                ..Default::default()
            },
        ));
    }
    if !quick {
        cases.push(simulated(
            "simulated very dense storm",
            SimConfig {
                seed: 21,
                clusters: 40,
                faults_per_cluster: 10,
                nodes_per_cluster: 30,
                noise_per_hour: 8.0,
                ..Default::default()
            },
        ));
    }
    println!("stormcast notification benchmark (virtual time; routes: team, pager on critical with continue, group_wait 30s, group_interval 5m)");
    let mut all = Figures::default();
    for case in &cases {
        let wall = std::time::Instant::now();
        let f = measure(case)?;
        println!("\n{} [{:.1?} wall]", case.name, wall.elapsed());
        f.print();
        all.add(&f);
    }
    println!("\nall storms:");
    all.print();
    let per = all.firing as f64 / all.reached.max(1) as f64;
    println!(
        "\ntargets: every true incident notified: {}; <= 1.5 messages per true incident and receiver: {} ({per:.2}); 90% first message within 60 s: {} ({:.1}%)",
        if all.notified == all.true_incidents { "met" } else { "MISSED" },
        if per <= 1.5 { "met" } else { "MISSED" },
        if all.within(60) >= 90.0 { "met" } else { "MISSED" },
        all.within(60)
    );
    Ok(())
}
