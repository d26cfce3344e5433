//! The agent's connection to musterd: TCP with hello and reconnects (or
//! plain UDP), heartbeats sent now or not at all, and `run` frames owed
//! until the daemon is back (at most [`MAX_OWED`]).
//!
//! A cluster's nodes are a list: the agent tries them in turn, the next
//! one at once when one does not answer, and waits (250 ms doubling to
//! 5 s, each wait between half and one and a half of that) only once
//! every address failed. Each `welcome` names the nodes alive then; those
//! not on the list join it. Every hello after the first re-reports the
//! tasks still running, with their lease tokens, so that the node they
//! reconnect to keeps them going.

use super::MAX_OWED;
use crate::cli::net::{self, Conn, Target};
use crate::proto::task::Held;
use crate::proto::{self, Frame, Reply, WorkerId};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

/// How often a finishing agent retries what it owes.
const POLL: Duration = super::POLL;

/// Longest wait between two rounds of the address list.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Addresses kept at most (the given ones and those `welcome` named).
const MAX_ADDRS: usize = 64;

/// The connection to musterd.
pub(super) struct Link {
    /// Where musterd's nodes are, in the order tried; `at` is the one in
    /// use or tried next, `failed` how many failed in a row.
    addrs: Vec<Target>,
    at: usize,
    failed: usize,
    to: Target,
    id: String,
    hello: Frame,
    /// The tasks running now, re-reported by the next hello.
    running: Vec<Held>,
    token: Option<String>,
    udp: Option<UdpSocket>,
    tcp: Option<Conn>,
    next_try: Instant,
    backoff: Duration,
    owed: VecDeque<String>,
    said_down: bool,
    /// Reply bytes not yet a whole line (task mode reads replies).
    inbuf: Vec<u8>,
}

impl Link {
    pub(super) fn new(
        addrs: Vec<Target>,
        id: &str,
        tcp: bool,
        token: Option<String>,
        mut hello: Frame,
    ) -> Result<Link, String> {
        let to = addrs.first().ok_or("no heartbeat address")?.clone();
        hello.set_token(token.clone());
        let udp = if tcp {
            None
        } else {
            Some(
                UdpSocket::bind(if to.addr.is_ipv6() {
                    "[::]:0"
                } else {
                    "0.0.0.0:0"
                })
                .map_err(|e| format!("udp socket: {e}"))?,
            )
        };
        Ok(Link {
            addrs,
            at: 0,
            failed: 0,
            to,
            id: id.to_string(),
            hello,
            running: Vec::new(),
            token,
            udp,
            tcp: None,
            next_try: Instant::now(),
            backoff: FIRST_BACKOFF,
            owed: VecDeque::new(),
            said_down: false,
            inbuf: Vec::new(),
        })
    }

    /// The hello this connection starts with: with the tasks running now.
    fn hello_line(&self) -> String {
        let mut hello = self.hello.clone();
        if let Frame::Hello(h) = &mut hello {
            h.running = (!self.running.is_empty()).then(|| self.running.clone());
        }
        proto::encode(&hello)
    }

