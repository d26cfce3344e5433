//! The REST API: a request (head and body) in, a [`Response`] out.
//!
//! Routing, and the few answers that need the API's own caches; what the
//! read endpoints show is rendered in [`super::views`] and
//! [`super::health`]. It reads snapshots from the registry and never holds
//! a lock while it serialises; it does no socket I/O (the HTTP loop does)
//! and decides nothing about workers beyond `DELETE`.
//!
//! `/telemetry` is assembled from each snapshot's pre-rendered telemetry
//! object, so a worker's JSON is serialised once per change however many
//! requests read it, and the whole body is reused while the fleet's version
//! stands. Cost: O(workers) per whole-fleet request.

use super::access;
use super::conn::{Handler, Reply};
use super::head::{Body, Method, Request, Response, percent_decode};
use super::health::Health;
use super::metrics;
use super::render::{self, Rendered};
use super::task_routes;
use super::ticket::Later;
use super::trpc;
use super::views;
use super::ws::{self, BookFeed, Feed, FleetFeed, SnapshotFrames, Stream, WsConn};
use crate::VERSION;
use crate::alerts::Alerts;
use crate::audit::{self, Audit};
use crate::cluster::Cluster;
use crate::config::{Config, Role};
use crate::fleet::Shared;
use crate::fleet::registry::Registry;
use crate::pool::Pool;
use crate::proto::{RejectReason, WorkerId, check_worker_id};
use crate::stats::Counter;
use crate::tasks::Tasks;
use crate::tasks::task::TaskId;
use std::sync::Arc;
use std::time::Instant;

/// The HTTP API as an OpenAPI 3.1 document, served at `/api/openapi.json`;
/// `tests/openapi.rs` holds it to the routes and to README.md, and runs
/// schemathesis against a real daemon with it.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every endpoint, as documented in README.md and musterd(8). Keep in step
/// with [`route`]; a test checks each is routed and documented.
pub const ENDPOINTS: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/dashboard"),
    ("GET", "/health"),
    ("GET", "/telemetry"),
    ("GET", "/telemetry/{id}"),
    ("GET", "/workers"),
    ("GET", "/api/workers"),
    ("GET", "/api/workers/{id}"),
    ("DELETE", "/api/workers/{id}"),
    ("GET", "/api/workers/registry"),
    ("GET", "/api/workers/snapshot/{id}"),
    ("GET", "/api/workers/{id}/metrics"),
    ("GET", "/api/workers/{id}/history"),
    ("GET", "/api/metrics"),
    ("GET", "/api/history"),
    ("GET", "/api/openapi.json"),
    ("GET", "/metrics"),
    ("POST", "/api/tasks"),
    ("GET", "/api/tasks"),
    ("GET", "/api/tasks/{id}"),
    ("DELETE", "/api/tasks/{id}"),
    ("GET", "/api/tasks/{id}/logs"),
    ("POST", "/api/tasks/{id}/retry"),
    ("GET", "/api/workers/{id}/tasks"),
    ("GET", "/api/queues"),
    ("POST", "/api/queues/{type}/pause"),
    ("POST", "/api/queues/{type}/resume"),
    ("POST", "/api/workers/scale"),
    ("GET", "/api/pool"),
    ("GET", "/api/alerts"),
    ("GET", "/api/nodes"),
    ("GET", "/api/audit"),
    ("GET", "/api/access"),
    ("GET", "/trpc/worker.metrics"),
];

enum Route {
    /// A dashboard file: its content type and text.
    Dashboard(&'static str, &'static str),
    Health,
    Metrics,
    Telemetry,
    TelemetryOne(WorkerId),
    Workers,
    ApiWorkers,
    ApiWorker(WorkerId),
    Registry,
    Snapshot(WorkerId),
    WorkerMetrics(WorkerId),
    History(WorkerId),
    FleetMetrics,
    /// The last hour by minute: task ends, queue depth, workers.
    Trend,
    /// This API written down, OpenAPI 3.1.
    OpenApi,
    Tasks,
    Task(TaskId),
    TaskLogs(TaskId),
    TaskRetry(TaskId),
    TaskBulk,
    WorkerTasks(WorkerId),
    Queues,
    /// A task type paused (`true`) or resumed.
    QueuePause(String, bool),
    Schedules,
    Schedule(String),
    Limits,
    /// A schedule paused (`true`) or resumed.
    SchedulePause(String, bool),
    Scale,
    Pool,
    Alerts,
    Nodes,
    /// The audit log of changes.
    Audit,
    /// Who the request's token is and what its role allows.
    Access,
    /// tRPC procedures, comma-joined when batched.
    Trpc(String),
}

impl Route {
    /// The methods the route answers, `OPTIONS` included.
    fn methods(&self) -> &'static [Method] {
        use Method::{Delete, Get, Head, Options, Post, Put};
        match self {
            Route::ApiWorker(_) | Route::Task(_) | Route::Schedule(_) => {
                &[Get, Head, Delete, Options]
            }
            Route::Tasks | Route::Schedules => &[Get, Head, Post, Options],
            Route::SchedulePause(..) => &[Post, Options],
            Route::Limits => &[Get, Head, Put, Options],
            Route::Scale | Route::TaskRetry(_) | Route::TaskBulk | Route::QueuePause(..) => {
                &[Post, Options]
            }
            _ => &[Get, Head, Options],
        }
    }

    /// Whether any of its methods changes something: then a page on a
    /// listed origin may send it `Authorization` (CORS preflight).
    fn takes_changes(&self) -> bool {
        self.methods().iter().any(|m| m.is_change())
    }

    /// The `Allow` field (RFC 9110 §10.2.1).
    fn allow(&self) -> String {
        let names: Vec<&str> = self.methods().iter().map(|m| m.as_str()).collect();
        names.join(", ")
    }
}

