//! The last hour of task ends, by the minute each task finished in: what
//! the dashboard's header chart and `GET /api/history` show.
//!
//! A task is counted when it reaches a final state, under the minute of
//! its `finished_at`, so a journal replayed at start (or a cluster node's
//! first read of the database) counts the retained tasks of the last hour
//! again, and every node of a cluster counts the same ends. A task retried
//! and ended again is counted again: each end happened. Cost: O(1) per
//! end, O(minutes) per read; 61 slots of three counters.

use super::State;

/// Minutes kept: the hour, and the minute that is going on.
pub const MINUTES: usize = 61;
pub const MINUTE_MS: u64 = 60_000;

/// Tasks ended in one minute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Minute {
    /// The minute: unix ms / 60,000.
    pub minute: u64,
    pub succeeded: u32,
    /// Ended `failed`, `timed_out` or `dead`.
    pub failed: u32,
    pub cancelled: u32,
}

#[derive(Clone, Debug)]
pub struct Ends {
    slots: [Minute; MINUTES],
}

impl Default for Ends {
    fn default() -> Ends {
        Ends {
            slots: [Minute {
                minute: u64::MAX,
                ..Minute::default()
            }; MINUTES],
        }
    }
}

impl Ends {
    /// Count a task that ended in `state` at `finished_ms`. Each slot
    /// holds the latest minute that falls in it: an end older than that
    /// is past the hour and not counted.
    pub fn add(&mut self, state: State, finished_ms: u64) {
        let minute = finished_ms / MINUTE_MS;
        let slot = &mut self.slots[(minute % MINUTES as u64) as usize];
        if slot.minute != minute {
            if slot.minute != u64::MAX && slot.minute > minute {
                return;
            }
            *slot = Minute {
                minute,
                ..Minute::default()
            };
        }
        match state {
            State::Succeeded => slot.succeeded += 1,
            State::Cancelled => slot.cancelled += 1,
            State::Failed | State::TimedOut | State::Dead => slot.failed += 1,
            _ => {}
        }
    }

    /// The last `MINUTES` minutes as of `now_ms`, oldest first, the one
    /// going on last; a minute with no end is all zeros.
    pub fn last_hour(&self, now_ms: u64) -> Vec<Minute> {
        let now = now_ms / MINUTE_MS;
        (now.saturating_sub(MINUTES as u64 - 1)..=now)
            .map(|minute| {
                let slot = self.slots[(minute % MINUTES as u64) as usize];
                if slot.minute == minute {
                    slot
                } else {
                    Minute {
                        minute,
                        ..Minute::default()
                    }
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_800_000_000_000;

    #[test]
    fn counts_by_the_minute_each_ended_in_and_forgets_past_the_hour() {
        let mut e = Ends::default();
        e.add(State::Succeeded, T);
        e.add(State::Succeeded, T + 1);
        e.add(State::Dead, T);
        e.add(State::TimedOut, T);
        e.add(State::Cancelled, T - MINUTE_MS);
        // Not an end: not counted.
        e.add(State::Queued, T);
        // Past the hour: not shown.
        e.add(State::Succeeded, T - 61 * MINUTE_MS);
        let h = e.last_hour(T);
        assert_eq!(h.len(), MINUTES);
        let now = h[MINUTES - 1];
        assert_eq!(
            (now.minute, now.succeeded, now.failed, now.cancelled),
            (T / MINUTE_MS, 2, 2, 0)
        );
        assert_eq!(h[MINUTES - 2].cancelled, 1);
        assert_eq!(h.iter().map(|m| m.succeeded).sum::<u32>(), 2);
        // An hour on, the slot is reused for the new minute and the old
        // counts are gone.
        let later = T + MINUTES as u64 * MINUTE_MS;
        e.add(State::Failed, later);
        let h = e.last_hour(later);
        assert_eq!(h.iter().map(|m| m.succeeded + m.cancelled).sum::<u32>(), 0);
        assert_eq!(h[MINUTES - 1].failed, 1);
        // A late count for a minute whose slot now holds a later one is
        // dropped, not mixed in.
        e.add(State::Succeeded, T);
        assert_eq!(e.last_hour(later)[MINUTES - 1].succeeded, 0);
    }
}
