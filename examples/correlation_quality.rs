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
//! storm's truth.
//!
//! `cargo run --release --example correlation_quality` (or without
//! `--release` for a quicker build; timings are then pessimistic).

use stormcast::correlate::{learn, learned, rules, Rules};
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

fn main() -> anyhow::Result<()> {
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
