//! `stormcast silence add|list|expire`: talks to a running stormcast over
//! HTTP, like amtool does to Alertmanager, sending the API token (when given)
//! as `Authorization: Bearer`.

use std::time::Duration;

use anyhow::Context;

use super::api::{SilenceCreated, SilenceView};
use super::matcher::Matcher;
use super::silence::{Silence, SilenceMatcher};
use crate::config::{PromDuration, Secret};

/// A running stormcast: its base URL and the API token its mutating
/// endpoints require (`server.api_token`), if any.
#[derive(Debug, Clone)]
pub struct Server {
    pub url: String,
    pub token: Option<Secret>,
}

impl Server {
    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url.trim_end_matches('/'))
    }

    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t.expose()),
            None => req,
        }
    }
}

/// What `silence add` needs.
#[derive(Debug, Clone)]
pub struct AddSilence {
    /// Alertmanager matchers: `alertname="KubeNodeNotReady"`, `cluster=~"prod-.*"`.
    pub matchers: Vec<String>,
    pub duration: PromDuration,
    pub author: String,
    pub comment: String,
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

async fn check(resp: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.text().await.unwrap_or_default();
    let msg = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or(body);
    if status == reqwest::StatusCode::UNAUTHORIZED {
        anyhow::bail!(
            "stormcast answered {status}: {msg} (give the token with --token-file or STORMCAST_API_TOKEN)"
        )
    }
    anyhow::bail!("stormcast answered {status}: {msg}")
}

/// Creates a silence; returns its id.
pub fn add(server: &Server, req: &AddSilence) -> anyhow::Result<String> {
    let mut matchers = Vec::new();
    for m in &req.matchers {
        for parsed in Matcher::parse_list(m)? {
            matchers.push(SilenceMatcher::from_matcher(&parsed));
        }
    }
    let now = chrono::Utc::now();
    let s = Silence {
        id: String::new(),
        matchers,
        starts_at: now,
        ends_at: now + req.duration.as_chrono(),
        created_by: req.author.clone(),
        comment: req.comment.clone(),
    };
    s.validate()?;
    runtime()?.block_on(async {
        let resp = server
            .authorize(client()?.post(server.endpoint("/api/v1/silences")))
            .json(&s)
            .send()
            .await
            .with_context(|| format!("cannot reach stormcast at {}", server.url))?;
        let created: SilenceCreated = check(resp).await?.json().await?;
        Ok(created.silence_id)
    })
}

/// Lists silences as a table.
pub fn list(server: &Server, include_expired: bool) -> anyhow::Result<String> {
    let views: Vec<SilenceView> = runtime()?.block_on(async {
        let resp = server
            .authorize(client()?.get(server.endpoint("/api/v1/silences")))
            .send()
            .await
            .with_context(|| format!("cannot reach stormcast at {}", server.url))?;
        anyhow::Ok(check(resp).await?.json().await?)
    })?;
    let mut out = String::from(
        "ID                STATE    ENDS AT                   CREATED BY  MATCHERS  COMMENT\n",
    );
    for v in views {
        if !include_expired && v.status.state == super::silence::SilenceState::Expired {
            continue;
        }
        let ms: Vec<String> = v
            .silence
            .matchers
            .iter()
            .filter_map(|m| m.compile().ok())
            .map(|m| m.to_string())
            .collect();
        out.push_str(&format!(
            "{:<17} {:<8} {:<25} {:<11} {}  {}\n",
            v.silence.id,
            format!("{:?}", v.status.state).to_lowercase(),
            v.silence.ends_at.format("%Y-%m-%dT%H:%M:%SZ"),
            v.silence.created_by,
            ms.join(","),
            v.silence.comment
        ));
    }
    Ok(out)
}

/// Expires a silence now.
pub fn expire(server: &Server, id: &str) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let resp = server
            .authorize(client()?.delete(server.endpoint(&format!("/api/v1/silences/{id}"))))
            .send()
            .await
            .with_context(|| format!("cannot reach stormcast at {}", server.url))?;
        check(resp).await?;
        Ok(())
    })
}
