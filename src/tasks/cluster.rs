//! Tasks in cluster mode: the database holds them, and each node's book
//! is its copy, kept by what the database says changed.
//!
//! - A submission is inserted by this node's writer thread (`writer.rs`) before its
//!   `201`: the writer takes every change waiting, writes them in one
//!   transaction (one `INSERT`, one guarded `UPDATE`, one guarded log
//!   `INSERT`, each over arrays) and commits (group commit, as the journal
//!   does). Its connection and the claims' are quiet (the triggers of
//!   schema 10 do not notify for them: a notifying transaction holds the
//!   server's one notification lock through its commit's flush, so the
//!   nodes' writers would commit one at a time); the notifier thread
//!   announces their commits after them, one `NOTIFY muster_tasks` for
//!   every commit since the last.
//! - A claim takes queued tasks for one of this node's takers with
//!   `FOR UPDATE SKIP LOCKED`, highest priority then oldest, matching its
//!   types, labels and id, and gives each a new lease token. Every change
//!   after it says which token it was made under; the database refuses it
//!   when the token moved on (the task was given back, or to another
//!   node), and the refusal is counted.
//! - The mirror thread listens on `muster_tasks` and reads, at each
//!   notification and at least every second, the rows written since its
//!   last look (by `xid8`: everything written by a transaction that was not
//!   visible then), and hands them to the book; a row this incarnation
//!   inserted and nothing changed since is not read back (`inserted_by`,
//!   schema 10): the book made that task before the writer stored it.
//! - While this node leads, the mirror thread also (`duties.rs`) queues
//!   the scheduled tasks that are due, gives back the tasks of
//!   nodes whose leases lapsed (after `node_ttl`, and not before a node
//!   that restarted under the same name has had `node_ttl` for its workers
//!   to come back), and deletes finished tasks past `task_retention`.

use super::adopt::Adopt;
use super::book::Wanted;
use super::journal::{Ack, Kept};
use super::limit::{Limit, Limits, Scope};
use super::task::{Task, TaskId};
use crate::clock::unix_ms;
use crate::cluster::Cluster;
use crate::cluster::db::{Link, Notifier, Since, Watch, describe};
use crate::cluster::tls::Connector;
use crate::fleet::Shared;
use crate::proto::WorkerId;
use postgres::Client;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The channel every node listens on.
pub const CHANNEL: &str = "muster_tasks";
/// The longest the mirror waits without a notification.
pub const POLL: Duration = Duration::from_secs(1);
/// Changes one transaction of the writer carries at most.
pub(super) const BATCH: usize = 4096;
/// Changes the writer keeps for a database that is away, at most.
pub(super) const MAX_PENDING: usize = 100_000;

/// A change for the database.
pub enum Write {
    /// A submission; `ack` once it is committed (or not).
    Insert { task: Task, ack: Option<Ack> },
    /// The task as it is now, made under claim `lease`.
    Update { task: Task, lease: i64 },
    Log {
        id: TaskId,
        lease: i64,
        lines: Vec<String>,
    },
    /// Cancel: `queued` is the task cancelled, when this node saw it
    /// queued; whoever holds it is asked to stop otherwise.
    Cancel {
        id: TaskId,
        at: u64,
        queued: Option<Task>,
    },
    /// `POST /api/tasks/{id}/retry`: the task in its fresh cycle, stored
    /// if it has still ended otherwise than in success.
    Retry { task: Task },
    /// A task type paused or resumed, for every node's claims.
    Pause { kind: String, paused: bool },
    /// Ended tasks deleted (`POST /api/tasks/bulk`), at `at` (Unix ms).
    Delete { ids: Vec<TaskId>, at: u64 },
    /// A schedule made or changed; the leader's record of its ticks is
    /// kept.
    Schedule {
        schedule: Box<super::schedule::Schedule>,
    },
    /// A schedule deleted, at `at` (Unix ms).
    Unschedule { name: String, at: u64 },
    /// A dispatch limit set, or removed.
    Limit {
        scope: super::limit::Scope,
        limit: Option<super::limit::Limit>,
    },
}

