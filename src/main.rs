//! The `stormcast` command: parse arguments, set up logging, delegate to `app`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: the service allocates from
/// several threads (HTTP workers, sled's flusher, the dispatcher), where
/// glibc's per-thread arenas fragment into several times the live size.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use stormcast::app;
use stormcast::config::Overrides;

#[derive(Parser)]
#[command(
    name = "stormcast",
    version,
    about = "Alert correlation and analysis behind every cluster's Alertmanager"
)]
struct Cli {
    /// Log filter, e.g. `info` or `stormcast=debug,tower_http=info`.
    #[arg(long, global = true, env = "STORMCAST_LOG", default_value = "info")]
    log_level: String,
    /// Log format.
    #[arg(long, global = true, value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service. With no --config it runs on the embedded default:
    /// 127.0.0.1:9797, a sled store in ./data, and ./rules and ./models.
    Serve {
        /// Configuration file (YAML).
        #[arg(long, short, env = "STORMCAST_CONFIG")]
        config: Option<PathBuf>,
        /// Listen address, overriding server.listen.
        #[arg(long)]
        listen: Option<String>,
        /// Store folder, overriding store.path.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Rules folder, overriding rules_dir.
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Models folder, overriding models_dir.
        #[arg(long)]
        models: Option<PathBuf>,
        /// Accept unauthenticated webhooks on a non-loopback address.
        #[arg(long)]
        allow_unauthenticated: bool,
    },
    /// Run a recorded storm through the engine on a virtual clock and write the
    /// incidents and notifications it produces.
    Replay {
        /// JSON lines: {"at": RFC3339, "payload": <webhook>, "source": name}.
        #[arg(long)]
        input: PathBuf,
        /// Where to write the result JSON (`-` for stdout).
        #[arg(long, default_value = "-")]
        output: PathBuf,
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Folder of kube-state-metrics query results (`<metric>.json`).
        #[arg(long)]
        topology: Option<PathBuf>,
        /// Keep the virtual clock running this long after the last delivery.
        #[arg(long, default_value = "1h")]
        drain: String,
        /// Fail on the first rejected input line instead of counting it.
        #[arg(long)]
        strict: bool,
    },
    /// Export the whole store (alerts, incidents, journal, outbox...) as JSON
    /// lines. Run it with the service stopped: sled allows one process.
    Backup {
        /// Store folder (store.path).
        #[arg(long)]
        data_dir: PathBuf,
        /// Where to write the backup (`-` for stdout).
        #[arg(long)]
        output: PathBuf,
    },
    /// Import a backup into an empty store folder, then migrate it to this
    /// build's schema.
    Restore {
        /// A file written by `stormcast backup` (`-` for stdin).
        #[arg(long)]
        input: PathBuf,
        /// Store folder to create (store.path).
        #[arg(long)]
        data_dir: PathBuf,
        /// Replace the contents of a non-empty store folder.
        #[arg(long)]
        force: bool,
    },
    /// Write the journal of recorded deliveries as `replay` input, to re-run a
    /// real storm offline (for example against new rules). Run it with the
    /// service stopped, or against a restored backup.
    ExportJournal {
        /// Store folder.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Only deliveries received at or after this RFC3339 time.
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Only deliveries received before this RFC3339 time.
        #[arg(long)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Output file (`-` for stdout).
        #[arg(long, default_value = "-")]
        output: PathBuf,
    },
    /// Manage silences on a running stormcast (over its HTTP API).
    Silence {
        /// Base URL of the stormcast API.
        #[arg(
            long,
            env = "STORMCAST_URL",
            default_value = "http://127.0.0.1:9797",
            global = true
        )]
        url: String,
        /// API token (`server.api_token`) for creating and expiring silences.
        /// Prefer --token-file: arguments show up in process listings.
        #[arg(
            long,
            env = "STORMCAST_API_TOKEN",
            hide_env_values = true,
            global = true
        )]
        token: Option<String>,
        /// File holding the API token.
        #[arg(long, global = true, conflicts_with = "token")]
        token_file: Option<PathBuf>,
        #[command(subcommand)]
        command: SilenceCommand,
    },
    /// Forecast when series reach capacity (CSV, query_range JSON or a live
    /// Prometheus-compatible API).
    Forecast(stormcast::analyze::cli::ForecastArgs),
    /// Score every point of a series for anomalies, online (no look-ahead).
    Anomaly(stormcast::analyze::cli::AnomalyArgs),
    /// Render the forecasting report (HTML with charts, Markdown or JSON).
    Report(stormcast::analyze::cli::ReportArgs),
    /// Run correlation rule unit tests (given these alerts, expect these
    /// incidents and root causes), like `promtool test rules`.
    TestRules {
        /// Test files (YAML).
        files: Vec<PathBuf>,
        /// Rules folder the tests run against.
        #[arg(long, default_value = "rules")]
        rules: PathBuf,
    },
    /// Simulate a fleet-wide alert storm: writes replay JSON lines of real
    /// Alertmanager v4 webhooks and the ground truth.
    Simulate {
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 6)]
        clusters: usize,
        #[arg(long, default_value_t = 12)]
        nodes: usize,
        /// Faults per cluster.
        #[arg(long, default_value_t = 4)]
        faults: usize,
        /// Replay input to write.
        #[arg(long)]
        out: PathBuf,
        /// Ground truth to write (alert fingerprint → incident, root cause).
        #[arg(long)]
        truth: PathBuf,
        /// Folder to write the kube-state-metrics topology into (for
        /// `replay --topology`), with the fleet's `services.yaml` next to it.
        #[arg(long)]
        topology: Option<PathBuf>,
    },
    /// Mine recorded alerts (a store folder and/or replay JSON lines) for
    /// co-occurrence and precedence between alert names on related entities,
    /// and write suggested correlation rules with their support and confidence.
    Learn {
        /// Store folder to read alerts from (run with the service stopped).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Replay JSON lines to read alerts from.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Folder of kube-state-metrics query results, to place pods on nodes.
        #[arg(long)]
        topology: Option<PathBuf>,
        /// Rules folder whose `about`/`links`/weights the suggestions start from.
        #[arg(long, default_value = "rules")]
        rules: PathBuf,
        /// Related alerts co-occur when their starts are this close.
        #[arg(long, default_value = "15m")]
        window: String,
        #[arg(long, default_value_t = 3)]
        min_support: usize,
        #[arg(long, default_value_t = 0.5)]
        min_confidence: f64,
        #[arg(long, default_value_t = 1.2)]
        min_lift: f64,
        /// Ground truth of a simulated history (`simulate --truth`): labels
        /// for the learned ranking model, beside the store's incidents.
        #[arg(long)]
        truth: Option<PathBuf>,
        /// Where to write the suggested rules (`-` for stdout).
        #[arg(long, default_value = "-")]
        output: PathBuf,
    },
    /// Validate a configuration file and everything it refers to, reporting
    /// every error with its key path. Exits non-zero on any error.
    CheckConfig {
        /// Configuration file; without it the embedded default is checked.
        file: Option<PathBuf>,
        #[arg(long)]
        rules: Option<PathBuf>,
        #[arg(long)]
        models: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum SilenceCommand {
    /// Silence incidents matching every matcher, e.g.
    /// `stormcast silence add 'cluster="prod-1"' 'alertname=~"Kube.*"' -c "node upgrade"`.
    Add {
        /// Alertmanager matchers: name="value", name!="value", name=~"re", name!~"re".
        #[arg(required = true)]
        matchers: Vec<String>,
        /// How long the silence lasts.
        #[arg(long, short, default_value = "1h")]
        duration: String,
        /// Who is silencing (default: $USER).
        #[arg(long, short)]
        author: Option<String>,
        /// Why.
        #[arg(long, short)]
        comment: String,
    },
    /// List active and pending silences.
    List {
        /// Include expired silences.
        #[arg(long)]
        expired: bool,
    },
    /// Expire a silence now.
    Expire { id: String },
}

fn init_logging(level: &str, format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level, &cli.log_format);
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve {
            config,
            listen,
            data_dir,
            rules,
            models,
            allow_unauthenticated,
        } => {
            let overrides = Overrides {
                listen,
                data_dir,
                rules_dir: rules,
                models_dir: models,
                allow_unauthenticated,
            };
            let loaded = match app::load(config.as_deref(), &overrides) {
                Ok(l) => l,
                Err(errs) => {
                    eprintln!("invalid configuration:\n{errs}");
                    return Ok(ExitCode::from(2));
                }
            };
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(app::serve(loaded))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            input,
            output,
            config,
            rules,
            topology,
            drain,
            strict,
        } => {
            let overrides = Overrides {
                rules_dir: rules,
                ..Default::default()
            };
            let mut loaded = match app::load(config.as_deref(), &overrides) {
                Ok(l) => l,
                Err(errs) => {
                    eprintln!("invalid configuration:\n{errs}");
                    return Ok(ExitCode::from(2));
                }
            };
            if let Some(dir) = &topology {
                app::load_topology_dir(&mut loaded, dir);
            }
            let drain: stormcast::config::PromDuration =
                drain.parse().map_err(|e| anyhow::anyhow!("--drain: {e}"))?;
            let opts = app::ReplayOptions {
                input,
                drain: drain.as_chrono(),
                progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            };
            let (result, rejections) = app::replay(&loaded, &opts)?;
            for r in &rejections {
                eprintln!("{}:{}: {}", opts.input.display(), r.line, r.error);
            }
            if strict && !rejections.is_empty() {
                anyhow::bail!("{} input lines rejected", rejections.len());
            }
            let json = serde_json::to_vec_pretty(&result)?;
            if output.as_os_str() == "-" {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                out.write_all(&json)?;
                out.write_all(b"\n")?;
            } else {
                std::fs::write(&output, json)?;
                eprintln!(
                    "replayed {} deliveries ({} alerts) into {} incidents and {} notifications over {}s of virtual time",
                    result.stats.deliveries,
                    result.stats.alerts,
                    result.stats.incidents,
                    result.notifications.len(),
                    result.stats.virtual_seconds
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Backup { data_dir, output } => {
            let summary = app::backup(&data_dir, &output)?;
            eprintln!(
                "backed up {} records (schema version {}) from {}",
                summary.records,
                summary.schema_version,
                data_dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore {
            input,
            data_dir,
            force,
        } => {
            let summary = app::restore(&input, &data_dir, force)?;
            eprintln!(
                "restored {} records into {} (schema version {})",
                summary.records,
                data_dir.display(),
                summary.schema_version
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::ExportJournal {
            data_dir,
            since,
            until,
            output,
        } => {
            let cfg = stormcast::store::StoreConfig {
                path: data_dir,
                ..Default::default()
            };
            let store = stormcast::store::Store::open(&cfg)?;
            let n = if output.as_os_str() == "-" {
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                store.export_replay(&mut out, since, until)?
            } else {
                let mut out = std::io::BufWriter::new(std::fs::File::create(&output)?);
                let n = store.export_replay(&mut out, since, until)?;
                std::io::Write::flush(&mut out)?;
                n
            };
            eprintln!("exported {n} deliveries");
            Ok(ExitCode::SUCCESS)
        }
        Command::Silence {
            url,
            token,
            token_file,
            command,
        } => {
            use stormcast::notify::cli;
            let token = match token_file {
                Some(f) => {
                    let t = std::fs::read_to_string(&f).map_err(|e| {
                        anyhow::anyhow!("--token-file: cannot read {}: {e}", f.display())
                    })?;
                    Some(t.trim_end_matches(['\n', '\r']).to_owned())
                }
                None => token,
            };
            let server = cli::Server {
                url,
                token: token
                    .filter(|t| !t.is_empty())
                    .map(stormcast::config::Secret::new),
            };
            match command {
                SilenceCommand::Add {
                    matchers,
                    duration,
                    author,
                    comment,
                } => {
                    let duration: stormcast::config::PromDuration = duration
                        .parse()
                        .map_err(|e| anyhow::anyhow!("--duration: {e}"))?;
                    let author = author
                        .or_else(|| std::env::var("USER").ok())
                        .unwrap_or_else(|| "stormcast".to_owned());
                    let id = cli::add(
                        &server,
                        &cli::AddSilence {
                            matchers,
                            duration,
                            author,
                            comment,
                        },
                    )?;
                    println!("{id}");
                }
                SilenceCommand::List { expired } => print!("{}", cli::list(&server, expired)?),
                SilenceCommand::Expire { id } => {
                    cli::expire(&server, &id)?;
                    println!("expired {id}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Forecast(args) => stormcast::analyze::cli::forecast_cmd(&args),
        Command::Anomaly(args) => stormcast::analyze::cli::anomaly_cmd(&args),
        Command::Report(args) => stormcast::analyze::cli::report_cmd(&args),
        Command::TestRules { files, rules } => {
            let rules = match stormcast::correlate::Rules::load_dir(&rules) {
                Ok(r) => r,
                Err(errs) => {
                    eprintln!("invalid rules:\n{errs}");
                    return Ok(ExitCode::from(2));
                }
            };
            let mut failed = 0;
            for f in &files {
                let outcomes = match stormcast::correlate::ruletest::run_file(f, &rules) {
                    Ok(o) => o,
                    Err(errs) => {
                        eprintln!("{errs}");
                        failed += 1;
                        continue;
                    }
                };
                for o in outcomes {
                    if o.failures.is_empty() {
                        println!("  PASS {}: {}", f.display(), o.name);
                    } else {
                        failed += 1;
                        println!("  FAIL {}: {}", f.display(), o.name);
                        for m in o.failures {
                            println!("      {m}");
                        }
                    }
                }
            }
            if failed > 0 {
                println!("{failed} failed");
                Ok(ExitCode::FAILURE)
            } else {
                println!("SUCCESS");
                Ok(ExitCode::SUCCESS)
            }
        }
        Command::Learn {
            data_dir,
            input,
            topology,
            rules,
            window,
            min_support,
            min_confidence,
            min_lift,
            truth,
            output,
        } => stormcast::correlate::learn::run_cli(&stormcast::correlate::learn::LearnArgs {
            data_dir,
            input,
            topology,
            rules,
            window,
            min_support,
            min_confidence,
            min_lift,
            truth,
            output,
        }),
        Command::Simulate {
            seed,
            clusters,
            nodes,
            faults,
            out,
            truth,
            topology,
        } => {
            let cfg = stormcast::sim::SimConfig {
                seed,
                clusters,
                nodes_per_cluster: nodes,
                faults_per_cluster: faults,
                ..Default::default()
            };
            let storm = stormcast::sim::simulate(&cfg);
            std::fs::write(&out, storm.jsonl())?;
            std::fs::write(&truth, serde_json::to_vec_pretty(&storm.truth)?)?;
            if let Some(dir) = &topology {
                storm.write_topology(dir)?;
                std::fs::write(dir.join("services.yaml"), &storm.services_yaml)?;
            }
            eprintln!(
                "simulated {} alerts in {} deliveries, {} true incidents",
                storm.alert_count(),
                storm.lines.len(),
                storm.truth.incidents.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig {
            file,
            rules,
            models,
        } => {
            let overrides = Overrides {
                rules_dir: rules,
                models_dir: models,
                ..Default::default()
            };
            match app::load(file.as_deref(), &overrides) {
                Ok(_) => {
                    println!("configuration is valid");
                    Ok(ExitCode::SUCCESS)
                }
                Err(errs) => {
                    eprintln!("{} error(s):\n{errs}", errs.len());
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}
