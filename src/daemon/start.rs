//! Start-up: clamp the limits, open or adopt the sockets, make both loops'
//! polls and mailboxes, build the shared context, the registry, the task
//! book, the pool and the alerts (each handed the mailbox it tells), and
//! start the threads. Errors here stop the daemon with exit status 1.

use super::listen::{self, Adopted, StartupError};
use crate::VERSION;
use crate::alerts::Alerts;
use crate::audit::Audit;
use crate::cluster::Cluster;
use crate::config::{self, Cli, Config};
use crate::fleet::Shared;
use crate::fleet::notify::{Mailbox, Nobody, Wake};
use crate::fleet::registry::Registry;
use crate::fleet::sweeper;
use crate::ingest::{self, Ingest};
use crate::pool::Pool;
use crate::serve::routes::{Api, Sources};
use crate::serve::{self, HttpServer};
use crate::store::{self, Store};
use crate::sys::capacity::{self, Limits};
use crate::sys::procfs;
use crate::sys::systemd::{Notifier, Progress, Watchdog};
use crate::tasks::{Links, Tasks};
use mio::Poll;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

pub(super) struct Daemon {
    pub(super) cli: Cli,
    pub(super) limits: Limits,
    pub(super) registry: Arc<Registry>,
    pub(super) shared: Arc<Shared>,
    /// The ingest loop, and its mailbox (to stop it).
    pub(super) ingest: (JoinHandle<()>, Mailbox<ingest::News>),
    /// The HTTP loop, when HTTP is on, and its mailbox.
    pub(super) http: Option<(JoinHandle<()>, Mailbox<serve::News>)>,
    pub(super) sweeper: JoinHandle<()>,
    pub(super) sweeper_stop: mpsc::Sender<()>,
    /// The registry file, when `state_dir` is usable, and its saver thread.
    pub(super) store: Option<Arc<Store>>,
    pub(super) saver: Option<(JoinHandle<()>, mpsc::Sender<()>)>,
    /// The task book and its scheduler thread.
    pub(super) tasks: Arc<Tasks>,
    pub(super) scheduler: JoinHandle<()>,
    /// The pool and its supervisor thread.
    pub(super) pool: Arc<Pool>,
    pub(super) supervisor: JoinHandle<()>,
    /// The alert rules and their notifications, a thread each.
    pub(super) alerts: Arc<Alerts>,
    pub(super) alert_threads: [JoinHandle<()>; 2],
    /// The journal's thread, or in cluster mode the task writer's and
    /// mirror's.
    pub(super) task_threads: Vec<JoinHandle<()>>,
    pub(super) notifier: Arc<Notifier>,
    pub(super) started: Instant,
    /// This node's membership and its lease thread, in cluster mode.
    pub(super) cluster: Option<(Arc<Cluster>, JoinHandle<()>)>,
    /// The fleet's rows in the database, in cluster mode.
    pub(super) fleet: Option<store::cluster::Fleet>,
    /// The audit log's database thread, in cluster mode.
    pub(super) audit: Option<crate::audit::Writer>,
}

/// A loop's waker wakes its mailbox's loop.
impl Wake for mio::Waker {
    fn wake(&self) {
        let _ = mio::Waker::wake(self);
    }
}

/// A loop's poll and its mailbox, made before anything that posts to it.
fn event_loop<N: Send + 'static>(
    what: &str,
    token: mio::Token,
) -> Result<(Poll, Mailbox<N>), StartupError> {
    let poll = Poll::new().map_err(loop_error(what))?;
    let waker = mio::Waker::new(poll.registry(), token).map_err(loop_error(what))?;
    Ok((poll, Mailbox::new(waker)))
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, StartupError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|source| StartupError {
            what: format!("cannot start the {name} thread"),
            source,
        })
}

