//! The settings of the work musterd does besides the roll call: the task
//! book and the pool. Rows of [`super::SETTINGS`], kept here so that the
//! table stays readable.

use super::settings::{Setting, Unit};
use super::units::{
    at_least, fmt_duration, parse_count, parse_duration, parse_size, positive, split_words,
};

pub const TASK_FSYNC: Setting = Setting {
    key: "task_fsync",
    default: "always",
    unit: Unit::Text,
    live: true,
    help: "task journal sync: always (a 201 is on disk), batch (every 10 ms) or off",
    set: |c, v| {
        c.task_fsync = match v {
            "always" => super::Fsync::Always,
            "batch" => super::Fsync::Batch,
            "off" => super::Fsync::Off,
            _ => return Err(format!("{v:?} is not always, batch or off")),
        };
        Ok(())
    },
    show: |c| c.task_fsync.as_str().to_string(),
};

pub const MAX_TASKS: Setting = Setting {
    key: "max_tasks",
    default: "100000",
    unit: Unit::Count,
    live: true,
    help: "tasks kept at most, queued, running and finished (503 beyond it)",
    set: |c, v| {
        c.max_tasks = parse_count(v, 1, 100_000_000)?;
        Ok(())
    },
    show: |c| c.max_tasks.to_string(),
};

pub const MAX_TASK_BYTES: Setting = Setting {
    key: "max_task_bytes",
    default: "64KiB",
    unit: Unit::Bytes,
    live: true,
    help: "largest task submission (413 beyond it)",
    set: |c, v| {
        // A submission is one HTTP body: at most 1 MiB.
        c.max_task_bytes = parse_size(v, 16, 1 << 20)?;
        Ok(())
    },
    show: |c| c.max_task_bytes.to_string(),
};

pub const TASK_RETENTION: Setting = Setting {
    key: "task_retention",
    default: "24h",
    unit: Unit::Duration,
    live: true,
    help: "how long finished tasks are kept",
    set: |c, v| {
        c.task_retention = positive(parse_duration(v)?)?;
        Ok(())
    },
    show: |c| fmt_duration(c.task_retention),
};

pub const TASK_LOG_BYTES: Setting = Setting {
    key: "task_log_bytes",
    default: "64KiB",
    unit: Unit::Bytes,
    live: true,
    help: "log kept per task; older lines are dropped, counted",
    set: |c, v| {
        c.task_log_bytes = parse_size(v, 256, 1 << 30)?;
        Ok(())
    },
    show: |c| c.task_log_bytes.to_string(),
};

pub const TASK_ACK_TIMEOUT: Setting = Setting {
    key: "task_ack_timeout",
    default: "10s",
    unit: Unit::Duration,
    live: true,
    help: "a task sent to a worker and not reported running this long is requeued",
    set: |c, v| {
        c.task_ack_timeout = positive(parse_duration(v)?)?;
        Ok(())
    },
    show: |c| fmt_duration(c.task_ack_timeout),
};

pub const TASK_CANCEL_GRACE: Setting = Setting {
    key: "task_cancel_grace",
    default: "10s",
    unit: Unit::Duration,
    live: true,
    help: "a cancelled task the worker does not confirm is cancelled after this",
    set: |c, v| {
        c.task_cancel_grace = positive(parse_duration(v)?)?;
        Ok(())
    },
    show: |c| fmt_duration(c.task_cancel_grace),
};

