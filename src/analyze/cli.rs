//! The `forecast`, `anomaly` and `report` commands.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::Utc;

use super::anomaly::{peer_outliers, score_series_at, Profile};
use super::forecast::{CrossCheck, ForecastParams, Seasonality, DEFAULT_MAX_CROSS_CHECKS};
use super::history::PromClient;
use super::report::{fmt_lead, fmt_num, Report, SeriesResult};
use super::run::{forecast_many, match_capacity, Capacity, CrossCheckSummary};
use super::series::{parse_csv, parse_input, parse_prom_response, Series};
use crate::config::{PromDuration, Secret};

/// Where series come from, shared by `forecast` and `report`.
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    /// A `timestamp,value` CSV or a Prometheus query_range JSON body.
    #[arg(long, conflicts_with = "prometheus")]
    pub input: Option<PathBuf>,
    /// Base URL of a Prometheus-compatible API (Prometheus, Thanos, VictoriaMetrics).
    #[arg(long, requires = "query")]
    pub prometheus: Option<String>,
    /// PromQL for usage (with --prometheus).
    #[arg(long)]
    pub query: Option<String>,
    /// Environment variable holding a bearer token for --prometheus.
    #[arg(long)]
    pub bearer_token_env: Option<String>,
    /// Capacity: a number, or a PromQL query (with --prometheus) whose series
    /// are matched to usage series by their shared labels.
    #[arg(long)]
    pub capacity: Option<String>,
    /// How far ahead to look.
    #[arg(long, default_value = "24h")]
    pub horizon: String,
    /// History read from --prometheus.
    #[arg(long, default_value = "7d")]
    pub lookback: String,
    /// Query resolution for --prometheus (default lookback/2016).
    #[arg(long)]
    pub step: Option<String>,
    /// auto, daily, weekly or none.
    #[arg(long, default_value = "auto")]
    pub seasonality: String,
    /// envelope: the envelope forecast only; both: plus an MSTL+AutoETS
    /// cross-check on at-risk series (intervals merged); mstl: MSTL+AutoETS
    /// on every series, its crossings as the headline.
    #[arg(long, default_value = "both", value_parser = ["envelope", "both", "mstl"])]
    pub method: String,
    /// With --method both: at most this many at-risk series get the MSTL
    /// cross-check, the soonest to exhaust first; the others keep the
    /// envelope forecast (0: no limit).
    #[arg(long, default_value_t = DEFAULT_MAX_CROSS_CHECKS)]
    pub max_cross_checks: usize,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ForecastArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// json, table, html or md.
    #[arg(long, default_value = "table", value_parser = ["json", "table", "html", "md"])]
    pub output: String,
    /// Write to this file instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Output file; the format follows its extension (.html, .md, .json).
    #[arg(long)]
    pub output: PathBuf,
}

#[derive(Debug, Clone, clap::Args)]
pub struct AnomalyArgs {
    /// A `timestamp,value` CSV (or a query_range JSON body: one more column, `series`).
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write `timestamp,value,anomaly_score` (`-` for stdout).
    #[arg(long, default_value = "-")]
    pub output: PathBuf,
    /// With several series, also print those unlike their peers.
    #[arg(long)]
    pub peers: bool,
    /// The false-alert / miss trade-off: after a score of the profile's
    /// threshold a series rests for 4h (one alert per episode).
    #[arg(long, value_enum, default_value_t = Profile::Standard)]
    pub profile: Profile,
}

fn params(a: &SourceArgs) -> anyhow::Result<ForecastParams> {
    let horizon: PromDuration = a
        .horizon
        .parse()
        .map_err(|e| anyhow::anyhow!("--horizon: {e}"))?;
    if horizon.is_zero() {
        bail!("--horizon must be greater than 0");
    }
    let seasonality = match a.seasonality.as_str() {
        "auto" => Seasonality::Auto,
        "daily" => Seasonality::Daily,
        "weekly" => Seasonality::Weekly,
        "none" => Seasonality::None,
        o => bail!("--seasonality {o:?}: expected auto, daily, weekly or none"),
    };
    let cross_check = match a.method.as_str() {
        "envelope" => CrossCheck::Envelope,
        "mstl" => CrossCheck::Mstl,
        _ => CrossCheck::Both,
    };
    Ok(ForecastParams {
        horizon_secs: horizon.as_std().as_secs() as i64,
        seasonality,
        cross_check,
        max_cross_checks: a.max_cross_checks,
        ..Default::default()
    })
}

