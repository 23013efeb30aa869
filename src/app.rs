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
use crate::engine::{Clock, Engine, HeartbeatMetrics, ManualClock, RecoveryClock};
use crate::ingest::{parse_delivery, ApiToken, Authenticator};
use crate::metrics::Metrics;
use crate::notify::dispatch::{build_channels, Dispatcher, NotifyMetrics, RetryPolicy};
use crate::notify::notifier::Links;
use crate::notify::outbox::Outbox;
use crate::notify::{Notification, Planner, PlannerSettings};
use crate::store::Store;

/// Everything loaded and validated at start-up (and by `check-config`).
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub ctx: ValidateCtx,
    pub correlate: CorrelateSettings,
    /// The compiled routing tree and time intervals.
    pub notify: PlannerSettings,
    /// Forecast models (`models/*.yaml`, or the built-in set when the default
    /// folder does not exist).
    pub models: Vec<crate::analyze::models::ModelDef>,
    /// Topology known at start-up (`replay --topology DIR`); `serve` refreshes
    /// it from `topology.url`.
    pub topology: Arc<Topology>,
}

/// Loads the config file (or the embedded default) and everything it points
/// to, collecting every error. `check-config` and `serve` both call this.
pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Loaded, config::ConfigErrors> {
    let (config, ctx) = config::load(path, overrides)?;
    let mut errs = config::ConfigErrors::default();
    let notify = crate::notify::planner_settings(&config);
    let models =
        crate::analyze::models::load_models(&config.models_dir(&ctx), config.models_dir.is_some())
            .unwrap_or_else(|e| {
                errs.extend(e);
                Vec::new()
            });
    let rules = Rules::load_dir(&config.rules_dir(&ctx)).unwrap_or_else(|e| {
        errs.extend(e);
        Default::default()
    });
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(Loaded {
        config,
        ctx,
        correlate: CorrelateSettings::from_rules(rules),
        notify,
        models,
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

fn build_engine(
    loaded: &Loaded,
    clock: Arc<dyn Clock>,
    heartbeat_metrics: Option<HeartbeatMetrics>,
) -> Engine {
    let mut correlator = Correlator::new(loaded.correlate.clone());
    correlator.set_topology(loaded.topology.clone());
    Engine::new(
        clock,
        correlator,
        Planner::with_settings(loaded.notify.clone()),
    )
    .with_heartbeat(loaded.config.heartbeat.clone(), heartbeat_metrics)
}

/// Runs the service until SIGTERM or ctrl-c.
pub async fn serve(loaded: Loaded) -> anyhow::Result<()> {
    let cfg = &loaded.config;
    let store = Store::open(&cfg.store)
        .with_context(|| format!("opening the store at {}", cfg.store.path.display()))?;
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let notify_metrics = NotifyMetrics::register(&mut registry);
    let analyze_metrics = crate::analyze::service::AnalyzeMetrics::register(&mut registry);
    let correlate_metrics = crate::correlate::live::CorrelateMetrics::register(&mut registry);
    let recovery_clock = Arc::new(RecoveryClock::default());
    let clock: Arc<dyn Clock> = recovery_clock.clone();
    let heartbeat_metrics = HeartbeatMetrics::register(&mut registry);
    let outbox = Outbox::open(&store).context("opening the outbox")?;
    let channels = build_channels(&cfg.receivers).map_err(anyhow::Error::msg)?;
    let dispatcher = Arc::new(Dispatcher::new(
        outbox.clone(),
        channels,
        RetryPolicy::default(),
        notify_metrics,
        cfg.server.external_url.clone(),
    ));
    let mut engine = build_engine(&loaded, clock.clone(), Some(heartbeat_metrics))
        .with_store(store.clone())
        .with_metrics(metrics.clone());

    let restored = engine.restore().context("restoring state")?;
    let replayed = recover_journal(&mut engine, &recovery_clock, &store, cfg)?;
    let silences = crate::notify::api::restore_silences(&store, &mut engine)?;
    {
        let now = engine.now();
        let open: Vec<Incident> = engine.incidents().into_iter().cloned().collect();
        let open: Vec<&Incident> = open.iter().collect();
        engine
            .planner_mut()
            .restore(&open, now, |i, r| outbox.last_seq(i, r));
    }
    let acks = crate::notify::api::restore_acks(&store, &mut engine)?;
    tracing::info!(
        alerts = restored,
        journal_replayed = replayed,
        silences,
        acks,
        outbox = outbox.depth(),
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
    let notify_api = Arc::new(crate::notify::api::NotifyApi {
        engine: engine.clone(),
        store: store.clone(),
        dispatcher: dispatcher.clone(),
        clock: clock.clone(),
    });
    let app = api::router(state.clone(), cfg.server.request_timeout.as_std())
        .merge(crate::notify::api::router(notify_api));
    let api_token = cfg.server.api_token.as_ref().map(ApiToken::new);
    let open_api = api_token.is_none();
    let app = api::guard_mutations(app, api_token);
    let listener = tokio::net::TcpListener::bind(&cfg.server.listen)
        .await
        .with_context(|| format!("binding {}", cfg.server.listen))?;
    let addr = listener.local_addr()?;
    if state.auth.is_open() {
        tracing::warn!(%addr, "No sources configured: webhooks are accepted without authentication");
    }
    if open_api {
        tracing::warn!(%addr, "No server.api_token: silences and acknowledgements are accepted without authentication");
    }
    state.ready.store(true, Ordering::Release);
    tracing::info!(%addr, store = %cfg.store.path.display(), "stormcast listening");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let wake = Arc::new(tokio::sync::Notify::new());
    let ticker = tokio::spawn(run_ticker(
        engine.clone(),
        store.clone(),
        cfg.clone(),
        stop_rx.clone(),
        Outlet {
            dispatcher: dispatcher.clone(),
            wake: wake.clone(),
        },
    ));
    let sender = tokio::spawn(
        dispatcher
            .clone()
            .run(clock.clone(), wake.clone(), stop_rx.clone()),
    );

    let forecaster = tokio::spawn(crate::analyze::service::run(
        engine.clone(),
        store.clone(),
        loaded.models.clone(),
        cfg.history.clone(),
        analyze_metrics,
        stop_rx.clone(),
    ));

    let upkeep = tokio::spawn(crate::correlate::live::run(
        engine.clone(),
        cfg.topology.clone(),
        loaded.ctx.clone(),
        correlate_metrics,
        stop_rx.clone(),
    ));
    let digest = cfg.report_digest.clone().map(|d| {
        let task = crate::analyze::digest::DigestTask::new(
            d,
            cfg.server.external_url.as_deref(),
            clock.now(),
        );
        tokio::spawn(crate::analyze::digest::run(
            task,
            engine.clone(),
            store.clone(),
            dispatcher.clone(),
            wake.clone(),
            stop_rx.clone(),
        ))
    });

    // On SIGTERM: stop accepting, let in-flight webhooks finish (each one is
    // journaled before it is acknowledged), then persist everything, all
    // within SHUTDOWN_GRACE so Kubernetes never has to SIGKILL.
    let (signal_tx, mut signal_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = signal_tx.send(true);
    });
    let mut graceful_rx = signal_rx.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = graceful_rx.wait_for(|s| *s).await;
    });
    let started = tokio::select! {
        r = server => {
            r.context("serving HTTP")?;
            std::time::Instant::now()
        }
        _ = async {
            let _ = signal_rx.wait_for(|s| *s).await;
            tokio::time::sleep(REQUEST_DRAIN).await;
        } => {
            tracing::warn!(grace = ?REQUEST_DRAIN, "Requests still in flight after the drain period; closing them");
            std::time::Instant::now()
        }
    };

    tracing::info!("Shutting down: draining");
    state.ready.store(false, Ordering::Release);
    let _ = stop_tx.send(true);
    let _ = ticker.await;
    let _ = upkeep.await;
    // A send in flight (a slow SMTP server, a rate-limited channel) must not
    // outlast the grace period: what is not sent stays in the durable outbox
    // and goes out after the restart.
    let send_budget = SHUTDOWN_GRACE
        .saturating_sub(REQUEST_DRAIN)
        .saturating_sub(OUTBOX_FLUSH_RESERVE);
    let mut sender = sender;
    if tokio::time::timeout(send_budget, &mut sender)
        .await
        .is_err()
    {
        tracing::warn!(budget = ?send_budget, "Deliveries still in flight at shutdown; they stay in the outbox");
        sender.abort();
    }
    // The forecaster stops at its next check of the stop signal; a model run
    // still going is abandoned (predictions are recomputed after the restart).
    let mut forecaster = forecaster;
    if tokio::time::timeout(Duration::from_secs(2), &mut forecaster)
        .await
        .is_err()
    {
        forecaster.abort();
    }
    if let Some(mut d) = digest {
        if tokio::time::timeout(Duration::from_secs(2), &mut d)
            .await
            .is_err()
        {
            d.abort();
        }
    }
    // Whatever the last tick plans goes into the durable outbox: sent now if
    // the dispatcher still runs, otherwise by the next start.
    let batch = {
        let mut e = engine.lock().expect("engine lock");
        e.tick();
        if let Err(err) = e.checkpoint() {
            tracing::error!(error = %err, "Final snapshot failed; the journal still holds every delivery");
        }
        let planned = e.take_planned();
        snapshot_planned(&e, planned)
    };
    enqueue_planned(&dispatcher, batch);
    let (o, s) = (outbox.clone(), store.clone());
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        o.flush().context("flushing the outbox")?;
        s.flush().context("flushing the store")?;
        Ok(())
    })
    .await
    .context("flushing")??;
    tracing::info!(
        took_ms = started.elapsed().as_millis() as u64,
        "Stopped: state persisted"
    );
    Ok(())
}

