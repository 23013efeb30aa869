//! The forecasting task in `serve`: evaluates every model against the
//! configured history on its interval, applies the predictive alerts through
//! `Engine::apply` (journaled like any delivery), and keeps the latest results
//! for `GET /api/v1/report`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::time::Instant;

use super::alerts::{delivery, webhook_body, PredictiveState};
use super::forecast::Forecast;
use super::history::{HistoryConfig, PromClient};
use super::models::ModelDef;
use super::report::{Report, SeriesResult};
use super::run::{cross_check_most_urgent, evaluate_model};
use super::PREDICTIVE_SOURCE;
use crate::engine::Engine;
use crate::store::{JournalEntry, Store};

/// Tree holding the latest report.
pub const REPORT_TREE: &str = "analyze";
const REPORT_KEY: &[u8] = b"latest_report";
/// History points kept per series for report charts.
const CHART_POINTS: usize = 400;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: String,
}

/// Forecasting metrics.
#[derive(Clone, Debug, Default)]
pub struct AnalyzeMetrics {
    /// `stormcast_forecast_runs_total{model}`
    pub forecast_runs: Family<ModelLabel, Counter>,
    /// `stormcast_forecast_series_total{model}`: series forecast.
    pub forecast_series: Family<ModelLabel, Counter>,
    /// `stormcast_forecast_at_risk{model}`: series predicted to exhaust.
    pub at_risk: Family<ModelLabel, Gauge>,
    /// `stormcast_forecast_peer_outliers{model}`: series unlike their peers
    /// (models with `peers: true`).
    pub peer_outliers: Family<ModelLabel, Gauge>,
    /// `stormcast_history_query_failures_total{endpoint}`
    pub history_query_failures: Family<EndpointLabel, Counter>,
    /// `stormcast_forecast_cross_checks_total{model}`: at-risk series given
    /// the MSTL cross-check.
    pub cross_checks: Family<ModelLabel, Counter>,
    /// `stormcast_forecast_cross_checks_skipped_total{model}`: at-risk
    /// series left without it by `history.max_cross_checks`.
    pub cross_checks_skipped: Family<ModelLabel, Counter>,
}

impl AnalyzeMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = AnalyzeMetrics::default();
        let r = registry.sub_registry_with_prefix("stormcast");
        r.register(
            "forecast_runs",
            "Model evaluations completed",
            m.forecast_runs.clone(),
        );
        r.register(
            "forecast_series",
            "Series forecast",
            m.forecast_series.clone(),
        );
        r.register(
            "forecast_at_risk",
            "Series predicted to reach capacity within their horizon",
            m.at_risk.clone(),
        );
        r.register(
            "forecast_peer_outliers",
            "Series unlike the other series of their model in their cluster",
            m.peer_outliers.clone(),
        );
        r.register(
            "history_query_failures",
            "Metric history queries that failed after retries",
            m.history_query_failures.clone(),
        );
        r.register(
            "forecast_cross_checks",
            "At-risk series given the MSTL+AutoETS cross-check",
            m.cross_checks.clone(),
        );
        r.register(
            "forecast_cross_checks_skipped",
            "At-risk series left without the MSTL cross-check by history.max_cross_checks",
            m.cross_checks_skipped.clone(),
        );
        m
    }
}

/// The latest report, as stored by the forecasting task.
pub fn latest_report(store: &Store) -> Option<Report> {
    let tree = store.tree(REPORT_TREE).ok()?;
    let bytes = tree.get(REPORT_KEY).ok()??;
    serde_json::from_slice::<StoredReport>(&bytes)
        .ok()
        .map(StoredReport::into_report)
}

/// A report with chart history kept (the JSON form drops it).
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredReport {
    generated_at: chrono::DateTime<chrono::Utc>,
    series: Vec<(SeriesResult, Vec<(i64, f64)>)>,
}

impl StoredReport {
    fn into_report(self) -> Report {
        Report {
            generated_at: self.generated_at,
            series: self
                .series
                .into_iter()
                .map(|(mut s, h)| {
                    s.history = h;
                    s
                })
                .collect(),
        }
    }
}

pub fn store_report(store: &Store, report: &Report) {
    // Only at-risk series keep their chart history.
    let stored = StoredReport {
        generated_at: report.generated_at,
        series: report
            .series
            .iter()
            .map(|s| {
                let h = if s.at_risk() {
                    s.history.clone()
                } else {
                    Vec::new()
                };
                (s.clone(), h)
            })
            .collect(),
    };
    let res = serde_json::to_vec(&stored)
        .map_err(|e| e.to_string())
        .and_then(|b| {
            store
                .tree(REPORT_TREE)
                .map_err(|e| e.to_string())?
                .insert(REPORT_KEY, b)
                .map_err(|e| e.to_string())
        });
    if let Err(e) = res {
        tracing::error!(error = %e, "Cannot store the forecast report");
    }
}

