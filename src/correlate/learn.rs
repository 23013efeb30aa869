//! `stormcast learn`: mine recorded alert history for co-occurrence and
//! precedence between alert names on related entities, fit the learned
//! ranking model on it, and suggest rules.
//!
//! Mining is association-rule counting (support, confidence, lift). Two alert
//! occurrences are *related* when they concern the same node, the same
//! workload or the same namespace of one cluster (pods are placed on nodes and
//! workloads through the topology when one is given), or are both
//! cluster-scoped (no node, workload or namespace: control plane, capacity) in
//! one cluster, and *co-occur* when their starts are within `window`. Each
//! pair of occurrences counts once, through its most specific relation.
//! For a pair `A → B`:
//! - `support`: occurrences of `A` with a related `B` starting at or after it
//!   within the window;
//! - `confidence`: that count over all occurrences of `A`;
//! - `lift`: confidence over the share of all occurrences followed by a
//!   related `B` (how much more likely `B` follows `A` than anything else);
//! - `precedence`: of the related co-occurrences of the two names, the share
//!   where `A` started first;
//! - the mean lag from `A` to `B` and the share of each relation kind.
//!
//! Association is not cause: `KubeAPIErrorBudgetBurn` precedes and always
//! accompanies `KubeAPIDown`, and `TargetDown` fires before
//! `KubeNodeNotReady` only because of its shorter `for`. When labelled
//! incidents are at hand (a store's incidents, or `--truth` for a simulated
//! history), the [`learned`](super::learned) logistic regression scores each
//! pair as cause or not, and the pairs it turns down are not suggested.
//!
//! The suggested rules list each name that explains others. A name without a
//! loaded rule gets a `weight` above the names it explains; a name with one
//! keeps its loaded `about`, `links` and `weight` (a comment notes when the
//! learned order disagrees). Every pair is written as a comment with its
//! figures, and the fitted model's scores as the `learned:` section that the
//! correlator ranks with.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use chrono::Duration;

use crate::domain::{Labels, Timestamp};

use super::learned::Learned;
use super::rules::{AboutKind, Rules};
use super::topology::{workload_from_pod_name, Topology};

/// One alert episode: its labels and when it started.
#[derive(Debug, Clone)]
pub struct Occurrence {
    pub labels: Labels,
    pub starts_at: Timestamp,
}

impl Occurrence {
    fn name(&self) -> &str {
        self.labels.get_or_empty("alertname")
    }
}

/// Alert episodes from replay JSON lines (`{"at", "payload", "source"}`),
/// one per (labels, startsAt). Lines that do not parse are skipped and
/// counted.
pub fn occurrences_from_jsonl(text: &str) -> (Vec<Occurrence>, usize) {
    let mut seen: HashSet<(crate::domain::Fingerprint, Timestamp)> = HashSet::new();
    let mut out = Vec::new();
    let mut bad = 0;
    for raw in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(line) = serde_json::from_str::<serde_json::Value>(raw) else {
            bad += 1;
            continue;
        };
        let at = line["at"]
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&chrono::Utc));
        let Some(alerts) = line["payload"]["alerts"].as_array() else {
            bad += 1;
            continue;
        };
        let common_cluster = line["payload"]["commonLabels"]["cluster"]
            .as_str()
            .or_else(|| line["source"].as_str())
            .unwrap_or_default()
            .to_string();
        for a in alerts {
            let Ok(mut labels) = serde_json::from_value::<Labels>(a["labels"].clone()) else {
                bad += 1;
                continue;
            };
            if !labels.contains("cluster") && !common_cluster.is_empty() {
                labels.insert("cluster", common_cluster.clone());
            }
            let Some(starts) = a["startsAt"]
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&chrono::Utc))
                .or(at)
            else {
                continue;
            };
            if seen.insert((labels.fingerprint(), starts)) {
                out.push(Occurrence {
                    labels,
                    starts_at: starts,
                });
            }
        }
    }
    (out, bad)
}

