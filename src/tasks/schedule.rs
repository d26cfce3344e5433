//! Periodic tasks: a named schedule submits its task at each tick of a
//! cron expression in a time zone, or of `@every DURATION` ([`crate::cron`]
//! says when). What it does when the task it submitted last has not
//! ended (`overlap`: skip the tick, allow a second, cancel the first),
//! and after ticks it missed while the daemon was down or the schedule
//! paused (`catch_up`: skip them, or run once), is the schedule's own.
//!
//! Each tick fires once. The task a tick submits carries the schedule's
//! name and the tick ([`Fired`]), so the journal that keeps the task keeps
//! the fire with it: a restart never fires a tick again. In cluster mode
//! the leader fires, in the transaction that records the tick.
//!
//! A tick reached less than [`LATE_MS`] after its instant is on time; an
//! older one was missed, and only the latest missed tick is considered:
//! a schedule never fires twice to catch up.
//!
//! Cost: the schedules are ordered by their next tick, so a scheduler
//! turn looks only at those due; each parsed expression is shared by the
//! schedules that spell it the same way.

use super::task::{BadField, Task, TaskId, parse_submit};
use crate::cron::Spec;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Schedules kept at most.
pub const MAX_SCHEDULES: usize = 100_000;
/// A tick this long past its instant (ms) was missed, not just reached.
pub const LATE_MS: u64 = 30_000;
/// The longest schedule name.
pub const MAX_NAME: usize = 128;

/// When the task a schedule submitted last has not ended at its next tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// The tick is skipped (counted).
    #[default]
    Skip,
    /// Another task is submitted beside it.
    Allow,
    /// It is cancelled, and the tick's task submitted.
    Cancel,
}

/// What a schedule does about ticks it missed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Nothing: the next tick on time fires.
    #[default]
    Skip,
    /// One task for the latest missed tick, at once.
    Once,
}

/// A schedule as it is kept and shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    /// The task each tick submits, as `POST /api/tasks` takes it.
    pub task: Map<String, Value>,
    #[serde(default)]
    pub overlap: Overlap,
    #[serde(default)]
    pub catch_up: CatchUp,
    #[serde(default)]
    pub paused: bool,
    pub created_at: u64,
    /// The last tick handled, fired or skipped (Unix ms).
    #[serde(default)]
    pub last_tick: Option<u64>,
    /// The task the last fired tick submitted.
    #[serde(default)]
    pub last_task: Option<TaskId>,
    #[serde(default)]
    pub fired: u64,
    #[serde(default)]
    pub skipped: u64,
}

/// The schedule and tick that submitted a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fired {
    pub name: String,
    pub tick: u64,
}

/// A schedule as the API shows it: with its next tick.
#[derive(Serialize)]
pub struct View<'a> {
    #[serde(flatten)]
    pub schedule: &'a Schedule,
    pub next_tick: Option<u64>,
}

