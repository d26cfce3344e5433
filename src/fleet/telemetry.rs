//! The shared telemetry object (`GET /telemetry/{id}`, the items of
//! `/telemetry` and `/api/workers`, WebSocket updates) and the serde views
//! of a snapshot's nested parts. Rendered once per snapshot by
//! [`Snapshot::telemetry_json`].

use super::snapshot::Snapshot;
use crate::proto::{CurrentJob, Labels, ResourceUsage};
use serde::Serialize;
use serde_json::Value;

/// The shared telemetry object: `GET /telemetry`'s values and the items of
/// `GET /api/workers`.
#[derive(Serialize)]
pub struct Telemetry<'a> {
    worker_id: &'a str,
    status: crate::proto::Status,
    is_active: bool,
    cpu_usage: Option<f64>,
    memory_usage: Option<f64>,
    gpu_usage: Option<f64>,
    /// Always an object: `{}` until the worker reports any figure.
    resource_usage: &'a ResourceUsage,
    queue_depth: u64,
    current_job: Option<JobView<'a>>,
    running_tasks: &'a [Value],
    labels: &'a Labels,
    last_update: u64,
    messages_processed: u64,
    /// Present (true) only while a restored worker has sent nothing new.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    restored: bool,
    /// In cluster mode, the node that holds the worker's session.
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
}

impl<'a> Telemetry<'a> {
    pub fn of(s: &'a Snapshot) -> Telemetry<'a> {
        Telemetry {
            worker_id: &s.id,
            status: s.status(),
            is_active: s.is_active(),
            cpu_usage: s.cpu_usage,
            memory_usage: s.memory_usage,
            gpu_usage: s.gpu_usage,
            resource_usage: s.usage(),
            queue_depth: s.queue_depth,
            current_job: s.current_job.as_deref().map(JobView),
            running_tasks: &s.running_tasks,
            labels: &s.labels,
            last_update: s.last_update,
            messages_processed: s.messages_processed,
            restored: s.restored,
            node: s.node.as_deref(),
        }
    }
}

/// `current_job` as workers report it.
pub struct JobView<'a>(pub &'a CurrentJob);

impl Serialize for JobView<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let j = self.0;
        let mut m = ser.serialize_map(None)?;
        m.serialize_entry("id", &j.id)?;
        m.serialize_entry("type", &j.kind)?;
        m.serialize_entry("files", &j.files)?;
        m.serialize_entry("started_at", &j.started_at)?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::snapshot::Transport;
    use crate::fleet::snapshot::tests::{frame, fresh};
    use std::time::Instant;

    #[test]
    fn telemetry_renders_the_contract_fields() {
        let mut s = fresh();
        s.apply(
            frame(r#"{"type":"heartbeat","worker_id":"w1","cpu_usage":12.5,"resource_usage":{"rss_mb":3},"labels":{"pool":"scan"}}"#),
            Transport::Udp,
            Instant::now(),
        );
        let v: Value = serde_json::from_str(s.telemetry_json()).unwrap();
        for key in [
            "worker_id",
            "status",
            "is_active",
            "cpu_usage",
            "memory_usage",
            "gpu_usage",
            "resource_usage",
            "queue_depth",
            "current_job",
            "running_tasks",
            "labels",
            "last_update",
            "messages_processed",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["cpu_usage"], 12.5);
        assert_eq!(v["gpu_usage"], Value::Null, "never a made-up 0");
        assert_eq!(v["resource_usage"], serde_json::json!({"rss_mb": 3.0}));
        assert_eq!(v["labels"]["pool"], "scan");
    }

    #[test]
    fn resource_usage_is_an_object_before_any_is_reported() {
        let v: Value = serde_json::from_str(fresh().telemetry_json()).unwrap();
        assert_eq!(v["resource_usage"], serde_json::json!({}));
        assert_eq!(v["labels"], serde_json::json!({}));
        assert_eq!(v["current_job"], Value::Null);
    }
}