    fn connect(&mut self) -> bool {
        if self.tcp.is_some() {
            return true;
        }
        if Instant::now() < self.next_try {
            return false;
        }
        self.to = self.addrs[self.at % self.addrs.len()].clone();
        let hello = self.hello_line();
        let attempt = (|| -> std::io::Result<(Conn, Vec<u8>, Vec<String>)> {
            let mut s = net::connect(&self.to, Duration::from_secs(2))?;
            s.tcp().set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(format!("{hello}\n").as_bytes())?;
            s.flush()?;
            let mut line = String::new();
            let mut reader = BufReader::new(&mut s);
            reader.read_line(&mut line)?;
            // A task may arrive right behind the welcome, in the same read.
            let rest = reader.buffer().to_vec();
            drop(reader);
            let Ok(Reply::Welcome(w)) = proto::decode_reply(line.as_bytes()) else {
                return Err(std::io::Error::other(format!(
                    "no welcome: {}",
                    line.trim()
                )));
            };
            // Replies from here on are read by `replies`, never waited for.
            s.tcp().set_read_timeout(Some(Duration::from_millis(1)))?;
            Ok((s, rest, w.nodes))
        })();
        match attempt {
            Ok((s, rest, nodes)) => {
                if self.said_down {
                    eprintln!("muster agent: reconnected to musterd at {}", self.to);
                }
                self.tcp = Some(s);
                self.inbuf = rest;
                self.backoff = FIRST_BACKOFF;
                self.failed = 0;
                self.said_down = false;
                self.learn(&nodes);
                true
            }
            Err(e) => {
                if !self.said_down {
                    eprintln!(
                        "muster agent: cannot reach musterd at {} ({e}); the command keeps running, retrying",
                        self.to
                    );
                    self.said_down = true;
                }
                // The next address at once; a wait once all of them failed.
                self.at = (self.at + 1) % self.addrs.len();
                self.failed += 1;
                if self.failed >= self.addrs.len() {
                    self.failed = 0;
                    self.next_try = Instant::now() + jittered(self.backoff);
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                }
                false
            }
        }
    }

    /// Nodes a `welcome` named that the list lacks join it.
    fn learn(&mut self, nodes: &[String]) {
        for n in nodes.iter().take(MAX_ADDRS) {
            // `node_advertise` may name a host: resolved here.
            let Ok(a) = crate::cli::client::parse_url(n) else {
                continue;
            };
            let a = a.with_tls(self.to.tls);
            if self.addrs.len() < MAX_ADDRS && !self.addrs.contains(&a) {
                self.addrs.push(a);
            }
        }
    }

    /// The tasks running now, for the next hello.
    pub(super) fn set_running(&mut self, running: Vec<Held>) {
        self.running = running;
    }

    fn send_now(&mut self, frame: &str) -> bool {
        if let Some(u) = &self.udp {
            return u.send_to(frame.as_bytes(), self.to.addr).is_ok();
        }
        if !self.connect() {
            return false;
        }
        let ok = self.tcp.as_mut().is_some_and(|s| {
            s.write_all(format!("{frame}\n").as_bytes())
                .and_then(|()| s.flush())
                .is_ok()
        });
        if !ok {
            self.tcp = None;
            self.next_try = Instant::now();
        }
        ok
    }

    /// Deliver owed run frames first, oldest first.
    fn flush_owed(&mut self) -> bool {
        while let Some(f) = self.owed.front().cloned() {
            if !self.send_now(&f) {
                return false;
            }
            self.owed.pop_front();
        }
        true
    }

    /// State: sent now or not at all.
    /// A frame as sent: over UDP each carries the token; over TCP the
    /// hello did.
    fn encode(&self, mut frame: Frame) -> String {
        if self.udp.is_some() {
            frame.set_token(self.token.clone());
        }
        proto::encode(&frame)
    }

    pub(super) fn heartbeat(&mut self, frame: Frame) {
        if self.flush_owed() {
            let frame = self.encode(frame);
            self.send_now(&frame);
        }
    }

    /// A new hello (the command was started again, with a new pid): sent
    /// now on a live TCP connection, and by each reconnect after.
    pub(super) fn hello_again(&mut self, mut hello: Frame) {
        hello.set_token(self.token.clone());
        self.hello = hello;
        if self.tcp.is_some() {
            let line = self.hello_line();
            self.send_now(&line);
        }
    }

    /// An outcome: sent now, or owed until the daemon is back.
    pub(super) fn run(&mut self, frame: Frame) {
        let frame = self.encode(frame);
        if self.owed.len() == MAX_OWED {
            self.owed.pop_front();
            eprintln!("muster agent: {MAX_OWED} runs owed to musterd; dropping the oldest");
        }
        self.owed.push_back(frame);
        self.flush_owed();
    }

