//! The learned ranking signal: a logistic regression, fitted with linfa, that
//! scores "alert `A` is the cause of alert `B`" for pairs of alert names that
//! fire together on related entities.
//!
//! # The model
//! Each ordered pair of alert names mined by [`learn::mine`](super::learn::mine)
//! becomes one feature row: the [`FEATURES`] (the confidence of `A → B` and of
//! `B → A`, the precedence of `A`, the log lift, the mean lag from `A` to `B`
//! over the co-occurrence window, and the shares of co-occurrences that relate
//! through one node, one workload, only one namespace or one cluster), then one
//! indicator per alert name as cause and one as effect, so that how often a
//! name is the root is part of what is learned. The labels come from
//! incidents whose root cause is known (the simulator's ground truth, or stored
//! incidents): for every two alert names in one incident, the row `A → B` is
//! positive when `A` named the incident's root cause and negative otherwise.
//! An L2-regularised logistic regression ([`linfa_logistic`]) fitted on those
//! rows gives every mined pair, labelled or not, a probability `score` that
//! `A` causes `B`. Support and confidence are kept beside it.
//!
//! Association figures alone cannot tell a cause from a symptom that always
//! accompanies it (`KubeAPIErrorBudgetBurn` and `KubeAPIDown`) or merely fires
//! first (TargetDown's `for` is shorter than KubeNodeNotReady's); the
//! regression learns from labelled incidents what the figures say about cause.
//! `stormcast learn` suggests only the strong associations it scores 0.5 or
//! more.
//!
//! # As a ranking signal
//! `stormcast learn` writes the scores as the `learned:` section of a rules
//! file. Loaded with the rules, they rank below declared causal rules: an
//! alert `A` gets the mean, over the incident's other alert names `B`, of
//! `score(A → B) − score(B → A)` (pairs not in the file count 0). That value
//! picks a candidate entity's alert among its alerts of equal rule weight, and
//! orders candidates that explain as many members and carry the same rule
//! weight, before entity kind, severity and start time. When it decides, the
//! candidate's explanation names the pair. Without a `learned:` section
//! ranking is unchanged.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;

use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::config::{ConfigErrors, PromDuration};
use crate::domain::{Fingerprint, Incident};

use super::learn::{Occurrence, PairStat};

/// Names of the feature columns, in order.
pub const FEATURES: [&str; 9] = [
    "confidence",
    "reverse_confidence",
    "precedence",
    "log_lift",
    "mean_lag",
    "node",
    "workload",
    "namespace",
    "cluster",
];

/// L2 penalty of the regression. The name indicators let a weakly penalised
/// model memorise its training incidents (training accuracy 0.99 on a
/// simulated history, pairs of background alerts scored near 1); at 1.0
/// such pairs stay near the middle.
const ALPHA: f64 = 1.0;

/// The model name written in the `learned:` section.
pub const MODEL: &str = "logistic_regression";

/// An incident whose root cause is known: the root alert's name and every
/// member's.
#[derive(Debug, Clone, PartialEq)]
pub struct Labelled {
    pub root: String,
    pub members: BTreeSet<String>,
}

/// Labelled incidents from simulator truth: each incident with a root alert,
/// its members' names taken from the occurrences.
pub fn labelled_from_truth(truth: &crate::sim::Truth, occs: &[Occurrence]) -> Vec<Labelled> {
    let names: HashMap<Fingerprint, &str> = occs
        .iter()
        .map(|o| (o.labels.fingerprint(), o.labels.get_or_empty("alertname")))
        .collect();
    let mut members: HashMap<usize, BTreeSet<String>> = HashMap::new();
    for (fp, inc) in &truth.alerts {
        if let Some(n) = names.get(fp) {
            members.entry(*inc).or_default().insert((*n).to_owned());
        }
    }
    let mut out = Vec::new();
    for inc in &truth.incidents {
        let Some(root) = inc.root_fingerprint.and_then(|fp| names.get(&fp)) else {
            continue;
        };
        if let Some(m) = members.remove(&inc.id) {
            if m.len() > 1 {
                out.push(Labelled {
                    root: (*root).to_owned(),
                    members: m,
                });
            }
        }
    }
    out
}

