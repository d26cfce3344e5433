//! The tRPC interface: its users read run metrics through tRPC's
//! `worker.metrics` query, so `GET /trpc/worker.metrics` answers as a tRPC
//! server does over HTTP (no transformer): `?input=` is URL-encoded JSON,
//! `{"workerId":"…"}` for one worker or nothing for the fleet; the answer is
//! `{"result":{"data":{…}}}` with the camelCase fields tRPC clients read, and an error
//! is tRPC's `{"error":{"message","code","data":{"code","httpStatus","path"}}}`.
//! `?batch=1` with procedures joined by commas and `input` as
//! `{"0":…,"1":…}` answers an array, 207 when the statuses differ.
//!
//! Pure: a path, a query and the registry in, a [`Response`] out.

use super::head::{Response, percent_decode, query_param};
use super::views;
use crate::clock::iso_ms;
use crate::fleet::registry::Registry;
use crate::fleet::runs::Metrics;
use crate::proto::{WorkerId, check_worker_id};
use serde_json::{Map, Value, json};
use std::time::Instant;

/// A tRPC error: its code name, HTTP status and message.
#[derive(Debug, PartialEq)]
pub struct Error {
    code: &'static str,
    status: u16,
    message: String,
}

impl Error {
    fn new(code: &'static str, message: impl Into<String>) -> Error {
        let status = match code {
            "PARSE_ERROR" | "BAD_REQUEST" => 400,
            "NOT_FOUND" => 404,
            "METHOD_NOT_SUPPORTED" => 405,
            _ => 500,
        };
        Error {
            code,
            status,
            message: message.into(),
        }
    }

    /// tRPC's JSON-RPC number for the code.
    fn number(&self) -> i32 {
        match self.code {
            "PARSE_ERROR" => -32700,
            "BAD_REQUEST" => -32600,
            "NOT_FOUND" => -32004,
            "METHOD_NOT_SUPPORTED" => -32005,
            _ => -32603,
        }
    }

    fn body(&self, path: &str) -> Value {
        json!({"error": {
            "message": self.message,
            "code": self.number(),
            "data": {"code": self.code, "httpStatus": self.status, "path": path},
        }})
    }
}

/// One call a request names: its procedure path, and the worker its input
/// names (`None`: the fleet) or why the input is refused.
pub type Call = (String, Result<Option<WorkerId>, Error>);

/// The calls in `GET /trpc/{procedures}?{query}`, and whether it is a batch.
/// Pure: the parser of what a client sends.
pub fn calls(procedures: &str, query: &str) -> (bool, Vec<Call>) {
    let procedures = percent_decode(procedures).unwrap_or_default();
    let batch = query_param(query, "batch").is_some_and(|b| b == "1" || b == "true");
    let input = match raw_input(query) {
        Ok(v) => v,
        Err(e) => return (batch, vec![(procedures.to_string(), Err(e))]),
    };
    if !batch {
        return (false, vec![(procedures.to_string(), worker_of(input))]);
    }
    let calls = procedures
        .split(',')
        .enumerate()
        .map(|(i, p)| {
            let arg = match &input {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Object(m)) => Ok(m.get(&i.to_string()).cloned()),
                Some(_) => Err(Error::new(
                    "BAD_REQUEST",
                    "a batch's input is an object keyed by call index",
                )),
            };
            (p.to_string(), arg.and_then(worker_of))
        })
        .collect();
    (true, calls)
}

/// `GET /trpc/{procedures}?…`.
pub fn query(procedures: &str, query: &str, registry: &Registry, started: Instant) -> Response {
    let (batch, calls) = calls(procedures, query);
    let answers = calls
        .into_iter()
        .map(|(path, worker)| {
            let r = worker.and_then(|w| call(&path, w, registry, started));
            (path, r)
        })
        .collect();
    answer(answers, batch)
}

/// The answer to a query sent with another method.
pub fn method_not_supported(procedures: &str) -> Response {
    let e = Error::new("METHOD_NOT_SUPPORTED", "worker.metrics is a query: use GET");
    Response::json(e.status, e.body(procedures).to_string().into_bytes())
        .with_header("Allow", "GET, HEAD, OPTIONS")
}

/// `input`, parsed; absent is `None`.
fn raw_input(query: &str) -> Result<Option<Value>, Error> {
    let present = query
        .split('&')
        .any(|p| p.split('=').next() == Some("input"));
    if !present {
        return Ok(None);
    }
    let text = query_param(query, "input")
        .ok_or_else(|| Error::new("PARSE_ERROR", "input has broken percent-encoding"))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::new("PARSE_ERROR", format!("input is not JSON: {e}")))
}

fn call(
    procedure: &str,
    worker: Option<WorkerId>,
    registry: &Registry,
    started: Instant,
) -> Result<Value, Error> {
    if procedure != "worker.metrics" {
        return Err(Error::new(
            "NOT_FOUND",
            format!("No \"query\"-procedure on path \"{procedure}\""),
        ));
    }
    match worker {
        None => {
            let f = views::fleet_metrics(registry, started);
            let mut m = camel(&f.runs);
            m.insert("workers".into(), json!(f.workers));
            Ok(Value::Object(m))
        }
        Some(id) => {
            let h = registry
                .shown(&id)
                .ok_or_else(|| Error::new("NOT_FOUND", format!("No worker \"{id}\"")))?;
            let mut m = camel(&views::worker_metrics(&h, crate::clock::unix_ms()));
            m.insert("workerId".into(), json!(&*id));
            Ok(Value::Object(m))
        }
    }
}