/// The sockets the daemon serves, opened or adopted from systemd.
struct Sockets {
    udp: mio::net::UdpSocket,
    tcp: mio::net::TcpListener,
    /// The TLS heartbeat listener, when its certificate is set.
    tls: Option<mio::net::TcpListener>,
    http: Option<mio::net::TcpListener>,
}

/// Open (or adopt) the heartbeat and HTTP sockets and size the UDP buffer.
fn sockets(cfg: &Config, adopted: Adopted) -> Result<Sockets, StartupError> {
    if adopted.count() > 0 {
        log::info!("adopted {} sockets from systemd", adopted.count());
    }
    let (udp, tcp) = match (adopted.udp, adopted.tcp) {
        (Some(u), Some(t)) => (u, t),
        (None, None) => listen::bind_heartbeat(cfg.heartbeats.addr)?,
        _ => {
            return Err(StartupError {
                what: "socket activation passed only one of the two heartbeat sockets (UDP and TCP, both named heartbeat)".into(),
                source: std::io::ErrorKind::InvalidInput.into(),
            });
        }
    };
    match listen::set_recv_buffer(&udp, cfg.heartbeats.udp_recv_buffer) {
        Ok(got) if got < cfg.heartbeats.udp_recv_buffer => log::warn!(
            "udp receive buffer is {got} bytes, below udp_recv_buffer={}: raise net.core.rmem_max or run with CAP_NET_ADMIN",
            cfg.heartbeats.udp_recv_buffer
        ),
        Ok(got) => log::debug!("udp receive buffer bytes={got}"),
        Err(e) => log::warn!("cannot set the udp receive buffer: {e}"),
    }
    let http = match adopted.http {
        Some(l) => Some(l),
        None => cfg.http.addr.map(listen::bind_http).transpose()?,
    };
    let tls = match &cfg.heartbeats.tls {
        Some(_) => Some(listen::bind_tcp(cfg.heartbeats.tls_addr, "TLS heartbeats")?),
        None => None,
    };
    Ok(Sockets {
        udp,
        tcp,
        tls,
        http,
    })
}

/// Raise what the kernel allows this process and clamp `max_workers` to
/// it; the clamped value is the one in force.
fn fit_to_kernel(cfg: &mut Config) -> Limits {
    let limits = Limits::read();
    if let Some(n) = capacity::raise_nofile() {
        log::debug!("open file limit={n}");
    }
    let (max_workers, warning) = limits.clamp(cfg.fleet.max_workers);
    if let Some(w) = warning {
        log::warn!("{w}");
    }
    cfg.fleet.max_workers = max_workers;
    let slots = (max_workers as u64).next_power_of_two().clamp(256, 1 << 16);
    if capacity::size_futex_hash(slots) {
        log::debug!("futex hash slots={slots}");
    }
    limits
}

fn loop_error(what: &str) -> impl FnOnce(std::io::Error) -> StartupError {
    move |source| StartupError {
        what: format!("cannot set up the {what} loop"),
        source,
    }
}

/// The store in `state_dir`; a directory that cannot be made is a warning,
/// not a refusal to start: the daemon runs, and says that its state will
/// not survive a restart.
fn open_store(cfg: &Config) -> Option<Arc<Store>> {
    let dir = cfg.daemon.state_dir.as_ref()?;
    match Store::open(dir) {
        Ok(s) => Some(Arc::new(s)),
        Err(e) => {
            log::warn!(
                "state_dir {} is unusable ({e}): worker state will not survive a restart",
                dir.display()
            );
            None
        }
    }
}