/// A path segment that must be a worker id: 400 when it cannot be one, 404
/// when it is reserved (no worker can have it).
fn worker_id(segment: &str) -> Result<WorkerId, Response> {
    let decoded = percent_decode(segment).ok_or_else(|| {
        Response::error(400, "bad_worker_id", "broken percent-encoding in worker id")
    })?;
    match check_worker_id(&decoded) {
        Ok(()) => Ok(WorkerId::from(decoded.as_ref())),
        Err(RejectReason::ReservedId) => Err(not_found()),
        Err(_) => Err(Response::error(
            400,
            "bad_worker_id",
            "worker ids are 1-128 bytes of A-Za-z0-9._:@-",
        )),
    }
}

/// A path segment that must be a task id: 400 when it cannot be one
/// (not hex digits at all), else the id (found or not).
fn task_id(segment: &str) -> Result<TaskId, Response> {
    let decoded = percent_decode(segment);
    match decoded.as_deref().map(TaskId::parse) {
        Some(Some(id)) => Ok(id),
        Some(None)
            if decoded
                .as_deref()
                .is_some_and(crate::proto::task::valid_task_id) =>
        {
            // Of the syntax a task id had: no such task.
            Err(task_routes::not_found())
        }
        _ => Err(Response::error(
            400,
            "bad_task_id",
            "task ids are 16 hex digits",
        )),
    }
}

/// `GET /api/nodes`: this node, the leader lease, the database, and every
/// node the database knows (alive or not), as of the last lease turn.
fn nodes_view(c: &Cluster) -> serde_json::Value {
    let v = c.view();
    serde_json::json!({
        "node": c.node_id(),
        "as_of": v.as_of,
        "leader": v.leader,
        "database": v.database(),
        "nodes": v.nodes,
    })
}

pub fn not_found() -> Response {
    Response::error(404, "not_found", "no such worker or endpoint")
}

fn route(path: &str) -> Result<Route, Response> {
    let path = if path.len() > 1 {
        path.strip_suffix('/').unwrap_or(path)
    } else {
        path
    };
    if let Some((kind, text)) = super::dashboard::file(path) {
        return Ok(Route::Dashboard(kind, text));
    }
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    Ok(match segs.as_slice() {
        ["health"] => Route::Health,
        ["metrics"] => Route::Metrics,
        ["telemetry"] => Route::Telemetry,
        ["telemetry", id] => Route::TelemetryOne(worker_id(id)?),
        ["workers"] => Route::Workers,
        ["api", "workers"] => Route::ApiWorkers,
        ["api", "workers", "registry"] => Route::Registry,
        ["api", "workers", "scale"] => Route::Scale,
        ["api", "pool"] => Route::Pool,
        ["api", "alerts"] => Route::Alerts,
        ["api", "nodes"] => Route::Nodes,
        ["api", "audit"] => Route::Audit,
        ["api", "access"] => Route::Access,
        ["api", "workers", "snapshot", id] => Route::Snapshot(worker_id(id)?),
        ["api", "workers", id] => Route::ApiWorker(worker_id(id)?),
        ["api", "workers", id, "metrics"] => Route::WorkerMetrics(worker_id(id)?),
        ["api", "workers", id, "history"] => Route::History(worker_id(id)?),
        ["api", "metrics"] => Route::FleetMetrics,
        ["api", "history"] => Route::Trend,
        ["api", "openapi.json"] => Route::OpenApi,
        ["api", "workers", id, "tasks"] => Route::WorkerTasks(worker_id(id)?),
        ["api", "tasks"] => Route::Tasks,
        ["api", "tasks", "bulk"] => Route::TaskBulk,
        ["api", "tasks", id] => Route::Task(task_id(id)?),
        ["api", "tasks", id, "logs"] => Route::TaskLogs(task_id(id)?),
        ["api", "tasks", id, "retry"] => Route::TaskRetry(task_id(id)?),
        ["api", "queues"] => Route::Queues,
        ["api", "queues", kind, "pause"] => Route::QueuePause(task_routes::kind(kind)?, true),
        ["api", "queues", kind, "resume"] => Route::QueuePause(task_routes::kind(kind)?, false),
        ["api", "schedules"] => Route::Schedules,
        ["api", "limits"] => Route::Limits,
        ["api", "schedules", name] => Route::Schedule(task_routes::schedule_name(name)?),
        ["api", "schedules", name, "pause"] => {
            Route::SchedulePause(task_routes::schedule_name(name)?, true)
        }
        ["api", "schedules", name, "resume"] => {
            Route::SchedulePause(task_routes::schedule_name(name)?, false)
        }
        ["trpc", procedures] => Route::Trpc(procedures.to_string()),
        _ => return Err(not_found()),
    })
}