/// Labelled incidents from stored incidents: the ranked root cause's alert
/// (incidents whose root was inferred, or that were merged away, are skipped).
pub fn labelled_from_incidents(incidents: &[Incident]) -> Vec<Labelled> {
    incidents
        .iter()
        .filter(|i| i.root_cause.fingerprint.is_some() && i.alerts.len() > 1)
        .filter_map(|i| {
            let root = i.root_cause.labels.get("alertname")?.to_owned();
            let members: BTreeSet<String> = i
                .alerts
                .iter()
                .map(|a| a.labels.get_or_empty("alertname").to_owned())
                .collect();
            (members.len() > 1 && members.contains(&root)).then_some(Labelled { root, members })
        })
        .collect()
}

/// The feature row of `a → b`, when either direction was mined.
fn features(
    stats: &HashMap<(&str, &str), &PairStat>,
    a: &str,
    b: &str,
    window_secs: f64,
) -> Option<[f64; 9]> {
    let fwd = stats.get(&(a, b)).copied();
    let rev = stats.get(&(b, a)).copied();
    if fwd.is_none() && rev.is_none() {
        return None;
    }
    let precedence = fwd.map_or_else(|| 1.0 - rev.map_or(0.5, |r| r.precedence), |f| f.precedence);
    let lift = fwd.map_or(0.0, |f| f.lift);
    let lag = fwd.map_or_else(
        || -rev.map_or(0.0, |r| r.mean_lag_secs),
        |f| f.mean_lag_secs,
    );
    let rel = fwd.or(rev).map_or([0.0, 0.0, 0.0, 1.0], |p| p.relation);
    Some([
        fwd.map_or(0.0, |f| f.confidence),
        rev.map_or(0.0, |r| r.confidence),
        precedence,
        if lift > 0.0 {
            lift.ln().clamp(-3.0, 3.0)
        } else {
            -3.0
        },
        (lag / window_secs.max(1.0)).clamp(-1.0, 1.0),
        rel[0],
        rel[1],
        rel[2],
        rel[3],
    ])
}

/// A fitted model and the scores it gives the mined pairs.
#[derive(Debug, Clone)]
pub struct Fitted {
    /// [`FEATURES`], then one indicator per alert name as cause and effect.
    pub feature_names: Vec<String>,
    pub coefficients: Vec<f64>,
    pub intercept: f64,
    /// Training rows (positive, negative).
    pub rows: (usize, usize),
    pub incidents: usize,
    /// Accuracy on the training rows at a 0.5 threshold.
    pub train_accuracy: f64,
    pub pairs: Vec<LearnedPair>,
}

/// Why no model could be fitted.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    #[error("no labelled incidents with two related alert names")]
    NoLabels,
    #[error("labelled incidents gave {0} positive and {1} negative pairs; need both")]
    OneClass(usize, usize),
    #[error("logistic regression: {0}")]
    Linfa(#[from] linfa_logistic::error::Error),
}

