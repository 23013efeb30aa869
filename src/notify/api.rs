//! Notification endpoints: silences (Alertmanager-shaped), incident
//! acknowledgement, and the outbox view (pending, failed, recently delivered).
//! Mounted next to the main API by `serve`; errors go through [`ApiError`].

use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::dispatch::Dispatcher;
use super::outbox::{EntryState, OutboxEntry};
use super::silence::{Silence, SilenceState};
use crate::api::ApiError;
use crate::domain::Timestamp;
use crate::engine::{Clock, Engine};
use crate::store::{Store, StoreError};

/// What the notification endpoints reach.
pub struct NotifyApi {
    pub engine: Arc<Mutex<Engine>>,
    pub store: Store,
    pub dispatcher: Arc<Dispatcher>,
    pub clock: Arc<dyn Clock>,
}

pub fn router(state: Arc<NotifyApi>) -> Router {
    Router::new()
        .route("/api/v1/silences", get(list_silences).post(add_silence))
        .route("/api/v1/silences/{id}", delete(expire_silence))
        .route("/api/v1/incidents/{id}/ack", post(ack).get(ack_state))
        .route("/api/v1/notifications", get(notifications))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
}

/// Loads persisted silences into the planner (at start-up).
pub fn restore_silences(store: &Store, engine: &mut Engine) -> Result<usize, StoreError> {
    let tree = store.tree("silences")?;
    let mut n = 0;
    for v in tree.iter().values() {
        let v = v?;
        match serde_json::from_slice::<Silence>(&v) {
            Ok(s) => {
                if engine.planner_mut().upsert_silence(s).is_ok() {
                    n += 1;
                }
            }
            Err(e) => tracing::error!(error = %e, "Stored silence no longer parses; skipped"),
        }
    }
    Ok(n)
}

/// Re-applies acknowledgements of incidents still open and unchanged since
/// (after [`Planner::restore`](super::Planner::restore)); forgets the others,
/// erring towards more repeats rather than fewer.
pub fn restore_acks(store: &Store, engine: &mut Engine) -> Result<usize, StoreError> {
    let tree = store.tree("acks")?;
    let mut n = 0;
    for kv in tree.iter() {
        let (k, v) = kv?;
        let id = String::from_utf8_lossy(&k).into_owned();
        let acked_at = std::str::from_utf8(&v)
            .ok()
            .and_then(|s| s.parse::<Timestamp>().ok());
        let unchanged = matches!(
            (engine.incident(&id), acked_at),
            (Some(inc), Some(at)) if inc.updated_at <= at
        );
        if unchanged && engine.planner_mut().ack(&id) {
            n += 1;
        } else {
            tree.remove(&k)?;
        }
    }
    Ok(n)
}

/// Records when `id` was acknowledged, flushed before the API answers.
fn save_ack(store: &Store, id: &str, at: Timestamp) -> Result<(), StoreError> {
    let tree = store.tree("acks")?;
    tree.insert(id.as_bytes(), at.to_rfc3339().as_bytes())?;
    tree.flush()?;
    Ok(())
}

fn save_silence(store: &Store, s: &Silence) -> Result<(), StoreError> {
    let tree = store.tree("silences")?;
    let v = serde_json::to_vec(s).map_err(|e| StoreError::Corrupt {
        tree: "silences",
        reason: e.to_string(),
    })?;
    tree.insert(s.id.as_bytes(), v)?;
    tree.flush()?;
    Ok(())
}

