//! What an HTTP or heartbeat connection runs over: a plain TCP stream, or
//! TLS (rustls) over one. Both read and write like a socket in
//! non-blocking mode, so the connection state machines do not know which
//! they have.
//!
//! TLS needs one thing more: bytes written to it are encrypted into a
//! buffer that the socket may not take at once. [`Pending::pending`] says
//! so, the connection then waits for WRITABLE, and `flush` drains the
//! buffer. A write first drains what is buffered, and reports `WouldBlock`
//! while it cannot, so the buffer stays bounded by one write.

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::io::{self, Read, Write};

/// Output held below the connection's own queue (TLS records), and the
/// socket's own buffer.
pub trait Pending {
    fn pending(&self) -> bool {
        false
    }

    /// Bound the kernel's send buffer, so that a peer that stops reading is
    /// felt at once rather than after megabytes.
    fn limit_send_buffer(&mut self, _bytes: usize) {}
}

pub enum Stream {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<tls::TlsStream>),
}

impl Stream {
    fn tcp(&mut self) -> &mut TcpStream {
        match self {
            Stream::Plain(s) => s,
            #[cfg(feature = "tls")]
            Stream::Tls(t) => &mut t.sock,
        }
    }
}

impl Stream {
    /// The end-entity certificate the peer presented (DER), once the TLS
    /// handshake has verified it; `None` over plain TCP or without one.
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        match self {
            Stream::Plain(_) => None,
            #[cfg(feature = "tls")]
            Stream::Tls(t) => t.conn.peer_certificates()?.first().map(|c| c.as_ref()),
        }
    }

    /// Whether the TLS handshake is still under way.
    pub fn handshaking(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            #[cfg(feature = "tls")]
            Stream::Tls(t) => t.conn.is_handshaking(),
        }
    }
}

impl Pending for Stream {
    fn pending(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            #[cfg(feature = "tls")]
            Stream::Tls(t) => t.conn.wants_write(),
        }
    }

    fn limit_send_buffer(&mut self, bytes: usize) {
        let _ = crate::sys::socket::set_send_buffer(self.tcp(), bytes);
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(t) => t.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write_vectored(bufs),
            #[cfg(feature = "tls")]
            Stream::Tls(t) => t.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            #[cfg(feature = "tls")]
            Stream::Tls(t) => t.flush(),
        }
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        self.tcp().register(r, t, i)
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        self.tcp().reregister(r, t, i)
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        self.tcp().deregister(r)
    }
}

#[cfg(feature = "tls")]
pub mod tls {
    use mio::net::TcpStream;
    use rustls::ServerConnection;
    use std::io::{self, Read, Write};

    pub struct TlsStream {
        pub conn: ServerConnection,
        pub sock: TcpStream,
    }

    fn would_block() -> io::Error {
        io::ErrorKind::WouldBlock.into()
    }

    impl TlsStream {
        pub fn new(conn: ServerConnection, sock: TcpStream) -> TlsStream {
            TlsStream { conn, sock }
        }

        /// Write buffered records until the socket would block.
        fn push(&mut self) -> io::Result<()> {
            while self.conn.wants_write() {
                match self.conn.write_tls(&mut self.sock) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }
    }

    impl Read for TlsStream {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            loop {
                match self.conn.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    // The peer closed without close_notify: an end all the same.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                match self.conn.read_tls(&mut self.sock) {
                    Ok(0) => return Ok(0),
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
                let processed = self.conn.process_new_packets();
                // Handshake replies, or the alert for a bad record.
                match self.push() {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if let Err(e) = processed {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            }
        }
    }

    impl Write for TlsStream {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.push()?;
            if buf.is_empty() {
                return Ok(0);
            }
            let n = self.conn.writer().write(buf)?;
            if n == 0 {
                return Err(would_block());
            }
            // Best effort now; what the socket does not take waits for
            // WRITABLE (`Pending`).
            match self.push() {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
                _ => Ok(n),
            }
        }

        fn flush(&mut self) -> io::Result<()> {
            self.push()
        }
    }
}
