//! DingTalk custom robots: signed markdown messages with @-mentions.
//!
//! A robot accepts at most 20 messages a minute (more throttles it for ten
//! minutes), so the dispatcher queues, and merges a backlog into one digest
//! ([`Notifier::digest`]). Bodies of 20000 bytes or more are truncated with a
//! link to the incident page. Errcode 130101 (too fast) is retried after a
//! minute; errcode 310000 (signature, keyword or timestamp) is a configuration
//! error naming the robot. Errors arrive as HTTP 200 with `{errcode, errmsg}`.

use std::time::Duration;

use base64::Engine as _;
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;

use super::notifier::{classify_http, post_json, Message, Notifier, RateLimit, SendResult};
use super::render::{self, Escape};
use crate::config::{
    resolve_in_place, resolve_url_in_place, ConfigErrors, PromDuration, Secret, ValidateCtx,
};

/// DingTalk rejects bodies of this many bytes or more.
pub const MAX_BODY_BYTES: usize = 20_000;

/// One DingTalk custom robot.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DingtalkConfig {
    /// The robot's webhook URL with its `access_token` (a secret).
    pub url: Option<Secret>,
    pub url_file: Option<String>,
    pub url_env: Option<String>,
    /// The robot's signing secret (`SEC…`), when signing is enabled.
    pub secret: Option<Secret>,
    pub secret_file: Option<String>,
    pub secret_env: Option<String>,
    /// Mobile numbers to @-mention (also written into the text, as DingTalk requires).
    pub at_mobiles: Vec<String>,
    /// Mention everyone in the group.
    pub at_all: bool,
    /// Send a message when the incident resolves.
    pub send_resolved: bool,
    /// minijinja template for the markdown text, replacing the default.
    pub text: Option<String>,
    /// Per-request timeout.
    pub timeout: PromDuration,
    /// Messages per minute (DingTalk allows 20).
    pub max_per_minute: u32,
}

impl Default for DingtalkConfig {
    fn default() -> Self {
        DingtalkConfig {
            url: None,
            url_file: None,
            url_env: None,
            secret: None,
            secret_file: None,
            secret_env: None,
            at_mobiles: Vec::new(),
            at_all: false,
            send_resolved: true,
            text: None,
            timeout: PromDuration::secs(10),
            max_per_minute: 20,
        }
    }
}

impl DingtalkConfig {
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
            &format!("{path}.secret"),
            &mut self.secret,
            &mut self.secret_file,
            &mut self.secret_env,
            &ctx.base_dir,
            errs,
        );
        for (i, m) in self.at_mobiles.iter().enumerate() {
            if m.is_empty()
                || !m
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '+' || c == '-')
            {
                errs.push(
                    format!("{path}.at_mobiles[{i}]"),
                    format!("{m:?} is not a mobile number"),
                );
            }
        }
        if let Some(t) = &self.text {
            if let Err(e) = render::check_template(t) {
                errs.push(format!("{path}.text"), e);
            }
        }
        if self.max_per_minute == 0 || self.max_per_minute > 20 {
            errs.push(
                format!("{path}.max_per_minute"),
                "must be between 1 and 20 (DingTalk throttles a robot for 10 minutes above 20)",
            );
        }
        if self.timeout.is_zero() {
            errs.push(format!("{path}.timeout"), "must be greater than 0");
        }
    }
}