/// How long in-flight HTTP requests get after SIGTERM before they are cut.
pub const REQUEST_DRAIN: Duration = Duration::from_secs(10);

/// Time kept for the final tick and the store and outbox flushes.
const OUTBOX_FLUSH_RESERVE: Duration = Duration::from_secs(5);

/// The whole shutdown budget, below Kubernetes' default
/// `terminationGracePeriodSeconds` (30) and the manifests' value.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

/// Re-applies journal entries past the last snapshot's watermark, on the
/// clock pinned to their receive times as `replay` does, so incidents get the
/// ids they had and notifications already in the outbox are not sent twice.
/// Notifications planned meanwhile stay with the engine for the first tick.
fn recover_journal(
    engine: &mut Engine,
    clock: &RecoveryClock,
    store: &Store,
    cfg: &Config,
) -> anyhow::Result<usize> {
    let applied = store.applied()?;
    let mut n = 0;
    let mut last = applied;
    for item in store.journal_after(applied) {
        let (seq, entry) = item?;
        advance(engine, &|t| clock.pin(t), entry.received_at, None);
        clock.pin(entry.received_at);
        let cluster = cfg.source_cluster(&entry.source);
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
        // The checkpoint below records the watermark of what was marked.
        store.mark_applied(seq);
        last = seq;
    }
    if last > applied {
        engine.checkpoint()?;
    }
    clock.release();
    Ok(n)
}

