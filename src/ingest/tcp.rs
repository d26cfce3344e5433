//! One heartbeat TCP connection's buffers: newline framing on the way in,
//! queued reply lines on the way out, and the frame waiting for room in a
//! worker's inbox.
//!
//! It knows nothing of frames' meaning: the ingest loop decodes the lines
//! this yields and [`super::session`] decides what they mean. Generic over
//! the stream, so its buffering is tested without sockets.
//!
//! Bounds: a line longer than `max_frame_bytes` is reported as
//! [`Line::TooLong`] without buffering more than one frame; at most
//! [`OUT_CAP`] bytes of replies are queued for a peer that does not read
//! (past that the connection is closed).

use super::session::Session;
use crate::fleet::inbox::Msg;
use crate::fleet::worker::Handle;
use crate::sys::stream::Pending;
use mio::Interest;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

/// Replies queued at most for one peer.
pub const OUT_CAP: usize = 64 * 1024;
const READ_CHUNK: usize = 16 * 1024;

pub enum Line {
    /// A complete line (without `\n` or `\r\n`) at this range of `inbuf`.
    Frame(Range<usize>),
    /// The line in progress already exceeds the frame limit.
    TooLong,
    /// No complete line buffered.
    Incomplete,
}

pub struct TcpConn<S> {
    pub stream: S,
    pub peer: SocketAddr,
    pub registered: Interest,
    inbuf: Vec<u8>,
    /// Start of unconsumed input in `inbuf`.
    start: usize,
    /// Bytes after `start` already searched for a newline.
    scanned: usize,
    out: Vec<u8>,
    out_pos: usize,
    /// Which worker the connection speaks for, by the session rules.
    pub session: Session,
    /// That worker's handle, once routed.
    pub handle: Option<Arc<Handle>>,
    /// A message the worker's inbox had no room for (backpressure).
    pub pending: Option<Msg>,
    /// Flush the queued replies, then close.
    pub closing: bool,
    pub peer_closed: bool,
}

impl<S: Read + Write + Pending> TcpConn<S> {
    pub fn new(stream: S, peer: SocketAddr, now: Instant) -> TcpConn<S> {
        TcpConn {
            stream,
            peer,
            registered: Interest::READABLE,
            inbuf: Vec::new(),
            start: 0,
            scanned: 0,
            out: Vec::new(),
            out_pos: 0,
            session: Session::new(now),
            handle: None,
            pending: None,
            closing: false,
            peer_closed: false,
        }
    }

    pub fn interest(&self) -> Interest {
        if self.out_pos < self.out.len() || self.stream.pending() {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        }
    }

    pub fn bytes(&self, r: Range<usize>) -> &[u8] {
        &self.inbuf[r]
    }

    /// The next complete line, if any. Call [`TcpConn::consume`] after use.
    pub fn next_line(&mut self, max: usize) -> Line {
        let buf = &self.inbuf[self.start..];
        match buf[self.scanned..].iter().position(|&b| b == b'\n') {
            Some(i) => {
                let nl = self.scanned + i;
                let end = if nl > 0 && buf[nl - 1] == b'\r' {
                    nl - 1
                } else {
                    nl
                };
                if end > max {
                    return Line::TooLong;
                }
                Line::Frame(self.start..self.start + end)
            }
            None => {
                self.scanned = buf.len();
                if buf.len() > max {
                    Line::TooLong
                } else {
                    Line::Incomplete
                }
            }
        }
    }