/// A task a claim gave one of this node's takers.
pub struct Claim {
    pub worker: WorkerId,
    pub task: Task,
    pub lease: i64,
    pub rev: i64,
}

/// A task as the database has it.
pub struct Row {
    pub task: Task,
    pub holder: Option<i64>,
    pub lease: i64,
    pub rev: i64,
    pub cancel_requested_at: Option<u64>,
    /// Deleted: every node forgets it.
    pub deleted: bool,
}

/// Log lines added, by task.
pub type Lines = Vec<(TaskId, Vec<String>)>;

/// What the mirror read: rows changed, log lines added, task types
/// paused (`true`) or resumed.
#[derive(Default)]
pub struct Changes {
    pub rows: Vec<Row>,
    pub logs: Lines,
    pub pauses: Vec<(String, bool)>,
    /// Schedules as they are now; `None` beside a name: deleted.
    pub schedules: Vec<(String, Option<super::schedule::Schedule>)>,
    /// Limits as they are now; `None`: removed.
    pub limits: Vec<(Scope, Option<Limit>)>,
}

impl Changes {
    fn is_empty(&self) -> bool {
        self.rows.is_empty()
            && self.logs.is_empty()
            && self.pauses.is_empty()
            && self.schedules.is_empty()
            && self.limits.is_empty()
    }
}

/// What the mirror hands the book.
pub trait Replica: Send + Sync {
    fn mirror(&self, changes: Changes);
    /// The schedules' ticks due by `now_ms`, as this node's copy has them.
    fn ticks_due(&self, now_ms: u64) -> Vec<super::schedule::Due>;
    /// Submissions were committed: a taker here may claim them now.
    fn stored(&self);
    /// Submissions the database did not take: the book forgets them.
    fn unstored(&self, ids: Vec<TaskId>);
}

/// How long the writer's transaction may take (waiting for the
/// synchronous standby, say) before the mirror cancels it: its
/// submissions are then answered 503 rather than held.
const COMMIT_WAIT: Duration = Duration::from_secs(10);

/// The writer's transaction under way, for the mirror to cancel once it
/// waited [`COMMIT_WAIT`].
#[derive(Default)]
pub(super) struct Committing(Mutex<Option<(Instant, postgres::CancelToken, Connector)>>);

impl Committing {
    pub(super) fn arm(&self, token: postgres::CancelToken, how: Connector) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), token, how));
    }

    pub(super) fn disarm(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Cancel the transaction if it has waited too long. A commit waiting
    /// for the standby then returns with a warning, which the writer's
    /// link notes ([`Link::take_unreplicated`]).
    fn cancel_if_stuck(&self) {
        let stuck = {
            let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
            match slot.as_ref() {
                Some((since, ..)) if since.elapsed() >= COMMIT_WAIT => slot.take(),
                _ => None,
            }
        };
        if let Some((since, token, how)) = stuck {
            log::warn!(
                "cluster: the task writer's transaction has waited {} s (for the synchronous standby?): cancelled, its submissions are answered 503",
                since.elapsed().as_secs()
            );
            if let Err(e) = how.cancel(&token) {
                log::warn!("cluster: cannot cancel it: {}", describe(&e));
            }
        }
    }
}

pub struct Store {
    pub cluster: Arc<Cluster>,
    /// Announces the writer's and the claims' commits (their links are
    /// quiet: [`Link::quiet`]).
    pub(super) notifier: Notifier,
    pub(super) committing: Committing,
    tx: Mutex<Option<Sender<Write>>>,
    last_id: Mutex<u64>,
    claims: Mutex<Link>,
    pub(super) shared: Arc<Shared>,
    pub(super) stopping: AtomicBool,
    /// When this node's copy of the queue has its earliest scheduled task
    /// due (Unix ms; 0: none), for the leader's wait.
    pub next_due: AtomicU64,
    /// Whether this node's copy has a task waiting for its dependencies,
    /// for the leader's turn to look at them.
    pub waiting: AtomicBool,
    /// When this node's copy has a schedule's tick due next (Unix ms; 0:
    /// none), for the leader's wait.
    pub next_tick: AtomicU64,
}

