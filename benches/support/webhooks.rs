//! The webhooks the ingest benchmark sends, shared with
//! `examples/ingest_profile.rs` so that both measure the same bodies.

pub const ALERTS_PER_WEBHOOK: usize = 100;

/// One alert's labels as JSON. Bodies are formatted directly: building them
/// through `serde_json::Value` costs the load generator more than the servers.
pub fn labels(batch: u64, i: usize) -> String {
    format!(
        r#"{{"alertname":"KubePodNotReady","namespace":"ns-{}","pod":"app-{batch}-{i}","severity":"warning","cluster":"prod-{}"}}"#,
        batch % 50,
        batch % 8
    )
}

/// One Alertmanager webhook (version 4) of [`ALERTS_PER_WEBHOOK`] new alerts.
pub fn stormcast_body(batch: u64) -> Vec<u8> {
    let mut out = String::with_capacity(ALERTS_PER_WEBHOOK * 320);
    out.push_str(r#"{"version":"4","groupKey":"{}:{}","status":"firing","receiver":"stormcast","groupLabels":{},"commonLabels":{},"commonAnnotations":{},"externalURL":"http://am:9093","alerts":["#);
    for i in 0..ALERTS_PER_WEBHOOK {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"status":"firing","labels":"#);
        out.push_str(&labels(batch, i));
        out.push_str(r#","annotations":{"summary":"bench"},"startsAt":"2026-11-01T00:00:00Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prometheus/graph","fingerprint":""}"#);
    }
    out.push_str("]}");
    out.into_bytes()
}
