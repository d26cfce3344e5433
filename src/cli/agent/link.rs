//! The agent's connection to musterd: TCP with hello and reconnects (or
//! plain UDP), heartbeats sent now or not at all, and `run` frames owed
//! until the daemon is back (at most [`MAX_OWED`]).

use super::MAX_OWED;
use crate::proto::{self, Frame, Reply, WorkerId};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// How often a finishing agent retries what it owes.
const POLL: Duration = super::POLL;

/// The connection to musterd.
pub(super) struct Link {
    to: SocketAddr,
    id: String,
    hello: String,
    token: Option<String>,
    udp: Option<UdpSocket>,
    tcp: Option<TcpStream>,
    next_try: Instant,
    backoff: Duration,
    owed: VecDeque<String>,
    said_down: bool,
    /// Reply bytes not yet a whole line (task mode reads replies).
    inbuf: Vec<u8>,
}

impl Link {
    pub(super) fn new(
        to: SocketAddr,
        id: &str,
        tcp: bool,
        token: Option<String>,
        mut hello: Frame,
    ) -> Result<Link, String> {
        hello.set_token(token.clone());
        let hello = proto::encode(&hello);
        let udp = if tcp {
            None
        } else {
            Some(
                UdpSocket::bind(if to.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" })
                    .map_err(|e| format!("udp socket: {e}"))?,
            )
        };
        Ok(Link {
            to,
            id: id.to_string(),
            hello,
            token,
            udp,
            tcp: None,
            next_try: Instant::now(),
            backoff: Duration::from_millis(250),
            owed: VecDeque::new(),
            said_down: false,
            inbuf: Vec::new(),
        })
    }

    fn connect(&mut self) -> bool {
        if self.tcp.is_some() {
            return true;
        }
        if Instant::now() < self.next_try {
            return false;
        }
        let attempt = (|| -> std::io::Result<(TcpStream, Vec<u8>)> {
            let mut s = TcpStream::connect_timeout(&self.to, Duration::from_secs(2))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(format!("{}\n", self.hello).as_bytes())?;
            let mut line = String::new();
            let mut reader = BufReader::new(&s);
            reader.read_line(&mut line)?;
            // A task may arrive right behind the welcome, in the same read.
            let rest = reader.buffer().to_vec();
            if !matches!(proto::decode_reply(line.as_bytes()), Ok(Reply::Welcome(_))) {
                return Err(std::io::Error::other(format!(
                    "no welcome: {}",
                    line.trim()
                )));
            }
            // Replies from here on are read by `replies`, never waited for.
            s.set_read_timeout(Some(Duration::from_millis(1)))?;
            Ok((s, rest))
        })();
        match attempt {
            Ok((s, rest)) => {
                if self.said_down {
                    eprintln!("muster agent: reconnected to musterd at {}", self.to);
                }
                self.tcp = Some(s);
                self.inbuf = rest;
                self.backoff = Duration::from_millis(250);
                self.said_down = false;
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
                self.next_try = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(Duration::from_secs(30));
                false
            }
        }
    }

    fn send_now(&mut self, frame: &str) -> bool {
        if let Some(u) = &self.udp {
            return u.send_to(frame.as_bytes(), self.to).is_ok();
        }
        if !self.connect() {
            return false;
        }
        let ok = self
            .tcp
            .as_mut()
            .is_some_and(|s| s.write_all(format!("{frame}\n").as_bytes()).is_ok());
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
        self.hello = proto::encode(&hello);
        if self.tcp.is_some() {
            let line = self.hello.clone();
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
        if let Some(s) = &self.tcp {
            let _ = s.shutdown(std::net::Shutdown::Write);
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