/// Alert episodes from a store: every alert it holds, firing or resolved,
/// plus the members of stored incidents it no longer holds.
pub fn occurrences_from_store(
    store: &crate::store::Store,
) -> Result<Vec<Occurrence>, crate::store::StoreError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for a in store.load_alerts()? {
        let mut labels = a.labels.clone();
        if !labels.contains("cluster") {
            labels.insert("cluster", a.cluster.to_string());
        }
        if seen.insert((labels.fingerprint(), a.starts_at)) {
            out.push(Occurrence {
                labels,
                starts_at: a.starts_at,
            });
        }
    }
    Ok(out)
}

/// Figures for one pair `antecedent → consequent`.
#[derive(Debug, Clone, PartialEq)]
pub struct PairStat {
    pub antecedent: String,
    pub consequent: String,
    pub support: usize,
    pub antecedent_count: usize,
    pub confidence: f64,
    pub lift: f64,
    pub precedence: f64,
    /// Mean start of `consequent` minus start of `antecedent` over their
    /// related co-occurrences, in seconds (negative: `consequent` first).
    pub mean_lag_secs: f64,
    /// Share of the related co-occurrences relating through the same node,
    /// the same workload, only the same namespace, and the same cluster
    /// (cluster-scoped alerts); sums to 1.
    pub relation: [f64; 4],
}

/// Thresholds for suggested rules.
#[derive(Debug, Clone)]
pub struct LearnOptions {
    pub window: Duration,
    pub min_support: usize,
    pub min_confidence: f64,
    pub min_lift: f64,
}

impl Default for LearnOptions {
    fn default() -> Self {
        LearnOptions {
            window: Duration::minutes(15),
            min_support: 3,
            min_confidence: 0.5,
            min_lift: 1.2,
        }
    }
}

/// How two related occurrences relate, most specific first.
const RELATIONS: [&str; 4] = ["node", "workload", "ns", "cluster"];

fn relation_rank(key: &str) -> usize {
    let kind = key.split('\x1f').next().unwrap_or_default();
    RELATIONS.iter().position(|r| *r == kind).unwrap_or(3)
}

/// The entity keys an occurrence relates through.
fn keys(o: &Occurrence, topo: &Topology) -> Vec<String> {
    let l = &o.labels;
    let cluster = l.get_or_empty("cluster");
    let ns = l.get_or_empty("namespace");
    let mut k = Vec::new();
    let mut node = l.get("node").map(str::to_string);
    if node.is_none() {
        if let Some(inst) = l.get("instance") {
            let host = inst.split(':').next().unwrap_or(inst);
            if l.get("job") == Some("node-exporter")
                || l.get("job") == Some("kubelet")
                || topo.is_node(cluster, host)
            {
                node = Some(host.to_string());
            }
        }
    }
    let pod = l.get("pod");
    if node.is_none() {
        if let Some(p) = pod {
            node = topo.pod_node(cluster, ns, p).map(str::to_string);
        }
    }
    if let Some(n) = node {
        k.push(format!("node\x1f{cluster}\x1f{n}"));
    }
    let workload = ["deployment", "statefulset", "daemonset", "service"]
        .iter()
        .find_map(|n| l.get(n).map(str::to_string))
        .or_else(|| {
            pod.and_then(|p| {
                topo.pod_workload(cluster, ns, p)
                    .or_else(|| workload_from_pod_name(p))
                    .map(|o| o.name)
            })
        });
    if let Some(w) = workload {
        k.push(format!("workload\x1f{cluster}\x1f{ns}\x1f{w}"));
    }
    if !ns.is_empty() {
        k.push(format!("ns\x1f{cluster}\x1f{ns}"));
    }
    // Cluster-scoped alerts (control plane, capacity) relate through their
    // cluster.
    if k.is_empty() && !cluster.is_empty() {
        k.push(format!("cluster\x1f{cluster}"));
    }
    k
}

