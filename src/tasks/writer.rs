//! Cluster mode's writer thread: every change this node makes, gathered
//! into one transaction at a time (group commit, as the journal does):
//! one `INSERT` of the submissions, one guarded `UPDATE`, one guarded log
//! `INSERT`, each over arrays, then retries, pauses and cancels. A
//! submission the database's unique indexes leave out is answered with
//! the task that has its key. A refused batch answers its submissions
//! 503; the rest wait for the database to come back.

use super::cluster::{BATCH, MAX_PENDING, Replica, Store, Write, ms};
use super::journal::{Clash, Kept};
use super::task::{Task, TaskId};
use crate::cluster::db::is_refusal;
use crate::stats::Counter;
use postgres::{Client, GenericClient};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

/// What one transaction of the writer did.
#[derive(Default)]
struct Stored {
    /// Changes refused because the claim they were made under moved on.
    stale: u64,
    /// Submissions left out because a task kept has one of their keys:
    /// that task (`None`: it was gone by the time it was looked for).
    clashes: HashMap<TaskId, Left>,
}

/// The writer's statements, prepared once per connection: each `execute`
/// of text would cost a round trip to prepare it again.
#[derive(Default)]
struct Prepared {
    on: u64,
    by_sql: HashMap<&'static str, postgres::Statement>,
}

impl Prepared {
    /// Forget what was prepared on an earlier connection.
    fn for_connection(&mut self, on: u64) {
        if self.on != on {
            self.on = on;
            self.by_sql.clear();
        }
    }

    fn get(
        &mut self,
        g: &mut impl GenericClient,
        sql: &'static str,
    ) -> Result<postgres::Statement, postgres::Error> {
        if let Some(s) = self.by_sql.get(sql) {
            return Ok(s.clone());
        }
        let s = g.prepare(sql)?;
        self.by_sql.insert(sql, s.clone());
        Ok(s)
    }
}

/// A submission whose `Idempotency-Key` or `unique_key` a kept task has
/// is left out (the unique indexes of schema 5), and found again after;
/// so is one that depends on a task the database does not have. `$11` is
/// this node's incarnation (`inserted_by`: its mirror does not read back
/// a row it inserted and nothing changed since).
const INSERT_TASKS: &str = "INSERT INTO muster_tasks
         (id, kind, priority, target_worker, target_labels, state, task,
          idempotency_key, unique_key, depends_on, inserted_by)
     SELECT id, kind, priority, target_worker, labels::jsonb, state, task::jsonb,
            idempotency_key, unique_key, depends_on::bigint[], $11
     FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                 $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])
          AS u(id, kind, priority, target_worker, labels, state, task,
               idempotency_key, unique_key, depends_on)
     WHERE u.depends_on IS NULL
        OR NOT EXISTS (SELECT 1 FROM unnest(u.depends_on::bigint[]) AS d(id)
                       WHERE NOT EXISTS (SELECT 1 FROM muster_tasks o WHERE o.id = d.id))
     ON CONFLICT DO NOTHING
     RETURNING id";

/// A retry: the task queued (or waiting, for its dependencies) again,
/// unless it is not ended, or another task not ended holds its
/// `unique_key`.
const RETRY: &str = "UPDATE muster_tasks t SET task = $2::text::jsonb, state = $3, lease = 0,
         holder_node = NULL, holder_incarnation = NULL, cancel_requested_at = NULL,
         finished_at = NULL, rev = rev + 1, changed = pg_current_xact_id()
     WHERE id = $1 AND state IN ('failed', 'cancelled', 'timed_out', 'dead')
       AND deleted_at IS NULL
       AND NOT EXISTS (SELECT 1 FROM muster_tasks o
                       WHERE o.unique_key = t.unique_key AND o.id <> t.id
                         AND o.state IN ('waiting', 'scheduled', 'queued', 'assigned', 'running'))";

/// Live states, as the unique index on `unique_key` has them.
const UNENDED: &str = "('waiting', 'scheduled', 'queued', 'assigned', 'running')";

