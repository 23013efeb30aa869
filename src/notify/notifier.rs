//! The one channel interface. A channel only sends and says whether a failure
//! is worth retrying; rate limits, backoff, the circuit breaker and the outbox
//! live in [`super::dispatch`] and [`super::outbox`], written once.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::Notification;
use crate::domain::{Incident, Timestamp};

/// Everything a channel needs to render one message, captured when the
/// message was planned (so a retry after a restart renders the same text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub notification: Notification,
    pub incident: Incident,
    /// Links that belong with it.
    #[serde(default)]
    pub links: Links,
    /// The content of a [`MessageKind::Digest`](super::MessageKind::Digest)
    /// message; `incident` is then a placeholder naming the digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
}

/// A scheduled summary of the forecasting report: the resources predicted to
/// run out soonest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Digest {
    /// Headline, e.g. `stormcast forecast: 3 resources at risk`.
    pub title: String,
    /// When the summarised report was computed.
    pub report_at: Timestamp,
    /// How many resources are at risk in the report (items may be fewer).
    pub at_risk: usize,
    /// The full report (`{server.external_url}/api/v1/report`), when known.
    pub report_url: Option<String>,
    /// Soonest exhaustion first.
    pub items: Vec<DigestItem>,
}

/// One at-risk resource in a digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DigestItem {
    /// The series, e.g. `node_filesystem… {instance="n1"}`.
    pub name: String,
    pub model: Option<String>,
    pub cluster: Option<String>,
    pub exhaustion_at: Timestamp,
    /// Human lead time from the report, e.g. `5h 10m`.
    pub lead: String,
    /// Probability of exhaustion within the horizon, in [0, 1].
    pub confidence: f64,
    pub current: String,
    pub capacity: String,
    /// Current usage over capacity, in percent.
    pub utilisation_pct: f64,
}

impl Digest {
    /// The incident a digest message carries in place of a real one, so the
    /// outbox, keys and threading treat it like any other message.
    pub fn placeholder_incident(id: &str, at: Timestamp) -> Incident {
        use crate::domain::{Entity, EntityKind, Labels, RootCause};
        Incident {
            id: id.to_owned(),
            opened_at: at,
            updated_at: at,
            resolved_at: None,
            root_cause: RootCause {
                fingerprint: None,
                labels: Labels::new(),
                entity: Entity {
                    kind: EntityKind::Resource,
                    name: "forecast report".to_owned(),
                    cluster: None,
                    namespace: None,
                },
                explanation: String::new(),
                score: 0.0,
            },
            candidates: Vec::new(),
            alerts: Vec::new(),
            clusters: Vec::new(),
            severity: String::new(),
            predictive: true,
            storm: false,
        }
    }
}

/// The root alert's annotations every message carries (see
/// [`Links::root_annotations`]).
pub const ROOT_ANNOTATIONS: [&str; 3] = ["summary", "description", "runbook_url"];

/// Where readers can look further.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Links {
    /// The incident's page at `server.external_url`.
    pub incident_url: Option<String>,
    /// Source Alertmanagers' `externalURL`s.
    pub sources: Vec<String>,
    /// `generatorURL` by member fingerprint.
    pub generators: BTreeMap<String, String>,
    /// The root alert's [`ROOT_ANNOTATIONS`] (those it has).
    #[serde(default)]
    pub root_annotations: BTreeMap<String, String>,
}

/// What one send attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendResult {
    Delivered,
    /// Worth trying again, no earlier than `after` when the service said so.
    Retryable {
        after: Option<Duration>,
        reason: &'static str,
        detail: String,
    },
    /// Will fail the same way until someone changes the config or the service.
    Permanent {
        reason: &'static str,
        detail: String,
    },
}

/// A per-channel send rate: at most `max` messages in any `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub max: u32,
    pub window: Duration,
}

/// One configured channel (one entry of a receiver's `*_configs`).
pub trait Notifier: Send + Sync {
    /// The config `type` (`email`, `slack`, `dingtalk`, `webhook`).
    fn kind(&self) -> &'static str;
    /// How fast the service lets us send.
    fn rate_limit(&self) -> RateLimit;
    /// Whether a backlog may be merged into one digest message.
    fn digest(&self) -> bool {
        false
    }
    /// Whether resolved messages go out on this channel.
    fn send_resolved(&self) -> bool;
    /// Sends one message, or (when [`digest`](Self::digest)) several merged.
    fn send<'a>(&'a self, msgs: &'a [Message]) -> BoxFuture<'a, SendResult>;
    /// How many requests `msgs` takes: more than one when the service limits
    /// the body size and the text is split (DingTalk). The dispatcher sends
    /// the parts in order, each counted against [`rate_limit`](Self::rate_limit).
    fn parts(&self, _msgs: &[Message]) -> u32 {
        1
    }
    /// Sends part `part` (from 0) of `msgs`; single-part channels send the whole.
    fn send_part<'a>(&'a self, msgs: &'a [Message], _part: u32) -> BoxFuture<'a, SendResult> {
        self.send(msgs)
    }
}

/// Maps an HTTP answer to a result the way Alertmanager does, plus 429 (with
/// `Retry-After`) and 408 as retryable.
pub fn classify_http(
    status: reqwest::StatusCode,
    retry_after: Option<&str>,
    body: &str,
) -> SendResult {
    let detail = format!("HTTP {}: {}", status.as_u16(), snippet(body));
    if status.is_success() {
        SendResult::Delivered
    } else if status.as_u16() == 429 {
        SendResult::Retryable {
            after: retry_after.and_then(parse_retry_after),
            reason: "rate_limited",
            detail,
        }
    } else if status.is_server_error() || status.as_u16() == 408 {
        SendResult::Retryable {
            after: None,
            reason: "http_5xx",
            detail,
        }
    } else {
        SendResult::Permanent {
            reason: "http_4xx",
            detail,
        }
    }
}

fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A transport failure: retryable, with the URL stripped from the text.
pub fn classify_reqwest(e: reqwest::Error) -> SendResult {
    let reason = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "request"
    };
    SendResult::Retryable {
        after: None,
        reason,
        detail: e.without_url().to_string(),
    }
}

/// The first 200 characters of a response body, on one line.
pub fn snippet(body: &str) -> String {
    let s: String = body.chars().take(200).collect();
    s.replace(['\n', '\r'], " ")
}

/// Posts JSON with a timeout and classifies the answer. The URL never appears
/// in the result.
pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
    timeout: Duration,
    bearer: Option<&str>,
) -> Result<(reqwest::StatusCode, Option<String>, String), SendResult> {
    let mut req = client.post(url).json(body).timeout(timeout);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.map_err(classify_reqwest)?;
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = resp.text().await.map_err(classify_reqwest)?;
    Ok((status, retry_after, text))
}

/// A shared HTTP client for the channels.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("stormcast/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default()
}