/// Runs until `stop` changes. Returns at once (quietly) when no history
/// endpoint or no model is configured.
pub async fn run(
    engine: Arc<Mutex<Engine>>,
    store: Store,
    models: Vec<ModelDef>,
    cfg: HistoryConfig,
    metrics: AnalyzeMetrics,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let models: Vec<ModelDef> = models.into_iter().filter(|m| m.enabled).collect();
    if !cfg.is_enabled() || models.is_empty() {
        tracing::debug!("No metric history or no models configured: forecasting is off");
        return;
    }
    let clients: Vec<PromClient> = cfg
        .endpoints
        .iter()
        .filter_map(|e| match PromClient::new(e, &cfg) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(error = %e, "Cannot create a history client");
                None
            }
        })
        .collect();
    tracing::info!(
        models = models.len(),
        endpoints = clients.len(),
        "Forecasting enabled"
    );
    let mut due: Vec<Instant> = vec![Instant::now(); models.len()];
    let mut state = PredictiveState::default();
    for a in engine.lock().expect("engine lock").alerts() {
        state.restore(a);
    }
    let mut latest: BTreeMap<(usize, usize), Vec<SeriesResult>> = BTreeMap::new();
    loop {
        let next = due.iter().min().copied().unwrap_or_else(Instant::now);
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep_until(next) => {}
        }
        let t = Instant::now();
        let mut evaluated = Vec::new();
        // Usage samples of this run's at-risk series.
        let mut pending: Vec<(SeriesAt, Samples)> = Vec::new();
        for (mi, model) in models.iter().enumerate() {
            if due[mi] > t {
                continue;
            }
            due[mi] = t + model.interval.as_std().max(Duration::from_secs(30));
            evaluated.push(mi);
            for (ci, client) in clients.iter().enumerate() {
                let now = engine.lock().expect("engine lock").now();
                match evaluate_model(client, model, &cfg, now.timestamp(), CHART_POINTS).await {
                    Ok(ev) => {
                        let label = ModelLabel {
                            model: model.name.clone(),
                        };
                        metrics.forecast_runs.get_or_create(&label).inc();
                        metrics
                            .forecast_series
                            .get_or_create(&label)
                            .inc_by(ev.results.len() as u64);
                        pending.extend(ev.pending.into_iter().map(|(i, p)| ((mi, ci, i), p)));
                        latest.insert((mi, ci), ev.results);
                    }
                    Err(e) => {
                        metrics
                            .history_query_failures
                            .get_or_create(&EndpointLabel {
                                endpoint: client.cluster.clone().unwrap_or_else(|| "global".into()),
                            })
                            .inc();
                        tracing::warn!(model = %model.name, error = %e, "History query failed; keeping the previous predictions");
                        continue;
                    }
                }
            }
        }
        cross_check_run(
            &mut latest,
            pending,
            &models,
            cfg.max_cross_checks,
            &metrics,
        )
        .await;
        for &mi in &evaluated {
            let model = &models[mi];
            let all: Vec<SeriesResult> = latest
                .iter()
                .filter(|((m, _), _)| *m == mi)
                .flat_map(|(_, r)| r.iter().cloned())
                .collect();
            metrics
                .at_risk
                .get_or_create(&ModelLabel {
                    model: model.name.clone(),
                })
                .set(all.iter().filter(|r| r.at_risk()).count() as i64);
            if model.peers {
                metrics
                    .peer_outliers
                    .get_or_create(&ModelLabel {
                        model: model.name.clone(),
                    })
                    .set(all.iter().filter(|r| r.peer_outlier.is_some()).count() as i64);
            }
            let now = engine.lock().expect("engine lock").now();
            let alerts = state.update(model, &all, now);
            if alerts.is_empty() {
                continue;
            }
            apply_alerts(&engine, &store, &model.name, &alerts, now).await;
        }
        let report = Report::new(
            engine.lock().expect("engine lock").now(),
            latest.values().flatten().cloned().collect(),
        );
        let store2 = store.clone();
        let _ = tokio::task::spawn_blocking(move || store_report(&store2, &report)).await;
    }
}

/// Where a series' result is kept: (model, endpoint, index in the results).
type SeriesAt = (usize, usize, usize);
type Samples = Vec<(i64, f64)>;

