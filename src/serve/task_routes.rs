//! The task endpoints: submit, list, show, cancel, logs, and a
//! worker's tasks. A submission is answered once the journal has it: the
//! response waits on a ticket that the journal thread settles, and the
//! connection sends it then (the loop is never blocked on a disk).

use super::access::Who;
use super::conn::Reply;
use super::head::{Request, Response, query_param};
use super::routes::json_ok;
use super::ticket::{Later, Outcome};
use crate::config::{Config, Role};
use crate::tasks::admin::NotMade;
use crate::tasks::bulk;
use crate::tasks::filter::Filter;
use crate::tasks::journal::{Ack, Clash, Kept};
use crate::tasks::schedule;
use crate::tasks::task::{self, Task, TaskId};
use crate::tasks::{Refused, Submission, Submitted, Tasks};
use serde_json::json;

/// Tasks a list answers at most, and by default.
const MAX_LIMIT: usize = 1000;
const DEFAULT_LIMIT: usize = 100;

pub fn not_found() -> Response {
    Response::error(404, "not_found", "no such task")
}

/// A task's answer to a submission: 201 for a new one, 200 for the one
/// an earlier submission with the same `Idempotency-Key` made.
fn made(t: &Task, new: bool) -> Response {
    let mut r = json_ok(&t.shown()).with_header("Location", format!("/api/tasks/{}", t.id));
    if new {
        r.status = 201;
    } else {
        r = r.with_header("Idempotent-Replayed", "true");
    }
    r
}

/// 409: a task not ended holds the submission's `unique_key`.
fn unique_taken(id: TaskId) -> Response {
    let body = json!({
        "error": "unique_key_taken",
        "message": format!("task {id} has this unique_key and has not ended"),
        "task_id": id,
    });
    Response::json(409, body.to_string().into_bytes())
}

/// `POST /api/tasks`: 201 with the task and `Location`, once on disk.
pub fn submit(tasks: &Tasks, body: &[u8], req: &Request, cfg: &Config, later: &Later) -> Reply {
    let key = req.idempotency_key.as_deref().map(str::trim);
    if key.is_some_and(|k| !task::valid_key(k)) {
        return Reply::Now(Response::error(
            400,
            "bad_task",
            &format!(
                "Idempotency-Key: one header of 1-{} printable ASCII characters",
                task::MAX_KEY
            ),
        ));
    }
    let (ticket, settler) = later.ticket();
    let ack: Ack = Box::new(move |kept| {
        settler.settle(match kept {
            Kept::Stored => Outcome::Done,
            Kept::NotStored => Outcome::Failed,
            Kept::Taken(t, Clash::Idempotency) => Outcome::Instead(Box::new(made(&t, false))),
            Kept::Taken(t, Clash::Unique) => Outcome::Instead(Box::new(unique_taken(t.id))),
            Kept::Unknown(d) => Outcome::Instead(Box::new(Response::error(
                400,
                "bad_task",
                &format!("depends_on: no task {d}"),
            ))),
        })
    });
    let s = Submission {
        body,
        trace: task::trace_context(req.traceparent.as_deref(), req.tracestate.as_deref()),
        idempotency_key: key.map(str::to_string),
        submitted_by: Some(req.who.name.to_string()),
    };
    let r = match tasks.submit(s, cfg, ack) {
        Ok(Submitted::New(t)) => return Reply::Later(ticket, made(&t, true)),
        Ok(Submitted::Repeat(t)) => made(&t, false),
        Err(Refused::Unique(id)) => unique_taken(id),
        Err(Refused::Bad(b)) => Response::error(400, "bad_task", &format!("{}: {}", b.0, b.1)),
        Err(Refused::TooLarge(max)) => Response::error(
            413,
            "task_too_large",
            &format!("a task is at most max_task_bytes={max}"),
        ),
        Err(Refused::Full(max)) => Response::error(
            503,
            "too_many_tasks",
            &format!("max_tasks={max} unfinished tasks are kept"),
        )
        .with_header("Retry-After", "1"),
        Err(Refused::Unavailable(why)) => {
            Response::error(503, "cluster_unavailable", why).with_header("Retry-After", "1")
        }
    };
    Reply::Now(r)
}

