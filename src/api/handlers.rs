//! Request handlers.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::incident_query::IncidentQuery;
use super::{ApiError, AppState};
use crate::domain::{AlertState, Fingerprint, Incident};
use crate::engine::ApplyOutcome;
use crate::ingest::parse_delivery;
use crate::metrics::SourceLabel;
use crate::store::JournalEntry;

#[derive(Serialize)]
pub struct Accepted {
    status: &'static str,
    #[serde(flatten)]
    outcome: ApplyOutcome,
}

/// `POST /api/v1/alerts`: an Alertmanager webhook. Answers 200 only once the
/// delivery is on disk.
pub async fn receive(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Accepted>, ApiError> {
    let result = receive_inner(&st, &headers, body).await;
    if let Err(e) = &result {
        st.metrics.reject(e.reason);
        tracing::warn!(reason = e.reason, status = e.status.as_u16(), error = %e.message, "Rejected delivery");
    }
    result
}

async fn receive_inner(
    st: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Json<Accepted>, ApiError> {
    if !st.ready.load(Ordering::Acquire) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "stormcast is recovering its state; retry shortly",
        ));
    }
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("Content-Type must be application/json, got {content_type:?}"),
        ));
    }
    let who = st
        .auth
        .authenticate(headers.get(AUTHORIZATION).map(|v| v.as_bytes()))?;
    let bytes = read_capped(headers, body, st.max_body_bytes).await?;
    let now = st.clock.now();
    let delivery = parse_delivery(&bytes, now, &who.source, who.cluster.as_deref(), &st.ingest)?;
    let entry = JournalEntry {
        received_at: now,
        source: who.source.clone(),
        body: bytes.to_vec(),
    };
    let (seq, took) = st.store.append_journal(&entry).await?;
    st.metrics.store_write_seconds.observe(took.as_secs_f64());
    let outcome = st.engine.lock().expect("engine lock").apply(&delivery);
    st.store.mark_applied(seq);
    let label = SourceLabel { source: who.source };
    st.metrics.deliveries.get_or_create(&label).inc();
    st.metrics
        .alerts_received
        .get_or_create(&label)
        .inc_by(delivery.alerts.len() as u64);
    Ok(Json(Accepted {
        status: "success",
        outcome,
    }))
}

/// Reads the body up to `limit` bytes. An over-limit body is still read (and
/// discarded, up to a bound) so that the sender sees the 413 instead of a reset
/// connection, which Alertmanager would retry forever.
async fn read_capped(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    use futures::StreamExt;
    const DRAIN_CAP: usize = 64 * 1024 * 1024;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("body exceeds server.max_body_bytes ({limit} bytes)"),
        )
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut over = declared.is_some_and(|n| n > limit);
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    let mut seen = 0usize;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("cannot read body: {e}")))?;
        seen += chunk.len();
        if seen > limit {
            over = true;
        }
        if over {
            if seen > DRAIN_CAP {
                break;
            }
            continue;
        }
        buf.extend_from_slice(&chunk);
    }
    if over {
        return Err(too_large());
    }
    Ok(Bytes::from(buf))
}