impl Store {
    pub fn new(cluster: Arc<Cluster>, shared: Arc<Shared>) -> (Arc<Store>, Receiver<Write>) {
        let (tx, rx) = mpsc::channel();
        let claims = cluster.link("claims").quiet();
        let store = Arc::new(Store {
            cluster,
            committing: Committing::default(),
            notifier: Notifier::default(),
            tx: Mutex::new(Some(tx)),
            last_id: Mutex::new(0),
            claims: Mutex::new(claims),
            shared,
            stopping: AtomicBool::new(false),
            next_due: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
            next_tick: AtomicU64::new(0),
        });
        (store, rx)
    }

    /// A new task id: Unix ms, this node's ordinal, a count within the ms
    /// (`ms << 20 | ordinal << 12 | n`), so that no two nodes make the
    /// same. `None` until the database gave this node an ordinal.
    pub fn next_id(&self, now_ms: u64) -> Option<TaskId> {
        let ord = u64::from(self.cluster.ordinal()?);
        let mut last = self.last_id.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = (*last + 1).max((now_ms << 20) | (ord << 12));
        if (next >> 12) & 0xff != ord {
            next = (((next >> 20) + 1) << 20) | (ord << 12);
        }
        *last = next;
        Some(TaskId(next))
    }

    /// How long the mirror may wait: `poll`, or less when this node leads
    /// and a scheduled task or a schedule's tick falls due sooner, or a
    /// task waits for its dependencies.
    fn until_due(&self, poll: Duration) -> Duration {
        let due = [&self.next_due, &self.next_tick]
            .map(|a| a.load(Ordering::Relaxed))
            .into_iter()
            .filter(|d| *d != 0)
            .min()
            .unwrap_or(0);
        if self.cluster.leading().is_none() {
            return poll;
        }
        let poll = match self.waiting.load(Ordering::Relaxed) {
            true => poll.min(super::duties::SETTLE_EVERY),
            false => poll,
        };
        if due == 0 {
            return poll;
        }
        let left = Duration::from_millis(due.saturating_sub(unix_ms()));
        poll.min(left.max(Duration::from_millis(5)))
    }

    pub fn send(&self, w: Write) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let refused = match tx.as_ref() {
            Some(tx) => tx.send(w).err().map(|e| e.0),
            None => Some(w),
        };
        if let Some(Write::Insert { ack: Some(a), .. }) = refused {
            a(Kept::NotStored);
        }
    }

    /// No more changes: the writer stores what it holds and ends, and the
    /// mirror ends.
    pub fn close(&self) {
        self.stopping.store(true, Ordering::Release);
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.notifier.wake();
    }

    /// Claim queued tasks for this node's takers, on the scheduler's
    /// connection. Nothing when the database cannot be reached or this
    /// node's lease lapsed there.
    /// Claim tasks for `wanted`, within `limits` (this node's copy of
    /// them; the database's count of held tasks decides).
    pub fn claim(&self, wanted: &[Wanted], limits: &[(Scope, Limit)], now_ms: u64) -> Vec<Claim> {
        let mut link = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        let me = self.cluster.me();
        let Ok(c) = link.get() else {
            return Vec::new();
        };
        match claim(c, me.incarnation, &me.node_id, wanted, limits, now_ms) {
            Ok(got) => {
                if !got.is_empty() {
                    self.notifier.poke();
                }
                got
            }
            Err(e) => {
                let d = link.failed(&e);
                log::warn!("cluster: cannot claim tasks: {d}");
                Vec::new()
            }
        }
    }
}