/// The API and its caches; lives on the HTTP loop's thread. The only
/// [`Handler`]: connections reach workers, tasks, the pool and alerts
/// through it alone.
pub struct Api {
    registry: Arc<Registry>,
    shared: Arc<Shared>,
    tasks: Arc<Tasks>,
    alerts: Arc<Alerts>,
    /// The pool, when the daemon runs one.
    pool: Option<Arc<Pool>>,
    /// This node's membership, in cluster mode.
    cluster: Option<Arc<Cluster>>,
    /// Who changed what.
    audit: Arc<Audit>,
    health: Health,
    /// The last `/telemetry` body, served again while no worker has changed
    /// since (and built off the loop when large).
    telemetry: render::Cache,
    /// The last `/metrics` bodies, plain and gzipped, and how many scrapes
    /// there were (each is a version of its own).
    metrics_plain: render::Cache,
    metrics_gzip: render::Cache,
    scrapes: u64,
    /// The whole fleet's snapshot frame, shared by plain stream clients.
    snapshots: SnapshotFrames,
    /// The last hour's samples for `/api/history`.
    trend: super::trend::Trend,
}

/// What the API serves from: the fleet, the task book, the alerts, and
/// the pool when there is one.
pub struct Sources {
    pub registry: Arc<Registry>,
    pub shared: Arc<Shared>,
    pub tasks: Arc<Tasks>,
    pub alerts: Arc<Alerts>,
    pub pool: Option<Arc<Pool>>,
    pub cluster: Option<Arc<Cluster>>,
    pub audit: Arc<Audit>,
}

impl Api {
    pub fn new(from: Sources, started: Instant, udp_inode: Option<u64>) -> Api {
        Api {
            registry: from.registry,
            shared: from.shared,
            tasks: from.tasks,
            alerts: from.alerts,
            pool: from.pool,
            health: Health::new(started, udp_inode, from.cluster.clone()),
            cluster: from.cluster,
            audit: from.audit,
            telemetry: Default::default(),
            metrics_plain: Default::default(),
            metrics_gzip: Default::default(),
            scrapes: 0,
            snapshots: SnapshotFrames::default(),
            trend: Default::default(),
        }
    }

    /// On every tick of the loop.
    pub fn on_tick(&mut self) {
        self.snapshots.expire();
        self.audit
            .prune(self.shared.config.get().http.audit_retention);
        let now = crate::clock::unix_ms();
        self.trend.look(
            now,
            &self.tasks,
            &mut self.health,
            &self.registry,
            &self.shared,
        );
    }

    fn route_request(&mut self, req: &Request, body: &[u8], later: &Later) -> Reply {
        let route = match route(&req.path) {
            Ok(r) => r,
            Err(resp) => return Reply::Now(resp),
        };
        let Some((role, action)) = change(req.method, &route) else {
            return self.answer(req, route, body, later);
        };
        if !req.who.may(role) {
            let refused = req.who.lacks(role, action);
            self.shared.stats.incr(Counter::HttpRefusedRole);
            if action != SUBMIT {
                self.audit
                    .record(entry(req, action, &route, body, refused.status));
            }
            return Reply::Now(refused);
        }
        let target = (action != SUBMIT).then(|| entry(req, action, &route, body, 0));
        let reply = self.answer(req, route, body, later);
        if let (Some(mut e), Reply::Now(resp)) = (target, &reply) {
            e.status = resp.status;
            self.audit.record(e);
        }
        reply
    }

    fn answer(&mut self, req: &Request, route: Route, body: &[u8], later: &Later) -> Reply {
        let cfg = self.shared.config.get();
        let now = |r: Response| Reply::Now(r);
        match (req.method, route) {
            (Method::Options, route) => now(preflight(&route, req, &cfg)),
            (Method::Get | Method::Head, route) => self.get(route, req, &cfg, later),
            (Method::Delete, Route::ApiWorker(id)) => now(self.delete(&id)),
            (Method::Post, Route::Tasks) => {
                task_routes::submit(&self.tasks, body, req, &cfg, later)
            }
            (Method::Delete, Route::Task(id)) => {
                now(task_routes::cancel(&self.tasks, id, &req.who))
            }
            (Method::Post, Route::TaskRetry(id)) => now(task_routes::retry(&self.tasks, id)),
            (Method::Post, Route::TaskBulk) => now(task_routes::bulk(&self.tasks, body, req)),
            (Method::Post, Route::Schedules) => now(task_routes::schedule_put(&self.tasks, body)),
            (Method::Put, Route::Limits) => now(task_routes::set_limit(&self.tasks, body)),
            (Method::Delete, Route::Schedule(name)) => {
                now(task_routes::schedule_delete(&self.tasks, &name))
            }
            (Method::Post, Route::SchedulePause(name, paused)) => {
                now(task_routes::schedule_pause(&self.tasks, &name, paused))
            }
            (Method::Post, Route::QueuePause(kind, paused)) => {
                now(task_routes::pause(&self.tasks, &kind, paused))
            }
            (Method::Post, Route::Scale) => now(self.scale(body, &cfg)),
            (_, Route::Trpc(p)) => now(trpc::method_not_supported(&p)),
            (_, route) => {
                now(
                    Response::error(405, "method_not_allowed", "method not allowed here")
                        .with_header("Allow", route.allow()),
                )
            }
        }
    }