/// The columns of the submissions in a batch, one array each.
#[derive(Default)]
struct Inserts<'a> {
    ids: Vec<i64>,
    kinds: Vec<&'a str>,
    priorities: Vec<i64>,
    targets: Vec<Option<&'a str>>,
    labels: Vec<String>,
    states: Vec<&'a str>,
    tasks: Vec<String>,
    idempotency_keys: Vec<Option<&'a str>>,
    unique_keys: Vec<Option<&'a str>>,
    /// `{1,2}`, as PostgreSQL writes an array; `None` for no dependencies.
    depends_on: Vec<Option<String>>,
    deps: Vec<&'a [TaskId]>,
}

/// What one batch writes, gathered statement by statement.
#[derive(Default)]
struct Batch<'a> {
    inserts: Inserts<'a>,
    logs: (Vec<i64>, Vec<i64>, Vec<String>),
    // The last change of each task wins: each carries the whole task.
    updates: BTreeMap<TaskId, (&'a Task, i64)>,
    cancels: Vec<(TaskId, u64, &'a Option<Task>)>,
    retries: Vec<&'a Task>,
    pauses: Vec<(&'a str, bool)>,
    /// Ids deleted, and when.
    deletes: (Vec<i64>, Vec<i64>),
    schedules: Vec<&'a super::schedule::Schedule>,
    unschedules: Vec<(&'a str, i64)>,
    limits: Vec<(&'a super::limit::Scope, Option<&'a super::limit::Limit>)>,
}

impl<'a> Batch<'a> {
    fn of(batch: &'a [Write]) -> Self {
        let mut b = Batch::default();
        for w in batch {
            match w {
                Write::Insert { task: t, .. } => {
                    let i = &mut b.inserts;
                    i.ids.push(t.id.0 as i64);
                    i.kinds.push(t.kind.as_str());
                    i.priorities.push(t.priority);
                    i.targets.push(t.target.worker_id.as_deref());
                    i.labels
                        .push(serde_json::to_string(&t.target.labels).unwrap_or_default());
                    i.states.push(t.state().as_str());
                    i.tasks.push(serde_json::to_string(t).unwrap_or_default());
                    i.idempotency_keys.push(t.idempotency_key.as_deref());
                    i.unique_keys.push(t.unique_key.as_deref());
                    i.deps.push(&t.depends_on);
                    i.depends_on.push((!t.depends_on.is_empty()).then(|| {
                        let ids: Vec<String> = t
                            .depends_on
                            .iter()
                            .map(|d| (d.0 as i64).to_string())
                            .collect();
                        format!("{{{}}}", ids.join(","))
                    }));
                }
                Write::Update { task, lease } => {
                    b.updates.insert(task.id, (task, *lease));
                }
                Write::Log { id, lease, lines } => {
                    b.logs.0.push(id.0 as i64);
                    b.logs.1.push(*lease);
                    b.logs
                        .2
                        .push(serde_json::to_string(lines).unwrap_or_default());
                }
                Write::Cancel { id, at, queued } => b.cancels.push((*id, *at, queued)),
                Write::Retry { task } => b.retries.push(task),
                Write::Pause { kind, paused } => b.pauses.push((kind, *paused)),
                Write::Schedule { schedule } => b.schedules.push(schedule),
                Write::Limit { scope, limit } => b.limits.push((scope, limit.as_ref())),
                Write::Unschedule { name, at } => b.unschedules.push((name, *at as i64)),
                Write::Delete { ids, at } => {
                    b.deletes.0.extend(ids.iter().map(|id| id.0 as i64));
                    b.deletes.1.extend(ids.iter().map(|_| *at as i64));
                }
            }
        }
        b
    }

    /// One statement commits on its own: no `BEGIN` and `COMMIT` round
    /// trips around it (a batch of submissions is one `INSERT`).
    fn is_one_statement(&self) -> bool {
        let parts = [
            !self.inserts.ids.is_empty(),
            !self.logs.0.is_empty(),
            !self.updates.is_empty(),
            !self.deletes.0.is_empty(),
        ];
        self.cancels.is_empty()
            && self.schedules.is_empty()
            && self.unschedules.is_empty()
            && self.limits.is_empty()
            && self.retries.is_empty()
            && self.pauses.is_empty()
            && parts.iter().filter(|p| **p).count() == 1
    }
}

/// Write `batch` atomically: in one transaction, or as its one statement.
fn commit(
    c: &mut Client,
    prepared: &mut Prepared,
    incarnation: i64,
    batch: &[Write],
) -> Result<Stored, postgres::Error> {
    let b = Batch::of(batch);
    if b.is_one_statement() {
        return statements(c, prepared, incarnation, &b);
    }
    let mut tx = c.transaction()?;
    let out = statements(&mut tx, prepared, incarnation, &b)?;
    tx.commit()?;
    Ok(out)
}

/// The tasks kept whose keys the submissions not in `kept` have, by
/// submission: the one with its `Idempotency-Key` first, else the one
/// holding its `unique_key`.
/// Why the database left a submission out.
enum Left {
    /// A task kept has one of its keys.
    Taken(Box<Task>, Clash),
    /// A task it depends on is not there.
    Unknown(TaskId),
    /// Neither: the task that had its key was gone by the time it was
    /// looked for.
    Gone,
}

fn clashes(
    g: &mut impl GenericClient,
    i: &Inserts<'_>,
    kept: &std::collections::HashSet<i64>,
) -> Result<HashMap<TaskId, Left>, postgres::Error> {
    let left: Vec<usize> = (0..i.ids.len())
        .filter(|n| !kept.contains(&i.ids[*n]))
        .collect();
    let idem: Vec<&str> = left.iter().filter_map(|n| i.idempotency_keys[*n]).collect();
    let unique: Vec<&str> = left.iter().filter_map(|n| i.unique_keys[*n]).collect();
    let rows = g.query(
        &format!(
            "SELECT task::text, idempotency_key, unique_key, state IN {UNENDED} FROM muster_tasks
             WHERE idempotency_key = ANY($1) OR (unique_key = ANY($2) AND state IN {UNENDED})"
        ),
        &[&idem, &unique],
    )?;
    let (mut by_idem, mut by_unique) = (HashMap::new(), HashMap::new());
    for r in &rows {
        let Ok(t) = serde_json::from_str::<Task>(r.get(0)) else {
            continue;
        };
        if let Some(k) = r.get::<_, Option<String>>(1) {
            by_idem.insert(k, t.clone());
        }
        if let (Some(k), true) = (r.get::<_, Option<String>>(2), r.get::<_, bool>(3)) {
            by_unique.insert(k, t);
        }
    }
    let deps: Vec<i64> = left
        .iter()
        .flat_map(|n| i.deps[*n].iter().map(|d| d.0 as i64))
        .collect();
    let missing: std::collections::HashSet<i64> = if deps.is_empty() {
        Default::default()
    } else {
        g.query(
            "SELECT d FROM unnest($1::bigint[]) AS d
             WHERE NOT EXISTS (SELECT 1 FROM muster_tasks WHERE id = d)",
            &[&deps],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    Ok(left
        .into_iter()
        .map(|n| {
            let first = i.idempotency_keys[n]
                .and_then(|k| by_idem.get(k))
                .map(|t| Left::Taken(Box::new(t.clone()), Clash::Idempotency));
            let holder = || {
                i.unique_keys[n]
                    .and_then(|k| by_unique.get(k))
                    .map(|t| Left::Taken(Box::new(t.clone()), Clash::Unique))
            };
            let unknown = || {
                i.deps[n]
                    .iter()
                    .find(|d| missing.contains(&(d.0 as i64)))
                    .map(|d| Left::Unknown(*d))
            };
            let why = first.or_else(holder).or_else(unknown).unwrap_or(Left::Gone);
            (TaskId(i.ids[n] as u64), why)
        })
        .collect())
}

fn statements(
    g: &mut impl GenericClient,
    prepared: &mut Prepared,
    incarnation: i64,
    b: &Batch<'_>,
) -> Result<Stored, postgres::Error> {
    let mut out = Stored::default();
    let i = &b.inserts;
    if !i.ids.is_empty() {
        let insert = prepared.get(g, INSERT_TASKS)?;
        let rows = g.query(
            &insert,
            &[
                &i.ids,
                &i.kinds,
                &i.priorities,
                &i.targets,
                &i.labels,
                &i.states,
                &i.tasks,
                &i.idempotency_keys,
                &i.unique_keys,
                &i.depends_on,
                &incarnation,
            ],
        )?;
        if rows.len() < i.ids.len() {
            let kept: std::collections::HashSet<i64> = rows.iter().map(|r| r.get(0)).collect();
            out.clashes = clashes(g, i, &kept)?;
        }
    }
    // Logs before the updates: lines a worker sent before it finished or
    // was given up on belong to the claim they were sent under.
    let log_rows = &b.logs;
    if !log_rows.0.is_empty() {
        let logs = prepared.get(
            g,
            "INSERT INTO muster_task_logs (task_id, lines)
             SELECT u.id, u.lines::jsonb
             FROM unnest($1::bigint[], $2::bigint[], $3::text[]) WITH ORDINALITY
                  AS u(id, lease, lines, n)
             JOIN muster_tasks t ON t.id = u.id AND t.lease = u.lease AND t.lease <> 0
                  AND t.holder_incarnation = $4
             ORDER BY u.n",
        )?;
        let n = g.execute(
            &logs,
            &[&log_rows.0, &log_rows.1, &log_rows.2, &incarnation],
        )?;
        out.stale += log_rows.0.len() as u64 - n;
    }
    if !b.updates.is_empty() {
        let (mut ids, mut leases, mut states, mut texts, mut finished) =
            (vec![], vec![], vec![], vec![], vec![]);
        for (id, (t, lease)) in &b.updates {
            ids.push(id.0 as i64);
            leases.push(*lease);
            states.push(t.state().as_str());
            texts.push(serde_json::to_string(t).unwrap_or_default());
            finished.push(ms(t.progress.finished_at));
        }
        let update = prepared.get(
            g,
            "UPDATE muster_tasks t SET
                 task = u.task::jsonb, state = u.state, finished_at = u.finished_at,
                 lease = CASE WHEN u.state IN ('queued', 'scheduled') THEN 0 ELSE t.lease END,
                 holder_node = CASE WHEN u.state IN ('queued', 'scheduled') THEN NULL
                                    ELSE t.holder_node END,
                 holder_incarnation = CASE WHEN u.state IN ('queued', 'scheduled') THEN NULL
                                           ELSE t.holder_incarnation END,
                 cancel_requested_at = CASE WHEN u.state IN ('queued', 'scheduled') THEN NULL
                                            ELSE t.cancel_requested_at END,
                 rev = t.rev + 1, changed = pg_current_xact_id()
             FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::bigint[])
                  AS u(id, lease, state, task, finished_at)
             WHERE t.id = u.id AND t.lease = u.lease AND t.lease <> 0
               AND t.holder_incarnation = $6",
        )?;
        let n = g.execute(
            &update,
            &[&ids, &leases, &states, &texts, &finished, &incarnation],
        )?;
        out.stale += ids.len() as u64 - n;
    }
    for t in &b.retries {
        let id = t.id.0 as i64;
        let text = serde_json::to_string(t).unwrap_or_default();
        // Retries are written in a transaction ([`Batch::is_one_statement`]):
        // this is a savepoint, so that a live task another node made with
        // the same unique_key refuses this retry, not the whole batch.
        let mut sp = g.transaction()?;
        let n = match sp.execute(RETRY, &[&id, &text, &t.state().as_str()]) {
            Ok(n) => n,
            Err(e) if e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION) => 0,
            Err(e) => return Err(e),
        };
        if n == 1 {
            sp.commit()?;
        } else {
            drop(sp);
            out.stale += 1;
            // Read again by every node, this one too, whose book retried it.
            g.execute(
                "UPDATE muster_tasks SET rev = rev + 1, changed = pg_current_xact_id()
                 WHERE id = $1",
                &[&id],
            )?;
        }
    }
    if !b.deletes.0.is_empty() {
        // Ended tasks only: one retried or cancelled meanwhile is kept.
        g.execute(
            "UPDATE muster_tasks t SET deleted_at = u.at, idempotency_key = NULL,
                 rev = rev + 1, changed = pg_current_xact_id()
             FROM unnest($1::bigint[], $2::bigint[]) AS u(id, at)
             WHERE t.id = u.id AND t.deleted_at IS NULL
               AND t.state IN ('succeeded', 'failed', 'cancelled', 'timed_out', 'dead')
               AND t.id NOT IN (SELECT unnest(depends_on) FROM muster_tasks
                                WHERE state = 'waiting')",
            &[&b.deletes.0, &b.deletes.1],
        )?;
    }
    for s in &b.schedules {
        // The leader's record of its ticks stays, unless the row it
        // replaces was deleted.
        g.execute(
            "INSERT INTO muster_schedules AS m (name, schedule) VALUES ($1, $2::text::jsonb)
             ON CONFLICT (name) DO UPDATE SET
                 schedule = CASE WHEN m.deleted_at IS NOT NULL THEN EXCLUDED.schedule
                     ELSE EXCLUDED.schedule || jsonb_build_object(
                         'created_at', m.schedule->'created_at',
                         'last_tick', m.schedule->'last_tick',
                         'last_task', m.schedule->'last_task',
                         'fired', m.schedule->'fired',
                         'skipped', m.schedule->'skipped') END,
                 deleted_at = NULL, changed = pg_current_xact_id()",
            &[&s.name, &serde_json::to_string(s).unwrap_or_default()],
        )?;
    }
    for &(scope, limit) in &b.limits {
        g.execute(
            "INSERT INTO muster_limits (scope, spec, rule) VALUES ($1, $2::text::jsonb, $3::text::jsonb)
             ON CONFLICT (scope) DO UPDATE SET rule = EXCLUDED.rule,
                 changed = pg_current_xact_id()",
            &[
                &scope.text(),
                &serde_json::to_string(scope).unwrap_or_default(),
                &limit.map(|l| serde_json::to_string(l).unwrap_or_default()),
            ],
        )?;
    }
    for &(name, at) in &b.unschedules {
        g.execute(
            "UPDATE muster_schedules SET deleted_at = $2, changed = pg_current_xact_id()
             WHERE name = $1 AND deleted_at IS NULL",
            &[&name, &at],
        )?;
    }
    for &(kind, paused) in &b.pauses {
        g.execute(
            "INSERT INTO muster_queues (kind, paused) VALUES ($1, $2)
             ON CONFLICT (kind) DO UPDATE SET paused = EXCLUDED.paused,
                 updated_at = now(), changed = pg_current_xact_id()",
            &[&kind, &paused],
        )?;
    }
    for &(id, at, queued) in &b.cancels {
        let id = id.0 as i64;
        let at = at as i64;
        let mut done = 0;
        if let Some(t) = queued {
            done = g.execute(
                "UPDATE muster_tasks SET task = $2::text::jsonb, state = 'cancelled',
                     finished_at = $3, rev = rev + 1, changed = pg_current_xact_id()
                 WHERE id = $1 AND state IN ('queued', 'scheduled', 'waiting')",
                &[&id, &serde_json::to_string(t).unwrap_or_default(), &at],
            )?;
        }
        if done == 0 {
            g.execute(
                "UPDATE muster_tasks SET cancel_requested_at = coalesce(cancel_requested_at, $2),
                     rev = rev + 1, changed = pg_current_xact_id()
                 WHERE id = $1 AND state IN ('assigned', 'running')",
                &[&id, &at],
            )?;
        }
    }
    Ok(out)
}

/// The writer thread: every change waiting, in one transaction, until the
/// store is closed and what it held is written.
pub fn write(store: Arc<Store>, rx: Receiver<Write>, copy: std::sync::Weak<dyn Replica>) {
    let mut link = store.cluster.link("tasks").quiet();
    let incarnation = store.cluster.me().incarnation;
    let st = &store.shared.stats;
    let mut batch: Vec<Write> = Vec::new();
    let mut prepared = Prepared::default();
    let mut open = true;
    loop {
        if batch.is_empty() {
            if !open {
                return;
            }
            match rx.recv() {
                Ok(w) => batch.push(w),
                Err(_) => return,
            }
        }
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let how = link.connector();
        // Connected first, so that the statements belong to the connection
        // they run on: the one this turn gets, not one an earlier `get`
        // failed to make.
        let connected = link.get().map(|_| ());
        if connected.is_ok() {
            prepared.for_connection(link.connection());
        }
        let result = match connected.and_then(|()| link.get()) {
            Ok(c) => {
                store.committing.arm(c.cancel_token(), how);
                let r = commit(c, &mut prepared, incarnation, &batch);
                store.committing.disarm();
                if let Err(e) = &r
                    && e.code() == Some(&postgres::error::SqlState::INVALID_SQL_STATEMENT_NAME)
                {
                    // Prepared anew on the next try.
                    prepared.for_connection(0);
                }
                r.map_err(|e| {
                    let d = link.failed(&e);
                    (d.why, is_refusal(&e) && link.is_up())
                })
            }
            Err(d) => Err((d.why, false)),
        };
        // Committed on this server only: a failover would lose it.
        let result = match result {
            Ok(_) if link.take_unreplicated() => Err((
                "the commit was not confirmed by the synchronous standby".to_string(),
                false,
            )),
            r => r,
        };
        match result {
            Ok(mut s) => {
                store.notifier.poke();
                st.add(Counter::TaskWritesStale, s.stale);
                let (mut left_out, mut inserted) = (Vec::new(), false);
                for w in batch.drain(..) {
                    let Write::Insert { task, ack } = w else {
                        continue;
                    };
                    let kept = match s.clashes.remove(&task.id) {
                        None => {
                            inserted = true;
                            Kept::Stored
                        }
                        Some(why) => {
                            left_out.push(task.id);
                            match why {
                                Left::Taken(t, c) => {
                                    st.incr(match c {
                                        Clash::Idempotency => Counter::TasksRepeated,
                                        Clash::Unique => Counter::TasksRefused,
                                    });
                                    Kept::Taken(t, c)
                                }
                                Left::Unknown(d) => {
                                    st.incr(Counter::TasksRefused);
                                    Kept::Unknown(d)
                                }
                                Left::Gone => Kept::NotStored,
                            }
                        }
                    };
                    if let Some(a) = ack {
                        a(kept);
                    }
                }
                if let Some(c) = copy.upgrade() {
                    if inserted {
                        c.stored();
                    }
                    if !left_out.is_empty() {
                        c.unstored(left_out);
                    }
                }
            }
            Err((why, statement)) => {
                st.incr(Counter::ClusterWriteErrors);
                // Submissions are answered 503 at once: never a 201 that
                // the database may not keep. Other changes wait for the
                // database to answer again, unless it refused them.
                let mut unstored = Vec::new();
                let mut kept = Vec::new();
                for w in batch.drain(..) {
                    match w {
                        Write::Insert { task, ack } => {
                            unstored.push(task.id);
                            if let Some(a) = ack {
                                a(Kept::NotStored);
                            }
                        }
                        other if !statement => kept.push(other),
                        _ => {}
                    }
                }
                if statement {
                    log::error!("cluster: the database refused a batch of task changes: {why}");
                }
                if kept.len() > MAX_PENDING {
                    let dropped = kept.len() - MAX_PENDING;
                    kept.drain(..dropped);
                    log::error!(
                        "cluster: {dropped} task changes dropped while the database is away"
                    );
                }
                batch = kept;
                if !unstored.is_empty() {
                    if let Some(c) = copy.upgrade() {
                        c.unstored(unstored);
                    }
                }
                if !batch.is_empty() {
                    if !open && store.stopping.load(Ordering::Acquire) {
                        log::warn!(
                            "cluster: {} task changes not written at stop: the database is away",
                            batch.len()
                        );
                        return;
                    }
                    // Gather more while waiting to connect again.
                    match rx.recv_timeout(Duration::from_millis(200)) {
                        Ok(w) => batch.push(w),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => open = false,
                    }
                }
            }
        }
    }
}
