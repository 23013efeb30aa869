//! Generic JSON webhook: the incident, the message's status and kind, its
//! idempotency key (also sent as the `Idempotency-Key` header) and links.

use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::notifier::{classify_http, classify_reqwest, Message, Notifier, RateLimit, SendResult};
use crate::config::{
    resolve_in_place, resolve_url_in_place, ConfigErrors, PromDuration, Secret, ValidateCtx,
};

/// One generic webhook.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhookConfig {
    /// Target URL (a secret: it often carries a token).
    pub url: Option<Secret>,
    pub url_file: Option<String>,
    pub url_env: Option<String>,
    /// Sent as `Authorization: Bearer …`.
    pub bearer_token: Option<Secret>,
    pub bearer_token_file: Option<String>,
    pub bearer_token_env: Option<String>,
    /// Send a message when the incident resolves.
    pub send_resolved: bool,
    /// Per-request timeout.
    pub timeout: PromDuration,
    /// At most this many messages per second.
    pub max_per_second: u32,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: None,
            url_file: None,
            url_env: None,
            bearer_token: None,
            bearer_token_file: None,
            bearer_token_env: None,
            send_resolved: true,
            timeout: PromDuration::secs(10),
            max_per_second: 10,
        }
    }
}

impl WebhookConfig {
    pub fn validate(&mut self, path: &str, ctx: &ValidateCtx, errs: &mut ConfigErrors) {
        resolve_url_in_place(
            &format!("{path}.url"),
            &mut self.url,
            &mut self.url_file,
            &mut self.url_env,
            &ctx.base_dir,
            errs,
        );
        resolve_in_place(
            &format!("{path}.bearer_token"),
            &mut self.bearer_token,
            &mut self.bearer_token_file,
            &mut self.bearer_token_env,
            &ctx.base_dir,
            errs,
        );
        if self.timeout.is_zero() {
            errs.push(format!("{path}.timeout"), "must be greater than 0");
        }
        if self.max_per_second == 0 {
            errs.push(format!("{path}.max_per_second"), "must be greater than 0");
        }
    }
}

/// A configured webhook.
pub struct Webhook {
    cfg: WebhookConfig,
    client: reqwest::Client,
}

impl Webhook {
    pub fn new(cfg: WebhookConfig, client: reqwest::Client) -> Self {
        Webhook { cfg, client }
    }
}

/// The JSON body.
pub fn payload(msg: &Message) -> serde_json::Value {
    let mut v = json!({
        "version": "1",
        "key": msg.notification.key,
        "receiver": msg.notification.receiver,
        "status": msg.notification.status,
        "kind": msg.notification.kind,
        "seq": msg.notification.seq,
        "incident": msg.incident,
        "links": msg.links,
    });
    if let Some(d) = &msg.digest {
        v["digest"] = json!(d);
    }
    v
}

impl Notifier for Webhook {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn rate_limit(&self) -> RateLimit {
        RateLimit {
            max: self.cfg.max_per_second,
            window: Duration::from_secs(1),
        }
    }

    fn send_resolved(&self) -> bool {
        self.cfg.send_resolved
    }

    fn send<'a>(&'a self, msgs: &'a [Message]) -> BoxFuture<'a, SendResult> {
        Box::pin(async move {
            let Some(msg) = msgs.first() else {
                return SendResult::Delivered;
            };
            let url = self.cfg.url.as_ref().map(Secret::expose).unwrap_or("");
            let mut req = self
                .client
                .post(url)
                .json(&payload(msg))
                .header("Idempotency-Key", &msg.notification.key)
                .timeout(self.cfg.timeout.as_std());
            if let Some(t) = &self.cfg.bearer_token {
                req = req.bearer_auth(t.expose());
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => return classify_reqwest(e),
            };
            let status = resp.status();
            let ra = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let text = resp.text().await.unwrap_or_default();
            classify_http(status, ra.as_deref(), &text)
        })
    }
}
