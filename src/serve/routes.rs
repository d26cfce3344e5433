//! The REST API: a request (head and body) in, a [`Response`] out.
//!
//! Routing and rendering only. It reads snapshots from the registry and
//! never holds a lock while it serialises; it does no socket I/O (the HTTP
//! loop does) and decides nothing about workers beyond `DELETE`.
//!
//! `/telemetry` is assembled from each snapshot's pre-rendered telemetry
//! object, so a worker's JSON is serialised once per change however many
//! requests read it. Cost: O(workers) per whole-fleet request.

use crate::VERSION;
use crate::clock::unix_ms;
use crate::fleet::registry::{Counts, Registry};
use crate::fleet::runs::{self, Totals};
use crate::fleet::worker::Handle;
use crate::fleet::worker::{Snapshot, Telemetry};
use crate::proto::{RejectReason, WorkerId, check_worker_id};
use crate::serve::head::{Method, Request, Response, percent_decode, query_param};
use crate::serve::metrics;
use crate::stats::DropReason;
use crate::sys::procfs;
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

/// Every endpoint, as documented in README.md and musterd(8). Keep in step
/// with [`route`]; a test checks each is routed and documented.
pub const ENDPOINTS: &[(&str, &str)] = &[
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
    ("GET", "/metrics"),
];

/// Values `?status=` accepts: any status, or `active`.
const STATUSES: [&str; 7] = [
    "created",
    "idle",
    "working",
    "error",
    "inactive",
    "terminated",
    "active",
];

/// The `?status=` query parameter, checked; shared by the REST list and the
/// WebSocket streams.
pub fn status_filter(query: &str) -> Result<Option<String>, Response> {
    match query_param(query, "status") {
        Some(st) if !STATUSES.contains(&st.as_str()) => Err(Response::error(
            400,
            "bad_status",
            &format!("status must be one of {}", STATUSES.join(", ")),
        )),
        other => Ok(other),
    }
}

pub struct Api {
    pub registry: Arc<Registry>,
    pub started: Instant,
    /// Inode of the heartbeat UDP socket, to find its kernel drop count.
    udp_inode: Option<u64>,
    /// The last reading of the kernel's drop count and when it was taken:
    /// /proc/net/udp is the kernel writing out every UDP socket, too dear
    /// to read on every `/health` (it capped `/health` at 9,000 req/s).
    udp_drops_cache: Cell<Option<(Instant, Option<u64>)>>,
    /// The last `/telemetry` body and the fleet version it was built at,
    /// served again while no worker has changed since.
    telemetry_cache: RefCell<Option<(u64, Arc<[u8]>)>>,
    /// Workers by state at a fleet version: counting them reads every
    /// snapshot, so `/health` does it only after something changed.
    counts_cache: Cell<Option<(u64, Counts)>>,
    /// The last `/health` and its bytes, sent again while every value in
    /// it is the same (a monitor polling a quiet daemon).
    health_cache: RefCell<Option<(Health, Arc<[u8]>)>>,
}

/// How long a reading of /proc/net/udp is reused.
const UDP_DROPS_TTL: std::time::Duration = std::time::Duration::from_secs(1);

enum Route {
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
}

impl Route {
    fn allow(&self) -> &'static str {
        match self {
            Route::ApiWorker(_) => "GET, HEAD, DELETE, OPTIONS",
            _ => "GET, HEAD, OPTIONS",
        }
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

fn not_found() -> Response {
    Response::error(404, "not_found", "no such worker or endpoint")
}

fn route(path: &str) -> Result<Route, Response> {
    let path = if path.len() > 1 {
        path.strip_suffix('/').unwrap_or(path)
    } else {
        path
    };
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    Ok(match segs.as_slice() {
        ["health"] => Route::Health,
        ["metrics"] => Route::Metrics,
        ["telemetry"] => Route::Telemetry,
        ["telemetry", id] => Route::TelemetryOne(worker_id(id)?),
        ["workers"] => Route::Workers,
        ["api", "workers"] => Route::ApiWorkers,
        ["api", "workers", "registry"] => Route::Registry,
        ["api", "workers", "snapshot", id] => Route::Snapshot(worker_id(id)?),
        ["api", "workers", id] => Route::ApiWorker(worker_id(id)?),
        ["api", "workers", id, "metrics"] => Route::WorkerMetrics(worker_id(id)?),
        ["api", "workers", id, "history"] => Route::History(worker_id(id)?),
        ["api", "metrics"] => Route::FleetMetrics,
        _ => return Err(not_found()),
    })
}

impl Api {
    pub fn new(registry: Arc<Registry>, started: Instant, udp_inode: Option<u64>) -> Api {
        Api {
            registry,
            started,
            udp_inode,
            udp_drops_cache: Cell::default(),
            telemetry_cache: RefCell::default(),
            counts_cache: Cell::default(),
            health_cache: RefCell::default(),
        }
    }