pub(super) fn ms(v: Option<u64>) -> Option<i64> {
    v.map(|v| v as i64)
}

/// A re-reported task the database handed to this node.
pub struct Adopted {
    pub task: Task,
    pub lease: i64,
    pub rev: i64,
}

impl Store {
    /// Hand each re-reported task to this node under a new lease token,
    /// when the token its worker gave is still the task's, the task is
    /// still that worker's and under way, and this node's lease holds.
    /// `None` when the database could not answer (ask again later);
    /// otherwise what was adopted, by id (the rest is not theirs to keep).
    pub fn adopt(&self, asks: &[Adopt]) -> Option<HashMap<TaskId, Adopted>> {
        let mut link = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        let me = self.cluster.me();
        let c = link.get().ok()?;
        match adopt(c, me.incarnation, &me.node_id, asks) {
            Ok(got) => {
                if !got.is_empty() {
                    self.notifier.poke();
                }
                Some(got)
            }
            Err(e) => {
                let d = link.failed(&e);
                log::warn!("cluster: cannot adopt re-reported tasks: {d}");
                None
            }
        }
    }
}

/// A claim's guard: this node's lease holds in the database (`$1` its
/// `node_id`, `$2` its incarnation).
const LEASE_HOLDS: &str = "EXISTS (SELECT 1 FROM muster_nodes
    WHERE node_id = $1 AND incarnation = $2 AND expires_at > now())";

fn adopt(
    c: &mut Client,
    incarnation: i64,
    node: &str,
    asks: &[Adopt],
) -> Result<HashMap<TaskId, Adopted>, postgres::Error> {
    let ids: Vec<i64> = asks.iter().map(|a| a.id.0 as i64).collect();
    let leases: Vec<i64> = asks.iter().map(|a| a.lease).collect();
    let workers: Vec<&str> = asks.iter().map(|a| &*a.worker).collect();
    let rows = c.query(
        &format!(
            "UPDATE muster_tasks t SET
                 holder_node = $1, holder_incarnation = $2,
                 lease = nextval('muster_task_lease'),
                 rev = t.rev + 1, changed = pg_current_xact_id()
             FROM unnest($3::bigint[], $4::bigint[], $5::text[]) AS a(id, lease, worker)
             WHERE t.id = a.id AND t.lease = a.lease AND t.state IN ('assigned', 'running')
               AND t.task->'progress'->>'worker_id' = a.worker AND {LEASE_HOLDS}
             RETURNING t.id, t.task::text, t.lease, t.rev"
        ),
        &[&node, &incarnation, &ids, &leases, &workers],
    )?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let task: Task = serde_json::from_str(r.get(1)).ok()?;
            Some((
                TaskId(r.get::<_, i64>(0) as u64),
                Adopted {
                    task,
                    lease: r.get(2),
                    rev: r.get(3),
                },
            ))
        })
        .collect())
}

/// What a group of takers takes: its types (`None`: all) and its labels.
type Shape = (Option<Vec<String>>, String);