/// Fits the logistic regression on pairs from labelled incidents and scores
/// every ordered pair of names whose co-occurrence has at least `min_support`
/// in one direction.
pub fn fit(
    pairs: &[PairStat],
    labelled: &[Labelled],
    window_secs: f64,
    min_support: usize,
) -> Result<Fitted, FitError> {
    let stats: HashMap<(&str, &str), &PairStat> = pairs
        .iter()
        .map(|p| ((p.antecedent.as_str(), p.consequent.as_str()), p))
        .collect();
    // One indicator column per alert name seen in a labelled incident, as
    // cause and as effect: how often a name is the root is part of the model.
    let vocab: Vec<&str> = labelled
        .iter()
        .flat_map(|l| l.members.iter().map(String::as_str))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let width = FEATURES.len() + 2 * vocab.len();
    let row = |a: &str, b: &str| -> Option<Vec<f64>> {
        let mut r = features(&stats, a, b, window_secs)?.to_vec();
        r.resize(width, 0.0);
        if let Ok(i) = vocab.binary_search(&a) {
            r[FEATURES.len() + i] = 1.0;
        }
        if let Ok(i) = vocab.binary_search(&b) {
            r[FEATURES.len() + vocab.len() + i] = 1.0;
        }
        Some(r)
    };
    let mut xs: Vec<f64> = Vec::new();
    let mut ys: Vec<bool> = Vec::new();
    let mut used = 0;
    for inc in labelled {
        let mut any = false;
        for a in &inc.members {
            for b in &inc.members {
                if a == b {
                    continue;
                }
                if let Some(f) = row(a, b) {
                    xs.extend_from_slice(&f);
                    ys.push(*a == inc.root);
                    any = true;
                }
            }
        }
        used += usize::from(any);
    }
    if ys.is_empty() {
        return Err(FitError::NoLabels);
    }
    let pos = ys.iter().filter(|y| **y).count();
    let neg = ys.len() - pos;
    if pos == 0 || neg == 0 {
        return Err(FitError::OneClass(pos, neg));
    }
    let x = Array2::from_shape_vec((ys.len(), width), xs).expect("rows of `width`");
    let y = Array1::from_vec(ys);
    let data = Dataset::new(x, y);
    let model = LogisticRegression::default()
        .alpha(ALPHA)
        .max_iterations(200)
        .fit(&data)?;
    // linfa's "positive" class is the larger one: turn its probability into
    // the probability of `true` (A caused B).
    let flip = !model.labels().pos.class;
    let prob = |p: f64| if flip { 1.0 - p } else { p };
    let train_p = model.predict_probabilities(data.records());
    let correct = train_p
        .iter()
        .zip(data.targets().iter())
        .filter(|(p, y)| (prob(**p) >= 0.5) == **y)
        .count();
    // Score every pair with enough support in one direction, both ways.
    let mut names: Vec<(&str, &str)> = Vec::new();
    let mut seen: HashSet<(&str, &str)> = HashSet::new();
    for p in pairs.iter().filter(|p| p.support >= min_support) {
        let (a, b) = (p.antecedent.as_str(), p.consequent.as_str());
        for k in [(a, b), (b, a)] {
            if seen.insert(k) {
                names.push(k);
            }
        }
    }
    let mut rows = Vec::with_capacity(names.len() * width);
    for (a, b) in &names {
        rows.extend_from_slice(&row(a, b).expect("mined pair"));
    }
    let x = Array2::from_shape_vec((names.len(), width), rows).expect("rows");
    let scores = model.predict_probabilities(&x);
    let mut out: Vec<LearnedPair> = names
        .iter()
        .zip(scores.iter())
        .map(|((a, b), p)| {
            let s = stats.get(&(*a, *b));
            LearnedPair {
                cause: (*a).to_owned(),
                effect: (*b).to_owned(),
                score: round3(prob(*p)),
                support: s.map_or(0, |s| s.support as u64),
                confidence: round3(s.map_or(0.0, |s| s.confidence)),
            }
        })
        .collect();
    out.sort_by(|x, y| {
        y.score
            .total_cmp(&x.score)
            .then_with(|| (&x.cause, &x.effect).cmp(&(&y.cause, &y.effect)))
    });
    let feature_names = FEATURES
        .iter()
        .map(|f| f.to_string())
        .chain(vocab.iter().map(|n| format!("cause={n}")))
        .chain(vocab.iter().map(|n| format!("effect={n}")))
        .collect();
    Ok(Fitted {
        feature_names,
        coefficients: model.params().iter().copied().map(round3).collect(),
        intercept: round3(model.intercept()),
        rows: (pos, neg),
        incidents: used,
        train_accuracy: correct as f64 / train_p.len() as f64,
        pairs: out,
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The `learned:` section of a rules file, as `stormcast learn` writes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnedSection {
    /// The model that produced the scores (`logistic_regression`).
    pub model: String,
    /// The co-occurrence window the figures were mined with.
    pub window: Option<PromDuration>,
    /// Feature names, for the record.
    #[serde(default)]
    pub features: Vec<String>,
    /// Fitted coefficients, one per feature, for the record.
    #[serde(default)]
    pub coefficients: Vec<f64>,
    pub intercept: Option<f64>,
    /// Scored pairs; only these take part in ranking.
    #[serde(default)]
    pub pairs: Vec<LearnedPair>,
}

/// One scored pair of alert names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnedPair {
    pub cause: String,
    pub effect: String,
    /// Probability that `cause` is the cause of `effect` (0 to 1).
    pub score: f64,
    /// Occurrences of `cause` followed by a related `effect`.
    #[serde(default)]
    pub support: u64,
    /// `support` over all occurrences of `cause` (0 to 1).
    #[serde(default)]
    pub confidence: f64,
}

/// Validates a `learned:` section; `at` gives a line prefix for a needle.
pub fn validate(s: &LearnedSection, at: &dyn Fn(&str) -> String, errs: &mut ConfigErrors) {
    if s.model != MODEL {
        errs.push(
            "learned.model",
            format!("{}must be {MODEL}, got {:?}", at("model:"), s.model),
        );
    }
    if !s.coefficients.is_empty() && s.coefficients.len() != s.features.len() {
        errs.push(
            "learned.coefficients",
            format!(
                "{}{} coefficients for {} features",
                at("coefficients:"),
                s.coefficients.len(),
                s.features.len()
            ),
        );
    }
    let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, p) in s.pairs.iter().enumerate() {
        let here = at(&format!("cause: {}", p.cause));
        let path = |f: &str| format!("learned.pairs[{i}].{f}");
        if p.cause.is_empty() {
            errs.push(path("cause"), format!("{here}required"));
        }
        if p.effect.is_empty() {
            errs.push(path("effect"), format!("{here}required"));
        }
        if !p.cause.is_empty() && p.cause == p.effect {
            errs.push(path("effect"), format!("{here}must differ from cause"));
        }
        if !(0.0..=1.0).contains(&p.score) {
            errs.push(
                path("score"),
                format!("{here}must be between 0 and 1, got {}", p.score),
            );
        }
        if !(0.0..=1.0).contains(&p.confidence) {
            errs.push(
                path("confidence"),
                format!("{here}must be between 0 and 1, got {}", p.confidence),
            );
        }
        if let Some(j) = seen.insert((&p.cause, &p.effect), i) {
            errs.push(
                path("cause"),
                format!(
                    "{here}duplicate pair {} -> {} (also learned.pairs[{j}])",
                    p.cause, p.effect
                ),
            );
        }
    }
}

impl Fitted {
    /// The `learned:` section this model writes.
    pub fn section(&self, window: PromDuration) -> LearnedSection {
        LearnedSection {
            model: MODEL.to_owned(),
            window: Some(window),
            features: self.feature_names.clone(),
            coefficients: self.coefficients.clone(),
            intercept: Some(self.intercept),
            pairs: self.pairs.clone(),
        }
    }
}

/// Renders a fitted model as a `learned:` section.
pub fn render(f: &Fitted, window: &PromDuration) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Learned ranking signal: {MODEL} fitted on {} labelled incidents\n\
         # ({} positive, {} negative pairs; training accuracy {:.3}).\n\
         # score: probability that `cause` is the cause of `effect`.",
        f.incidents, f.rows.0, f.rows.1, f.train_accuracy
    );
    let list = |v: &mut String, xs: &[String]| v.push_str(&format!("[{}]", xs.join(", ")));
    out.push_str("learned:\n");
    let _ = writeln!(out, "  model: {MODEL}\n  window: {window}");
    out.push_str("  features: ");
    list(
        &mut out,
        &f.feature_names
            .iter()
            .map(|s| serde_json::to_string(s).expect("string"))
            .collect::<Vec<_>>(),
    );
    out.push_str("\n  coefficients: ");
    list(
        &mut out,
        &f.coefficients
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>(),
    );
    let _ = writeln!(out, "\n  intercept: {}", f.intercept);
    if f.pairs.is_empty() {
        out.push_str("  pairs: []\n");
        return out;
    }
    out.push_str("  pairs:\n");
    for p in &f.pairs {
        let _ = writeln!(
            out,
            "    - {{cause: {}, effect: {}, score: {}, support: {}, confidence: {}}}",
            serde_json::to_string(&p.cause).expect("string"),
            serde_json::to_string(&p.effect).expect("string"),
            p.score,
            p.support,
            p.confidence
        );
    }
    out
}

