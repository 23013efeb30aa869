//! Scores a correlation result against simulator truth: pairwise precision,
//! recall and F1, the adjusted Rand index, root-cause top-1/top-3 accuracy,
//! alerts lost, and incidents vs true incidents.

use std::collections::HashMap;

use serde::Serialize;

use crate::correlate::entity::{canonical_key, resolve};
use crate::correlate::{Rules, Topology};
use crate::domain::{Fingerprint, Incident, Labels};

use super::Truth;

/// Quality figures of one grouping.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Score {
    pub alerts: usize,
    pub lost: usize,
    pub incidents: usize,
    pub true_incidents: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub ari: f64,
    /// Fault incidents (noise excluded) whose root-cause entity ranked first.
    pub top1: f64,
    pub top3: f64,
    pub faults: usize,
    /// Fault incidents with a root alert whose group names that alert as its
    /// root cause.
    pub alert_top1: f64,
}

impl std::fmt::Display for Score {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "alerts {:5}  lost {:3}  incidents {:4} vs true {:4}  pair P {:.3} R {:.3} F1 {:.3}  ARI {:.3}  root top-1 {:.3} top-3 {:.3} alert {:.3} ({} faults)",
            self.alerts, self.lost, self.incidents, self.true_incidents, self.precision, self.recall, self.f1, self.ari, self.top1, self.top3, self.alert_top1, self.faults
        )
    }
}

/// A predicted group: its members and ranked root entities (canonical ids).
#[derive(Debug, Clone)]
pub struct Group {
    pub members: Vec<Fingerprint>,
    pub ranked_roots: Vec<String>,
    /// The alert named as the root cause, if any.
    pub root_alert: Option<Fingerprint>,
}

/// Groups from stormcast incidents (absorbed, member-less incidents skipped).
pub fn groups_from_incidents(incidents: &[Incident]) -> Vec<Group> {
    incidents
        .iter()
        .filter(|i| !i.alerts.is_empty())
        .map(|i| Group {
            members: i.alerts.iter().map(|a| a.fingerprint).collect(),
            ranked_roots: if i.candidates.is_empty() {
                vec![canonical_key(&i.root_cause.entity)]
            } else {
                i.candidates
                    .iter()
                    .map(|c| canonical_key(&c.entity))
                    .collect()
            },
            root_alert: i.root_cause.fingerprint,
        })
        .collect()
}

/// An alert identity with its labels and first start.
pub type AlertRow = (Fingerprint, Labels, chrono::DateTime<chrono::Utc>);

/// An Alertmanager-style baseline: one group per (cluster, namespace), the
/// earliest alert's entity named as the root.
pub fn baseline_groups(
    alerts: &[(Fingerprint, Labels, chrono::DateTime<chrono::Utc>)],
) -> Vec<Group> {
    let rules = Rules::default();
    let topo = Topology::default();
    // Ordered, so that the bench prints the same figures on every run.
    let mut by: std::collections::BTreeMap<(String, String), Vec<&AlertRow>> = Default::default();
    for a in alerts {
        by.entry((
            a.1.get_or_empty("cluster").to_owned(),
            a.1.get_or_empty("namespace").to_owned(),
        ))
        .or_default()
        .push(a);
    }
    by.into_values()
        .map(|mut v| {
            v.sort_by_key(|a| a.2);
            let first = &v[0].1;
            let root = resolve(first, first.get_or_empty("cluster"), &rules, &topo)
                .primary
                .key;
            Group {
                members: v.iter().map(|a| a.0).collect(),
                ranked_roots: vec![root],
                root_alert: Some(v[0].0),
            }
        })
        .collect()
}

fn c2(n: usize) -> f64 {
    (n as f64) * (n as f64 - 1.0) / 2.0
}

/// Scores `groups` against `truth`.
pub fn score(groups: &[Group], truth: &Truth) -> Score {
    let mut pred: HashMap<Fingerprint, usize> = HashMap::new();
    for (gi, g) in groups.iter().enumerate() {
        for fp in &g.members {
            pred.entry(*fp).or_insert(gi);
        }
    }
    let mut s = Score {
        true_incidents: truth
            .alerts
            .values()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        ..Default::default()
    };
    let mut cells: HashMap<(usize, usize), usize> = HashMap::new();
    let mut rows: HashMap<usize, usize> = HashMap::new();
    let mut cols: HashMap<usize, usize> = HashMap::new();
    for (fp, t) in &truth.alerts {
        s.alerts += 1;
        match pred.get(fp) {
            None => s.lost += 1,
            Some(p) => {
                *cells.entry((*p, *t)).or_default() += 1;
                *rows.entry(*p).or_default() += 1;
                *cols.entry(*t).or_default() += 1;
            }
        }
    }
    s.incidents = rows.len();
    let tp: f64 = cells.values().map(|n| c2(*n)).sum();
    let pp: f64 = rows.values().map(|n| c2(*n)).sum();
    let tt: f64 = cols.values().map(|n| c2(*n)).sum();
    s.precision = if pp > 0.0 { tp / pp } else { 1.0 };
    s.recall = if tt > 0.0 { tp / tt } else { 1.0 };
    s.f1 = if s.precision + s.recall > 0.0 {
        2.0 * s.precision * s.recall / (s.precision + s.recall)
    } else {
        0.0
    };
    let n = c2(s.alerts - s.lost);
    let expected = if n > 0.0 { pp * tt / n } else { 0.0 };
    let max = (pp + tt) / 2.0;
    s.ari = if (max - expected).abs() > 1e-12 {
        (tp - expected) / (max - expected)
    } else {
        1.0
    };
    // Root cause: the predicted group holding most of a true incident's alerts.
    let (mut top1, mut top3) = (0usize, 0usize);
    let (mut alert_top1, mut with_alert) = (0usize, 0usize);
    for inc in truth.incidents.iter().filter(|i| i.kind != "noise") {
        let mut votes: HashMap<usize, usize> = HashMap::new();
        for (fp, t) in &truth.alerts {
            if *t == inc.id {
                if let Some(p) = pred.get(fp) {
                    *votes.entry(*p).or_default() += 1;
                }
            }
        }
        let Some((&g, _)) = votes
            .iter()
            .max_by_key(|(g, n)| (**n, std::cmp::Reverse(**g)))
        else {
            continue;
        };
        s.faults += 1;
        let ranked = &groups[g].ranked_roots;
        if ranked.first() == Some(&inc.root_entity) {
            top1 += 1;
        }
        if ranked.iter().take(3).any(|r| *r == inc.root_entity) {
            top3 += 1;
        }
        if let Some(fp) = inc.root_fingerprint {
            with_alert += 1;
            alert_top1 += usize::from(groups[g].root_alert == Some(fp));
        }
    }
    if s.faults > 0 {
        s.top1 = top1 as f64 / s.faults as f64;
        s.top3 = top3 as f64 / s.faults as f64;
    }
    if with_alert > 0 {
        s.alert_top1 = alert_top1 as f64 / with_alert as f64;
    }
    s
}
