//! The Alertmanager webhook payload (version "4") and its validation.
//!
//! Unknown fields are accepted (`notification_reason`, `routeLabels` and
//! whatever later Alertmanagers add). Every rejection names the offending field.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::IngestConfig;
use crate::domain::{
    is_valid_label_name, AlertStatus, ClusterId, Fingerprint, Labels, Observation, SharedStr,
    Timestamp,
};

/// The webhook body as Alertmanager sends it (`notify/webhook/webhook.go`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookMessage {
    pub version: String,
    #[serde(rename = "groupKey", default)]
    pub group_key: String,
    #[serde(rename = "truncatedAlerts", default)]
    pub truncated_alerts: u64,
    #[serde(default)]
    pub receiver: String,
    #[serde(default)]
    pub status: String,
    pub alerts: Vec<WebhookAlert>,
    #[serde(rename = "groupLabels", default)]
    pub group_labels: BTreeMap<String, String>,
    #[serde(rename = "commonLabels", default)]
    pub common_labels: BTreeMap<String, String>,
    #[serde(rename = "commonAnnotations", default)]
    pub common_annotations: BTreeMap<String, String>,
    #[serde(rename = "externalURL", default)]
    pub external_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookAlert {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt", default)]
    pub starts_at: Option<String>,
    #[serde(rename = "endsAt", default)]
    pub ends_at: Option<String>,
    #[serde(rename = "generatorURL", default)]
    pub generator_url: String,
    #[serde(default)]
    pub fingerprint: String,
}

/// A rejected payload: the field at fault and why. Always a client error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{field}: {message}")]
pub struct PayloadError {
    pub field: String,
    pub message: String,
}

impl PayloadError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        PayloadError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// One validated alert of a delivery, with its resolved cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryAlert {
    pub cluster: ClusterId,
    pub observation: Observation,
}

/// A validated delivery, ready for the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub received_at: Timestamp,
    pub source: SharedStr,
    pub receiver: String,
    pub group_key: String,
    pub external_url: SharedStr,
    pub truncated_alerts: u64,
    pub alerts: Vec<DeliveryAlert>,
}

/// Parses and validates a webhook body. `source_cluster` is the cluster the
/// authenticated source is configured with, if any.
pub fn parse_delivery(
    body: &[u8],
    received_at: Timestamp,
    source: &str,
    source_cluster: Option<&str>,
    limits: &IngestConfig,
) -> Result<Delivery, PayloadError> {
    // Tracking the path of every value costs as much as the parse itself, so
    // the path is only worked out again for a body that does not parse.
    let msg = match serde_json::from_slice::<WebhookMessage>(body) {
        Ok(msg) => msg,
        Err(_) => parse_with_path(body)?,
    };
    validate_message(msg, received_at, source, source_cluster, limits)
}

/// Parses `body` noting where it fails, for the rejection's field.
fn parse_with_path(body: &[u8]) -> Result<WebhookMessage, PayloadError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let msg: WebhookMessage = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // The root is ".", and a top-level key "" displays as an empty path.
        let field = if path.is_empty() || path == "." || path == "?" {
            "body".to_owned()
        } else {
            path
        };
        PayloadError::new(field, format!("invalid JSON: {inner}"))
    })?;
    de.end()
        .map_err(|e| PayloadError::new("body", format!("invalid JSON: {e}")))?;
    Ok(msg)
}

