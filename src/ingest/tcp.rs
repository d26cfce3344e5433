//! One heartbeat TCP connection's buffers: newline framing on the way in,
//! queued reply lines on the way out, and the frame waiting for room in a
//! worker's inbox.
//!
//! It knows nothing of frames' meaning: the ingest loop decodes the lines
//! this yields and decides what to answer. Bounds: a line longer than
//! `max_frame_bytes` is reported as [`Line::TooLong`] without buffering
//! more than one frame; at most [`OUT_CAP`] bytes of replies are queued for a
//! peer that does not read (past that the connection is closed).

use crate::fleet::worker::{Handle, Msg};
use crate::proto::WorkerId;
use mio::Interest;
use mio::net::TcpStream;
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

pub struct TcpConn {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub registered: Interest,
    inbuf: Vec<u8>,
    /// Start of unconsumed input in `inbuf`.
    start: usize,
    /// Bytes after `start` already searched for a newline.
    scanned: usize,
    out: Vec<u8>,
    out_pos: usize,
    /// The worker this connection said hello for.
    pub worker: Option<(WorkerId, Arc<Handle>)>,
    /// A message the worker's inbox had no room for (backpressure).
    pub pending: Option<Msg>,
    /// Last complete frame (or the connect): silence is judged from here,
    /// so a peer dribbling a partial line is still silent.
    pub last_frame: Instant,
    /// Flush the queued replies, then close.
    pub closing: bool,
    pub peer_closed: bool,
}

impl TcpConn {
    pub fn new(stream: TcpStream, peer: SocketAddr, now: Instant) -> TcpConn {
        TcpConn {
            stream,
            peer,
            registered: Interest::READABLE,
            inbuf: Vec::new(),
            start: 0,
            scanned: 0,
            out: Vec::new(),
            out_pos: 0,
            worker: None,
            pending: None,
            last_frame: now,
            closing: false,
            peer_closed: false,
        }
    }

    pub fn interest(&self) -> Interest {
        if self.out_pos < self.out.len() {
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
        Ok(())
    }

    pub fn flushed(&self) -> bool {
        self.out_pos == self.out.len()
    }
}
