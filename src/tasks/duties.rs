//! The leader's task duties in cluster mode, run from the mirror thread
//! while this node leads, each under the leader's fence: queue the
//! scheduled tasks that are due, give back the tasks of nodes whose
//! leases lapsed, and delete finished tasks past their retention.

use super::book::requeued;
use super::cluster::{Store, ms};
use super::task::{State, Task};
use crate::clock::unix_ms;
use crate::cluster::db::{Link, describe};
use crate::cluster::lease::FENCE;
use crate::stats::Counter;
use postgres::Client;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How often the leader looks for dead nodes' tasks and for expired ones.
const REQUEUE_EVERY: Duration = Duration::from_secs(1);
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How often the leader looks at the waiting tasks, at most: each look
/// reads every one of them. The mirror wakes this often while any waits.
pub(super) const SETTLE_EVERY: Duration = Duration::from_millis(100);
/// Tasks one leader turn gives back, at most.
const REQUEUE_BATCH: i64 = 1000;

/// Leader duty: give back the tasks of nodes whose leases lapsed, under
/// the fence of `epoch`. How many went back to the queue, and how many
/// failed with their attempts spent.
fn requeue_dead(
    c: &mut Client,
    me: &crate::cluster::lease::Me,
    epoch: i64,
    ttl: Duration,
    now_ms: u64,
) -> Result<(u64, u64), postgres::Error> {
    let mut tx = c.transaction()?;
    let rows = tx.query(
        "SELECT task::text FROM muster_tasks t
         WHERE state IN ('assigned', 'running')
           AND NOT EXISTS (SELECT 1 FROM muster_nodes n
               WHERE n.incarnation = t.holder_incarnation AND n.expires_at > now())
           AND NOT EXISTS (SELECT 1 FROM muster_nodes n
               WHERE n.node_id = t.holder_node AND n.expires_at > now()
                 AND n.started_at > now() - make_interval(secs => $1))
         ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
        &[&ttl.as_secs_f64(), &REQUEUE_BATCH],
    )?;
    if rows.is_empty() {
        return Ok((0, 0));
    }
    let (mut ids, mut states, mut texts, mut finished) = (vec![], vec![], vec![], vec![]);
    let (mut back, mut lost) = (0, 0);
    for r in &rows {
        let Ok(mut t) = serde_json::from_str::<Task>(r.get(0)) else {
            continue;
        };
        let max = t.max_attempts;
        if requeued(&mut t.progress, max, now_ms) {
            lost += 1;
        } else {
            back += 1;
        }
        log::info!(
            "task {} {} (its node was lost; attempt {} of {max})",
            t.id,
            if t.state() == State::Queued {
                "requeued"
            } else {
                "failed: worker lost"
            },
            t.progress.attempt
        );
        ids.push(t.id.0 as i64);
        states.push(t.state().as_str());
        finished.push(ms(t.progress.finished_at));
        texts.push(serde_json::to_string(&t).unwrap_or_default());
    }
    let n = tx.execute(
        &format!(
            "UPDATE muster_tasks t SET
                 task = u.task::jsonb, state = u.state, finished_at = u.finished_at, lease = 0,
                 holder_node = CASE WHEN u.state = 'queued' THEN NULL ELSE t.holder_node END,
                 holder_incarnation = NULL, cancel_requested_at = NULL,
                 rev = t.rev + 1, changed = pg_current_xact_id()
             FROM unnest($4::bigint[], $5::text[], $6::text[], $7::bigint[])
                  AS u(id, state, task, finished_at)
             WHERE t.id = u.id AND {FENCE}"
        ),
        &[
            &me.node_id,
            &me.incarnation,
            &epoch,
            &ids,
            &states,
            &texts,
            &finished,
        ],
    )?;
    if n == 0 {
        return Ok((0, 0));
    }
    tx.commit()?;
    Ok((back, lost))
}

/// Leader duty: free the `Idempotency-Key`s of tasks submitted before
/// `before` (Unix ms), so a submission with one makes a new task, as on a
/// single node. The tasks keep their copy; no node reads it for this.
fn release_keys(
    c: &mut Client,
    me: &crate::cluster::lease::Me,
    epoch: i64,
    before: u64,
) -> Result<u64, postgres::Error> {
    c.execute(
        &format!(
            "UPDATE muster_tasks SET idempotency_key = NULL
             WHERE idempotency_key IS NOT NULL AND id < $4 AND {FENCE}"
        ),
        &[
            &me.node_id,
            &me.incarnation,
            &epoch,
            // Ids begin with the millisecond they were made in.
            &((before << 20) as i64),
        ],
    )
}