impl Daemon {
    pub(super) fn start(
        cli: Cli,
        mut cfg: Config,
        adopted: Adopted,
        notifier: Arc<Notifier>,
    ) -> Result<Daemon, Failed> {
        let limits = fit_to_kernel(&mut cfg);
        let Sockets {
            udp,
            tcp,
            tls,
            http,
        } = sockets(&cfg, adopted)?;
        // The watchdog proves the HTTP loop alive, or ingest when HTTP is off;
        // the HTTP loop pings only while ingest goes round too.
        let mut watchdog = Watchdog::from_env(notifier.clone());
        let ingest_progress = Progress::default();
        if http.is_some() {
            if let Some(w) = &mut watchdog {
                w.watch("ingest", ingest_progress.clone(), ingest::TICK);
            }
        }
        if let Some(w) = &watchdog {
            log::info!("systemd watchdog: pinging every {} ms", w.every.as_millis());
        }
        let local =
            |r: std::io::Result<std::net::SocketAddr>| r.map_or("?".to_string(), |a| a.to_string());
        let heartbeat_at = local(udp.local_addr());
        let tls_at = tls.as_ref().map(|l| local(l.local_addr()));
        let http_at = http
            .as_ref()
            .map_or("off".to_string(), |l| local(l.local_addr()));
        let udp_inode = procfs::socket_inode(&udp);
        let ready_line = format!(
            "musterd {VERSION} ready: max_workers={} heartbeat_interval={} inactivity_timeout={}",
            cfg.fleet.max_workers,
            config::fmt_duration(cfg.fleet.heartbeat_interval),
            config::fmt_duration(cfg.fleet.inactivity_timeout)
        );

        // Both loops' polls and mailboxes first: everything that tells a
        // loop something is handed its mailbox when it is made.
        let (ingest_poll, ingest_news) = event_loop::<ingest::News>("ingest", ingest::WAKER)?;
        let http_loop = match http {
            Some(_) => Some(event_loop::<serve::News>("http", serve::WAKER)?),
            None => None,
        };
        let http_news = http_loop
            .as_ref()
            .map_or_else(|| Mailbox::new(Nobody), |(_, m)| m.clone());

        let started = Instant::now();
        // Before anything is served: a node that may not join says why
        // and stops (exit status 2).
        let cluster = Cluster::join(&cfg, &http_at, &heartbeat_at).map_err(Failed::Cluster)?;
        let shared = Arc::new(Shared::with(cfg, http_news.notifier(serve::News::Fleet)));
        let registry = Arc::new(Registry::new(shared.clone()));
        if let Some((c, _)) = &cluster {
            registry.set_node(c.node_id());
        }
        // Restored before any socket is served, so that the first frame a
        // worker sends finds its saved state.
        let store = open_store(&shared.config.get());
        let restored = store
            .as_ref()
            .map_or(0, |s| store::restore(s, &registry, &shared));
        let grace_until = if restored > 0 {
            started + shared.config.get().fleet.inactivity_timeout
        } else {
            started
        };
        let fleet = match &cluster {
            Some((c, _)) => Some(
                store::cluster::Fleet::start(c.clone(), registry.clone(), shared.clone())
                    .map_err(loop_error("fleet"))?,
            ),
            None => None,
        };
        let opened = Tasks::open(
            store.as_ref().map(|s| s.dir()),
            shared.clone(),
            Links {
                changed: http_news.notifier(serve::News::Tasks),
                outbox: Arc::new(ingest_news.clone()),
                runs: registry.clone(),
                eligible: registry.clone(),
            },
            cluster.as_ref().map(|(c, _)| c.clone()),
        );
        let tasks = opened.tasks.clone();
        let (audit, audit_writer) = match &cluster {
            Some((c, _)) => {
                let (a, w) =
                    Audit::clustered(c.clone(), shared.clone()).map_err(loop_error("audit"))?;
                (a, Some(w))
            }
            None => (
                Arc::new(Audit::open(
                    store.as_ref().map(|s| s.dir()),
                    shared.config.get().http.audit_retention,
                )),
                None,
            ),
        };
        let mut member_env = vec![("MUSTER_HEARTBEAT_ADDR".to_string(), heartbeat_at.clone())];
        if http_at != "off" {
            member_env.push(("MUSTER_URL".to_string(), format!("http://{http_at}")));
        }
        if let Some(f) = &shared.config.get().heartbeats.token_file {
            member_env.push((
                "MUSTER_HEARTBEAT_TOKEN_FILE".to_string(),
                f.display().to_string(),
            ));
        }
        let (pool, pool_wake) =
            Pool::new(shared.clone(), registry.clone(), tasks.clone(), member_env)
                .map_err(loop_error("pool"))?;
        let alerts = Arc::new(Alerts::new(
            shared.clone(),
            registry.clone(),
            tasks.clone(),
            Some(pool.clone()),
            http_news.notifier(serve::News::Alerts),
        ));
        let http = match (http, http_loop) {
            (Some(listener), Some((poll, news))) => {
                let api = Api::new(
                    Sources {
                        registry: registry.clone(),
                        shared: shared.clone(),
                        tasks: tasks.clone(),
                        alerts: alerts.clone(),
                        pool: Some(pool.clone()),
                        cluster: cluster.as_ref().map(|(c, _)| c.clone()),
                        audit,
                    },
                    started,
                    udp_inode,
                );
                let server = HttpServer::new(
                    poll,
                    listener,
                    news.clone(),
                    api,
                    shared.clone(),
                    watchdog.take(),
                )
                .map_err(loop_error("http"))?;
                Some((spawn("http", move || server.run())?, news))
            }
            _ => None,
        };
        let ingest = Ingest::new(
            ingest_poll,
            ingest::Sockets { udp, tcp, tls },
            ingest_news.clone(),
            (registry.clone(), shared.clone(), tasks.clone()),
            ingest::Liveness {
                watchdog,
                progress: ingest_progress,
            },
        )
        .map_err(loop_error("ingest"))?;
        let ingest = (spawn("ingest", move || ingest.run())?, ingest_news);
        let (sweeper_stop, stop_rx) = mpsc::channel();
        let (reg, sh) = (registry.clone(), shared.clone());
        let sweeper = spawn("sweeper", move || {
            sweeper::run(reg, sh, stop_rx, grace_until)
        })?;
        let t = tasks.clone();
        let scheduler = spawn("scheduler", move || crate::tasks::run(t))?;
        let p = pool.clone();
        let supervisor = spawn("pool", move || p.run(pool_wake))?;
        let a = alerts.clone();
        let alert_rules = spawn("alerts", move || crate::alerts::run(a))?;
        let (a, source) = (alerts.clone(), format!("http://{http_at}/"));
        let alert_posts = spawn("alert-posts", move || crate::alerts::notify::run(a, source))?;
        let saver = match &store {
            Some(st) => {
                let (stop, stop_rx) = mpsc::channel();
                let (st, reg, sh) = (st.clone(), registry.clone(), shared.clone());
                Some((
                    spawn("saver", move || store::run(st, reg, sh, stop_rx))?,
                    stop,
                ))
            }
            None => None,
        };
        let tls_at = tls_at.map_or(String::new(), |a| format!(" heartbeat_tls={a}"));
        log::info!("listening http={http_at} heartbeat={heartbeat_at}{tls_at}");
        notifier.ready();
        log::info!("{ready_line}");
        Ok(Daemon {
            cli,
            limits,
            registry,
            shared,
            ingest,
            http,
            sweeper,
            sweeper_stop,
            store,
            saver,
            tasks,
            scheduler,
            pool,
            supervisor,
            alerts,
            alert_threads: [alert_rules, alert_posts],
            task_threads: opened.threads,
            notifier,
            started,
            cluster,
            fleet,
            audit: audit_writer,
        })
    }
}

/// Why the daemon did not start.
pub(super) enum Failed {
    /// A socket, a loop or a thread (exit status 1).
    Startup(StartupError),
    /// The cluster refused this node (exit status 2: the configuration's).
    Cluster(crate::cluster::Refused),
}

impl From<StartupError> for Failed {
    fn from(e: StartupError) -> Failed {
        Failed::Startup(e)
    }
}