async fn run_ticker(
    engine: Arc<Mutex<Engine>>,
    store: Store,
    cfg: Config,
    mut stop: tokio::sync::watch::Receiver<bool>,
    outlet: Outlet,
) {
    let mut tick = tokio::time::interval(cfg.engine.tick_interval.as_std());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut compact = tokio::time::interval(cfg.store.compact_interval.as_std());
    compact.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The snapshot being written off the engine lock; one at a time.
    let mut writing: Option<SnapshotWrite> = None;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => {
                if writing.as_ref().is_some_and(|w| w.is_finished()) {
                    finish_snapshot(&engine, writing.take().expect("checked")).await;
                }
                let (batch, pending) = {
                    let mut e = engine.lock().expect("engine lock");
                    e.tick();
                    let pending = if writing.is_none() { e.capture_if_due() } else { None };
                    let planned = e.take_planned();
                    (snapshot_planned(&e, planned), pending)
                };
                if let Some(p) = pending {
                    let changes = p.changes();
                    writing = Some(SnapshotWrite {
                        changes,
                        task: tokio::task::spawn_blocking(move || p.write()),
                    });
                }
                if enqueue_planned(&outlet.dispatcher, batch) > 0 {
                    outlet.wake.notify_waiters();
                }
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
                {
                    let cutoff = now - cfg.store.retention.as_chrono();
                    let mut e = engine.lock().expect("engine lock");
                    e.forget_before(cutoff);
                    e.planner_mut().forget_silences_before(cutoff);
                }
                match outlet.dispatcher.outbox().prune_failed(now - cfg.store.retention.as_chrono()) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(messages = n, "Pruned failed notifications past retention"),
                    Err(e) => tracing::error!(error = %e, "Cannot prune the outbox"),
                }
            }
        }
    }
    // Shutdown checkpoints next, after the write in flight.
    if let Some(w) = writing {
        finish_snapshot(&engine, w).await;
    }
}

