//! DingTalk custom robots: signed markdown messages with @-mentions.
//!
//! A robot accepts at most 20 messages a minute (more throttles it for ten
//! minutes), so the dispatcher queues, and merges a backlog into one digest
//! ([`Notifier::digest`]). A body of 20000 bytes or more is split into
//! numbered parts, each one request counted against the robot's rate and sent
//! in order ([`payloads`]); beyond `max_parts` parts the rest is replaced by a
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
    /// Most requests one message is split into when its body reaches 20000
    /// bytes; a longer text is cut after this many parts, ending with a link
    /// to the incident page.
    pub max_parts: u32,
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
            max_parts: 5,
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
        if self.max_parts == 0 || self.max_parts > self.max_per_minute.clamp(1, 20) {
            errs.push(
                format!("{path}.max_parts"),
                format!(
                    "must be between 1 and max_per_minute ({}): every part is one request",
                    self.max_per_minute
                ),
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

/// The JSON-escaped length of `s`: what it adds to a request body.
fn json_len(s: &str) -> usize {
    serde_json::to_string(s).map_or(s.len(), |j| j.len() - 2)
}

fn body(cfg: &DingtalkConfig, title: &str, text: &str, mention: bool) -> serde_json::Value {
    let none: &[String] = &[];
    json!({
        "msgtype": "markdown",
        "markdown": {"title": title, "text": text},
        "at": {
            "atMobiles": if mention { &cfg.at_mobiles[..] } else { none },
            "isAtAll": mention && cfg.at_all,
        },
    })
}

fn body_len(v: &serde_json::Value) -> usize {
    serde_json::to_vec(v).map_or(usize::MAX, |b| b.len())
}

/// Builds the markdown body for one message or a digest of several, when it
/// fits in one request (the first part otherwise; see [`payloads`]).
pub fn payload(
    cfg: &DingtalkConfig,
    msgs: &[Message],
) -> Result<serde_json::Value, minijinja::Error> {
    Ok(payloads(cfg, msgs)?.swap_remove(0))
}

/// Builds the request bodies for one message or a digest of several, each
/// under [`MAX_BODY_BYTES`]. A text that fits goes out whole. A longer one is
/// split on block and line boundaries (never inside a code fence, link or
/// emphasis when avoidable) into parts numbered `(1/3)`, `(2/3)`, … in title
/// and text; only the first part @-mentions. Beyond `max_parts` parts the
/// last kept part ends with a link to the incident page instead.
pub fn payloads(
    cfg: &DingtalkConfig,
    msgs: &[Message],
) -> Result<Vec<serde_json::Value>, minijinja::Error> {
    let mut rendered = Vec::new();
    for m in msgs {
        let tpl = render::pick(m, cfg.text.as_deref(), render::DINGTALK);
        rendered.push(render::render(Escape::Dingtalk, tpl, m)?.trim().to_owned());
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
    // The title is only the preview line of the chat notification; a label
    // value of kilobytes must not push the body over the limit by itself.
    let title = shorten(&title, MAX_TITLE_CHARS);
    let text = if msgs.len() == 1 {
        rendered.remove(0)
    } else {
        format!(
            "### stormcast digest: {} messages\n\n{}",
            msgs.len(),
            rendered.join("\n\n---\n\n")
        )
    };
    let mentions: String = cfg.at_mobiles.iter().map(|m| format!(" @{m}")).collect();
    let mentions = if mentions.is_empty() {
        String::new()
    } else {
        format!("\n\n{}", mentions.trim_start())
    };
    let whole = body(cfg, &title, &format!("{text}{mentions}"), true);
    if body_len(&whole) < MAX_BODY_BYTES {
        return Ok(vec![whole]);
    }

    // Split. Every part carries the envelope, a numbered title and a
    // `**(i/n)**` line; the first also the mentions. Price them at their
    // largest so that every part fits whatever its number.
    let marker = |i: usize, n: usize| format!("**({i}/{n})**\n\n");
    let wide = 999;
    let envelope = body_len(&body(
        cfg,
        &format!("{title} ({wide}/{wide})"),
        &format!("{}{mentions}", marker(wide, wide)),
        true,
    ));
    let budget = (MAX_BODY_BYTES - 1).saturating_sub(envelope);
    let mut parts = super::mdsplit::split(&text, budget, &json_len);
    let max_parts = cfg.max_parts.max(1) as usize;
    if parts.len() > max_parts {
        let needed = parts.len();
        parts.truncate(max_parts);
        let link = msgs
            .iter()
            .find_map(|m| m.links.incident_url.clone())
            .unwrap_or_default();
        let note = if link.is_empty() {
            format!("\n\n… (truncated: {needed} parts needed, at most {max_parts} are sent)")
        } else {
            format!(
                "\n\n… (truncated: {needed} parts needed, at most {max_parts} are sent; \
                 full incident: [{link}]({link}))"
            )
        };
        let last = parts.last_mut().expect("at least one part");
        let room = budget.saturating_sub(json_len(&note));
        if json_len(last) > room {
            // Drop whole lines from the end, then characters if one line is left.
            let keep = super::mdsplit::split(last, room, &json_len);
            *last = keep.into_iter().next().unwrap_or_default();
        }
        last.push_str(&note);
    }
    let n = parts.len();
    Ok(parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let first = i == 0;
            let text = format!(
                "{}{p}{}",
                marker(i + 1, n),
                if first { mentions.as_str() } else { "" }
            );
            body(cfg, &format!("{title} ({}/{n})", i + 1), &text, first)
        })
        .collect())
}

/// Longest title kept, in characters; longer ones end in `…`.
const MAX_TITLE_CHARS: usize = 200;

/// `s` cut to at most `max` characters, the last of them `…` when cut.
fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max.saturating_sub(1)) {
        Some((at, _)) if s.chars().count() > max => format!("{}…", &s[..at]),
        _ => s.to_owned(),
    }
}