fn validate_message(
    msg: WebhookMessage,
    received_at: Timestamp,
    source: &str,
    source_cluster: Option<&str>,
    limits: &IngestConfig,
) -> Result<Delivery, PayloadError> {
    if msg.version != "4" {
        return Err(PayloadError::new(
            "version",
            format!(
                "unsupported version {:?}: stormcast accepts \"4\"",
                msg.version
            ),
        ));
    }
    if msg.alerts.is_empty() {
        return Err(PayloadError::new(
            "alerts",
            "must contain at least one alert",
        ));
    }
    if msg.alerts.len() > limits.max_alerts_per_delivery {
        return Err(PayloadError::new(
            "alerts",
            format!(
                "{} alerts exceed the limit of {} per delivery",
                msg.alerts.len(),
                limits.max_alerts_per_delivery
            ),
        ));
    }
    let url_cluster = host_of(&msg.external_url);
    let mut alerts = Vec::with_capacity(msg.alerts.len());
    for (i, a) in msg.alerts.into_iter().enumerate() {
        let at = |f: &str| format!("alerts[{i}].{f}");
        let Some(mut raw_labels) = a.labels else {
            return Err(PayloadError::new(at("labels"), "missing"));
        };
        if raw_labels.is_empty() {
            return Err(PayloadError::new(at("labels"), "must not be empty"));
        }
        if raw_labels.len() > limits.max_labels_per_alert {
            return Err(PayloadError::new(
                at("labels"),
                format!(
                    "{} labels exceed the limit of {}",
                    raw_labels.len(),
                    limits.max_labels_per_alert
                ),
            ));
        }
        check_map(&raw_labels, || at("labels"), limits, true)?;
        check_map(&a.annotations, || at("annotations"), limits, false)?;
        match raw_labels.get("alertname") {
            Some(n) if !n.is_empty() => {}
            _ => {
                return Err(PayloadError::new(
                    at("labels.alertname"),
                    "missing or empty",
                ))
            }
        }
        let status = match a.status.as_str() {
            "firing" => AlertStatus::Firing,
            "resolved" => AlertStatus::Resolved,
            other => {
                return Err(PayloadError::new(
                    at("status"),
                    format!("{other:?} is neither \"firing\" nor \"resolved\""),
                ))
            }
        };
        let starts_at = match a.starts_at.as_deref() {
            None | Some("") => return Err(PayloadError::new(at("startsAt"), "missing")),
            Some(s) => parse_time(s).ok_or_else(|| {
                PayloadError::new(at("startsAt"), format!("{s:?} is not an RFC3339 time"))
            })?,
        }
        .ok_or_else(|| PayloadError::new(at("startsAt"), "is the zero time"))?;
        let ends_at = match a.ends_at.as_deref() {
            None | Some("") => None,
            Some(s) => parse_time(s).ok_or_else(|| {
                PayloadError::new(at("endsAt"), format!("{s:?} is not an RFC3339 time"))
            })?,
        };
        // A firing alert's endsAt is zeroed by Alertmanager; a future endsAt from
        // other senders is an expiry hint, not a resolve time.
        let ends_at = match status {
            AlertStatus::Firing => None,
            AlertStatus::Resolved => Some(ends_at.unwrap_or(received_at)),
        };
        let am_fingerprint = if a.fingerprint.is_empty() {
            None
        } else {
            Some(a.fingerprint.parse::<Fingerprint>().map_err(|_| {
                PayloadError::new(
                    at("fingerprint"),
                    format!("{:?} is not a 16-digit hex fingerprint", a.fingerprint),
                )
            })?)
        };
        for d in &limits.drop_labels {
            raw_labels.remove(d);
        }
        let name = match raw_labels.get("cluster").filter(|c| !c.is_empty()) {
            Some(c) => c.as_str(),
            None => {
                let c = source_cluster
                    .map(str::to_owned)
                    .or_else(|| url_cluster.clone())
                    .unwrap_or_else(|| "unknown".to_owned());
                raw_labels.insert("cluster".to_owned(), c);
                &raw_labels["cluster"]
            }
        };
        // The alerts of a delivery mostly share a cluster (and those of one
        // rule a generator URL): share them.
        let prev = alerts.last();
        let cluster = match prev {
            Some(DeliveryAlert { cluster, .. }) if cluster.as_str() == name => cluster.clone(),
            _ => ClusterId::new(name),
        };
        let generator_url = match prev {
            Some(p) if p.observation.generator_url == a.generator_url => {
                p.observation.generator_url.clone()
            }
            _ => SharedStr::from(a.generator_url),
        };
        alerts.push(DeliveryAlert {
            cluster,
            observation: Observation {
                labels: Labels::from_sorted_map(raw_labels),
                annotations: Labels::from_sorted_map(a.annotations),
                status,
                starts_at,
                ends_at,
                generator_url,
                am_fingerprint,
            },
        });
    }
    Ok(Delivery {
        received_at,
        source: source.into(),
        receiver: msg.receiver,
        group_key: msg.group_key,
        external_url: msg.external_url.into(),
        truncated_alerts: msg.truncated_alerts,
        alerts,
    })
}

/// Checks label names and value sizes; `field` names the map, built only
/// for a rejection.
fn check_map(
    map: &BTreeMap<String, String>,
    field: impl Fn() -> String,
    limits: &IngestConfig,
    names_are_labels: bool,
) -> Result<(), PayloadError> {
    for (k, v) in map {
        if names_are_labels && !is_valid_label_name(k) {
            return Err(PayloadError::new(
                format!("{}.{k}", field()),
                "invalid label name: must match [a-zA-Z_][a-zA-Z0-9_]*",
            ));
        }
        if v.len() > limits.max_value_bytes {
            return Err(PayloadError::new(
                format!("{}.{k}", field()),
                format!(
                    "value of {} bytes exceeds the limit of {}",
                    v.len(),
                    limits.max_value_bytes
                ),
            ));
        }
    }
    Ok(())
}

/// Parses an RFC3339 time; `Some(None)` is Go's zero time (`0001-01-01T00:00:00Z`).
fn parse_time(s: &str) -> Option<Option<Timestamp>> {
    let t = DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&Utc);
    if t.timestamp() <= -62_135_596_800 {
        Some(None)
    } else {
        Some(Some(t))
    }
}

