//! TLS for the HTTP loop: the certificate chain and key, read and checked
//! when the configuration loads (a bad file is a configuration error, exit
//! 2 at start, a refused reload on SIGHUP), and the rustls server
//! configuration built from them once, shared by every new connection.
//! Connections already open keep the configuration they started with, so a
//! reload with a renewed certificate drops none of them.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// A loaded certificate and key.
#[derive(Clone)]
pub struct Tls {
    #[cfg(feature = "tls")]
    pub server: Arc<rustls::ServerConfig>,
    /// The files' bytes, so that a reload can tell whether they changed.
    files: Arc<[u8]>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tls(..)")
    }
}

impl PartialEq for Tls {
    fn eq(&self, other: &Tls) -> bool {
        self.files == other.files
    }
}

/// The system's CA bundle on Debian.
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The CA certificates in a PEM file, for verifying a peer: every one of
/// them must be usable, and there must be one.
pub fn roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bad = |e: &dyn fmt::Display| format!("{}: {e}", path.display());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    if roots.is_empty() {
        return Err(bad(&"no certificate in it"));
    }
    Ok(roots)
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

#[cfg(feature = "tls")]
type Identity = (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
    Vec<u8>,
);

/// The chain and key in two PEM files, and the files' bytes.
#[cfg(feature = "tls")]
fn identity(cert: &Path, key: &Path) -> Result<Identity, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate: {e:?}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", cert.display()));
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("{}: not a PEM private key: {e:?}", key.display()))?;
    let mut files = cert_pem;
    files.extend_from_slice(&key_pem);
    Ok((chain, private, files))
}

#[cfg(feature = "tls")]
fn unusable(cert: &Path, key: &Path) -> impl FnOnce(rustls::Error) -> String {
    move |e| {
        format!(
            "{} and {} do not make a usable certificate and key: {e}",
            cert.display(),
            key.display()
        )
    }
}

#[cfg(feature = "tls")]
pub fn load(cert: &Path, key: &Path) -> Result<Tls, String> {
    let (chain, private, files) = identity(cert, key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(unusable(cert, key))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        server: Arc::new(server),
        files: files.into(),
    })
}

/// The TLS heartbeat listener's configuration: its certificate and key,
/// and, with `client_ca`, the CA whose signature a worker's certificate
/// must carry (a worker without one is refused in the handshake).
#[cfg(feature = "tls")]
pub fn load_heartbeat(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Tls, String> {
    let (chain, private, mut files) = identity(cert, key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = roots(ca)?;
            let pem = read(ca)?;
            files.extend_from_slice(&pem);
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let server = builder
        .with_single_cert(chain, private)
        .map_err(unusable(cert, key))?;
    Ok(Tls {
        server: Arc::new(server),
        files: files.into(),
    })
}

#[cfg(not(feature = "tls"))]
pub fn load(cert: &Path, key: &Path) -> Result<Tls, String> {
    let (_, _) = (read(cert)?, read(key)?);
    Err("this musterd was built without the `tls` feature".into())
}

#[cfg(not(feature = "tls"))]
pub fn load_heartbeat(cert: &Path, key: &Path, _: Option<&Path>) -> Result<Tls, String> {
    load(cert, key)
}