/// Leader duty: delete tasks finished before `before` (Unix ms), with
/// their logs, and those marked deleted a minute ago.
fn prune(
    c: &mut Client,
    me: &crate::cluster::lease::Me,
    epoch: i64,
    before: u64,
    dead_before: u64,
) -> Result<u64, postgres::Error> {
    // Every node has read a deletion mark a minute on.
    let marked = unix_ms().saturating_sub(60_000) as i64;
    let n = c.execute(
        &format!(
            "DELETE FROM muster_tasks
             WHERE (finished_at < $4 AND state <> 'dead' OR finished_at < $5 AND state = 'dead'
                    OR deleted_at < $6)
               AND id NOT IN (SELECT unnest(depends_on) FROM muster_tasks WHERE state = 'waiting')
               AND {FENCE}"
        ),
        &[
            &me.node_id,
            &me.incarnation,
            &epoch,
            &(before as i64),
            &(dead_before as i64),
            &marked,
        ],
    )?;
    c.execute(
        &format!("DELETE FROM muster_schedules WHERE deleted_at < $4 AND {FENCE}"),
        &[&me.node_id, &me.incarnation, &epoch, &marked],
    )?;
    Ok(n)
}

/// Leader duty: queue the scheduled tasks due by `now_ms`, under the fence
/// of `epoch`, in one statement. How many.
fn queue_due(
    c: &mut Client,
    me: &crate::cluster::lease::Me,
    epoch: i64,
    now_ms: u64,
) -> Result<u64, postgres::Error> {
    c.execute(
        &format!(
            "UPDATE muster_tasks SET state = 'queued',
                 task = jsonb_set(jsonb_set(task, '{{progress,state}}', '\"queued\"'),
                                  '{{progress,queued_at}}', to_jsonb($4::bigint)),
                 rev = rev + 1, changed = pg_current_xact_id()
             WHERE state = 'scheduled'
               AND (task->'progress'->>'run_at')::bigint <= $4 AND {FENCE}"
        ),
        &[&me.node_id, &me.incarnation, &epoch, &(now_ms as i64)],
    )
}

/// Leader duty: settle the waiting tasks, under the fence of `epoch`:
/// fail each with a dependency that ended otherwise than in success (or
/// is gone), queue (or schedule, for a `run_at` ahead) each whose
/// dependencies all succeeded. One read first, and a write only for what
/// it found: an empty write would still wake every node. How many moved.
fn settle_waiting(
    c: &mut Client,
    me: &crate::cluster::lease::Me,
    epoch: i64,
    now_ms: u64,
) -> Result<u64, postgres::Error> {
    let rows = c.query(
        "SELECT w.id,
                (SELECT min(d.id) FROM unnest(w.depends_on) AS d(id)
                     LEFT JOIN muster_tasks o ON o.id = d.id
                 WHERE o.id IS NULL OR o.deleted_at IS NOT NULL
                    OR o.state IN ('failed', 'cancelled', 'timed_out', 'dead')),
                (SELECT bool_and(coalesce(o.state = 'succeeded' AND o.deleted_at IS NULL, false))
                 FROM unnest(w.depends_on) AS d(id) LEFT JOIN muster_tasks o ON o.id = d.id)
         FROM muster_tasks w WHERE w.state = 'waiting'",
        &[],
    )?;
    let (mut failed, mut errors, mut ready) = (Vec::new(), Vec::new(), Vec::new());
    for r in &rows {
        let id: i64 = r.get(0);
        match (r.get::<_, Option<i64>>(1), r.get::<_, Option<bool>>(2)) {
            (Some(dep), _) => {
                failed.push(id);
                let dep = super::task::TaskId(dep as u64);
                errors.push(format!("dependency failed: {dep}"));
            }
            (None, Some(true)) => ready.push(id),
            _ => {}
        }
    }
    let mut moved = 0;
    let now = now_ms as i64;
    if !failed.is_empty() {
        moved += c.execute(
            &format!(
                "UPDATE muster_tasks t SET state = 'failed', finished_at = $4,
                     task = jsonb_set(jsonb_set(jsonb_set(task,
                         '{{progress,state}}', '\"failed\"'),
                         '{{progress,finished_at}}', to_jsonb($4::bigint)),
                         '{{progress,error}}', to_jsonb(u.error)),
                     rev = rev + 1, changed = pg_current_xact_id()
                 FROM unnest($5::bigint[], $6::text[]) AS u(id, error)
                 WHERE t.id = u.id AND t.state = 'waiting' AND {FENCE}"
            ),
            &[&me.node_id, &me.incarnation, &epoch, &now, &failed, &errors],
        )?;
    }
    if !ready.is_empty() {
        moved += c.execute(
            &format!(
                "UPDATE muster_tasks t SET
                     state = CASE WHEN (task->'progress'->>'run_at')::bigint > $4
                             THEN 'scheduled' ELSE 'queued' END,
                     task = CASE WHEN (task->'progress'->>'run_at')::bigint > $4
                         THEN jsonb_set(task, '{{progress,state}}', '\"scheduled\"')
                         ELSE jsonb_set(jsonb_set(task #- '{{progress,run_at}}',
                             '{{progress,state}}', '\"queued\"'),
                             '{{progress,queued_at}}', to_jsonb($4::bigint)) END,
                     rev = rev + 1, changed = pg_current_xact_id()
                 WHERE t.id = ANY($5) AND t.state = 'waiting' AND {FENCE}"
            ),
            &[&me.node_id, &me.incarnation, &epoch, &now, &ready],
        )?;
    }
    Ok(moved)
}

