//! Configuration: load YAML, validate everything (collecting every error with its
//! key path), resolve secrets, and fall back to an embedded default.
//!
//! `check-config` and start-up call the same [`load`], so a config that passes
//! `check-config` starts.

mod duration;
mod secret;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use duration::{DurationError, PromDuration};
pub use secret::{resolve_in_place, resolve_url_in_place, Secret, SecretRef};

/// The whole service configuration. Every section has a default, so an empty
/// file (or none at all) is a valid configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// HTTP listener for webhooks, the API and the UI.
    pub server: crate::api::ServerConfig,
    /// Where and how long state is kept.
    pub store: crate::store::StoreConfig,
    /// Limits applied to every webhook delivery.
    pub ingest: crate::ingest::IngestConfig,
    /// The Alertmanagers allowed to deliver, with their credentials.
    pub sources: Vec<crate::ingest::SourceConfig>,
    /// Engine cadence.
    pub engine: crate::engine::EngineConfig,
    /// Directory of correlation rules, service dependencies and rule tests
    /// (`*.yaml`). Relative paths are resolved against the config file's folder.
    pub rules_dir: Option<PathBuf>,
    /// Directory of forecast model definitions (`*.yaml`).
    pub models_dir: Option<PathBuf>,
    /// Where topology (kube-state-metrics series) comes from.
    pub topology: crate::correlate::TopologyConfig,
    /// The routing tree, in Alertmanager's syntax.
    pub route: Option<crate::notify::RouteConfig>,
    /// Notification receivers.
    pub receivers: Vec<crate::notify::ReceiverConfig>,
    /// Named time intervals for `mute_time_intervals` / `active_time_intervals`.
    pub time_intervals: Vec<crate::notify::TimeIntervalConfig>,
    /// Prometheus-compatible metric history for forecasting.
    pub history: crate::analyze::HistoryConfig,
    /// The dead-man's switch: each cluster's Watchdog heartbeat.
    pub heartbeat: crate::engine::HeartbeatConfig,
    /// Scheduled forecast digest to one receiver (off when absent).
    pub report_digest: Option<crate::analyze::digest::DigestConfig>,
}

/// One configuration problem, located by its key path (`sources[1].bearer_token`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn extend(&mut self, other: ConfigErrors) {
        self.0.extend(other.0);
    }

    /// Prefixes every error with the file it came from.
    pub fn in_file(mut self, file: &Path) -> Self {
        for e in &mut self.0 {
            e.path = if e.path.is_empty() {
                file.display().to_string()
            } else {
                format!("{}: {}", file.display(), e.path)
            };
        }
        self
    }

    pub fn into_result<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// What validation needs to know about where the config lives.
#[derive(Debug, Clone)]
pub struct ValidateCtx {
    /// Folder that relative paths (`*_file`, `rules_dir`) are resolved against.
    pub base_dir: PathBuf,
}

impl ValidateCtx {
    pub fn resolve_path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
}

/// Parses a YAML document into `T`, reporting every unknown key and the first
/// type error with its key path (and line, where the parser knows it).
pub fn parse_yaml<T: serde::de::DeserializeOwned + Default>(text: &str) -> Result<T, ConfigErrors> {
    let mut errs = ConfigErrors::default();
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#') || l.trim() == "---")
    {
        return Ok(T::default());
    }
    let mut unknown = Vec::new();
    let de = serde_norway::Deserializer::from_str(text);
    let mut on_unknown = |p: serde_ignored::Path<'_>| unknown.push(format_ignored_path(&p));
    let ignored = serde_ignored::Deserializer::new(de, &mut on_unknown);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(ignored);
    let value = match parsed {
        Ok(v) => Some(v),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let mut msg = inner.to_string();
            if let Some(loc) = inner.location() {
                msg = format!("line {}: {}", loc.line(), strip_location(&msg));
            }
            errs.push(if path == "." { String::new() } else { path }, msg);
            None
        }
    };
    for key in unknown {
        errs.push(key, "unknown field");
    }
    match value {
        Some(v) if errs.is_empty() => Ok(v),
        _ => Err(errs),
    }
}

fn strip_location(msg: &str) -> &str {
    msg.find(" at line ").map_or(msg, |i| &msg[..i])
}

fn format_ignored_path(p: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match p {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", format_ignored_path(parent)),
        P::Map { parent, key } => {
            let parent = format_ignored_path(parent);
            if parent.is_empty() {
                key.to_string()
            } else {
                format!("{parent}.{key}")
            }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            format_ignored_path(parent)
        }
    }
}

