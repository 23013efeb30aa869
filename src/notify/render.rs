//! Message content: an incident rendered per channel with minijinja.
//!
//! The default templates ship in `src/notify/templates/` and are embedded;
//! a channel config can override them with its own template text. Every value
//! a template prints is escaped for the channel (HTML for email, Slack mrkdwn,
//! DingTalk markdown) so a label like `<script>` or `*@all*` cannot inject
//! markup, links or mentions; URLs go through the `url` filter, which keeps
//! only http(s) links.

use std::collections::BTreeSet;

use minijinja::value::Value;
use minijinja::{Environment, Error, ErrorKind, Output, State};
use serde::Serialize;

use super::notifier::Message;
use super::{MessageKind, NotificationStatus};
use crate::domain::{severity_rank, AlertStatus};

pub const EMAIL_SUBJECT: &str = include_str!("templates/email.subject.j2");
pub const EMAIL_TEXT: &str = include_str!("templates/email.txt.j2");
pub const EMAIL_HTML: &str = include_str!("templates/email.html.j2");
pub const SLACK: &str = include_str!("templates/slack.j2");
pub const DINGTALK: &str = include_str!("templates/dingtalk.md.j2");
pub const DIGEST_SUBJECT: &str = include_str!("templates/digest.subject.j2");
pub const DIGEST_TEXT: &str = include_str!("templates/digest.txt.j2");
pub const DIGEST_HTML: &str = include_str!("templates/digest.html.j2");
pub const DIGEST_SLACK: &str = include_str!("templates/digest.slack.j2");
pub const DIGEST_DINGTALK: &str = include_str!("templates/digest.dingtalk.md.j2");

/// The template for one part of `msg`: a channel's own template or the
/// shipped `default` for incident messages; for a digest message always the
/// shipped digest counterpart of `default` (channel templates describe
/// incidents).
pub fn pick<'a>(msg: &Message, custom: Option<&'a str>, default: &'static str) -> &'a str {
    if msg.digest.is_none() {
        return custom.unwrap_or(default);
    }
    if default == EMAIL_SUBJECT {
        DIGEST_SUBJECT
    } else if default == EMAIL_HTML {
        DIGEST_HTML
    } else if default == SLACK {
        DIGEST_SLACK
    } else if default == DINGTALK {
        DIGEST_DINGTALK
    } else {
        DIGEST_TEXT
    }
}

/// How values are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// Plain text (email text part, subjects).
    Text,
    Html,
    /// Slack mrkdwn: `&`, `<`, `>` become entities.
    Slack,
    /// DingTalk markdown: markup characters (`* [ ] # ! | ~ < > \\` and
    /// backticks) and `@` become their full-width forms, which DingTalk shows
    /// as text, so values cannot add links or emphasis and only the robot's
    /// `at` field can mention anyone.
    Dingtalk,
}

pub fn escape(mode: Escape, s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match (mode, c) {
            (Escape::Text, '\r') => {}
            (Escape::Text, c) => out.push(c),
            (Escape::Html, '<') => out.push_str("&lt;"),
            (Escape::Html, '>') => out.push_str("&gt;"),
            (Escape::Html, '&') => out.push_str("&amp;"),
            (Escape::Html, '"') => out.push_str("&quot;"),
            (Escape::Html, '\'') => out.push_str("&#x27;"),
            (Escape::Slack, '&') => out.push_str("&amp;"),
            (Escape::Slack, '<') => out.push_str("&lt;"),
            (Escape::Slack, '>') => out.push_str("&gt;"),
            (Escape::Dingtalk, '\n') => out.push(' '),
            (Escape::Dingtalk, c) => out.push(match c {
                '@' => '＠',
                '<' => '＜',
                '>' => '＞',
                '*' => '＊',
                '`' => '｀',
                '#' => '＃',
                '[' => '［',
                ']' => '］',
                '!' => '！',
                '|' => '｜',
                '~' => '～',
                '\\' => '＼',
                c => c,
            }),
            (_, c) => out.push(c),
        }
    }
    out
}