/// Whether `name` can name a schedule: 1-128 of `A-Za-z0-9._:-`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Read a `POST /api/schedules` body into a new schedule made at
/// `now_ms`, with its timing.
pub fn parse(body: &[u8], now_ms: u64) -> Result<(Schedule, Spec), BadField> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| BadField("body", format!("not JSON: {e}")))?;
    let Value::Object(m) = v else {
        return Err(BadField("body", "a schedule is one JSON object".into()));
    };
    let text = |k: &'static str| match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(BadField(k, "text".into())),
    };
    let name = text("name")?.ok_or_else(|| BadField("name", "required".into()))?;
    if !valid_name(&name) {
        return Err(BadField(
            "name",
            format!("1-{MAX_NAME} of A-Z a-z 0-9 . _ : -"),
        ));
    }
    let cron = text("cron")?.ok_or_else(|| BadField("cron", "required".into()))?;
    let zone = text("timezone")?;
    let spec = Spec::parse(&cron, zone.as_deref()).map_err(|(f, why)| BadField(f, why))?;
    let task = match m.get("task") {
        Some(Value::Object(t)) => t.clone(),
        _ => {
            return Err(BadField(
                "task",
                "required: the task to submit, as POST /api/tasks takes it".into(),
            ));
        }
    };
    check_template(&task, now_ms)?;
    let pick = |k: &'static str, words: &str| -> Result<Option<Value>, BadField> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if words.split(' ').any(|w| w == s) => {
                Ok(Some(Value::String(s.clone())))
            }
            Some(_) => Err(BadField(k, words.replace(' ', ", "))),
        }
    };
    let overlap: Overlap = pick("overlap", "skip allow cancel")?
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let catch_up: CatchUp = pick("catch_up", "skip once")?
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let paused = match m.get("paused") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(BadField("paused", "true or false".into())),
    };
    Ok((
        Schedule {
            name,
            cron: spec.cron().to_string(),
            timezone: spec.timezone().to_string(),
            task,
            overlap,
            catch_up,
            paused,
            created_at: now_ms,
            last_tick: None,
            last_task: None,
            fired: 0,
            skipped: 0,
        },
        spec,
    ))
}

/// A task template must be a submission that parses, and one that makes
/// sense again at every tick: no fixed `run_at`, no fixed `depends_on`.
fn check_template(task: &Map<String, Value>, now_ms: u64) -> Result<(), BadField> {
    for fixed in ["run_at", "depends_on"] {
        if task.contains_key(fixed) {
            return Err(BadField(
                "task",
                format!("{fixed}: names one time or task, not one per tick"),
            ));
        }
    }
    let body = serde_json::to_vec(task).unwrap_or_default();
    parse_submit(&body, TaskId(1), now_ms)
        .map(|_| ())
        .map_err(|BadField(f, why)| BadField("task", format!("{f}: {why}")))
}

/// The latest tick of `spec` after `base` and at or before `now_ms`.
fn latest_due(spec: &Spec, base: u64, now_ms: u64, anchor: u64) -> Option<u64> {
    let first = spec.next_after(base, anchor)?;
    if first > now_ms {
        return None;
    }
    // Dense schedules from an hour back; sparse ones from the first.
    let from = base.max(now_ms.saturating_sub(3_600_000));
    let mut t = match spec.next_after(from, anchor) {
        Some(t) if t <= now_ms && t >= first => t,
        _ => first,
    };
    for _ in 0..10_000 {
        match spec.next_after(t, anchor) {
            Some(n) if n <= now_ms => t = n,
            _ => break,
        }
    }
    Some(t)
}

struct Entry {
    schedule: Schedule,
    spec: Spec,
    next: Option<u64>,
    /// Its task, parsed once (as if submitted at time 0); `None` when it
    /// no longer parses.
    template: Option<Task>,
}

impl Schedule {
    /// Its task template as a task submitted at time 0.
    fn parsed(&self) -> Option<Task> {
        let body = serde_json::to_vec(&self.task).ok()?;
        parse_submit(&body, TaskId(0), 0).ok()
    }
}

/// Tick `tick` of a schedule's task, made from its parsed template: the
/// submission it would be at `now_ms`, with id `id`.
pub fn task_of(template: &Task, id: TaskId, now_ms: u64) -> Task {
    let mut t = template.clone();
    t.id = id;
    t.created_at = now_ms;
    // Parsed at time 0, a `delay_ms` is its run_at.
    let delay = t.progress.run_at;
    t.progress = super::task::Progress::fresh(now_ms, delay.map(|d| now_ms + d));
    t
}

/// A tick a turn must handle.
#[derive(Clone, Debug, PartialEq)]
pub struct Due {
    pub name: String,
    pub tick: u64,
    /// Reached [`LATE_MS`] or more after its instant.
    pub late: bool,
}

/// Every schedule, ordered by name and by next tick.
#[derive(Default)]
pub struct Schedules {
    by_name: BTreeMap<String, Entry>,
    by_next: BTreeSet<(u64, String)>,
    /// Parsed expressions by (cron, zone), shared, with how many
    /// schedules share each.
    specs: HashMap<(String, String), (Spec, usize)>,
}