impl Config {
    /// Validates every section and resolves secrets in place, collecting every
    /// error rather than stopping at the first.
    pub fn validate(&mut self, ctx: &ValidateCtx) -> ConfigErrors {
        let mut errs = ConfigErrors::default();
        let api_token_given = self.server.api_token_given();
        self.server.validate("server", ctx, &mut errs);
        self.store.validate("store", &mut errs);
        self.ingest.validate("ingest", &mut errs);
        crate::ingest::validate_sources(&mut self.sources, ctx, &mut errs);
        self.engine.validate("engine", &mut errs);
        if !self.server.is_loopback()
            && self.sources.is_empty()
            && !self.server.allow_unauthenticated
        {
            errs.push(
                "server.listen",
                format!(
                    "{} is not a loopback address and no sources with credentials are configured; \
                     add sources or set server.allow_unauthenticated: true",
                    self.server.listen
                ),
            );
        }
        if !self.server.is_loopback() && !api_token_given && !self.server.allow_unauthenticated {
            errs.push(
                "server.api_token",
                format!(
                    "{} is not a loopback address and no API token is set, so anyone who reaches it \
                     could create silences and acknowledge incidents; set server.api_token \
                     (or _file/_env) or server.allow_unauthenticated: true",
                    self.server.listen
                ),
            );
        }
        self.topology.validate("topology", ctx, &mut errs);
        crate::notify::validate_config(self, ctx, &mut errs);
        self.history.validate("history", ctx, &mut errs);
        self.heartbeat.validate("heartbeat", &mut errs);
        if let Some(d) = &self.report_digest {
            let receivers: Vec<&str> = self.receivers.iter().map(|r| r.name.as_str()).collect();
            d.validate("report_digest", &receivers, &mut errs);
        }
        errs
    }

    /// The cluster configured for a source, for alerts without a `cluster` label.
    pub fn source_cluster(&self, source: &str) -> Option<&str> {
        self.sources
            .iter()
            .find(|s| s.name == source)
            .and_then(|s| s.cluster.as_deref())
    }

    pub fn rules_dir(&self, ctx: &ValidateCtx) -> PathBuf {
        ctx.resolve_path(self.rules_dir.as_deref().unwrap_or(Path::new("rules")))
    }

    pub fn models_dir(&self, ctx: &ValidateCtx) -> PathBuf {
        ctx.resolve_path(self.models_dir.as_deref().unwrap_or(Path::new("models")))
    }
}

/// Command-line overrides applied on top of the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub rules_dir: Option<PathBuf>,
    pub models_dir: Option<PathBuf>,
    pub allow_unauthenticated: bool,
}

/// Reads, parses and validates a config file (or the embedded default when
/// `path` is `None`).
pub fn load(
    path: Option<&Path>,
    overrides: &Overrides,
) -> Result<(Config, ValidateCtx), ConfigErrors> {
    let (mut config, base_dir) = match path {
        None => (Config::default(), PathBuf::from(".")),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| {
                let mut errs = ConfigErrors::default();
                errs.push(String::new(), format!("cannot read {}: {e}", p.display()));
                errs
            })?;
            let config = parse_yaml::<Config>(&text).map_err(|e| e.in_file(p))?;
            let base = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
            (config, base)
        }
    };
    if let Some(l) = &overrides.listen {
        config.server.listen = l.clone();
    }
    if let Some(d) = &overrides.data_dir {
        config.store.path = d.clone();
    }
    // Paths given on the command line are relative to the working directory,
    // not to the config file's folder.
    let from_cwd =
        |p: &Path| std::env::current_dir().map_or_else(|_| p.to_path_buf(), |cwd| cwd.join(p));
    if let Some(d) = &overrides.rules_dir {
        config.rules_dir = Some(from_cwd(d));
    }
    if let Some(d) = &overrides.models_dir {
        config.models_dir = Some(from_cwd(d));
    }
    if overrides.allow_unauthenticated {
        config.server.allow_unauthenticated = true;
    }
    let ctx = ValidateCtx { base_dir };
    let errs = config.validate(&ctx);
    let errs = match path {
        Some(p) => errs.in_file(p),
        None => errs,
    };
    errs.into_result((config, ctx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_default() {
        let c: Config = parse_yaml("# nothing\n").unwrap();
        assert_eq!(c.sources.len(), 0);
    }

    #[test]
    fn unknown_keys_are_all_reported_with_paths() {
        let errs =
            parse_yaml::<Config>("server:\n  lisen: x\nstore:\n  pth: y\nbogus: 1\n").unwrap_err();
        let paths: Vec<_> = errs.0.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"server.lisen"), "{errs}");
        assert!(paths.contains(&"store.pth"), "{errs}");
        assert!(paths.contains(&"bogus"), "{errs}");
    }

    #[test]
    fn the_api_token_is_resolved_in_place_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tok"), "s3cr3t-api-token-0123456789\n").unwrap();
        let mut c: Config = parse_yaml("server:\n  api_token_file: tok\n").unwrap();
        let errs = c.validate(&ValidateCtx {
            base_dir: dir.path().to_path_buf(),
        });
        assert!(errs.is_empty(), "{errs}");
        let token = c.server.api_token.as_ref().expect("resolved");
        assert_eq!(token.expose(), "s3cr3t-api-token-0123456789");
        assert!(c.server.api_token_file.is_none());
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert!(!serde_json::to_string(&c).unwrap().contains("s3cr3t"));
    }

    #[test]
    fn type_errors_name_the_key_and_line() {
        let errs = parse_yaml::<Config>("server:\n  max_body_bytes: lots\n").unwrap_err();
        assert_eq!(errs.0[0].path, "server.max_body_bytes");
        assert!(errs.0[0].message.starts_with("line 2"), "{errs}");
    }
}