fn sanitize_url(mode: Escape, s: &str) -> String {
    let s = s.trim();
    if !(s.starts_with("http://") || s.starts_with("https://")) {
        return String::new();
    }
    match mode {
        Escape::Text => s.to_owned(),
        Escape::Html => escape(Escape::Html, s),
        Escape::Slack => s
            .replace('&', "&amp;")
            .replace('<', "%3C")
            .replace('>', "%3E")
            .replace('|', "%7C"),
        Escape::Dingtalk => s
            .replace('(', "%28")
            .replace(')', "%29")
            .replace(' ', "%20")
            .replace('@', "%40"),
    }
}

fn env_for(mode: Escape) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_formatter(move |out: &mut Output, _state: &State, value: &Value| {
        if value.is_none() || value.is_undefined() {
            return Ok(());
        }
        let s = value.to_string();
        let text = if value.is_safe() { s } else { escape(mode, &s) };
        out.write_str(&text)
            .map_err(|e| Error::new(ErrorKind::WriteFailure, e.to_string()))
    });
    env.add_filter("url", move |v: String| {
        Value::from_safe_string(sanitize_url(mode, &v))
    });
    env
}

/// Renders `source` (a template) for `msg` with `mode` escaping.
pub fn render(mode: Escape, source: &str, msg: &Message) -> Result<String, Error> {
    let env = env_for(mode);
    let ctx = context(msg);
    env.render_str(source, ctx)
}

/// Renders and reports template errors as text (for config validation).
pub fn check_template(source: &str) -> Result<(), String> {
    let env = env_for(Escape::Text);
    env.template_from_str(source)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[derive(Serialize)]
struct Cause {
    alertname: String,
    entity: String,
    explanation: String,
    /// The root alert's `summary`, `description` and `runbook_url`
    /// annotations, when it has them.
    summary: Option<String>,
    description: Option<String>,
    runbook_url: Option<String>,
}

#[derive(Serialize)]
struct AlertLine {
    alertname: String,
    labels: String,
    status: &'static str,
    generator_url: Option<String>,
}

#[derive(Serialize)]
struct TimelineItem {
    at: String,
    text: String,
}

#[derive(Serialize)]
struct Ctx<'a> {
    incident_id: &'a str,
    status: &'static str,
    kind: &'static str,
    status_word: &'static str,
    severity: &'a str,
    predictive: bool,
    cause: Cause,
    clusters: &'a [String],
    nodes: Vec<String>,
    workloads: Vec<String>,
    firing: usize,
    resolved: usize,
    total: usize,
    top_alerts: Vec<AlertLine>,
    /// Members not in `top_alerts`.
    more_alerts: usize,
    timeline: Vec<TimelineItem>,
    /// Member onsets not in `timeline`.
    more_onsets: usize,
    links: &'a super::notifier::Links,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<&'a super::notifier::Digest>,
}

/// How many member alerts a message lists.
pub const TOP_ALERTS: usize = 10;
const TIMELINE: usize = 8;

