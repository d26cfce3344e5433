//! A real PostgreSQL for the cluster tests: Debian's server binaries,
//! `initdb` and `pg_ctl` in a temporary directory (as the `postgres` user
//! when the tests run as root, since PostgreSQL refuses root), listening on
//! 127.0.0.1 at a private port; and a streaming standby of it, for
//! failover. Dropped, it is stopped at once and its directory removed.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The directory of PostgreSQL's server binaries, or why there is none.
pub fn bin_dir() -> Result<PathBuf, String> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("no /usr/lib/postgresql ({e}): install postgresql"))?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists() && b.join("pg_ctl").exists())
        .collect();
    found.sort();
    found
        .pop()
        .ok_or_else(|| "no initdb under /usr/lib/postgresql/*/bin".into())
}

/// PostgreSQL for a test, or `None` after saying why it cannot run here
/// (and failing under CI, where test.sh installs it).
pub fn start() -> Option<Pg> {
    match bin_dir() {
        Ok(bin) => Some(Pg::init(bin)),
        Err(why) => {
            super::require(&format!("PostgreSQL ({why})"), false);
            None
        }
    }
}

/// A role that must give its password (every other role is trusted).
pub const PASSWORD_ROLE: &str = "muster_pw";

pub struct Pg {
    pub port: u16,
    bin: PathBuf,
    /// Holds `data` and the socket directory; removed on drop.
    root: tempfile::TempDir,
    data: PathBuf,
    stopped: bool,
}

fn as_root() -> bool {
    // SAFETY: geteuid has no memory effects.
    unsafe { libc::geteuid() == 0 }
}

/// `program args`, as `postgres` when we are root.
fn run_as(program: &Path, args: &[&str]) -> Output {
    let mut cmd = if as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()))
}

fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Pg {
    fn root() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        if as_root() {
            let st = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(root.path())
                .status()
                .unwrap();
            assert!(st.success(), "chown the data directory to postgres");
        }
        root
    }

    fn init(bin: PathBuf) -> Pg {
        let root = Pg::root();
        let data = root.path().join("data");
        let d = data.to_str().unwrap();
        ok(
            "initdb",
            run_as(
                &bin.join("initdb"),
                &[
                    "-D",
                    d,
                    "-U",
                    "muster",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
            ),
        );
        let port = super::free_port();
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             fsync = on\nsynchronous_commit = on\nwal_level = replica\nmax_wal_senders = 4\n\
             max_connections = 200\nshared_buffers = 64MB\nlog_min_messages = warning\n",
            root.path().display()
        );
        append(&data.join("postgresql.conf"), &conf);
        // First match wins: the role with a password is checked before the
        // trusted lines initdb wrote.
        let hba = data.join("pg_hba.conf");
        let trusted = std::fs::read_to_string(&hba).unwrap();
        std::fs::write(
            &hba,
            format!(
                "host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n{trusted}\
                 host replication muster 127.0.0.1/32 trust\n"
            ),
        )
        .unwrap();
        let mut pg = Pg {
            port,
            bin,
            root,
            data,
            stopped: true,
        };
        pg.restart();
        pg.psql_db("postgres", "CREATE DATABASE muster");
        pg
    }

    /// Start it (again, after [`Pg::stop`]).
    pub fn restart(&mut self) {
        let log = self.root.path().join("server.log");
        let out = run_as(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        if !out.status.success() {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!(
                "pg_ctl start: {}\n{log}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.stopped = false;
    }

    /// The URI musterd is given.
    pub fn uri(&self) -> String {
        format!("postgresql://muster@127.0.0.1:{}/muster", self.port)
    }

    pub fn psql(&self, sql: &str) -> String {
        self.psql_db("muster", sql)
    }

    fn psql_db(&self, db: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "muster",
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .expect("psql");
        ok(&format!("psql {sql}"), out).trim().to_string()
    }

    /// A psql session reading statements from its stdin, for a
    /// transaction a test holds open.
    pub fn session(&self) -> std::process::Child {
        Command::new("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args(["-p", &self.port.to_string(), "-U", "muster", "-d", "muster"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("psql")
    }

    /// `pg_ctl stop` in `mode` (`fast` or `immediate`).
    pub fn stop(&mut self, mode: &str) {
        if self.stopped {
            return;
        }
        let _ = run_as(
            &self.bin.join("pg_ctl"),
            &["-D", self.data.to_str().unwrap(), "-m", mode, "-w", "stop"],
        );
        self.stopped = true;
    }

    /// Serve TLS with a certificate for `127.0.0.1` and `localhost`,
    /// signed by a new CA of the test's own (restarting); the CA's
    /// certificate.
    pub fn with_tls(&mut self) -> PathBuf {
        let dir = self.root.path();
        let (ca, ca_key, csr, ext) = (
            dir.join("ca.crt"),
            dir.join("ca.key"),
            dir.join("server.csr"),
            dir.join("san.ext"),
        );
        let crt = self.data.join("server.crt");
        let key = self.data.join("server.key");
        std::fs::write(&ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
        let openssl = |args: &[&std::ffi::OsStr]| {
            let out = Command::new("openssl")
                .args(args)
                .output()
                .expect("openssl");
            ok("openssl", out);
        };
        let os = |s: &'static str| std::ffi::OsStr::new(s);
        openssl(&[
            os("req"),
            os("-x509"),
            os("-newkey"),
            os("rsa:2048"),
            os("-nodes"),
            os("-days"),
            os("2"),
            os("-subj"),
            os("/CN=muster test CA"),
            os("-keyout"),
            ca_key.as_os_str(),
            os("-out"),
            ca.as_os_str(),
        ]);
        openssl(&[
            os("req"),
            os("-newkey"),
            os("rsa:2048"),
            os("-nodes"),
            os("-subj"),
            os("/CN=localhost"),
            os("-keyout"),
            key.as_os_str(),
            os("-out"),
            csr.as_os_str(),
        ]);
        openssl(&[
            os("x509"),
            os("-req"),
            os("-in"),
            csr.as_os_str(),
            os("-CA"),
            ca.as_os_str(),
            os("-CAkey"),
            ca_key.as_os_str(),
            os("-CAcreateserial"),
            os("-days"),
            os("2"),
            os("-extfile"),
            ext.as_os_str(),
            os("-out"),
            crt.as_os_str(),
        ]);
        if as_root() {
            for f in [&crt, &key] {
                let _ = Command::new("chown").arg("postgres:").arg(f).status();
            }
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        append(&self.data.join("postgresql.conf"), "ssl = on\n");
        self.stop("fast");
        self.restart();
        ca
    }

    /// A streaming standby of this server, synchronous (so that no
    /// committed transaction is lost when it is promoted), started.
    pub fn standby(&self) -> Pg {
        let root = Pg::root();
        let data = root.path().join("data");
        ok(
            "pg_basebackup",
            run_as(
                &self.bin.join("pg_basebackup"),
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "muster",
                    "-D",
                    data.to_str().unwrap(),
                    "-R",
                    "-X",
                    "stream",
                    "--no-sync",
                    // Not a spread checkpoint: the copy starts at once.
                    "--checkpoint=fast",
                ],
            ),
        );
        let port = super::free_port();
        append(
            &data.join("postgresql.conf"),
            // pg_basebackup -R wrote primary_conninfo (postgresql.auto.conf).
            &format!(
                "port = {port}\nunix_socket_directories = '{}'\n",
                root.path().display()
            ),
        );
        let mut standby = Pg {
            port,
            bin: self.bin.clone(),
            root,
            data,
            stopped: true,
        };
        standby.restart();
        // Its one standby is synchronous: a commit waits for it.
        self.psql("ALTER SYSTEM SET synchronous_standby_names = '*'");
        self.psql("SELECT pg_reload_conf()");
        let until = Instant::now() + Duration::from_secs(30);
        while self.psql("SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'") != "1"
        {
            assert!(
                Instant::now() < until,
                "the standby never became synchronous"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        standby
    }

    /// Make a standby the primary.
    pub fn promote(&self) {
        ok(
            "pg_ctl promote",
            run_as(
                &self.bin.join("pg_ctl"),
                &["-D", self.data.to_str().unwrap(), "-w", "promote"],
            ),
        );
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.stop("immediate");
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Leases this short keep the cluster tests quick (the least `node_ttl`
/// allows).
pub const TTL: &str = "3s";

/// A musterd node named `name` on `pg`, with a short `node_ttl`.
pub fn node(pg: &Pg, name: &str, extra: &[&str]) -> super::Daemon {
    node_at(&pg.uri(), name, extra)
}

/// A musterd node named `name` on the database `uri` names.
pub fn node_at(uri: &str, name: &str, extra: &[&str]) -> super::Daemon {
    let mut args = vec![
        "--cluster-database",
        uri,
        "--node-id",
        name,
        "--node-ttl",
        TTL,
    ];
    args.extend_from_slice(extra);
    super::Daemon::start(&args)
}

/// The URI of a primary and its standby, for whichever accepts writes.
pub fn either(primary: &Pg, standby: &Pg) -> String {
    format!(
        "postgresql://muster@127.0.0.1:{},127.0.0.1:{}/muster?target_session_attrs=read-write",
        primary.port, standby.port
    )
}
