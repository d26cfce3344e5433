//! Cluster mode: the leader fires the schedules' ticks, each in one
//! transaction that reads the schedule under a row lock and the leader's
//! fence, inserts the tick's task, and records the tick. A leader that
//! lost its lease, or a tick another leader already recorded, writes
//! nothing: each tick fires once however leaders change.

use super::cluster::Store;
use super::schedule::{CatchUp, Due, Fired, Overlap, Schedule};
use super::task::{TaskId, parse_submit};
use crate::clock::unix_ms;
use crate::cluster::db::{Link, describe};
use crate::cluster::lease::{FENCE, Me};
use crate::stats::Counter;
use postgres::Client;

/// Fire the ticks `due` (as this node's copy saw them).
pub(super) fn fire(store: &Store, link: &mut Link, epoch: i64, due: Vec<Due>) {
    let me = store.cluster.me().clone();
    for d in due {
        let Ok(c) = link.get() else { return };
        match fire_one(c, store, &me, epoch, &d) {
            Ok(true) => store.shared.stats.incr(Counter::TasksSubmitted),
            Ok(false) => {}
            Err(e) => {
                link.failed(&e);
                log::warn!("cluster: cannot fire schedule {}: {}", d.name, describe(&e));
                return;
            }
        }
    }
}

/// One tick; whether it submitted a task.
fn fire_one(
    c: &mut Client,
    store: &Store,
    me: &Me,
    epoch: i64,
    d: &Due,
) -> Result<bool, postgres::Error> {
    let now = unix_ms();
    let mut tx = c.transaction()?;
    let row = tx.query_opt(
        &format!(
            "SELECT schedule::text FROM muster_schedules
             WHERE name = $4 AND deleted_at IS NULL AND {FENCE} FOR UPDATE"
        ),
        &[&me.node_id, &me.incarnation, &epoch, &d.name],
    )?;
    // Not the leader any more, or the schedule is gone: nothing.
    let Some(row) = row else { return Ok(false) };
    let Ok(mut s) = serde_json::from_str::<Schedule>(row.get(0)) else {
        return Ok(false);
    };
    if s.paused || s.last_tick.is_some_and(|t| t >= d.tick) {
        return Ok(false);
    }
    s.last_tick = Some(d.tick);
    let running: Option<(i64, String)> = match s.last_task {
        None => None,
        Some(id) => tx
            .query_opt(
                "SELECT id, state FROM muster_tasks WHERE id = $1
                   AND state IN ('waiting', 'scheduled', 'queued', 'assigned', 'running')",
                &[&(id.0 as i64)],
            )?
            .map(|r| (r.get(0), r.get(1))),
    };
    let fire = match (d.late, s.catch_up, &running, s.overlap) {
        (true, CatchUp::Skip, ..) => false,
        (_, _, Some(_), Overlap::Skip) => false,
        (_, _, Some((id, state)), Overlap::Cancel) => {
            cancel(&mut tx, *id, state, now)?;
            true
        }
        _ => true,
    };
    let made = match fire {
        true => insert_tick(&mut tx, store, &s, d.tick, now)?,
        false => None,
    };
    match made {
        Some(id) => {
            s.last_task = Some(id);
            s.fired += 1;
        }
        None => s.skipped += 1,
    }
    tx.execute(
        "UPDATE muster_schedules SET schedule = $2::text::jsonb, changed = pg_current_xact_id()
         WHERE name = $1",
        &[&s.name, &serde_json::to_string(&s).unwrap_or_default()],
    )?;
    tx.commit()?;
    Ok(made.is_some())
}

/// The cancel of `overlap: cancel`: a task not yet held is cancelled
/// here; a held one is asked of its node, as `DELETE` asks.
fn cancel(
    tx: &mut postgres::Transaction<'_>,
    id: i64,
    state: &str,
    now: u64,
) -> Result<(), postgres::Error> {
    let now = now as i64;
    if matches!(state, "assigned" | "running") {
        tx.execute(
            "UPDATE muster_tasks SET cancel_requested_at = coalesce(cancel_requested_at, $2),
                 rev = rev + 1, changed = pg_current_xact_id() WHERE id = $1",
            &[&id, &now],
        )?;
    } else {
        tx.execute(
            "UPDATE muster_tasks SET state = 'cancelled', finished_at = $2,
                 task = jsonb_set(jsonb_set(task, '{progress,state}', '\"cancelled\"'),
                                  '{progress,finished_at}', to_jsonb($2::bigint)),
                 rev = rev + 1, changed = pg_current_xact_id()
             WHERE id = $1 AND state IN ('waiting', 'scheduled', 'queued')",
            &[&id, &now],
        )?;
    }
    Ok(())
}

/// Insert the task of `s`'s tick; its id, or `None` when it was not
/// (its template no longer parses, or its `unique_key` is held).
fn insert_tick(
    tx: &mut postgres::Transaction<'_>,
    store: &Store,
    s: &Schedule,
    tick: u64,
    now: u64,
) -> Result<Option<TaskId>, postgres::Error> {
    let Some(id) = store.next_id(now) else {
        return Ok(None);
    };
    let body = serde_json::to_vec(&s.task).unwrap_or_default();
    let mut t = match parse_submit(&body, id, now) {
        Ok(t) => t,
        Err(b) => {
            log::error!(
                "schedule {}: its task does not parse: {}: {}",
                s.name,
                b.0,
                b.1
            );
            return Ok(None);
        }
    };
    t.schedule = Some(Box::new(Fired {
        name: s.name.clone(),
        tick,
    }));
    let kept = tx.query_opt(
        "INSERT INTO muster_tasks
             (id, kind, priority, target_worker, target_labels, state, task, unique_key)
         VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, $7::text::jsonb, $8)
         ON CONFLICT DO NOTHING RETURNING id",
        &[
            &(t.id.0 as i64),
            &t.kind,
            &t.priority,
            &t.target.worker_id.as_deref(),
            &serde_json::to_string(&t.target.labels).unwrap_or_default(),
            &t.state().as_str(),
            &serde_json::to_string(&t).unwrap_or_default(),
            &t.unique_key,
        ],
    )?;
    if kept.is_none() {
        log::info!("schedule {}: tick skipped: its unique_key is held", s.name);
    }
    Ok(kept.map(|_| id))
}