/// Loads series and their capacities from the file or Prometheus.
fn load_inputs(a: &SourceArgs) -> anyhow::Result<Vec<(Series, Capacity)>> {
    let cap_num = a.capacity.as_deref().map(|c| c.trim().parse::<f64>());
    match (&a.input, &a.prometheus) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let series =
                parse_input(&text).map_err(|e| anyhow::anyhow!("{}:\n{e}", path.display()))?;
            let cap = match cap_num {
                None => bail!("--capacity is required (a number for file input)"),
                Some(Ok(c)) if c.is_finite() => c,
                Some(_) => bail!(
                    "--capacity {:?} is not a number; capacity queries need --prometheus",
                    a.capacity.as_deref().unwrap_or_default()
                ),
            };
            let file = path
                .file_name()
                .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
            Ok(series
                .into_iter()
                .map(|mut s| {
                    // An unlabelled (CSV) series is named after its file.
                    if s.labels.is_empty() {
                        s.labels.insert("file".into(), file.clone());
                    }
                    (s, Ok(cap))
                })
                .collect())
        }
        (None, Some(url)) => {
            let query = a.query.as_deref().context("--prometheus needs --query")?;
            let auth = match &a.bearer_token_env {
                Some(var) => Some(Secret::new(format!(
                    "Bearer {}",
                    std::env::var(var)
                        .with_context(|| format!("--bearer-token-env: {var} is not set"))?
                ))),
                None => None,
            };
            let client = PromClient::for_url(url, auth)?;
            let lookback: PromDuration = a
                .lookback
                .parse()
                .map_err(|e| anyhow::anyhow!("--lookback: {e}"))?;
            let step = match &a.step {
                Some(s) => s
                    .parse::<PromDuration>()
                    .map_err(|e| anyhow::anyhow!("--step: {e}"))?
                    .as_std(),
                None => Duration::from_secs((lookback.as_std().as_secs() / 2016).max(15)),
            };
            let now = Utc::now().timestamp();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let usage = client
                    .query_range(
                        query,
                        now - lookback.as_std().as_secs() as i64,
                        now,
                        step.as_secs() as i64,
                    )
                    .await?;
                let caps: Option<Vec<Series>> = match (&cap_num, &a.capacity) {
                    (Some(Ok(_)), _) | (None, None) => None,
                    (_, Some(q)) => Some(client.query(q, now).await?),
                    _ => None,
                };
                Ok::<_, anyhow::Error>(
                    usage
                        .into_iter()
                        .map(|s| {
                            let cap = match (&cap_num, &caps) {
                                (Some(Ok(c)), _) => Ok(*c),
                                (_, Some(caps)) => match_capacity(&s, caps, &[]),
                                _ => Err("no --capacity given".to_string()),
                            };
                            (s, cap)
                        })
                        .collect(),
                )
            })
        }
        (None, None) => bail!("give --input FILE or --prometheus URL --query PROMQL"),
    }
}

fn progress(len: usize) -> indicatif::ProgressBar {
    if len < 2 || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} forecasting [{bar:40}] {pos}/{len} series ({per_sec}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn run_all(a: &SourceArgs, keep_history: usize) -> anyhow::Result<(Report, CrossCheckSummary)> {
    let p = params(a)?;
    let inputs = load_inputs(a)?;
    if inputs.is_empty() {
        bail!("the input has no series");
    }
    let bar = progress(inputs.len());
    let (results, cross) = forecast_many(&inputs, &p, keep_history, &|| bar.inc(1));
    bar.finish_and_clear();
    Ok((Report::new(Utc::now(), results), cross))
}

/// The run's line about the limit on MSTL cross-checks, when it bound.
fn cross_check_line(c: &CrossCheckSummary) -> Option<String> {
    (c.skipped > 0).then(|| {
        format!(
            "MSTL cross-check on the {} soonest of {} at-risk series; skipped on {} (--max-cross-checks {})",
            c.checked, c.wanted, c.skipped, c.limit
        )
    })
}

fn write_out(path: Option<&PathBuf>, text: &str) -> anyhow::Result<()> {
    match path {
        Some(p) if p.as_os_str() != "-" => {
            std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))
        }
        _ => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            if !text.ends_with('\n') {
                out.write_all(b"\n")?;
            }
            Ok(())
        }
    }
}