/// `GET /api/tasks`: a [`Filter`] (`?state=`, `?type=`, `?worker_id=`,
/// `?label=`, the created and finished ranges, `?q=`), `?limit=`, and the
/// cursor `?after=` (the `next_after` of the page before).
pub fn list(tasks: &Tasks, query: &str) -> Response {
    let filter = match Filter::read(|k| query_param(query, k)) {
        Ok(f) => f,
        Err(b) => return bad_filter(&b),
    };
    let limit = match query_param(query, "limit").map(|v| v.parse::<usize>()) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => return Response::error(400, "bad_limit", "limit is 1 to 1000"),
    };
    let after = match query_param(query, "after") {
        None => None,
        Some(a) => match TaskId::parse(&a) {
            Some(id) => Some(id),
            None => return Response::error(400, "bad_after", "after is a task id"),
        },
    };
    let page = tasks.list(|t: &Task| filter.matches(t), after, limit);
    let next = (page.len() == limit)
        .then(|| page.last().map(|t| t.id))
        .flatten();
    json_ok(&json!({"tasks": task::shown(&page), "next_after": next}))
}

pub fn show(tasks: &Tasks, id: TaskId) -> Response {
    tasks
        .get(id)
        .map_or_else(not_found, |t| json_ok(&t.shown()))
}

/// `DELETE /api/tasks/{id}`: the task as it is after the cancel (queued
/// ones are `cancelled`; held ones say when the cancel was asked).
pub fn cancel(tasks: &Tasks, id: TaskId, who: &Who) -> Response {
    if !who.may(Role::Operate) {
        match tasks.get(id) {
            None => return not_found(),
            Some(t) if t.submitted_by.as_deref() == Some(&*who.name) => {}
            Some(_) => {
                return who.lacks(Role::Operate, "cancelling a task another token submitted");
            }
        }
    }
    tasks
        .cancel(id)
        .map_or_else(not_found, |t| json_ok(&t.shown()))
}

/// `POST /api/tasks/{id}/retry`: the task in a fresh cycle (attempt 1,
/// queued); 409 when it has not ended, or ended in success, or when
/// another task not ended holds its `unique_key` (named as a submission's
/// 409 names it).
pub fn retry(tasks: &Tasks, id: TaskId) -> Response {
    match tasks.retry(id) {
        None => not_found(),
        Some(Ok(t)) => json_ok(&t.shown()),
        Some(Err(t)) if t.state().is_retryable_end() => {
            match t.unique_key.as_deref().and_then(|k| tasks.unique_holder(k)) {
                Some(holder) => unique_taken(holder),
                // Let go of between the two looks: try again.
                None => Response::error(
                    409,
                    "not_retryable",
                    "the task that held its unique_key has just ended: retry it again",
                ),
            }
        }
        Some(Err(t)) => Response::error(
            409,
            "not_retryable",
            &format!(
                "task {id} is {}: only a failed, dead, cancelled or timed-out task is retried",
                t.state().as_str()
            ),
        ),
    }
}

/// 400 for a filter that does not read: `bad_state` for its state, as
/// before there were other keys, `bad_filter` for the rest.
fn bad_filter(b: &task::BadField) -> Response {
    let code = if b.0 == "state" {
        "bad_state"
    } else {
        "bad_filter"
    };
    Response::error(400, code, &format!("{}: {}", b.0, b.1))
}

/// `POST /api/tasks/bulk`: `{"action": "cancel"|"retry"|"delete"}` with
/// `"ids": [...]` or `"filter": {...}` (the list's keys); 200 with what it
/// did. Logged, with who asked.
pub fn bulk(tasks: &Tasks, body: &[u8], req: &Request) -> Response {
    let (action, which) = match bulk::parse(body) {
        Ok(b) => b,
        Err(b) => return Response::error(400, "bad_bulk", &format!("{}: {}", b.0, b.1)),
    };
    let done = tasks.bulk(action, &which);
    log::info!(
        "bulk {}: {} of {} tasks changed{}, asked by {}",
        done.action,
        done.changed,
        done.matched,
        if done.more { " (more match)" } else { "" },
        req.peer.map_or_else(|| "?".to_string(), |p| p.to_string())
    );
    json_ok(&done)
}

/// A path segment that names a task type: 1-128 bytes once decoded.
pub fn kind(segment: &str) -> Result<String, Response> {
    match super::head::percent_decode(segment) {
        Some(k) if !k.is_empty() && k.len() <= crate::proto::task::MAX_TASK_TYPE => {
            Ok(k.into_owned())
        }
        _ => Err(Response::error(
            400,
            "bad_type",
            "a task type is 1-128 bytes (percent-encoded in a path)",
        )),
    }
}

/// `POST /api/queues/{type}/pause|resume`: the queue as it is now. A
/// paused type's tasks are not dispatched (on any node); running ones go
/// on; submissions are still taken.
pub fn pause(tasks: &Tasks, kind: &str, paused: bool) -> Response {
    tasks.pause(kind, paused);
    let queued = tasks
        .queues()
        .into_iter()
        .find(|q| q.kind == kind)
        .map_or(0, |q| q.queued);
    json_ok(&json!({"type": kind, "paused": paused, "queued": queued}))
}

