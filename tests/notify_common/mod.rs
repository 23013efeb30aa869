// Shared by the notify_* integration tests (included with `mod`).
#![allow(dead_code)]

use stormcast::domain::{
    AlertStatus, Entity, EntityKind, Incident, IncidentAlert, Labels, RootCause, Timestamp,
};

pub fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    let mut l = Labels::new();
    for (k, v) in pairs {
        l.insert(*k, *v);
    }
    l
}

/// An open incident whose root cause has `pairs` as labels.
pub fn incident(id: &str, at: Timestamp, pairs: &[(&str, &str)], clusters: &[&str]) -> Incident {
    let l = labels(pairs);
    let sev = l.get_or_empty("severity").to_owned();
    Incident {
        id: id.to_owned(),
        opened_at: at,
        updated_at: at,
        resolved_at: None,
        root_cause: RootCause {
            fingerprint: Some(l.fingerprint()),
            labels: l.clone(),
            entity: Entity::new(
                EntityKind::Node,
                clusters.first().copied().unwrap_or("c1"),
                None,
                l.get_or_empty("node"),
            ),
            explanation: "node stopped reporting; 12 pods on it went NotReady".to_owned(),
            score: 1.0,
        },
        candidates: Vec::new(),
        alerts: vec![IncidentAlert {
            fingerprint: l.fingerprint(),
            labels: l,
            status: AlertStatus::Firing,
            starts_at: at,
            ends_at: None,
        }],
        clusters: clusters.iter().map(|c| c.to_string()).collect(),
        severity: sev,
        predictive: false,
        storm: false,
    }
}
