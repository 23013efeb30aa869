// Shared by the notify_* integration tests (included with `mod`).
#![allow(dead_code)]

use stormcast::domain::{
    AlertStatus, Entity, EntityKind, Incident, IncidentAlert, Labels, RootCause, Timestamp,
};

pub fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    let mut l = Labels::new();
    for (k, v) in pairs {
        l.insert(*k, *v);
    }
    l
}

/// An open incident whose root cause has `pairs` as labels.
pub fn incident(id: &str, at: Timestamp, pairs: &[(&str, &str)], clusters: &[&str]) -> Incident {
    let l = labels(pairs);
    let sev = l.get_or_empty("severity").to_owned();
    Incident {
        id: id.to_owned(),
        opened_at: at,
        updated_at: at,
        resolved_at: None,
        root_cause: RootCause {
            fingerprint: Some(l.fingerprint()),
            labels: l.clone(),
            entity: Entity::new(
                EntityKind::Node,
                clusters.first().copied().unwrap_or("c1"),
                None,
                l.get_or_empty("node"),
            ),
            explanation: "node stopped reporting; 12 pods on it went NotReady".to_owned(),
            score: 1.0,
        },
        candidates: Vec::new(),
        alerts: vec![IncidentAlert {
            fingerprint: l.fingerprint(),
            labels: l,
            status: AlertStatus::Firing,
            starts_at: at,
            ends_at: None,
        }],
        clusters: clusters.iter().map(|c| c.to_string()).collect(),
        severity: sev,
        predictive: false,
        storm: false,
    }
}

use std::sync::{Arc, Mutex};

use stormcast::notify::notifier::{Links, Message};
use stormcast::notify::{MessageKind, Notification, NotificationStatus};

/// A message about `inc` as the planner would produce it.
pub fn message(inc: &Incident, receiver: &str, kind: MessageKind, seq: u32) -> Message {
    Message {
        notification: Notification {
            at: inc.opened_at,
            incident: inc.id.clone(),
            receiver: receiver.to_owned(),
            status: if kind == MessageKind::Resolved {
                NotificationStatus::Resolved
            } else {
                NotificationStatus::Firing
            },
            kind,
            seq,
            key: format!("{}/{receiver}/{seq}", inc.id),
        },
        incident: inc.clone(),
        links: Links {
            incident_url: Some(format!("https://stormcast.example/incidents/{}", inc.id)),
            sources: vec!["https://am.prod-1.example".to_owned()],
            generators: Default::default(),
            root_annotations: [
                ("summary", "Node node-7 is not ready."),
                (
                    "runbook_url",
                    "https://runbooks.prometheus-operator.dev/runbooks/kubernetes/kubenodenotready",
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        },
        digest: None,
    }
}

/// How a stand-in answers.
#[derive(Debug, Clone)]
pub enum Answer {
    Ok,
    /// HTTP status with an optional Retry-After.
    Status(u16, Option<u64>),
    /// DingTalk-style HTTP 200 with an errcode.
    Errcode(i64, &'static str),
    /// Never answer.
    Hang,
}

/// One request a stand-in received.
#[derive(Debug, Clone)]
pub struct Received {
    pub query: String,
    pub body: serde_json::Value,
    pub at: std::time::Instant,
    /// Whether the stand-in accepted it.
    pub ok: bool,
}

#[derive(Default)]
pub struct StandInState {
    pub answers: std::collections::VecDeque<Answer>,
    pub default: Option<Answer>,
    pub received: Vec<Received>,
    /// DingTalk signing secret to verify, if any.
    pub secret: Option<String>,
    pub bad_signatures: usize,
}

pub type StandIn = Arc<Mutex<StandInState>>;

/// Starts a chat-service stand-in on loopback; returns its base URL.
pub async fn stand_in(state: StandIn) -> String {
    use axum::extract::{RawQuery, State};
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    async fn handle(
        State(st): State<StandIn>,
        RawQuery(q): RawQuery,
        axum::Json(body): axum::Json<serde_json::Value>,
    ) -> axum::response::Response {
        let answer = {
            let mut s = st.lock().unwrap();
            let q = q.unwrap_or_default();
            if let Some(secret) = s.secret.clone() {
                if !signature_ok(&q, &secret) {
                    s.bad_signatures += 1;
                }
            }
            let a = s.answers.pop_front();
            let a = a.or_else(|| s.default.clone()).unwrap_or(Answer::Ok);
            s.received.push(Received {
                query: q,
                body,
                at: std::time::Instant::now(),
                ok: matches!(a, Answer::Ok),
            });
            a
        };
        match answer {
            Answer::Ok => (StatusCode::OK, r#"{"errcode":0,"errmsg":"ok"}"#).into_response(),
            Answer::Status(code, ra) => {
                let mut r = (StatusCode::from_u16(code).unwrap(), "error").into_response();
                if let Some(s) = ra {
                    r.headers_mut()
                        .insert("retry-after", s.to_string().parse().unwrap());
                }
                r
            }
            Answer::Errcode(c, m) => (
                StatusCode::OK,
                format!(r#"{{"errcode":{c},"errmsg":"{m}"}}"#),
            )
                .into_response(),
            Answer::Hang => {
                tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                StatusCode::OK.into_response()
            }
        }
    }
    let app = axum::Router::new()
        .route("/{*path}", axum::routing::post(handle))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}")
}

/// Verifies DingTalk's `timestamp` + `sign` query parameters independently.
pub fn signature_ok(query: &str, secret: &str) -> bool {
    use base64::Engine as _;
    use hmac::Mac;
    let mut ts = None;
    let mut sign = None;
    for kv in query.split('&') {
        if let Some(v) = kv.strip_prefix("timestamp=") {
            ts = Some(v.to_owned());
        }
        if let Some(v) = kv.strip_prefix("sign=") {
            sign = Some(
                percent_encoding::percent_decode_str(v)
                    .decode_utf8()
                    .unwrap()
                    .into_owned(),
            );
        }
    }
    let (Some(ts), Some(sign)) = (ts, sign) else {
        return false;
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{ts}\n{secret}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()) == sign
}