    fn get(&mut self, route: Route, req: &Request, cfg: &Config, later: &Later) -> Reply {
        match route {
            Route::Metrics => self.metrics(req, cfg, later),
            Route::Telemetry => self.telemetry(later),
            route => Reply::Now(self.read(route, req, cfg)),
        }
    }

    /// The reads that are answered at once.
    fn read(&mut self, route: Route, req: &Request, cfg: &Config) -> Response {
        let query = req.query.as_str();
        let reg = &*self.registry;
        let found = |h: Option<Response>| h.unwrap_or_else(not_found);
        match route {
            Route::Dashboard(kind, text) => super::dashboard::serve(kind, text),
            Route::Health => Response::json(
                200,
                self.health.body(reg, &self.shared, cfg.fleet.max_workers),
            ),
            Route::Metrics | Route::Telemetry => unreachable!("answered by get"),
            Route::TelemetryOne(id) => found(
                reg.fleet_snapshot(&id)
                    .map(|s| Response::json(200, s.telemetry_json().as_bytes().to_vec())),
            ),
            Route::Workers => json_ok(&views::workers_map(reg)),
            Route::ApiWorkers => views::list(reg, query),
            Route::ApiWorker(id) => found(
                reg.fleet_snapshot(&id)
                    .map(|s| json_ok(&views::details(&s, reg.heard(&s)))),
            ),
            Route::Registry => json_ok(&views::registry_map(reg)),
            Route::WorkerMetrics(id) => found(
                reg.shown(&id)
                    .map(|h| json_ok(&views::worker_metrics(&h, crate::clock::unix_ms()))),
            ),
            Route::History(id) => found(reg.shown(&id).map(|h| views::history(&h, &id, query))),
            Route::FleetMetrics => json_ok(&views::fleet_metrics(reg, self.health.started())),
            Route::OpenApi => Response::json(200, OPENAPI.as_bytes().to_vec()),
            Route::Trend => json_ok(&self.trend.view(
                crate::clock::unix_ms(),
                &self.tasks,
                &mut self.health,
                reg,
                &self.shared,
            )),
            Route::Snapshot(id) => found(reg.shown(&id).map(|h| views::download(&h, &id))),
            Route::Tasks => task_routes::list(&self.tasks, query),
            Route::Task(id) => task_routes::show(&self.tasks, id),
            Route::TaskLogs(id) => task_routes::logs(&self.tasks, id, req),
            Route::WorkerTasks(id) => task_routes::of_worker(&self.tasks, &id, query),
            Route::Queues => json_ok(&serde_json::json!({"queues": self.tasks.queues()})),
            Route::Schedules => task_routes::schedules(&self.tasks),
            Route::Limits => task_routes::limits(&self.tasks),
            Route::Schedule(name) => task_routes::schedule_show(&self.tasks, &name),
            Route::SchedulePause(..) => {
                Response::error(405, "method_not_allowed", "POST to pause or resume")
                    .with_header("Allow", "POST, OPTIONS")
            }
            Route::Trpc(p) => trpc::query(&p, query, reg, self.health.started()),
            Route::Pool => match &self.pool {
                Some(p) => json_ok(&p.view()),
                None => json_ok(&serde_json::json!({"desired": 0, "actual": 0, "members": []})),
            },
            Route::Alerts => json_ok(&self.alerts.view()),
            Route::Audit if !req.who.may(Role::Operate) => {
                self.shared.stats.incr(Counter::HttpRefusedRole);
                req.who.lacks(Role::Operate, "reading the audit log")
            }
            Route::Audit => audit_list(&self.audit, query),
            Route::Access => access_view(&req.who, cfg),
            Route::Nodes => match &self.cluster {
                Some(c) => json_ok(&nodes_view(c)),
                None => Response::error(
                    409,
                    "not_clustered",
                    "this musterd runs on its own: cluster_database is off",
                ),
            },
            Route::Scale => Response::error(405, "method_not_allowed", "POST a count")
                .with_header("Allow", "POST, OPTIONS"),
            Route::TaskRetry(_) => Response::error(405, "method_not_allowed", "POST to retry")
                .with_header("Allow", "POST, OPTIONS"),
            Route::TaskBulk => Response::error(405, "method_not_allowed", "POST an action")
                .with_header("Allow", "POST, OPTIONS"),
            Route::QueuePause(..) => {
                Response::error(405, "method_not_allowed", "POST to pause or resume")
                    .with_header("Allow", "POST, OPTIONS")
            }
        }
    }

    /// `/metrics`, gzipped when the scraper asks. Every scrape is
    /// rendered afresh, except that a body that took long to render is
    /// rendered off the loop and served again for as long as it took
    /// ([`super::render`]), as `/telemetry` is.
    fn metrics(&mut self, req: &Request, cfg: &Config, later: &Later) -> Reply {
        self.scrapes += 1;
        let shared = self.shared.clone();
        let tasks = self.tasks.clone();
        let registry = self.registry.clone();
        let uptime_seconds = self.health.started().elapsed().as_secs_f64();
        let udp_kernel_drops = self.health.udp_kernel_drops();
        let (max_workers, series) = (cfg.fleet.max_workers, cfg.daemon.metrics_worker_series);
        let large = registry.len() >= LARGE_FLEET;
        let gzip = req.gzip;
        let cache = if gzip {
            &mut self.metrics_gzip
        } else {
            &mut self.metrics_plain
        };
        let rendered = cache.get(self.scrapes, large, Some(later), move || {
            let heard = |s: &crate::fleet::snapshot::Snapshot| registry.heard(s);
            let d = metrics::Figures {
                stats: &shared.stats,
                version: VERSION,
                uptime_seconds,
                udp_kernel_drops,
                max_workers,
                tasks: Some(&tasks),
                series,
                process: crate::sys::procfs::own_process(),
                heard: Some(&heard),
            };
            let text = metrics::render(&d, &registry.fleet(), Instant::now());
            if gzip {
                metrics::gzip(text.as_bytes())
            } else {
                text.into_bytes()
            }
        });
        let r = Response {
            status: 200,
            content_type: metrics::CONTENT_TYPE,
            ..Response::default()
        };
        let r = r.with_header("Vary", "Accept-Encoding");
        let r = if gzip {
            r.with_header("Content-Encoding", "gzip")
        } else {
            r
        };
        answer(rendered, r)
    }

