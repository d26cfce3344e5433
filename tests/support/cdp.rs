//! A small Chrome DevTools Protocol client: headless Chromium started on a
//! kernel-chosen debugging port, one page attached (flat sessions over the
//! browser's WebSocket), commands answered in order, and the page's console
//! errors and uncaught exceptions collected as they come.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

pub struct Browser {
    child: Child,
    ws: WebSocket<TcpStream>,
    session: String,
    next: u64,
    /// Console errors and exceptions seen so far, as text.
    pub errors: Vec<String>,
    _profile: tempfile::TempDir,
}

/// The Chromium binary, if one runs here.
pub fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| super::runs(c, &["--version"]))
}

impl Browser {
    /// Start `binary` headless at `width`×`height` and open `url` in a page.
    pub fn open(binary: &str, url: &str, width: u32, height: u32) -> Browser {
        let mut b = Browser::start(binary, width, height);
        b.goto(url);
        b
    }

    /// Open `url` in the page.
    pub fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
    }

    /// Start `binary` headless at `width`×`height`, with a blank page whose
    /// renderer has answered: a cold start (a first run, a fresh profile)
    /// is paid here, before a test starts any clock of its own.
    pub fn start(binary: &str, width: u32, height: u32) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                // The page is not in a visible window: keep its timers at
                // full rate, as they are in a tab a person looks at.
                "--disable-background-timer-throttling",
                "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
                &format!("--window-size={width},{height}"),
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let endpoint = loop {
            let mut line = String::new();
            assert!(
                err.read_line(&mut line).unwrap() > 0,
                "chromium gave no DevTools address"
            );
            if let Some(at) = line.trim().strip_prefix("DevTools listening on ") {
                break at.to_string();
            }
        };
        // Keep draining stderr so chromium never blocks on it.
        std::thread::spawn(move || for _ in err.lines() {});
        let hostport = endpoint
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let stream = TcpStream::connect(&hostport).unwrap();
        let (ws, _) = tungstenite::client(endpoint.as_str(), stream).unwrap();
        let mut b = Browser {
            child,
            ws,
            session: String::new(),
            next: 0,
            errors: Vec::new(),
            _profile: profile,
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}));
        let target = target["targetId"].as_str().unwrap().to_string();
        let attached = b.call(
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
            b.call(domain, json!({}));
        }
        assert_eq!(
            b.eval("1 + 1"),
            json!(2),
            "the blank page's renderer answers"
        );
        b
    }

    /// Send a command (to the page once attached) and wait for its answer.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws.send(Message::text(msg.to_string())).unwrap();
        loop {
            let Message::Text(t) = self.ws.read().unwrap() else {
                continue;
            };
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
            self.event(&v);
        }
    }

    fn event(&mut self, v: &Value) {
        let p = &v["params"];
        match v["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                self.errors
                    .push(format!("exception: {}", p["exceptionDetails"]));
            }
            Some("Runtime.consoleAPICalled") if p["type"] == "error" => {
                self.errors.push(format!("console.error: {}", p["args"]));
            }
            Some("Log.entryAdded") if p["entry"]["level"] == "error" => {
                self.errors.push(format!("log: {}", p["entry"]["text"]));
            }
            _ => {}
        }
    }

    /// The value of a JavaScript expression in the page (promises awaited).
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            r["exceptionDetails"].is_null(),
            "{expr}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Wait until `expr` is true in the page, and return how long it took.
    pub fn wait_for(&mut self, what: &str, expr: &str, within: Duration) -> Duration {
        let start = Instant::now();
        // While the page loads, its elements may not exist yet.
        let guarded = format!(
            "(() => {{ try {{ return ({expr}) === true; }} catch (e) {{ return false; }} }})()"
        );
        loop {
            if self.eval(&guarded) == json!(true) {
                return start.elapsed();
            }
            assert!(start.elapsed() < within, "{what}: not within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A key press, as the keyboard sends it.
    pub fn key(&mut self, key: &str, code: &str, key_code: u32) {
        for kind in ["keyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({"type": kind, "key": key, "code": code, "windowsVirtualKeyCode": key_code}),
            );
        }
    }

    /// A PNG of the page.
    pub fn screenshot(&mut self) -> Vec<u8> {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let b64 = shot["data"].as_str().unwrap();
        // base64 by hand: the tests need no crate for it.
        let mut out = Vec::with_capacity(b64.len() * 3 / 4);
        let val = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            _ => 63,
        };
        let clean: Vec<u8> = b64.bytes().filter(|&c| c != b'=').collect();
        for chunk in clean.chunks(4) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &c)| n | u32::from(val(c)) << (18 - 6 * i));
            out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
        }
        out
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
