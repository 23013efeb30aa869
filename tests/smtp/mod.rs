//! A real SMTP server on loopback for the email tests: Python's aiosmtpd,
//! storing every message it accepts in a Maildir, and the messages parsed
//! back with Python's `email` package.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running aiosmtpd; killed on drop.
pub struct Mailbox {
    child: Child,
    py: String,
    pub port: u16,
    pub maildir: PathBuf,
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Python with aiosmtpd. When there is none, the test fails if
/// `STORMCAST_REQUIRE_EXTERNAL=1` (as the test script sets), else it is
/// skipped.
pub fn python_with_aiosmtpd() -> Option<String> {
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
    if std::env::var("STORMCAST_REQUIRE_EXTERNAL").as_deref() == Ok("1") {
        panic!("python3 with aiosmtpd is required (STORMCAST_REQUIRE_EXTERNAL=1)");
    }
    eprintln!("skipping: python3 -m aiosmtpd is not available");
    None
}

/// The server answers with its 220 greeting. A bare connect is not proof that
/// aiosmtpd is serving: on loopback it can succeed against a port nobody
/// serves (a self-connect, or another test's short-lived listener).
fn greets(port: u16) -> bool {
    use std::io::Read;
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut greeting = [0u8; 3];
    s.read_exact(&mut greeting).is_ok() && &greeting == b"220"
}

impl Mailbox {
    /// Starts aiosmtpd on a free loopback port, storing into `maildir`, with
    /// `extra` arguments (TLS certificates), and waits until it serves.
    /// `None` when aiosmtpd is missing (see [`python_with_aiosmtpd`]).
    pub fn start(maildir: &Path, extra: &[&OsStr]) -> Option<Mailbox> {
        let py = python_with_aiosmtpd()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let child = Command::new(&py)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(extra)
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn aiosmtpd");
        let mailbox = Mailbox {
            child,
            py,
            port,
            maildir: maildir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        // An implicit-TLS server greets inside TLS: for it, a connect has to do.
        let implicit_tls = extra.iter().any(|a| *a == "--smtpscert");
        while !(if implicit_tls {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        } else {
            greets(port)
        }) {
            assert!(Instant::now() < deadline, "aiosmtpd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(mailbox)
    }

    /// The `host:port` to send to.
    pub fn smarthost(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Messages received so far.
    pub fn count(&self) -> usize {
        std::fs::read_dir(self.maildir.join("new")).map_or(0, |d| d.count())
    }

    /// Messages received so far, parsed (see [`parse_mail`]), in the order
    /// of their file names.
    pub fn mails(&self) -> Vec<serde_json::Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.maildir.join("new"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files.iter().map(|f| parse_mail(&self.py, f)).collect()
    }
}

/// A stored mail parsed by Python's `email` package: `headers`, the content
/// `type` and the text `parts` by content type.
pub fn parse_mail(py: &str, path: &Path) -> serde_json::Value {
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