impl Schedules {
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&Schedule> {
        self.by_name.get(name).map(|e| &e.schedule)
    }

    /// A schedule's task, parsed once.
    pub fn template(&self, name: &str) -> Option<&Task> {
        self.by_name.get(name)?.template.as_ref()
    }

    pub fn view(&self, name: &str) -> Option<View<'_>> {
        self.by_name.get(name).map(|e| View {
            schedule: &e.schedule,
            next_tick: e.next,
        })
    }

    pub fn views(&self) -> Vec<View<'_>> {
        self.by_name
            .values()
            .map(|e| View {
                schedule: &e.schedule,
                next_tick: e.next,
            })
            .collect()
    }

    /// Keep `s` (new, or in place of the one with its name). False when
    /// its timing no longer parses (a zone gone from the database).
    pub fn put(&mut self, s: Schedule) -> bool {
        let key = (s.cron.clone(), s.timezone.clone());
        let spec = match self.specs.get_mut(&key) {
            Some((spec, n)) => {
                *n += 1;
                spec.clone()
            }
            None => match Spec::parse(&s.cron, Some(&s.timezone)) {
                Ok(spec) => {
                    self.specs.insert(key, (spec.clone(), 1));
                    spec
                }
                Err((_, why)) => {
                    log::error!("schedule {}: {why}; it is not kept", s.name);
                    return false;
                }
            },
        };
        // The same task as before (a tick recorded): its parse is kept.
        let old = self.remove(&s.name);
        let template = match old {
            Some((was, template)) if was.task == s.task => template,
            _ => s.parsed(),
        };
        let next = (!s.paused)
            .then(|| spec.next_after(s.last_tick.unwrap_or(s.created_at), s.created_at))
            .flatten();
        if let Some(at) = next {
            self.by_next.insert((at, s.name.clone()));
        }
        self.by_name.insert(
            s.name.clone(),
            Entry {
                schedule: s,
                spec,
                next,
                template,
            },
        );
        true
    }

    /// Delete a schedule: it, and its parsed task.
    pub fn remove(&mut self, name: &str) -> Option<(Schedule, Option<Task>)> {
        let e = self.by_name.remove(name)?;
        if let Some(at) = e.next {
            self.by_next.remove(&(at, name.to_string()));
        }
        let key = (e.schedule.cron.clone(), e.schedule.timezone.clone());
        if let Some((_, n)) = self.specs.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.specs.remove(&key);
            }
        }
        Some((e.schedule, e.template))
    }

    /// A task that tick `f.tick` of schedule `f.name` submitted is kept
    /// (a replayed or mirrored submission): the tick is handled.
    pub fn note_fired(&mut self, f: &Fired, task: TaskId) {
        let Some(s) = self.get(&f.name) else { return };
        if s.last_tick.is_some_and(|t| t >= f.tick) {
            return;
        }
        let mut s = s.clone();
        s.last_tick = Some(f.tick);
        s.last_task = Some(task);
        s.fired += 1;
        self.put(s);
    }

    /// The ticks due by `now_ms`: for each schedule whose next tick has
    /// come, its latest tick by then.
    pub fn due(&self, now_ms: u64) -> Vec<Due> {
        self.by_next
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .filter_map(|(_, name)| {
                let e = self.by_name.get(name)?;
                let s = &e.schedule;
                let base = s.last_tick.unwrap_or(s.created_at);
                let tick = latest_due(&e.spec, base, now_ms, s.created_at)?;
                Some(Due {
                    name: name.clone(),
                    tick,
                    late: now_ms.saturating_sub(tick) >= LATE_MS,
                })
            })
            .collect()
    }

    /// When the earliest schedule is due next.
    pub fn next_due(&self) -> Option<u64> {
        self.by_next.first().map(|(at, _)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(extra: Value) -> Vec<u8> {
        let mut v =
            serde_json::json!({"name": "nightly", "cron": "@every 2s", "task": {"type": "scan"}});
        if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
            m.extend(e);
        }
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn schedules_parse_and_bad_ones_name_their_field() {
        let (s, _) = parse(&body(serde_json::json!({})), 1000).unwrap();
        assert_eq!(
            (s.overlap, s.catch_up, s.timezone.as_str()),
            (Overlap::Skip, CatchUp::Skip, "UTC")
        );
        for (extra, field) in [
            (serde_json::json!({"name": "a b"}), "name"),
            (serde_json::json!({"cron": "61 * * * *"}), "cron"),
            (serde_json::json!({"cron": "* * * *"}), "cron"),
            (serde_json::json!({"timezone": "Mars/Base"}), "timezone"),
            (serde_json::json!({"task": {"priority": 1}}), "task"),
            (
                serde_json::json!({"task": {"type": "a", "run_at": "2026-01-01T00:00:00Z"}}),
                "task",
            ),
            (
                serde_json::json!({"task": {"type": "a", "delay_ms": -5}}),
                "task",
            ),
            (serde_json::json!({"task": "scan"}), "task"),
            (serde_json::json!({"overlap": "queue"}), "overlap"),
            (serde_json::json!({"catch_up": "all"}), "catch_up"),
            (serde_json::json!({"paused": "yes"}), "paused"),
        ] {
            let e = parse(&body(extra.clone()), 1000).unwrap_err();
            assert_eq!(e.0, field, "{extra}: {e:?}");
        }
        assert_eq!(parse(b"[", 0).unwrap_err().0, "body");
    }

    #[test]
    fn the_due_tick_is_the_latest_and_a_late_one_says_so() {
        let mut all = Schedules::default();
        let (s, _) = parse(&body(serde_json::json!({})), 10_000).unwrap();
        all.put(s);
        assert!(all.due(11_999).is_empty());
        assert_eq!(
            all.due(12_000),
            [Due {
                name: "nightly".into(),
                tick: 12_000,
                late: false
            }]
        );
        // Down a while: one tick, the latest.
        let d = all.due(131_000);
        assert_eq!((d[0].tick, d[0].late), (130_000, false));
        // Once a tick is handled the next one is two seconds on.
        all.note_fired(
            &Fired {
                name: "nightly".into(),
                tick: 130_000,
            },
            TaskId(9),
        );
        assert_eq!(all.next_due(), Some(132_000));
        assert_eq!(all.get("nightly").unwrap().fired, 1);
        // Paused: never due.
        let mut s = all.get("nightly").unwrap().clone();
        s.paused = true;
        all.put(s);
        assert!(all.due(u64::MAX / 2).is_empty());
        assert!(all.remove("nightly").is_some());
        // An hourly one reached 40 s after its tick: late.
        let (s, _) = parse(
            &body(serde_json::json!({"name": "hourly", "cron": "0 * * * *"})),
            0,
        )
        .unwrap();
        all.put(s);
        let d = all.due(3_640_000);
        assert_eq!((d[0].tick, d[0].late), (3_600_000, true));
        all.remove("hourly");
        assert!(
            all.specs.is_empty(),
            "the expression goes with its last schedule"
        );
    }

    #[test]
    fn a_long_downtime_finds_the_latest_tick_without_walking_every_one() {
        let spec = Spec::parse("* * * * *", None).unwrap();
        // A week of minutes.
        let week = 7 * 86_400_000;
        let t = latest_due(&spec, 0, week + 30_000, 0).unwrap();
        assert_eq!(t, week);
        let spec = Spec::parse("@every 1s", None).unwrap();
        assert_eq!(latest_due(&spec, 0, week + 500, 0), Some(week));
        let spec = Spec::parse("0 0 1 1 *", None).unwrap();
        assert_eq!(latest_due(&spec, 0, 86_400_000, 0), None);
    }
}
