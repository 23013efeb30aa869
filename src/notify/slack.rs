//! Slack incoming webhooks: Block Kit sections with a plain-text fallback.
//!
//! About one message per second per webhook; `429` with `Retry-After` and 5xx
//! are retried, other 4xx (`invalid_payload`, `channel_not_found`…) are not.
//! The webhook URL is a secret and never appears in logs or errors.

use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::notifier::{classify_http, post_json, Message, Notifier, RateLimit, SendResult};
use super::render::{self, Escape};
use crate::config::{resolve_url_in_place, ConfigErrors, PromDuration, Secret, ValidateCtx};

/// One Slack incoming webhook.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SlackConfig {
    /// The incoming-webhook URL (a secret: it is the credential).
    pub api_url: Option<Secret>,
    /// File holding the webhook URL.
    pub api_url_file: Option<String>,
    /// Environment variable holding the webhook URL.
    pub api_url_env: Option<String>,
    /// Channel override (ignored by app-scoped webhooks).
    pub channel: Option<String>,
    /// Username override (ignored by app-scoped webhooks).
    pub username: Option<String>,
    /// Send a message when the incident resolves.
    pub send_resolved: bool,
    /// minijinja template for the message body (mrkdwn), replacing the default.
    pub text: Option<String>,
    /// Per-request timeout.
    pub timeout: PromDuration,
}

impl Default for SlackConfig {
    fn default() -> Self {
        SlackConfig {
            api_url: None,
            api_url_file: None,
            api_url_env: None,
            channel: None,
            username: None,
            send_resolved: true,
            text: None,
            timeout: PromDuration::secs(10),
        }
    }
}

impl SlackConfig {
    pub fn validate(&mut self, path: &str, ctx: &ValidateCtx, errs: &mut ConfigErrors) {
        resolve_url_in_place(
            &format!("{path}.api_url"),
            &mut self.api_url,
            &mut self.api_url_file,
            &mut self.api_url_env,
            &ctx.base_dir,
            errs,
        );
        if let Some(t) = &self.text {
            if let Err(e) = render::check_template(t) {
                errs.push(format!("{path}.text"), e);
            }
        }
        if self.timeout.is_zero() {
            errs.push(format!("{path}.timeout"), "must be greater than 0");
        }
    }
}

/// A configured Slack webhook.
pub struct Slack {
    cfg: SlackConfig,
    client: reqwest::Client,
}

impl Slack {
    pub fn new(cfg: SlackConfig, client: reqwest::Client) -> Self {
        Slack { cfg, client }
    }

    /// The JSON body for one message.
    pub fn payload(&self, msg: &Message) -> Result<serde_json::Value, minijinja::Error> {
        payload(&self.cfg, msg)
    }
}

/// Builds the webhook body: header, mrkdwn sections (≤ 3000 chars each), and
/// a plain `text` fallback for notifications and old clients.
pub fn payload(cfg: &SlackConfig, msg: &Message) -> Result<serde_json::Value, minijinja::Error> {
    let body = render::render(
        Escape::Slack,
        render::pick(msg, cfg.text.as_deref(), render::SLACK),
        msg,
    )?;
    let title = render::render(
        Escape::Text,
        render::pick(msg, None, render::EMAIL_SUBJECT),
        msg,
    )?;
    let title: String = title.trim().chars().take(150).collect();
    let mut blocks = vec![json!({"type": "header", "text": {"type": "plain_text", "text": title}})];
    for chunk in chunks(body.trim(), 3000).into_iter().take(45) {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": chunk}}));
    }
    blocks.push(json!({"type": "context", "elements": [
        {"type": "mrkdwn", "text": if msg.digest.is_some() {
            format!("stormcast forecast digest `{}`", msg.incident.id)
        } else {
            format!("stormcast incident `{}`", msg.incident.id)
        }}
    ]}));
    let mut v = json!({
        "text": render::escape(Escape::Slack, &title),
        "blocks": blocks,
    });
    if let Some(c) = &cfg.channel {
        v["channel"] = json!(c);
    }
    if let Some(u) = &cfg.username {
        v["username"] = json!(u);
    }
    Ok(v)
}

/// Splits at line ends into pieces of at most `max` characters.
pub(crate) fn chunks(s: &str, max: usize) -> Vec<String> {
    let mut out = vec![String::new()];
    for line in s.split_inclusive('\n') {
        let cur = out.last_mut().expect("non-empty");
        if cur.chars().count() + line.chars().count() > max && !cur.is_empty() {
            out.push(String::new());
        }
        let cur = out.last_mut().expect("non-empty");
        if line.chars().count() > max {
            cur.push_str(&line.chars().take(max).collect::<String>());
        } else {
            cur.push_str(line);
        }
    }
    out
}

impl Notifier for Slack {
    fn kind(&self) -> &'static str {
        "slack"
    }

    fn rate_limit(&self) -> RateLimit {
        RateLimit {
            max: 1,
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
            let body = match self.payload(msg) {
                Ok(b) => b,
                Err(e) => {
                    return SendResult::Permanent {
                        reason: "template",
                        detail: e.to_string(),
                    }
                }
            };
            let url = self.cfg.api_url.as_ref().map(Secret::expose).unwrap_or("");
            match post_json(&self.client, url, &body, self.cfg.timeout.as_std(), None).await {
                Ok((status, ra, text)) => classify_http(status, ra.as_deref(), &text),
                Err(e) => e,
            }
        })
    }
}