/// `{"workerId": "…"}` names one worker; nothing, `null` or `{}` the fleet.
fn worker_of(input: Option<Value>) -> Result<Option<WorkerId>, Error> {
    let bad = |m: &str| Error::new("BAD_REQUEST", m);
    match input {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => match m.get("workerId") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(id)) => check_worker_id(id)
                .map(|()| Some(WorkerId::from(id.as_str())))
                .map_err(|_| bad("workerId must be 1-128 bytes of A-Za-z0-9._:@-")),
            Some(_) => Err(bad("workerId must be a string")),
        },
        Some(_) => Err(bad("input must be an object like {\"workerId\":\"w1\"}")),
    }
}

/// The tRPC clients' field names. Times are ISO 8601 (a `Date` in JSON);
/// durations are milliseconds, 0 with no runs, as those clients expect.
fn camel(m: &Metrics) -> Map<String, Value> {
    let ms = |x: Option<f64>| x.unwrap_or(0.0);
    let v = json!({
        "uptime": m.uptime,
        "uptimeSeconds": m.uptime_seconds,
        "totalRuns": m.total_runs,
        "successRate": m.success_rate,
        "errorRate": m.error_rate,
        "runsPerHour": m.runs_per_hour,
        "avgExecutionTime": ms(m.avg_execution_ms),
        "minExecutionTime": ms(m.min_execution_ms),
        "maxExecutionTime": ms(m.max_execution_ms),
        "p50ExecutionTime": m.p50_execution_ms,
        "p95ExecutionTime": m.p95_execution_ms,
        "p99ExecutionTime": m.p99_execution_ms,
        "succeeded": m.succeeded,
        "failed": m.failed,
        "windowRuns": m.window_runs,
        "workerStartTime": iso_ms(m.worker_start_time),
        "lastRunTime": m.last_run_time.map(iso_ms),
        "timestamp": iso_ms(m.timestamp),
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn answer(calls: Vec<(String, Result<Value, Error>)>, batch: bool) -> Response {
    let status = |r: &Result<Value, Error>| r.as_ref().map_or_else(|e| e.status, |_| 200);
    let first = calls.first().map_or(200, |(_, r)| status(r));
    let same = calls.iter().all(|(_, r)| status(r) == first);
    let items: Vec<Value> = calls
        .iter()
        .map(|(path, r)| match r {
            Ok(data) => json!({"result": {"data": data}}),
            Err(e) => e.body(path),
        })
        .collect();
    let (code, body) = if batch {
        (if same { first } else { 207 }, Value::Array(items))
    } else {
        (first, items.into_iter().next().unwrap_or(Value::Null))
    };
    Response::json(code, body.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_name_a_worker_or_the_fleet() {
        assert_eq!(worker_of(None), Ok(None));
        assert_eq!(worker_of(Some(json!({}))), Ok(None));
        assert_eq!(
            worker_of(Some(json!({"workerId": "w1"}))),
            Ok(Some(WorkerId::from("w1")))
        );
        for bad in [
            json!("w1"),
            json!({"workerId": 7}),
            json!({"workerId": "a b"}),
        ] {
            assert_eq!(worker_of(Some(bad)).unwrap_err().code, "BAD_REQUEST");
        }
    }

    #[test]
    fn bad_input_is_a_parse_error() {
        assert_eq!(raw_input("batch=1").unwrap(), None);
        assert_eq!(raw_input("input=%7B%7D").unwrap(), Some(json!({})));
        assert_eq!(raw_input("input={").unwrap_err().code, "PARSE_ERROR");
        assert_eq!(raw_input("input=%zz").unwrap_err().code, "PARSE_ERROR");
    }

    #[test]
    fn errors_have_trpcs_shape() {
        let e = Error::new("NOT_FOUND", "No worker \"w9\"");
        assert_eq!(
            e.body("worker.metrics"),
            json!({"error": {"message": "No worker \"w9\"", "code": -32004,
                "data": {"code": "NOT_FOUND", "httpStatus": 404, "path": "worker.metrics"}}})
        );
        assert_eq!(Error::new("BAD_REQUEST", "x").number(), -32600);
        assert_eq!(Error::new("PARSE_ERROR", "x").status, 400);
    }

    #[test]
    fn batches_give_each_call_its_own_input() {
        let (batch, c) = calls(
            "worker.metrics%2Cworker.metrics",
            "batch=1&input=%7B%221%22%3A%7B%22workerId%22%3A%22w2%22%7D%7D",
        );
        assert!(batch);
        assert_eq!(c[0], ("worker.metrics".into(), Ok(None)));
        assert_eq!(
            c[1],
            ("worker.metrics".into(), Ok(Some(WorkerId::from("w2"))))
        );
        let (batch, c) = calls("worker.metrics", "input=%5B%5D");
        assert!(!batch);
        assert_eq!(c[0].1.as_ref().unwrap_err().code, "BAD_REQUEST");
    }

    #[test]
    fn mixed_batches_answer_207() {
        let r = answer(
            vec![
                ("worker.metrics".into(), Ok(json!({}))),
                ("nope".into(), Err(Error::new("NOT_FOUND", "no"))),
            ],
            true,
        );
        assert_eq!(r.status, 207);
    }
}