/// Mines pair statistics. Cost: per entity key, occurrences sorted by start
/// and compared only within the window.
pub fn mine(occs: &[Occurrence], topo: &Topology, opts: &LearnOptions) -> Vec<PairStat> {
    let mut buckets: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, o) in occs.iter().enumerate() {
        for k in keys(o, topo) {
            buckets.entry(k).or_default().push(i);
        }
    }
    // followers[i]: names of related occurrences starting at or after i
    // within the window (other than i itself).
    let mut followers: Vec<HashSet<&str>> = vec![HashSet::new(); occs.len()];
    // ordered[(a, b)]: related co-occurrences with a strictly first.
    let mut ordered: HashMap<(&str, &str), usize> = HashMap::new();
    // lags[(a, b)]: (sum of b's start minus a's, in seconds, and count) with
    // a no later than b; how[(a, b)]: co-occurrences by relation kind.
    let mut lags: HashMap<(&str, &str), (f64, usize)> = HashMap::new();
    let mut how: HashMap<(&str, &str), [usize; 4]> = HashMap::new();
    let mut seen_pairs: HashSet<(usize, usize)> = HashSet::new();
    // The most specific relation between two occurrences counts: nodes, then
    // workloads, then namespaces (a pair is counted once).
    let mut buckets: Vec<(usize, String, Vec<usize>)> = buckets
        .into_iter()
        .map(|(k, v)| (relation_rank(&k), k, v))
        .collect();
    buckets.sort_by(|x, y| (x.0, &x.1).cmp(&(y.0, &y.1)));
    for (rel, _, idx) in buckets.iter_mut() {
        let rel = *rel;
        idx.sort_by_key(|&i| occs[i].starts_at);
        for (p, &i) in idx.iter().enumerate() {
            for &j in &idx[p + 1..] {
                if occs[j].starts_at - occs[i].starts_at > opts.window {
                    break;
                }
                let (a, b) = (occs[i].name(), occs[j].name());
                if a == b || !seen_pairs.insert((i.min(j), i.max(j))) {
                    continue;
                }
                followers[i].insert(b);
                let lag = (occs[j].starts_at - occs[i].starts_at).num_seconds() as f64;
                for key in [(a, b), (b, a)] {
                    how.entry(key).or_default()[rel] += 1;
                }
                let l = lags.entry((a, b)).or_default();
                l.0 += lag;
                l.1 += 1;
                let l = lags.entry((b, a)).or_default();
                l.0 -= lag;
                l.1 += 1;
                if occs[j].starts_at == occs[i].starts_at {
                    followers[j].insert(a);
                } else {
                    *ordered.entry((a, b)).or_default() += 1;
                }
            }
        }
    }
    let mut count: HashMap<&str, usize> = HashMap::new();
    for o in occs {
        *count.entry(o.name()).or_default() += 1;
    }
    let mut support: HashMap<(&str, &str), usize> = HashMap::new();
    let mut followed_by: HashMap<&str, usize> = HashMap::new();
    for (i, f) in followers.iter().enumerate() {
        for &b in f {
            *support.entry((occs[i].name(), b)).or_default() += 1;
            *followed_by.entry(b).or_default() += 1;
        }
    }
    let total = occs.len().max(1) as f64;
    let mut out: Vec<PairStat> = support
        .iter()
        .map(|(&(a, b), &s)| {
            let n_a = count[a];
            let confidence = s as f64 / n_a as f64;
            let base = followed_by[b] as f64 / total;
            let ab = ordered.get(&(a, b)).copied().unwrap_or(0);
            let ba = ordered.get(&(b, a)).copied().unwrap_or(0);
            PairStat {
                antecedent: a.to_string(),
                consequent: b.to_string(),
                support: s,
                antecedent_count: n_a,
                confidence,
                lift: if base > 0.0 { confidence / base } else { 0.0 },
                precedence: if ab + ba == 0 {
                    0.5
                } else {
                    ab as f64 / (ab + ba) as f64
                },
                mean_lag_secs: lags
                    .get(&(a, b))
                    .map_or(0.0, |(sum, n)| sum / (*n).max(1) as f64),
                relation: how.get(&(a, b)).map_or([0.0, 0.0, 0.0, 1.0], |h| {
                    let n = h.iter().sum::<usize>().max(1) as f64;
                    h.map(|c| c as f64 / n)
                }),
            }
        })
        .collect();
    out.sort_by(|x, y| {
        y.confidence
            .total_cmp(&x.confidence)
            .then(y.support.cmp(&x.support))
            .then(x.antecedent.cmp(&y.antecedent))
            .then(x.consequent.cmp(&y.consequent))
    });
    out
}

