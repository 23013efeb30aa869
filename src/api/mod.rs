//! HTTP: the webhook receiver, health and metrics endpoints, and the read API.
//! Handlers parse at the edge and call the engine; they never reach into the
//! store's trees directly except through [`Store`]'s methods.

mod error;
mod handlers;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use axum::routing::{get, post};
use axum::Router;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

pub use error::ApiError;

use crate::config::{ConfigErrors, PromDuration};
use crate::engine::{Clock, Engine};
use crate::ingest::{Authenticator, IngestConfig};
use crate::metrics::Metrics;
use crate::store::Store;

/// The default port: clear of Prometheus (9090), Alertmanager (9093, 9094)
/// and the common exporters.
pub const DEFAULT_PORT: u16 = 9797;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Largest accepted request body, in bytes (413 above it).
    pub max_body_bytes: usize,
    /// Accept unauthenticated webhooks on a non-loopback address. Loopback
    /// listeners without sources are always open.
    pub allow_unauthenticated: bool,
    /// Requests taking longer are answered 408.
    pub request_timeout: PromDuration,
    /// How users reach this stormcast (links in messages and reports).
    pub external_url: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: format!("127.0.0.1:{DEFAULT_PORT}"),
            max_body_bytes: 8 * 1024 * 1024,
            allow_unauthenticated: false,
            request_timeout: PromDuration::secs(30),
            external_url: None,
        }
    }
}

impl ServerConfig {
    pub fn validate(&self, path: &str, errs: &mut ConfigErrors) {
        if self.listen.parse::<SocketAddr>().is_err() {
            errs.push(
                format!("{path}.listen"),
                format!(
                    "{:?} is not an address:port like 127.0.0.1:{DEFAULT_PORT}",
                    self.listen
                ),
            );
        }
        if self.max_body_bytes < 1024 {
            errs.push(format!("{path}.max_body_bytes"), "must be at least 1024");
        }
        if self.request_timeout.is_zero() {
            errs.push(format!("{path}.request_timeout"), "must be greater than 0");
        }
    }

    pub fn is_loopback(&self) -> bool {
        self.listen
            .parse::<SocketAddr>()
            .map(|a| a.ip().is_loopback())
            .unwrap_or(false)
    }
}

/// What every handler can reach.
pub struct AppState {
    pub engine: Arc<Mutex<Engine>>,
    pub store: Store,
    pub auth: Authenticator,
    pub ingest: IngestConfig,
    pub max_body_bytes: usize,
    pub metrics: Metrics,
    pub registry: Registry,
    pub clock: Arc<dyn Clock>,
    pub ready: AtomicBool,
}

/// Builds the router. `extra` lets later stages (notify, analyze, UI) mount
/// their own routes on the same state.
pub fn router(state: Arc<AppState>, timeout: std::time::Duration) -> Router {
    Router::new()
        .route(
            "/api/v1/alerts",
            post(handlers::receive).get(handlers::list_alerts),
        )
        .route("/api/v1/alerts/{fingerprint}", get(handlers::get_alert))
        .route("/api/v1/incidents", get(handlers::list_incidents))
        .route("/api/v1/incidents/{id}", get(handlers::get_incident))
        .route("/api/v1/status", get(handlers::status))
        .route("/", get(handlers::ui))
        .route("/ui", get(handlers::ui))
        .route(
            "/api/v1/report",
            get(crate::analyze::service::report_handler),
        )
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
