//! Test harness: start the real `musterd` on kernel-chosen ports, talk to it
//! over real sockets, read its log.

#![allow(dead_code)]

pub mod cdp;
pub mod pg;
pub mod pki;

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const MUSTERD: &str = env!("CARGO_BIN_EXE_musterd");

pub struct Daemon {
    pub child: Child,
    pub http: SocketAddr,
    pub heartbeat: SocketAddr,
    /// The TLS heartbeat listener, when the daemon opened one.
    pub heartbeat_tls: Option<SocketAddr>,
    pub log: Arc<Mutex<Vec<String>>>,
}

/// A command for musterd with no config file and kernel-chosen ports.
pub fn command(args: &[&str]) -> Command {
    let mut c = Command::new(MUSTERD);
    c.args([
        "--config",
        "/dev/null",
        "--http-addr",
        "127.0.0.1:0",
        "--heartbeat-addr",
        "127.0.0.1:0",
        // Tests that keep state name their own directory.
        "--state-dir",
        "off",
    ])
    .args(args)
    .env_remove("HTTP_PORT")
    .env_remove("JOURNAL_STREAM")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    c
}

/// The command, run with at most `n` open descriptors (soft and hard), so
/// that the daemon cannot raise its own limit.
pub fn with_nofile(mut cmd: Command, n: u64) -> Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

impl Daemon {
    pub fn start(args: &[&str]) -> Daemon {
        Daemon::spawn(command(args))
    }

