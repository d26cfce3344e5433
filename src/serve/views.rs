//! What the read endpoints show of workers: the fleet maps and lists, one
//! worker's details, run metrics and history, and the snapshot download.
//! Pure rendering from snapshots and series; no socket, no lock held while
//! serialising (a worker's series is copied out first).

use super::head::{Response, query_param};
use super::routes::json_ok;
use crate::clock::unix_ms;
use crate::fleet::registry::Registry;
use crate::fleet::runs::{self, Totals};
use crate::fleet::snapshot::Snapshot;
use crate::fleet::telemetry::Telemetry;
use crate::fleet::worker::{Handle, Published};
use crate::proto::StatusFilter;
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::time::Instant;

/// The `?status=` query parameter, checked; shared by the REST list and the
/// WebSocket streams.
pub fn status_filter(query: &str) -> Result<Option<StatusFilter>, Response> {
    match query_param(query, "status") {
        None => Ok(None),
        Some(st) => StatusFilter::parse(&st).map(Some).ok_or_else(|| {
            Response::error(
                400,
                "bad_status",
                &format!("status must be one of {}", StatusFilter::choices()),
            )
        }),
    }
}

/// `{"id": telemetry, ...}` from the pre-rendered objects.
pub fn telemetry_map(registry: &Registry) -> Vec<u8> {
    let snaps = registry.fleet();
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

pub fn workers_map(registry: &Registry) -> Value {
    let map: Map<String, Value> = registry
        .snapshots()
        .iter()
        .map(|s| {
            let mut basic = json!({
                "worker_id": &*s.id,
                "status": s.status(),
                "is_active": s.is_active(),
                "transport": s.transport,
                "last_update": s.last_update,
                "messages_processed": s.messages_processed,
                "queue_depth": s.queue_depth,
                "created_at": s.created_at,
            });
            if let Some(n) = &s.node {
                basic["node"] = json!(&**n);
            }
            (s.id.to_string(), basic)
        })
        .collect();
    Value::Object(map)
}

pub fn list(registry: &Registry, query: &str) -> Response {
    let status = match status_filter(query) {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let snaps = registry.fleet();
    let mut out = Vec::with_capacity(16 + snaps.len() * 400);
    out.push(b'[');
    let mut first = true;
    for s in snaps
        .iter()
        .filter(|s| status.is_none_or(|st| s.has_status(st)))
    {
        if !first {
            out.push(b',');
        }
        first = false;
        // The telemetry object, and where the worker is: its transport and
        // the hostname its hello gave (`muster workers --wide`).
        let t = s.telemetry_json();
        out.extend_from_slice(&t.as_bytes()[..t.len() - 1]);
        out.extend_from_slice(b",\"transport\":\"");
        out.extend_from_slice(s.transport.as_str().as_bytes());
        out.push(b'"');
        if let Some(h) = s.hello.as_ref().and_then(|h| h.hostname.as_ref()) {
            out.extend_from_slice(b",\"hostname\":");
            out.extend_from_slice(serde_json::to_string(h).unwrap_or_default().as_bytes());
        }
        out.push(b'}');
    }
    out.push(b']');
    Response::json(200, out)
}

pub fn registry_map(registry: &Registry) -> Value {
    let map: Map<String, Value> = registry
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

/// `/api/metrics`: run metrics over every worker's window, and how many
/// workers they cover.
#[derive(Serialize)]
pub struct FleetMetrics {
    pub workers: usize,
    #[serde(flatten)]
    pub runs: runs::Metrics,
}

/// Run metrics over every worker's window; uptime is the daemon's.
pub fn fleet_metrics(registry: &Registry, started: Instant) -> FleetMetrics {
    let now = unix_ms();
    let mut runs = Vec::new();
    let mut totals = Totals::default();
    let handles = registry.handles();
    for h in &handles {
        let p = h.read();
        let s = &p.snapshot;
        totals.total += s.runs.total;
        totals.succeeded += s.runs.succeeded;
        totals.failed += s.runs.failed;
        totals.last_run_time = totals.last_run_time.max(s.runs.last_run_time);
        runs.extend(p.series.runs.runs().copied());
    }
    let started = now.saturating_sub(started.elapsed().as_millis() as u64);
    FleetMetrics {
        workers: handles.len(),
        runs: runs::compute(runs.iter(), totals, started, now),
    }
}

/// One worker's run metrics: the window from its series, the totals from
/// the snapshot published with it.
pub fn worker_metrics(h: &Handle, now: u64) -> runs::Metrics {
    metrics_of(&h.read(), now)
}

fn metrics_of(p: &Published, now: u64) -> runs::Metrics {
    let s = &p.snapshot;
    let totals = Totals {
        total: s.runs.total,
        succeeded: s.runs.succeeded,
        failed: s.runs.failed,
        last_run_time: s.runs.last_run_time,
    };
    runs::compute(p.series.runs.runs(), totals, s.created_at, now)
}

/// Everything known of one worker: telemetry plus what the daemon observed.
/// `heard`: when the worker was last heard, if later than its snapshot
/// says (a quiet beat not yet applied: [`crate::fleet::inbox`]).
pub fn details(s: &Snapshot, heard: Option<Instant>) -> Map<String, Value> {
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
        "seconds_since_last_frame": heard.unwrap_or(s.last_seen).max(s.last_seen).elapsed().as_secs_f64(),
        "last_seq": s.last_seq,
        "missed_beats": s.missed_beats,
        "seq_restarts": s.seq_restarts,
        "seq_jumps": s.seq_jumps,
        "times_inactive": s.times_inactive,
        "errors": s.errors,
        "restored": s.restored,
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

/// `GET /api/workers/{id}/history`: samples since `?since=` (Unix ms).
pub fn history(h: &Handle, id: &str, query: &str) -> Response {
    let since = match query_param(query, "since").map(|v| v.parse::<u64>()) {
        None => 0,
        Some(Ok(ms)) => ms,
        Some(Err(_)) => return Response::error(400, "bad_since", "since is Unix milliseconds"),
    };
    let samples = h.read().series.history.since(since);
    json_ok(&json!({"worker_id": id, "samples": samples}))
}

/// `GET /api/workers/snapshot/{id}`: the worker's details, run metrics and
/// history as one download, all from one reading of the worker.
pub fn download(h: &Handle, id: &str) -> Response {
    let now = unix_ms();
    let (snap, samples, metrics) = {
        let p = h.read();
        (
            p.snapshot.clone(),
            p.series.history.since(0),
            metrics_of(&p, now),
        )
    };
    let mut d = details(&snap, h.inbox.heard());
    d.insert("snapshot_time".into(), json!(now));
    d.insert(
        "metrics".into(),
        serde_json::to_value(metrics).unwrap_or(Value::Null),
    );
    d.insert(
        "history".into(),
        serde_json::to_value(samples).unwrap_or(Value::Null),
    );
    json_ok(&d).with_header(
        "Content-Disposition",
        format!("attachment; filename=\"worker-{id}-{now}.heapsnapshot\""),
    )
}