#[derive(Debug, Deserialize)]
pub struct AlertQuery {
    cluster: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/v1/alerts`: current alert states, newest first.
pub async fn list_alerts(
    State(st): State<Arc<AppState>>,
    Query(q): Query<AlertQuery>,
) -> Json<Vec<AlertState>> {
    let engine = st.engine.lock().expect("engine lock");
    let mut out: Vec<AlertState> = engine
        .alerts()
        .filter(|a| q.cluster.as_deref().is_none_or(|c| a.cluster.as_str() == c))
        .filter(|a| q.status.as_deref().is_none_or(|s| a.status.as_str() == s))
        .cloned()
        .collect();
    drop(engine);
    out.sort_by(|a, b| b.last_received.cmp(&a.last_received).then(a.id.cmp(&b.id)));
    out.truncate(q.limit.unwrap_or(1000));
    Json(out)
}

pub async fn get_alert(
    State(st): State<Arc<AppState>>,
    Path(fp): Path<String>,
) -> Result<Json<AlertState>, ApiError> {
    let id: Fingerprint = fp
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{fp:?} is not a 16-digit hex fingerprint")))?;
    let engine = st.engine.lock().expect("engine lock");
    engine
        .alert(id)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no alert {fp}")))
}

/// An incident as the API reports it: the incident, and what on-call did
/// about it.
#[derive(Serialize)]
pub struct IncidentView {
    #[serde(flatten)]
    incident: Incident,
    /// Acknowledged: no repeats until it changes.
    acknowledged: bool,
    /// The active silences that hold back its messages.
    silenced_by: Vec<String>,
}

impl IncidentView {
    fn of(
        incident: Incident,
        engine: &crate::engine::Engine,
        now: crate::domain::Timestamp,
    ) -> Self {
        let planner = engine.planner();
        IncidentView {
            acknowledged: planner.is_acked(&incident.id),
            silenced_by: planner.silenced_by(&incident.id, now),
            incident,
        }
    }
}

/// `GET /api/v1/incidents`: incidents filtered, searched, sorted and paged
/// on the server ([`IncidentQuery`]); the `X-Total-Count` header says how
/// many matched before paging.
pub async fn list_incidents(
    State(st): State<Arc<AppState>>,
    Query(q): Query<IncidentQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let now = st.clock.now();
    let (total, page) = {
        let engine = st.engine.lock().expect("engine lock");
        let selected = q.select(engine.incidents())?;
        let page: Vec<IncidentView> = selected
            .page
            .into_iter()
            .map(|i| IncidentView::of(i, &engine, now))
            .collect();
        (selected.total, page)
    };
    Ok(([("x-total-count", total.to_string())], Json(page)))
}

pub async fn get_incident(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<IncidentView>, ApiError> {
    let now = st.clock.now();
    let engine = st.engine.lock().expect("engine lock");
    engine
        .incident(&id)
        .cloned()
        .map(|i| Json(IncidentView::of(i, &engine, now)))
        .ok_or_else(|| ApiError::not_found(format!("no incident {id}")))
}

#[derive(Serialize)]
pub struct Status {
    version: &'static str,
    alerts: usize,
    incidents_open: usize,
    /// `null` until the first compaction pass after start-up has counted them.
    journal_entries: Option<u64>,
    store_bytes: u64,
    schema_version: u32,
}

pub async fn status(State(st): State<Arc<AppState>>) -> Json<Status> {
    let (alerts, open) = {
        let engine = st.engine.lock().expect("engine lock");
        (
            engine.alert_count(),
            engine.incidents().iter().filter(|i| i.is_open()).count(),
        )
    };
    Json(Status {
        version: env!("CARGO_PKG_VERSION"),
        alerts,
        incidents_open: open,
        journal_entries: st.store.journal_entries(),
        store_bytes: st.store.size_on_disk(),
        schema_version: st.store.schema_version().unwrap_or(0),
    })
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn readyz(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    if st.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "recovering\n")
    }
}

pub async fn metrics(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    if let Some(n) = st.store.journal_entries() {
        st.metrics.journal_entries.set(n as i64);
    }
    st.metrics.store_bytes.set(st.store.size_on_disk() as i64);
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::render(&st.registry),
    )
}

/// `GET /incidents/{id}`: the incident's page (root cause, candidates, a
/// timeline, its entities and members), the page every message links to.
/// The page reads the incident from the API, so an unknown id shows as
/// such there.
pub async fn incident_page() -> impl IntoResponse {
    page(include_str!("ui/incident.html"))
}

/// An embedded page, allowed to load nothing but itself and this API.
fn page(html: &'static str) -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'",
            ),
        ],
        html,
    )
}

/// The web UI: one self-contained page that reads the JSON API.
pub async fn ui() -> impl IntoResponse {
    page(include_str!("ui/index.html"))
}