/// `stormcast forecast`. Exits 0 even when series fail (their `error` says
/// why) unless every series failed.
pub fn forecast_cmd(args: &ForecastArgs) -> anyhow::Result<ExitCode> {
    let keep = if args.output == "html" { 600 } else { 0 };
    let (report, cross) = run_all(&args.source, keep)?;
    let text = match args.output.as_str() {
        "json" => report.to_json(),
        "html" => report.to_html(),
        "md" => report.to_markdown(),
        _ => table(&report.series),
    };
    write_out(args.out.as_ref(), &text)?;
    let failed = report
        .series
        .iter()
        .filter(|s| s.forecast.is_none())
        .count();
    for s in report.series.iter().filter(|s| s.error.is_some()) {
        eprintln!("{}: {}", s.name, s.error.as_deref().unwrap_or_default());
    }
    if let Some(line) = cross_check_line(&cross) {
        eprintln!("{line}");
    }
    Ok(if failed == report.series.len() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `stormcast report`.
pub fn report_cmd(args: &ReportArgs) -> anyhow::Result<ExitCode> {
    let (report, cross) = run_all(&args.source, 600)?;
    let ext = args
        .output
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("html")
        .to_ascii_lowercase();
    let text = match ext.as_str() {
        "md" | "markdown" => report.to_markdown(),
        "json" => report.to_json(),
        _ => report.to_html(),
    };
    write_out(Some(&args.output), &text)?;
    eprintln!(
        "wrote {}: {} series, {} at risk",
        args.output.display(),
        report.series.len(),
        report.at_risk().count()
    );
    if let Some(line) = cross_check_line(&cross) {
        eprintln!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

fn table(rows: &[SeriesResult]) -> String {
    let mut out = format!(
        "{:<50} {:>10} {:>10} {:>6} {:<20} {:>8} {:>6} {:<9}\n",
        "SERIES", "CURRENT", "CAPACITY", "USED", "EXHAUSTION (UTC)", "IN", "CONF", "METHOD"
    );
    for r in rows {
        let name: String = if r.name.chars().count() > 50 {
            r.name.chars().take(49).collect::<String>() + "…"
        } else {
            r.name.clone()
        };
        match &r.forecast {
            Some(f) => out.push_str(&format!(
                "{:<50} {:>10} {:>10} {:>5.0}% {:<20} {:>8} {:>5.0}% {:<9}\n",
                name,
                fmt_num(f.current),
                fmt_num(f.capacity),
                100.0 * f.utilisation(),
                f.exhaustion_at
                    .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M").to_string()),
                r.lead_secs().map_or("-".into(), fmt_lead),
                100.0 * f.confidence,
                format!("{:?}", f.method).to_lowercase()
            )),
            None => out.push_str(&format!(
                "{:<50} error: {}\n",
                name,
                r.error.as_deref().unwrap_or_default()
            )),
        }
    }
    out
}

/// `stormcast anomaly`: one output row per input row, in input order,
/// scored online. Rows with NaN/Inf values get an empty score.
pub fn anomaly_cmd(args: &AnomalyArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.input)
        .with_context(|| format!("reading {}", args.input.display()))?;
    let mut out = String::new();
    let fmt_score = |s: Option<f64>| s.map_or(String::new(), |s| format!("{s:.4}"));
    let threshold = args.profile.threshold();
    if text.trim_start().starts_with('{') {
        let series = parse_prom_response(text.as_bytes())
            .map_err(|e| anyhow::anyhow!("{}:\n{e}", args.input.display()))?;
        out.push_str("series,timestamp,value,anomaly_score\n");
        for s in &series {
            let name = s.name().replace('"', "\"\"");
            for (p, sc) in s.points.iter().zip(score_series_at(&s.points, threshold)) {
                out.push_str(&format!("\"{name}\",{},{},{}\n", p.0, p.1, fmt_score(sc)));
            }
        }
        if args.peers {
            let refs: Vec<&[(i64, f64)]> = series.iter().map(|s| s.points.as_slice()).collect();
            match peer_outliers(&refs, 0.5) {
                Ok(o) if o.is_empty() => eprintln!("no series unlike its peers"),
                Ok(o) => {
                    for i in o {
                        eprintln!("unlike its peers: {}", series[i].name());
                    }
                }
                Err(e) => eprintln!("peer comparison failed: {e}"),
            }
        }
    } else {
        let rows =
            parse_csv(&text).map_err(|e| anyhow::anyhow!("{}:\n{e}", args.input.display()))?;
        let raw: Vec<&str> = text.lines().collect();
        let pts: Vec<(i64, f64)> = rows.iter().map(|r| (r.timestamp, r.value)).collect();
        let header: Vec<String> = raw
            .iter()
            .find(|l| !l.trim().is_empty())
            .map(|h| {
                h.split(',')
                    .map(|c| c.trim().trim_matches('"').to_ascii_lowercase())
                    .collect()
            })
            .unwrap_or_default();
        let ti = header
            .iter()
            .position(|c| c == "timestamp" || c == "time")
            .unwrap_or(0);
        out.push_str("timestamp,value,anomaly_score\n");
        for (r, sc) in rows.iter().zip(score_series_at(&pts, threshold)) {
            // The timestamp is written back as given.
            let ts = raw
                .get(r.line - 1)
                .and_then(|l| l.split(',').nth(ti))
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|| r.timestamp.to_string());
            out.push_str(&format!("{ts},{},{}\n", r.value, fmt_score(sc)));
        }
    }
    write_out(Some(&args.output), &out)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lists_errors_and_forecasts() {
        let r = SeriesResult {
            name: "x".into(),
            labels: Default::default(),
            model: None,
            error: Some("insufficient history".into()),
            forecast: None,
            history: vec![],
            anomaly_score: None,
            peer_outlier: None,
        };
        let t = table(&[r]);
        assert!(t.contains("error: insufficient history"));
    }
}
