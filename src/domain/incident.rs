//! Incidents: groups of related alerts with a ranked, explained root cause.

use serde::{Deserialize, Serialize};

use super::{AlertStatus, Fingerprint, Labels, Timestamp};

/// The kind of thing an alert is about, from the most specific to the widest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    Container,
    Pod,
    PersistentVolumeClaim,
    ReplicaSet,
    Deployment,
    StatefulSet,
    DaemonSet,
    Job,
    Service,
    ScrapeJob,
    Node,
    Zone,
    Namespace,
    ControlPlane,
    Cluster,
    /// A series that stormcast forecast or scored (predictive alerts).
    Resource,
    /// Nothing in the labels names an entity: the alert is its own entity.
    Alert,
}

impl EntityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Container => "container",
            EntityKind::Pod => "pod",
            EntityKind::PersistentVolumeClaim => "persistent_volume_claim",
            EntityKind::ReplicaSet => "replica_set",
            EntityKind::Deployment => "deployment",
            EntityKind::StatefulSet => "stateful_set",
            EntityKind::DaemonSet => "daemon_set",
            EntityKind::Job => "job",
            EntityKind::Service => "service",
            EntityKind::ScrapeJob => "scrape_job",
            EntityKind::Node => "node",
            EntityKind::Zone => "zone",
            EntityKind::Namespace => "namespace",
            EntityKind::ControlPlane => "control_plane",
            EntityKind::Cluster => "cluster",
            EntityKind::Resource => "resource",
            EntityKind::Alert => "alert",
        }
    }
}

/// A canonical entity id: cluster / namespace / kind / name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Entity {
    pub kind: EntityKind,
    pub name: String,
    pub cluster: Option<String>,
    pub namespace: Option<String>,
}

impl Entity {
    pub fn new(kind: EntityKind, cluster: &str, namespace: Option<&str>, name: &str) -> Self {
        Entity {
            kind,
            name: name.to_owned(),
            cluster: Some(cluster.to_owned()),
            namespace: namespace.map(str::to_owned),
        }
    }
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind.as_str(), self.name)?;
        match (&self.cluster, &self.namespace) {
            (Some(c), Some(ns)) => write!(f, " ({c}/{ns})"),
            (Some(c), None) => write!(f, " ({c})"),
            _ => Ok(()),
        }
    }
}

/// The explained root cause of an incident (or one ranked candidate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootCause {
    /// The alert that names the cause; `None` for an inferred entity that fired
    /// no alert of its own (a zone whose nodes all failed).
    pub fingerprint: Option<Fingerprint>,
    pub labels: Labels,
    pub entity: Entity,
    pub explanation: String,
    /// Ranking score in [0, 1]; only meaningful relative to other candidates.
    #[serde(default)]
    pub score: f64,
}

/// An incident member as reported by the API and `replay`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentAlert {
    pub fingerprint: Fingerprint,
    pub labels: Labels,
    pub status: AlertStatus,
    pub starts_at: Timestamp,
    pub ends_at: Option<Timestamp>,
}

/// A group of related alerts, with its root cause and ranked candidates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: String,
    pub opened_at: Timestamp,
    pub updated_at: Timestamp,
    pub resolved_at: Option<Timestamp>,
    pub root_cause: RootCause,
    /// Ranked root-cause candidates, best first (the first is `root_cause`).
    #[serde(default)]
    pub candidates: Vec<RootCause>,
    pub alerts: Vec<IncidentAlert>,
    /// Clusters with at least one member alert.
    #[serde(default)]
    pub clusters: Vec<String>,
    /// Highest member severity (critical > warning > info > none).
    #[serde(default)]
    pub severity: String,
    /// True when a member is a stormcast prediction rather than a received alert.
    #[serde(default)]
    pub predictive: bool,
    /// True when a member cluster was in storm mode when the incident opened.
    #[serde(default)]
    pub storm: bool,
}

impl Incident {
    pub fn is_open(&self) -> bool {
        self.resolved_at.is_none()
    }

    pub fn firing_count(&self) -> usize {
        self.alerts
            .iter()
            .filter(|a| a.status == AlertStatus::Firing)
            .count()
    }
}

/// Orders severities: critical > warning > info > none/unknown.
pub fn severity_rank(s: &str) -> u8 {
    match s {
        "critical" | "page" => 3,
        "warning" | "warn" => 2,
        "info" => 1,
        _ => 0,
    }
}
