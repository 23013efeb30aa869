//! Live metric history from a Prometheus-compatible HTTP API (Prometheus,
//! Thanos Query, VictoriaMetrics): `/api/v1/query_range` and `/api/v1/query`,
//! Bearer or Basic auth, timeouts, step selection, long ranges split into
//! chunks under the server's points-per-series limit, and retries with backoff
//! on transport errors, 5xx and 429.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::series::{parse_prom_response, Series};
use crate::config::{ConfigErrors, PromDuration, Secret, SecretRef, ValidateCtx};
use crate::ingest::BasicAuthConfig;

/// Prometheus-compatible metric history. With no endpoints, forecasting in
/// `serve` is off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HistoryConfig {
    /// One global endpoint (series carry a `cluster` label) or one per cluster.
    pub endpoints: Vec<HistoryEndpoint>,
    /// Per-request timeout.
    pub timeout: PromDuration,
    /// How much history a forecast reads.
    pub lookback: PromDuration,
    /// Query resolution; by default `lookback / 2016` (5m over 7 days), at least 15s.
    pub step: Option<PromDuration>,
    /// Most points per series in one `query_range` request; longer ranges are
    /// split. Prometheus refuses more than 11,000.
    pub max_points_per_request: usize,
    /// Retries after a transport error, 5xx or 429.
    pub retries: u32,
    /// Label carrying the cluster name on a global endpoint.
    pub cluster_label: String,
    /// Most series given the MSTL+AutoETS cross-check per forecasting run
    /// (every model due, on every endpoint), the soonest to exhaust first;
    /// the other at-risk series keep their envelope forecast and say the
    /// cross-check was skipped. 0: no limit.
    pub max_cross_checks: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            endpoints: Vec::new(),
            timeout: PromDuration::secs(30),
            lookback: PromDuration::hours(7 * 24),
            step: None,
            max_points_per_request: 11_000,
            retries: 2,
            cluster_label: "cluster".into(),
            max_cross_checks: super::forecast::DEFAULT_MAX_CROSS_CHECKS,
        }
    }
}

/// One Prometheus-compatible API.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HistoryEndpoint {
    /// Base URL, e.g. `http://prometheus:9090` or `http://thanos-query:10902`.
    pub url: String,
    /// The cluster this endpoint serves; unset for a global endpoint whose
    /// series carry the cluster label.
    pub cluster: Option<String>,
    pub bearer_token: Option<Secret>,
    pub bearer_token_file: Option<String>,
    pub bearer_token_env: Option<String>,
    pub basic_auth: Option<BasicAuthConfig>,
    /// The resolved `Authorization` header value.
    #[serde(skip)]
    pub authorization: Option<Secret>,
}

impl HistoryConfig {
    pub fn is_enabled(&self) -> bool {
        !self.endpoints.is_empty()
    }

    /// The step used for a lookback: the configured one, or lookback/2016.
    pub fn step_for(&self, lookback: Duration) -> Duration {
        self.step
            .map(|s| s.as_std())
            .unwrap_or_else(|| Duration::from_secs((lookback.as_secs() / 2016).max(15)))
    }

    /// Validates and resolves credentials in place.
    pub fn validate(&mut self, path: &str, ctx: &ValidateCtx, errs: &mut ConfigErrors) {
        if self.timeout.is_zero() {
            errs.push(format!("{path}.timeout"), "must be greater than 0");
        }
        if self.lookback.as_std() < Duration::from_secs(3600) {
            errs.push(format!("{path}.lookback"), "must be at least 1h");
        }
        if let Some(s) = self.step {
            if s.as_std() < Duration::from_secs(1) {
                errs.push(format!("{path}.step"), "must be at least 1s");
            }
        }
        if self.max_points_per_request < 2 {
            errs.push(
                format!("{path}.max_points_per_request"),
                "must be at least 2",
            );
        }
        if self.retries > 10 {
            errs.push(format!("{path}.retries"), "at most 10");
        }
        let mut clusters = std::collections::BTreeSet::new();
        for (i, e) in self.endpoints.iter_mut().enumerate() {
            let p = format!("{path}.endpoints[{i}]");
            match reqwest::Url::parse(&e.url) {
                Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                _ => errs.push(
                    format!("{p}.url"),
                    format!("{:?} is not an http(s) URL", e.url),
                ),
            }
            if !clusters.insert(e.cluster.clone()) {
                errs.push(
                    format!("{p}.cluster"),
                    match &e.cluster {
                        Some(c) => format!("cluster {c:?} has two endpoints"),
                        None => "only one global endpoint (without cluster) is allowed".into(),
                    },
                );
            }
            let bearer = SecretRef {
                inline: e.bearer_token.as_ref(),
                file: e.bearer_token_file.as_deref(),
                env: e.bearer_token_env.as_deref(),
            };
            e.authorization = match (&e.basic_auth, bearer.is_set()) {
                (Some(_), true) => {
                    errs.push(&p, "give either bearer_token or basic_auth, not both");
                    None
                }
                (None, true) => bearer
                    .resolve(&format!("{p}.bearer_token"), &ctx.base_dir, errs)
                    .map(|t| Secret::new(format!("Bearer {}", t.expose()))),
                (Some(b), false) => {
                    if b.username.is_empty() {
                        errs.push(format!("{p}.basic_auth.username"), "required");
                    }
                    let pw = SecretRef {
                        inline: b.password.as_ref(),
                        file: b.password_file.as_deref(),
                        env: b.password_env.as_deref(),
                    };
                    pw.resolve(&format!("{p}.basic_auth.password"), &ctx.base_dir, errs)
                        .map(|pw| basic_header(&b.username, pw.expose()))
                }
                (None, false) => None,
            };
        }
    }
}