/// Keeps the pairs that pass the thresholds and do not run mostly backwards.
pub fn strong_pairs<'a>(pairs: &'a [PairStat], opts: &LearnOptions) -> Vec<&'a PairStat> {
    pairs
        .iter()
        .filter(|p| {
            p.support >= opts.min_support
                && p.confidence >= opts.min_confidence
                && p.lift >= opts.min_lift
                && p.precedence >= 0.5
        })
        .collect()
}

fn about_name(a: AboutKind) -> &'static str {
    match a {
        AboutKind::Labels => "labels",
        AboutKind::Node => "node",
        AboutKind::ControlPlane => "control_plane",
        AboutKind::Workload => "workload",
        AboutKind::NodeScrape => "node_scrape",
        AboutKind::Cluster => "cluster",
    }
}

/// Renders suggested rules in the `rules/` format. Each antecedent gets a
/// weight above every consequent it explains (starting from the loaded
/// weights), keeping its loaded `about` and `links`. With a fitted model,
/// a strong pair is suggested only when the model scores it a cause
/// (score at least 0.5); the pairs it turns down are listed as comments.
pub fn suggest_rules(
    pairs: &[PairStat],
    opts: &LearnOptions,
    rules: &Rules,
    occurrences: usize,
    model: Option<&Learned>,
) -> String {
    let score = |p: &PairStat| model.and_then(|m| m.score(&p.antecedent, &p.consequent));
    let (strong, refused): (Vec<&PairStat>, Vec<&PairStat>) = strong_pairs(pairs, opts)
        .into_iter()
        .partition(|p| model.is_none() || score(p).is_some_and(|s| s >= 0.5));
    let mut weight: BTreeMap<String, u32> = BTreeMap::new();
    for p in &strong {
        for n in [&p.antecedent, &p.consequent] {
            weight.entry(n.clone()).or_insert_with(|| rules.weight(n));
        }
    }
    // Raise antecedents above their consequents; a few passes settle chains.
    for _ in 0..8 {
        let mut changed = false;
        for p in &strong {
            let need = weight[&p.consequent] + 1;
            let w = weight.get_mut(&p.antecedent).expect("inserted");
            // Mutual pairs (both directions strong) would climb forever.
            let mutual = strong
                .iter()
                .any(|q| q.antecedent == p.consequent && q.consequent == p.antecedent);
            if *w < need && !mutual {
                *w = need;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Suggested by `stormcast learn` from {occurrences} alert occurrences\n\
         # (window {}m, min support {}, min confidence {:.2}, min lift {:.2}).\n\
         # Figures are association statistics, not proof of causation: review\n\
         # before copying rules into the rules folder.",
        opts.window.num_minutes(),
        opts.min_support,
        opts.min_confidence,
        opts.min_lift
    );
    let line = |out: &mut String, p: &PairStat| {
        let _ = write!(
            out,
            "#   {} -> {}: support {} of {}, confidence {:.2}, lift {:.2}, precedence {:.2}",
            p.antecedent,
            p.consequent,
            p.support,
            p.antecedent_count,
            p.confidence,
            p.lift,
            p.precedence
        );
        match score(p) {
            Some(s) => {
                let _ = writeln!(out, ", model score {s:.2}");
            }
            None if model.is_some() => out.push_str(", no model score\n"),
            None => out.push('\n'),
        }
    };
    out.push_str("#\n# antecedent -> consequent: support, confidence, lift, precedence\n");
    for p in &strong {
        line(&mut out, p);
    }
    if !refused.is_empty() {
        out.push_str("#\n# Strong associations the model does not score as causes (below 0.5):\n");
        for p in &refused {
            line(&mut out, p);
        }
    }
    let antecedents: BTreeMap<&str, Vec<&&PairStat>> =
        strong.iter().fold(BTreeMap::new(), |mut m, p| {
            m.entry(p.antecedent.as_str())
                .or_insert_with(Vec::new)
                .push(p);
            m
        });
    if antecedents.is_empty() {
        out.push_str("alerts: []\n");
        return out;
    }
    out.push_str("alerts:\n");
    for (name, ps) in antecedents {
        let rule = rules.alert(name);
        let about = rule.map(|r| r.about).unwrap_or(AboutKind::Labels);
        let links = rule.map(|r| r.links).unwrap_or(true);
        let best = ps.iter().map(|p| p.confidence).fold(0.0f64, f64::max);
        let sup: usize = ps.iter().map(|p| p.support).sum();
        let _ = writeln!(
            out,
            "  # explains {} (best confidence {best:.2}, support {sup})",
            ps.iter()
                .map(|p| p.consequent.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        // A loaded rule keeps its weight: precedence alone (TargetDown fires
        // before KubeNodeNotReady because of its shorter `for`) is not cause.
        let w = match rule {
            Some(r) => {
                if weight[name] > r.weight {
                    let _ = writeln!(
                        out,
                        "  # learned order would raise its weight to {}",
                        weight[name]
                    );
                }
                r.weight
            }
            None => weight[name],
        };
        let _ = writeln!(
            out,
            "  - alert: {}\n    about: {}\n    weight: {}\n    links: {}",
            yaml_str(name),
            about_name(about),
            w,
            links
        );
    }
    out
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("string serialises")
}

/// Arguments of `stormcast learn`.
#[derive(Debug, Clone)]
pub struct LearnArgs {
    pub data_dir: Option<std::path::PathBuf>,
    pub input: Option<std::path::PathBuf>,
    pub topology: Option<std::path::PathBuf>,
    pub rules: std::path::PathBuf,
    pub window: String,
    pub min_support: usize,
    pub min_confidence: f64,
    pub min_lift: f64,
    /// Simulator truth (`stormcast simulate --truth`): labels for the model.
    pub truth: Option<std::path::PathBuf>,
    pub output: std::path::PathBuf,
}

/// Runs `stormcast learn`.
pub fn run_cli(args: &LearnArgs) -> anyhow::Result<std::process::ExitCode> {
    use anyhow::Context as _;
    anyhow::ensure!(
        args.data_dir.is_some() || args.input.is_some(),
        "give --data-dir and/or --input"
    );
    let window: crate::config::PromDuration = args
        .window
        .parse()
        .map_err(|e| anyhow::anyhow!("--window: {e}"))?;
    let opts = LearnOptions {
        window: window.as_chrono(),
        min_support: args.min_support,
        min_confidence: args.min_confidence,
        min_lift: args.min_lift,
    };
    let rules = if args.rules.is_dir() {
        Rules::load_dir(&args.rules).map_err(|e| anyhow::anyhow!("invalid rules:\n{e}"))?
    } else {
        Rules::default()
    };
    let mut occs = Vec::new();
    let mut labelled = Vec::new();
    if let Some(dir) = &args.data_dir {
        let cfg = crate::store::StoreConfig {
            path: dir.clone(),
            ..Default::default()
        };
        let store = crate::store::Store::open(&cfg)
            .with_context(|| format!("opening store {}", dir.display()))?;
        occs.extend(occurrences_from_store(&store)?);
        labelled.extend(super::learned::labelled_from_incidents(
            &store.load_incidents()?,
        ));
    }
    if let Some(input) = &args.input {
        let text = std::fs::read_to_string(input)
            .with_context(|| format!("reading {}", input.display()))?;
        let (o, bad) = occurrences_from_jsonl(&text);
        if bad > 0 {
            tracing::warn!(skipped = bad, "unreadable input lines or alerts skipped");
        }
        occs.extend(o);
    }
    let topo = match &args.topology {
        Some(dir) => {
            let (t, errs) = Topology::load_dir(dir);
            for e in errs {
                tracing::warn!(error = %e, "topology");
            }
            t
        }
        None => Topology::default(),
    };
    if let Some(path) = &args.truth {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let truth: crate::sim::Truth = serde_json::from_slice(&text)
            .with_context(|| format!("parsing truth {}", path.display()))?;
        labelled.extend(super::learned::labelled_from_truth(&truth, &occs));
    }
    let pairs = mine(&occs, &topo, &opts);
    let fitted = super::learned::fit(
        &pairs,
        &labelled,
        opts.window.num_seconds() as f64,
        opts.min_support,
    );
    let text = match fitted {
        Ok(fitted) => {
            tracing::info!(
                incidents = fitted.incidents,
                pairs = fitted.pairs.len(),
                train_accuracy = fitted.train_accuracy,
                "Fitted the learned ranking signal"
            );
            let mut model = Learned::default();
            model.add(&fitted.section(window));
            let mut text = suggest_rules(&pairs, &opts, &rules, occs.len(), Some(&model));
            text.push_str(&super::learned::render(&fitted, &window));
            text
        }
        Err(e) => {
            tracing::warn!(error = %e, "No learned ranking signal");
            let mut text = suggest_rules(&pairs, &opts, &rules, occs.len(), None);
            let _ = writeln!(
                text,
                "# No learned ranking signal: {e}. Labels come from a --data-dir\n\
                 # holding incidents or from --truth."
            );
            text
        }
    };
    // The suggestions must load as a rules file.
    super::rules::parse_rules(&text)
        .map_err(|e| anyhow::anyhow!("suggested rules do not parse:\n{e}"))?;
    if args.output.as_os_str() == "-" {
        print!("{text}");
    } else {
        std::fs::write(&args.output, &text)
            .with_context(|| format!("writing {}", args.output.display()))?;
    }
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_node_to_pod_from_a_simulated_storm() {
        let storm = crate::sim::simulate(&crate::sim::SimConfig {
            seed: 7,
            clusters: 4,
            ..Default::default()
        });
        let (occs, bad) = occurrences_from_jsonl(&storm.jsonl());
        assert_eq!(bad, 0);
        assert!(occs.len() > 100, "{} occurrences", occs.len());
        let opts = LearnOptions::default();
        let pairs = mine(&occs, &storm.topology(), &opts);
        let find = |a: &str, b: &str| {
            pairs
                .iter()
                .find(|p| p.antecedent == a && p.consequent == b)
                .unwrap_or_else(|| panic!("no pair {a} -> {b}"))
        };
        let p = find("KubeNodeNotReady", "KubePodNotReady");
        assert!(p.confidence >= 0.8, "{p:?}");
        assert!(p.lift > 1.5, "{p:?}");
        assert!(p.support >= 3, "{p:?}");
        // Without topology, pods cannot be placed on nodes: the pair is
        // weaker (only what alert labels alone relate).
        let bare = mine(&occs, &Topology::default(), &opts);
        let bare_conf = bare
            .iter()
            .find(|q| q.antecedent == "KubeNodeNotReady" && q.consequent == "KubePodNotReady")
            .map_or(0.0, |q| q.confidence);
        assert!(bare_conf < p.confidence, "{bare_conf} vs {p:?}");

        let rules = storm.rules();
        let text = suggest_rules(&pairs, &opts, &rules, occs.len(), None);
        let file = crate::correlate::rules::parse_rules(&text).expect(&text);
        let node = file
            .alerts
            .iter()
            .find(|r| r.alert == "KubeNodeNotReady")
            .expect(&text);
        assert_eq!(node.about, AboutKind::Node, "keeps the loaded about");
        assert!(node.weight > rules.weight("KubePodNotReady"));
        assert_eq!(node.weight, rules.weight("KubeNodeNotReady"));
        assert!(text.contains("KubeNodeNotReady -> KubePodNotReady: support"));
        // Loads as a rules folder too.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("learned.yaml"), &text).unwrap();
        Rules::load_dir(dir.path()).expect("suggestions load");
    }

    #[test]
    fn the_cli_writes_a_rules_file_whose_learned_section_loads() {
        let storm = crate::sim::simulate(&crate::sim::SimConfig {
            seed: 31,
            clusters: 6,
            faults_per_cluster: 6,
            ..Default::default()
        });
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("history.jsonl");
        let truth = dir.path().join("truth.json");
        let topo = dir.path().join("topo");
        let rules_dir = dir.path().join("rules");
        std::fs::write(&input, storm.jsonl()).unwrap();
        std::fs::write(&truth, serde_json::to_vec(&storm.truth).unwrap()).unwrap();
        storm.write_topology(&topo).unwrap();
        std::fs::create_dir(&rules_dir).unwrap();
        let args = |truth: Option<std::path::PathBuf>, out: &str| LearnArgs {
            data_dir: None,
            input: Some(input.clone()),
            topology: Some(topo.clone()),
            rules: dir.path().join("no-rules"),
            window: "15m".into(),
            min_support: 3,
            min_confidence: 0.5,
            min_lift: 1.2,
            truth,
            output: rules_dir.join(out),
        };
        run_cli(&args(Some(truth.clone()), "learned.yaml")).unwrap();
        let text = std::fs::read_to_string(rules_dir.join("learned.yaml")).unwrap();
        assert!(text.contains("model score"), "{text}");
        let rules = Rules::load_dir(&rules_dir).expect(&text);
        assert!(!rules.learned.is_empty());
        let s = rules
            .learned
            .score("KubeNodeNotReady", "KubePodNotReady")
            .expect("scored");
        assert!(s > 0.5, "{s}");
        // Without labels: association figures only, and the file says why.
        run_cli(&args(None, "plain.yaml")).unwrap();
        let text = std::fs::read_to_string(rules_dir.join("plain.yaml")).unwrap();
        assert!(text.contains("No learned ranking signal"), "{text}");
        assert!(!text.contains("learned:"), "{text}");
    }

    #[test]
    fn reads_alerts_from_a_store() {
        let store = crate::store::Store::temporary().unwrap();
        let storm = crate::sim::simulate(&crate::sim::SimConfig {
            seed: 2,
            clusters: 1,
            ..Default::default()
        });
        let (occs, _) = occurrences_from_jsonl(&storm.jsonl());
        let now = chrono::Utc::now();
        let mut states = Vec::new();
        for o in &occs {
            states.push(crate::domain::AlertState {
                id: o.labels.fingerprint(),
                am_fingerprint: None,
                cluster: crate::domain::ClusterId::new(o.labels.get_or_empty("cluster")),
                flaps: 0,
                previous_end: None,
                deliveries: 1,
                labels: o.labels.clone(),
                annotations: Labels::new(),
                status: crate::domain::AlertStatus::Resolved,
                starts_at: o.starts_at,
                ends_at: Some(now),
                generator_url: Default::default(),
                external_url: Default::default(),
                source: "test".into(),
                first_received: now,
                last_received: now,
            });
        }
        states.sort_by_key(|a| a.id);
        states.dedup_by_key(|a| a.id);
        store
            .write_snapshot(states.iter(), std::iter::empty(), None)
            .unwrap();
        let from_store = occurrences_from_store(&store).unwrap();
        let distinct: HashSet<_> = occs.iter().map(|o| o.labels.fingerprint()).collect();
        assert_eq!(from_store.len(), distinct.len());
    }

    #[test]
    fn unrelated_alerts_make_no_pairs() {
        let t0 = chrono::Utc::now();
        let occ = |name: &str, node: &str, min: i64| {
            let mut l = Labels::new();
            l.insert("alertname", name);
            l.insert("cluster", "c1");
            l.insert("node", node);
            Occurrence {
                labels: l,
                starts_at: t0 + Duration::minutes(min),
            }
        };
        let occs = vec![
            occ("A", "n1", 0),
            occ("B", "n2", 1),
            occ("A", "n3", 0),
            occ("B", "n3", 30),
        ];
        let pairs = mine(&occs, &Topology::default(), &LearnOptions::default());
        assert!(pairs.is_empty(), "{pairs:?}");
        let occs = vec![occ("A", "n1", 0), occ("B", "n1", 2)];
        let pairs = mine(&occs, &Topology::default(), &LearnOptions::default());
        assert_eq!(pairs.len(), 1);
        assert_eq!(pairs[0].antecedent, "A");
        assert_eq!(pairs[0].precedence, 1.0);
        assert_eq!(pairs[0].confidence, 1.0);
    }
}
