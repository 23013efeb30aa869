//! Wiring and lifecycle. `serve` and `replay` build the same engine; they differ
//! only in the clock that drives it and where deliveries come from.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::api::{self, AppState};
use crate::config::{self, Config, Overrides, ValidateCtx};
use crate::correlate::{CorrelateSettings, Correlator, Rules, Topology};
use crate::domain::{Incident, Timestamp};
use crate::engine::{Clock, Engine, ManualClock, SystemClock};
use crate::ingest::{parse_delivery, Authenticator};
use crate::metrics::Metrics;
use crate::notify::{Notification, Planner};
use crate::store::Store;

/// Everything loaded and validated at start-up (and by `check-config`).
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub ctx: ValidateCtx,
    pub correlate: CorrelateSettings,
    /// Topology known at start-up (`replay --topology DIR`); `serve` refreshes
    /// it from `topology.url`.
    pub topology: Arc<Topology>,
}

/// Loads the config file (or the embedded default) and everything it points
/// to, collecting every error. `check-config` and `serve` both call this.
pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Loaded, config::ConfigErrors> {
    let (config, ctx) = config::load(path, overrides)?;
    let rules = Rules::load_dir(&config.rules_dir(&ctx))?;
    Ok(Loaded {
        config,
        ctx,
        correlate: CorrelateSettings::from_rules(rules),
        topology: Arc::new(Topology::default()),
    })
}

/// Loads an offline topology folder (`<metric>.json` query bodies). What is
/// missing or malformed is logged and skipped: correlation falls back to labels.
pub fn load_topology_dir(loaded: &mut Loaded, dir: &Path) {
    let (topo, errors) = Topology::load_dir(dir);
    crate::correlate::live::report_topology_errors(&errors, None);
    let (pods, owners, nodes) = topo.size();
    tracing::info!(dir = %dir.display(), pods, owners, nodes, "Topology loaded");
    loaded.topology = Arc::new(topo);
}

fn build_engine(loaded: &Loaded, clock: Arc<dyn Clock>) -> Engine {
    let mut correlator = Correlator::new(loaded.correlate.clone());
    correlator.set_topology(loaded.topology.clone());
    Engine::new(clock, correlator, Planner::new())
}

/// Runs the service until SIGTERM or ctrl-c.
pub async fn serve(loaded: Loaded) -> anyhow::Result<()> {
    let cfg = &loaded.config;
    let store = Store::open(&cfg.store)
        .with_context(|| format!("opening the store at {}", cfg.store.path.display()))?;
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let correlate_metrics = crate::correlate::live::CorrelateMetrics::register(&mut registry);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut engine = build_engine(&loaded, clock.clone())
        .with_store(store.clone())
        .with_metrics(metrics.clone());

    let restored = engine.restore().context("restoring state")?;
    let replayed = recover_journal(&mut engine, &store, cfg)?;
    tracing::info!(
        alerts = restored,
        journal_replayed = replayed,
        "State recovered"
    );

    let engine = Arc::new(Mutex::new(engine));
    let state = Arc::new(AppState {
        engine: engine.clone(),
        store: store.clone(),
        auth: Authenticator::new(&cfg.sources),
        ingest: cfg.ingest.clone(),
        max_body_bytes: cfg.server.max_body_bytes,
        metrics,
        registry,
        clock: clock.clone(),
        ready: AtomicBool::new(false),
    });
    let app = api::router(state.clone(), cfg.server.request_timeout.as_std());
    let listener = tokio::net::TcpListener::bind(&cfg.server.listen)
        .await
        .with_context(|| format!("binding {}", cfg.server.listen))?;
    let addr = listener.local_addr()?;
    if state.auth.is_open() {
        tracing::warn!(%addr, "No sources configured: webhooks are accepted without authentication");
    }
    state.ready.store(true, Ordering::Release);
    tracing::info!(%addr, store = %cfg.store.path.display(), "stormcast listening");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let ticker = tokio::spawn(run_ticker(
        engine.clone(),
        store.clone(),
        cfg.clone(),
        stop_rx.clone(),
    ));

    let upkeep = tokio::spawn(crate::correlate::live::run(
        engine.clone(),
        cfg.topology.clone(),
        loaded.ctx.clone(),
        correlate_metrics,
        stop_rx.clone(),
    ));

    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP")?;

    tracing::info!("Shutting down: draining");
    state.ready.store(false, Ordering::Release);
    let _ = stop_tx.send(true);
    let _ = ticker.await;
    let _ = upkeep.await;
    {
        let mut e = engine.lock().expect("engine lock");
        e.tick();
        log_planned(e.take_planned());
    }
    store.flush().context("flushing the store")?;
    tracing::info!("Stopped");
    Ok(())
}