/// A snapshot write running on a blocking thread.
struct SnapshotWrite {
    changes: u64,
    task: tokio::task::JoinHandle<Result<crate::store::Snapshotted, crate::store::StoreError>>,
}

impl SnapshotWrite {
    fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Waits for a snapshot write; if it failed, its changes count again so the
/// next tick retries.
async fn finish_snapshot(engine: &Mutex<Engine>, w: SnapshotWrite) {
    let err = match w.task.await {
        Ok(Ok(_)) => return,
        Ok(Err(e)) => e.to_string(),
        Err(e) => format!("snapshot task: {e}"),
    };
    tracing::error!(error = %err, "Snapshot failed; the journal still holds every delivery");
    engine
        .lock()
        .expect("engine lock")
        .snapshot_failed(w.changes);
}

/// Where planned notifications go in `serve`.
struct Outlet {
    dispatcher: Arc<Dispatcher>,
    wake: Arc<tokio::sync::Notify>,
}

/// Planned notifications with the incident snapshots and links they will be
/// rendered from, taken while the engine is locked.
struct PlannedBatch {
    now: Timestamp,
    planned: Vec<Notification>,
    snapshots: std::collections::HashMap<String, (Incident, Links)>,
}

fn snapshot_planned(engine: &Engine, planned: Vec<Notification>) -> PlannedBatch {
    let mut snapshots = std::collections::HashMap::new();
    for n in &planned {
        tracing::info!(incident = %n.incident, receiver = %n.receiver, kind = n.kind.as_str(), "Notification planned");
        if snapshots.contains_key(&n.incident) {
            continue;
        }
        let Some(inc) = engine.incident(&n.incident) else {
            continue;
        };
        let mut links = Links::default();
        for a in &inc.alerts {
            if let Some(st) = engine.alert(a.fingerprint) {
                if !st.generator_url.is_empty() {
                    links
                        .generators
                        .insert(a.fingerprint.to_string(), st.generator_url.to_string());
                }
                if Some(a.fingerprint) == inc.root_cause.fingerprint {
                    for k in crate::notify::notifier::ROOT_ANNOTATIONS {
                        if let Some(v) = st.annotations.get(k).filter(|v| !v.is_empty()) {
                            links.root_annotations.insert(k.to_owned(), v.to_owned());
                        }
                    }
                }
                if !st.external_url.is_empty()
                    && !links.sources.iter().any(|s| st.external_url == *s)
                {
                    links.sources.push(st.external_url.to_string());
                }
            }
        }
        snapshots.insert(n.incident.clone(), (inc.clone(), links));
    }
    PlannedBatch {
        now: engine.now(),
        planned,
        snapshots,
    }
}

/// Persists planned notifications in the outbox, before any send.
fn enqueue_planned(dispatcher: &Dispatcher, batch: PlannedBatch) -> usize {
    if batch.planned.is_empty() {
        return 0;
    }
    match dispatcher.enqueue(&batch.planned, batch.now, |id| {
        batch.snapshots.get(id).cloned()
    }) {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, messages = batch.planned.len(), "Cannot persist notifications in the outbox");
            0
        }
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
    /// Whether the fleet as a whole entered storm mode (its arrival rate far
    /// above baseline, or two or more clusters in a storm at once).
    #[serde(default)]
    pub fleet_storm: bool,
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
    let mut engine = build_engine(loaded, clock.clone(), None);
    let mut notifications = Vec::new();
    let bar = progress_bar(opts.progress, lines.len() as u64);
    let cfg = &loaded.config;
    let mut rejected = rejections.len() as u64;
    for (line_no, l) in &lines {
        advance(
            &mut engine,
            &|t| clock.set(t),
            l.at,
            Some(&mut notifications),
        );
        clock.set(l.at);
        let source = l.source.as_deref().unwrap_or("replay");
        let cluster = cfg.source_cluster(source);
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
    // The recording ends here; heartbeats missing after it say nothing about
    // the clusters, so the drain must not page for them.
    engine.suspend_heartbeat();
    let end = clock.now() + opts.drain;
    advance(
        &mut engine,
        &|t| clock.set(t),
        end,
        Some(&mut notifications),
    );
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
            fleet_storm: engine.correlator().fleet_storm_history(),
        },
        incidents,
        notifications,
    };
    rejections.sort_by_key(|r| r.line);
    Ok((result, rejections))
}

