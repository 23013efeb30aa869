//! The web UI in a real headless Chromium, driven through chromedriver's W3C
//! WebDriver API: incidents render, a click opens the detail, label values
//! containing markup are shown as text, never executed, search runs on the
//! server, and the incident page draws its timeline and entities and
//! acknowledges.
//! `STORMCAST_UI_SCREENSHOT=file.png` keeps a screenshot.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{alert, get_json, webhook, Server};
use serde_json::{json, Value};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct WebDriver {
    base: String,
    session: String,
    http: reqwest::Client,
}

impl WebDriver {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{}", self.base, self.session, path);
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        v["value"].clone()
    }

    async fn find_all(&self, css: &str) -> Vec<String> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_object()?.values().next()?.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn wait_for(&self, css: &str, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = self.find_all(css).await;
            if found.len() >= n {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "{css}: found {} of {n}",
                found.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn text(&self, element: &str) -> String {
        self.call(
            reqwest::Method::GET,
            &format!("/element/{element}/text"),
            None,
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Clicks the incident row whose text contains `needle` until its detail row shows.
    async fn open_row_containing(&self, needle: &str) -> Vec<String> {
        for _ in 0..10 {
            for row in self.find_all("tr.incident").await {
                if self.text(&row).await.contains(needle) {
                    self.call(
                        reqwest::Method::POST,
                        &format!("/element/{row}/click"),
                        Some(json!({})),
                    )
                    .await;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let detail = self.find_all("tr.detail").await;
            if !detail.is_empty() {
                return detail;
            }
        }
        panic!("the detail of the {needle} incident never opened");
    }

    async fn script(&self, js: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": js, "args": []})),
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_render_and_labels_cannot_inject_markup() {
    let (Some(chromium), Some(driver)) = (
        common::external(&["chromium"]),
        common::external(&["chromedriver"]),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sc = Server::start(&dir.path().join("db"), None);
    let http = reqwest::Client::new();
    let now = chrono::Utc::now() - chrono::Duration::minutes(20);
    let alerts = vec![
        alert(
            &[
                ("alertname", "KubeNodeNotReady"),
                ("node", "prod-bj-1-node03"),
                ("severity", "critical"),
                ("cluster", "prod-bj-1"),
            ],
            "firing",
            &now.to_rfc3339(),
            "0001-01-01T00:00:00Z",
        ),
        alert(
            &[
                ("alertname", "KubePodCrashLooping"),
                ("namespace", "shop"),
                ("pod", "<img src=x onerror=alert(1)>"),
                ("severity", "warning"),
                ("cluster", "prod-sh-2"),
            ],
            "firing",
            &now.to_rfc3339(),
            "0001-01-01T00:00:00Z",
        ),
    ];
    let r = http
        .post(sc.url("/api/v1/alerts"))
        .json(&webhook("http://am:9093", &alerts))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    let port = common::free_port();
    let _driver = Proc(
        Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while http.get(format!("{base}/status")).send().await.is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let profile = dir.path().join("chrome-profile");
    let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
        "binary": chromium,
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,800", format!("--user-data-dir={}", profile.display())]}}}});
    let created: Value = http
        .post(format!("{base}/session"))
        .json(&caps)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = created["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {created}"))
        .to_owned();
    let wd = WebDriver {
        base,
        session,
        http: http.clone(),
    };

    wd.call(
        reqwest::Method::POST,
        "/url",
        Some(json!({"url": sc.url("/")})),
    )
    .await;
    let rows = wd.wait_for("tr.incident", 2).await;
    assert_eq!(rows.len(), 2);
    let all_text: Vec<String> = futures::future::join_all(rows.iter().map(|r| wd.text(r))).await;
    assert!(
        all_text.iter().any(|t| t.contains("KubeNodeNotReady")),
        "{all_text:?}"
    );
    assert_eq!(wd.text(&wd.find_all("#stat-open").await[0]).await, "2");

    // Open the incident whose label carries markup: it shows as text. The page
    // re-renders every few seconds, so a found row can go stale: retry.
    let detail = wd.open_row_containing("KubePodCrashLooping").await;
    let text = wd.text(&detail[0]).await;
    assert!(text.contains("pod=<img src=x onerror=alert(1)>"), "{text}");
    assert_eq!(
        wd.script("return document.querySelectorAll('img').length")
            .await,
        json!(0)
    );

    // Search runs on the server: the node's name leaves only its incident.
    let filter = wd.find_all("#filter").await;
    wd.call(
        reqwest::Method::POST,
        &format!("/element/{}/value", filter[0]),
        Some(json!({"text": "prod-bj-1-node03"})),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = wd.find_all("tr.incident").await;
        let texts: Vec<String> = futures::future::join_all(rows.iter().map(|r| wd.text(r))).await;
        if texts.len() == 1 && texts[0].contains("KubeNodeNotReady") {
            break;
        }
        assert!(Instant::now() < deadline, "search left {texts:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Its detail links to the incident page, the page every message links
    // to: root cause, a timeline and the entity graph, members by name.
    wd.open_row_containing("KubeNodeNotReady").await;
    let link = wd.wait_for("tr.detail a.page-link", 1).await;
    let href = wd
        .call(
            reqwest::Method::GET,
            &format!("/element/{}/property/href", link[0]),
            None,
        )
        .await;
    let href = href.as_str().unwrap().to_owned();
    assert!(href.contains("/incidents/inc-"), "{href}");
    wd.call(reqwest::Method::POST, "/url", Some(json!({"url": href})))
        .await;
    wd.wait_for("#timeline-svg rect.bar", 1).await;
    wd.wait_for("#graph-svg g.node.root", 1).await;
    let title = wd.text(&wd.find_all("#title").await[0]).await;
    assert!(title.contains("KubeNodeNotReady"), "{title}");
    let groups = wd.wait_for("#members details.group", 1).await;
    assert!(wd.text(&groups[0]).await.contains("KubeNodeNotReady"));
    // Acknowledge from the page; the state shows there and in the API.
    let ack = wd.wait_for("#ack-button", 1).await;
    wd.call(
        reqwest::Method::POST,
        &format!("/element/{}/click", ack[0]),
        Some(json!({})),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !wd
        .text(&wd.find_all("#ack").await[0])
        .await
        .contains("acknowledged")
    {
        assert!(Instant::now() < deadline, "the ack never showed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let id = href.rsplit('/').next().unwrap();
    let st = get_json(&http, &sc.url(&format!("/api/v1/incidents/{id}/ack"))).await;
    assert_eq!(st["acknowledged"], true, "{st}");
    let inc = get_json(&http, &sc.url(&format!("/api/v1/incidents/{id}"))).await;
    assert_eq!(inc["acknowledged"], true, "{inc}");
    assert_eq!(inc["silenced_by"], json!([]), "{inc}");
    if let Ok(path) = std::env::var("STORMCAST_UI_SCREENSHOT") {
        let png = wd.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::write(path.replace(".png", "-incident.png"), bytes).unwrap();
    }
    // An unknown incident says so on the page.
    wd.call(
        reqwest::Method::POST,
        "/url",
        Some(json!({"url": sc.url("/incidents/inc-nope")})),
    )
    .await;
    let err = wd.wait_for("#error:not([hidden])", 1).await;
    assert!(wd.text(&err[0]).await.contains("No incident inc-nope"));

    // The resolved view is empty.
    wd.call(
        reqwest::Method::POST,
        "/url",
        Some(json!({"url": sc.url("/")})),
    )
    .await;
    wd.wait_for("tr.incident", 1).await;
    let buttons = wd.find_all("nav button[data-state='resolved']").await;
    wd.call(
        reqwest::Method::POST,
        &format!("/element/{}/click", buttons[0]),
        Some(json!({})),
    )
    .await;
    wd.wait_for("#empty:not([hidden])", 1).await;

    if let Ok(path) = std::env::var("STORMCAST_UI_SCREENSHOT") {
        wd.call(
            reqwest::Method::POST,
            &format!(
                "/element/{}/click",
                wd.find_all("nav button[data-state='open']").await[0]
            ),
            Some(json!({})),
        )
        .await;
        wd.wait_for("tr.incident", 2).await;
        wd.open_row_containing("KubeNodeNotReady").await;
        let png = wd.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    wd.http
        .delete(format!("{}/session/{}", wd.base, wd.session))
        .send()
        .await
        .unwrap();
}
