//! Grouping floors on storms recorded from a simulator written apart from
//! stormcast's own (`testdata/storms`): same kube-prometheus fleets, alert
//! names and fault kinds, cascades written independently. Each is replayed
//! with the shipped rules, its topology and its declared dependencies, and
//! must keep its pair F1, lose no alert and page no more than it does today
//! (firing messages per true incident). The figures are printed by
//! `cargo run --example correlation_quality`.

mod storm_score;

fn check(name: &str, min_f1: f64, max_messages: f64) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/storms")
        .join(name);
    let score = storm_score::replay_and_score(&dir);
    eprintln!("{name}: {score}");
    assert_eq!(score.lost, 0, "alerts lost");
    assert!(score.f1 >= min_f1, "pair F1 {:.3} < {min_f1}", score.f1);
    assert!(
        score.messages_per_incident <= max_messages,
        "{:.3} firing messages per true incident > {max_messages}",
        score.messages_per_incident
    );
}

#[test]
fn independent_storm_over_four_clusters() {
    check("independent-4-clusters", 0.98, 1.0);
}

#[test]
fn independent_storm_over_six_clusters() {
    check("independent-6-clusters", 0.97, 1.40);
}

#[test]
fn independent_storm_over_twelve_clusters() {
    check("independent-12-clusters", 0.95, 1.12);
}