    /// `POST /api/workers/scale {"count": N}`: the pool's size.
    fn scale(&self, body: &[u8], cfg: &Config) -> Response {
        let bad = |m: &str| Response::error(400, "bad_count", m);
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            return bad("the body is JSON: {\"count\": N}");
        };
        let count = match v.get("count") {
            None => return bad("count: required"),
            Some(c) => match c.as_u64() {
                Some(n) => n,
                None if c.as_i64().is_some_and(|n| n < 0) => {
                    return bad("count: must not be negative");
                }
                None => return bad("count: must be a whole number"),
            },
        };
        let Some(pool) = &self.pool else {
            return Response::error(409, "no_pool", "no pool_command is configured");
        };
        match pool.scale(usize::try_from(count).unwrap_or(usize::MAX), cfg) {
            Ok((created, terminated)) => json_ok(&serde_json::json!({
                "created": created,
                "terminated": terminated,
                "count": count,
            })),
            Err(crate::pool::ScaleError::NoPool) => {
                Response::error(409, "no_pool", "no pool_command is configured")
            }
            Err(crate::pool::ScaleError::OutOfBounds(min, max)) => bad(&format!(
                "count: must be within pool_min={min} and pool_max={max}"
            )),
        }
    }

    fn delete(&self, id: &str) -> Response {
        if self.registry.remove(id) {
            self.shared.stats.incr(Counter::WorkersDeleted);
            log::info!("forgot worker id={id} (DELETE)");
            Response {
                status: 204,
                ..Response::default()
            }
        } else {
            not_found()
        }
    }

    /// `/telemetry`, rebuilt only when the fleet's version moved (a
    /// dashboard polling a quiet fleet costs a lookup, not an assembly),
    /// and off the loop when it is large ([`super::render`]).
    fn telemetry(&mut self, later: &Later) -> Reply {
        let version = self.shared.changes.version();
        let registry = self.registry.clone();
        let large = registry.len() >= LARGE_FLEET;
        let rendered = self.telemetry.get(version, large, Some(later), move || {
            views::telemetry_map(&registry)
        });
        answer(rendered, Response::json(200, Vec::new()))
    }
}

/// A rendered body as the answer `resp` carries: now, or once rendered.
fn answer(rendered: Rendered, resp: Response) -> Reply {
    match rendered {
        Rendered::Now(body) => Reply::Now(Response {
            body: Body::Shared(body),
            ..resp
        }),
        Rendered::Later(ticket) => Reply::Later(ticket, resp),
    }
}

impl Handler for Api {
    fn respond(&mut self, req: &Request, body: &[u8], later: &Later) -> Reply {
        self.route_request(req, body, later)
    }

    /// A stream: its subscription, the RFC 6455 checks, and what it reads
    /// from (the loop has checked the client cap). When it follows
    /// workers, the change feed records from now on, before its first
    /// snapshot is composed, so nothing between the two is missed.
    fn open_stream(
        &mut self,
        req: &Request,
        early: Vec<u8>,
        now: Instant,
    ) -> Result<(WsConn, Response), Response> {
        let sub = ws::subscription(&req.path, &req.query)?;
        let resp = ws::accept(req)?;
        let feed = match sub.stream {
            Stream::Tasks => Feed::Book(BookFeed::new(self.tasks.clone(), Stream::Tasks)),
            Stream::Alerts => Feed::Book(BookFeed::new(self.alerts.clone(), Stream::Alerts)),
            _ => Feed::Fleet(Box::new(FleetFeed::new(self.registry.clone(), sub, now))),
        };
        let mut w = WsConn::new(feed, early, now);
        if w.wants_changes() {
            self.shared.changes.set_wanted(true);
        }
        if let Feed::Fleet(f) = &mut w.feed {
            if f.is_plain() {
                let version = self.shared.changes.version();
                // Without a shared frame it composes its own.
                if let Some(frame) = self.snapshots.frame(&self.registry, version) {
                    f.give_snapshot(frame);
                }
            }
        }
        self.shared.stats.incr(Counter::WsAccepted);
        Ok((w, resp))
    }
}

/// What the audit log calls a submission, which it leaves to the task's
/// own `submitted_by`.
const SUBMIT: &str = "task.submit";

