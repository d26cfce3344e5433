//! The pool's settings: what a member runs, how many, how they are
//! restarted, and how the pool sizes itself.

use super::setting::{area, name_of, one_of};
use super::units::{at_least, fmt_duration, parse_count, parse_duration, positive, split_words};
use std::time::Duration;

const AUTOSCALE: [(&str, bool); 2] = [("off", false), ("queue", true)];

/// `off`, or a command line split as a shell splits words.
fn command(v: &str) -> Result<Vec<String>, String> {
    if v == "off" {
        Ok(Vec::new())
    } else {
        split_words(v)
    }
}

/// The command as a line `command` reads back: words quoted when needed.
fn show_command(c: &[String]) -> String {
    if c.is_empty() {
        return "off".into();
    }
    c.iter()
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

area! {
    /// Local worker processes, supervised and scaled.
    pub struct Pool in pool {
        /// What a member runs (argv; empty: no pool).
        command: Vec<String> = "pool_command", "off", Text, live,
            "what a pool member runs: one line, split like a shell splits it, nothing expanded",
            command, |c: &Vec<String>| show_command(c);
        size: usize = "pool_size", "0", Count, live,
            "pool members started with the daemon",
            |v| parse_count(v, 0, 10_000), |n: &usize| n.to_string();
        min: usize = "pool_min", "0", Count, live,
            "fewest pool members scaling may leave",
            |v| parse_count(v, 0, 10_000), |n: &usize| n.to_string();
        max: usize = "pool_max", "100", Count, live,
            "most pool members scaling may start",
            |v| parse_count(v, 0, 10_000), |n: &usize| n.to_string();
        stop_grace: Duration = "pool_stop_grace", "10s", Duration, live,
            "a member told to stop (SIGTERM) is killed (SIGKILL) after this",
            parse_duration, |d: &Duration| fmt_duration(*d);
        restart_backoff: Duration = "pool_restart_backoff", "1s", Duration, live,
            "first wait before a member that exited is restarted (doubling to 60s)",
            |v| at_least(parse_duration(v)?, 10), |d: &Duration| fmt_duration(*d);
        max_restarts: usize = "pool_max_restarts", "10", Count, live,
            "restarts within pool_restart_window after which a member is fatal",
            |v| parse_count(v, 1, 1_000_000), |n: &usize| n.to_string();
        restart_window: Duration = "pool_restart_window", "5m", Duration, live,
            "the window pool_max_restarts is counted in",
            |v| positive(parse_duration(v)?), |d: &Duration| fmt_duration(*d);
        /// `queue`: size the pool from the task queue.
        autoscale: bool = "autoscale", "off", Text, live,
            "`queue`: size the pool from the task queue, within pool_min and pool_max",
            |v| one_of(v, &AUTOSCALE), |a: &bool| name_of(a, &AUTOSCALE);
        autoscale_tasks_per_worker: usize = "autoscale_tasks_per_worker", "10", Count, live,
            "queued tasks per member autoscale wants",
            |v| parse_count(v, 1, 1_000_000), |n: &usize| n.to_string();
        autoscale_cooldown: Duration = "autoscale_cooldown", "60s", Duration, live,
            "autoscale shrinks the pool only after the target stayed lower this long",
            parse_duration, |d: &Duration| fmt_duration(*d);
    }
}
