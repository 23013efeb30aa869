//! Arbitrary bytes as a webhook body: the parser must return a delivery or a
//! field-naming error, never panic, and a delivery must be internally sound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stormcast::ingest::{parse_delivery, IngestConfig};

fuzz_target!(|data: &[u8]| {
    let limits = IngestConfig::default();
    let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    match parse_delivery(data, now, "fuzz", Some("fuzz-cluster"), &limits) {
        Ok(d) => {
            assert!(!d.alerts.is_empty());
            assert!(d.alerts.len() <= limits.max_alerts_per_delivery);
            for a in &d.alerts {
                let labels = &a.observation.labels;
                assert!(!labels.alertname().is_empty());
                assert_eq!(labels.get("cluster"), Some(a.cluster.as_str()));
                assert!(labels.len() <= limits.max_labels_per_alert + 1);
                assert!(labels.iter().all(|(k, _)| stormcast::domain::is_valid_label_name(k)));
            }
        }
        Err(e) => assert!(!e.field.is_empty()),
    }
});