    /// Drop input up to and including the newline after `end`.
    pub fn consume(&mut self, end: usize) {
        let nl = self.inbuf[end..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(self.inbuf.len(), |i| end + i + 1);
        self.start = nl;
        self.scanned = 0;
        if self.start == self.inbuf.len() {
            self.inbuf.clear();
            self.start = 0;
        }
    }

    /// At end of stream, a final line without `\n` is still a frame.
    pub fn take_tail(&mut self) -> Option<Range<usize>> {
        let tail = self.start..self.inbuf.len();
        let trimmed = self.inbuf[tail.clone()]
            .iter()
            .any(|b| !b.is_ascii_whitespace());
        trimmed.then_some(tail)
    }

    /// Read once. `Ok(true)` if bytes arrived, `Ok(false)` on `WouldBlock`
    /// or end of stream (then `peer_closed` is set).
    pub fn read_some(&mut self, max: usize) -> io::Result<bool> {
        if self.start > 0 {
            self.inbuf.drain(..self.start);
            self.start = 0;
        }
        let mut chunk = [0u8; READ_CHUNK];
        // Never buffer more than one frame and its newline.
        let room = (max + 2)
            .saturating_sub(self.inbuf.len())
            .clamp(1, READ_CHUNK);
        loop {
            match self.stream.read(&mut chunk[..room]) {
                Ok(0) => {
                    self.peer_closed = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.inbuf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Queue a reply line. Past [`OUT_CAP`] the peer is not reading: close.
    pub fn send(&mut self, line: &[u8]) {
        if self.out.len() - self.out_pos + line.len() > OUT_CAP {
            self.closing = true;
            return;
        }
        self.out.extend_from_slice(line);
    }

    /// Write queued replies. `Err` means the connection is broken.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        // TLS records the socket did not take yet.
        match self.stream.flush() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(()),
        }
    }

    pub fn flushed(&self) -> bool {
        self.out_pos == self.out.len() && !self.stream.pending()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // Script is Pending through serve::conn's tests.
    use crate::script::{Script, Step};

    fn conn(steps: Vec<Step>) -> TcpConn<Script> {
        TcpConn::new(
            Script::new(steps),
            "127.0.0.1:1".parse().unwrap(),
            Instant::now(),
        )
    }

    /// Read and frame everything the script offers, as the loop does.
    fn lines(c: &mut TcpConn<Script>, max: usize) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            match c.next_line(max) {
                Line::Frame(r) => {
                    out.push(String::from_utf8_lossy(c.bytes(r.clone())).into_owned());
                    c.consume(r.end);
                }
                Line::TooLong => {
                    out.push("<too long>".into());
                    return out;
                }
                Line::Incomplete if c.peer_closed => {
                    if let Some(r) = c.take_tail() {
                        out.push(String::from_utf8_lossy(c.bytes(r.clone())).into_owned());
                        c.consume(r.end);
                    }
                    return out;
                }
                Line::Incomplete => match c.read_some(max) {
                    Ok(true) => {}
                    Ok(false) if c.peer_closed => {}
                    Ok(false) => return out,
                    Err(_) => return out,
                },
            }
        }
    }

    #[test]
    fn lines_split_anywhere_come_out_whole() {
        let text = b"{\"a\":1}\r\n{\"b\":2}\n\n{\"c\":3}";
        for cut in 0..text.len() {
            for cut2 in cut..text.len() {
                // An empty read would be the end of the stream: leave it out.
                let part = |b: &[u8]| (!b.is_empty()).then(|| Step::Read(b.to_vec()));
                let steps = [
                    part(&text[..cut]),
                    Some(Step::Block),
                    part(&text[cut..cut2]),
                    part(&text[cut2..]),
                    Some(Step::Eof),
                ];
                let mut c = conn(steps.into_iter().flatten().collect());
                let mut got = lines(&mut c, 1024);
                got.extend(lines(&mut c, 1024));
                assert_eq!(
                    got,
                    [r#"{"a":1}"#, r#"{"b":2}"#, "", r#"{"c":3}"#],
                    "cut at {cut} and {cut2}"
                );
            }
        }
    }

    #[test]
    fn a_long_line_is_refused_without_buffering_it() {
        let mut c = conn(vec![Step::Read(vec![b'x'; 100_000]), Step::Block]);
        assert_eq!(lines(&mut c, 1000), ["<too long>"]);
        assert!(c.inbuf.len() <= 1002, "buffered {}", c.inbuf.len());
    }

    #[test]
    fn replies_survive_short_and_blocked_writes() {
        let mut c = conn(vec![
            Step::Write(3),
            Step::Block,
            Step::Write(1),
            Step::Write(100),
        ]);
        c.send(b"{\"type\":\"welcome\"}\n");
        assert!(c.flush().is_ok());
        assert!(!c.flushed(), "blocked after three bytes");
        assert_eq!(c.interest(), Interest::READABLE | Interest::WRITABLE);
        assert!(c.flush().is_ok());
        assert!(c.flushed());
        assert_eq!(c.interest(), Interest::READABLE);
        assert_eq!(c.stream.written, b"{\"type\":\"welcome\"}\n");
    }

    #[test]
    fn a_peer_that_never_reads_is_closed_not_buffered() {
        let mut c = conn(vec![Step::Block]);
        let line = vec![b'e'; 1000];
        for _ in 0..OUT_CAP / line.len() {
            c.send(&line);
        }
        assert!(!c.closing);
        c.send(&line);
        assert!(c.closing, "past OUT_CAP the connection closes");
        assert!(c.out.len() <= OUT_CAP);
    }

    #[test]
    fn a_broken_stream_is_an_error() {
        let mut c = conn(vec![Step::Fail]);
        assert!(c.read_some(1000).is_err());
        let mut c = conn(vec![Step::Fail]);
        c.send(b"x\n");
        assert!(c.flush().is_err());
    }
}
