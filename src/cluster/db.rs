//! One connection to the cluster's database, kept by the thread that uses
//! it: connected when first needed, dropped when it breaks, and connected
//! again with backoff (0.2 s doubling to 5 s) so that a database that is
//! away costs a try now and then, not a spin.
//!
//! The `postgres` crate's blocking client runs tokio-postgres on the
//! calling thread: no thread of its own, no async code of ours. Every
//! statement is bounded by a server-side `statement_timeout`, so a stuck
//! database holds a thread for at most that long; idle transactions are
//! ended by the server too.

use super::tls::Connector;
use crate::config::Secret;
use crate::config::cluster::Database;
use postgres::Client;
use postgres::fallible_iterator::FallibleIterator;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Longest one statement may run, server side.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why the database cannot be used now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Down {
    pub why: String,
    /// The operator's to fix (see [`is_misconfigured`]), not the network's.
    pub misconfigured: bool,
}

impl Down {
    fn new(why: String) -> Down {
        Down {
            why,
            misconfigured: false,
        }
    }
}

impl std::fmt::Display for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

/// Whether an error is the operator's to fix: a refused password or role,
/// a database that does not exist, a missing privilege.
pub fn is_misconfigured(e: &postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        // 28P01 password, 28000 authorization, 3D000 no such database,
        // 42501 privilege.
        matches!(c.code(), "28P01" | "28000" | "3D000" | "42501")
    }) || tls_refused(e)
}

/// TLS that `sslmode` asked for and cannot have: a certificate that does
/// not verify, or a server without TLS.
fn tls_refused(e: &postgres::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(inner) = src {
        let rustls = inner.downcast_ref::<rustls::Error>().or_else(|| {
            inner
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|r| r.downcast_ref::<rustls::Error>())
        });
        if matches!(rustls, Some(rustls::Error::InvalidCertificate(_))) {
            return true;
        }
        src = inner.source();
    }
    describe(e).contains("server does not support TLS")
}

pub struct Link {
    config: postgres::Config,
    /// Plain or TLS, as `sslmode` says; why not, when it cannot be made
    /// (a root file that cannot be read: the operator's to fix).
    connector: Result<Connector, String>,
    /// Who the connections say they are (`application_name`).
    name: String,
    client: Option<Client>,
    next_try: Instant,
    backoff: Duration,
    /// What went wrong last, for `/health`.
    last_error: Option<String>,
    /// Connections made so far: a session's state (a `LISTEN`) belongs
    /// to one of them.
    connections: u64,
    /// Set when the server warned that a commit was not replicated.
    unreplicated: Arc<AtomicBool>,
}

/// Whether a notice says a commit was cancelled while it waited for the
/// synchronous standby: committed here, perhaps on no standby. A failover
/// then loses it, so the commit does not count.
fn unreplicated(notice: &postgres::error::DbError) -> bool {
    notice.message().contains("synchronous replication")
}

impl Link {
    /// A link for `what` on node `node` (it shows in `pg_stat_activity`).
    pub fn new(db: &Database, password: Option<&Secret>, node: &str, what: &str) -> Link {
        let mut config: postgres::Config = db
            .as_str()
            .parse()
            .unwrap_or_else(|_| postgres::Config::new());
        if let Some(p) = password {
            config.password(p.reveal());
        }
        config.ssl_mode(super::tls::driver_mode(db.ssl));
        let connector = Connector::new(db.ssl, db.root.as_deref());
        let name = format!("musterd {node} {what}");
        let flag = Arc::new(AtomicBool::new(false));
        let seen = flag.clone();
        config.notice_callback(move |n| {
            if unreplicated(&n) {
                seen.store(true, Ordering::Release);
            }
        });
        config
            .application_name(&name)
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .options(&format!(
                "-c statement_timeout={} -c idle_in_transaction_session_timeout={} -c lock_timeout={} -c client_min_messages=warning",
                STATEMENT_TIMEOUT.as_millis(),
                STATEMENT_TIMEOUT.as_millis() * 2,
                STATEMENT_TIMEOUT.as_millis()
            ));
        Link {
            config,
            connector,
            name,
            client: None,
            next_try: Instant::now(),
            backoff: FIRST_BACKOFF,
            last_error: None,
            connections: 0,
            unreplicated: flag,
        }
    }

    /// A link whose transactions do not notify: the triggers of
    /// schema 10 stay quiet for it (`muster.quiet`), and a [`Notifier`]
    /// announces its commits after them. A notifying transaction holds
    /// the server's one notification lock through its commit's flush, so
    /// every node's writer would commit one at a time.
    pub fn quiet(mut self) -> Link {
        let options = format!(
            "{} -c muster.quiet=on",
            self.config.get_options().unwrap_or("")
        );
        self.config.options(options.trim_start());
        self
    }

    /// How this link connects, to cancel what it runs the same way.
    pub fn connector(&self) -> Connector {
        self.connector.clone().unwrap_or(Connector::Plain)
    }