/// The leader's task duties, each at its own pace: give back lost nodes'
/// tasks, delete expired ones.
pub(super) fn leader_duties(
    store: &Store,
    link: &mut Link,
    epoch: i64,
    last_requeue: &mut Instant,
    last_prune: &mut Option<Instant>,
    last_settle: &mut Instant,
    st: &crate::stats::Stats,
) {
    let me = store.cluster.me().clone();
    let now = Instant::now();
    let due = store.next_due.load(Ordering::Relaxed);
    if due != 0 && due <= unix_ms() {
        let Ok(c) = link.get() else { return };
        match queue_due(c, &me, epoch, unix_ms()) {
            // Until this node's next turn says when the next one is due.
            Ok(_) => store.next_due.store(0, Ordering::Relaxed),
            Err(e) => {
                link.failed(&e);
                log::warn!("cluster: cannot queue scheduled tasks: {}", describe(&e));
            }
        }
    }
    if store.waiting.load(Ordering::Relaxed) && now.duration_since(*last_settle) >= SETTLE_EVERY {
        *last_settle = now;
        let Ok(c) = link.get() else { return };
        if let Err(e) = settle_waiting(c, &me, epoch, unix_ms()) {
            link.failed(&e);
            log::warn!(
                "cluster: cannot settle tasks waiting for their dependencies: {}",
                describe(&e)
            );
        }
    }
    if now.duration_since(*last_requeue) >= REQUEUE_EVERY {
        *last_requeue = now;
        let Ok(c) = link.get() else { return };
        match requeue_dead(c, &me, epoch, store.cluster.ttl(), unix_ms()) {
            Ok((back, lost)) => {
                st.add(Counter::TasksRequeued, back);
                st.add(Counter::TasksLost, lost);
            }
            Err(e) => {
                link.failed(&e);
                log::warn!(
                    "cluster: cannot give back lost nodes' tasks: {}",
                    describe(&e)
                );
            }
        }
    }
    if last_prune.is_none_or(|t| now.duration_since(t) >= PRUNE_EVERY) {
        *last_prune = Some(now);
        let cfg = store.shared.config.get();
        let keep = cfg.tasks.retention.as_millis() as u64;
        let keep_dead = cfg.tasks.dead_retention.as_millis() as u64;
        let Ok(c) = link.get() else { return };
        let now_ms = unix_ms();
        match prune(
            c,
            &me,
            epoch,
            now_ms.saturating_sub(keep),
            now_ms.saturating_sub(keep_dead),
        ) {
            Ok(n) if n > 0 => log::info!("cluster: {n} tasks past task_retention deleted"),
            Ok(_) => {}
            Err(e) => {
                link.failed(&e);
                log::warn!("cluster: cannot delete expired tasks: {}", describe(&e));
            }
        }
        let keep_keys = cfg.tasks.idempotency_retention.as_millis() as u64;
        let Ok(c) = link.get() else { return };
        if let Err(e) = release_keys(c, &me, epoch, now_ms.saturating_sub(keep_keys)) {
            link.failed(&e);
            log::warn!(
                "cluster: cannot free Idempotency-Keys past idempotency_retention: {}",
                describe(&e)
            );
        }
    }
}
