//! Taking connections off a listener, for both loops: until the queue is
//! empty, with a descriptor kept in reserve for when there are none.
//!
//! Out of descriptors (EMFILE, ENFILE) `accept` fails while connections
//! wait in the queue, and no new readiness will say so. The [`Acceptor`]
//! then lets its reserve descriptor go, takes the connection at the head of
//! the queue with it and hands it over to be told no and closed ("shed"),
//! as nginx does, so that no client waits on a queue nobody takes from;
//! when that too fails it asks to be tried again ([`Acceptor::retry`]) on
//! the loop's next tick.

use super::fds::{Reserve, out_of_descriptors};
use mio::net::{TcpListener, TcpStream};
use std::io;
use std::net::SocketAddr;

/// One thing `accept` gave.
pub enum Accepted<'a> {
    /// A connection to serve.
    Conn(TcpStream, SocketAddr),
    /// A connection taken with the reserve descriptor while none were free:
    /// answer it no (or just close it) and drop it before returning, so the
    /// descriptor can go back into reserve.
    Shed(TcpStream, &'a io::Error),
    /// Accepting failed; it is tried again on the next tick.
    Failed(&'a io::Error),
}

#[derive(Default)]
pub struct Acceptor {
    reserve: Reserve,
    retry: bool,
}

impl Acceptor {
    pub fn new() -> Acceptor {
        Acceptor::default()
    }

    /// Whether an accept failed and must be tried again, since connections
    /// already queued raise no new readiness.
    pub fn retry(&self) -> bool {
        self.retry
    }

    /// Note that the listener is readable: accept on the next call.
    pub fn ready(&mut self) {
        self.retry = true;
    }

    /// Accept until the queue is empty, handing each to `each`.
    pub fn accept(&mut self, listener: &TcpListener, mut each: impl FnMut(Accepted)) {
        // A reserve given up to a shed connection may have been taken back
        // by another thread before it was restored (a file read, the other
        // loop's accept): try again each time, or the next shortage would
        // leave connections waiting in the queue.
        self.reserve.restore();
        loop {
            match listener.accept() {
                Ok((stream, peer)) => each(Accepted::Conn(stream, peer)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.retry = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if out_of_descriptors(&e) && self.reserve.release() => {
                    let taken = listener.accept();
                    match taken {
                        Ok((stream, _)) => {
                            each(Accepted::Shed(stream, &e));
                            self.reserve.restore();
                        }
                        Err(_) => {
                            self.reserve.restore();
                            each(Accepted::Failed(&e));
                            self.retry = true;
                            return;
                        }
                    }
                }
                Err(e) => {
                    each(Accepted::Failed(&e));
                    self.retry = true;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_until_the_queue_is_empty() {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let at = listener.local_addr().unwrap();
        let clients: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(at).unwrap())
            .collect();
        let mut a = Acceptor::new();
        a.ready();
        let mut got = 0;
        // Connections may reach the queue a moment after connect returns.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got < 3 && std::time::Instant::now() < deadline {
            a.accept(&listener, |x| {
                if let Accepted::Conn(..) = x {
                    got += 1
                }
            });
        }
        assert_eq!(got, 3);
        assert!(!a.retry(), "the queue was emptied");
        drop(clients);
    }
}
