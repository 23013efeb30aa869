//! Analysis: metric history, exhaustion forecasts, anomaly scores and peer
//! outliers. Its predictions re-enter the engine as alerts from
//! [`PREDICTIVE_SOURCE`].

pub mod alerts;
pub mod anomaly;
pub mod baseline;
pub mod cli;
pub mod digest;
pub mod eval;
pub mod forecast;
pub mod history;
pub mod models;
pub mod report;
pub mod run;
pub mod segment;
pub mod series;
pub mod service;
pub mod stats;

pub use forecast::{
    forecast, CrossCheck, Forecast, ForecastError, ForecastParams, ForecastPoint, Method,
    Seasonality,
};
pub use history::{HistoryConfig, HistoryEndpoint, HistoryError, PromClient};
pub use series::{parse_csv, parse_input, parse_prom_response, Series};

/// The source name predictive alerts are delivered under.
pub const PREDICTIVE_SOURCE: &str = "stormcast";