    /// Whether the server warned, since the last call, that a commit was
    /// cancelled while it waited for the synchronous standby (a
    /// `statement_timeout` or a cancel during a failover): that commit
    /// must be taken as failed.
    pub fn take_unreplicated(&self) -> bool {
        self.unreplicated.swap(false, Ordering::AcqRel)
    }

    /// The connection, made now if there is none and its backoff allows.
    pub fn get(&mut self) -> Result<&mut Client, Down> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        if self.client.is_none() {
            let now = Instant::now();
            if now < self.next_try {
                return Err(Down::new(
                    self.last_error
                        .clone()
                        .unwrap_or_else(|| "waiting to connect again".into()),
                ));
            }
            let connector = match &self.connector {
                Ok(c) => c,
                Err(why) => {
                    return Err(Down {
                        why: why.clone(),
                        misconfigured: true,
                    });
                }
            };
            match connector.connect(&self.config) {
                Ok(c) => {
                    if self.last_error.take().is_some() {
                        log::info!("cluster: {} connected again", self.name);
                    }
                    self.backoff = FIRST_BACKOFF;
                    self.connections += 1;
                    self.client = Some(c);
                }
                Err(e) => {
                    let why = describe(&e);
                    if self.last_error.as_deref() != Some(&why) {
                        log::warn!("cluster: {} cannot connect: {why}", self.name);
                    }
                    self.last_error = Some(why.clone());
                    self.next_try = now + self.backoff;
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    return Err(Down {
                        why,
                        misconfigured: is_misconfigured(&e),
                    });
                }
            }
        }
        self.client
            .as_mut()
            .ok_or_else(|| Down::new("not connected".into()))
    }

    /// A statement failed: when the connection itself is gone (or the
    /// server is a standby now, after a failover), drop it so that the
    /// next use connects again; other errors keep it.
    pub fn failed(&mut self, e: &postgres::Error) -> Down {
        let why = describe(e);
        let broken = e.is_closed()
            || e.as_db_error().is_none()
            || e.code().is_some_and(|c| {
                let c = c.code();
                // 57P01 admin shutdown, 25006 read-only transaction (a
                // promoted standby's old primary), 08xxx connection.
                c == "57P01" || c == "57P02" || c == "57P03" || c == "25006" || c.starts_with("08")
            });
        if broken {
            if self.client.take().is_some() {
                log::warn!("cluster: {} lost its connection: {why}", self.name);
            }
            self.next_try = Instant::now();
        }
        self.last_error = Some(why.clone());
        Down {
            misconfigured: is_misconfigured(e),
            why,
        }
    }

    /// Which connection this is (a count of those made): it changes
    /// whenever the link connects again.
    pub fn connection(&self) -> u64 {
        self.connections
    }

    /// Whether a connection is up now.
    pub fn is_up(&self) -> bool {
        self.client.as_ref().is_some_and(|c| !c.is_closed())
    }

    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }
}

/// A link that reads what other nodes write, woken by a channel: the
/// connection `LISTEN`s (again on each new connection), and
/// [`Watch::wait`] returns at the first notification or after `poll`.
pub struct Watch {
    pub link: Link,
    channel: &'static str,
    listening: Option<u64>,
    last: Instant,
}

/// The shortest time between two looks woken by notifications: under a
/// steady stream of commits, each look then reads the rows of many of them
/// in one round, where a look per commit costs the database and the node
/// a look's statements each time.
pub const LOOK_GAP: Duration = Duration::from_millis(20);
/// The gap after a look that read at least [`BUSY_ROWS`] rows: under a
/// stream of commits fewer, larger looks cost the database and the node
/// less (a look is a snapshot and a statement however many rows it
/// reads), and a change is still seen within a tenth of a second.
pub const BUSY_GAP: Duration = Duration::from_millis(100);
/// Rows a look reads at least to count as busy.
pub const BUSY_ROWS: usize = 64;

impl Watch {
    pub fn new(link: Link, channel: &'static str) -> Watch {
        Watch {
            link,
            channel,
            listening: None,
            last: Instant::now(),
        }
    }

    /// The connection, listening.
    pub fn get(&mut self) -> Result<&mut Client, Down> {
        let on = {
            self.link.get()?;
            self.link.connection()
        };
        if self.listening != Some(on) {
            let c = self.link.get()?;
            if let Err(e) = c.batch_execute(&format!("LISTEN {}", self.channel)) {
                return Err(self.link.failed(&e));
            }
            self.listening = Some(on);
        }
        self.link.get()
    }

