//! Email through a real SMTP server on loopback (aiosmtpd, started by the
//! test): headers, threading, both MIME parts and HTML escaping.

mod notify_common;

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use notify_common::*;
use stormcast::notify::email::{Email, EmailConfig};
use stormcast::notify::notifier::{Notifier, SendResult};
use stormcast::notify::MessageKind;

fn python_with_aiosmtpd() -> Option<String> {
    for py in ["python3", "/usr/bin/python3"] {
        let ok = Command::new(py)
            .args(["-c", "import aiosmtpd"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(py.to_owned());
        }
    }
    None
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The server answers with its 220 greeting. A bare connect is not proof that
/// aiosmtpd is serving: on loopback it can succeed against a port nobody
/// serves (a self-connect, or another test's short-lived listener).
fn smtp_ready(port: u16) -> bool {
    use std::io::Read;
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut greeting = [0u8; 3];
    s.read_exact(&mut greeting).is_ok() && &greeting == b"220"
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Parses a stored mail with Python's `email` package into JSON.
fn parse_mail(py: &str, path: &Path) -> serde_json::Value {
    let script = r#"
import email, json, sys
from email import policy
m = email.message_from_bytes(open(sys.argv[1], 'rb').read(), policy=policy.default)
parts = {}
for p in m.walk():
    if p.get_content_maintype() == 'text':
        parts[p.get_content_type()] = p.get_content()
print(json.dumps({'headers': {k: str(v) for k, v in m.items()}, 'type': m.get_content_type(), 'parts': parts}))
"#;
    let out = Command::new(py)
        .args(["-c", script])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn email_to_a_real_smtp_server() {
    let Some(py) = python_with_aiosmtpd() else {
        if std::env::var("STORMCAST_REQUIRE_EXTERNAL").as_deref() == Ok("1") {
            panic!("python3 with aiosmtpd is required (STORMCAST_REQUIRE_EXTERNAL=1)");
        }
        eprintln!("skipping: python3 -m aiosmtpd is not available");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("mail");
    let port = free_port();
    let _server = Server(
        Command::new(&py)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !smtp_ready(port) {
        assert!(Instant::now() < deadline, "aiosmtpd did not start");
        std::thread::sleep(Duration::from_millis(100));
    }

    let email = Email::new(EmailConfig {
        to: "oncall@example.com, sre@example.com".into(),
        from: "stormcast <stormcast@example.com>".into(),
        smarthost: format!("127.0.0.1:{port}"),
        hello: Some("stormcast.test".into()),
        require_tls: false,
        ..Default::default()
    })
    .unwrap();
    let inc = incident(
        "inc-42",
        t("2026-11-23T03:00:00Z"),
        &[
            ("alertname", "KubeNodeNotReady"),
            ("node", "<script>alert(1)</script>"),
            ("severity", "critical"),
        ],
        &["prod-1"],
    );
    let first = message(&inc, "ops", MessageKind::First, 0);
    let update = message(&inc, "ops", MessageKind::Update, 1);
    assert_eq!(
        email.send(std::slice::from_ref(&first)).await,
        SendResult::Delivered
    );
    assert_eq!(
        email.send(std::slice::from_ref(&update)).await,
        SendResult::Delivered
    );

    let new = maildir.join("new");
    let mut files = Vec::new();
    while files.len() < 2 {
        assert!(Instant::now() < deadline, "mail did not arrive");
        files = std::fs::read_dir(&new)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut mails: Vec<serde_json::Value> = files.iter().map(|f| parse_mail(&py, f)).collect();
    mails.sort_by_key(|m| {
        m["headers"]["Subject"]
            .as_str()
            .unwrap()
            .contains("UPDATED")
    });
    let (a, b) = (&mails[0], &mails[1]);
    assert_eq!(a["type"], "multipart/alternative");
    assert_eq!(
        a["headers"]["Subject"],
        "[FIRING] KubeNodeNotReady on node <script>alert(1)</script> (prod-1)"
    );
    assert_eq!(a["headers"]["To"], "oncall@example.com, sre@example.com");
    // Threading: the first message is the root; the update replies to it.
    let root = "<inc-42.ops@stormcast.test>";
    assert_eq!(a["headers"]["Message-ID"], root);
    assert_eq!(b["headers"]["In-Reply-To"], root);
    assert_eq!(b["headers"]["References"], root);
    assert_eq!(b["headers"]["Message-ID"], "<inc-42.ops.1@stormcast.test>");
    assert!(b["headers"]["Subject"]
        .as_str()
        .unwrap()
        .starts_with("[UPDATED]"));
    // Both parts, root cause first, HTML escaped.
    let text = a["parts"]["text/plain"].as_str().unwrap();
    let html = a["parts"]["text/html"].as_str().unwrap();
    assert!(
        text.contains("Root cause\nnode stopped reporting"),
        "{text}"
    );
    assert!(text.contains("Incident: https://stormcast.example/incidents/inc-42"));
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(!html.contains("<script>"), "{html}");
    assert!(
        html.contains(r#"<a href="https://stormcast.example/incidents/inc-42">"#),
        "{html}"
    );
}

#[tokio::test]
async fn unreachable_smtp_is_retryable_and_credentials_never_print() {
    let port = free_port();
    let email = Email::new(EmailConfig {
        to: "oncall@example.com".into(),
        from: "stormcast@example.com".into(),
        smarthost: format!("127.0.0.1:{port}"),
        require_tls: false,
        auth_username: Some("bot".into()),
        auth_password: Some(stormcast::config::Secret::new("smtp-pa55")),
        ..Default::default()
    })
    .unwrap();
    let inc = incident(
        "inc-1",
        t("2026-11-23T03:00:00Z"),
        &[("alertname", "X")],
        &["c"],
    );
    let r = email
        .send(std::slice::from_ref(&message(
            &inc,
            "ops",
            MessageKind::First,
            0,
        )))
        .await;
    assert!(matches!(r, SendResult::Retryable { .. }), "{r:?}");
    assert!(!format!("{r:?}").contains("smtp-pa55"));
}

fn start_smtp(py: &str, maildir: &Path, extra: &[&std::ffi::OsStr]) -> (Server, u16) {
    let port = free_port();
    let server = Server(
        Command::new(py)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(extra)
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    // An implicit-TLS server greets inside TLS: for it, a connect has to do.
    let implicit_tls = extra.iter().any(|a| *a == "--smtpscert");
    while !(if implicit_tls {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    } else {
        smtp_ready(port)
    }) {
        assert!(Instant::now() < deadline, "aiosmtpd did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    (server, port)
}

fn count_mail(maildir: &Path) -> usize {
    std::fs::read_dir(maildir.join("new")).map_or(0, |d| d.count())
}

#[tokio::test]
async fn email_over_starttls_and_implicit_tls() {
    let Some(py) = python_with_aiosmtpd() else {
        if std::env::var("STORMCAST_REQUIRE_EXTERNAL").as_deref() == Ok("1") {
            panic!("python3 with aiosmtpd is required (STORMCAST_REQUIRE_EXTERNAL=1)");
        }
        eprintln!("skipping: python3 -m aiosmtpd is not available");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=smtp.stormcast.test"])
        .args(["-addext", "subjectAltName=DNS:smtp.stormcast.test"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("STORMCAST_REQUIRE_EXTERNAL").as_deref() == Ok("1") {
            panic!("openssl is required to make a test certificate");
        }
        eprintln!("skipping: openssl is not available");
        return;
    }
    let inc = incident(
        "inc-7",
        t("2026-11-23T03:00:00Z"),
        &[("alertname", "X")],
        &["c"],
    );
    let msg = message(&inc, "ops", MessageKind::First, 0);
    let tls = |port: u16, implicit: bool| EmailConfig {
        to: "oncall@example.com".into(),
        from: "stormcast@example.com".into(),
        smarthost: format!("127.0.0.1:{port}"),
        require_tls: true,
        force_implicit_tls: implicit,
        tls_config: stormcast::notify::email::EmailTlsConfig {
            ca_file: Some(cert.display().to_string()),
            server_name: Some("smtp.stormcast.test".into()),
            insecure_skip_verify: false,
        },
        ..Default::default()
    };

    // STARTTLS, required by the server too.
    let starttls_dir = dir.path().join("starttls");
    let (_s1, p1) = start_smtp(
        &py,
        &starttls_dir,
        &[
            "--tlscert".as_ref(),
            cert.as_os_str(),
            "--tlskey".as_ref(),
            key.as_os_str(),
        ],
    );
    let email = Email::new(tls(p1, false)).unwrap();
    assert_eq!(
        email.send(std::slice::from_ref(&msg)).await,
        SendResult::Delivered
    );

    // Implicit TLS (smtps).
    let smtps_dir = dir.path().join("smtps");
    let (_s2, p2) = start_smtp(
        &py,
        &smtps_dir,
        &[
            "--smtpscert".as_ref(),
            cert.as_os_str(),
            "--smtpskey".as_ref(),
            key.as_os_str(),
        ],
    );
    let email = Email::new(tls(p2, true)).unwrap();
    assert_eq!(
        email.send(std::slice::from_ref(&msg)).await,
        SendResult::Delivered
    );

    // Without trusting the CA the handshake fails and nothing is delivered.
    let mut untrusted = tls(p2, true);
    untrusted.tls_config.ca_file = None;
    let r = Email::new(untrusted)
        .unwrap()
        .send(std::slice::from_ref(&msg))
        .await;
    assert!(!matches!(r, SendResult::Delivered), "{r:?}");

    let deadline = Instant::now() + Duration::from_secs(10);
    while count_mail(&starttls_dir) < 1 || count_mail(&smtps_dir) < 1 {
        assert!(Instant::now() < deadline, "mail did not arrive");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(count_mail(&smtps_dir), 1);
}