impl Dingtalk {
    /// Sends one request body, signed when a secret is configured.
    async fn post(&self, body: &serde_json::Value) -> SendResult {
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
            match post_json(&self.client, &url, body, self.cfg.timeout.as_std(), None).await {
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
    }

    fn bodies(&self, msgs: &[Message]) -> Result<Vec<serde_json::Value>, SendResult> {
        payloads(&self.cfg, msgs).map_err(|e| SendResult::Permanent {
            reason: "template",
            detail: e.to_string(),
        })
    }
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

    fn parts(&self, msgs: &[Message]) -> u32 {
        payloads(&self.cfg, msgs).map_or(1, |b| b.len() as u32)
    }

    fn send_part<'a>(&'a self, msgs: &'a [Message], part: u32) -> BoxFuture<'a, SendResult> {
        Box::pin(async move {
            if msgs.is_empty() {
                return SendResult::Delivered;
            }
            match self.bodies(msgs) {
                Ok(b) => match b.get(part as usize) {
                    Some(body) => self.post(body).await,
                    None => SendResult::Delivered, // the text got shorter: nothing left
                },
                Err(e) => e,
            }
        })
    }

    /// Sends every part in order, stopping at the first failure (the
    /// dispatcher uses [`Notifier::send_part`] so each part is rate-limited).
    fn send<'a>(&'a self, msgs: &'a [Message]) -> BoxFuture<'a, SendResult> {
        Box::pin(async move {
            if msgs.is_empty() {
                return SendResult::Delivered;
            }
            let bodies = match self.bodies(msgs) {
                Ok(b) => b,
                Err(e) => return e,
            };
            for b in &bodies {
                let r = self.post(b).await;
                if r != SendResult::Delivered {
                    return r;
                }
            }
            SendResult::Delivered
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_titles_are_shortened_at_a_char_boundary() {
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("exactly10!", 10), "exactly10!");
        let long = "磁盘".repeat(10_000);
        let cut = shorten(&long, MAX_TITLE_CHARS);
        assert_eq!(cut.chars().count(), MAX_TITLE_CHARS);
        assert!(cut.ends_with('…'));
        assert!(long.starts_with(cut.trim_end_matches('…')));
    }

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
