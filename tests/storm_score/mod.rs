//! Replays a recorded storm folder (`storm.jsonl`, `topology/`, `deps.yaml`,
//! `truth.json`) with the shipped rules and scores its grouping against the
//! ground truth: pairwise precision, recall and F1 over the alerts that were
//! delivered, each alert lost counting as a group of its own. Shared by the
//! storm floor test and the `correlation_quality` example.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use stormcast::app;

/// Alerts that say nothing about a fault: never scored.
const UNSCORED: [&str; 2] = ["Watchdog", "InfoInhibitor"];

/// Pairwise grouping figures of one replayed storm.
#[derive(Debug, Clone, Copy)]
pub struct StormScore {
    pub alerts: usize,
    pub true_incidents: usize,
    pub incidents: usize,
    pub lost: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Firing notifications per true incident.
    pub messages_per_incident: f64,
}

impl std::fmt::Display for StormScore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "P {:.3} R {:.3} F1 {:.3}  {} alerts, {} true incidents, {} found, {} lost, {:.2} messages per incident",
            self.precision,
            self.recall,
            self.f1,
            self.alerts,
            self.true_incidents,
            self.incidents,
            self.lost,
            self.messages_per_incident
        )
    }
}

/// The storm folders shipped under `testdata/storms`, by name.
pub fn storm_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/storms");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("testdata/storms")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("storm.jsonl").is_file())
        .collect();
    dirs.sort();
    dirs
}

/// Alertmanager's label-set fingerprint: FNV-1a 64 over the sorted label
/// names and values, each followed by a 0xff separator.
fn label_fingerprint<'a>(labels: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut sorted: Vec<(&str, &str)> = labels.collect();
    sorted.sort_unstable();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes.iter().chain([0xffu8].iter()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for (k, v) in sorted {
        eat(k.as_bytes());
        eat(v.as_bytes());
    }
    format!("{h:016x}")
}

fn json_labels(v: &serde_json::Value) -> Vec<(&str, &str)> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
                .collect()
        })
        .unwrap_or_default()
}

fn pairs(n: usize) -> u64 {
    (n as u64) * (n as u64).saturating_sub(1) / 2
}

/// Replays `dir` with the shipped rules plus the storm's `deps.yaml`, and
/// scores it.
pub fn replay_and_score(dir: &Path) -> StormScore {
    let rules = tempfile::tempdir().expect("temp dir");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    for e in std::fs::read_dir(&shipped).expect("rules/") {
        let p = e.expect("rules entry").path();
        if p.extension().is_some_and(|x| x == "yaml") {
            std::fs::copy(&p, rules.path().join(p.file_name().expect("file"))).expect("copy rule");
        }
    }
    std::fs::copy(
        dir.join("deps.yaml"),
        rules.path().join("storm-dependencies.yaml"),
    )
    .expect("copy deps.yaml");
    let overrides = stormcast::config::Overrides {
        rules_dir: Some(rules.path().to_path_buf()),
        ..Default::default()
    };
    let mut loaded = app::load(None, &overrides).expect("config loads");
    app::load_topology_dir(&mut loaded, &dir.join("topology"));
    let opts = app::ReplayOptions {
        input: dir.join("storm.jsonl"),
        drain: chrono::Duration::hours(1),
        progress: false,
    };
    let (result, rejections) = app::replay(&loaded, &opts).expect("replay");
    assert!(rejections.is_empty(), "rejected lines: {rejections:?}");

    let text = std::fs::read_to_string(dir.join("storm.jsonl")).expect("storm.jsonl");
    let mut delivered = HashSet::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).expect("storm line");
        for a in v["payload"]["alerts"].as_array().into_iter().flatten() {
            delivered.insert(label_fingerprint(json_labels(&a["labels"]).into_iter()));
        }
    }
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("truth.json")).expect("truth"))
            .expect("truth.json");
    let true_group: BTreeMap<String, String> = truth["alerts"]
        .as_object()
        .expect("truth alerts")
        .iter()
        .filter(|(fp, v)| {
            delivered.contains(*fp)
                && !UNSCORED.contains(&v["labels"]["alertname"].as_str().unwrap_or(""))
        })
        .map(|(fp, v)| (fp.clone(), v["incident"].as_str().unwrap_or("").to_owned()))
        .collect();

    // Each alert belongs to the first incident that lists it.
    let mut found: HashMap<String, String> = HashMap::new();
    for inc in &result.incidents {
        for a in &inc.alerts {
            let fp = label_fingerprint(a.labels.iter());
            if true_group.contains_key(&fp) {
                found.entry(fp).or_insert_with(|| inc.id.clone());
            }
        }
    }
    let lost = true_group
        .keys()
        .filter(|fp| !found.contains_key(*fp))
        .count();
    let mut both: HashMap<(&str, String), usize> = HashMap::new();
    let mut by_truth: HashMap<&str, usize> = HashMap::new();
    let mut by_found: HashMap<String, usize> = HashMap::new();
    for (i, (fp, g)) in true_group.iter().enumerate() {
        let p = found
            .get(fp)
            .cloned()
            .unwrap_or_else(|| format!("lost-{i}"));
        *both.entry((g.as_str(), p.clone())).or_default() += 1;
        *by_truth.entry(g.as_str()).or_default() += 1;
        *by_found.entry(p).or_default() += 1;
    }
    let tp: u64 = both.values().map(|n| pairs(*n)).sum();
    let same_truth: u64 = by_truth.values().map(|n| pairs(*n)).sum();
    let same_found: u64 = by_found.values().map(|n| pairs(*n)).sum();
    let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    let (precision, recall) = (ratio(tp, same_found), ratio(tp, same_truth));
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    let firing = result
        .notifications
        .iter()
        .filter(|n| n.status == stormcast::notify::NotificationStatus::Firing)
        .count();
    StormScore {
        alerts: true_group.len(),
        true_incidents: by_truth.len(),
        incidents: by_found.len(),
        lost,
        precision,
        recall,
        f1,
        messages_per_incident: ratio(firing as u64, by_truth.len() as u64),
    }
}
