//! Opening the daemon's sockets: HTTP, and heartbeats on one port for both
//! UDP and TCP, with the UDP receive buffer sized as configured.
//!
//! Startup only; errors here stop the daemon with exit status 1. The loops
//! that serve the sockets live in `serve` and `ingest`.

use mio::net::{TcpListener, UdpSocket};
use std::fmt;
use std::io;
use std::net::SocketAddr;

#[derive(Debug)]
pub struct StartupError {
    pub what: String,
    pub source: io::Error,
}

impl fmt::Display for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.source)
    }
}

impl std::error::Error for StartupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn fail(what: String) -> impl FnOnce(io::Error) -> StartupError {
    move |source| StartupError { what, source }
}

/// Sockets systemd passed (socket activation), by role.
#[derive(Default)]
pub struct Adopted {
    pub http: Option<TcpListener>,
    pub udp: Option<UdpSocket>,
    pub tcp: Option<TcpListener>,
}

impl Adopted {
    /// Sort passed sockets into roles. Named ones (`LISTEN_FDNAMES`
    /// `http`, `heartbeat`) first; the rest by type and order: a datagram
    /// socket is the UDP heartbeat socket, the first stream socket is HTTP
    /// and the second the heartbeat TCP listener (the order of `Listen…=`
    /// lines in musterd.socket). Anything left over is closed with a warning.
    pub fn from(passed: Vec<crate::sys::systemd::Passed>) -> Adopted {
        let mut a = Adopted::default();
        let (named, unnamed): (Vec<_>, Vec<_>) = passed
            .into_iter()
            .partition(|p| p.name == "http" || p.name == "heartbeat");
        for p in named.into_iter().chain(unnamed) {
            let role = match (p.name.as_str(), p.kind) {
                ("http", libc::SOCK_STREAM) => Some(Role::Http),
                ("heartbeat", libc::SOCK_STREAM) => Some(Role::Tcp),
                (_, libc::SOCK_DGRAM) => Some(Role::Udp),
                ("http" | "heartbeat", _) => None,
                (_, libc::SOCK_STREAM) if a.http.is_none() => Some(Role::Http),
                (_, libc::SOCK_STREAM) => Some(Role::Tcp),
                _ => None,
            };
            let taken = match role {
                Some(Role::Http) if a.http.is_none() => listener(p.fd).map(|l| a.http = Some(l)),
                Some(Role::Tcp) if a.tcp.is_none() => listener(p.fd).map(|l| a.tcp = Some(l)),
                Some(Role::Udp) if a.udp.is_none() => {
                    let s = std::net::UdpSocket::from(p.fd);
                    s.set_nonblocking(true)
                        .ok()
                        .map(|_| a.udp = Some(UdpSocket::from_std(s)))
                }
                _ => None,
            };
            if taken.is_none() {
                log::warn!("ignoring a socket passed by systemd: name={:?}", p.name);
            }
        }
        a
    }

    pub fn count(&self) -> usize {
        self.http.is_some() as usize + self.udp.is_some() as usize + self.tcp.is_some() as usize
    }
}

enum Role {
    Http,
    Tcp,
    Udp,
}

fn listener(fd: std::os::fd::OwnedFd) -> Option<TcpListener> {
    let l = std::net::TcpListener::from(fd);
    l.set_nonblocking(true).ok()?;
    Some(TcpListener::from_std(l))
}

pub fn bind_http(addr: SocketAddr) -> Result<TcpListener, StartupError> {
    bind_tcp(addr, "http")
}

/// A TCP listener for `what` (`http`, `TLS heartbeats`).
pub fn bind_tcp(addr: SocketAddr, what: &str) -> Result<TcpListener, StartupError> {
    let l = TcpListener::bind(addr).map_err(fail(format!("cannot listen for {what} on {addr}")))?;
    deepen(&l);
    Ok(l)
}

/// Listen with the deepest backlog the kernel allows (`net.core.somaxconn`,
/// 4096 on current kernels), as nginx follows it, rather than the 128
/// `bind` asks for: 2,000 dashboards or TCP workers reconnecting at once
/// after a restart then wait in the queue instead of for SYN retries.
/// Listening again on a listening socket only changes its backlog.
fn deepen(l: &TcpListener) {
    if let Err(e) = crate::sys::socket::deepen_backlog(l) {
        log::warn!("cannot deepen the listen backlog: {e}");
    }
}

/// UDP and TCP on the same port. With port 0 the kernel picks the UDP port
/// and TCP follows it; if that TCP port is taken, try another few times.
pub fn bind_heartbeat(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), StartupError> {
    let mut tries = if addr.port() == 0 { 16 } else { 1 };
    loop {
        let udp = UdpSocket::bind(addr)
            .map_err(fail(format!("cannot bind udp heartbeat socket on {addr}")))?;
        let port_addr = udp
            .local_addr()
            .map_err(fail("cannot read the udp socket's address".into()))?;
        match TcpListener::bind(port_addr) {
            Ok(tcp) => {
                deepen(&tcp);
                return Ok((udp, tcp));
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && tries > 1 => tries -= 1,
            Err(e) => {
                return Err(fail(format!(
                    "cannot listen for tcp heartbeats on {port_addr}"
                ))(e));
            }
        }
    }
}

pub use crate::sys::socket::set_recv_buffer;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_port_is_shared() {
        let (udp, tcp) = bind_heartbeat("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_eq!(
            udp.local_addr().unwrap().port(),
            tcp.local_addr().unwrap().port()
        );
        let got = set_recv_buffer(&udp, 1 << 20).unwrap();
        assert!(got > 0);
    }

    #[test]
    fn taken_port_is_an_error() {
        let (udp, _tcp) = bind_heartbeat("127.0.0.1:0".parse().unwrap()).unwrap();
        let err = bind_heartbeat(udp.local_addr().unwrap()).unwrap_err();
        assert!(err.to_string().contains("cannot bind udp"), "{err}");
    }
}