/// The role a change needs, and what the audit log calls it; `None` for a
/// read.
fn change(method: Method, route: &Route) -> Option<(Role, &'static str)> {
    let pick = |on: bool, a, b| if on { a } else { b };
    Some(match (method, route) {
        (Method::Post, Route::Tasks) => (Role::Submit, SUBMIT),
        // Its own tasks only, below operate (task_routes::cancel).
        (Method::Delete, Route::Task(_)) => (Role::Submit, "task.cancel"),
        (Method::Post, Route::TaskRetry(_)) => (Role::Operate, "task.retry"),
        (Method::Post, Route::TaskBulk) => (Role::Operate, "tasks.bulk"),
        (Method::Post, Route::Schedules) => (Role::Operate, "schedule.put"),
        (Method::Delete, Route::Schedule(_)) => (Role::Operate, "schedule.delete"),
        (Method::Post, Route::SchedulePause(_, p)) => {
            (Role::Operate, pick(*p, "schedule.pause", "schedule.resume"))
        }
        (Method::Post, Route::QueuePause(_, p)) => {
            (Role::Operate, pick(*p, "queue.pause", "queue.resume"))
        }
        (Method::Put, Route::Limits) => (Role::Operate, "limits.set"),
        (Method::Post, Route::Scale) => (Role::Operate, "pool.scale"),
        (Method::Delete, Route::ApiWorker(_)) => (Role::Operate, "worker.forget"),
        _ => return None,
    })
}

/// The audit entry of a change (its status filled in once answered).
fn entry(req: &Request, action: &str, route: &Route, body: &[u8], status: u16) -> audit::Entry {
    let target = match route {
        Route::Task(id) | Route::TaskRetry(id) => Some(id.to_string()),
        Route::ApiWorker(id) => Some(id.to_string()),
        Route::Schedule(n) | Route::SchedulePause(n, _) | Route::QueuePause(n, _) => {
            Some(n.clone())
        }
        Route::Schedules => serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("name")?.as_str().map(str::to_string)),
        _ => None,
    };
    // A schedule's body holds a task's payload: its name is the target,
    // and the payload is not copied into the log.
    let detail = match route {
        Route::TaskBulk | Route::Scale | Route::Limits => audit::detail(body),
        _ => None,
    };
    audit::Entry {
        id: 0,
        at: crate::clock::unix_ms(),
        node: None,
        actor: req.who.name.to_string(),
        role: req.who.role.map(|r| r.as_str().to_string()),
        peer: req.peer.map(|p| p.to_canonical().to_string()),
        action: action.to_string(),
        target,
        detail,
        status,
    }
}

/// `GET /api/audit`: newest first; `?limit=` (1-1000, 100), `?before=ID`
/// (the `next_before` of the page before), `?actor=`, `?action=`.
fn audit_list(log: &Audit, query: &str) -> Response {
    use super::head::query_param;
    let limit = match query_param(query, "limit").map(|v| v.parse::<usize>()) {
        None => 100,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => return Response::error(400, "bad_limit", "limit is 1 to 1000"),
    };
    let before = match query_param(query, "before").map(|v| v.parse::<u64>()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => return Response::error(400, "bad_before", "before is an entry's id"),
    };
    let (actor, action) = (query_param(query, "actor"), query_param(query, "action"));
    let page = log.list(before, limit, |e| {
        actor.as_deref().is_none_or(|a| e.actor == a)
            && action.as_deref().is_none_or(|a| e.action == a)
    });
    let next = (page.len() == limit)
        .then(|| page.last().map(|e| e.id))
        .flatten();
    json_ok(&serde_json::json!({"entries": page, "next_before": next}))
}

/// `GET /api/access`: who the request's token is, its role, and what the
/// daemon asks for, so that a page shows only what the token may do.
fn access_view(who: &access::Who, cfg: &Config) -> Response {
    let may: Vec<&str> = Role::ALL
        .into_iter()
        .filter(|r| who.may(*r))
        .map(Role::as_str)
        .collect();
    json_ok(&serde_json::json!({
        "name": &*who.name,
        "role": who.role.map(Role::as_str),
        "roles": may,
        "tokens": !cfg.http.tokens.is_empty(),
        "reads_need_token": cfg.http.api_read_requires_token,
    }))
}

/// A fleet this large has its first whole-fleet answer rendered off the
/// loop; after that, how long the last one took decides.
const LARGE_FLEET: usize = 2000;

/// An `OPTIONS` answer. A CORS preflight lets any page read; only a page
/// on an origin listed by name in `cors_allow_origin` may also change
/// (with `Authorization`), and only with the methods the route takes.
fn preflight(route: &Route, req: &Request, cfg: &Config) -> Response {
    let listed = access::listed(&cfg.http.cors_allow_origin, req.origin.as_deref());
    let (methods, headers) = if listed && route.takes_changes() {
        let names: Vec<&str> = route
            .methods()
            .iter()
            .filter(|m| **m != Method::Options)
            .map(|m| m.as_str())
            .collect();
        (names.join(", "), "Content-Type, Authorization")
    } else {
        let reads = route.methods().contains(&Method::Get);
        let names = if reads { "GET, HEAD" } else { "" };
        (names.to_string(), "Content-Type")
    };
    Response {
        status: 204,
        ..Response::default()
    }
    .with_header("Allow", route.allow())
    .with_header("Access-Control-Allow-Methods", methods)
    .with_header("Access-Control-Allow-Headers", headers)
    .with_header("Access-Control-Max-Age", "600")
}