/// A silence with its current state.
#[derive(Debug, Serialize, Deserialize)]
pub struct SilenceView {
    #[serde(flatten)]
    pub silence: Silence,
    pub status: SilenceStatus,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SilenceStatus {
    pub state: SilenceState,
}

async fn list_silences(State(st): State<Arc<NotifyApi>>) -> Json<Vec<SilenceView>> {
    let now = st.clock.now();
    let engine = st.engine.lock().expect("engine lock");
    let mut v: Vec<SilenceView> = engine
        .planner()
        .silences()
        .map(|s| SilenceView {
            silence: s.clone(),
            status: SilenceStatus {
                state: s.state(now),
            },
        })
        .collect();
    v.sort_by_key(|s| std::cmp::Reverse(s.silence.starts_at));
    Json(v)
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SilenceCreated {
    #[serde(rename = "silenceID")]
    pub silence_id: String,
}

async fn add_silence(
    State(st): State<Arc<NotifyApi>>,
    Json(mut s): Json<Silence>,
) -> Result<Json<SilenceCreated>, ApiError> {
    if s.id.is_empty() {
        s.id = format!("{:016x}", rand::random::<u64>());
    }
    s.validate()?;
    save_silence(&st.store, &s)?;
    st.engine
        .lock()
        .expect("engine lock")
        .planner_mut()
        .upsert_silence(s.clone())?;
    tracing::info!(id = %s.id, created_by = %s.created_by, ends_at = %s.ends_at, "Silence added");
    Ok(Json(SilenceCreated { silence_id: s.id }))
}

async fn expire_silence(
    State(st): State<Arc<NotifyApi>>,
    Path(id): Path<String>,
) -> Result<Json<SilenceView>, ApiError> {
    let now = st.clock.now();
    let s = st
        .engine
        .lock()
        .expect("engine lock")
        .planner_mut()
        .expire_silence(&id, now)
        .ok_or_else(|| ApiError::not_found(format!("no silence {id}")))?;
    save_silence(&st.store, &s)?;
    tracing::info!(id = %s.id, "Silence expired");
    Ok(Json(SilenceView {
        status: SilenceStatus {
            state: s.state(now),
        },
        silence: s,
    }))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Acked {
    pub incident: String,
    pub acknowledged: bool,
}

async fn ack(
    State(st): State<Arc<NotifyApi>>,
    Path(id): Path<String>,
) -> Result<Json<Acked>, ApiError> {
    let ok = st
        .engine
        .lock()
        .expect("engine lock")
        .planner_mut()
        .ack(&id);
    if !ok {
        return Err(ApiError::not_found(format!("no open incident {id}")));
    }
    // Kept so a restart re-applies it (see `restore_acks`).
    save_ack(&st.store, &id, st.clock.now())?;
    tracing::info!(incident = %id, "Incident acknowledged");
    Ok(Json(Acked {
        incident: id,
        acknowledged: true,
    }))
}

/// `GET /api/v1/incidents/{id}/ack`: whether an incident is acknowledged.
async fn ack_state(
    State(st): State<Arc<NotifyApi>>,
    Path(id): Path<String>,
) -> Result<Json<Acked>, ApiError> {
    let engine = st.engine.lock().expect("engine lock");
    if engine.incident(&id).is_none() {
        return Err(ApiError::not_found(format!("no incident {id}")));
    }
    Ok(Json(Acked {
        acknowledged: engine.planner().is_acked(&id),
        incident: id,
    }))
}

#[derive(Debug, Deserialize)]
pub struct NotificationQuery {
    /// How many delivered messages to list (default 50).
    pub delivered: Option<usize>,
}

/// One outbox entry, without the incident snapshot.
#[derive(Debug, Serialize, Deserialize)]
pub struct EntryView {
    pub key: String,
    pub channel: String,
    pub incident: String,
    pub receiver: String,
    pub kind: super::MessageKind,
    pub state: EntryState,
    pub attempts: u32,
    pub created_at: Timestamp,
    pub next_attempt: Timestamp,
    pub delivered_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub last_reason: Option<String>,
}

impl From<&OutboxEntry> for EntryView {
    fn from(e: &OutboxEntry) -> Self {
        EntryView {
            key: e.key.clone(),
            channel: e.channel.clone(),
            incident: e.message.notification.incident.clone(),
            receiver: e.message.notification.receiver.clone(),
            kind: e.message.notification.kind,
            state: e.state,
            attempts: e.attempts,
            created_at: e.created_at,
            next_attempt: e.next_attempt,
            delivered_at: e.delivered_at,
            last_error: e.last_error.clone(),
            last_reason: e.last_reason.clone(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct NotificationsView {
    pub pending: Vec<EntryView>,
    pub failed: Vec<EntryView>,
    pub delivered: Vec<EntryView>,
}

async fn notifications(
    State(st): State<Arc<NotifyApi>>,
    Query(q): Query<NotificationQuery>,
) -> Result<Json<NotificationsView>, ApiError> {
    let outbox = st.dispatcher.outbox();
    let entries = outbox.entries()?;
    let delivered = outbox.recent_delivered(q.delivered.unwrap_or(50).min(1000))?;
    Ok(Json(NotificationsView {
        pending: entries
            .iter()
            .filter(|e| e.state == EntryState::Pending)
            .map(EntryView::from)
            .collect(),
        failed: entries
            .iter()
            .filter(|e| e.state == EntryState::Failed)
            .map(EntryView::from)
            .collect(),
        delivered: delivered.iter().map(EntryView::from).collect(),
    }))
}
