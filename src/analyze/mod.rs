//! Analysis: metric history, exhaustion forecasts and anomaly scores. Its
//! predictions re-enter the engine as alerts from [`PREDICTIVE_SOURCE`].

pub mod anomaly;
pub mod eval;
pub mod forecast;
pub mod series;
pub mod stats;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigErrors, ValidateCtx};

pub use forecast::{
    forecast, Forecast, ForecastError, ForecastParams, ForecastPoint, Method, Seasonality,
};
pub use series::{parse_csv, parse_input, parse_prom_response, Series};

/// The source name predictive alerts are delivered under.
pub const PREDICTIVE_SOURCE: &str = "stormcast";

/// Prometheus-compatible metric history (Prometheus, Thanos Query, VictoriaMetrics).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HistoryConfig {}

impl HistoryConfig {
    pub fn validate(&self, _path: &str, _ctx: &ValidateCtx, _errs: &mut ConfigErrors) {}
}
