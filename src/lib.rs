//! stormcast: alert correlation and analysis behind every cluster's Alertmanager.
//!
//! Alerts flow one way: webhooks are validated at the edge, written to a durable
//! journal, applied to fleet-wide alert state, correlated into incidents, and
//! turned into one message per incident. Forecasts re-enter as alerts.
//!
//! # Layout
//! - [`domain`]: plain types (labels, fingerprints, alerts, incidents, entities); no I/O.
//! - [`config`]: YAML loading, validation that collects every error, secrets.
//! - [`ingest`]: the Alertmanager v4 webhook payload, validation and source auth.
//! - [`store`]: sled-backed journal and trees, state snapshot files beside them; schema versioned.
//! - [`engine`]: the clock-driven core that `serve` and `replay` share, and the
//!   dead-man's switch that pages when a cluster's Watchdog heartbeat stops.
//! - [`correlate`]: incidents from alert transitions, with root causes.
//! - [`notify`]: which incident events become messages, and their delivery.
//! - [`analyze`]: metric history, exhaustion forecasts, anomaly scores, peer outliers.
//! - [`api`]: HTTP endpoints (webhook receiver, read API, health, metrics).
//! - [`metrics`]: stormcast's own Prometheus metrics.
//! - [`sim`]: fleet simulator with ground truth, and the correlation quality score.
//! - [`app`]: wiring and lifecycle for `serve` and `replay`.

pub mod analyze;
pub mod api;
pub mod app;
pub mod config;
pub mod correlate;
pub mod domain;
pub mod engine;
pub mod ingest;
pub mod metrics;
pub mod notify;
pub mod sim;
pub mod store;
