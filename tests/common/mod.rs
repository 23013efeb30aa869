//! Helpers shared by the integration tests: run the real `stormcast` binary on
//! a free loopback port, and find the external programs the tests drive.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `GET url`, its body as JSON (panics when the request or the body fails).
pub async fn get_json(http: &reqwest::Client, url: &str) -> serde_json::Value {
    http.get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Finds an external program. When it is missing, the test fails if
/// `STORMCAST_REQUIRE_EXTERNAL=1` (as the test script sets), else it is skipped.
pub fn external(names: &[&str]) -> Option<PathBuf> {
    for n in names {
        for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
            let p = Path::new(dir).join(n);
            if p.exists() {
                return Some(p);
            }
        }
    }
    if std::env::var("STORMCAST_REQUIRE_EXTERNAL").as_deref() == Ok("1") {
        panic!("required program {names:?} is not installed (run scripts/test)");
    }
    eprintln!("skipping: {names:?} not installed");
    None
}

/// A running `stormcast serve`.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub config: Option<PathBuf>,
    pub log: PathBuf,
}

impl Server {
    /// Starts the binary and waits until `/readyz` answers 200.
    pub fn start(data_dir: &Path, config: Option<&Path>) -> Server {
        let port = free_port();
        Self::start_on(data_dir, config, port)
    }

    pub fn start_on(data_dir: &Path, config: Option<&Path>, port: u16) -> Server {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = data_dir.with_extension(format!("{port}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stormcast"));
        cmd.arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .env("STORMCAST_LOG", "info,tower_http=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let child = cmd.spawn().expect("spawn stormcast");
        let mut s = Server {
            child: Some(child),
            addr,
            data_dir: data_dir.to_path_buf(),
            config: config.map(Path::to_path_buf),
            log,
        };
        s.wait_ready(Duration::from_secs(30));
        s
    }

    fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("stormcast exited with {status}: {}", self.logs());
            }
            if http_status(self.addr, "/readyz") == Some(200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("stormcast not ready within {within:?}: {}", self.logs());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("stormcast did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A bare-bones HTTP GET status probe (no client dependency needed).
pub fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let head = std::str::from_utf8(&buf[..n]).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

/// An Alertmanager v4 webhook body with the given alerts (JSON values).
pub fn webhook(external_url: &str, alerts: &[serde_json::Value]) -> serde_json::Value {
    serde_json::json!({
        "version": "4",
        "groupKey": "{}:{namespace=\"default\"}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "stormcast",
        "groupLabels": {"namespace": "default"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": external_url,
        "alerts": alerts,
    })
}

/// One alert of a webhook body.
pub fn alert(labels: &[(&str, &str)], status: &str, starts: &str, ends: &str) -> serde_json::Value {
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
        .collect();
    serde_json::json!({
        "status": status,
        "labels": labels,
        "annotations": {"summary": "test"},
        "startsAt": starts,
        "endsAt": ends,
        "generatorURL": "http://prometheus.example/graph",
        "fingerprint": "",
    })
}