/// Learned scores loaded with the rules.
#[derive(Debug, Clone, Default)]
pub struct Learned {
    scores: HashMap<String, HashMap<String, (f64, u64)>>,
}

/// What the learned scores say about one candidate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Explains {
    /// Mean of `score(A → B) − score(B → A)` over the other names, in [-1, 1].
    pub value: f64,
    /// The pair that speaks most for `A`: effect, score, support.
    pub strongest: Option<(String, f64, u64)>,
}

impl Learned {
    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// Adds a section; a later pair overrides an earlier one.
    pub fn add(&mut self, s: &LearnedSection) {
        for p in &s.pairs {
            self.scores
                .entry(p.cause.clone())
                .or_default()
                .insert(p.effect.clone(), (p.score, p.support));
        }
    }

    fn entry(&self, a: &str, b: &str) -> Option<(f64, u64)> {
        self.scores.get(a)?.get(b).copied()
    }

    /// The score of `a → b`, if the pair was scored.
    pub fn score(&self, a: &str, b: &str) -> Option<f64> {
        self.entry(a, b).map(|e| e.0)
    }

    /// How strongly the learned pairs say `cause` explains the other names.
    pub fn explains<'a>(&self, cause: &str, names: impl IntoIterator<Item = &'a str>) -> Explains {
        let mut sum = 0.0;
        let mut n = 0usize;
        let mut strongest: Option<(String, f64, u64)> = None;
        let mut best = 0.0;
        for b in names {
            if b == cause {
                continue;
            }
            n += 1;
            let fwd = self.entry(cause, b);
            let rev = self.entry(b, cause);
            let d = fwd.map_or(0.0, |s| s.0) - rev.map_or(0.0, |s| s.0);
            sum += d;
            if let Some((s, sup)) = fwd.filter(|_| d > best) {
                best = d;
                strongest = Some((b.to_owned(), s, sup));
            }
        }
        Explains {
            value: if n == 0 { 0.0 } else { sum / n as f64 },
            strongest,
        }
    }
}

