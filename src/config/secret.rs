//! Secrets: inline, from a `*_file`, or from the environment; never printed.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ConfigErrors;

/// A credential. `Debug`, `Display` and `Serialize` all print `<secret>`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The only way to read the value: grep for `expose` to audit every use.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<secret>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// The three ways a config can give one secret: `name`, `name_file`, `name_env`.
#[derive(Debug, Clone, Default)]
pub struct SecretRef<'a> {
    pub inline: Option<&'a Secret>,
    pub file: Option<&'a str>,
    pub env: Option<&'a str>,
}

impl SecretRef<'_> {
    pub fn is_set(&self) -> bool {
        self.inline.is_some() || self.file.is_some() || self.env.is_some()
    }

    /// Resolves to the secret's value. `path` is the key path of the inline field
    /// (e.g. `sources[0].bearer_token`); errors never contain the value.
    pub fn resolve(&self, path: &str, base: &Path, errs: &mut ConfigErrors) -> Option<Secret> {
        let given = [
            self.inline.is_some(),
            self.file.is_some(),
            self.env.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given > 1 {
            errs.push(
                path,
                format!("give at most one of {path}, {path}_file and {path}_env"),
            );
            return None;
        }
        if let Some(s) = self.inline {
            return Some(s.clone());
        }
        if let Some(f) = self.file {
            let p = if Path::new(f).is_absolute() {
                PathBuf::from(f)
            } else {
                base.join(f)
            };
            return match std::fs::read_to_string(&p) {
                Ok(s) => Some(Secret(s.trim_end_matches(['\n', '\r']).to_owned())),
                Err(e) => {
                    errs.push(
                        format!("{path}_file"),
                        format!("cannot read {}: {e}", p.display()),
                    );
                    None
                }
            };
        }
        if let Some(var) = self.env {
            return match std::env::var(var) {
                Ok(s) if !s.is_empty() => Some(Secret(s)),
                _ => {
                    errs.push(
                        format!("{path}_env"),
                        format!("environment variable {var} is not set or empty"),
                    );
                    None
                }
            };
        }
        None
    }
}

/// Resolves a secret given as `x`, `x_file` or `x_env` in place: afterwards the
/// value (if any) is in `inline` and the other two are cleared, so the rest of
/// the program only ever reads `inline`. `path` is the inline field's key path.
/// Returns whether a value is present.
pub fn resolve_in_place(
    path: &str,
    inline: &mut Option<Secret>,
    file: &mut Option<String>,
    env: &mut Option<String>,
    base: &Path,
    errs: &mut ConfigErrors,
) -> bool {
    let r = SecretRef {
        inline: inline.as_ref(),
        file: file.as_deref(),
        env: env.as_deref(),
    };
    match r.resolve(path, base, errs) {
        Some(v) => {
            *inline = Some(v);
            *file = None;
            *env = None;
            true
        }
        None => false,
    }
}

/// Like [`resolve_in_place`] for a required URL (a webhook URL is a credential):
/// reports a missing value and anything that is not http(s).
pub fn resolve_url_in_place(
    path: &str,
    inline: &mut Option<Secret>,
    file: &mut Option<String>,
    env: &mut Option<String>,
    base: &Path,
    errs: &mut ConfigErrors,
) {
    let given = inline.is_some() || file.is_some() || env.is_some();
    let field = path.rsplit('.').next().unwrap_or(path).to_owned();
    if !resolve_in_place(path, inline, file, env, base, errs) {
        if !given {
            errs.push(path, format!("required (or {field}_file / {field}_env)"));
        }
        return;
    }
    let url = inline.as_ref().map(Secret::expose).unwrap_or_default();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        errs.push(path, "must be an http(s) URL");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "<secret> <secret>");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<secret>\"");
    }

    #[test]
    fn file_and_env_resolution() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tok"), "abc\n").unwrap();
        let mut errs = ConfigErrors::default();
        let r = SecretRef {
            file: Some("tok"),
            ..Default::default()
        };
        assert_eq!(
            r.resolve("x", dir.path(), &mut errs).unwrap().expose(),
            "abc"
        );
        let r = SecretRef {
            env: Some("STORMCAST_TEST_SURELY_UNSET"),
            ..Default::default()
        };
        assert!(r.resolve("x", dir.path(), &mut errs).is_none());
        assert_eq!(errs.0[0].path, "x_env");
    }
}
