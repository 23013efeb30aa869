//! Where one webhook's ingest cost goes, single-threaded and without HTTP or
//! the store: payload parsing and validation, then the engine (alert state,
//! correlation, ranking, planning), on the same 100-alert webhooks as
//! `benches/ingest.rs`. Also measures the engine's heap per active alert with
//! a counting allocator. Deterministic, so it suits `valgrind --tool=callgrind`
//! and `perf record`.
//!
//! `cargo run --release --example ingest_profile [ALERTS]` (default 100000)

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use chrono::{TimeZone, Utc};
use stormcast::app;
use stormcast::config::Overrides;
use stormcast::correlate::Correlator;
use stormcast::engine::{Engine, ManualClock};
use stormcast::ingest::parse_delivery;
use stormcast::notify::Planner;

/// mimalloc (as the service uses), counting the bytes currently allocated.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        MiMalloc.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        MiMalloc.dealloc(p, l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        MiMalloc.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        MiMalloc.realloc(p, l, new)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[path = "../benches/support/webhooks.rs"]
mod webhooks;
use webhooks::{stormcast_body, ALERTS_PER_WEBHOOK};

fn main() {
    let alerts: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let webhooks = alerts.div_ceil(ALERTS_PER_WEBHOOK);
    let loaded = app::load(None, &Overrides::default()).expect("default config");
    let now = Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap();
    let clock = Arc::new(ManualClock::new(now));
    let mut correlator = Correlator::new(loaded.correlate.clone());
    correlator.set_topology(loaded.topology.clone());
    let mut engine = Engine::new(
        clock,
        correlator,
        Planner::with_settings(loaded.notify.clone()),
    )
    .with_heartbeat(loaded.config.heartbeat.clone(), None);
    let bodies: Vec<Vec<u8>> = (0..webhooks).map(|b| stormcast_body(b as u64)).collect();
    let cfg = &loaded.config.ingest;

    let before = LIVE.load(Ordering::Relaxed);
    let (mut parse, mut apply) = (0.0, 0.0);
    for b in &bodies {
        let t = Instant::now();
        let d = parse_delivery(b, now, "bench", None, cfg).expect("valid webhook");
        let t2 = Instant::now();
        engine.apply(&d);
        let planned = engine.take_planned();
        let t3 = Instant::now();
        drop((d, planned));
        parse += (t2 - t).as_secs_f64();
        apply += (t3 - t2).as_secs_f64();
    }
    let state = LIVE.load(Ordering::Relaxed) - before;
    let n = (webhooks * ALERTS_PER_WEBHOOK) as f64;
    println!(
        "{} alerts in {webhooks} webhooks, {} incidents",
        engine.alert_count(),
        engine.incidents().len()
    );
    println!(
        "parse + validate: {:>7.2} us/alert ({:.0} alerts/s on one core)",
        parse * 1e6 / n,
        n / parse
    );
    println!(
        "engine apply:     {:>7.2} us/alert ({:.0} alerts/s on one core)",
        apply * 1e6 / n,
        n / apply
    );
    println!(
        "engine heap:      {:>7.0} bytes/alert ({:.1} MB)",
        state as f64 / n,
        state as f64 / 1e6
    );
}
