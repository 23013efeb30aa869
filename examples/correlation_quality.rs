//! Correlation quality bench: simulates dense storms over a fleet with ground
//! truth, runs them through stormcast's replay, and prints pairwise
//! precision/recall/F1, the adjusted Rand index, root-cause accuracy and
//! alerts lost beside an Alertmanager-style baseline (group by cluster and
//! namespace). Then times a 10k-alert storm.
//!
//! `stormcast + learned` adds the learned ranking signal (a `learned:` rules
//! section): fitted on a different history of the same fleet (seed + 100, its
//! ground truth as labels), never on the storm it is evaluated on. `equal
//! weights` runs the shipped rules with every causal weight set to 10 (a
//! fleet whose alert names have no declared causal order), with and without
//! the learned signal. `suggested pairs` judges the pairs `stormcast learn`
//! suggests from the training history, by association alone and once the
//! model turns down the pairs it does not score as causes, against this
//! storm's truth. Then it replays the recorded storms of `testdata/storms`
//! (from a simulator written apart from stormcast's) and scores them the
//! same pairwise way.
//!
//! `cargo run --release --example correlation_quality` (or without
//! `--release` for a quicker build; timings are then pessimistic).
//!
//! `... --example correlation_quality -- --diagnose [SEED]` prints, for each
//! quality storm (or the one with SEED), the largest grouping errors instead:
//! true incidents merged into one group and true incidents split over several,
//! with their fault kinds, onset gaps, alert names and the entities that
//! joined them, and how much pair F1 each kind of error costs (the F1 with
//! only those errors undone).

use std::collections::{BTreeMap, HashMap};

#[path = "../tests/storm_score/mod.rs"]
mod storm_score;

use stormcast::correlate::{entity, learn, learned, rules, Rules};
use stormcast::domain::{Fingerprint, Labels, Timestamp};
use stormcast::sim::{self, eval, SimConfig};

/// The storm's rules with every alert's causal weight set to 10.
fn equal_weight_rules(storm: &sim::Storm) -> Rules {
    let mut shipped = rules::parse_rules(rules::DEFAULT_RULES).expect("shipped rules parse");
    for a in &mut shipped.alerts {
        a.weight = 10;
    }
    let mut r = Rules::empty();
    r.add(shipped);
    r.add(rules::parse_rules(&storm.services_yaml).expect("simulated rules parse"));
    r
}

/// What `stormcast learn` makes of another simulated history of the same
/// fleet (seed + 100): the `learned:` section, and the strong associations
/// it would suggest without and with the model.
struct Trained {
    section: learned::LearnedSection,
    association: Vec<(String, String)>,
    with_model: Vec<(String, String)>,
}

fn train(cfg: &SimConfig) -> anyhow::Result<Trained> {
    let train = sim::simulate(&SimConfig {
        seed: cfg.seed + 100,
        ..cfg.clone()
    });
    let opts = learn::LearnOptions::default();
    let (occs, _) = learn::occurrences_from_jsonl(&train.jsonl());
    let pairs = learn::mine(&occs, &train.topology(), &opts);
    let labelled = learned::labelled_from_truth(&train.truth, &occs);
    let fitted = learned::fit(
        &pairs,
        &labelled,
        opts.window.num_seconds() as f64,
        opts.min_support,
    )?;
    let section = fitted.section(stormcast::config::PromDuration::mins(15));
    let mut model = learned::Learned::default();
    model.add(&section);
    let association: Vec<(String, String)> = learn::strong_pairs(&pairs, &opts)
        .into_iter()
        .map(|p| (p.antecedent.clone(), p.consequent.clone()))
        .collect();
    let with_model = association
        .iter()
        .filter(|(a, b)| model.score(a, b).is_some_and(|s| s >= 0.5))
        .cloned()
        .collect();
    Ok(Trained {
        section,
        association,
        with_model,
    })
}

fn with_learned(mut rules: Rules, t: &Trained) -> Rules {
    rules.learned.add(&t.section);
    rules
}