/// Ticks the engine at every deadline up to `until`, moving a clock that
/// never goes backwards with `set`. Planned notifications go to `out`, or
/// stay with the engine.
fn advance(
    engine: &mut Engine,
    set: &dyn Fn(Timestamp),
    until: Timestamp,
    mut out: Option<&mut Vec<Notification>>,
) {
    while let Some(d) = engine.next_deadline() {
        if d > until {
            break;
        }
        set(d);
        engine.tick();
        if let Some(out) = out.as_deref_mut() {
            out.extend(engine.take_planned());
        }
        if engine.next_deadline() == Some(d) {
            // Nothing was due after all; avoid spinning on the same instant.
            set(d + chrono::Duration::milliseconds(1));
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

fn store_at(data_dir: &Path) -> crate::store::StoreConfig {
    crate::store::StoreConfig {
        path: data_dir.to_path_buf(),
        ..Default::default()
    }
}

/// `stormcast backup`: writes the store at `data_dir` to `output` (`-` is stdout).
pub fn backup(
    data_dir: &Path,
    output: &Path,
) -> anyhow::Result<crate::store::backup::BackupSummary> {
    use crate::store::backup;
    if !data_dir.exists() {
        anyhow::bail!("no store at {}", data_dir.display());
    }
    let cfg = store_at(data_dir);
    if output.as_os_str() == "-" {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        return Ok(backup::backup(&cfg, &mut out)?);
    }
    // Write next to the target and rename, so a failed backup never leaves a
    // file that looks complete.
    let tmp = output.with_extension("partial");
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let summary = backup::backup(&cfg, &mut out)?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, output).with_context(|| format!("writing {}", output.display()))?;
    Ok(summary)
}

/// `stormcast restore`: reads a backup (`-` is stdin) into the store at `data_dir`.
pub fn restore(
    input: &Path,
    data_dir: &Path,
    force: bool,
) -> anyhow::Result<crate::store::backup::BackupSummary> {
    use crate::store::backup;
    let cfg = store_at(data_dir);
    if input.as_os_str() == "-" {
        let mut r = std::io::stdin().lock();
        return Ok(backup::restore(&cfg, &mut r, force)?);
    }
    let file =
        std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let mut r = std::io::BufReader::new(file);
    Ok(backup::restore(&cfg, &mut r, force)?)
}
