//! Carrying out what a change of the task book asks ([`Effects`]), in one
//! place: records to the journal (the last one with the submitter's
//! acknowledgement), lines to workers' sessions, finished runs to their
//! workers' run metrics, the counters and histograms, and the feed that
//! `/ws/tasks` reads. Called with the book locked, so records reach the
//! journal in the order the book made them.
//!
//! Its outlets are handed over at construction as traits, so it is tested
//! with a journal channel and an outbox of its own, and never learns which
//! thread or socket is behind them.

use super::book::{Book, Effects};
use super::cluster::{Store, Write};
use super::feed::Feed;
use super::journal::{self, Ack, Append, Kept, Record};
use super::task::State;
use super::timing::Histogram;
use crate::fleet::Shared;
use crate::proto::WorkerId;
use crate::stats::Counter;
use std::sync::mpsc::{SendError, Sender};
use std::sync::{Arc, Mutex};

/// Lines for workers' TCP sessions: the ingest loop, which owns them.
pub trait Outbox: Send + Sync {
    fn send(&self, worker: WorkerId, line: Vec<u8>);
}

/// Where a task's finished run is counted as one of its worker's runs.
pub trait Runs: Send + Sync {
    fn record(&self, worker: &WorkerId, duration_ms: f64, ok: bool);
}

pub struct Runner {
    /// The journal thread's queue; `None` in memory only, or once closed.
    journal: Mutex<Option<Sender<Append>>>,
    /// Cluster mode: the database, in the journal's place.
    remote: Option<Arc<Store>>,
    /// Opened with a journal: once it is closed, nothing more is accepted.
    durable: bool,
    outbox: Arc<dyn Outbox>,
    runs: Arc<dyn Runs>,
    pub feed: Feed,
    shared: Arc<Shared>,
    /// Queued → assigned, and running → finished, for `/metrics`.
    pub queue_wait: Histogram,
    pub run_time: Histogram,
}

/// What the runner writes to, sends to and tells.
pub struct Outlets {
    pub journal: Option<Sender<Append>>,
    pub remote: Option<Arc<Store>>,
    pub outbox: Arc<dyn Outbox>,
    pub runs: Arc<dyn Runs>,
    pub feed: Feed,
    pub shared: Arc<Shared>,
}

impl Runner {
    pub fn new(o: Outlets) -> Runner {
        Runner {
            durable: o.journal.is_some(),
            journal: Mutex::new(o.journal),
            remote: o.remote,
            outbox: o.outbox,
            runs: o.runs,
            feed: o.feed,
            shared: o.shared,
            queue_wait: Histogram::default(),
            run_time: Histogram::default(),
        }
    }

    /// Carry out `fx`; `ack` goes with the last record (a submission's),
    /// or is called at once when there is no journal to wait for.
    pub fn apply(&self, book: &Book, fx: Effects, ack: Option<Ack>) {
        self.carry(book, fx, ack, true);
    }

    /// Carry out `fx` but for its records, which the database has already
    /// (cluster mode: claims, and what other nodes changed).
    pub fn apply_stored(&self, book: &Book, fx: Effects) {
        self.carry(book, fx, None, false);
    }

    fn carry(&self, book: &Book, fx: Effects, ack: Option<Ack>, write: bool) {
        let st = &self.shared.stats;
        st.add(Counter::TasksRequeued, fx.requeued);
        st.add(Counter::TasksLost, fx.lost);
        st.add(Counter::TasksRetried, fx.retried);
        st.add(Counter::TasksSubmitted, fx.submitted);
        st.add(Counter::TaskLogLinesDropped, fx.log_dropped);
        for r in &fx.records {
            if let Record::Progress { progress: p, .. } = r {
                match (p.state, p.assigned_at, p.started_at, p.finished_at) {
                    (State::Assigned, Some(at), ..) => {
                        let queued = p.queued_at.unwrap_or(at);
                        self.queue_wait.observe(at.saturating_sub(queued));
                    }
                    (State::Succeeded | State::Failed, _, Some(s), Some(f)) => {
                        self.run_time.observe(f.saturating_sub(s));
                    }
                    _ => {}
                }
            }
        }
        for s in State::ALL {
            st.set(state_counter(s), book.count(s));
        }
        self.feed.note(&fx.records);
        self.feed.note(&fx.unwritten);
        if write {
            match &self.remote {
                Some(store) => store_remote(store, book, fx.records, ack),
                None => self.write(fx.records, ack),
            }
        }
        for (worker, line) in fx.frames {
            self.outbox.send(worker, line);
        }
        for (worker, ms, ok) in fx.runs {
            self.runs.record(&worker, ms, ok);
        }
    }