/// Suggested pairs judged on the evaluation storm's truth: (causal, not
/// causal, not seen). A pair is causal when, over the true incidents holding
/// both names, the first named the root in most.
fn judge(suggested: &[(String, String)], storm: &sim::Storm) -> (usize, usize, usize) {
    let (occs, _) = learn::occurrences_from_jsonl(&storm.jsonl());
    let labelled = learned::labelled_from_truth(&storm.truth, &occs);
    let (mut yes, mut no, mut unseen) = (0, 0, 0);
    for (a, b) in suggested {
        let both: Vec<_> = labelled
            .iter()
            .filter(|l| l.members.contains(a) && l.members.contains(b))
            .collect();
        let root = both.iter().filter(|l| l.root == *a).count();
        match both.len() {
            0 => unseen += 1,
            n if root * 2 > n => yes += 1,
            _ => no += 1,
        }
    }
    (yes, no, unseen)
}

/// One grouping error: alerts of true incident `t` that sit in predicted
/// group `g`, while most of `g` (a merge) or most of `t` (a split) is
/// elsewhere.
struct Part {
    g: usize,
    t: usize,
    /// The other side: the group's dominant true incident (merge) or the
    /// true incident's dominant group (split).
    other: usize,
    members: Vec<Fingerprint>,
    /// Pairs this part gets wrong.
    pairs: usize,
}

fn part_class(truth: &sim::Truth, a: usize, b: usize) -> String {
    let k = |t: usize| truth.incidents[t].kind.as_str();
    format!("{} + {}", k(a), k(b))
}

/// Pair F1 of `groups` with the merges `unmerge` taken apart and the splits
/// `unsplit` put back together.
fn f1_undoing(
    groups: &[eval::Group],
    truth: &sim::Truth,
    unmerge: &[&Part],
    unsplit: &[&Part],
    dominant_group: &HashMap<usize, usize>,
) -> f64 {
    let mut g: Vec<eval::Group> = groups.to_vec();
    for p in unmerge {
        g[p.g].members.retain(|m| !p.members.contains(m));
        g.push(eval::Group {
            members: p.members.clone(),
            ranked_roots: Vec::new(),
            root_alert: None,
        });
    }
    for p in unsplit {
        g[p.g].members.retain(|m| !p.members.contains(m));
        let d = dominant_group[&p.t];
        g[d].members.extend(p.members.iter().copied());
    }
    eval::score(&g, truth).f1
}