pub const POOL_COMMAND: Setting = Setting {
    key: "pool_command",
    default: "off",
    unit: Unit::Text,
    live: true,
    help: "what a pool member runs: one line, split like a shell splits it, nothing expanded",
    set: |c, v| {
        c.pool_command = if v == "off" {
            Vec::new()
        } else {
            split_words(v)?
        };
        Ok(())
    },
    show: |c| {
        if c.pool_command.is_empty() {
            "off".into()
        } else {
            c.pool_command
                .iter()
                .map(|w| {
                    if !w.is_empty()
                        && w.chars()
                            .all(|ch| ch.is_ascii_alphanumeric() || "-_./=:@,+".contains(ch))
                    {
                        w.clone()
                    } else {
                        format!("'{}'", w.replace('\'', r"'\''"))
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        }
    },
};

pub const POOL_SIZE: Setting = Setting {
    key: "pool_size",
    default: "0",
    unit: Unit::Count,
    live: true,
    help: "pool members started with the daemon",
    set: |c, v| {
        c.pool_size = parse_count(v, 0, 10_000)?;
        Ok(())
    },
    show: |c| c.pool_size.to_string(),
};

pub const POOL_MIN: Setting = Setting {
    key: "pool_min",
    default: "0",
    unit: Unit::Count,
    live: true,
    help: "fewest pool members scaling may leave",
    set: |c, v| {
        c.pool_min = parse_count(v, 0, 10_000)?;
        Ok(())
    },
    show: |c| c.pool_min.to_string(),
};

pub const POOL_MAX: Setting = Setting {
    key: "pool_max",
    default: "100",
    unit: Unit::Count,
    live: true,
    help: "most pool members scaling may start",
    set: |c, v| {
        c.pool_max = parse_count(v, 0, 10_000)?;
        Ok(())
    },
    show: |c| c.pool_max.to_string(),
};

pub const POOL_STOP_GRACE: Setting = Setting {
    key: "pool_stop_grace",
    default: "10s",
    unit: Unit::Duration,
    live: true,
    help: "a member told to stop (SIGTERM) is killed (SIGKILL) after this",
    set: |c, v| {
        c.pool_stop_grace = parse_duration(v)?;
        Ok(())
    },
    show: |c| fmt_duration(c.pool_stop_grace),
};

pub const POOL_RESTART_BACKOFF: Setting = Setting {
    key: "pool_restart_backoff",
    default: "1s",
    unit: Unit::Duration,
    live: true,
    help: "first wait before a member that exited is restarted (doubling to 60s)",
    set: |c, v| {
        c.pool_restart_backoff = at_least(parse_duration(v)?, 10)?;
        Ok(())
    },
    show: |c| fmt_duration(c.pool_restart_backoff),
};

pub const POOL_MAX_RESTARTS: Setting = Setting {
    key: "pool_max_restarts",
    default: "10",
    unit: Unit::Count,
    live: true,
    help: "restarts within pool_restart_window after which a member is fatal",
    set: |c, v| {
        c.pool_max_restarts = parse_count(v, 1, 1_000_000)?;
        Ok(())
    },
    show: |c| c.pool_max_restarts.to_string(),
};

pub const POOL_RESTART_WINDOW: Setting = Setting {
    key: "pool_restart_window",
    default: "5m",
    unit: Unit::Duration,
    live: true,
    help: "the window pool_max_restarts is counted in",
    set: |c, v| {
        c.pool_restart_window = positive(parse_duration(v)?)?;
        Ok(())
    },
    show: |c| fmt_duration(c.pool_restart_window),
};

pub const AUTOSCALE: Setting = Setting {
    key: "autoscale",
    default: "off",
    unit: Unit::Text,
    live: true,
    help: "`queue`: size the pool from the task queue, within pool_min and pool_max",
    set: |c, v| {
        c.autoscale = match v {
            "off" => false,
            "queue" => true,
            _ => return Err(format!("{v:?} is not off or queue")),
        };
        Ok(())
    },
    show: |c| if c.autoscale { "queue" } else { "off" }.into(),
};

pub const AUTOSCALE_TASKS_PER_WORKER: Setting = Setting {
    key: "autoscale_tasks_per_worker",
    default: "10",
    unit: Unit::Count,
    live: true,
    help: "queued tasks per member autoscale wants",
    set: |c, v| {
        c.autoscale_tasks_per_worker = parse_count(v, 1, 1_000_000)?;
        Ok(())
    },
    show: |c| c.autoscale_tasks_per_worker.to_string(),
};

pub const AUTOSCALE_COOLDOWN: Setting = Setting {
    key: "autoscale_cooldown",
    default: "60s",
    unit: Unit::Duration,
    live: true,
    help: "autoscale shrinks the pool only after the target stayed lower this long",
    set: |c, v| {
        c.autoscale_cooldown = parse_duration(v)?;
        Ok(())
    },
    show: |c| fmt_duration(c.autoscale_cooldown),
};
