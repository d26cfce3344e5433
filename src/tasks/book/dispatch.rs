//! Dispatch: queued tasks to the workers with room. A pass over every
//! taker with room (the scheduler's turn), or to one worker, the one whose
//! finish just freed room. Cost: O(takers) to find those with room, then
//! per task dispatched O(log takers + types the taker takes), plus the
//! tasks passed over at a queue's head because their labels match no
//! taker with room.

use super::*;

impl Book {
    /// Send queued tasks to the workers that may take them: the one with
    /// the most room first, each its best task, highest priority then
    /// oldest. `eligible` says whether a worker may take work now (not
    /// `error`, `inactive` or `terminated`); it is asked once per taker
    /// with room.
    pub fn dispatch(&mut self, now_ms: u64, eligible: impl Fn(&str) -> bool, fx: &mut Effects) {
        if self.queues.is_empty() {
            return;
        }
        let room: BinaryHeap<(u32, Reverse<WorkerId>)> = self
            .takers
            .iter()
            .filter(|(w, t)| t.free() > 0 && eligible(w))
            .map(|(w, t)| (t.free(), Reverse(w.clone())))
            .collect();
        self.fill(room, now_ms, fx);
    }

    /// Dispatch to one worker only: the one whose finish just freed room,
    /// so that its next task goes out with no turn of the scheduler in
    /// between. O(the queues it reads).
    pub fn dispatch_to(
        &mut self,
        worker: &WorkerId,
        now_ms: u64,
        eligible: impl Fn(&str) -> bool,
        fx: &mut Effects,
    ) {
        if self.queues.is_empty() {
            return;
        }
        let room: BinaryHeap<(u32, Reverse<WorkerId>)> = self
            .takers
            .get(worker)
            .filter(|t| t.free() > 0 && eligible(worker))
            .map(|t| (t.free(), Reverse(worker.clone())))
            .into_iter()
            .collect();
        if !room.is_empty() {
            self.fill(room, now_ms, fx);
        }
    }

    /// Give each worker in `room` (most room first) the best task it may
    /// take, while room and tasks last.
    fn fill(
        &mut self,
        mut room: BinaryHeap<(u32, Reverse<WorkerId>)>,
        now_ms: u64,
        fx: &mut Effects,
    ) {
        self.close_limited(now_ms);
        while let Some((free, Reverse(worker))) = room.pop() {
            if self.queues.is_empty() {
                break;
            }
            let Some(taker) = self.takers.get(&worker) else {
                continue;
            };
            let (entries, queues, limits) = (&self.entries, &self.queues, &self.limits);
            let takes = |id: &TaskId| {
                entries.get(id).is_some_and(|e| {
                    taker.takes(&e.task, &worker)
                        && !queues.is_paused(&e.task.kind)
                        && limits.admits(&e.task, now_ms)
                })
            };
            let Some(id) = self.queues.best(&worker, taker.types.as_deref(), takes) else {
                continue;
            };
            if let Some(tk) = self.takers.get_mut(&worker) {
                tk.held.insert(id);
            }
            let Some(t) = self.set_state(id, |p| assigned(p, &worker, now_ms)) else {
                continue;
            };
            fx.progress(&t);
            fx.frames.push((worker.clone(), offer(&t, 0)));
            if !self.limits.is_empty() {
                self.limits.started(&t, now_ms);
                if self.limits.type_closed(&t.kind, now_ms) {
                    self.queues.closed.insert(t.kind.clone());
                }
            }
            if free > 1 {
                room.push((free - 1, Reverse(worker)));
            }
        }
    }

    /// The types whose limits let none start now: their queues are not
    /// read this dispatch.
    pub fn close_limited(&mut self, now_ms: u64) {
        self.queues.closed.clear();
        let closed = self.limits.closed_types(now_ms);
        self.queues.closed.extend(closed);
    }
}
