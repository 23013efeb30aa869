//! Ingest: the Alertmanager v4 webhook payload, its validation into domain
//! types, and source authentication.
//!
//! Everything here is pure: the HTTP handler in `api` caps the body, calls
//! [`parse_delivery`], writes the journal and hands the [`Delivery`] to the engine.

mod auth;
mod payload;

pub use auth::{
    check_api_token, validate_sources, ApiToken, AuthError, Authenticated, Authenticator,
    BasicAuthConfig, Credential, SourceConfig,
};
pub use payload::{parse_delivery, Delivery, DeliveryAlert, PayloadError, WebhookMessage};

use serde::{Deserialize, Serialize};

use crate::config::ConfigErrors;

/// Limits applied to every delivery, so one bad sender cannot exhaust memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct IngestConfig {
    /// Most alerts accepted in one delivery.
    pub max_alerts_per_delivery: usize,
    /// Most labels on one alert (Prometheus' `label_limit` is unlimited by
    /// default; real alerts carry a few dozen at most).
    pub max_labels_per_alert: usize,
    /// Longest label or annotation value, in bytes.
    pub max_value_bytes: usize,
    /// Labels removed before identity is computed, e.g. `prometheus_replica`
    /// when HA Prometheus pairs send the same alert with different replica labels.
    pub drop_labels: Vec<String>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_alerts_per_delivery: 10_000,
            max_labels_per_alert: 128,
            max_value_bytes: 64 * 1024,
            drop_labels: Vec::new(),
        }
    }
}

impl IngestConfig {
    pub fn validate(&self, path: &str, errs: &mut ConfigErrors) {
        if self.max_alerts_per_delivery == 0 {
            errs.push(
                format!("{path}.max_alerts_per_delivery"),
                "must be at least 1",
            );
        }
        if self.max_labels_per_alert == 0 {
            errs.push(format!("{path}.max_labels_per_alert"), "must be at least 1");
        }
        for (i, l) in self.drop_labels.iter().enumerate() {
            if l == "alertname" || l == "cluster" {
                errs.push(
                    format!("{path}.drop_labels[{i}]"),
                    format!("{l:?} is part of every alert's identity and cannot be dropped"),
                );
            }
        }
    }
}
