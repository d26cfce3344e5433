//! What a web page can do to the daemon, in a real browser: headless
//! Chromium loads a page from another origin (another port, then a
//! `file://` page) whose script tries to delete a worker. It can read; it
//! cannot change anything.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;
use support::Daemon;

/// The page: tries a DELETE (preflighted), a simple POST (no preflight),
/// a no-cors POST, and a read; writes what happened into the body.
fn page(daemon: &str) -> String {
    format!(
        r#"<!doctype html><html><body>waiting<script>
const base = "http://{daemon}";
async function go() {{
  const out = [];
  const t = base + "/api/workers/w1";
  try {{ const r = await fetch(t, {{method: "DELETE"}}); out.push("delete:" + r.status); }} catch (e) {{ out.push("delete:blocked"); }}
  try {{ const r = await fetch(t, {{method: "POST", body: "x", headers: {{"Content-Type": "text/plain"}}}}); out.push("post:" + r.status); }} catch (e) {{ out.push("post:blocked"); }}
  try {{ await fetch(t, {{method: "POST", mode: "no-cors", body: "x"}}); out.push("nocors:sent"); }} catch (e) {{ out.push("nocors:blocked"); }}
  try {{ const r = await fetch(base + "/telemetry"); out.push("read:" + r.status); }} catch (e) {{ out.push("read:blocked"); }}
  document.body.textContent = "DONE " + out.join(" ");
}}
go();
</script></body></html>"#
    )
}

/// Serve `body` to every request on a kernel-chosen port, in the background.
fn serve(body: String) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| support::runs(c, &["--version"]))
}

/// Load `url` headless and return the body text the page wrote.
fn load(browser: &str, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=10000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    let start = dom
        .find("DONE")
        .unwrap_or_else(|| panic!("the page did not finish: {dom}"));
    dom[start..].split('<').next().unwrap().trim().to_string()
}

#[test]
fn a_page_from_another_origin_cannot_change_the_daemon() {
    let browser = chromium();
    let Some(browser) = browser.filter(|_| support::require("chromium", browser.is_some())) else {
        return;
    };
    let d = Daemon::start(&[]);
    d.udp(br#"{"type":"heartbeat","worker_id":"w1","status":"working"}"#);
    d.wait_applied("w1", 1);
    let html = page(&d.http.to_string());
    let other = serve(html.clone());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("page.html");
    std::fs::write(&file, &html).unwrap();
    for url in [
        format!("http://127.0.0.1:{other}/"),
        format!("file://{}", file.display()),
    ] {
        let seen = load(browser, &url);
        // The page reached the daemon (it can read) and was refused every
        // change: the DELETE at its preflight, the simple POSTs by Origin.
        assert_eq!(
            seen, "DONE delete:blocked post:403 nocors:sent read:200",
            "{url}"
        );
        assert_eq!(d.get("/api/workers/w1").0, 200, "w1 survives {url}");
    }
    let refused = d.json("/health")["access"]["http_refused_origin"].as_u64();
    assert_eq!(refused, Some(4), "two POSTs per page, refused by Origin");
}