/// `urlencode(base64(HMAC-SHA256(secret, "{timestamp_ms}\n{secret}")))`.
pub fn sign(secret: &str, timestamp_ms: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{timestamp_ms}\n{secret}").as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    percent_encoding::utf8_percent_encode(&b64, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A configured robot. `name` identifies it in errors (`receiver/dingtalk[0]`).
pub struct Dingtalk {
    name: String,
    cfg: DingtalkConfig,
    client: reqwest::Client,
}

impl Dingtalk {
    pub fn new(name: String, cfg: DingtalkConfig, client: reqwest::Client) -> Self {
        Dingtalk { name, cfg, client }
    }
}

/// Builds the markdown body for one message or a digest of several.
pub fn payload(
    cfg: &DingtalkConfig,
    msgs: &[Message],
) -> Result<serde_json::Value, minijinja::Error> {
    let mut parts = Vec::new();
    for m in msgs {
        let tpl = render::pick(m, cfg.text.as_deref(), render::DINGTALK);
        parts.push(render::render(Escape::Dingtalk, tpl, m)?.trim().to_owned());
    }
    let title = if msgs.len() == 1 {
        render::render(
            Escape::Text,
            render::pick(&msgs[0], None, render::EMAIL_SUBJECT),
            &msgs[0],
        )?
        .trim()
        .to_owned()
    } else {
        format!("stormcast digest: {} incident messages", msgs.len())
    };
    let mut text = if msgs.len() == 1 {
        parts.remove(0)
    } else {
        format!(
            "### stormcast digest: {} messages\n\n{}",
            msgs.len(),
            parts.join("\n\n---\n\n")
        )
    };
    let mentions: String = cfg.at_mobiles.iter().map(|m| format!(" @{m}")).collect();
    // Leave room for the JSON envelope, escaping and the mentions.
    let budget = MAX_BODY_BYTES - 2_000 - mentions.len() - title.len();
    if serde_json::to_string(&text).map_or(0, |s| s.len()) >= budget {
        let link = msgs
            .iter()
            .find_map(|m| m.links.incident_url.clone())
            .unwrap_or_default();
        let note = if link.is_empty() {
            "\n\n… (truncated)".to_owned()
        } else {
            format!("\n\n… (truncated; full incident: [{link}]({link}))")
        };
        while serde_json::to_string(&text).map_or(0, |s| s.len()) + note.len() * 2 >= budget {
            let cut = text.len() * 9 / 10;
            let mut cut = cut.min(text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        text.push_str(&note);
    }
    if !mentions.is_empty() {
        text.push_str("\n\n");
        text.push_str(mentions.trim_start());
    }
    Ok(json!({
        "msgtype": "markdown",
        "markdown": {"title": title, "text": text},
        "at": {"atMobiles": cfg.at_mobiles, "isAtAll": cfg.at_all},
    }))
}

impl Notifier for Dingtalk {
    fn kind(&self) -> &'static str {
        "dingtalk"
    }

    fn rate_limit(&self) -> RateLimit {
        RateLimit {
            max: self.cfg.max_per_minute,
            window: Duration::from_secs(60),
        }
    }

    fn digest(&self) -> bool {
        true
    }

    fn send_resolved(&self) -> bool {
        self.cfg.send_resolved
    }

    fn send<'a>(&'a self, msgs: &'a [Message]) -> BoxFuture<'a, SendResult> {
        Box::pin(async move {
            if msgs.is_empty() {
                return SendResult::Delivered;
            }
            let body = match payload(&self.cfg, msgs) {
                Ok(b) => b,
                Err(e) => {
                    return SendResult::Permanent {
                        reason: "template",
                        detail: e.to_string(),
                    }
                }
            };
            let mut url = self
                .cfg
                .url
                .as_ref()
                .map(Secret::expose)
                .unwrap_or("")
                .to_owned();
            if let Some(secret) = &self.cfg.secret {
                let ts = chrono::Utc::now().timestamp_millis();
                let sep = if url.contains('?') { '&' } else { '?' };
                url = format!(
                    "{url}{sep}timestamp={ts}&sign={}",
                    sign(secret.expose(), ts)
                );
            }
            let (status, ra, text) =
                match post_json(&self.client, &url, &body, self.cfg.timeout.as_std(), None).await {
                    Ok(r) => r,
                    Err(e) => return e,
                };
            if !status.is_success() {
                return classify_http(status, ra.as_deref(), &text);
            }
            #[derive(Deserialize)]
            struct Answer {
                errcode: i64,
                #[serde(default)]
                errmsg: String,
            }
            let ans: Answer = match serde_json::from_str(&text) {
                Ok(a) => a,
                Err(_) => {
                    return SendResult::Retryable {
                        after: None,
                        reason: "bad_response",
                        detail: format!("unexpected answer: {}", super::notifier::snippet(&text)),
                    }
                }
            };
            match ans.errcode {
                0 => SendResult::Delivered,
                130101 => SendResult::Retryable {
                    after: Some(Duration::from_secs(60)),
                    reason: "dingtalk_throttled",
                    detail: format!("robot {}: errcode 130101: {}", self.name, ans.errmsg),
                },
                310000 => SendResult::Permanent {
                    reason: "dingtalk_config",
                    detail: format!(
                        "robot {}: DingTalk rejected the signature, keyword or timestamp \
                         (errcode 310000: {}); check its secret, keywords and the host clock",
                        self.name, ans.errmsg
                    ),
                },
                code => SendResult::Permanent {
                    reason: "dingtalk_error",
                    detail: format!("robot {}: errcode {code}: {}", self.name, ans.errmsg),
                },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_matches_reference() {
        // python3: base64.b64encode(hmac.new(b"SECabc", b"1700000000000\nSECabc",
        //   hashlib.sha256).digest()), then urllib.parse.quote_plus
        assert_eq!(
            sign("SECabc", 1_700_000_000_000),
            "jcUpW0QmtKduN03n4JqQ0PBosVjqnM8gU7fIIvsDmCM%3D"
        );
    }
}
