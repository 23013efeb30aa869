//! Email through a real SMTP server on loopback (aiosmtpd, started by the
//! test): headers, threading, both MIME parts and HTML escaping.

mod notify_common;
mod smtp;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use notify_common::*;
use smtp::Mailbox;
use stormcast::notify::email::{Email, EmailConfig};
use stormcast::notify::notifier::{Notifier, SendResult};
use stormcast::notify::MessageKind;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn email_to_a_real_smtp_server() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mailbox) = Mailbox::start(&dir.path().join("mail"), &[]) else {
        return;
    };

    let email = Email::new(EmailConfig {
        to: "oncall@example.com, sre@example.com".into(),
        from: "stormcast <stormcast@example.com>".into(),
        smarthost: mailbox.smarthost(),
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

    let deadline = Instant::now() + Duration::from_secs(20);
    while mailbox.count() < 2 {
        assert!(Instant::now() < deadline, "mail did not arrive");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut mails = mailbox.mails();
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

#[tokio::test]
async fn email_over_starttls_and_implicit_tls() {
    if smtp::python_with_aiosmtpd().is_none() {
        return;
    }
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
    let Some(starttls) = Mailbox::start(
        &dir.path().join("starttls"),
        &[
            "--tlscert".as_ref(),
            cert.as_os_str(),
            "--tlskey".as_ref(),
            key.as_os_str(),
        ],
    ) else {
        return;
    };
    let email = Email::new(tls(starttls.port, false)).unwrap();
    assert_eq!(
        email.send(std::slice::from_ref(&msg)).await,
        SendResult::Delivered
    );

    // Implicit TLS (smtps).
    let Some(smtps) = Mailbox::start(
        &dir.path().join("smtps"),
        &[
            "--smtpscert".as_ref(),
            cert.as_os_str(),
            "--smtpskey".as_ref(),
            key.as_os_str(),
        ],
    ) else {
        return;
    };
    let email = Email::new(tls(smtps.port, true)).unwrap();
    assert_eq!(
        email.send(std::slice::from_ref(&msg)).await,
        SendResult::Delivered
    );

    // Without trusting the CA the handshake fails and nothing is delivered.
    let mut untrusted = tls(smtps.port, true);
    untrusted.tls_config.ca_file = None;
    let r = Email::new(untrusted)
        .unwrap()
        .send(std::slice::from_ref(&msg))
        .await;
    assert!(!matches!(r, SendResult::Delivered), "{r:?}");

    let deadline = Instant::now() + Duration::from_secs(10);
    while starttls.count() < 1 || smtps.count() < 1 {
        assert!(Instant::now() < deadline, "mail did not arrive");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(smtps.count(), 1);
}
