//! Email over SMTP (lettre, async): STARTTLS, implicit TLS or plain SMTP
//! for local relays, optional auth, a multipart text + HTML body, and
//! threading headers so every message about one incident lands in one thread.

use std::time::Duration;

use futures::future::BoxFuture;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message as Mail, Tokio1Executor};
use serde::{Deserialize, Serialize};

use super::notifier::{Message, Notifier, RateLimit, SendResult};
use super::render::{self, Escape};
use crate::config::{ConfigErrors, PromDuration, Secret, SecretRef, ValidateCtx};

/// One SMTP delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EmailConfig {
    /// Recipients, comma-separated.
    pub to: String,
    /// Sender address.
    pub from: String,
    /// `host:port` of the SMTP server.
    pub smarthost: String,
    /// Name sent in EHLO; also the domain of Message-IDs.
    pub hello: Option<String>,
    pub auth_username: Option<String>,
    pub auth_password: Option<Secret>,
    pub auth_password_file: Option<String>,
    pub auth_password_env: Option<String>,
    /// Require STARTTLS (default). When false, STARTTLS is used if offered.
    pub require_tls: bool,
    /// Connect with TLS from the start (port 465).
    pub force_implicit_tls: bool,
    /// Send a message when the incident resolves.
    pub send_resolved: bool,
    /// minijinja templates replacing the defaults.
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    /// TLS settings for STARTTLS and implicit TLS.
    pub tls_config: EmailTlsConfig,
    /// Per-message timeout.
    pub timeout: PromDuration,
}

/// TLS settings of an SMTP connection.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct EmailTlsConfig {
    /// PEM file of a CA to trust in addition to the system roots (relative to the config file).
    pub ca_file: Option<String>,
    /// Name to verify the server certificate against (default: the smarthost's host).
    pub server_name: Option<String>,
    /// Accept any certificate. Only for testing.
    pub insecure_skip_verify: bool,
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig {
            to: String::new(),
            from: String::new(),
            smarthost: String::new(),
            hello: None,
            auth_username: None,
            auth_password: None,
            auth_password_file: None,
            auth_password_env: None,
            require_tls: true,
            force_implicit_tls: false,
            send_resolved: true,
            subject: None,
            text: None,
            html: None,
            tls_config: EmailTlsConfig::default(),
            timeout: PromDuration::secs(30),
        }
    }
}

fn split_host(s: &str) -> Option<(&str, u16)> {
    let (h, p) = s.rsplit_once(':')?;
    Some((h, p.parse().ok()?)).filter(|(h, _)| !h.is_empty())
}

impl EmailConfig {
    pub fn validate(&mut self, path: &str, ctx: &ValidateCtx, errs: &mut ConfigErrors) {
        if self.to.trim().is_empty() {
            errs.push(format!("{path}.to"), "required");
        }
        for a in self.to.split(',').filter(|a| !a.trim().is_empty()) {
            if a.trim().parse::<Mailbox>().is_err() {
                errs.push(
                    format!("{path}.to"),
                    format!("{:?} is not an address", a.trim()),
                );
            }
        }
        if self.from.parse::<Mailbox>().is_err() {
            errs.push(
                format!("{path}.from"),
                format!("{:?} is not an address", self.from),
            );
        }
        if split_host(&self.smarthost).is_none() {
            errs.push(
                format!("{path}.smarthost"),
                format!("{:?} is not host:port", self.smarthost),
            );
        }
        let r = SecretRef {
            inline: self.auth_password.as_ref(),
            file: self.auth_password_file.as_deref(),
            env: self.auth_password_env.as_deref(),
        };
        if let Some(s) = r.resolve(&format!("{path}.auth_password"), &ctx.base_dir, errs) {
            self.auth_password = Some(s);
            self.auth_password_file = None;
            self.auth_password_env = None;
        }
        if self.auth_password.is_some() && self.auth_username.is_none() {
            errs.push(
                format!("{path}.auth_username"),
                "required with auth_password",
            );
        }
        for (k, t) in [
            ("subject", &self.subject),
            ("text", &self.text),
            ("html", &self.html),
        ] {
            if let Some(t) = t {
                if let Err(e) = render::check_template(t) {
                    errs.push(format!("{path}.{k}"), e);
                }
            }
        }
        if let Some(ca) = &self.tls_config.ca_file {
            let p = ctx.resolve_path(std::path::Path::new(ca));
            match std::fs::read(&p) {
                Ok(pem) if lettre::transport::smtp::client::Certificate::from_pem(&pem).is_ok() => {
                    self.tls_config.ca_file = Some(p.display().to_string());
                }
                Ok(_) => errs.push(
                    format!("{path}.tls_config.ca_file"),
                    format!("{} holds no PEM certificate", p.display()),
                ),
                Err(e) => errs.push(
                    format!("{path}.tls_config.ca_file"),
                    format!("cannot read {}: {e}", p.display()),
                ),
            }
        }
        if self.timeout.is_zero() {
            errs.push(format!("{path}.timeout"), "must be greater than 0");
        }
    }
}