/// The host part of an Alertmanager `externalURL`, used as a last-resort cluster name.
fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(stripped) = host_port.strip_prefix('[') {
        stripped.split(']').next()?
    } else {
        host_port.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> Timestamp {
        Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
    }

    fn parse(body: &str) -> Result<Delivery, PayloadError> {
        parse_delivery(body.as_bytes(), now(), "s", None, &IngestConfig::default())
    }

    fn body(alerts: &str) -> String {
        format!(
            r#"{{"version":"4","groupKey":"{{}}:{{}}","status":"firing","receiver":"stormcast",
               "externalURL":"http://am.prod-sh-2.example:9093","alerts":[{alerts}]}}"#
        )
    }

    const FIRING: &str = r#"{"status":"firing","labels":{"alertname":"KubeNodeNotReady","node":"n1","severity":"warning"},
        "annotations":{"summary":"x"},"startsAt":"2026-11-01T07:59:00.123+08:00","endsAt":"0001-01-01T00:00:00Z",
        "generatorURL":"http://prom/graph","fingerprint":"0123456789abcdef"}"#;

    #[test]
    fn accepts_a_v4_payload_with_unknown_fields() {
        let b = body(FIRING).replace(
            r#""version":"4""#,
            r#""version":"4","notification_reason":"first notification","routeLabels":{}"#,
        );
        let d = parse(&b).unwrap();
        let a = &d.alerts[0];
        assert_eq!(a.cluster.as_str(), "am.prod-sh-2.example");
        assert_eq!(
            a.observation.labels.get("cluster"),
            Some("am.prod-sh-2.example")
        );
        assert_eq!(a.observation.ends_at, None);
        assert_eq!(
            a.observation.starts_at,
            Utc.with_ymd_and_hms(2026, 10, 31, 23, 59, 0).unwrap()
                + chrono::Duration::milliseconds(123)
        );
    }

    #[test]
    fn cluster_label_wins_over_source_and_url() {
        let with_label = FIRING.replace(r#""node":"n1""#, r#""node":"n1","cluster":"prod-bj-1""#);
        let d = parse_delivery(
            body(&with_label).as_bytes(),
            now(),
            "s",
            Some("cfg"),
            &IngestConfig::default(),
        )
        .unwrap();
        assert_eq!(d.alerts[0].cluster.as_str(), "prod-bj-1");
        let d = parse_delivery(
            body(FIRING).as_bytes(),
            now(),
            "s",
            Some("cfg"),
            &IngestConfig::default(),
        )
        .unwrap();
        assert_eq!(d.alerts[0].cluster.as_str(), "cfg");
    }

    #[test]
    fn rejections_name_the_field() {
        let cases = [
            ("{", "body"),
            (r#"{"version":"3","alerts":[]}"#, "version"),
            (&body(""), "alerts"),
            (
                &body(&FIRING.replace(r#""alertname":"KubeNodeNotReady","#, "")),
                "alerts[0].labels.alertname",
            ),
            (
                &body(&FIRING.replace(r#""node":"n1""#, r#""no-de":"n1""#)),
                "alerts[0].labels.no-de",
            ),
            (
                &body(&FIRING.replace("2026-11-01T07:59:00.123+08:00", "yesterday")),
                "alerts[0].startsAt",
            ),
            (
                &body(&FIRING.replace(r#""status":"firing""#, r#""status":"burning""#)),
                "alerts[0].status",
            ),
            (
                &body(&FIRING.replace(r#""node":"n1""#, r#""node":7"#)),
                "alerts[0].labels.node",
            ),
            (
                &body(r#"{"status":"firing","labels":{},"startsAt":"2026-11-01T00:00:00Z"}"#),
                "alerts[0].labels",
            ),
            // Found by the webhook_payload fuzz target: a syntax error inside the
            // value of a top-level "" key used to be reported with an empty field.
            (r#"{"":rsleat [], "alerts": []}"#, "body"),
            (r#"{"":{"a": x}}"#, "body"),
        ];
        for (input, field) in cases {
            let err = parse(input).unwrap_err();
            assert_eq!(err.field, field, "{input}: {err}");
        }
    }

    #[test]
    fn too_many_labels_is_rejected() {
        let labels: Vec<String> = (0..100_000).map(|i| format!(r#""l{i}":"v""#)).collect();
        let a = format!(
            r#"{{"status":"firing","labels":{{"alertname":"X",{}}},"startsAt":"2026-11-01T00:00:00Z"}}"#,
            labels.join(",")
        );
        let err = parse(&body(&a)).unwrap_err();
        assert_eq!(err.field, "alerts[0].labels");
    }

    #[test]
    fn invalid_utf8_is_rejected() {
        let mut b = body(FIRING).into_bytes();
        let pos = b.windows(2).position(|w| w == b"n1").unwrap();
        b[pos] = 0xff;
        let err = parse_delivery(&b, now(), "s", None, &IngestConfig::default()).unwrap_err();
        assert!(err.message.contains("invalid JSON"), "{err}");
    }

    #[test]
    fn host_extraction() {
        assert_eq!(host_of("http://am.x:9093/path").as_deref(), Some("am.x"));
        assert_eq!(host_of("https://u:p@[::1]:9093").as_deref(), Some("::1"));
        assert_eq!(host_of(""), None);
    }
}