pub fn json_ok(v: &impl serde::Serialize) -> Response {
    Response::json(
        200,
        serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::fleet::inbox::Msg;
    use crate::fleet::notify::{Mailbox, Nobody};
    use crate::fleet::snapshot::Transport;
    use crate::serve::head::parse;
    use crate::serve::ticket::Outcome;
    use serde_json::Value;
    use std::time::Duration;

    fn api() -> Api {
        let mut cfg = config::defaults();
        cfg.fleet.max_workers = 100;
        let shared = Arc::new(Shared::new(cfg));
        let registry = Arc::new(Registry::new(shared.clone()));
        let tasks = Tasks::open(None, shared.clone(), crate::tasks::unlinked(), None).tasks;
        let alerts = Arc::new(Alerts::new(
            shared.clone(),
            registry.clone(),
            tasks.clone(),
            None,
            Arc::new(Nobody),
        ));
        let from = Sources {
            registry,
            shared,
            tasks,
            alerts,
            pool: None,
            cluster: None,
            audit: Arc::new(crate::audit::Audit::open(None, Duration::from_secs(60))),
        };
        Api::new(from, Instant::now(), None)
    }

    fn later() -> Later {
        Later {
            mailbox: Mailbox::new(Nobody),
            key: 0,
        }
    }

    fn call(api: &mut Api, method: &str, target: &str) -> (u16, Value, Response) {
        call_with(api, method, target, b"")
    }

    /// The answer, waiting for its ticket when it must (a submission on
    /// disk, a body rendered off the loop).
    fn call_with(api: &mut Api, method: &str, target: &str, body: &[u8]) -> (u16, Value, Response) {
        let head = format!("{method} {target} HTTP/1.1\r\n\r\n");
        let (mut req, _) = parse(head.as_bytes()).unwrap().unwrap();
        // As the access check finds a loopback peer with no tokens.
        req.who = access::Who::loopback();
        let resp = match api.respond(&req, body, &later()) {
            Reply::Now(r) => r,
            Reply::Later(ticket, mut r) => {
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    match ticket.outcome() {
                        Some(Outcome::Done) => break r,
                        Some(Outcome::Body(b)) => {
                            r.body = Body::Shared(b);
                            break r;
                        }
                        Some(Outcome::Instead(r)) => break *r,
                        Some(Outcome::Failed) => panic!("{target}: failed"),
                        None => assert!(Instant::now() < deadline, "{target} never settled"),
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        };
        let v = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
        (resp.status, v, resp)
    }

    fn beat(api: &Api, json: &str) {
        let f = crate::proto::decode(json.as_bytes(), 65536).unwrap();
        let id = f.worker_id().unwrap().clone();
        let h = api.registry.route(&id, Transport::Udp).unwrap();
        let before = h.snapshot().messages_processed;
        assert!(
            h.inbox
                .try_send(Msg::frame(f, Transport::Udp, Instant::now()))
                .is_ok()
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while h.snapshot().messages_processed == before {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn telemetry_body_is_reused_until_a_worker_changes() {
        let mut a = api();
        beat(&a, r#"{"type":"heartbeat","worker_id":"w1","cpu_usage":1}"#);
        let body = |a: &mut Api| match a.telemetry(&later()) {
            Reply::Now(Response {
                body: Body::Shared(b),
                ..
            }) => b,
            _ => panic!("not rendered here"),
        };
        let first = body(&mut a);
        assert!(Arc::ptr_eq(&first, &body(&mut a)), "quiet fleet");
        beat(&a, r#"{"type":"heartbeat","worker_id":"w1","cpu_usage":2}"#);
        let (_, v, _) = call(&mut a, "GET", "/telemetry");
        assert_eq!(v["w1"]["cpu_usage"], 2.0);
        beat(&a, r#"{"type":"heartbeat","worker_id":"w2"}"#);
        let (_, v, _) = call(&mut a, "GET", "/telemetry");
        assert!(v["w2"].is_object(), "a new worker is listed at once");
        assert!(a.registry.remove("w2"));
        let (_, v, _) = call(&mut a, "GET", "/telemetry");
        assert!(v.get("w2").is_none(), "a removed worker is gone at once");
        assert!(!Arc::ptr_eq(&first, &body(&mut a)));
        a.registry.shutdown(Instant::now() + Duration::from_secs(5));
    }

    #[test]
    fn health_is_fresh_on_every_poll() {
        let mut a = api();
        let (_, v, first) = call(&mut a, "GET", "/health");
        assert_eq!(v["workers"]["total"], 0);
        let (_, _, again) = call(&mut a, "GET", "/health");
        assert_eq!(first.body, again.body);
        beat(&a, r#"{"type":"heartbeat","worker_id":"w1"}"#);
        let (_, v, _) = call(&mut a, "GET", "/health");
        assert_eq!(
            (
                v["workers"]["total"].as_u64(),
                v["workers"]["active"].as_u64()
            ),
            (Some(1), Some(1))
        );
        assert_eq!(v["frames"]["applied"], 1);
        a.shared.stats.add(Counter::FramesReceived, 5);
        let (_, v, _) = call(&mut a, "GET", "/health");
        assert_eq!(v["frames"]["received"], 5);
        assert!(a.registry.remove("w1"));
        let (_, v, _) = call(&mut a, "GET", "/health");
        assert_eq!(v["workers"]["total"], 0);
        a.registry.shutdown(Instant::now() + Duration::from_secs(5));
    }

    #[test]
    fn every_listed_endpoint_is_routed() {
        let mut a = api();
        beat(&a, r#"{"type":"heartbeat","worker_id":"w1"}"#);
        // DELETE last: it forgets the worker the others read.
        let (deletes, reads): (Vec<_>, Vec<_>) =
            ENDPOINTS.iter().partition(|(m, _)| *m == "DELETE");
        let (_, task, _) = call_with(&mut a, "POST", "/api/tasks", br#"{"type":"t"}"#);
        let task_id = task["id"].as_str().unwrap().to_string();
        for (method, path) in reads.into_iter().chain(deletes) {
            let id = if path.starts_with("/api/tasks/") {
                task_id.as_str()
            } else {
                "w1"
            };
            let target = path.replace("{id}", id);
            let body: &[u8] = if path.ends_with("/scale") {
                br#"{"count":1}"#
            } else if method == "POST" {
                br#"{"type":"t"}"#
            } else {
                b""
            };
            let (status, _, _) = call_with(&mut a, method, &target, body);
            // No pool runs in a unit test, nor a cluster: scaling and the
            // node list say so (tests/pool.rs, tests/cluster.rs); the task
            // is queued, which is not retried (tests/tasks.rs retries).
            let alone =
                path.ends_with("/scale") || path.ends_with("/nodes") || path.ends_with("/retry");
            let ok = status < 300 || (alone && status == 409);
            assert!(ok, "{method} {target} -> {status}");
        }
        a.registry.shutdown(Instant::now() + Duration::from_secs(5));
    }

    #[test]
    fn endpoints() {
        let mut a = api();
        beat(
            &a,
            r#"{"type":"heartbeat","worker_id":"w2","status":"working","cpu_usage":50}"#,
        );
        beat(
            &a,
            r#"{"type":"heartbeat","worker_id":"w1","cpu_usage":12.5}"#,
        );

        let (s, v, _) = call(&mut a, "GET", "/health");
        assert_eq!(
            (s, v["status"].as_str(), v["workers"]["total"].as_u64()),
            (200, Some("healthy"), Some(2))
        );

        let (s, v, _) = call(&mut a, "GET", "/telemetry");
        assert_eq!(s, 200);
        assert_eq!(v["w1"]["cpu_usage"], 12.5);
        assert_eq!(v["w2"]["status"], "working");

        let (s, v, _) = call(&mut a, "GET", "/telemetry/w1");
        assert_eq!((s, v["worker_id"].as_str()), (200, Some("w1")));
        assert_eq!(call(&mut a, "GET", "/telemetry/nobody").0, 404);
        assert_eq!(call(&mut a, "GET", "/telemetry/bad%20id").0, 400);
        assert_eq!(call(&mut a, "GET", "/telemetry/registry").0, 404);

        let (_, v, _) = call(&mut a, "GET", "/api/workers");
        let ids: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["worker_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["w1", "w2"], "sorted by id");
        let (_, v, _) = call(&mut a, "GET", "/api/workers?status=working");
        assert_eq!(v.as_array().unwrap().len(), 1);
        assert_eq!(call(&mut a, "GET", "/api/workers?status=sleepy").0, 400);

        let (_, v, _) = call(&mut a, "GET", "/api/workers/registry");
        assert_eq!(v["w2"]["id"], "w2");
        assert_eq!(v["w2"]["messages_processed"], 1);

        let (_, v, _) = call(&mut a, "GET", "/workers");
        assert_eq!(v["w1"]["is_active"], true);

        let (s, v, _) = call(&mut a, "GET", "/api/workers/w1");
        assert_eq!((s, v["transport"].as_str()), (200, Some("udp")));
        assert!(v.get("missed_beats").is_some());

        let (s, v, resp) = call(&mut a, "GET", "/api/workers/snapshot/w1");
        assert_eq!(s, 200);
        assert_eq!(v["worker_id"], "w1");
        let cd = resp
            .headers
            .iter()
            .find(|(n, _)| *n == "Content-Disposition")
            .unwrap();
        assert!(
            cd.1.starts_with("attachment; filename=\"worker-w1-")
                && cd.1.ends_with(".heapsnapshot\"")
        );

        let (s, _, resp) = call(&mut a, "POST", "/telemetry");
        assert_eq!(s, 405);
        assert!(
            resp.headers
                .iter()
                .any(|(n, v)| *n == "Allow" && v.contains("GET"))
        );
        let (s, _, resp) = call(&mut a, "OPTIONS", "/api/workers/w1");
        assert_eq!(s, 204);
        assert!(
            resp.headers
                .iter()
                .any(|(n, v)| *n == "Allow" && v.contains("DELETE"))
        );

        assert_eq!(call(&mut a, "DELETE", "/api/workers/w1").0, 204);
        assert_eq!(call(&mut a, "DELETE", "/api/workers/w1").0, 404);
        assert_eq!(call(&mut a, "GET", "/telemetry/w1").0, 404);
        assert_eq!(call(&mut a, "GET", "/nope").0, 404);
        let (s, v, _) = call(&mut a, "GET", "/nope");
        assert_eq!((s, v["error"].as_str()), (404, Some("not_found")));
        a.registry.shutdown(Instant::now() + Duration::from_secs(5));
    }
}