    pub fn handle(&self, req: &Request, _body: &[u8]) -> Response {
        let route = match route(&req.path) {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        let allow = route.allow();
        match (req.method, route) {
            (Method::Options, _) => Response {
                status: 204,
                ..Response::default()
            }
            .with_header("Allow", allow)
            .with_header("Access-Control-Allow-Methods", allow)
            .with_header("Access-Control-Allow-Headers", "Content-Type")
            .with_header("Access-Control-Max-Age", "600"),
            (Method::Get | Method::Head, route) => self.get(route, &req.query),
            (Method::Delete, Route::ApiWorker(id)) => self.delete(&id),
            _ => Response::error(405, "method_not_allowed", "method not allowed here")
                .with_header("Allow", allow),
        }
    }

    fn get(&self, route: Route, query: &str) -> Response {
        match route {
            Route::Health => Response::json(200, self.health_body()),
            Route::Metrics => self.metrics(),
            Route::Telemetry => Response::json(200, self.telemetry_body()),
            Route::TelemetryOne(id) => match self.registry.snapshot(&id) {
                Some(s) => Response::json(200, s.telemetry_json().as_bytes().to_vec()),
                None => not_found(),
            },
            Route::Workers => json_ok(&self.workers_map()),
            Route::ApiWorkers => self.list(query),
            Route::ApiWorker(id) => match self.registry.snapshot(&id) {
                Some(s) => json_ok(&details(&s)),
                None => not_found(),
            },
            Route::Registry => json_ok(&self.registry_map()),
            Route::WorkerMetrics(id) => match self.registry.handle(&id) {
                Some(h) => json_ok(&worker_metrics(&h, unix_ms())),
                None => not_found(),
            },
            Route::History(id) => match self.registry.handle(&id) {
                Some(h) => {
                    let since = query_param(query, "since").map(|v| v.parse::<u64>());
                    let since = match since {
                        None => 0,
                        Some(Ok(ms)) => ms,
                        Some(Err(_)) => {
                            return Response::error(400, "bad_since", "since is Unix milliseconds");
                        }
                    };
                    let samples = h.extra().history.since(since);
                    json_ok(&json!({"worker_id": &*id, "samples": samples}))
                }
                None => not_found(),
            },
            Route::FleetMetrics => json_ok(&self.fleet_metrics()),
            Route::Snapshot(id) => match self.registry.handle(&id) {
                Some(h) => {
                    let s = h.snapshot();
                    let now = unix_ms();
                    let mut d = details(&s);
                    d.insert("snapshot_time".into(), json!(now));
                    d.insert(
                        "metrics".into(),
                        serde_json::to_value(worker_metrics(&h, now)).unwrap_or(Value::Null),
                    );
                    d.insert(
                        "history".into(),
                        serde_json::to_value(h.extra().history.since(0)).unwrap_or(Value::Null),
                    );
                    json_ok(&d).with_header(
                        "Content-Disposition",
                        format!("attachment; filename=\"worker-{id}-{now}.json\""),
                    )
                }
                None => not_found(),
            },
        }
    }

    fn metrics(&self) -> Response {
        let reg = &self.registry;
        let d = metrics::Daemon {
            stats: &reg.stats,
            version: VERSION,
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            udp_kernel_drops: self.udp_kernel_drops(),
            max_workers: reg.live.max_workers(),
        };
        let body = metrics::render(&d, &reg.snapshots(), Instant::now());
        Response {
            status: 200,
            content_type: metrics::CONTENT_TYPE,
            body: body.into_bytes().into(),
            ..Response::default()
        }
    }

    fn udp_kernel_drops(&self) -> Option<u64> {
        if let Some((at, v)) = self.udp_drops_cache.get() {
            if at.elapsed() < UDP_DROPS_TTL {
                return v;
            }
        }
        let v = self.udp_inode.and_then(procfs::read_udp_drops);
        self.udp_drops_cache.set(Some((Instant::now(), v)));
        v
    }

    pub fn fleet_metrics(&self) -> Value {
        fleet_metrics(&self.registry, self.started)
    }

    fn delete(&self, id: &str) -> Response {
        if self.registry.remove(id) {
            self.registry.stats.workers_deleted.fetch_add(1, Relaxed);
            log::info!("forgot worker id={id} (DELETE)");
            Response {
                status: 204,
                ..Response::default()
            }
        } else {
            not_found()
        }
    }

    /// Serialised straight from the counters: `/health` is what monitors
    /// poll, so it builds no intermediate JSON tree.
    /// `/health`, serialised again only when a value in it changed.
    fn health_body(&self) -> Arc<[u8]> {
        let h = self.health();
        if let Some((last, body)) = &*self.health_cache.borrow() {
            if *last == h {
                return body.clone();
            }
        }
        let body: Arc<[u8]> = serde_json::to_vec(&h).unwrap_or_default().into();
        *self.health_cache.borrow_mut() = Some((h, body.clone()));
        body
    }

    fn counts(&self) -> Counts {
        let version = self.registry.changes.version();
        match self.counts_cache.get() {
            Some((v, c)) if v == version => c,
            _ => {
                let c = self.registry.counts();
                self.counts_cache.set(Some((version, c)));
                c
            }
        }
    }

    fn health(&self) -> Health {
        let st = &*self.registry.stats;
        let c = self.counts();
        Health {
            status: "healthy",
            time: unix_ms() / 1000,
            uptime_seconds: self.started.elapsed().as_secs(),
            version: VERSION,
            workers: HealthWorkers {
                total: c.total,
                active: c.active,
                inactive: c.inactive,
                terminated: c.terminated,
                max: self.registry.live.max_workers(),
                threads: st.worker_threads.load(Relaxed),
                evicted: st.workers_evicted.load(Relaxed),
                deleted: st.workers_deleted.load(Relaxed),
            },
            frames: HealthFrames {
                received: st.frames_received.load(Relaxed),
                applied: st.frames_applied.load(Relaxed),
                rejected: st.rejected_total(),
                dropped: st.dropped_total(),
                rejected_by_reason: ByReason(
                    RejectReason::ALL.map(|r| (r.as_str(), st.rejected(r))),
                ),
                dropped_by_reason: ByReason(DropReason::ALL.map(|d| (d.as_str(), st.dropped(d)))),
            },
            udp_kernel_drops: self.udp_kernel_drops(),
            connections: HealthConnections {
                tcp_open: st.tcp_open.load(Relaxed),
                tcp_accepted: st.tcp_accepted.load(Relaxed),
                tcp_closed_idle: st.tcp_closed_idle.load(Relaxed),
                tcp_closed_superseded: st.tcp_closed_superseded.load(Relaxed),
                tcp_refused_full: st.tcp_refused_full.load(Relaxed),
                http_open: st.http_open.load(Relaxed),
                http_refused_full: st.http_refused_full.load(Relaxed),
                ws_clients: st.ws_clients.load(Relaxed),
                ws_accepted: st.ws_accepted.load(Relaxed),
                ws_closed_stalled: st.ws_closed_stalled.load(Relaxed),
                ws_closed_ping: st.ws_closed_ping.load(Relaxed),
                ws_closed_too_big: st.ws_closed_too_big.load(Relaxed),
            },
        }
    }

    /// The `/telemetry` body, rebuilt only when the fleet's version moved:
    /// a dashboard polling a quiet fleet costs a lookup, not an assembly.
    fn telemetry_body(&self) -> Arc<[u8]> {
        let version = self.registry.changes.version();
        if let Some((v, body)) = &*self.telemetry_cache.borrow() {
            if *v == version {
                return body.clone();
            }
        }
        let body: Arc<[u8]> = self.telemetry_map().into();
        *self.telemetry_cache.borrow_mut() = Some((version, body.clone()));
        body
    }

    /// `{"id": telemetry, ...}` from the pre-rendered objects.
    fn telemetry_map(&self) -> Vec<u8> {
        let snaps = self.registry.snapshots();
        let mut out = Vec::with_capacity(64 + snaps.len() * 400);
        out.push(b'{');
        for (i, s) in snaps.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_json_str(&mut out, &s.id);
            out.push(b':');
            out.extend_from_slice(s.telemetry_json().as_bytes());
        }
        out.push(b'}');
        out
    }