/// The MSTL cross-check for one run: the `limit` (0: all) at-risk series
/// of every model evaluated that exhaust soonest get it, the others keep
/// their envelope forecast marked skipped. Counted per model and logged.
async fn cross_check_run(
    latest: &mut BTreeMap<(usize, usize), Vec<SeriesResult>>,
    pending: Vec<(SeriesAt, Samples)>,
    models: &[ModelDef],
    limit: usize,
    metrics: &AnalyzeMetrics,
) {
    let jobs: Vec<(SeriesAt, Samples, Forecast)> = pending
        .into_iter()
        .filter_map(|(at, points)| {
            let f = latest.get(&(at.0, at.1))?.get(at.2)?.forecast.clone()?;
            Some((at, points, f))
        })
        .collect();
    if jobs.is_empty() {
        return;
    }
    let (jobs, summary) = match tokio::task::spawn_blocking(move || {
        let mut jobs = jobs;
        let summary = cross_check_most_urgent(
            jobs.iter_mut().map(|(_, p, f)| (p.as_slice(), f)).collect(),
            limit,
        );
        (jobs, summary)
    })
    .await
    {
        Ok(r) => r,
        Err(e) => {
            // The report keeps the envelope forecasts.
            tracing::error!(error = %e, "MSTL cross-check task failed");
            return;
        }
    };
    for ((mi, ci, i), _, f) in jobs {
        let label = ModelLabel {
            model: models[mi].name.clone(),
        };
        if f.cross_check_skipped {
            metrics.cross_checks_skipped.get_or_create(&label).inc();
        } else {
            metrics.cross_checks.get_or_create(&label).inc();
        }
        if let Some(r) = latest.get_mut(&(mi, ci)).and_then(|r| r.get_mut(i)) {
            r.forecast = Some(f);
        }
    }
    if summary.skipped > 0 {
        tracing::info!(
            at_risk = summary.wanted,
            checked = summary.checked,
            skipped = summary.skipped,
            limit = summary.limit,
            "MSTL cross-check limit reached: the soonest exhaustions were cross-checked, the others keep the envelope forecast (history.max_cross_checks)"
        );
    } else {
        tracing::debug!(checked = summary.checked, "MSTL cross-check done");
    }
}

/// Journals and applies one batch of predictive alerts, as the webhook
/// handler does for received ones.
pub async fn apply_alerts(
    engine: &Arc<Mutex<Engine>>,
    store: &Store,
    model: &str,
    alerts: &[serde_json::Value],
    now: chrono::DateTime<chrono::Utc>,
) {
    // Keep each delivery under the default per-delivery alert limit.
    for chunk in alerts.chunks(1000) {
        let body = webhook_body(model, chunk);
        let d = match delivery(&body, now) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(model, error = %e, "Predictive alerts failed validation");
                continue;
            }
        };
        let entry = JournalEntry {
            received_at: now,
            source: PREDICTIVE_SOURCE.to_owned(),
            body,
        };
        let seq = match store.append_journal(&entry).await {
            Ok((seq, _)) => Some(seq),
            Err(e) => {
                tracing::error!(error = %e, "Cannot journal predictive alerts; applying anyway");
                None
            }
        };
        engine.lock().expect("engine lock").apply(&d);
        if let Some(seq) = seq {
            store.mark_applied(seq);
        }
    }
}

/// Query of `GET /api/v1/report`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ReportQuery {
    /// `html` (default), `md` or `json`.
    pub format: Option<String>,
}

/// `GET /api/v1/report[?format=md|json]`: the latest forecast report.
pub async fn report_handler(
    axum::extract::State(st): axum::extract::State<Arc<crate::api::AppState>>,
    axum::extract::Query(q): axum::extract::Query<ReportQuery>,
) -> Result<axum::response::Response, crate::api::ApiError> {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    let format = q.format.as_deref().unwrap_or("html");
    if !matches!(format, "html" | "md" | "json") {
        return Err(crate::api::ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_format",
            format!("format {format:?} is not one of html, md, json"),
        ));
    }
    let store = st.store.clone();
    let report = tokio::task::spawn_blocking(move || latest_report(&store))
        .await
        .ok()
        .flatten()
        .ok_or_else(|| {
            crate::api::ApiError::new(
                StatusCode::NOT_FOUND,
                "no_report",
                "no forecast has run yet: configure history.endpoints and models",
            )
        })?;
    let (ctype, body) = match format {
        "md" => ("text/markdown; charset=utf-8", report.to_markdown()),
        "json" => ("application/json", report.to_json()),
        _ => ("text/html; charset=utf-8", report.to_html()),
    };
    Ok(([(header::CONTENT_TYPE, ctype)], body).into_response())
}
