//! Where `muster` connects, and over what: a [`Target`] is an address and
//! the host name it was given by, and whether to speak TLS there
//! (`https://`, `wss://`, or `--tls` for heartbeats). A [`Conn`] is the
//! connection, plain or TLS (rustls), read and written alike.
//!
//! TLS verifies the daemon's certificate against the system's roots
//! (Debian's `/etc/ssl/certs/ca-certificates.crt`), or against the CA file
//! given with `--ca-file` or `MUSTER_TLS_CA_FILE`, and checks it names the
//! host in the URL or address (an IP address against its IP addresses). A
//! client certificate (`--cert-file`, `--key-file`, or
//! `MUSTER_TLS_CERT_FILE` and `MUSTER_TLS_KEY_FILE`) is sent when the
//! daemon asks for one: a worker's identity on a TLS heartbeat listener.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub use crate::config::tls::SYSTEM_ROOTS;

/// Where and how to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    /// The host as written (a name or an IP address), for the certificate.
    pub host: String,
    pub tls: bool,
}

impl Target {
    pub fn plain(addr: SocketAddr) -> Target {
        Target {
            addr,
            host: addr.ip().to_string(),
            tls: false,
        }
    }

    /// The same place, over TLS or not.
    pub fn with_tls(mut self, tls: bool) -> Target {
        self.tls = tls;
        self
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.addr)
    }
}

/// The files TLS reads: the CA to verify the daemon with, and this
/// client's certificate and key.
#[derive(Clone, Debug, Default)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    /// `MUSTER_TLS_CA_FILE`, `MUSTER_TLS_CERT_FILE`, `MUSTER_TLS_KEY_FILE`.
    pub fn from_env() -> TlsFiles {
        let path = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        TlsFiles {
            ca: path("MUSTER_TLS_CA_FILE"),
            cert: path("MUSTER_TLS_CERT_FILE"),
            key: path("MUSTER_TLS_KEY_FILE"),
        }
    }
}

/// Whether `MUSTER_TLS` asks for TLS heartbeats.
pub fn env_tls() -> Result<bool, String> {
    match std::env::var("MUSTER_TLS").as_deref() {
        Err(_) | Ok("" | "0" | "false" | "off" | "no") => Ok(false),
        Ok("1" | "true" | "on" | "yes") => Ok(true),
        Ok(v) => Err(format!("MUSTER_TLS={v:?}: expected 1 or 0")),
    }
}

static FILES: Mutex<Option<TlsFiles>> = Mutex::new(None);
static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();

/// Set the files from the command line, before the first connection
/// (which reads them once). Without a call, the environment's.
pub fn set_files(files: TlsFiles) {
    *FILES.lock().unwrap_or_else(|p| p.into_inner()) = Some(files);
}

/// The files set so far: the command line's, else the environment's.
pub fn files() -> TlsFiles {
    FILES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_else(TlsFiles::from_env)
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The rustls configuration for `files`.
pub fn config(files: &TlsFiles) -> Result<Arc<ClientConfig>, String> {
    let ca = files
        .ca
        .clone()
        .unwrap_or_else(|| PathBuf::from(SYSTEM_ROOTS));
    let roots = crate::config::tls::roots(&ca)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    let config = match (&files.cert, &files.key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), key) => {
            let cert_pem = read(cert)?;
            let chain = CertificateDer::pem_slice_iter(&cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: not a PEM certificate: {e:?}", cert.display()))?;
            let key_path = key.as_deref().unwrap_or(cert);
            let key_pem = read(key_path)?;
            let private = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| format!("{}: not a PEM private key: {e:?}", key_path.display()))?;
            builder
                .with_client_auth_cert(chain, private)
                .map_err(|e| format!("{}: {e}", cert.display()))?
        }
        (None, Some(_)) => return Err("--key-file needs --cert-file".into()),
    };
    Ok(Arc::new(config))
}

/// The process's TLS configuration, made on first use.
fn shared() -> Result<Arc<ClientConfig>, String> {
    CONFIG.get_or_init(|| config(&files())).clone()
}

/// Whether the TLS files are usable, said before a long-running command
/// (the agent) starts rather than at its first connection.
pub fn check() -> Result<(), String> {
    shared().map(|_| ())
}

/// A connection, plain or TLS.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Conn {
    /// The socket under it, for timeouts and shutdown.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(t) => &t.sock,
        }
    }

    /// Say that nothing more will be sent: a FIN, or over TLS its
    /// close_notify (TLS cannot go on after half a close).
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.shutdown(std::net::Shutdown::Write),
            Conn::Tls(t) => {
                t.conn.send_close_notify();
                t.flush()
            }
        }
    }
}

/// Connect within `timeout`; over TLS, the handshake too.
pub fn connect(to: &Target, timeout: Duration) -> io::Result<Conn> {
    let s = TcpStream::connect_timeout(&to.addr, timeout)?;
    s.set_nodelay(true)?;
    if !to.tls {
        return Ok(Conn::Plain(s));
    }
    let config = shared().map_err(io::Error::other)?;
    let name = ServerName::try_from(to.host.clone()).map_err(|e| {
        io::Error::other(format!(
            "{:?} cannot be checked in a certificate: {e}",
            to.host
        ))
    })?;
    let conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
    let mut t = StreamOwned::new(conn, s);
    t.sock.set_read_timeout(Some(timeout))?;
    t.sock.set_write_timeout(Some(timeout))?;
    while t.conn.is_handshaking() {
        t.conn
            .complete_io(&mut t.sock)
            .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake with {to}: {e}")))?;
    }
    Ok(Conn::Tls(Box::new(t)))
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(t) => match t.read(buf) {
                // A peer that closed without close_notify has closed.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                r => r,
            },
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(t) => t.flush(),
        }
    }
}
