//! HTTP: the webhook receiver, health and metrics endpoints, and the read API.
//! Handlers parse at the edge and call the engine; they never reach into the
//! store's trees directly except through [`Store`]'s methods.

mod error;
mod handlers;
mod incident_query;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use axum::routing::{get, post};
use axum::Router;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

pub use error::ApiError;

use crate::config::{resolve_in_place, ConfigErrors, PromDuration, Secret, ValidateCtx};
use crate::engine::{Clock, Engine};
use crate::ingest::{ApiToken, Authenticator, IngestConfig};
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
    /// Listen on a non-loopback address although webhooks (no `sources`) or
    /// the mutating API endpoints (no `api_token`) are unauthenticated.
    /// Loopback listeners are open without credentials.
    pub allow_unauthenticated: bool,
    /// Token the API's mutating endpoints (creating and expiring silences,
    /// acknowledging incidents: every POST/DELETE under `/api/v1` except the
    /// webhook receiver) require as `Authorization: Bearer <token>`. Without
    /// it they are open, which only a loopback listener (or
    /// `allow_unauthenticated`) allows. Reading is never guarded.
    pub api_token: Option<Secret>,
    /// File holding the API token.
    pub api_token_file: Option<String>,
    /// Environment variable holding the API token.
    pub api_token_env: Option<String>,
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
            api_token: None,
            api_token_file: None,
            api_token_env: None,
            request_timeout: PromDuration::secs(30),
            external_url: None,
        }
    }
}

impl ServerConfig {
    /// Whether an API token is configured, in any of its three forms.
    pub fn api_token_given(&self) -> bool {
        self.api_token.is_some() || self.api_token_file.is_some() || self.api_token_env.is_some()
    }

    /// Validates the section and resolves `api_token` in place.
    pub fn validate(&mut self, path: &str, ctx: &ValidateCtx, errs: &mut ConfigErrors) {
        let key = format!("{path}.api_token");
        if resolve_in_place(
            &key,
            &mut self.api_token,
            &mut self.api_token_file,
            &mut self.api_token_env,
            &ctx.base_dir,
            errs,
        ) {
            if let Some(Err(e)) = self.api_token.as_ref().map(crate::ingest::check_api_token) {
                errs.push(key, e);
            }
        }
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

/// The Alertmanager webhook receiver: guarded by the sources' credentials,
/// not by the API token.
pub const WEBHOOK_PATH: &str = "/api/v1/alerts";

/// Requires the API token on every request that may change state (any
/// method but GET, HEAD and OPTIONS) under `/api/`, except the webhook
/// receiver. Apply it to the fully merged router so that routes mounted by
/// later stages are covered too. Without a token the router is unchanged
/// (validation only allows that on loopback or when explicitly allowed).
pub fn guard_mutations(router: Router, token: Option<ApiToken>) -> Router {
    match token {
        Some(t) => router.layer(axum::middleware::from_fn_with_state(
            Arc::new(t),
            require_api_token,
        )),
        None => router,
    }
}

async fn require_api_token(
    axum::extract::State(token): axum::extract::State<Arc<ApiToken>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::Method;
    use axum::response::IntoResponse;
    let reads = [Method::GET, Method::HEAD, Method::OPTIONS];
    let path = req.uri().path();
    let guarded =
        !reads.contains(req.method()) && path.starts_with("/api/") && path != WEBHOOK_PATH;
    if guarded {
        let header = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if let Err(e) = token.check(header) {
            tracing::warn!(method = %req.method(), path, "API request refused: missing or wrong API token");
            let mut resp = ApiError::from(e).into_response();
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
            return resp;
        }
    }
    next.run(req).await
}

/// Builds the router. `extra` lets later stages (notify, analyze, UI) mount
/// their own routes on the same state.
pub fn router(state: Arc<AppState>, timeout: std::time::Duration) -> Router {
    Router::new()
        .route(
            WEBHOOK_PATH,
            post(handlers::receive).get(handlers::list_alerts),
        )
        .route("/api/v1/alerts/{fingerprint}", get(handlers::get_alert))
        .route("/api/v1/incidents", get(handlers::list_incidents))
        .route("/api/v1/incidents/{id}", get(handlers::get_incident))
        .route("/api/v1/status", get(handlers::status))
        .route("/", get(handlers::ui))
        .route("/ui", get(handlers::ui))
        .route("/incidents/{id}", get(handlers::incident_page))
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