fn basic_header(user: &str, password: &str) -> Secret {
    let enc = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    Secret::new(format!("Basic {enc}"))
}

/// A failed history query.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{url}: unreachable after {attempts} attempts: {error}")]
    Unreachable {
        url: String,
        attempts: u32,
        error: String,
    },
    #[error("{url}: HTTP {status}: {body}")]
    Http {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: {error}")]
    Response { url: String, error: String },
}

/// A client for one endpoint.
#[derive(Clone)]
pub struct PromClient {
    http: reqwest::Client,
    base: String,
    authorization: Option<Secret>,
    retries: u32,
    max_points: usize,
    pub cluster: Option<String>,
}

impl std::fmt::Debug for PromClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromClient")
            .field("base", &self.base)
            .field("cluster", &self.cluster)
            .finish()
    }
}

impl PromClient {
    pub fn new(endpoint: &HistoryEndpoint, cfg: &HistoryConfig) -> Result<Self, HistoryError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout.as_std())
            .connect_timeout(cfg.timeout.as_std().min(Duration::from_secs(10)))
            .user_agent(concat!("stormcast/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HistoryError::Response {
                url: endpoint.url.clone(),
                error: e.to_string(),
            })?;
        Ok(PromClient {
            http,
            base: endpoint.url.trim_end_matches('/').to_owned(),
            authorization: endpoint.authorization.clone(),
            retries: cfg.retries,
            max_points: cfg.max_points_per_request.max(2),
            cluster: endpoint.cluster.clone(),
        })
    }

    /// A client for a bare URL (the CLI's `--prometheus`).
    pub fn for_url(url: &str, authorization: Option<Secret>) -> Result<Self, HistoryError> {
        let cfg = HistoryConfig::default();
        let ep = HistoryEndpoint {
            url: url.to_owned(),
            authorization,
            ..Default::default()
        };
        Self::new(&ep, &cfg)
    }

    async fn get(
        &self,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<Vec<Series>, HistoryError> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self.http.get(&url).query(params);
            if let Some(a) = &self.authorization {
                req = req.header(reqwest::header::AUTHORIZATION, a.expose());
            }
            let retryable = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.bytes().await.map_err(|e| HistoryError::Response {
                        url: url.clone(),
                        error: e.to_string(),
                    })?;
                    if status.is_success() || status.as_u16() == 422 || status.as_u16() == 400 {
                        // Prometheus reports bad queries as 400/422 with an
                        // error body; the parser turns it into a message.
                        return parse_prom_response(&body).map_err(|e| HistoryError::Response {
                            url: url.clone(),
                            error: e.to_string(),
                        });
                    }
                    let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
                    let err = HistoryError::Http {
                        url: url.clone(),
                        status: status.as_u16(),
                        body: text,
                    };
                    if !(status.is_server_error() || status.as_u16() == 429) {
                        return Err(err);
                    }
                    err
                }
                Err(e) => HistoryError::Unreachable {
                    url: url.clone(),
                    attempts: attempt,
                    error: e.to_string(),
                },
            };
            if attempt > self.retries {
                return Err(match retryable {
                    HistoryError::Unreachable { url, error, .. } => HistoryError::Unreachable {
                        url,
                        attempts: attempt,
                        error,
                    },
                    other => other,
                });
            }
            tokio::time::sleep(Duration::from_millis(200 * (1 << attempt.min(6)))).await;
        }
    }

    /// An instant query.
    pub async fn query(&self, promql: &str, at: i64) -> Result<Vec<Series>, HistoryError> {
        self.get(
            "/api/v1/query",
            &[("query", promql.to_owned()), ("time", at.to_string())],
        )
        .await
    }

    /// A range query over `[start, end]` at `step` seconds, split into requests
    /// of at most `max_points_per_request` points; series are merged by labels.
    pub async fn query_range(
        &self,
        promql: &str,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<Vec<Series>, HistoryError> {
        let step = step.max(1);
        let chunk = step * (self.max_points as i64 - 1);
        let mut merged: BTreeMap<BTreeMap<String, String>, Vec<(i64, f64)>> = BTreeMap::new();
        let mut from = start;
        while from <= end {
            let to = (from + chunk).min(end);
            let part = self
                .get(
                    "/api/v1/query_range",
                    &[
                        ("query", promql.to_owned()),
                        ("start", from.to_string()),
                        ("end", to.to_string()),
                        ("step", step.to_string()),
                    ],
                )
                .await?;
            for s in part {
                merged.entry(s.labels).or_default().extend(s.points);
            }
            from = to + step;
        }
        Ok(merged
            .into_iter()
            .map(|(labels, mut points)| {
                points.sort_by_key(|p| p.0);
                points.dedup_by_key(|p| p.0);
                Series::new(labels, points)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use axum::extract::{Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;

    #[derive(Default)]
    struct Seen {
        calls: AtomicUsize,
        fail_first: AtomicUsize,
    }

    async fn range(
        State(seen): State<Arc<Seen>>,
        headers: HeaderMap,
        Query(q): Query<BTreeMap<String, String>>,
    ) -> (StatusCode, String) {
        seen.calls.fetch_add(1, Ordering::SeqCst);
        if seen.fail_first.load(Ordering::SeqCst) > 0 {
            seen.fail_first.fetch_sub(1, Ordering::SeqCst);
            return (StatusCode::SERVICE_UNAVAILABLE, "busy".into());
        }
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer tok") {
            return (StatusCode::UNAUTHORIZED, "no".into());
        }
        if q["query"] == "bad(" {
            return (
                StatusCode::BAD_REQUEST,
                r#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#
                    .into(),
            );
        }
        let (s, e, st): (i64, i64, i64) = (
            q["start"].parse().unwrap(),
            q["end"].parse().unwrap(),
            q["step"].parse().unwrap(),
        );
        let vals: Vec<String> = (0..)
            .map(|k| s + k * st)
            .take_while(|t| *t <= e)
            .map(|t| format!("[{t},\"{}\"]", t % 1000))
            .collect();
        (
            StatusCode::OK,
            format!(
                r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{{"node":"a"}},"values":[{}]}}]}}}}"#,
                vals.join(",")
            ),
        )
    }

    async fn serve(seen: Arc<Seen>) -> String {
        let app = axum::Router::new()
            .route("/api/v1/query_range", get(range))
            .with_state(seen);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn splits_long_ranges_retries_and_authenticates() {
        let seen = Arc::new(Seen::default());
        seen.fail_first.store(1, Ordering::SeqCst);
        let url = serve(seen.clone()).await;
        let cfg = HistoryConfig {
            max_points_per_request: 100,
            retries: 2,
            ..Default::default()
        };
        let ep = HistoryEndpoint {
            url: url.clone(),
            authorization: Some(Secret::new("Bearer tok")),
            ..Default::default()
        };
        let c = PromClient::new(&ep, &cfg).unwrap();
        let s = c.query_range("up", 0, 60 * 250, 60).await.unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].points.len(), 251);
        assert!(s[0].points.windows(2).all(|w| w[1].0 - w[0].0 == 60));
        // 3 chunks plus one retried 503.
        assert_eq!(seen.calls.load(Ordering::SeqCst), 4);

        let err = c.query_range("bad(", 0, 600, 60).await.unwrap_err();
        assert!(err.to_string().contains("parse error"), "{err}");

        let anon = PromClient::new(
            &HistoryEndpoint {
                url,
                ..Default::default()
            },
            &cfg,
        )
        .unwrap();
        let err = anon.query_range("up", 0, 600, 60).await.unwrap_err();
        assert!(
            matches!(err, HistoryError::Http { status: 401, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn unreachable_is_an_error_not_a_hang() {
        let cfg = HistoryConfig {
            retries: 1,
            timeout: PromDuration::secs(2),
            ..Default::default()
        };
        // A port nothing listens on.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let ep = HistoryEndpoint {
            url: format!("http://127.0.0.1:{port}"),
            ..Default::default()
        };
        let err = PromClient::new(&ep, &cfg)
            .unwrap()
            .query("up", 0)
            .await
            .unwrap_err();
        assert!(
            matches!(err, HistoryError::Unreachable { attempts: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn config_validation_reports_paths() {
        let mut cfg: HistoryConfig = crate::config::parse_yaml(
            "endpoints:\n  - url: ftp://x\n    bearer_token: a\n    basic_auth: {username: u, password: p}\n  - url: http://ok:9090\n    basic_auth: {password: p}\n",
        )
        .unwrap();
        let mut errs = ConfigErrors::default();
        let ctx = ValidateCtx {
            base_dir: std::env::temp_dir(),
        };
        cfg.validate("history", &ctx, &mut errs);
        let text = errs.to_string();
        assert!(text.contains("history.endpoints[0].url"), "{text}");
        assert!(text.contains("history.endpoints[0]: give either"), "{text}");
        assert!(text.contains("history.endpoints[1].cluster"), "{text}");
        assert!(
            text.contains("history.endpoints[1].basic_auth.username"),
            "{text}"
        );
        let mut ok: HistoryConfig =
            crate::config::parse_yaml("endpoints:\n  - url: http://p:9090\n    bearer_token: t\n")
                .unwrap();
        let mut errs = ConfigErrors::default();
        ok.validate("history", &ctx, &mut errs);
        assert!(errs.is_empty(), "{errs}");
        assert_eq!(
            ok.endpoints[0].authorization.as_ref().unwrap().expose(),
            "Bearer t"
        );
        assert_eq!(
            ok.step_for(Duration::from_secs(7 * 86_400)),
            Duration::from_secs(300)
        );
    }
}