/// A configured SMTP delivery.
pub struct Email {
    cfg: EmailConfig,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl Email {
    pub fn new(cfg: EmailConfig) -> Result<Self, String> {
        let (host, port) = split_host(&cfg.smarthost).ok_or("smarthost is not host:port")?;
        let mut tls = TlsParameters::builder(
            cfg.tls_config
                .server_name
                .clone()
                .unwrap_or_else(|| host.to_owned()),
        )
        .dangerous_accept_invalid_certs(cfg.tls_config.insecure_skip_verify);
        if let Some(ca) = &cfg.tls_config.ca_file {
            let pem = std::fs::read(ca).map_err(|e| format!("cannot read {ca}: {e}"))?;
            let cert = lettre::transport::smtp::client::Certificate::from_pem(&pem)
                .map_err(|e| format!("{ca}: {e}"))?;
            tls = tls.add_root_certificate(cert);
        }
        let params = tls.build().map_err(|e| e.to_string())?;
        let tls = if cfg.force_implicit_tls {
            Tls::Wrapper(params)
        } else if cfg.require_tls {
            Tls::Required(params)
        } else {
            Tls::Opportunistic(params)
        };
        let builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host).tls(tls);
        let mut builder = builder.port(port).timeout(Some(cfg.timeout.as_std()));
        if let Some(h) = &cfg.hello {
            builder = builder.hello_name(lettre::transport::smtp::extension::ClientId::Domain(
                h.clone(),
            ));
        }
        if let (Some(u), Some(p)) = (&cfg.auth_username, &cfg.auth_password) {
            builder = builder.credentials(Credentials::new(u.clone(), p.expose().to_owned()));
        }
        Ok(Email {
            transport: builder.build(),
            cfg,
        })
    }

    /// Builds the mail for one message.
    pub fn build(&self, msg: &Message) -> Result<Mail, String> {
        build_mail(&self.cfg, msg)
    }
}

/// The thread root's Message-ID for an incident and receiver.
pub fn thread_id(incident: &str, receiver: &str, domain: &str) -> String {
    format!("<{incident}.{}@{domain}>", sanitize(receiver))
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Renders subject, text and HTML and sets the threading headers: the first
/// message's Message-ID is the thread root; later ones reply to it.
pub fn build_mail(cfg: &EmailConfig, msg: &Message) -> Result<Mail, String> {
    let subject = render::render(
        Escape::Text,
        render::pick(msg, cfg.subject.as_deref(), render::EMAIL_SUBJECT),
        msg,
    )
    .map_err(|e| e.to_string())?;
    let text = render::render(
        Escape::Text,
        render::pick(msg, cfg.text.as_deref(), render::EMAIL_TEXT),
        msg,
    )
    .map_err(|e| e.to_string())?;
    let html = render::render(
        Escape::Html,
        render::pick(msg, cfg.html.as_deref(), render::EMAIL_HTML),
        msg,
    )
    .map_err(|e| e.to_string())?;
    let domain = cfg.hello.as_deref().unwrap_or("stormcast.local");
    let n = &msg.notification;
    let root = thread_id(&n.incident, &n.receiver, domain);
    let mut b = Mail::builder()
        .from(cfg.from.parse().map_err(|e| format!("from: {e}"))?)
        .subject(subject.trim().replace(['\r', '\n'], " "));
    for a in cfg.to.split(',').filter(|a| !a.trim().is_empty()) {
        b = b.to(a.trim().parse().map_err(|e| format!("to: {e}"))?);
    }
    if n.seq == 0 {
        b = b.message_id(Some(root));
    } else {
        b = b
            .message_id(Some(format!(
                "<{}.{}.{}@{domain}>",
                n.incident,
                sanitize(&n.receiver),
                n.seq
            )))
            .in_reply_to(root.clone())
            .references(root);
    }
    b.multipart(
        MultiPart::alternative()
            .singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .body(text),
            )
            .singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_HTML)
                    .body(html),
            ),
    )
    .map_err(|e| e.to_string())
}

impl Notifier for Email {
    fn kind(&self) -> &'static str {
        "email"
    }

    fn rate_limit(&self) -> RateLimit {
        RateLimit {
            max: 5,
            window: Duration::from_secs(1),
        }
    }

    fn send_resolved(&self) -> bool {
        self.cfg.send_resolved
    }

    fn send<'a>(&'a self, msgs: &'a [Message]) -> BoxFuture<'a, SendResult> {
        Box::pin(async move {
            let Some(msg) = msgs.first() else {
                return SendResult::Delivered;
            };
            let mail = match self.build(msg) {
                Ok(m) => m,
                Err(detail) => {
                    return SendResult::Permanent {
                        reason: "template",
                        detail,
                    }
                }
            };
            match self.transport.send(mail).await {
                Ok(_) => SendResult::Delivered,
                Err(e) if e.is_permanent() => SendResult::Permanent {
                    reason: "smtp_rejected",
                    detail: e.to_string(),
                },
                Err(e) if e.is_timeout() => SendResult::Retryable {
                    after: None,
                    reason: "timeout",
                    detail: e.to_string(),
                },
                Err(e) => SendResult::Retryable {
                    after: None,
                    reason: if e.is_transient() {
                        "smtp_transient"
                    } else {
                        "connect"
                    },
                    detail: e.to_string(),
                },
            }
        })
    }
}
