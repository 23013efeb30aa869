//! Plain domain types shared by every stage: labels, fingerprints, clusters,
//! alerts, incidents and the entities they are about. No I/O lives here.

mod alert;
mod fingerprint;
mod incident;
mod labels;
mod shared;

pub use alert::{AlertState, AlertStatus, DeliveryContext, Observation, Transition};
pub use fingerprint::Fingerprint;
pub use incident::{severity_rank, Entity, EntityKind, Incident, IncidentAlert, RootCause};
pub use labels::{is_valid_label_name, ClusterId, Labels, LabelsError};
pub use shared::SharedStr;

/// The engine's notion of time. Everything downstream of ingest takes it as a
/// parameter, so the live service and `replay` run the same code.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
