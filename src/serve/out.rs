//! Output waiting for one connection's socket, in order: bytes of our own
//! (heads, small bodies) and shared bodies (a cached `/telemetry`), written
//! with one `writev` so a shared body is never copied into the connection.

use super::head::{self, Body, Part, Response, Then};
use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

/// Buffers above this are freed once empty, so idle connections stay small.
pub const KEEP_CAPACITY: usize = 64 * 1024;
/// Shared bodies this large are queued by reference instead of copied.
const SHARE_MIN: usize = 16 * 1024;
/// Buffers handed to one `writev` at most.
const IOV_MAX: usize = 64;

/// Output waiting for the socket, in order: bytes of our own (heads, small
/// bodies) and shared bodies (a cached `/telemetry`), written with one
/// `writev` so a shared body is never copied into the connection.
#[derive(Default)]
pub struct OutQueue {
    bufs: VecDeque<Body>,
    /// Bytes of the front buffer already written.
    pos: usize,
    /// Bytes not yet written.
    pub len: usize,
}

/// How far a write went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued is written.
    All,
    /// The socket takes no more for now; writable readiness will say when.
    Blocked,
    /// The turn's bytes are out and more remain: write again soon, after
    /// the other connections.
    Turn,
}

/// Bytes written to one connection before the loop turns to the others.
pub const WRITE_TURN: usize = 512 * 1024;

impl OutQueue {
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffer to append owned bytes to: the last one when it is ours.
    fn tail(&mut self) -> &mut Vec<u8> {
        if !matches!(self.bufs.back(), Some(Body::Owned(_))) {
            self.bufs.push_back(Body::Owned(Vec::new()));
        }
        match self.bufs.back_mut() {
            Some(Body::Owned(v)) => v,
            _ => unreachable!("an owned buffer was just pushed"),
        }
    }

    /// Append `resp`: its head always, its body unless `part` says not.
    pub fn push(&mut self, resp: &Response, part: Part, then: Then, cors: &str) {
        let tail = self.tail();
        let before = tail.len();
        let has_body = head::write_head(tail, resp, then, cors) && part == Part::Whole;
        self.len += tail.len() - before;
        if !has_body {
            return;
        }
        match &resp.body {
            Body::Shared(a) => self.push_shared(a),
            Body::Owned(b) => self.push_bytes(b),
        }
    }

    /// Append bytes of our own (a WebSocket frame we framed, a pong).
    pub fn push_bytes(&mut self, bytes: &[u8]) {
        self.tail().extend_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Append shared bytes: by reference when large, so a body or frame
    /// many connections send is never copied into each.
    pub fn push_shared(&mut self, bytes: &std::sync::Arc<[u8]>) {
        if bytes.len() >= SHARE_MIN {
            self.bufs.push_back(Body::Shared(bytes.clone()));
            self.len += bytes.len();
        } else {
            self.push_bytes(bytes);
        }
    }

    /// Write as much as the socket takes. `Ok(true)` once all is written.
    pub fn write_to(&mut self, w: &mut impl Write) -> io::Result<bool> {
        Ok(self.write_turn(w, usize::MAX)? == Flushed::All)
    }

    /// Write as much as the socket takes, stopping once `turn` bytes are
    /// out: a client on loopback drains as fast as the loop writes, so
    /// without a turn one large body would keep the loop from the others.
    pub fn write_turn(&mut self, w: &mut impl Write, turn: usize) -> io::Result<Flushed> {
        let mut written_now = 0;
        while !self.is_empty() {
            if written_now >= turn {
                return Ok(Flushed::Turn);
            }
            let mut iov = [IoSlice::new(&[]); IOV_MAX];
            let mut n = 0;
            for (i, b) in self.bufs.iter().take(IOV_MAX).enumerate() {
                let from = if i == 0 { self.pos } else { 0 };
                iov[n] = IoSlice::new(&b[from..]);
                n += 1;
            }
            match w.write_vectored(&iov[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => {
                    self.advance(written);
                    written_now += written;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flushed::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // `advance` has left at most one empty buffer of our own. A stream
        // that buffers below us (TLS) is drained too.
        match w.flush() {
            Ok(()) => Ok(Flushed::All),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Flushed::Blocked),
            Err(e) => Err(e),
        }
    }

    fn advance(&mut self, mut written: usize) {
        self.len -= written;
        while let Some(front) = self.bufs.front() {
            let left = front.len() - self.pos;
            if written < left {
                self.pos += written;
                return;
            }
            written -= left;
            self.pos = 0;
            let done = self.bufs.pop_front();
            // Keep one small buffer of our own for the next response.
            if let (Some(Body::Owned(mut v)), true) = (done, self.bufs.is_empty()) {
                if v.capacity() <= KEEP_CAPACITY {
                    v.clear();
                    self.bufs.push_back(Body::Owned(v));
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::IoSlice;
    use std::sync::Arc;

    /// A socket that takes at most `max` bytes per call and refuses every
    /// other call, as a full send buffer would.
    struct Trickle {
        got: Vec<u8>,
        max: usize,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls % 2 == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.max - n);
                self.got.extend_from_slice(&b[..take]);
                n += take;
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn queue_writes_heads_and_shared_bodies_in_order() {
        let shared: Arc<[u8]> = vec![b's'; SHARE_MIN + 3].into();
        let small = Response::json(200, b"{\"a\":1}".to_vec());
        let big = Response::json(200, shared.clone());
        let mut q = OutQueue::default();
        let mut want = Vec::new();
        for (resp, part) in [
            (&small, Part::Whole),
            (&big, Part::Whole),
            (&big, Part::HeadOnly),
            (&small, Part::Whole),
        ] {
            q.push(resp, part, Then::KeepAlive, "");
            head::write_response(&mut want, resp, part, Then::KeepAlive, "");
        }
        assert_eq!(q.len, want.len());
        assert!(
            q.bufs
                .iter()
                .any(|b| matches!(b, Body::Shared(a) if Arc::ptr_eq(a, &shared))),
            "a large shared body is queued by reference"
        );
        let mut sock = Trickle {
            got: Vec::new(),
            max: 1000,
            calls: 0,
        };
        let mut rounds = 0;
        while !q.write_to(&mut sock).unwrap() {
            rounds += 1;
            assert!(rounds < 1000);
        }
        assert_eq!(sock.got, want);
        assert!(q.is_empty());
        assert_eq!(Arc::strong_count(&shared), 2, "written bodies are let go");
    }

    #[test]
    fn a_socket_that_takes_everything_is_written_in_turns() {
        let mut q = OutQueue::default();
        let body: Arc<[u8]> = vec![b'x'; 3 * WRITE_TURN].into();
        q.push(&Response::json(200, body), Part::Whole, Then::KeepAlive, "");
        // Takes 100,000 bytes a call and never blocks, like loopback to a
        // client that reads as fast as it is written to.
        struct Fast(Vec<u8>);
        impl Write for Fast {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                let n = buf.len().min(100_000);
                self.0.extend_from_slice(&buf[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut sink = Fast(Vec::new());
        let mut turns = 0;
        while q.write_turn(&mut sink, WRITE_TURN).unwrap() == Flushed::Turn {
            turns += 1;
            assert!(turns < 10);
        }
        assert!(q.is_empty());
        assert!((2..=3).contains(&turns), "{turns} turns");
        assert!(sink.0.ends_with(&[b'x'; 100]));
    }
}