    /// Wait for a notification, at most `poll`, and no less than
    /// [`LOOK_GAP`] since the last wait ended ([`BUSY_GAP`] when the last
    /// look read `read` rows, [`BUSY_ROWS`] or more); everything that
    /// arrived by then is one look (coalesced).
    pub fn wait(&mut self, poll: Duration, read: usize) {
        let last = self.last;
        let gap = if read >= BUSY_ROWS {
            BUSY_GAP
        } else {
            LOOK_GAP
        };
        let got = match self.get() {
            Ok(c) => drain(c, poll, last, gap),
            Err(_) => {
                std::thread::sleep(poll.min(Duration::from_millis(200)));
                Ok(())
            }
        };
        if let Err(e) = got {
            self.link.failed(&e);
        }
        self.last = Instant::now();
    }
}

/// Notifications sent after the commits they announce, from a connection
/// of their own, so that the commits of quiet links ([`Link::quiet`]) do
/// not wait for the server's notification lock: every [`Notifier::poke`]
/// since the last `NOTIFY` is announced by the next one. When the
/// database is away a poke is dropped; the readers' poll finds the rows.
#[derive(Default)]
pub struct Notifier {
    due: Mutex<bool>,
    cv: Condvar,
}

impl Notifier {
    /// A commit to announce.
    pub fn poke(&self) {
        *self.due.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cv.notify_one();
    }

    /// Wake [`Notifier::run`] to look at its stop flag.
    pub fn wake(&self) {
        self.cv.notify_one();
    }

    /// Until `stopping`: one `NOTIFY channel` for the pokes since the
    /// last, at most one per [`LOOK_GAP`] (a reader looks no more often):
    /// a `NOTIFY` is a transaction whose commit is flushed too.
    pub fn run(&self, mut link: Link, channel: &str, stopping: &AtomicBool) {
        let notify = format!("NOTIFY {channel}");
        let mut last: Option<Instant> = None;
        loop {
            if let Some(left) = last.and_then(|l| LOOK_GAP.checked_sub(l.elapsed())) {
                std::thread::sleep(left);
            }
            {
                let mut due = self.due.lock().unwrap_or_else(|p| p.into_inner());
                while !*due {
                    if stopping.load(Ordering::Acquire) {
                        return;
                    }
                    due = self
                        .cv
                        .wait_timeout(due, Duration::from_millis(200))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                *due = false;
            }
            last = Some(Instant::now());
            match link.get() {
                Ok(c) => {
                    if let Err(e) = c.batch_execute(&notify) {
                        link.failed(&e);
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

fn drain(
    c: &mut Client,
    poll: Duration,
    last: Instant,
    gap: Duration,
) -> Result<(), postgres::Error> {
    let mut n = c.notifications();
    let first = n.timeout_iter(poll).next()?;
    if first.is_some() {
        if let Some(left) = gap.checked_sub(last.elapsed()) {
            std::thread::sleep(left);
        }
        let mut rest = n.iter();
        while rest.next()?.is_some() {}
    }
    Ok(())
}

/// What a mirror has seen: every row written by a transaction its last
/// snapshot saw committed. The ones left are those of transactions at or
/// after that snapshot's `xmax`, and those it saw still running.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Since {
    xmax: u64,
    running: Vec<String>,
}

impl Since {
    /// The filter on a `changed xid8` column that finds every row not
    /// seen yet, and never one seen already; its parameters are
    /// [`Since::params`], from `$first` on.
    pub fn filter(first: usize) -> String {
        format!(
            "(changed >= ${first}::text::xid8 OR changed = ANY(${}::text[]::xid8[]))",
            first + 1
        )
    }

    /// What a look whose snapshot had `xmax` and `running` will have
    /// seen once its rows are read.
    pub fn new(xmax: u64, running: Vec<String>) -> Since {
        Since { xmax, running }
    }

    pub fn params(&self) -> (String, &[String]) {
        (self.xmax.to_string(), &self.running)
    }
}

/// A read-only snapshot for a mirror's look, and what a look with it
/// will have seen once its rows are read.
pub fn look(c: &mut Client) -> Result<(postgres::Transaction<'_>, Since), postgres::Error> {
    let mut tx = c
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?;
    let r = tx.query_one(
        "SELECT pg_snapshot_xmax(s)::text, array(SELECT pg_snapshot_xip(s)::text)
         FROM pg_current_snapshot() s",
        &[],
    )?;
    let since = Since {
        xmax: r.get::<_, &str>(0).parse().unwrap_or(0),
        running: r.get(1),
    };
    Ok((tx, since))
}

/// Whether the server refused a statement for what it is (a bad value, a
/// broken rule), as opposed to the moment it came at: a timeout, a
/// cancel, a deadlock, a lock not granted, or a statement prepared on a
/// connection since replaced (26000), which a retry may get past.
pub fn is_refusal(e: &postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| !matches!(c.code(), "57014" | "40001" | "40P01" | "55P03" | "26000"))
}

/// An error as one line, with the server's message when it sent one.
pub fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s.push_str(": ");
                s.push_str(&inner.to_string());
                src = inner.source();
            }
            s
        }
    }
}
