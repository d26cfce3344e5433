//! A small PKI made with the `openssl` command for the TLS tests: a CA, a
//! server certificate it signs (for localhost and 127.0.0.1), client
//! certificates naming workers, an expired one, and a second CA nobody
//! trusts.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// A certificate and its key.
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The CA's configuration for `openssl ca` (which alone can date a
/// certificate in the past).
const CA_CNF: &str = "[ca]\ndefault_ca = local\n[local]\ndir = .\ndatabase = index.txt\nserial = serial\nnew_certs_dir = .\ncertificate = NAME.pem\nprivate_key = NAME.key\ndefault_md = sha256\npolicy = any\ncopy_extensions = copy\nunique_subject = no\n[any]\ncommonName = supplied\n[leaf]\nbasicConstraints = CA:FALSE\nkeyUsage = digitalSignature\nextendedKeyUsage = clientAuth, serverAuth\n";

impl Pki {
    /// Whether `openssl` runs here.
    pub fn available() -> bool {
        super::require("openssl", super::runs("openssl", &["version"]))
    }

    pub fn new(dir: &Path) -> Pki {
        let pki = Pki {
            dir: dir.to_path_buf(),
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        };
        pki.make_ca("ca");
        pki.make_ca("rogue");
        pki.sign(
            "ca",
            "server",
            "localhost",
            Some("DNS:localhost,IP:127.0.0.1"),
            None,
        );
        pki
    }

    fn make_ca(&self, name: &str) {
        std::fs::write(
            self.dir.join(format!("{name}.cnf")),
            CA_CNF.replace("NAME", name),
        )
        .unwrap();
        std::fs::write(self.dir.join("index.txt"), "").unwrap();
        std::fs::write(self.dir.join("serial"), "1000\n").unwrap();
        openssl(
            &self.dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "3",
                "-subj",
                &format!("/CN={name} test CA"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
            ],
        );
    }

    /// A leaf for `cn` signed by CA `by`, valid now, or over `dates`
    /// (`openssl ca` start and end, `YYYYMMDDHHMMSSZ`).
    fn sign(
        &self,
        by: &str,
        name: &str,
        cn: &str,
        san: Option<&str>,
        dates: Option<(&str, &str)>,
    ) -> Pair {
        let (key, csr, cert) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        let mut req = vec![
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
        ];
        let subj = format!("/CN={cn}");
        req.extend(["-subj", &subj]);
        let ext = san.map(|s| format!("subjectAltName={s}"));
        if let Some(e) = &ext {
            req.extend(["-addext", e]);
        }
        openssl(&self.dir, &req);
        std::fs::write(self.dir.join("index.txt"), "").unwrap();
        let cnf = format!("{by}.cnf");
        let mut ca = vec![
            "ca",
            "-batch",
            "-notext",
            "-config",
            &cnf,
            "-extensions",
            "leaf",
            "-in",
            &csr,
            "-out",
            &cert,
        ];
        match dates {
            Some((start, end)) => ca.extend(["-startdate", start, "-enddate", end]),
            None => ca.extend(["-days", "2"]),
        }
        openssl(&self.dir, &ca);
        Pair {
            cert: self.dir.join(cert),
            key: self.dir.join(key),
        }
    }

    /// A client certificate for worker `id`, signed by the CA.
    pub fn client(&self, id: &str) -> Pair {
        self.sign("ca", &format!("client-{id}"), id, None, None)
    }

    /// A client certificate for `id` that expired in 2020.
    pub fn expired(&self, id: &str) -> Pair {
        self.sign(
            "ca",
            &format!("expired-{id}"),
            id,
            None,
            Some(("20200101000000Z", "20200201000000Z")),
        )
    }

    /// A client certificate for `id` from a CA the daemon does not trust.
    pub fn rogue(&self, id: &str) -> Pair {
        self.sign("rogue", &format!("rogue-{id}"), id, None, None)
    }

    /// musterd's flags for HTTPS and a TLS heartbeat listener on a
    /// kernel-chosen port that asks for client certificates of this CA.
    pub fn daemon_args(&self) -> Vec<String> {
        let (cert, key) = (
            self.server_cert.display().to_string(),
            self.server_key.display().to_string(),
        );
        [
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--heartbeat-tls-addr",
            "127.0.0.1:0",
            "--heartbeat-tls-cert-file",
            &cert,
            "--heartbeat-tls-key-file",
            &key,
            "--heartbeat-tls-client-ca-file",
            &self.ca.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// The CA nobody trusts, to verify a server against.
    pub fn rogue_ca(&self) -> PathBuf {
        self.dir.join("rogue.pem")
    }
}
