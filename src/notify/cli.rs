//! `stormcast silence add|list|expire`: talks to a running stormcast over
//! HTTP, like amtool does to Alertmanager.

use std::time::Duration;

use anyhow::Context;

use super::api::{SilenceCreated, SilenceView};
use super::matcher::Matcher;
use super::silence::{Silence, SilenceMatcher};
use crate::config::PromDuration;

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
    anyhow::bail!("stormcast answered {status}: {msg}")
}

/// Creates a silence; returns its id.
pub fn add(url: &str, req: &AddSilence) -> anyhow::Result<String> {
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
        let resp = client()?
            .post(format!("{}/api/v1/silences", url.trim_end_matches('/')))
            .json(&s)
            .send()
            .await
            .with_context(|| format!("cannot reach stormcast at {url}"))?;
        let created: SilenceCreated = check(resp).await?.json().await?;
        Ok(created.silence_id)
    })
}

/// Lists silences as a table.
pub fn list(url: &str, include_expired: bool) -> anyhow::Result<String> {
    let views: Vec<SilenceView> = runtime()?.block_on(async {
        let resp = client()?
            .get(format!("{}/api/v1/silences", url.trim_end_matches('/')))
            .send()
            .await
            .with_context(|| format!("cannot reach stormcast at {url}"))?;
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
pub fn expire(url: &str, id: &str) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let resp = client()?
            .delete(format!(
                "{}/api/v1/silences/{id}",
                url.trim_end_matches('/')
            ))
            .send()
            .await
            .with_context(|| format!("cannot reach stormcast at {url}"))?;
        check(resp).await?;
        Ok(())
    })
}