    fn workers_map(&self) -> Value {
        let map: Map<String, Value> = self
            .registry
            .snapshots()
            .iter()
            .map(|s| {
                let basic = json!({
                    "worker_id": &*s.id,
                    "status": s.status(),
                    "is_active": s.is_active(),
                    "transport": s.transport,
                    "last_update": s.last_update,
                    "messages_processed": s.messages_processed,
                    "queue_depth": s.queue_depth,
                    "created_at": s.created_at,
                });
                (s.id.to_string(), basic)
            })
            .collect();
        Value::Object(map)
    }

    fn list(&self, query: &str) -> Response {
        let status = match status_filter(query) {
            Ok(s) => s,
            Err(resp) => return resp,
        };
        let snaps = self.registry.snapshots();
        let mut out = Vec::with_capacity(16 + snaps.len() * 400);
        out.push(b'[');
        let mut first = true;
        for s in snaps
            .iter()
            .filter(|s| status.as_deref().is_none_or(|st| s.has_status(st)))
        {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(s.telemetry_json().as_bytes());
        }
        out.push(b']');
        Response::json(200, out)
    }

    fn registry_map(&self) -> Value {
        let map: Map<String, Value> = self
            .registry
            .snapshots()
            .iter()
            .map(|s| {
                let t = serde_json::to_value(Telemetry::of(s)).unwrap_or(Value::Null);
                let entry = json!({
                    "id": &*s.id,
                    "status": s.status(),
                    "created_at": s.created_at,
                    "messages_processed": s.messages_processed,
                    "errors": s.errors,
                    "current_job": t["current_job"],
                    "resource_usage": t["resource_usage"],
                    "queue_depth": s.queue_depth,
                });
                (s.id.to_string(), entry)
            })
            .collect();
        Value::Object(map)
    }
}

/// Run metrics over every worker's window; uptime is the daemon's.
pub fn fleet_metrics(registry: &Registry, started: Instant) -> Value {
    let now = unix_ms();
    let mut runs = Vec::new();
    let mut totals = Totals::default();
    let handles = registry.handles();
    for h in &handles {
        let s = h.snapshot();
        totals.total += s.runs.total;
        totals.succeeded += s.runs.succeeded;
        totals.failed += s.runs.failed;
        totals.last_run_time = totals.last_run_time.max(s.runs.last_run_time);
        runs.extend(h.extra().runs.runs().copied());
    }
    let started = now.saturating_sub(started.elapsed().as_millis() as u64);
    let mut v = serde_json::to_value(runs::compute(runs.iter(), totals, started, now))
        .unwrap_or(Value::Null);
    v["workers"] = json!(handles.len());
    v
}

#[derive(Serialize, PartialEq)]
struct Health {
    status: &'static str,
    time: u64,
    uptime_seconds: u64,
    version: &'static str,
    workers: HealthWorkers,
    frames: HealthFrames,
    udp_kernel_drops: Option<u64>,
    connections: HealthConnections,
}

#[derive(Serialize, PartialEq)]
struct HealthWorkers {
    total: usize,
    active: usize,
    inactive: usize,
    terminated: usize,
    max: usize,
    threads: usize,
    evicted: u64,
    deleted: u64,
}

#[derive(Serialize, PartialEq)]
struct HealthFrames {
    received: u64,
    applied: u64,
    rejected: u64,
    dropped: u64,
    rejected_by_reason: ByReason<{ RejectReason::ALL.len() }>,
    dropped_by_reason: ByReason<{ DropReason::ALL.len() }>,
}

#[derive(Serialize, PartialEq)]
struct HealthConnections {
    tcp_open: usize,
    tcp_accepted: u64,
    tcp_closed_idle: u64,
    tcp_closed_superseded: u64,
    tcp_refused_full: u64,
    http_open: usize,
    http_refused_full: u64,
    ws_clients: usize,
    ws_accepted: u64,
    ws_closed_stalled: u64,
    ws_closed_ping: u64,
    ws_closed_too_big: u64,
}

/// Counters by reason, as a JSON object.
#[derive(PartialEq)]
struct ByReason<const N: usize>([(&'static str, u64); N]);

impl<const N: usize> Serialize for ByReason<N> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = ser.serialize_map(Some(N))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// One worker's run metrics: window from its thread's side state, totals
/// from its snapshot.
fn worker_metrics(h: &Handle, now: u64) -> runs::Metrics {
    let s = h.snapshot();
    let totals = Totals {
        total: s.runs.total,
        succeeded: s.runs.succeeded,
        failed: s.runs.failed,
        last_run_time: s.runs.last_run_time,
    };
    let extra = h.extra();
    runs::compute(extra.runs.runs(), totals, s.created_at, now)
}

/// Everything known of one worker: telemetry plus what the daemon observed.
fn details(s: &Snapshot) -> Map<String, Value> {
    let mut m = match serde_json::to_value(Telemetry::of(s)) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let hello = s.hello.as_deref().cloned().unwrap_or_default();
    let extra = json!({
        "pid": hello.pid,
        "hostname": hello.hostname,
        "capacity": hello.capacity,
        "transport": s.transport,
        "created_at": s.created_at,
        "first_seen": s.created_at,
        "seconds_since_last_frame": s.last_seen.elapsed().as_secs_f64(),
        "last_seq": s.last_seq,
        "missed_beats": s.missed_beats,
        "times_inactive": s.times_inactive,
        "errors": s.errors,
        "runs": {
            "total": s.runs.total,
            "succeeded": s.runs.succeeded,
            "failed": s.runs.failed,
            "last_duration_ms": s.runs.last_duration_ms,
            "last_run_time": s.runs.last_run_time,
        },
    });
    if let Value::Object(e) = extra {
        m.extend(e);
    }
    m
}

fn json_ok(v: &impl serde::Serialize) -> Response {
    Response::json(
        200,
        serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec()),
    )
}

fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Worker ids need no escaping; anything else goes through the serialiser.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::config::reload::Live;
    use crate::fleet::changes::Changes;
    use crate::fleet::worker::{Msg, Transport};
    use crate::serve::head::parse;
    use crate::stats::Stats;
    use std::time::Duration;

    fn api() -> Api {
        let cfg = config::defaults();
        Api::new(
            Arc::new(Registry::new(
                Arc::new(Stats::default()),
                Arc::new(Live::new(&cfg, 100)),
                Arc::new(Changes::default()),
            )),
            Instant::now(),
            None,
        )
    }

    fn call(api: &Api, method: &str, target: &str) -> (u16, Value, Response) {
        let head = format!("{method} {target} HTTP/1.1\r\n\r\n");
        let (req, _) = parse(head.as_bytes()).unwrap().unwrap();
        let resp = api.handle(&req, b"");
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
                .try_send(Msg::Frame(Box::new(f), Transport::Udp, Instant::now()))
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
        let a = api();
        beat(&a, r#"{"type":"heartbeat","worker_id":"w1","cpu_usage":1}"#);
        let first = a.telemetry_body();
        assert!(Arc::ptr_eq(&first, &a.telemetry_body()), "quiet fleet");
        beat(&a, r#"{"type":"heartbeat","worker_id":"w1","cpu_usage":2}"#);
        let (_, v, _) = call(&a, "GET", "/telemetry");
        assert_eq!(v["w1"]["cpu_usage"], 2.0);
        beat(&a, r#"{"type":"heartbeat","worker_id":"w2"}"#);
        let (_, v, _) = call(&a, "GET", "/telemetry");
        assert!(v["w2"].is_object(), "a new worker is listed at once");
        assert!(a.registry.remove("w2"));
        let (_, v, _) = call(&a, "GET", "/telemetry");
        assert!(v.get("w2").is_none(), "a removed worker is gone at once");
        assert!(!Arc::ptr_eq(&first, &a.telemetry_body()));
        a.registry.shutdown(Instant::now() + Duration::from_secs(5));
    }

    #[test]
    fn health_is_fresh_on_every_poll() {
        let a = api();
        let (_, v, first) = call(&a, "GET", "/health");
        assert_eq!(v["workers"]["total"], 0);
        let (_, _, again) = call(&a, "GET", "/health");
        assert_eq!(first.body, again.body);
        beat(&a, r#"{"type":"heartbeat","worker_id":"w1"}"#);
        let (_, v, _) = call(&a, "GET", "/health");
        assert_eq!(
            (
                v["workers"]["total"].as_u64(),
                v["workers"]["active"].as_u64()
            ),
            (Some(1), Some(1))
        );
        assert_eq!(v["frames"]["applied"], 1);
        a.registry.stats.frames_received.fetch_add(5, Relaxed);
        let (_, v, _) = call(&a, "GET", "/health");
        assert_eq!(v["frames"]["received"], 5);
        assert!(a.registry.remove("w1"));
        let (_, v, _) = call(&a, "GET", "/health");
        assert_eq!(v["workers"]["total"], 0);
        a.registry.shutdown(Instant::now() + Duration::from_secs(5));
    }

    #[test]
    fn every_listed_endpoint_is_routed() {
        let a = api();
        beat(&a, r#"{"type":"heartbeat","worker_id":"w1"}"#);
        // DELETE last: it forgets the worker the others read.
        let (deletes, reads): (Vec<_>, Vec<_>) =
            ENDPOINTS.iter().partition(|(m, _)| *m == "DELETE");
        for (method, path) in reads.into_iter().chain(deletes) {
            let target = path.replace("{id}", "w1");
            let (status, _, _) = call(&a, method, &target);
            assert!(status < 300, "{method} {target} -> {status}");
        }
        a.registry.shutdown(Instant::now() + Duration::from_secs(5));
    }

    #[test]
    fn endpoints() {
        let a = api();
        beat(
            &a,
            r#"{"type":"heartbeat","worker_id":"w2","status":"working","cpu_usage":50}"#,
        );
        beat(
            &a,
            r#"{"type":"heartbeat","worker_id":"w1","cpu_usage":12.5}"#,
        );

        let (s, v, _) = call(&a, "GET", "/health");
        assert_eq!(
            (s, v["status"].as_str(), v["workers"]["total"].as_u64()),
            (200, Some("healthy"), Some(2))
        );

        let (s, v, _) = call(&a, "GET", "/telemetry");
        assert_eq!(s, 200);
        assert_eq!(v["w1"]["cpu_usage"], 12.5);
        assert_eq!(v["w2"]["status"], "working");

        let (s, v, _) = call(&a, "GET", "/telemetry/w1");
        assert_eq!((s, v["worker_id"].as_str()), (200, Some("w1")));
        assert_eq!(call(&a, "GET", "/telemetry/nobody").0, 404);
        assert_eq!(call(&a, "GET", "/telemetry/bad%20id").0, 400);
        assert_eq!(call(&a, "GET", "/telemetry/registry").0, 404);

        let (_, v, _) = call(&a, "GET", "/api/workers");
        let ids: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["worker_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["w1", "w2"], "sorted by id");
        let (_, v, _) = call(&a, "GET", "/api/workers?status=working");
        assert_eq!(v.as_array().unwrap().len(), 1);
        assert_eq!(call(&a, "GET", "/api/workers?status=sleepy").0, 400);

        let (_, v, _) = call(&a, "GET", "/api/workers/registry");
        assert_eq!(v["w2"]["id"], "w2");
        assert_eq!(v["w2"]["messages_processed"], 1);

        let (_, v, _) = call(&a, "GET", "/workers");
        assert_eq!(v["w1"]["is_active"], true);

        let (s, v, _) = call(&a, "GET", "/api/workers/w1");
        assert_eq!((s, v["transport"].as_str()), (200, Some("udp")));
        assert!(v.get("missed_beats").is_some());

        let (s, v, resp) = call(&a, "GET", "/api/workers/snapshot/w1");
        assert_eq!(s, 200);
        assert_eq!(v["worker_id"], "w1");
        let cd = resp
            .headers
            .iter()
            .find(|(n, _)| *n == "Content-Disposition")
            .unwrap();
        assert!(cd.1.starts_with("attachment; filename=\"worker-w1-") && cd.1.ends_with(".json\""));

        let (s, _, resp) = call(&a, "POST", "/telemetry");
        assert_eq!(s, 405);
        assert!(
            resp.headers
                .iter()
                .any(|(n, v)| *n == "Allow" && v.contains("GET"))
        );
        let (s, _, resp) = call(&a, "OPTIONS", "/api/workers/w1");
        assert_eq!(s, 204);
        assert!(
            resp.headers
                .iter()
                .any(|(n, v)| *n == "Allow" && v.contains("DELETE"))
        );

        assert_eq!(call(&a, "DELETE", "/api/workers/w1").0, 204);
        assert_eq!(call(&a, "DELETE", "/api/workers/w1").0, 404);
        assert_eq!(call(&a, "GET", "/telemetry/w1").0, 404);
        assert_eq!(call(&a, "GET", "/nope").0, 404);
        let (s, v, _) = call(&a, "GET", "/nope");
        assert_eq!((s, v["error"].as_str()), (404, Some("not_found")));
        a.registry.shutdown(Instant::now() + Duration::from_secs(5));
    }
}
