//! A single node's schedules firing: each tick due submits the
//! schedule's task, or is skipped (its last task still runs and it says
//! `skip`, or the tick was missed and it says `catch_up: skip`). The task
//! carries its tick, so its journal record is the tick's too.

use super::*;
use crate::tasks::schedule::task_of;
use crate::tasks::schedule::{CatchUp, Fired, Overlap};

impl Book {
    /// Handle the ticks due by `now_ms`, keeping at most `max_tasks`.
    pub fn fire_schedules(&mut self, now_ms: u64, max_tasks: usize, fx: &mut Effects) {
        for due in self.schedules.due(now_ms) {
            let Some(mut s) = self.schedules.get(&due.name).cloned() else {
                continue;
            };
            s.last_tick = Some(due.tick);
            let running = s
                .last_task
                .and_then(|id| self.entries.get(&id))
                .filter(|e| !e.task.state().is_final())
                .map(|e| e.task.id);
            let fire = match (due.late, s.catch_up, running, s.overlap) {
                (true, CatchUp::Skip, ..) => false,
                (_, _, Some(_), Overlap::Skip) => false,
                (_, _, Some(id), Overlap::Cancel) => {
                    self.cancel(id, now_ms, fx);
                    true
                }
                _ => true,
            };
            // A task kept records the fire (`Schedules::note_fired`), as
            // replaying its journal record will; a skip is recorded here.
            let made = fire && self.submit_tick(&s, due.tick, now_ms, max_tasks, fx);
            if !made {
                s.skipped += 1;
                self.schedules.put(s.clone());
                fx.records.push(Record::Schedule {
                    schedule: Box::new(s),
                });
            }
        }
    }

    /// The task of `s`'s tick, kept and recorded; false when it cannot
    /// be (no room, or its `unique_key` is held).
    fn submit_tick(
        &mut self,
        s: &crate::tasks::schedule::Schedule,
        tick: u64,
        now_ms: u64,
        max_tasks: usize,
        fx: &mut Effects,
    ) -> bool {
        let id = self.next_id(now_ms);
        let mut t = match self.schedules.template(&s.name) {
            Some(template) => task_of(template, id, now_ms),
            None => {
                log::error!("schedule {}: its task does not parse", s.name);
                return false;
            }
        };
        if let Some(holder) = t.unique_key.as_deref().and_then(|k| self.unique_holder(k)) {
            log::info!(
                "schedule {}: tick skipped: task {holder} holds its unique_key",
                s.name
            );
            return false;
        }
        if !self.make_room(max_tasks, fx) {
            log::warn!(
                "schedule {}: tick skipped: max_tasks are unfinished",
                s.name
            );
            return false;
        }
        t.schedule = Some(Box::new(Fired {
            name: s.name.clone(),
            tick,
        }));
        self.insert(t.clone());
        fx.records.push(Record::Submit { task: Box::new(t) });
        fx.submitted += 1;
        true
    }
}