/// Re-applies journal entries the engine had not applied before it stopped.
fn recover_journal(engine: &mut Engine, store: &Store, cfg: &Config) -> anyhow::Result<usize> {
    let applied = store.applied()?;
    let mut n = 0;
    let mut last = applied;
    for item in store.journal_after(applied) {
        let (seq, entry) = item?;
        let cluster = cfg
            .sources
            .iter()
            .find(|s| s.name == entry.source)
            .and_then(|s| s.cluster.as_deref());
        match parse_delivery(
            &entry.body,
            entry.received_at,
            &entry.source,
            cluster,
            &cfg.ingest,
        ) {
            Ok(d) => {
                engine.apply(&d);
                n += 1;
            }
            Err(e) => tracing::error!(seq, error = %e, "Journal entry no longer parses; skipped"),
        }
        last = seq;
    }
    if last > applied {
        store.set_applied(last)?;
        store.flush()?;
    }
    Ok(n)
}

async fn run_ticker(
    engine: Arc<Mutex<Engine>>,
    store: Store,
    cfg: Config,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(cfg.engine.tick_interval.as_std());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut compact = tokio::time::interval(cfg.store.compact_interval.as_std());
    compact.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => {
                let planned = {
                    let mut e = engine.lock().expect("engine lock");
                    e.tick();
                    e.take_planned()
                };
                log_planned(planned);
            }
            _ = compact.tick() => {
                let now = engine.lock().expect("engine lock").now();
                let store = store.clone();
                let store_cfg = cfg.store.clone();
                let res = tokio::task::spawn_blocking(move || store.compact(now, &store_cfg)).await;
                match res {
                    Ok(Ok(c)) if c != Default::default() => tracing::info!(?c, "Compacted store"),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "Compaction failed"),
                    Err(e) => tracing::error!(error = %e, "Compaction panicked"),
                }
                engine
                    .lock()
                    .expect("engine lock")
                    .forget_before(now - cfg.store.retention.as_chrono());
            }
        }
    }
}

fn log_planned(planned: Vec<Notification>) {
    for n in planned {
        tracing::info!(incident = %n.incident, receiver = %n.receiver, status = ?n.status, "Notification planned");
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// One line of `replay` input.
#[derive(Debug, Deserialize)]
pub struct ReplayLine<'a> {
    pub at: Timestamp,
    #[serde(borrow)]
    pub payload: &'a serde_json::value::RawValue,
    #[serde(default)]
    pub source: Option<String>,
}

/// Counts reported by `replay`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ReplayStats {
    /// Deliveries accepted.
    pub deliveries: u64,
    /// Distinct alert identities seen.
    pub alerts: u64,
    pub incidents: u64,
    /// Alert observations, re-deliveries included.
    pub observations: u64,
    /// Input lines rejected (bad JSON, invalid payload), as the server would 400 them.
    pub rejected: u64,
    /// Late deliveries about older episodes, ignored.
    pub stale: u64,
    /// Re-fires after a resolve.
    pub flaps: u64,
    /// Virtual time covered, first delivery to the end of the run.
    pub virtual_seconds: i64,
    /// Clusters that entered storm mode (alert arrivals far above baseline).
    #[serde(default)]
    pub storm_clusters: Vec<String>,
}

/// The `replay` result. Later versions only add fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayResult {
    pub incidents: Vec<Incident>,
    pub notifications: Vec<Notification>,
    pub stats: ReplayStats,
}

/// A rejected `replay` input line.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayRejection {
    pub line: usize,
    pub error: String,
}

