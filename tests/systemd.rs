//! systemd integration against the real daemon: sd_notify through a fake
//! NOTIFY_SOCKET bound by the test, the watchdog cadence, and socket
//! activation with sockets the test binds and passes as fds 3, 4, 5.

mod support;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{Daemon, MUSTERD, command};

struct FakeSystemd {
    sock: UnixDatagram,
    path: std::path::PathBuf,
}

impl FakeSystemd {
    fn new(name: &str) -> FakeSystemd {
        let path =
            std::env::temp_dir().join(format!("muster-notify-{}-{name}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        FakeSystemd { sock, path }
    }

    fn recv(&self) -> String {
        let mut buf = [0u8; 4096];
        let n = self.sock.recv(&mut buf).expect("no notification in time");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Read messages until one starts with `prefix`; returns it and what came before.
    fn until(&self, prefix: &str) -> (String, Vec<String>) {
        let mut before = Vec::new();
        loop {
            let m = self.recv();
            if m.starts_with(prefix) {
                return (m, before);
            }
            before.push(m);
        }
    }
}

impl Drop for FakeSystemd {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn ready_after_http_accepts_then_watchdog_then_stopping() {
    let sd = FakeSystemd::new("ready");
    let mut c = command(&[]);
    c.env("NOTIFY_SOCKET", &sd.path)
        .env("WATCHDOG_USEC", "400000");
    let d = Daemon::spawn(c);
    let (_, before) = sd.until("READY=1");
    assert!(
        before.iter().all(|m| !m.starts_with("STOPPING")),
        "{before:?}"
    );
    // READY=1 promises the HTTP port accepts.
    assert!(TcpStream::connect(d.http).is_ok());
    // Pings every 200 ms: count them over about 2 s.
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_secs(2) {
        if sd.recv() == "WATCHDOG=1" {
            pings += 1;
        }
    }
    assert!(
        (7..=13).contains(&pings),
        "{pings} pings in 2 s at a 200 ms cadence"
    );
    d.signal(libc::SIGHUP);
    let (reloading, _) = sd.until("RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    sd.until("READY=1");
    let d_log = d.log.clone();
    let waiter = std::thread::spawn(move || d.stop());
    sd.until("STOPPING=1");
    assert_eq!(waiter.join().unwrap().0.code(), Some(0));
    assert!(
        d_log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("systemd watchdog: pinging every 200 ms"))
    );
}

#[test]
fn status_line_summarises_the_fleet() {
    let sd = FakeSystemd::new("status");
    let mut c = command(&[]);
    c.env("NOTIFY_SOCKET", &sd.path);
    let d = Daemon::spawn(c);
    d.udp(br#"{"type":"heartbeat","worker_id":"s1"}"#);
    d.wait_for("known", |d| d.get("/telemetry/s1").0 == 200);
    // STATUS is refreshed every 5 s; wait for one that counts s1.
    let deadline = Instant::now() + Duration::from_secs(12);
    loop {
        let (m, _) = sd.until("STATUS=");
        if m == "STATUS=1 workers, 1 active, 0 dropped, 0 rejected" {
            break;
        }
        assert!(Instant::now() < deadline, "last status: {m}");
    }
}

#[test]
fn a_missing_notify_socket_is_logged_once_and_the_daemon_runs() {
    let mut c = command(&[]);
    c.env("NOTIFY_SOCKET", "/nonexistent/dir/notify.sock")
        .env("WATCHDOG_USEC", "200000");
    let d = Daemon::spawn(c);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(d.json("/health")["status"], "healthy");
    let complaints = d
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("cannot notify systemd"))
        .count();
    assert_eq!(complaints, 1);
}

/// Spawn musterd with `fds` as 3, 4, 5… and LISTEN_PID set to its own pid
/// (the shell's `exec` keeps the pid).
fn spawn_activated(fds: &[i32], names: &str, pid_override: Option<&str>) -> Daemon {
    let fds = fds.to_vec();
    let pid = pid_override.map_or("$$".to_string(), str::to_string);
    let script = format!(
        "LISTEN_PID={pid} LISTEN_FDS={} LISTEN_FDNAMES={names} exec {MUSTERD} --config /dev/null --http-addr 127.0.0.1:0 --heartbeat-addr 127.0.0.1:0",
        fds.len()
    );
    let mut c = Command::new("sh");
    c.args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: only dup2 and fcntl between fork and exec (async-signal-safe).
    unsafe {
        c.pre_exec(move || {
            for (i, &fd) in fds.iter().enumerate() {
                let target = 3 + i as i32;
                // Move sources above the target range first, so no dup2
                // overwrites a source still to be copied.
                let high = libc::fcntl(fd, libc::F_DUPFD, 100);
                if high < 0 || libc::dup2(high, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::fcntl(target, libc::F_SETFD, 0);
            }
            Ok(())
        });
    }
    Daemon::spawn(c)
}

#[test]
fn socket_activation_adopts_the_passed_sockets() {
    let http = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind(tcp.local_addr().unwrap()).unwrap();
    let (http_addr, hb_addr) = (http.local_addr().unwrap(), tcp.local_addr().unwrap());
    let d = spawn_activated(
        &[http.as_raw_fd(), tcp.as_raw_fd(), udp.as_raw_fd()],
        "http:heartbeat:heartbeat",
        None,
    );
    assert!(d.log_has("adopted 3 sockets from systemd"));
    assert_eq!(d.http, http_addr, "serves on the passed HTTP socket");
    assert_eq!(d.heartbeat, hb_addr);
    drop((http, tcp, udp));
    d.udp(br#"{"type":"heartbeat","worker_id":"act"}"#);
    d.wait_for("applied", |d| d.get("/telemetry/act").0 == 200);
}

#[test]
fn socket_activation_by_order_when_unnamed() {
    let http = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind(tcp.local_addr().unwrap()).unwrap();
    let http_addr = http.local_addr().unwrap();
    let d = spawn_activated(
        &[http.as_raw_fd(), tcp.as_raw_fd(), udp.as_raw_fd()],
        "musterd.socket",
        None,
    );
    assert_eq!(d.http, http_addr);
    assert_eq!(d.json("/health")["status"], "healthy");
}

#[test]
fn listen_fds_for_another_pid_are_ignored() {
    let http = TcpListener::bind("127.0.0.1:0").unwrap();
    let http_addr = http.local_addr().unwrap();
    let d = spawn_activated(&[http.as_raw_fd()], "http", Some("1"));
    assert!(!d.log_has("adopted"));
    assert_ne!(d.http, http_addr, "bound its own port instead");
    assert_eq!(d.json("/health")["status"], "healthy");
}
