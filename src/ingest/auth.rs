//! Source authentication: Bearer or Basic, exactly as Alertmanager's
//! `http_config` sends it, compared in constant time. The API's own token
//! ([`ApiToken`], for silences and acknowledgements) is checked the same way.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{ConfigErrors, Secret, SecretRef, ValidateCtx};

/// An Alertmanager (or HA pair) allowed to deliver webhooks.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SourceConfig {
    /// Unique name, used in logs, metrics and the journal.
    pub name: String,
    /// Cluster for alerts that carry no `cluster` label.
    pub cluster: Option<String>,
    /// Token expected as `Authorization: Bearer <token>`.
    pub bearer_token: Option<Secret>,
    /// File holding the bearer token.
    pub bearer_token_file: Option<String>,
    /// Environment variable holding the bearer token.
    pub bearer_token_env: Option<String>,
    /// Credentials expected as HTTP Basic auth.
    pub basic_auth: Option<BasicAuthConfig>,
    #[serde(skip)]
    pub credential: Option<Credential>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BasicAuthConfig {
    pub username: String,
    pub password: Option<Secret>,
    pub password_file: Option<String>,
    pub password_env: Option<String>,
}

/// A resolved credential, stored as a SHA-256 digest so that comparison is
/// constant-time and independent of the secret's length.
#[derive(Clone)]
pub enum Credential {
    Bearer([u8; 32]),
    Basic([u8; 32]),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Bearer(_) => f.write_str("Bearer(<secret>)"),
            Credential::Basic(_) => f.write_str("Basic(<secret>)"),
        }
    }
}

/// The credential an `Authorization` header presents (`Bearer` or `Basic`),
/// digested for a constant-time comparison; `None` when missing or malformed.
fn presented(header: Option<&[u8]>) -> Option<Credential> {
    let header = std::str::from_utf8(header?).ok()?;
    let (scheme, value) = header.trim().split_once(' ')?;
    let value = value.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        Some(Credential::Bearer(digest(value.as_bytes())))
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value)
            .ok()?;
        Some(Credential::Basic(digest(&decoded)))
    } else {
        None
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Validates the `sources` list and resolves each source's credential.
pub fn validate_sources(sources: &mut [SourceConfig], ctx: &ValidateCtx, errs: &mut ConfigErrors) {
    let mut names = std::collections::HashSet::new();
    for (i, s) in sources.iter_mut().enumerate() {
        let path = format!("sources[{i}]");
        if s.name.is_empty() {
            errs.push(format!("{path}.name"), "required");
        } else if !names.insert(s.name.clone()) {
            errs.push(
                format!("{path}.name"),
                format!("duplicate source name {:?}", s.name),
            );
        }
        if let Some(c) = &s.cluster {
            if c.is_empty() {
                errs.push(format!("{path}.cluster"), "must not be empty when given");
            }
        }
        let bearer = SecretRef {
            inline: s.bearer_token.as_ref(),
            file: s.bearer_token_file.as_deref(),
            env: s.bearer_token_env.as_deref(),
        };
        match (&s.basic_auth, bearer.is_set()) {
            (Some(_), true) => errs.push(
                path.clone(),
                "give either bearer_token or basic_auth, not both",
            ),
            (None, false) => errs.push(
                path.clone(),
                "needs credentials: bearer_token (or _file/_env) or basic_auth",
            ),
            (None, true) => {
                if let Some(t) =
                    bearer.resolve(&format!("{path}.bearer_token"), &ctx.base_dir, errs)
                {
                    if t.is_empty() {
                        errs.push(format!("{path}.bearer_token"), "must not be empty");
                    }
                    s.credential = Some(Credential::Bearer(digest(t.expose().as_bytes())));
                }
            }
            (Some(b), false) => {
                if b.username.is_empty() || b.username.contains(':') {
                    errs.push(
                        format!("{path}.basic_auth.username"),
                        "required, and must not contain ':'",
                    );
                }
                let pw = SecretRef {
                    inline: b.password.as_ref(),
                    file: b.password_file.as_deref(),
                    env: b.password_env.as_deref(),
                };
                if !pw.is_set() {
                    errs.push(format!("{path}.basic_auth.password"), "required");
                }
                if let Some(p) =
                    pw.resolve(&format!("{path}.basic_auth.password"), &ctx.base_dir, errs)
                {
                    let pair = format!("{}:{}", b.username, p.expose());
                    s.credential = Some(Credential::Basic(digest(pair.as_bytes())));
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No or malformed `Authorization` header: 401.
    #[error("missing or malformed Authorization header (expected Bearer or Basic)")]
    Missing,
    /// Credentials given but matching no source: 403.
    #[error("credentials match no configured source")]
    Forbidden,
    /// The API token is missing or wrong: 401 (there is only one identity,
    /// so a wrong token is no better than none).
    #[error("this endpoint changes state: send Authorization: Bearer <server.api_token>")]
    ApiToken,
}

/// Shortest API token accepted (`openssl rand -hex 32` gives 64).
pub const MIN_API_TOKEN_LEN: usize = 16;

/// Checks the value of `server.api_token`: printable ASCII without spaces
/// (it travels in a header), and not trivially short.
pub fn check_api_token(token: &Secret) -> Result<(), String> {
    let t = token.expose();
    if t.len() < MIN_API_TOKEN_LEN {
        return Err(format!(
            "must be at least {MIN_API_TOKEN_LEN} characters (e.g. openssl rand -hex 32)"
        ));
    }
    if !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be printable ASCII without spaces (it is sent in a header)".to_owned());
    }
    Ok(())
}

/// The token guarding the API's mutating endpoints, kept as a SHA-256
/// digest and compared in constant time.
#[derive(Clone)]
pub struct ApiToken([u8; 32]);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(<secret>)")
    }
}

impl ApiToken {
    pub fn new(token: &Secret) -> Self {
        ApiToken(digest(token.expose().as_bytes()))
    }

    /// Accepts exactly `Authorization: Bearer <token>`.
    pub fn check(&self, header: Option<&[u8]>) -> Result<(), AuthError> {
        match presented(header) {
            Some(Credential::Bearer(d)) if self.0.ct_eq(&d).unwrap_u8() == 1 => Ok(()),
            _ => Err(AuthError::ApiToken),
        }
    }
}

/// Matches an `Authorization` header to a configured source.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    sources: Vec<(String, Option<String>, Credential)>,
}

/// The source a request was authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    pub source: String,
    pub cluster: Option<String>,
}