fn claim(
    c: &mut Client,
    incarnation: i64,
    node: &str,
    wanted: &[Wanted],
    limits: &[(Scope, Limit)],
    now_ms: u64,
) -> Result<Vec<Claim>, postgres::Error> {
    let mut tx = c.transaction()?;
    let mut lim = match limits.is_empty() {
        true => None,
        false => Some(limits_now(&mut tx, limits)?),
    };
    let closed: Vec<String> = lim
        .as_ref()
        .map(|l| l.closed_types(now_ms))
        .unwrap_or_default();
    // The queue's partial index, in its order, whatever the statistics say:
    // a table that filled faster than autovacuum analyses it would be
    // sorted whole for every claim.
    tx.batch_execute("SET LOCAL enable_bitmapscan = off; SET LOCAL enable_sort = off")?;
    let pick = tx.prepare(
        "SELECT task::text, target_worker FROM muster_tasks
         WHERE state = 'queued'
           AND ($1::text[] IS NULL OR kind = ANY($1))
           AND (target_worker IS NULL OR target_worker = ANY($2))
           AND target_labels <@ $3::text::jsonb
           AND NOT EXISTS (SELECT 1 FROM muster_queues q
               WHERE q.kind = muster_tasks.kind AND q.paused)
           AND NOT (kind = ANY($5))
         ORDER BY priority DESC, id
         LIMIT $4
         FOR UPDATE SKIP LOCKED",
    )?;
    let mut ids = Vec::new();
    let mut texts = Vec::new();
    let mut tasks = HashMap::new();
    // One statement for every taker that takes the same types with the
    // same labels: most fleets are one or a few such groups.
    let mut groups: BTreeMap<Shape, Vec<(WorkerId, u32)>> = BTreeMap::new();
    for w in wanted {
        let labels = serde_json::to_string(&w.labels).unwrap_or_else(|_| "{}".into());
        groups
            .entry((w.types.clone(), labels))
            .or_default()
            .push((w.worker.clone(), w.free));
    }
    for ((types, labels), mut takers) in groups {
        let names: Vec<&str> = takers.iter().map(|(w, _)| &**w).collect();
        let room: u32 = takers.iter().map(|(_, f)| *f).sum();
        let rows = tx.query(&pick, &[&types, &names, &labels, &i64::from(room), &closed])?;
        for r in rows {
            let Ok(mut t) = serde_json::from_str::<Task>(r.get(0)) else {
                continue;
            };
            if lim.as_ref().is_some_and(|l| !l.admits(&t, now_ms)) {
                continue;
            }
            let aimed: Option<&str> = r.get(1);
            // Its own worker, or the one with the most room left.
            let to = match aimed {
                Some(a) => takers.iter_mut().find(|(w, f)| &**w == a && *f > 0),
                None => takers
                    .iter_mut()
                    .filter(|(_, f)| *f > 0)
                    .max_by_key(|(_, f)| *f),
            };
            let Some((worker, free)) = to else { continue };
            *free -= 1;
            if let Some(l) = &mut lim {
                l.started(&t, now_ms);
                l.held(&t, 1);
            }
            super::book::assigned(&mut t.progress, worker, now_ms);
            ids.push(t.id.0 as i64);
            texts.push(serde_json::to_string(&t).unwrap_or_default());
            tasks.insert(t.id, (worker.clone(), t));
        }
    }
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(l) = &lim {
        for (scope, tokens, at) in l.buckets() {
            tx.execute(
                "INSERT INTO muster_limit_buckets (scope, tokens, at) VALUES ($1, $2, $3)
                 ON CONFLICT (scope) DO UPDATE SET tokens = EXCLUDED.tokens, at = EXCLUDED.at",
                &[&scope.text(), &tokens, &(at as i64)],
            )?;
        }
    }
    let rows = tx.query(
        &format!(
            "UPDATE muster_tasks t SET
             state = 'assigned', task = u.task::jsonb,
             holder_node = $1, holder_incarnation = $2,
             lease = nextval('muster_task_lease'), cancel_requested_at = NULL,
             rev = t.rev + 1, changed = pg_current_xact_id()
         FROM unnest($3::bigint[], $4::text[]) AS u(id, task)
         WHERE t.id = u.id AND {LEASE_HOLDS}
         RETURNING t.id, t.lease, t.rev"
        ),
        &[&node, &incarnation, &ids, &texts],
    )?;
    tx.commit()?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let id = TaskId(r.get::<_, i64>(0) as u64);
            let (worker, task) = tasks.remove(&id)?;
            Some(Claim {
                worker,
                task,
                lease: r.get(1),
                rev: r.get(2),
            })
        })
        .collect())
}