    /// Spawn and wait for the `listening` line.
    pub fn spawn(mut cmd: Command) -> Daemon {
        let mut child = cmd.spawn().expect("spawn musterd");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let listening = line.contains("listening http=");
                sink.lock().unwrap().push(line.clone());
                if listening {
                    let _ = tx.send(line);
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("musterd did not start: {:?}", log.lock().unwrap()));
        let field = |name: &str| -> SocketAddr {
            let v = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap();
            v.parse().unwrap_or_else(|_| "0.0.0.0:0".parse().unwrap())
        };
        let tls = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("heartbeat_tls="))
            .and_then(|v| v.parse().ok());
        Daemon {
            http: field("http="),
            heartbeat: field("heartbeat="),
            heartbeat_tls: tls,
            child,
            log,
        }
    }

    pub fn udp(&self, payload: &[u8]) {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(payload, self.heartbeat).unwrap();
    }

    pub fn tcp(&self) -> TcpStream {
        let s = TcpStream::connect(self.heartbeat).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// GET a path; returns status and parsed JSON body (Null when not JSON).
    pub fn get(&self, path: &str) -> (u16, Value) {
        let (status, _, body) = self.request(&format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        ));
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// `POST path` with `body` and `extra` header lines (each ending in
    /// CRLF); the status and the answer's JSON.
    pub fn post(&self, path: &str, extra: &str, body: &str) -> (u16, Value) {
        let (status, _, b) = self.request(&format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ));
        (status, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }

    pub fn json(&self, path: &str) -> Value {
        let (status, v) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }

    /// Send raw bytes, read until close; returns status, head, body.
    pub fn request(&self, raw: &str) -> (u16, String, Vec<u8>) {
        let mut s = TcpStream::connect(self.http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(raw.as_bytes()).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        parse_response(&buf)
    }

    /// Wait up to 15 s for `ok`; a timeout shows the daemon's last log
    /// lines, so that a failure on a loaded machine says what it did.
    pub fn wait_for(&self, what: &str, mut ok: impl FnMut(&Daemon) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !ok(self) {
            if Instant::now() >= deadline {
                let log = self.log.lock().unwrap();
                let last: Vec<&str> = log
                    .iter()
                    .rev()
                    .take(40)
                    .rev()
                    .map(|l| l.as_str())
                    .collect();
                panic!(
                    "timed out waiting for {what}; its log ends:\n{}",
                    last.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until worker `id` has applied at least `n` frames (it exists
    /// as soon as its first frame is routed, a moment before it is applied).
    pub fn wait_applied(&self, id: &str, n: u64) {
        self.wait_for(&format!("{id} to apply {n} frames"), |d| {
            d.get(&format!("/telemetry/{id}")).1["messages_processed"]
                .as_u64()
                .unwrap_or(0)
                >= n
        });
    }

    /// Wait for a log line: the daemon writes it before what the test saw
    /// next, but another thread of the test reads it.
    pub fn wait_log(&self, needle: &str) {
        self.wait_for(&format!("the log line {needle:?}"), |d| d.log_has(needle));
    }

    pub fn log_has(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// SIGTERM and wait; returns the status and how long it took.
    pub fn stop(mut self) -> (ExitStatus, Duration) {
        let t = Instant::now();
        self.signal(libc::SIGTERM);
        let deadline = t + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st, t.elapsed());
            }
            assert!(
                Instant::now() < deadline,
                "musterd did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn rejected(&self, reason: &str) -> u64 {
        self.json("/health")["frames"]["rejected_by_reason"][reason]
            .as_u64()
            .unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Send raw bytes to `at`, read until close: status, head, body; `None`
/// when nothing answers there (a killed daemon).
pub fn try_request(at: SocketAddr, raw: &str) -> Option<(u16, String, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&at, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    s.write_all(raw.as_bytes()).ok()?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    (!buf.is_empty()).then(|| parse_response(&buf))
}

/// The most of these (start, end) spans that overlap at one time: how
/// many tasks ran at once.
pub fn most_at_once(spans: impl IntoIterator<Item = (u64, u64)>) -> usize {
    let mut edges: Vec<(u64, i32)> = spans
        .into_iter()
        .flat_map(|(start, end)| [(start, 1), (end, -1)])
        .collect();
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, e) in edges {
        now += e;
        most = most.max(now);
    }
    most as usize
}

/// Split one HTTP response into status, head and body.
/// (attempt, Unix ms) of each start of task `id`, as a test handler notes
/// them in `dir/starts`: a line per start, "task attempt ms".
pub fn starts_of(dir: &std::path::Path, id: &str) -> Vec<(u64, u64)> {
    std::fs::read_to_string(dir.join("starts"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[0] == id).then(|| (f[1].parse().unwrap(), f[2].parse().unwrap()))
        })
        .collect()
}

pub fn parse_response(buf: &[u8]) -> (u16, String, Vec<u8>) {
    let text = String::from_utf8_lossy(buf);
    let Some(end) = text.find("\r\n\r\n") else {
        return (0, text.to_string(), Vec::new());
    };
    let head = text[..end].to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head, buf[end + 4..].to_vec())
}

/// A process's resident memory in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap()
}

/// Read one `\n`-terminated JSON line from a TCP heartbeat connection.
pub fn read_line(s: &mut TcpStream) -> Option<Value> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b) {
            Ok(0) | Err(_) => return None,
            Ok(_) if b[0] == b'\n' => return serde_json::from_slice(&line).ok(),
            Ok(_) => line.push(b[0]),
        }
    }
}

/// Whether the peer closed (EOF) within the stream's read timeout,
/// discarding anything it sent first.
pub fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

/// Whether a test can run here: `have` says whether the real tool it needs
/// (`what`) is installed. In CI it must be (test.sh installs it); elsewhere
/// the test says why it skips, never passing in silence.
/// A port nothing listens on now (the kernel's choice).
/// A local address that is not loopback, if the machine has one: a peer
/// from it is not loopback either, though it is this machine.
pub fn non_loopback() -> Option<std::net::IpAddr> {
    let out = Command::new("hostname").arg("-I").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|w| w.parse::<std::net::IpAddr>().ok())
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn require(what: &str, have: bool) -> bool {
    if !have {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs {what} (test.sh installs it)"
        );
        eprintln!("skipped: {what} is not available here");
    }
    have
}

/// Whether `cmd args` runs and succeeds.
pub fn runs(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}
