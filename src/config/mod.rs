//! Configuration: load YAML, validate everything (collecting every error with its
//! key path), resolve secrets, and fall back to an embedded default.
//!
//! `check-config` and start-up call the same [`load`], so a config that passes
//! `check-config` starts.

mod duration;
mod secret;

use std::collections::HashMap;
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
    /// What is worth a message at all.
    pub notify: crate::notify::NotifyConfig,
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

/// One configuration problem, located by its key path (`sources[1].bearer_token`)
/// and, where the file shows it, its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
    /// The line (1-based) of the key in its file.
    pub line: Option<usize>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        if let Some(l) = self.line {
            write!(f, "line {l}: ")?;
        }
        f.write_str(&self.message)
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
            line: None,
        });
    }

    /// Like [`push`](Self::push), at a known line.
    fn push_at(&mut self, path: String, message: String, line: Option<usize>) {
        self.0.push(ConfigError {
            path,
            message,
            line,
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

    /// Prefixes every error with the file it came from, and its line there
    /// as compilers do (`config.yaml:12: sources[1].name: …`).
    pub fn in_file(mut self, file: &Path) -> Self {
        for e in &mut self.0 {
            let at = match e.line.take() {
                Some(l) => format!("{}:{l}", file.display()),
                None => file.display().to_string(),
            };
            e.path = if e.path.is_empty() {
                at
            } else {
                format!("{at}: {}", e.path)
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
/// type error with its key path and line.
pub fn parse_yaml<T: serde::de::DeserializeOwned + Default>(text: &str) -> Result<T, ConfigErrors> {
    match parse_yaml_partial::<T>(text, |_| None) {
        (Some(v), errs) if errs.is_empty() => Ok(v),
        (_, errs) => Err(errs),
    }
}

/// Parses a YAML document into `T` as far as it goes: the value whenever the
/// document has the right shape (unknown keys are reported, not fatal, so
/// that the rest can still be checked), and every problem found, each at
/// its key's own line. `known` gives the document as parsed back as JSON
/// (`serde_json::to_value`), whose keys at an unknown key's parent are the
/// names to suggest ("did you mean …?"); `|_| None` suggests nothing.
pub fn parse_yaml_partial<T: serde::de::DeserializeOwned + Default>(
    text: &str,
    known: impl Fn(&T) -> Option<serde_json::Value>,
) -> (Option<T>, ConfigErrors) {
    let mut errs = ConfigErrors::default();
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#') || l.trim() == "---")
    {
        return (Some(T::default()), errs);
    }
    let lines = key_lines(text);
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
            let mut msg = strip_location(&inner.to_string()).to_owned();
            // The parser's message may repeat the key or an enclosing one;
            // the path already says where.
            let mut cut = path.len();
            loop {
                if let Some(rest) = msg.strip_prefix(&format!("{}: ", &path[..cut])) {
                    msg = rest.to_owned();
                    break;
                }
                match path[..cut].rfind('.') {
                    Some(i) => cut = i,
                    None => break,
                }
            }
            let line = lines
                .get(&path)
                .copied()
                .or_else(|| inner.location().map(|l| l.line()));
            errs.push_at(if path == "." { String::new() } else { path }, msg, line);
            None
        }
    };
    // A type error leaves no value: the defaults still name every section.
    // Only a document with unknown keys needs the known ones.
    let fields = if unknown.is_empty() {
        None
    } else {
        match &value {
            Some(v) => known(v),
            None => known(&T::default()),
        }
    };
    for key in unknown {
        let mut msg = String::from("unknown field");
        if let Some(near) = fields.as_ref().and_then(|f| nearest_field(f, &key)) {
            msg = format!("{msg}, did you mean {near:?}?");
        }
        let line = lines.get(&key).copied();
        errs.push_at(key, msg, line);
    }
    (value, errs)
}

/// The known key nearest to the last part of the dotted `path`, among the
/// keys the parsed document has at its parent: the closest by edit
/// distance, when it is close enough to be a typo.
fn nearest_field(doc: &serde_json::Value, path: &str) -> Option<String> {
    let (parent, key) = match path.rfind('.') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    };
    let mut at = doc;
    for part in parent.split('.').filter(|p| !p.is_empty()) {
        let (name, indices) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
        at = at.get(name)?;
        for ix in indices.split('[').filter(|i| !i.is_empty()) {
            at = at.get(ix.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    at.as_object()?
        .keys()
        .map(|k| (strsim::damerau_levenshtein(k, key), k))
        .filter(|(d, k)| *d <= (k.len().max(key.len()) / 3).max(1))
        .min()
        .map(|(_, k)| k.clone())
}

/// The line (1-based) of every key of a block-style YAML document, by key
/// path as the parser names it (`receivers[0].email_configs[1].to`). Keys
/// inside flow collections (`{a: 1}`) and block scalars are not indexed.
fn key_lines(text: &str) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    // Open keys and sequence items, innermost last: (column, path). An
    // item sits one column right of its dash, so its keys nest under it.
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut items: HashMap<String, usize> = HashMap::new();
    let mut scalar_above: Option<usize> = None;
    for (n, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start();
        let mut col = raw.len() - trimmed.len();
        if trimmed.is_empty() {
            continue;
        }
        if let Some(c) = scalar_above {
            if col > c {
                continue;
            }
            scalar_above = None;
        }
        if trimmed.starts_with('#') || trimmed.starts_with("---") {
            continue;
        }
        let mut rest = trimmed;
        while let Some(after) = rest
            .strip_prefix("- ")
            .or_else(|| (rest == "-").then_some(""))
        {
            while stack.last().is_some_and(|(c, _)| *c > col) {
                stack.pop();
            }
            let owner = stack.last().map_or(String::new(), |(_, p)| p.clone());
            let ix = items.entry(owner.clone()).or_insert(0);
            let path = format!("{owner}[{ix}]");
            *ix += 1;
            out.entry(path.clone()).or_insert(n + 1);
            stack.push((col + 1, path));
            let skipped = rest.len() - after.len();
            let after_trim = after.trim_start();
            col += skipped + (after.len() - after_trim.len());
            rest = after_trim;
        }
        let Some((key, value)) = yaml_key(rest) else {
            continue;
        };
        while stack.last().is_some_and(|(c, _)| *c >= col) {
            stack.pop();
        }
        let path = match stack.last() {
            Some((_, p)) => format!("{p}.{key}"),
            None => key.to_owned(),
        };
        items.remove(&path);
        out.entry(path.clone()).or_insert(n + 1);
        let v = value.trim_start();
        if v.starts_with('|') || v.starts_with('>') {
            scalar_above = Some(col);
        }
        stack.push((col, path));
    }
    out
}

/// A block mapping line's key and what follows its colon.
fn yaml_key(line: &str) -> Option<(&str, &str)> {
    let (key, value) = if let Some(q) = line.strip_prefix('"').or_else(|| line.strip_prefix('\'')) {
        let close = q.find(['"', '\''])?;
        let after = q[close + 1..].strip_prefix(':')?;
        (&q[..close], after)
    } else {
        let colon = line.find(':')?;
        let key = &line[..colon];
        if key.is_empty() || key.contains([' ', '{', '[', '#']) {
            return None;
        }
        (key, &line[colon + 1..])
    };
    (value.is_empty() || value.starts_with([' ', '\t'])).then_some((key, value))
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
    let mut early = ConfigErrors::default();
    let mut lines = HashMap::new();
    let (mut config, base_dir) = match path {
        None => (Config::default(), PathBuf::from(".")),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| {
                let mut errs = ConfigErrors::default();
                errs.push(String::new(), format!("cannot read {}: {e}", p.display()));
                errs
            })?;
            // Unknown keys do not stop the rest of the file from being
            // checked: every problem is reported in one run.
            let (config, parse_errs) =
                parse_yaml_partial::<Config>(&text, |c| serde_json::to_value(c).ok());
            let Some(config) = config else {
                return Err(parse_errs.in_file(p));
            };
            early = parse_errs.in_file(p);
            lines = key_lines(&text);
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
    let mut errs = config.validate(&ctx);
    for e in &mut errs.0 {
        e.line = e.line.or_else(|| lines.get(&e.path).copied());
    }
    let errs = match path {
        Some(p) => errs.in_file(p),
        None => errs,
    };
    early.extend(errs);
    early.into_result((config, ctx))
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
    fn unknown_keys_have_their_line_and_a_suggestion() {
        let text = "server:\n  listen: \"127.0.0.1:9797\"\n  lisen: x\nreceivers:\n  - name: a\n    webhook_configs:\n      - url: http://x\n        sendresolved: true\n";
        let (value, errs) = parse_yaml_partial::<Config>(text, |c| serde_json::to_value(c).ok());
        assert!(value.is_some(), "unknown keys leave the rest parsed");
        let by_path: HashMap<&str, (&str, Option<usize>)> = errs
            .0
            .iter()
            .map(|e| (e.path.as_str(), (e.message.as_str(), e.line)))
            .collect();
        assert_eq!(
            by_path["server.lisen"],
            ("unknown field, did you mean \"listen\"?", Some(3))
        );
        assert_eq!(
            by_path["receivers[0].webhook_configs[0].sendresolved"],
            ("unknown field, did you mean \"send_resolved\"?", Some(8))
        );
        let shown = errs.in_file(Path::new("c.yaml")).to_string();
        assert!(
            shown.contains("c.yaml:3: server.lisen: unknown field"),
            "{shown}"
        );
        // Nothing near enough to suggest.
        let (_, errs) =
            parse_yaml_partial::<Config>("zzzzzz: 1\n", |c| serde_json::to_value(c).ok());
        assert_eq!(
            (errs.0[0].message.as_str(), errs.0[0].line),
            ("unknown field", Some(1))
        );
    }

    #[test]
    fn key_lines_follow_block_mappings_and_sequences() {
        let text = "a:\n  b: 1\n  c: |\n    d: not a key\n  e:\n  - f: 2\n    g: 3\n  - f: 4\n# h: 5\ni: [1, 2]\n\"j k\": 6\n";
        let l = key_lines(text);
        let want = [
            ("a", 1),
            ("a.b", 2),
            ("a.c", 3),
            ("a.e", 5),
            ("a.e[0]", 6),
            ("a.e[0].f", 6),
            ("a.e[1]", 8),
            ("a.e[0].g", 7),
            ("a.e[1].f", 8),
            ("i", 10),
            ("j k", 11),
        ];
        for (path, line) in want {
            assert_eq!(l.get(path), Some(&line), "{path}: {l:?}");
        }
        assert_eq!(l.len(), want.len(), "{l:?}");
    }

    #[test]
    fn type_errors_name_the_key_and_line() {
        let errs = parse_yaml::<Config>("server:\n  max_body_bytes: lots\n").unwrap_err();
        assert_eq!(errs.0[0].path, "server.max_body_bytes");
        assert_eq!(errs.0[0].line, Some(2), "{errs}");
    }
}