fn fmt_time(t: crate::domain::Timestamp) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn context(msg: &Message) -> Ctx<'_> {
    let inc = &msg.incident;
    let n = &msg.notification;
    let status_word = match (n.status, n.kind) {
        (NotificationStatus::Resolved, _) => "RESOLVED",
        (_, MessageKind::Update) => "UPDATED",
        (_, MessageKind::Repeat) => "STILL FIRING",
        _ => "FIRING",
    };
    let rc = &inc.root_cause;
    let mut nodes = BTreeSet::new();
    let mut workloads = BTreeSet::new();
    for a in &inc.alerts {
        if let Some(v) = a.labels.get("node") {
            nodes.insert(v.to_owned());
        }
        for k in ["deployment", "statefulset", "daemonset", "job_name"] {
            if let Some(v) = a.labels.get(k) {
                let ns = a.labels.get_or_empty("namespace");
                workloads.insert(if ns.is_empty() {
                    v.to_owned()
                } else {
                    format!("{ns}/{v}")
                });
            }
        }
    }
    let cap = |s: BTreeSet<String>| -> Vec<String> {
        let n = s.len();
        let mut v: Vec<String> = s.into_iter().take(10).collect();
        if n > 10 {
            v.push(format!("and {} more", n - 10));
        }
        v
    };
    let mut members: Vec<_> = inc.alerts.iter().collect();
    members.sort_by(|a, b| {
        let root_a = Some(a.fingerprint) == rc.fingerprint;
        let root_b = Some(b.fingerprint) == rc.fingerprint;
        root_b
            .cmp(&root_a)
            .then((b.status == AlertStatus::Firing).cmp(&(a.status == AlertStatus::Firing)))
            .then(
                severity_rank(b.labels.get_or_empty("severity"))
                    .cmp(&severity_rank(a.labels.get_or_empty("severity"))),
            )
            .then(a.starts_at.cmp(&b.starts_at))
    });
    let top_alerts: Vec<AlertLine> = members
        .iter()
        .take(TOP_ALERTS)
        .map(|a| AlertLine {
            alertname: a.labels.alertname().to_owned(),
            labels: a
                .labels
                .iter()
                .filter(|(k, _)| *k != "alertname")
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", "),
            status: a.status.as_str(),
            generator_url: msg
                .links
                .generators
                .get(&a.fingerprint.to_string())
                .cloned(),
        })
        .collect();
    let mut timeline = vec![TimelineItem {
        at: fmt_time(inc.opened_at),
        text: "incident opened".to_owned(),
    }];
    let mut by_start: Vec<_> = inc.alerts.iter().collect();
    by_start.sort_by_key(|a| a.starts_at);
    let more_onsets = by_start.len().saturating_sub(TIMELINE - 2);
    for a in by_start.iter().take(TIMELINE - 2) {
        let c = a.labels.get_or_empty("cluster");
        timeline.push(TimelineItem {
            at: fmt_time(a.starts_at),
            text: if c.is_empty() {
                format!("{} started", a.labels.alertname())
            } else {
                format!("{} started in {c}", a.labels.alertname())
            },
        });
    }
    if let Some(r) = inc.resolved_at {
        timeline.push(TimelineItem {
            at: fmt_time(r),
            text: "incident resolved".to_owned(),
        });
    }
    timeline.sort_by(|a, b| a.at.cmp(&b.at));
    let firing = inc.firing_count();
    let note = |k: &str| msg.links.root_annotations.get(k).cloned();
    // An inferred root cause (a node or workload no alert names) is named
    // after the member alert listed first.
    let alertname = match rc.labels.alertname() {
        "" => members
            .first()
            .map_or(String::new(), |a| a.labels.alertname().to_owned()),
        name => name.to_owned(),
    };
    Ctx {
        incident_id: &inc.id,
        status: match n.status {
            NotificationStatus::Firing => "firing",
            NotificationStatus::Resolved => "resolved",
        },
        kind: n.kind.as_str(),
        status_word,
        severity: if inc.severity.is_empty() {
            "none"
        } else {
            &inc.severity
        },
        predictive: inc.predictive,
        cause: Cause {
            alertname,
            entity: rc.entity.to_string(),
            explanation: rc.explanation.clone(),
            summary: note("summary"),
            description: note("description"),
            runbook_url: note("runbook_url"),
        },
        clusters: &inc.clusters,
        nodes: cap(nodes),
        workloads: cap(workloads),
        firing,
        resolved: inc.alerts.len() - firing,
        total: inc.alerts.len(),
        more_alerts: inc.alerts.len() - top_alerts.len(),
        top_alerts,
        timeline,
        more_onsets,
        links: &msg.links,
        digest: msg.digest.as_ref(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_per_channel() {
        let s = "<script>*@all*</script> & [x](y)";
        assert_eq!(
            escape(Escape::Html, s),
            "&lt;script&gt;*@all*&lt;/script&gt; &amp; [x](y)"
        );
        assert_eq!(
            escape(Escape::Slack, s),
            "&lt;script&gt;*@all*&lt;/script&gt; &amp; [x](y)"
        );
        let d = escape(Escape::Dingtalk, s);
        assert!(!d.contains('@') && !d.contains('<'), "{d}");
        assert!(d.contains("＊＠all＊") && d.contains("［x］(y)"), "{d}");
        assert_eq!(sanitize_url(Escape::Html, "javascript:alert(1)"), "");
    }
}
