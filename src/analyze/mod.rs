//! Analysis: metric history, exhaustion forecasts and anomaly scores. Its
//! predictions re-enter the engine as alerts from [`PREDICTIVE_SOURCE`].

use serde::{Deserialize, Serialize};

use crate::config::{ConfigErrors, ValidateCtx};

/// The source name predictive alerts are delivered under.
pub const PREDICTIVE_SOURCE: &str = "stormcast";

/// Prometheus-compatible metric history (Prometheus, Thanos Query, VictoriaMetrics).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HistoryConfig {}

impl HistoryConfig {
    pub fn validate(&self, _path: &str, _ctx: &ValidateCtx, _errs: &mut ConfigErrors) {}
}