/// Learned values of the alert names of one incident.
#[derive(Debug, Default)]
pub(super) struct IncidentNames {
    name_of: HashMap<Fingerprint, String>,
    by_name: HashMap<String, Explains>,
}

impl IncidentNames {
    fn explains(&self, fp: Fingerprint) -> Option<(&str, &Explains)> {
        let name = self.name_of.get(&fp)?;
        Some((name, self.by_name.get(name)?))
    }

    /// The sort value of an alert: how strongly its name explains the
    /// incident's other names (0 without learned scores).
    pub(super) fn value(&self, fp: Fingerprint) -> i64 {
        self.explains(fp)
            .map_or(0, |(_, e)| (e.value * 1000.0).round() as i64)
    }
}

impl super::Correlator {
    /// Learned values of the alert names in incident `id` (empty without
    /// learned scores).
    pub(super) fn learned_names(&self, id: &str) -> IncidentNames {
        let learned = &self.settings.rules.learned;
        let mut out = IncidentNames::default();
        let Some(open) = self.open.get(id).filter(|_| !learned.is_empty()) else {
            return out;
        };
        out.name_of = open
            .incident
            .alerts
            .iter()
            .map(|a| (a.fingerprint, a.labels.get_or_empty("alertname").to_owned()))
            .collect();
        let names: BTreeSet<&str> = out.name_of.values().map(String::as_str).collect();
        out.by_name = names
            .iter()
            .map(|n| ((*n).to_owned(), learned.explains(n, names.iter().copied())))
            .collect();
        out
    }

