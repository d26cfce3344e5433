//! The task book's settings: how the journal syncs, how many tasks and how
//! large, how long they are kept, and the deadlines of held ones.

use super::Fsync;
use super::setting::{area, name_of, one_of};
use super::units::{fmt_duration, parse_count, parse_duration, parse_size, positive};
use std::time::Duration;

const FSYNC: [(&str, Fsync); 3] = [
    ("always", Fsync::Always),
    ("batch", Fsync::Batch),
    ("off", Fsync::Off),
];

area! {
    /// Tasks.
    pub struct Tasks in tasks {
        fsync: Fsync = "task_fsync", "always", Text, live,
            "task journal sync: always (a 201 is on disk), batch (every 10 ms) or off",
            |v| one_of(v, &FSYNC), |f: &Fsync| name_of(f, &FSYNC);
        max_tasks: usize = "max_tasks", "100000", Count, live,
            "tasks kept at most, queued, running and finished (503 beyond it)",
            |v| parse_count(v, 1, 100_000_000), |n: &usize| n.to_string();
        /// A submission is one HTTP body: at most 1 MiB.
        max_task_bytes: usize = "max_task_bytes", "64KiB", Bytes, live,
            "largest task submission (413 beyond it)",
            |v| parse_size(v, 16, 1 << 20), |n: &usize| n.to_string();
        retention: Duration = "task_retention", "24h", Duration, live,
            "how long finished tasks are kept",
            |v| positive(parse_duration(v)?), |d: &Duration| fmt_duration(*d);
        log_bytes: usize = "task_log_bytes", "64KiB", Bytes, live,
            "log kept per task; older lines are dropped, counted",
            |v| parse_size(v, 256, 1 << 30), |n: &usize| n.to_string();
        ack_timeout: Duration = "task_ack_timeout", "10s", Duration, live,
            "a task sent to a worker and not reported running this long is requeued",
            |v| positive(parse_duration(v)?), |d: &Duration| fmt_duration(*d);
        cancel_grace: Duration = "task_cancel_grace", "10s", Duration, live,
            "a cancelled task the worker does not confirm is cancelled after this",
            |v| positive(parse_duration(v)?), |d: &Duration| fmt_duration(*d);
        backoff_base: Duration = "retry_backoff_base", "1s", Duration, live,
            "wait before a failed task's second attempt; doubled for each later one",
            |v| positive(parse_duration(v)?), |d: &Duration| fmt_duration(*d);
        backoff_max: Duration = "retry_backoff_max", "1h", Duration, live,
            "longest wait between a failed task's attempts",
            |v| positive(parse_duration(v)?), |d: &Duration| fmt_duration(*d);
        dead_retention: Duration = "dead_retention", "7d", Duration, live,
            "how long dead tasks (failed after their last attempt) are kept",
            |v| positive(parse_duration(v)?), |d: &Duration| fmt_duration(*d);
        idempotency_retention: Duration = "idempotency_retention", "24h", Duration, live,
            "how long a submission's Idempotency-Key answers a repeat with its task",
            |v| positive(parse_duration(v)?), |d: &Duration| fmt_duration(*d);
    }
}
