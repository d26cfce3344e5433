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

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

#[cfg(feature = "tls")]
pub fn load(cert: &Path, key: &Path) -> Result<Tls, String> {
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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            format!(
                "{} and {} do not make a usable certificate and key: {e}",
                cert.display(),
                key.display()
            )
        })?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut files = cert_pem;
    files.extend_from_slice(&key_pem);
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