    pub(super) fn bye(&mut self) {
        let bye = self.encode(Frame::Bye {
            worker_id: Some(WorkerId::from(self.id.as_str())),
            token: None,
        });
        self.send_now(&bye);
        if let Some(s) = &mut self.tcp {
            let _ = s.shutdown_write();
        }
    }

    /// Whole reply lines that arrived since the last call (TCP only;
    /// connects first when the link is down). A closed connection is
    /// dropped, to be made again.
    pub(super) fn replies(&mut self) -> Vec<Reply> {
        if self.udp.is_some() || !self.connect() {
            return Vec::new();
        }
        let mut buf = [0u8; 16 * 1024];
        let mut closed = false;
        if let Some(s) = self.tcp.as_mut() {
            loop {
                match std::io::Read::read(s, &mut buf) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => self.inbuf.extend_from_slice(&buf[..n]),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
        }
        let mut out = Vec::new();
        while let Some(end) = self.inbuf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.inbuf.drain(..=end).collect();
            match proto::decode_reply(&line) {
                Ok(Reply::Error(e)) => {
                    eprintln!("muster agent: musterd says {}: {}", e.code, e.message)
                }
                Ok(r) => out.push(r),
                Err(_) => {}
            }
        }
        if closed {
            self.tcp = None;
            self.next_try = Instant::now();
        }
        out
    }

    /// Where the link is connected, or tries next.
    #[cfg(test)]
    pub(super) fn addrs(&self) -> &[Target] {
        &self.addrs
    }

    /// Keep trying to deliver what is owed, for a while.
    pub(super) fn settle(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.flush_owed() && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        if !self.owed.is_empty() {
            eprintln!(
                "muster agent: {} run frames could not be delivered to musterd",
                self.owed.len()
            );
        }
    }
}

/// `d` times a factor between 0.5 and 1.5: reconnects spread out.
fn jittered(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    d.mul_f64(0.5 + (r % 1000) as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn hello() -> Frame {
        super::super::hello("w", 1, &Default::default())
    }

    /// A dead address is passed over at once for the next; the welcome's
    /// node list joins the addresses; the hello after a reconnect says
    /// which tasks still run.
    #[test]
    fn fails_over_along_the_list_and_reports_what_runs() {
        let dead = TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_at = dead.local_addr().unwrap();
        drop(dead);
        let live = TcpListener::bind("127.0.0.1:0").unwrap();
        let live_at = live.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut hellos = Vec::new();
            for _ in 0..2 {
                let (s, _) = live.accept().unwrap();
                let mut line = String::new();
                BufReader::new(&s).read_line(&mut line).unwrap();
                hellos.push(line);
                let w = proto::encode_welcome("w", 1000, 3000, vec!["127.0.0.1:1".into()]);
                (&s).write_all(&w).unwrap();
                if hellos.len() == 1 {
                    drop(s);
                } else {
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            hellos
        });
        let to = vec![Target::plain(dead_at), Target::plain(live_at)];
        let mut link = Link::new(to, "w", true, None, hello()).unwrap();
        let started = Instant::now();
        while !link.connect() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "never connected"
            );
        }
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "no wait for the second"
        );
        assert_eq!(link.addrs().len(), 3, "the welcome's node joined");
        link.set_running(vec![Held {
            task_id: "t1".into(),
            lease: 9,
        }]);
        // The server closed the first connection: the link finds out and
        // connects again, re-reporting t1.
        let until = Instant::now() + Duration::from_secs(5);
        while link.tcp.is_some() && Instant::now() < until {
            link.replies();
            std::thread::sleep(Duration::from_millis(10));
        }
        while !link.connect() {
            assert!(Instant::now() < until, "never reconnected");
            std::thread::sleep(Duration::from_millis(10));
        }
        let hellos = server.join().unwrap();
        assert!(!hellos[0].contains("running"), "{}", hellos[0]);
        assert!(
            hellos[1].contains(r#""running":[{"task_id":"t1","lease":9}]"#),
            "{}",
            hellos[1]
        );
    }
}