    fn write(&self, records: Vec<Record>, ack: Option<Ack>) {
        let journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        let mut ack = ack;
        let n = records.len();
        for (i, r) in records.iter().enumerate() {
            let a = if i + 1 == n { ack.take() } else { None };
            let Some(j) = journal.as_ref() else {
                // In memory only, or the journal is closed (stopping).
                if let Some(a) = a {
                    a(Kept::stored(!self.durable));
                }
                continue;
            };
            let append = Append {
                bytes: journal::encode(r),
                ack: a,
                compact: None,
            };
            if let Err(SendError(lost)) = j.send(append) {
                if let Some(a) = lost.ack {
                    a(Kept::NotStored);
                }
            }
        }
        drop(journal);
        if let Some(a) = ack {
            a(Kept::stored(!self.durable));
        }
    }

    /// Hand the journal thread a rewrite (compaction).
    pub fn compact(&self, append: Append) {
        if let Some(j) = self
            .journal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            let _ = j.send(append);
        }
    }

    /// Close the journal: its thread syncs and ends; later acknowledgements
    /// say the record was not stored.
    pub fn close(&self) {
        self.journal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }
}

/// Cluster mode: records as the database's changes, each with the claim
/// its task is held under; `ack` goes with the submission.
fn store_remote(store: &Store, book: &Book, records: Vec<Record>, ack: Option<Ack>) {
    let mut ack = ack;
    for r in records {
        let w = match r {
            Record::Submit { task } => Write::Insert {
                task: *task,
                ack: ack.take(),
            },
            Record::Progress { id, .. } => match book.entries.get(&id) {
                Some(e) => Write::Update {
                    task: e.task.clone(),
                    lease: e.lease,
                },
                None => continue,
            },
            Record::Log { id, lines } => match book.entries.get(&id) {
                Some(e) => Write::Log {
                    id,
                    lease: e.lease,
                    lines,
                },
                None => continue,
            },
            // Each node forgets by the same rules; the leader deletes.
            Record::Forget { .. } => continue,
            Record::Pause { kind, paused } => Write::Pause { kind, paused },
            Record::Schedule { schedule } => Write::Schedule { schedule },
            Record::Limit { scope, limit } => Write::Limit { scope, limit },
            Record::Unschedule { name } => Write::Unschedule {
                name,
                at: crate::clock::unix_ms(),
            },
        };
        store.send(w);
    }
    if let Some(a) = ack {
        a(Kept::Stored);
    }
}

