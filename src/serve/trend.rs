//! `GET /api/history`: the last hour, minute by minute, for the
//! dashboard's header chart: tasks succeeded, failed and cancelled in each
//! minute (from the task book, which counts every end under the minute it
//! happened in, so the task side survives a restart), the deepest the
//! queue was in it, and the workers by status at its end.
//!
//! The queue and the workers are sampled here, on the HTTP loop's tick:
//! the queue once a second (one look at a counter under the book's lock),
//! the workers once a minute (counted again only if the fleet changed,
//! [`Health::counts`]; O(workers) then). Those samples live in memory: the
//! minutes before the daemon started show `null`.

use super::health::Health;
use crate::fleet::Shared;
use crate::fleet::registry::Registry;
use crate::proto::Status;
use crate::tasks::Tasks;
use crate::tasks::book::ends::{MINUTE_MS, MINUTES, Minute};
use serde_json::{Map, Value, json};
use std::collections::VecDeque;

/// What was sampled of one minute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sample {
    minute: u64,
    /// The deepest the queue was in the minute (sampled each second).
    queued: u64,
    /// Workers by status at the minute's end, in [`Status::ALL`]'s order.
    workers: [usize; Status::ALL.len()],
}

#[derive(Debug, Default)]
pub struct Trend {
    /// Closed minutes, oldest first.
    samples: VecDeque<Sample>,
    /// The minute going on, and the deepest queue seen in it; `None`
    /// before the first look.
    current: Option<(u64, u64)>,
    /// The second of the last look.
    looked: u64,
}

impl Trend {
    /// Look at the queue, at most once a second; at a new minute, close
    /// the one before with the workers as they are now.
    pub fn look(
        &mut self,
        now_ms: u64,
        tasks: &Tasks,
        health: &mut Health,
        reg: &Registry,
        shared: &Shared,
    ) {
        if now_ms / 1000 == self.looked {
            return;
        }
        self.looked = now_ms / 1000;
        let minute = now_ms / MINUTE_MS;
        let queued = tasks.queued() as u64;
        match self.current {
            Some((m, deepest)) if m == minute => self.current = Some((m, deepest.max(queued))),
            Some((m, deepest)) => {
                let workers = health.counts(reg, shared).by_status;
                self.close(Sample {
                    minute: m,
                    queued: deepest.max(queued),
                    workers,
                });
                self.current = Some((minute, queued));
            }
            None => self.current = Some((minute, queued)),
        }
    }

    fn close(&mut self, s: Sample) {
        self.samples.push_back(s);
        while self.samples.len() >= MINUTES {
            self.samples.pop_front();
        }
    }

    /// The body: each of the last hour's minutes, the one going on last
    /// (its queue and workers as they are now).
    pub fn view(
        &self,
        now_ms: u64,
        tasks: &Tasks,
        health: &mut Health,
        reg: &Registry,
        shared: &Shared,
    ) -> Value {
        let ends = tasks.last_hour(now_ms);
        let now = Sample {
            minute: now_ms / MINUTE_MS,
            queued: self
                .current
                .filter(|(m, _)| *m == now_ms / MINUTE_MS)
                .map_or(0, |(_, d)| d)
                .max(tasks.queued() as u64),
            workers: health.counts(reg, shared).by_status,
        };
        let minutes: Vec<Value> = ends
            .iter()
            .map(|e| {
                let sample = if e.minute == now.minute {
                    Some(now)
                } else {
                    self.samples.iter().find(|s| s.minute == e.minute).copied()
                };
                minute_json(e, sample)
            })
            .collect();
        json!({
            "minute_ms": MINUTE_MS,
            "now": now_ms,
            "minutes": minutes,
        })
    }
}

fn minute_json(e: &Minute, s: Option<Sample>) -> Value {
    let workers = s.map(|s| {
        let m: Map<String, Value> = Status::ALL
            .iter()
            .zip(s.workers)
            .map(|(st, n)| (st.as_str().to_string(), json!(n)))
            .collect();
        Value::Object(m)
    });
    json!({
        "at": e.minute * MINUTE_MS,
        "succeeded": e.succeeded,
        "failed": e.failed,
        "cancelled": e.cancelled,
        "queued": s.map(|s| s.queued),
        "workers": workers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_hour_of_closed_minutes() {
        let mut t = Trend::default();
        for m in 0..200 {
            t.close(Sample {
                minute: m,
                queued: m,
                workers: [0; Status::ALL.len()],
            });
        }
        assert_eq!(t.samples.len(), MINUTES - 1);
        assert_eq!(t.samples.front().map(|s| s.minute), Some(200 - 60));
    }

    #[test]
    fn a_minute_without_a_sample_says_null() {
        let e = Minute {
            minute: 5,
            succeeded: 3,
            failed: 1,
            cancelled: 0,
        };
        let v = minute_json(&e, None);
        assert_eq!(v["at"], 300_000);
        assert_eq!(v["succeeded"], 3);
        assert!(v["queued"].is_null() && v["workers"].is_null());
        let mut workers = [0; Status::ALL.len()];
        workers[Status::Idle as usize] = 4;
        let v = minute_json(
            &e,
            Some(Sample {
                minute: 5,
                queued: 7,
                workers,
            }),
        );
        assert_eq!(
            (v["queued"].as_u64(), v["workers"]["idle"].as_u64()),
            (Some(7), Some(4))
        );
    }
}
