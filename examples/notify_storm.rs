//! Notification benchmark: replays a dense synthetic storm (many clusters,
//! node failures cascading into workload alerts, Alertmanager re-sending every
//! 5 minutes) through correlation and the routing tree, and prints messages
//! per receiver, messages per true incident, the ratio to raw Alertmanager
//! deliveries, and the virtual time from an incident's first alert to its
//! first message.
//!
//! `cargo run --example notify_storm -- [clusters] [failures_per_cluster]`

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;

use chrono::{Duration, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use stormcast::app::{self, ReplayOptions};
use stormcast::config::Overrides;
use stormcast::domain::{Labels, Timestamp};
use stormcast::notify::{MessageKind, NotificationStatus};

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

struct Alert {
    labels: BTreeMap<String, String>,
    starts: Timestamp,
    ends: Timestamp,
    truth: usize,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let clusters: usize = args.get(1).map_or(Ok(60), |s| s.parse())?;
    let per_cluster: usize = args.get(2).map_or(Ok(3), |s| s.parse())?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let t0 = Utc.with_ymd_and_hms(2026, 11, 23, 3, 0, 0).unwrap();

    // Ground truth: each failure is one true incident with its cascade.
    let mut alerts = Vec::new();
    let mut truth = 0;
    for c in 0..clusters {
        let cluster = format!("prod-{c:03}");
        for f in 0..per_cluster {
            let start = t0 + Duration::seconds(rng.gen_range(0..3 * 3600));
            let dur = Duration::seconds(rng.gen_range(600..5400));
            let node = format!("node-{f}");
            let base = |name: &str, sev: &str| {
                let mut l = BTreeMap::new();
                l.insert("alertname".to_owned(), name.to_owned());
                l.insert("cluster".to_owned(), cluster.clone());
                l.insert("severity".to_owned(), sev.to_owned());
                l
            };
            let mut l = base("KubeNodeNotReady", "warning");
            l.insert("node".into(), node.clone());
            alerts.push(Alert {
                labels: l,
                starts: start,
                ends: start + dur,
                truth,
            });
            let mut l = base("NodeFilesystemAlmostOutOfSpace", "critical");
            l.insert("instance".into(), node.clone());
            l.insert("mountpoint".into(), "/".into());
            alerts.push(Alert {
                labels: l,
                starts: start + Duration::seconds(20),
                ends: start + dur,
                truth,
            });
            for p in 0..rng.gen_range(4..12) {
                let mut l = base("KubePodNotReady", "warning");
                l.insert("namespace".into(), format!("team-{}", p % 3));
                l.insert("pod".into(), format!("api-{f}-{p}"));
                let lag = Duration::seconds(rng.gen_range(30..300));
                alerts.push(Alert {
                    labels: l,
                    starts: start + lag,
                    ends: start + dur,
                    truth,
                });
            }
            let mut l = base("KubeDeploymentReplicasMismatch", "warning");
            l.insert("namespace".into(), "team-0".into());
            l.insert("deployment".into(), format!("api-{f}"));
            alerts.push(Alert {
                labels: l,
                starts: start + Duration::seconds(240),
                ends: start + dur,
                truth,
            });
            truth += 1;
        }
    }

    // Alertmanager deliveries: per alert at start, every 5 minutes while firing
    // (repeat), and once resolved. One alert per payload is the densest case.
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("storm.jsonl");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&input)?);
    let mut lines: Vec<(Timestamp, String)> = Vec::new();
    let mut truth_of: HashMap<String, usize> = HashMap::new();
    for a in &alerts {
        let labels = Labels::try_from_map(a.labels.clone())?;
        truth_of.insert(labels.fingerprint().to_string(), a.truth);
        let mut at = a.starts;
        while at < a.ends {
            lines.push((at, payload(a, false)));
            at += Duration::minutes(5);
        }
        lines.push((a.ends, payload(a, true)));
    }
    lines.sort_by_key(|(t, _)| *t);
    for (at, p) in &lines {
        writeln!(
            out,
            r#"{{"at":"{}","payload":{p},"source":"am"}}"#,
            at.to_rfc3339()
        )?;
    }
    out.flush()?;
    let cfg = dir.path().join("stormcast.yaml");
    std::fs::write(&cfg, ROUTES)?;
    let loaded =
        app::load(Some(&cfg), &Overrides::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let wall = std::time::Instant::now();
    let (result, rejected) = app::replay(
        &loaded,
        &ReplayOptions {
            input,
            drain: Duration::hours(1),
            progress: false,
        },
    )?;
    let wall = wall.elapsed();
    anyhow::ensure!(rejected.is_empty(), "rejected lines: {:?}", &rejected[..1]);

    // Map each stormcast incident to the true incidents of its members.
    let mut inc_truth: HashMap<&str, HashSet<usize>> = HashMap::new();
    let mut inc_first_alert: HashMap<&str, Timestamp> = HashMap::new();
    for inc in &result.incidents {
        let t = inc_truth.entry(&inc.id).or_default();
        for a in &inc.alerts {
            if let Some(x) = truth_of.get(&a.fingerprint.to_string()) {
                t.insert(*x);
            }
        }
        let first = inc
            .alerts
            .iter()
            .map(|a| a.starts_at)
            .min()
            .unwrap_or(inc.opened_at);
        inc_first_alert.insert(&inc.id, first);
    }
    let mut per_receiver: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut first_msg: HashMap<usize, Timestamp> = HashMap::new();
    for n in &result.notifications {
        let e = per_receiver.entry(&n.receiver).or_default();
        if n.status == NotificationStatus::Resolved {
            e.1 += 1;
        } else {
            e.0 += 1;
        }
        for t in inc_truth.get(n.incident.as_str()).into_iter().flatten() {
            if n.kind == MessageKind::First {
                let f = first_msg.entry(*t).or_insert(n.at);
                *f = (*f).min(n.at);
            }
        }
    }
    // True incidents' first alert (from the generator) to their first message.
    let mut truth_start: HashMap<usize, Timestamp> = HashMap::new();
    for a in &alerts {
        let s = truth_start.entry(a.truth).or_insert(a.starts);
        *s = (*s).min(a.starts);
    }
    let mut lat: Vec<i64> = first_msg
        .iter()
        .map(|(t, at)| (*at - truth_start[t]).num_seconds())
        .collect();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(-1)
    };
    let within_60 = lat.iter().filter(|s| **s <= 60).count();
    let total_msgs = result.notifications.len();
    let firing_msgs = result
        .notifications
        .iter()
        .filter(|n| n.status == NotificationStatus::Firing)
        .count();

    println!("storm: {clusters} clusters x {per_cluster} failures = {truth} true incidents, {} alerts, {} raw Alertmanager deliveries", alerts.len(), lines.len());
    println!(
        "replay: {} stormcast incidents, {total_msgs} messages in {:.2?} wall time ({}s virtual)",
        result.incidents.len(),
        wall,
        result.stats.virtual_seconds
    );
    println!("messages per receiver (firing / resolved):");
    for (r, (f, res)) in &per_receiver {
        println!("  {r:<10} {f:>6} / {res}");
    }
    println!("true incidents notified: {} of {truth}", first_msg.len());
    println!(
        "messages per true incident: {:.2} firing only (first+updates+repeats), {:.2} with resolved",
        firing_msgs as f64 / truth as f64,
        total_msgs as f64 / truth as f64
    );
    println!(
        "messages / raw deliveries: {:.4} ({total_msgs} / {})",
        total_msgs as f64 / lines.len() as f64,
        lines.len()
    );
    println!(
        "first alert -> first message (virtual s): p50 {} p90 {} max {}; within 60 s: {:.1}%",
        pct(0.5),
        pct(0.9),
        lat.last().copied().unwrap_or(-1),
        100.0 * within_60 as f64 / lat.len().max(1) as f64
    );
    Ok(())
}

fn payload(a: &Alert, resolved: bool) -> String {
    let labels = serde_json::to_string(&a.labels).unwrap();
    let ends = if resolved {
        a.ends.to_rfc3339()
    } else {
        "0001-01-01T00:00:00Z".to_owned()
    };
    let status = if resolved { "resolved" } else { "firing" };
    format!(
        r#"{{"version":"4","groupKey":"{{}}:{{}}","status":"{status}","receiver":"stormcast","externalURL":"http://am.{}.example:9093","alerts":[{{"status":"{status}","labels":{labels},"annotations":{{}},"startsAt":"{}","endsAt":"{ends}","generatorURL":"http://prom/graph","fingerprint":""}}]}}"#,
        a.labels["cluster"],
        a.starts.to_rfc3339()
    )
}