fn state_counter(s: State) -> Counter {
    match s {
        State::Queued => Counter::TasksQueued,
        State::Assigned => Counter::TasksAssigned,
        State::Running => Counter::TasksRunning,
        State::Succeeded => Counter::TasksSucceeded,
        State::Failed => Counter::TasksFailed,
        State::Cancelled => Counter::TasksCancelled,
        State::TimedOut => Counter::TasksTimedOut,
        State::Scheduled => Counter::TasksScheduled,
        State::Dead => Counter::TasksDead,
        State::Waiting => Counter::TasksWaiting,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::notify::Notify;
    use crate::proto::Labels;
    use crate::tasks::task::parse_submit;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    #[derive(Default)]
    struct Sent(Mutex<Vec<(WorkerId, Vec<u8>)>>);
    impl Outbox for Sent {
        fn send(&self, worker: WorkerId, line: Vec<u8>) {
            self.0.lock().unwrap().push((worker, line));
        }
    }

    #[derive(Default)]
    struct Recorded(Mutex<Vec<(WorkerId, f64, bool)>>);
    impl Runs for Recorded {
        fn record(&self, worker: &WorkerId, ms: f64, ok: bool) {
            self.0.lock().unwrap().push((worker.clone(), ms, ok));
        }
    }

    #[derive(Default)]
    struct Told(AtomicUsize);
    impl Notify for Told {
        fn notify(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    struct Rig {
        runner: Runner,
        journal: mpsc::Receiver<Append>,
        sent: Arc<Sent>,
        runs: Arc<Recorded>,
        told: Arc<Told>,
        shared: Arc<Shared>,
    }

    fn rig() -> Rig {
        let (tx, journal) = mpsc::channel();
        let (sent, runs, told) = (
            Arc::new(Sent::default()),
            Arc::new(Recorded::default()),
            Arc::new(Told::default()),
        );
        let shared = Arc::new(Shared::new(crate::config::defaults()));
        let runner = Runner::new(Outlets {
            journal: Some(tx),
            remote: None,
            outbox: sent.clone(),
            runs: runs.clone(),
            feed: Feed::new(told.clone()),
            shared: shared.clone(),
        });
        Rig {
            runner,
            journal,
            sent,
            runs,
            told,
            shared,
        }
    }

    #[test]
    fn every_effect_reaches_its_outlet_in_order() {
        let r = rig();
        let mut book = Book::default();
        let id = book.next_id(1000);
        book.insert(parse_submit(br#"{"type":"scan"}"#, id, 1000).unwrap());
        let w = WorkerId::from("w1");
        book.on_hello(&w, 1, None, Labels::new());
        let mut fx = Effects::default();
        book.dispatch(1001, |_| true, &mut fx);
        fx.runs.push((w.clone(), 12.0, true));
        let acked = Arc::new(AtomicUsize::new(0));
        let a = acked.clone();
        r.runner.apply(
            &book,
            fx,
            Some(Box::new(move |kept| {
                assert!(matches!(kept, journal::Kept::Stored));
                a.fetch_add(1, Ordering::Relaxed);
            })),
        );
        // The journal got the assignment, carrying the acknowledgement.
        let append = r.journal.try_recv().unwrap();
        let mut seen = Vec::new();
        journal::replay(&append.bytes, |rec| seen.push(rec));
        assert!(matches!(&seen[..], [Record::Progress { id: got, .. }] if *got == id));
        (append.ack.unwrap())(journal::Kept::Stored);
        assert_eq!(acked.load(Ordering::Relaxed), 1);
        // The worker's line, its run, the counters and the feed.
        let sent = r.sent.0.lock().unwrap();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, w);
        assert!(sent[0].1.starts_with(br#"{"type":"task""#));
        assert_eq!(*r.runs.0.lock().unwrap(), [(w, 12.0, true)]);
        assert_eq!(r.shared.stats.get(Counter::TasksAssigned), 1);
        assert_eq!(r.told.0.load(Ordering::Relaxed), 1);
        assert_eq!(r.runner.queue_wait.reading().1, 1);
    }

    #[test]
    fn without_a_journal_an_acknowledgement_says_whether_it_was_durable() {
        let r = rig();
        r.runner.close();
        let book = Book::default();
        let said = Arc::new(Mutex::new(None));
        let s = said.clone();
        let mut fx = Effects::default();
        fx.records.push(Record::Forget {
            id: crate::tasks::task::TaskId(1),
        });
        r.runner.apply(
            &book,
            fx,
            Some(Box::new(move |kept| {
                *s.lock().unwrap() = Some(matches!(kept, journal::Kept::Stored))
            })),
        );
        assert_eq!(*said.lock().unwrap(), Some(false), "closed: not stored");
        assert!(r.journal.try_recv().is_err());
    }
}