    /// The learned tie-break of each ranking candidate (by its best alert): a
    /// sort value, and a note for its explanation when the value decided
    /// something: it separates the candidate from one that explains as many
    /// members with the same rule weight, or it chose the candidate's alert
    /// over another of the same weight on the same entity.
    pub(super) fn learned_candidates(
        &self,
        id: &str,
        names: &IncidentNames,
        cands: &[(super::Key, Option<usize>, usize)],
    ) -> HashMap<super::Key, (i64, Option<String>)> {
        let members: HashSet<usize> = self
            .open
            .get(id)
            .map(|o| o.slots.iter().copied().collect())
            .unwrap_or_default();
        struct Scored {
            key: super::Key,
            /// Coverage and rule weight: candidates alike in both tie.
            tie: (usize, u32),
            value: i64,
            note: Option<String>,
            /// The value chose the candidate's alert on its entity.
            within: bool,
        }
        let mut scored: Vec<Scored> = Vec::new();
        for (k, best, covered) in cands {
            let Some((s, d)) = best.map(|s| (s, &self.slot_data[s])) else {
                continue;
            };
            let Some((name, e)) = names.explains(d.fp) else {
                continue;
            };
            // The value chose this alert over another of the same weight on
            // the same entity.
            let within = self.ents[*k as usize].failing.iter().any(|o| {
                *o != s
                    && members.contains(o)
                    && self.slot_data[*o].weight == d.weight
                    && names.value(self.slot_data[*o].fp) < names.value(d.fp)
            });
            let note = e.strongest.as_ref().map(|(effect, score, support)| {
                format!(
                    "learned from history: {name} causes {effect} (score {score:.2}, support {support})"
                )
            });
            scored.push(Scored {
                key: *k,
                tie: (*covered, d.weight),
                value: names.value(d.fp),
                note,
                within,
            });
        }
        let mut out = HashMap::new();
        for c in &scored {
            let decided = c.within
                || scored
                    .iter()
                    .any(|o| o.key != c.key && o.tie == c.tie && o.value < c.value);
            out.insert(c.key, (c.value, c.note.clone().filter(|_| decided)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::learn::{mine, occurrences_from_jsonl, LearnOptions};

    #[test]
    fn fits_on_simulated_truth_and_scores_causes_above_symptoms() {
        let storm = crate::sim::simulate(&crate::sim::SimConfig {
            seed: 11,
            clusters: 6,
            faults_per_cluster: 6,
            ..Default::default()
        });
        let (occs, _) = occurrences_from_jsonl(&storm.jsonl());
        let opts = LearnOptions::default();
        let pairs = mine(&occs, &storm.topology(), &opts);
        let labelled = labelled_from_truth(&storm.truth, &occs);
        assert!(labelled.len() > 10, "{}", labelled.len());
        let f = fit(
            &pairs,
            &labelled,
            opts.window.num_seconds() as f64,
            opts.min_support,
        )
        .unwrap();
        assert_eq!(f.coefficients.len(), f.feature_names.len());
        assert!(f.train_accuracy > 0.7, "{}", f.train_accuracy);
        let score = |a: &str, b: &str| {
            f.pairs
                .iter()
                .find(|p| p.cause == a && p.effect == b)
                .unwrap_or_else(|| panic!("no pair {a} -> {b}"))
                .score
        };
        // A node failure causes its pods' readiness alerts, not the reverse.
        assert!(
            score("KubeNodeNotReady", "KubePodNotReady")
                > score("KubePodNotReady", "KubeNodeNotReady") + 0.2
        );
        // The section renders, parses back and validates.
        let text = render(&f, &PromDuration::mins(15));
        let file = crate::correlate::rules::parse_rules(&text).expect(&text);
        let section = file.learned.expect("learned section");
        assert_eq!(section.pairs, f.pairs);
        let mut l = Learned::default();
        l.add(&section);
        let e = l.explains(
            "KubeNodeNotReady",
            ["KubePodNotReady", "KubeDeploymentReplicasMismatch"],
        );
        assert!(e.value > 0.0, "{e:?}");
        assert!(
            l.explains("KubePodNotReady", ["KubeNodeNotReady"]).value < 0.0,
            "{l:?}"
        );
    }

    /// The shipped rules with every causal weight equal: alert names with no
    /// declared causal order.
    fn equal_weight_rules() -> crate::correlate::Rules {
        let mut f = crate::correlate::rules::parse_rules(crate::correlate::rules::DEFAULT_RULES)
            .expect("shipped rules");
        for a in &mut f.alerts {
            a.weight = 10;
        }
        let mut r = crate::correlate::Rules::empty();
        r.add(f);
        r
    }

    /// Learned scores fitted on simulated histories (with ground truth) that
    /// are not the incident under test.
    fn trained() -> LearnedSection {
        let opts = LearnOptions::default();
        let mut occs = Vec::new();
        let mut labelled = Vec::new();
        let mut topo = crate::correlate::Topology::default();
        for seed in [21, 22] {
            let storm = crate::sim::simulate(&crate::sim::SimConfig {
                seed,
                clusters: 8,
                faults_per_cluster: 6,
                ..Default::default()
            });
            let (o, _) = occurrences_from_jsonl(&storm.jsonl());
            labelled.extend(labelled_from_truth(&storm.truth, &o));
            occs.extend(o);
            for (m, body) in &storm.topology_bodies {
                topo.add_query_body(m, body.as_bytes()).unwrap();
            }
        }
        let pairs = mine(&occs, &topo, &opts);
        fit(&pairs, &labelled, 900.0, opts.min_support)
            .unwrap()
            .section(PromDuration::mins(15))
    }

    fn control_plane_storm(
        rules: crate::correlate::Rules,
    ) -> (crate::domain::Incident, Vec<crate::domain::AlertState>) {
        use crate::domain::{AlertState, AlertStatus, ClusterId, Labels, Transition};
        let t0 = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let alert = |name: &str, at: i64| {
            let mut labels = Labels::new();
            labels.insert("alertname", name);
            labels.insert("cluster", "c1");
            labels.insert("severity", "critical");
            let t = t0 + chrono::Duration::seconds(at);
            AlertState {
                id: labels.fingerprint(),
                am_fingerprint: None,
                cluster: ClusterId::new("c1"),
                labels,
                annotations: Labels::new(),
                status: AlertStatus::Firing,
                starts_at: t,
                ends_at: None,
                generator_url: Default::default(),
                external_url: Default::default(),
                source: "test".into(),
                first_received: t,
                last_received: t,
                flaps: 0,
                previous_end: None,
                deliveries: 1,
            }
        };
        // The scheduler's alert began first; the API server is the cause.
        let alerts = vec![
            alert("KubeSchedulerDown", 0),
            alert("KubeAPIDown", 30),
            alert("KubeControllerManagerDown", 45),
        ];
        let mut c =
            super::super::Correlator::new(super::super::CorrelateSettings::from_rules(rules));
        for a in &alerts {
            c.observe(a, Transition::New, a.first_received);
        }
        let open: Vec<_> = c.incidents().into_iter().filter(|i| i.is_open()).collect();
        assert_eq!(open.len(), 1, "{open:?}");
        (open[0].clone(), alerts)
    }

    #[test]
    fn learned_scores_name_the_cause_where_topology_ties() {
        let section = trained();
        // One entity (the control plane), one severity, no declared order:
        // without the learned signal the earliest alert is named.
        let (inc, alerts) = control_plane_storm(equal_weight_rules());
        assert_eq!(inc.root_cause.fingerprint, Some(alerts[0].id));
        let mut rules = equal_weight_rules();
        rules.learned.add(&section);
        let (inc, alerts) = control_plane_storm(rules);
        assert_eq!(
            inc.root_cause.fingerprint,
            Some(alerts[1].id),
            "{}",
            inc.root_cause.explanation
        );
        assert!(
            inc.root_cause
                .explanation
                .contains("learned from history: KubeAPIDown causes"),
            "{}",
            inc.root_cause.explanation
        );
    }

    #[test]
    fn declared_weights_outrank_learned_scores() {
        // A learned section that says the opposite of the shipped weights
        // (KubeAPIDown 100, KubeSchedulerDown 90) changes nothing.
        let text = "learned:\n  model: logistic_regression\n  pairs:\n    - {cause: KubeSchedulerDown, effect: KubeAPIDown, score: 1.0}\n    - {cause: KubeAPIDown, effect: KubeSchedulerDown, score: 0.0}\n";
        let mut rules = crate::correlate::Rules::default();
        rules.add(crate::correlate::rules::parse_rules(text).unwrap());
        let (inc, alerts) = control_plane_storm(rules);
        assert_eq!(inc.root_cause.fingerprint, Some(alerts[1].id));
        assert!(!inc.root_cause.explanation.contains("learned"));
    }

    #[test]
    fn a_malformed_learned_section_is_refused_with_file_and_field() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/rules/bad-learned");
        let errs = crate::correlate::Rules::load_dir(&dir)
            .unwrap_err()
            .to_string();
        assert!(errs.contains("learned.yaml"), "{errs}");
        assert!(errs.contains("learned.pairs[1].score"), "{errs}");
        assert!(errs.contains("line 7"), "{errs}");
        assert!(errs.contains("between 0 and 1, got 1.7"), "{errs}");
        let errs = crate::correlate::rules::parse_rules(
            "learned:\n  model: logistic_regression\n  pairs:\n    - {cause: A, efect: B, score: 0.5}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(errs.contains("learned.pairs[0]"), "{errs}");
        let errs = crate::correlate::rules::parse_rules(
            "learned:\n  model: kmeans\n  pairs:\n    - {cause: A, effect: A, score: 0.5}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(errs.contains("learned.model"), "{errs}");
        assert!(errs.contains("learned.pairs[0].effect: line 4"), "{errs}");
    }

    #[test]
    fn stored_incidents_label_their_ranked_root() {
        // What `learn --data-dir` reads: incidents as the correlator ranked them.
        let storm = crate::sim::simulate(&crate::sim::SimConfig {
            seed: 12,
            clusters: 4,
            ..Default::default()
        });
        let run = storm.run(true).unwrap();
        let labelled = labelled_from_incidents(&run.result.incidents);
        assert!(labelled.len() >= 5, "{labelled:?}");
        assert!(labelled
            .iter()
            .all(|l| l.members.len() > 1 && l.members.contains(&l.root)));
        assert!(labelled
            .iter()
            .any(|l| l.root == "KubeNodeNotReady" && l.members.contains("KubePodNotReady")));
        let (occs, _) = occurrences_from_jsonl(&storm.jsonl());
        let opts = LearnOptions::default();
        let pairs = mine(&occs, &storm.topology(), &opts);
        let f = fit(&pairs, &labelled, 900.0, opts.min_support).unwrap();
        assert!(!f.pairs.is_empty());
    }

    #[test]
    fn one_class_is_refused() {
        let labelled = vec![Labelled {
            root: "A".into(),
            members: ["A".to_owned()].into_iter().collect(),
        }];
        assert!(matches!(
            fit(&[], &labelled, 900.0, 1),
            Err(FitError::NoLabels)
        ));
    }
}