pub struct ReplayOptions {
    pub input: PathBuf,
    /// How long to keep the virtual clock running after the last delivery, so
    /// that holds expire and incidents resolve.
    pub drain: chrono::Duration,
    pub progress: bool,
}

/// Runs a recorded storm through the engine on a virtual clock, without sleeping.
pub fn replay(
    loaded: &Loaded,
    opts: &ReplayOptions,
) -> anyhow::Result<(ReplayResult, Vec<ReplayRejection>)> {
    let text = std::fs::read_to_string(&opts.input)
        .with_context(|| format!("reading {}", opts.input.display()))?;
    replay_text(loaded, &text, opts)
}

/// [`replay`] on JSON lines already in memory (`opts.input` is not read).
pub fn replay_text(
    loaded: &Loaded,
    text: &str,
    opts: &ReplayOptions,
) -> anyhow::Result<(ReplayResult, Vec<ReplayRejection>)> {
    let mut rejections = Vec::new();
    let mut lines: Vec<(usize, ReplayLine<'_>)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<ReplayLine<'_>>(raw) {
            Ok(l) => lines.push((i + 1, l)),
            Err(e) => rejections.push(ReplayRejection {
                line: i + 1,
                error: format!("not a replay line ({{\"at\", \"payload\", \"source\"}}): {e}"),
            }),
        }
    }
    // Deliveries are applied in receive order; ties keep file order.
    lines.sort_by_key(|(_, l)| l.at);
    let start = lines
        .first()
        .map(|(_, l)| l.at)
        .unwrap_or_else(chrono::Utc::now);
    let clock = Arc::new(ManualClock::new(start));
    let mut engine = build_engine(loaded, clock.clone());
    let mut notifications = Vec::new();
    let bar = progress_bar(opts.progress, lines.len() as u64);
    let cfg = &loaded.config;
    let mut rejected = rejections.len() as u64;
    for (line_no, l) in &lines {
        advance(&mut engine, &clock, l.at, &mut notifications);
        clock.set(l.at);
        let source = l.source.as_deref().unwrap_or("replay");
        let cluster = cfg
            .sources
            .iter()
            .find(|s| s.name == source)
            .and_then(|s| s.cluster.as_deref());
        match parse_delivery(
            l.payload.get().as_bytes(),
            l.at,
            source,
            cluster,
            &cfg.ingest,
        ) {
            Ok(d) => {
                engine.apply(&d);
                notifications.extend(engine.take_planned());
            }
            Err(e) => {
                rejected += 1;
                rejections.push(ReplayRejection {
                    line: *line_no,
                    error: e.to_string(),
                });
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let end = clock.now() + opts.drain;
    advance(&mut engine, &clock, end, &mut notifications);
    clock.set(end);

    let stats = engine.stats();
    let incidents: Vec<Incident> = engine.incidents().into_iter().cloned().collect();
    let result = ReplayResult {
        stats: ReplayStats {
            deliveries: stats.deliveries,
            alerts: engine.alert_count() as u64,
            incidents: incidents.len() as u64,
            observations: stats.observations,
            rejected,
            stale: stats.stale,
            flaps: stats.flaps,
            virtual_seconds: (clock.now() - start).num_seconds(),
            storm_clusters: engine.correlator().storm_history(),
        },
        incidents,
        notifications,
    };
    rejections.sort_by_key(|r| r.line);
    Ok((result, rejections))
}

/// Ticks the engine at every deadline up to `until`.
fn advance(
    engine: &mut Engine,
    clock: &ManualClock,
    until: Timestamp,
    out: &mut Vec<Notification>,
) {
    while let Some(d) = engine.next_deadline() {
        if d > until {
            break;
        }
        clock.set(d);
        engine.tick();
        out.extend(engine.take_planned());
        if engine.next_deadline() == Some(d) {
            // Nothing was due after all; avoid spinning on the same instant.
            clock.set(d + chrono::Duration::milliseconds(1));
        }
    }
}

fn progress_bar(enabled: bool, len: u64) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} replaying [{bar:40}] {pos}/{len} deliveries ({per_sec}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