/// The limits as the cluster stands: `limits` with the database's count
/// of held tasks under each and its buckets, read under a lock that makes
/// every node's limited claims take turns until this transaction ends.
fn limits_now(
    tx: &mut postgres::Transaction<'_>,
    limits: &[(Scope, Limit)],
) -> Result<Limits, postgres::Error> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('muster_limits'))",
        &[],
    )?;
    let mut l = Limits::default();
    for (s, lim) in limits {
        l.set(s.clone(), Some(*lim));
    }
    let (mut by_type, mut by_key) = (HashMap::new(), HashMap::new());
    for r in tx.query(
        "SELECT kind, task->>'concurrency_key', count(*) FROM muster_tasks
         WHERE state IN ('assigned', 'running') GROUP BY 1, 2",
        &[],
    )? {
        let n = r.get::<_, i64>(2) as u64;
        *by_type.entry(r.get::<_, String>(0)).or_insert(0) += n;
        if let Some(k) = r.get::<_, Option<String>>(1) {
            *by_key.entry(k).or_insert(0) += n;
        }
    }
    l.set_held(by_type, by_key);
    for r in tx.query("SELECT scope, tokens, at FROM muster_limit_buckets", &[])? {
        if let Some(s) = Scope::from_text(r.get(0)) {
            l.set_bucket(s, r.get(1), r.get::<_, i64>(2) as u64);
        }
    }
    Ok(l)
}

/// What changed since `since`, read by one statement under one snapshot
/// (the statement's own, which `pg_current_snapshot()` reports): two round
/// trips a look, where a transaction of a query per table took fourteen.
/// A row this incarnation (`$3`) inserted and nothing changed since
/// (`rev` 1) is not read back: the book made that task before the writer
/// stored it. Columns: what the row is (`k`), its order (`n`), two texts,
/// four numbers, a flag.
fn look_sql() -> String {
    let f = Since::filter(1);
    format!(
        "SELECT 0 AS k, NULL::bigint AS n, pg_snapshot_xmax(s)::text AS a,
                array_to_string(array(SELECT pg_snapshot_xip(s)::text), ',') AS b,
                NULL::bigint AS h, NULL::bigint AS l, NULL::bigint AS r,
                NULL::bigint AS c, NULL::bool AS d
         FROM pg_current_snapshot() s
         UNION ALL
         SELECT 1, id, task::text, NULL, holder_incarnation, lease, rev,
                cancel_requested_at, deleted_at IS NOT NULL
         FROM muster_tasks WHERE {f} AND (rev <> 1 OR inserted_by IS DISTINCT FROM $3)
         UNION ALL
         SELECT 2, seq, lines::text, NULL, task_id, NULL, NULL, NULL, NULL
         FROM muster_task_logs WHERE {f}
         UNION ALL
         SELECT 3, NULL, kind, NULL, NULL, NULL, NULL, NULL, paused
         FROM muster_queues WHERE {f}
         UNION ALL
         SELECT 4, NULL, name, CASE WHEN deleted_at IS NULL THEN schedule::text END,
                NULL, NULL, NULL, NULL, NULL
         FROM muster_schedules WHERE {f}
         UNION ALL
         SELECT 5, NULL, spec::text, rule::text, NULL, NULL, NULL, NULL, NULL
         FROM muster_limits WHERE {f}
         ORDER BY k, n"
    )
}

/// Column `i` of `r`, a JSON text, as a `T`.
fn json<T: serde::de::DeserializeOwned>(r: &postgres::Row, i: usize) -> Option<T> {
    r.get::<_, Option<&str>>(i)
        .and_then(|t| serde_json::from_str(t).ok())
}