/// `GET /api/tasks/{id}/logs`: lines from `?since=` (an offset in lines),
/// as text (one per line) or, with `Accept: application/json`, as JSON
/// with the offset to ask from next.
pub fn logs(tasks: &Tasks, id: TaskId, req: &Request) -> Response {
    let since = match query_param(&req.query, "since").map(|v| v.parse::<u64>()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return Response::error(400, "bad_since", "since is a line offset"),
    };
    let Some((lines, next)) = tasks.logs(id, since) else {
        return not_found();
    };
    let as_json = req
        .accept
        .as_deref()
        .is_some_and(|a| a.contains("application/json"));
    if as_json {
        return json_ok(&json!({"task_id": id, "lines": lines, "next": next}));
    }
    let mut body = String::new();
    for l in &lines {
        body.push_str(l);
        body.push('\n');
    }
    Response {
        status: 200,
        content_type: "text/plain; charset=utf-8",
        body: body.into_bytes().into(),
        ..Response::default()
    }
    .with_header("X-Next-Offset", next.to_string())
}

/// `GET /api/workers/{id}/tasks`: the tasks it holds or held, newest first.
pub fn of_worker(tasks: &Tasks, worker: &str, query: &str) -> Response {
    let limit = match query_param(query, "limit").map(|v| v.parse::<usize>()) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => return Response::error(400, "bad_limit", "limit is 1 to 1000"),
    };
    let held = tasks.of_worker(worker, limit);
    json_ok(&json!({"worker_id": worker, "tasks": task::shown(&held)}))
}

/// A path segment that names a schedule.
pub fn schedule_name(segment: &str) -> Result<String, Response> {
    match super::head::percent_decode(segment) {
        Some(n) if schedule::valid_name(&n) => Ok(n.into_owned()),
        _ => Err(Response::error(
            400,
            "bad_name",
            "a schedule name is 1-128 of A-Z a-z 0-9 . _ : -",
        )),
    }
}

fn no_schedule() -> Response {
    Response::error(404, "not_found", "no such schedule")
}

/// `POST /api/schedules`: 201 with a new schedule, 200 with one changed
/// (its record of ticks kept); 400 naming the bad field.
pub fn schedule_put(tasks: &Tasks, body: &[u8]) -> Response {
    let (s, _) = match schedule::parse(body, crate::clock::unix_ms()) {
        Ok(s) => s,
        Err(b) => return Response::error(400, "bad_schedule", &format!("{}: {}", b.0, b.1)),
    };
    let name = s.name.clone();
    match tasks.schedule_put(s) {
        Ok((view, new)) => {
            let mut r = json_ok(&view).with_header("Location", format!("/api/schedules/{name}"));
            if new {
                r.status = 201;
            }
            r
        }
        Err(NotMade::Full) => Response::error(
            409,
            "too_many_schedules",
            &format!("{} schedules are kept already", schedule::MAX_SCHEDULES),
        ),
        Err(NotMade::Bad) => Response::error(400, "bad_schedule", "its timing does not parse"),
    }
}

pub fn schedules(tasks: &Tasks) -> Response {
    json_ok(&json!({"schedules": tasks.schedules()}))
}

pub fn schedule_show(tasks: &Tasks, name: &str) -> Response {
    tasks
        .schedule(name)
        .map_or_else(no_schedule, |v| json_ok(&v))
}

pub fn schedule_delete(tasks: &Tasks, name: &str) -> Response {
    tasks
        .unschedule(name)
        .map_or_else(no_schedule, |v| json_ok(&v))
}

pub fn schedule_pause(tasks: &Tasks, name: &str, paused: bool) -> Response {
    tasks
        .schedule_pause(name, paused)
        .map_or_else(no_schedule, |v| json_ok(&v))
}

pub fn limits(tasks: &Tasks) -> Response {
    json_ok(&json!({"limits": tasks.limits()}))
}

/// `PUT /api/limits`: one limit set, or removed; 200 with every limit.
pub fn set_limit(tasks: &Tasks, body: &[u8]) -> Response {
    let (scope, limit) = match crate::tasks::limit::parse(body) {
        Ok(l) => l,
        Err(b) => return Response::error(400, "bad_limit", &format!("{}: {}", b.0, b.1)),
    };
    if !tasks.set_limit(scope, limit) {
        return Response::error(
            409,
            "too_many_limits",
            &format!(
                "{} limits are kept already",
                crate::tasks::limit::MAX_LIMITS
            ),
        );
    }
    limits(tasks)
}