/// Prints the largest merges and splits of one storm and what they cost.
fn diagnose(name: &str, cfg: &SimConfig, dump: Option<usize>) -> anyhow::Result<()> {
    let storm = sim::simulate(cfg);
    let run = storm.run(true)?;
    let groups = eval::groups_from_incidents(&run.result.incidents);
    let truth = &storm.truth;
    let s = eval::score(&groups, truth);
    println!("\n{name} (seed {}):\n  stormcast {s}", cfg.seed);
    let rules = storm.rules();
    // Each alert with its onset, as the correlator sees it: `startsAt` minus
    // its rule's `for`.
    let alerts: HashMap<Fingerprint, (Labels, Timestamp)> = storm
        .alerts()
        .into_iter()
        .map(|(fp, l, t)| {
            let onset = t - rules.pending_for(l.alertname());
            (fp, (l, onset))
        })
        .collect();
    // The contingency table: (group, true incident) → members.
    let mut cells: BTreeMap<(usize, usize), Vec<Fingerprint>> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for (gi, g) in groups.iter().enumerate() {
        for fp in &g.members {
            if let (Some(t), true) = (truth.alerts.get(fp), seen.insert(*fp)) {
                cells.entry((gi, *t)).or_default().push(*fp);
            }
        }
    }
    let mut dominant_truth: HashMap<usize, (usize, usize)> = HashMap::new();
    let mut dominant_group: HashMap<usize, (usize, usize)> = HashMap::new();
    for ((g, t), m) in &cells {
        let n = m.len();
        let e = dominant_truth.entry(*g).or_insert((*t, n));
        if n > e.1 {
            *e = (*t, n);
        }
        let e = dominant_group.entry(*t).or_insert((*g, n));
        if n > e.1 {
            *e = (*g, n);
        }
    }
    let mut merges = Vec::new();
    let mut splits = Vec::new();
    for ((g, t), m) in &cells {
        let (dt, dn) = dominant_truth[g];
        if dt != *t {
            merges.push(Part {
                g: *g,
                t: *t,
                other: dt,
                members: m.clone(),
                pairs: m.len() * dn,
            });
        }
        let (dg, dn) = dominant_group[t];
        if dg != *g && dt == *t {
            splits.push(Part {
                g: *g,
                t: *t,
                other: dg,
                members: m.clone(),
                pairs: m.len() * dn,
            });
        }
    }
    merges.sort_by_key(|p| std::cmp::Reverse(p.pairs));
    splits.sort_by_key(|p| std::cmp::Reverse(p.pairs));
    let onset = |t: usize| {
        truth
            .alerts
            .iter()
            .filter(|(_, i)| **i == t)
            .filter_map(|(fp, _)| alerts.get(fp).map(|a| a.1))
            .min()
    };
    let names = |m: &[Fingerprint]| {
        let mut c: BTreeMap<&str, usize> = BTreeMap::new();
        for fp in m {
            if let Some((l, _)) = alerts.get(fp) {
                *c.entry(l.alertname()).or_default() += 1;
            }
        }
        c.iter()
            .map(|(n, k)| format!("{n} x{k}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let topo = storm.topology();
    // The entities through which an alert can join others: its own and its
    // causal parents.
    let path = |fp: &Fingerprint| -> String {
        let Some((l, _)) = alerts.get(fp) else {
            return String::new();
        };
        let r = entity::resolve(l, l.get_or_empty("cluster"), &rules, &topo);
        let mut p = vec![r.primary.key.clone()];
        p.extend(r.infra.iter().map(|n| n.key.clone()));
        p.extend(r.logical.iter().take(2).map(|n| n.key.clone()));
        format!(
            "{} [{}{}]",
            p.join(" -> "),
            l.alertname(),
            if r.links { "" } else { ", links: false" }
        )
    };
    let describe = |t: usize| {
        let i = &truth.incidents[t];
        format!("#{t} {} {}", i.kind, i.root_entity)
    };
    let gap = |a: usize, b: usize| match (onset(a), onset(b)) {
        (Some(x), Some(y)) => format!("{:+}s", (x - y).num_seconds()),
        _ => "?".to_owned(),
    };
    // `--dump T`: every member of the group holding most of true incident T.
    if let Some(t) = dump {
        if let Some((g, _)) = dominant_group.get(&t) {
            let t0 = onset(t).unwrap_or_default();
            let mut rows: Vec<(i64, String)> = groups[*g]
                .members
                .iter()
                .filter_map(|fp| {
                    let (_, at) = alerts.get(fp)?;
                    let ti = truth.alerts.get(fp).copied().unwrap_or(usize::MAX);
                    Some((
                        (*at - t0).num_seconds(),
                        format!("#{ti:<4} {fp} {}", path(fp)),
                    ))
                })
                .collect();
            rows.sort();
            println!("  group of #{t} (onsets relative to its first alert):");
            for (s, r) in rows {
                println!("    {s:+6}s {r}");
            }
        }
    }
    let merged_pairs: usize = merges.iter().map(|p| p.pairs).sum();
    let split_pairs: usize = splits.iter().map(|p| p.pairs).sum();
    println!(
        "  wrongly merged: {} parts, ~{merged_pairs} pairs; wrongly split: {} parts, ~{split_pairs} pairs",
        merges.len(),
        splits.len()
    );
    println!("  largest merges (alerts of the first true incident inside the second's group):");
    for p in merges.iter().take(12) {
        println!(
            "    {:4} pairs: {} ({} alerts: {}) into {}, onset {} vs it",
            p.pairs,
            describe(p.t),
            p.members.len(),
            names(&p.members),
            describe(p.other),
            gap(p.t, p.other)
        );
        println!(
            "           via {}; group root {}",
            path(&p.members[0]),
            groups[p.g].ranked_roots.first().map_or("-", String::as_str)
        );
        // Node failures in the group, by onset: where a zone's nodes began.
        if let Some(t0) = onset(p.other) {
            let mut nodes: Vec<(i64, String, usize)> = groups[p.g]
                .members
                .iter()
                .filter_map(|fp| {
                    let (l, at) = alerts.get(fp)?;
                    (l.alertname() == "KubeNodeNotReady").then(|| {
                        (
                            (*at - t0).num_seconds(),
                            l.get_or_empty("node")
                                .rsplit('-')
                                .next()
                                .unwrap_or("")
                                .to_owned(),
                            truth.alerts.get(fp).copied().unwrap_or(usize::MAX),
                        )
                    })
                })
                .collect();
            nodes.sort();
            if nodes.len() > 1 {
                let list: Vec<String> = nodes
                    .iter()
                    .map(|(s, n, t)| format!("{n} {s:+}s #{t}"))
                    .collect();
                println!("           node onsets: {}", list.join(", "));
            }
        }
    }
    println!("  largest splits (alerts of a true incident outside its main group):");
    for p in splits.iter().take(8) {
        let other = dominant_truth.get(&p.g).map(|d| d.0);
        println!(
            "    {:4} pairs: {} ({} alerts: {}), group root {}{}",
            p.pairs,
            describe(p.t),
            p.members.len(),
            names(&p.members),
            groups[p.g].ranked_roots.first().map_or("-", String::as_str),
            other
                .filter(|o| *o != p.t)
                .map_or(String::new(), |o| format!(", inside {}", describe(o)))
        );
        let first = p
            .members
            .iter()
            .filter_map(|fp| alerts.get(fp))
            .map(|a| a.1)
            .min();
        let since = match (first, onset(p.t)) {
            (Some(a), Some(b)) => format!("{:+}s", (a - b).num_seconds()),
            _ => "?".to_owned(),
        };
        println!(
            "           first: {} {}, onset {since} vs its incident",
            p.members[0],
            path(&p.members[0])
        );
    }
    // What each class of error costs: F1 with only that class undone.
    let dg: HashMap<usize, usize> = dominant_group.iter().map(|(t, (g, _))| (*t, *g)).collect();
    let mut classes: BTreeMap<String, (Vec<&Part>, Vec<&Part>)> = BTreeMap::new();
    for p in &merges {
        let k = format!("merge {}", part_class(truth, p.t, p.other));
        classes.entry(k).or_default().0.push(p);
    }
    for p in &splits {
        let k = format!("split {}", truth.incidents[p.t].kind);
        classes.entry(k).or_default().1.push(p);
    }
    let mut costs: Vec<(f64, String, usize)> = classes
        .iter()
        .map(|(k, (m, sp))| {
            let f = f1_undoing(&groups, truth, m, sp, &dg);
            (f - s.f1, k.clone(), m.len() + sp.len())
        })
        .collect();
    costs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let all_m: Vec<&Part> = merges.iter().collect();
    let all_s: Vec<&Part> = splits.iter().collect();
    println!(
        "  F1 cost by class (F1 gained if only that class were undone; all merges {:+.4}, all splits {:+.4}):",
        f1_undoing(&groups, truth, &all_m, &[], &dg) - s.f1,
        f1_undoing(&groups, truth, &[], &all_s, &dg) - s.f1
    );
    for (d, k, n) in costs.iter().take(12) {
        println!("    {d:+.4}  {k} ({n} parts)");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "--diagnose") {
        let only: Option<u64> = args.get(1).map(|s| s.parse()).transpose()?;
        let dump: Option<usize> = match args.get(2).map(String::as_str) {
            Some("--dump") => args.get(3).map(|s| s.parse()).transpose()?,
            _ => None,
        };
        for (name, cfg) in sim::quality_scenarios() {
            if only.is_none_or(|s| s == cfg.seed) {
                diagnose(name, &cfg, dump)?;
            }
        }
        return Ok(());
    }
    println!("stormcast correlation quality (fixed seeds)");
    let scenarios = sim::quality_scenarios();
    for (name, cfg) in scenarios {
        let storm = sim::simulate(&cfg);
        let run = storm.run(true)?;
        let ours = eval::score(
            &eval::groups_from_incidents(&run.result.incidents),
            &storm.truth,
        );
        let score = |r: Rules| -> anyhow::Result<eval::Score> {
            let run = storm.run_with(r, true)?;
            Ok(eval::score(
                &eval::groups_from_incidents(&run.result.incidents),
                &storm.truth,
            ))
        };
        let trained = train(&cfg)?;
        let wl = score(with_learned(storm.rules(), &trained))?;
        let eq = score(equal_weight_rules(&storm))?;
        let eql = score(with_learned(equal_weight_rules(&storm), &trained))?;
        let labels_only = storm.run(false)?;
        let lo = eval::score(
            &eval::groups_from_incidents(&labels_only.result.incidents),
            &storm.truth,
        );
        let base = eval::score(&eval::baseline_groups(&storm.alerts()), &storm.truth);
        println!(
            "\n{name} (seed {}, {} deliveries):",
            cfg.seed,
            storm.lines.len()
        );
        println!("  stormcast            {ours}");
        println!("  stormcast + learned  {wl}");
        println!("  equal weights        {eq}");
        println!("  equal w. + learned   {eql}");
        for (what, pairs) in [
            ("association", &trained.association),
            ("with model ", &trained.with_model),
        ] {
            let (yes, no, unseen) = judge(pairs, &storm);
            println!(
                "  suggested pairs, {what}: {:3} ({yes} causal, {no} not, {unseen} unseen in this storm)",
                pairs.len()
            );
        }
        println!("  stormcast no topo    {lo}");
        println!("  alertmanager-style   {base}");
        println!(
            "  replay time {:?}, storm mode: {} of {} clusters {:?}, fleet {}",
            run.elapsed,
            run.result.stats.storm_clusters.len(),
            cfg.clusters,
            run.result.stats.storm_clusters,
            run.result.stats.fleet_storm
        );
    }

    // Storms recorded from a simulator written apart from ours, with their
    // ground truth (the floors of `tests/storm_floors.rs`).
    println!("\nrecorded storms (testdata/storms, shipped rules + their dependencies):");
    for dir in storm_score::storm_dirs() {
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        println!("  {name:24} {}", storm_score::replay_and_score(&dir));
    }

    // Throughput: a ~10k-alert storm over 100 clusters x 50 nodes.
    let cfg = SimConfig {
        seed: 42,
        clusters: 100,
        nodes_per_cluster: 50,
        faults_per_cluster: 6,
        noise_per_hour: 6.0,
        ..Default::default()
    };
    let storm = sim::simulate(&cfg);
    let run = storm.run(true)?;
    let s = eval::score(
        &eval::groups_from_incidents(&run.result.incidents),
        &storm.truth,
    );
    println!(
        "\nthroughput: {} alerts, {} deliveries over 100 clusters x 50 nodes replayed in {:?} ({:.1} us/alert)",
        storm.alert_count(),
        storm.lines.len(),
        run.elapsed,
        run.elapsed.as_secs_f64() * 1e6 / storm.alert_count().max(1) as f64
    );
    println!("  stormcast            {s}");
    println!(
        "  storm mode: {} of 100 clusters, fleet {}",
        run.result.stats.storm_clusters.len(),
        run.result.stats.fleet_storm
    );
    Ok(())
}