impl Authenticator {
    pub fn new(sources: &[SourceConfig]) -> Self {
        Authenticator {
            sources: sources
                .iter()
                .filter_map(|s| Some((s.name.clone(), s.cluster.clone(), s.credential.clone()?)))
                .collect(),
        }
    }

    /// True when no sources are configured: every request is accepted as the
    /// `default` source (only allowed on loopback or with an explicit flag).
    pub fn is_open(&self) -> bool {
        self.sources.is_empty()
    }

    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<Authenticated, AuthError> {
        if self.is_open() {
            return Ok(Authenticated {
                source: "default".to_owned(),
                cluster: None,
            });
        }
        let presented = presented(header).ok_or(AuthError::Missing)?;
        // Compare against every source without early exit.
        let mut found: Option<usize> = None;
        for (i, (_, _, cred)) in self.sources.iter().enumerate() {
            let eq = match (cred, &presented) {
                (Credential::Bearer(a), Credential::Bearer(b)) => a.ct_eq(b).unwrap_u8(),
                (Credential::Basic(a), Credential::Basic(b)) => a.ct_eq(b).unwrap_u8(),
                _ => 0,
            };
            if eq == 1 && found.is_none() {
                found = Some(i);
            }
        }
        let i = found.ok_or(AuthError::Forbidden)?;
        let (name, cluster, _) = &self.sources[i];
        Ok(Authenticated {
            source: name.clone(),
            cluster: cluster.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources() -> Vec<SourceConfig> {
        let mut s = vec![
            SourceConfig {
                name: "bj".into(),
                cluster: Some("prod-bj-1".into()),
                bearer_token: Some(Secret::new("tok-bj")),
                ..Default::default()
            },
            SourceConfig {
                name: "sh".into(),
                basic_auth: Some(BasicAuthConfig {
                    username: "am".into(),
                    password: Some(Secret::new("pw")),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ];
        let mut errs = ConfigErrors::default();
        validate_sources(
            &mut s,
            &ValidateCtx {
                base_dir: ".".into(),
            },
            &mut errs,
        );
        assert!(errs.is_empty(), "{errs}");
        s
    }

    #[test]
    fn bearer_and_basic() {
        let a = Authenticator::new(&sources());
        assert_eq!(a.authenticate(Some(b"Bearer tok-bj")).unwrap().source, "bj");
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("am:pw")
        );
        assert_eq!(a.authenticate(Some(basic.as_bytes())).unwrap().source, "sh");
        assert_eq!(a.authenticate(None), Err(AuthError::Missing));
        assert_eq!(
            a.authenticate(Some(b"Bearer nope")),
            Err(AuthError::Forbidden)
        );
        assert_eq!(
            a.authenticate(Some(b"Token tok-bj")),
            Err(AuthError::Missing)
        );
    }

    #[test]
    fn api_token_needs_the_exact_bearer_token() {
        let t = ApiToken::new(&Secret::new("0123456789abcdef-token"));
        assert_eq!(t.check(Some(b"Bearer 0123456789abcdef-token")), Ok(()));
        assert_eq!(t.check(Some(b"bearer  0123456789abcdef-token ")), Ok(()));
        assert_eq!(t.check(None), Err(AuthError::ApiToken));
        assert_eq!(
            t.check(Some(b"Bearer 0123456789abcdef-tokem")),
            Err(AuthError::ApiToken)
        );
        assert_eq!(
            t.check(Some(b"Basic 0123456789abcdef-token")),
            Err(AuthError::ApiToken)
        );
        assert!(!format!("{t:?}").contains("0123"));
        assert!(check_api_token(&Secret::new("short")).is_err());
        assert!(check_api_token(&Secret::new("0123456789 abcdef")).is_err());
        assert!(check_api_token(&Secret::new("0123456789abcdef")).is_ok());
    }

    #[test]
    fn config_errors_never_contain_the_secret() {
        let mut s = vec![SourceConfig {
            name: "x".into(),
            bearer_token: Some(Secret::new("sup3rs3cret")),
            bearer_token_env: Some("ALSO".into()),
            ..Default::default()
        }];
        let mut errs = ConfigErrors::default();
        validate_sources(
            &mut s,
            &ValidateCtx {
                base_dir: ".".into(),
            },
            &mut errs,
        );
        assert!(!errs.is_empty());
        assert!(!errs.to_string().contains("sup3rs3cret"));
        assert!(!format!("{s:?}").contains("sup3rs3cret"));
    }
}