/// One look with `sql` ([`look_sql`], built once per mirror).
fn poll(c: &mut Client, sql: &str, since: &mut Since, me: i64) -> Result<Changes, postgres::Error> {
    let (xmax, running) = since.params();
    let got = c.query(sql, &[&xmax, &running, &me])?;
    let mut ch = Changes::default();
    let mut next = None;
    for r in &got {
        let text = |i| r.get::<_, Option<&str>>(i);
        match r.get::<_, i32>(0) {
            0 => {
                let running = text(3).filter(|t| !t.is_empty());
                next = Some(Since::new(
                    text(2).and_then(|t| t.parse().ok()).unwrap_or(0),
                    running.map_or(Vec::new(), |t| t.split(',').map(String::from).collect()),
                ));
            }
            1 => {
                if let Some(task) = json(r, 2) {
                    ch.rows.push(Row {
                        task,
                        holder: r.get(4),
                        lease: r.get::<_, Option<i64>>(5).unwrap_or(0),
                        rev: r.get::<_, Option<i64>>(6).unwrap_or(0),
                        cancel_requested_at: r.get::<_, Option<i64>>(7).map(|v| v as u64),
                        deleted: r.get::<_, Option<bool>>(8).unwrap_or(false),
                    });
                }
            }
            2 => {
                if let (Some(lines), Some(id)) = (json(r, 2), r.get::<_, Option<i64>>(4)) {
                    ch.logs.push((TaskId(id as u64), lines));
                }
            }
            3 => {
                if let Some(kind) = text(2) {
                    let paused = r.get::<_, Option<bool>>(8).unwrap_or(false);
                    ch.pauses.push((kind.to_string(), paused));
                }
            }
            4 => {
                if let Some(name) = text(2) {
                    ch.schedules.push((name.to_string(), json(r, 3)));
                }
            }
            _ => {
                if let Some(scope) = json(r, 2) {
                    ch.limits.push((scope, json(r, 3)));
                }
            }
        }
    }
    if let Some(next) = next {
        *since = next;
    }
    Ok(ch)
}

/// The notifier thread: one `NOTIFY muster_tasks` after the writer's and
/// the claims' commits, for every node's mirror.
pub fn notify(store: Arc<Store>) {
    let link = store.cluster.link("notify");
    store.notifier.run(link, CHANNEL, &store.stopping);
}

/// The mirror thread: listens, reads what changed, hands it to the book;
/// and the leader's task duties while this node leads.
pub fn mirror(store: Arc<Store>, copy: std::sync::Weak<dyn Replica>) {
    let mut watch = Watch::new(store.cluster.link("mirror"), CHANNEL);
    let mut since = Since::default();
    let sql = look_sql();
    let mut last_requeue = Instant::now();
    let mut last_prune: Option<Instant> = None;
    let mut last_settle = Instant::now();
    let st = &store.shared.stats;
    let pause = || std::thread::sleep(Duration::from_millis(200));
    while !store.stopping.load(Ordering::Acquire) {
        store.committing.cancel_if_stuck();
        let Ok(c) = watch.get() else {
            pause();
            continue;
        };
        // Rows this look read, for the gap before the next.
        let read = match poll(c, &sql, &mut since, store.cluster.me().incarnation) {
            Ok(changes) => {
                let read = changes.rows.len() + changes.logs.len();
                if !changes.is_empty() {
                    let Some(copy) = copy.upgrade() else { return };
                    copy.mirror(changes);
                }
                read
            }
            Err(e) => {
                let d = watch.link.failed(&e);
                log::warn!("cluster: cannot read task changes: {d}");
                pause();
                continue;
            }
        };
        if let Some(epoch) = store.cluster.leading() {
            let tick = store.next_tick.load(Ordering::Relaxed);
            if tick != 0 && tick <= unix_ms() {
                let Some(copy) = copy.upgrade() else { return };
                let due = copy.ticks_due(unix_ms());
                super::fire::fire(&store, &mut watch.link, epoch, due);
            }
            super::duties::leader_duties(
                &store,
                &mut watch.link,
                epoch,
                &mut last_requeue,
                &mut last_prune,
                &mut last_settle,
                st,
            );
        }
        watch.wait(store.until_due(POLL), read);
    }
}
