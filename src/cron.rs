//! When a periodic schedule fires: a 5-field cron expression read in an
//! IANA time zone, or `@every DURATION` counted from the schedule's
//! creation. Pure: text in, Unix milliseconds out; no clock, no logging.
//!
//! It does not run anything, keep schedules, or decide what to do about
//! ticks missed while the daemon was down: [`Spec::ticks_between`] lists
//! them and the caller chooses. No calendar arithmetic is written here:
//! `croner` matches the expression against wall-clock times and `jiff`
//! turns wall-clock times into instants with the zone's rules. The
//! `Local` adapter below only hands one to the other.
//!
//! Expressions are the five Vixie cron fields, minute hour day-of-month
//! month day-of-week, with names (`MON`, `JAN`), ranges, lists and steps;
//! when both day fields are restricted a day matches either, as in Vixie
//! cron. croner also takes its extensions (`L`, `W`, `#`, `?`, a `+` day-of-
//! week for "both"); seconds and years are refused. The macros `@hourly`,
//! `@daily` (`@midnight`), `@weekly`, `@monthly`, `@yearly` (`@annually`)
//! stand for their usual expressions.
//!
//! Daylight saving time, as Vixie cron treats it (croner's rule, tested
//! below on Europe/Paris):
//! - A *fixed-time* expression (one minute and one hour, like `30 2 * * *`)
//!   whose time falls in a spring-forward gap fires once, at the first
//!   instant after the gap (03:00 local); one whose time occurs twice in a
//!   fall-back fires once, at the first of the two.
//! - Any other expression (`*/15 * * * *`, `30 * * * *`) counts elapsed
//!   time: times in a gap do not exist and are skipped, and times that occur
//!   twice fire twice, an hour apart.
//!
//! Costs: a parsed expression holds about 5 KB (croner keeps a byte per
//! year up to 5000), shared between clones. `next_after` allocates nothing;
//! an expression that never matches (`0 0 30 2 *`) costs a long search each
//! call, so [`Spec::parse`] refuses one with no tick in the next 400 years.

use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};
use croner::{CivilDate, CivilDateTime, CivilTime, Cron, CronDateTime, Resolution, Weekday};
use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp};
use std::cmp::Ordering;
use std::sync::Arc;

/// The shortest `@every` period.
const MIN_EVERY_MS: u64 = 1000;
/// The longest `@every` period: 366 days.
const MAX_EVERY_MS: u64 = 366 * 86_400_000;
/// The cron fields in order, and the values each takes.
const FIELDS: [(&str, &str); 5] = [
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12"),
    ("day-of-week", "0-7"),
];

/// A schedule's timing: a 5-field cron expression in an IANA zone, or
/// `@every DURATION`.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    /// The expression as given, trimmed.
    cron: String,
    /// The zone's IANA name as the database spells it.
    timezone: String,
    timing: Timing,
}

#[derive(Clone, Debug, PartialEq)]
enum Timing {
    /// Shared: a parsed expression is about 5 KB.
    Cron(Arc<Cron>, TimeZone),
    /// Ticks at creation + k * period, k >= 1.
    Every { period_ms: u64 },
}

impl Spec {
    /// `cron`: "*/5 * * * *" style, a macro like "@daily", or "@every 30s"
    /// (units ms, s, m, h, d, combined like 1h30m; from 1s to 366d).
    /// `timezone`: an IANA name ("Europe/Paris"); "UTC" when `None`.
    /// An error names the field at fault, "cron" or "timezone", and says
    /// what is wrong with it.
    pub fn parse(cron: &str, timezone: Option<&str>) -> Result<Spec, (&'static str, String)> {
        let name = timezone.unwrap_or("UTC").trim();
        let zone =
            TimeZone::get(name).map_err(|_| ("timezone", format!("unknown time zone {name:?}")))?;
        let timezone = zone.iana_name().unwrap_or(name).to_string();
        let text = cron.trim();
        let timing = parse_timing(text, &zone).map_err(|msg| ("cron", msg))?;
        Ok(Spec {
            cron: text.to_string(),
            timezone,
            timing,
        })
    }

    /// The first tick strictly after `after_ms` (Unix milliseconds), or
    /// `None` if there is none. `anchor_ms`, the schedule's creation, is
    /// where `@every` counts from: its ticks are anchor + k * period for
    /// k = 1, 2, ...; cron expressions ignore it.
    pub fn next_after(&self, after_ms: u64, anchor_ms: u64) -> Option<u64> {
        match &self.timing {
            Timing::Cron(cron, zone) => next_cron(cron, zone, after_ms),
            Timing::Every { period_ms } => {
                let k = after_ms.saturating_sub(anchor_ms) / period_ms + 1;
                anchor_ms.checked_add(k.checked_mul(*period_ms)?)
            }
        }
    }

    /// The ticks in (`after_ms`, `until_ms`], oldest first, at most `max`
    /// of them: what a schedule missed while the daemon was down.
    pub fn ticks_between(
        &self,
        after_ms: u64,
        until_ms: u64,
        anchor_ms: u64,
        max: usize,
    ) -> Vec<u64> {
        let mut ticks = Vec::new();
        let mut at = after_ms;
        while ticks.len() < max {
            match self.next_after(at, anchor_ms) {
                Some(t) if t <= until_ms => {
                    ticks.push(t);
                    at = t;
                }
                _ => break,
            }
        }
        ticks
    }

    /// The expression as given, trimmed.
    pub fn cron(&self) -> &str {
        &self.cron
    }

    /// The zone's IANA name ("UTC" by default).
    pub fn timezone(&self) -> &str {
        &self.timezone
    }
}

/// Reads the expression; a user-facing message on error.
fn parse_timing(text: &str, zone: &TimeZone) -> Result<Timing, String> {
    if text.is_empty() {
        return Err("empty: want 5 fields like \"*/5 * * * *\", or \"@every 30s\"".into());
    }
    let mut words = text.split_whitespace();
    let first = words.next().unwrap_or_default();
    let expr = if first.starts_with('@') {
        let rest: Vec<&str> = words.collect();
        let name = first.to_ascii_lowercase();
        if name == "@every" {
            let [period] = rest.as_slice() else {
                return Err(format!("{text:?}: want one duration, like @every 30s"));
            };
            let period_ms = parse_every(period).map_err(|e| format!("{text:?}: {e}"))?;
            return Ok(Timing::Every { period_ms });
        }
        let expr = match name.as_str() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            _ => {
                return Err(format!(
                    "unknown macro {first:?} (use @hourly, @daily, @weekly, @monthly, \
                     @yearly or @every DURATION)"
                ));
            }
        };
        if !rest.is_empty() {
            return Err(format!("{text:?}: {first} takes no fields"));
        }
        expr
    } else {
        let n = text.split_whitespace().count();
        if n != 5 {
            return Err(format!(
                "{text:?}: want 5 fields (minute hour day-of-month month day-of-week), found {n}"
            ));
        }
        text
    };
    check_names(expr)?;
    let cron = parser()
        .parse(expr)
        .map_err(|e| format!("{text:?}: {}", explain(expr, &e)))?;
    // An expression that never matches would cost every next_after a long
    // search. A field that matches nothing (croner takes "," as an empty
    // list) is cheap to see; for the rest, the calendar repeats every 400
    // years, so one look that far suffices.
    if let Some(i) = empty_field(&cron) {
        let (name, _) = FIELDS[i];
        let field = expr.split_whitespace().nth(i).unwrap_or_default();
        return Err(format!("{text:?}: {name} {field:?} matches no {name}"));
    }
    if !matches_within_400_years(&cron, zone) {
        return Err(format!("{text:?} never fires"));
    }
    Ok(Timing::Cron(Arc::new(cron), zone.clone()))
}

/// croner's parser for plain 5-field expressions.
fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
}

/// The index in [`FIELDS`] of a minute, hour or month field that matches
/// no value at all.
fn empty_field(cron: &Cron) -> Option<usize> {
    let p = &cron.pattern;
    if !(0..60).any(|v| p.minute_match(v).unwrap_or(false)) {
        Some(0)
    } else if !(0..24).any(|v| p.hour_match(v).unwrap_or(false)) {
        Some(1)
    } else if !(1..13).any(|v| p.month_match(v).unwrap_or(false)) {
        Some(3)
    } else {
        None
    }
}

/// Whether the expression fires between 2000 and 2400 (one full cycle of
/// the Gregorian calendar, so also ever).
fn matches_within_400_years(cron: &Cron, zone: &TimeZone) -> bool {
    // 2000-01-01T00:00:00Z; a day early so every zone is still in 1999.
    const START_S: i64 = 946_684_800 - 86_400;
    const CYCLE_S: i64 = 146_097 * 86_400;
    let Ok(start) = Timestamp::from_second(START_S) else {
        return false;
    };
    match cron.find_next_occurrence(&Local::new(start, zone), false) {
        Ok(t) => t.at.as_second() <= START_S + CYCLE_S,
        Err(_) => false,
    }
}

/// Refuses names where they mean nothing: croner swaps `JAN` or `MON`
/// for a number wherever it stands, so `JAN * * * *` would be minute 1.
fn check_names(expr: &str) -> Result<(), String> {
    const MONTHS: [&str; 12] = [
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ];
    const DAYS: [&str; 8] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", "L"];
    for (i, field) in expr.split_whitespace().enumerate() {
        let allowed: &[&str] = match i {
            2 => &["L", "W", "LW"],
            3 => &MONTHS,
            4 => &DAYS,
            _ => &[],
        };
        let names = field
            .split(|c: char| !c.is_ascii_alphabetic())
            .filter(|w| !w.is_empty());
        for word in names {
            if !allowed.iter().any(|a| a.eq_ignore_ascii_case(word)) {
                let (name, _) = FIELDS[i.min(4)];
                return Err(format!("{expr:?}: {name} {field:?}: unknown name {word:?}"));
            }
        }
    }
    Ok(())
}

/// Says which field croner refused and why, in plain words.
fn explain(expr: &str, err: &CronError) -> String {
    // croner does not say which field; try each alone among stars.
    let fields: Vec<&str> = expr.split_whitespace().collect();
    for (i, ((name, range), field)) in FIELDS.iter().zip(&fields).enumerate() {
        let mut alone = ["*"; 5];
        alone[i] = field;
        if let Err(e) = parser().parse(&alone.join(" ")) {
            let msg = croner_message(&e);
            let plain = field.bytes().all(|b| b.is_ascii_digit());
            if msg.starts_with("Range out of bounds") {
                return format!("{name} {field:?}: a range must run low-high within {range}");
            }
            if msg.starts_with("Number out of bounds")
                || msg.starts_with("Position")
                || msg.starts_with("Day for closest weekday out of bounds")
            {
                return if plain {
                    format!("{name} {field} is out of range {range}")
                } else {
                    format!("{name} {field:?} goes outside {range}")
                };
            }
            if let CronError::IllegalCharacters(_) = e {
                return format!("{name} {field:?} is not a number, name, range, list or step");
            }
            return format!("{name} {field:?}: {}", tidy(&msg));
        }
    }
    tidy(&croner_message(err))
}

/// croner's message without its "Invalid pattern:" style prefix.
fn croner_message(err: &CronError) -> String {
    match err {
        CronError::InvalidPattern(m)
        | CronError::IllegalCharacters(m)
        | CronError::ComponentError(m) => m.clone(),
        other => other.to_string(),
    }
}

/// Lower-case first letter, no closing full stop: it follows a colon.
fn tidy(msg: &str) -> String {
    let msg = msg.trim().trim_end_matches('.');
    let mut chars = msg.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `@every`'s period in milliseconds: terms like `1h30m`, units ms, s, m,
/// h, d (the units of `config::units`), from 1s to 366d.
fn parse_every(text: &str) -> Result<u64, String> {
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("{rest:?} does not start with a number"));
        }
        let (num, tail) = rest.split_at(digits);
        let units = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(units);
        let scale: u64 = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("{num} has no unit (use ms, s, m, h or d)")),
            _ => return Err(format!("unknown unit {unit:?} (use ms, s, m, h or d)")),
        };
        total = num
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(scale))
            .and_then(|ms| total.checked_add(ms))
            .ok_or("longer than 366d")?;
        rest = tail;
    }
    if total < MIN_EVERY_MS {
        return Err("the period must be at least 1s".into());
    }
    if total > MAX_EVERY_MS {
        return Err("the period must be at most 366d".into());
    }
    Ok(total)
}

/// The next tick of a cron expression after `after_ms`.
fn next_cron(cron: &Cron, zone: &TimeZone, after_ms: u64) -> Option<u64> {
    // Ticks fall on whole seconds, so the first one after the second that
    // holds `after_ms` is the first one after `after_ms`.
    let second = i64::try_from(after_ms / 1000).ok()?;
    let start = Local::new(Timestamp::from_second(second).ok()?, zone);
    let next = cron.find_next_occurrence(&start, false).ok()?;
    u64::try_from(next.at.as_millisecond()).ok()
}

/// An instant with its wall-clock reading in a zone: what croner searches
/// over. croner's own jiff support is for jiff 0.2; this is the same
/// adapter for the jiff the daemon uses, borrowing the zone so a search
/// never touches its reference count.
#[derive(Clone)]
struct Local<'z> {
    at: Timestamp,
    wall: DateTime,
    zone: &'z TimeZone,
}

impl<'z> Local<'z> {
    fn new(at: Timestamp, zone: &'z TimeZone) -> Local<'z> {
        Local {
            at,
            wall: zone.to_datetime(at),
            zone,
        }
    }
}

impl CronDateTime for Local<'_> {
    fn to_civil(&self) -> CivilDateTime {
        let w = self.wall;
        // jiff keeps every part in range, as croner requires.
        CivilDateTime::new(
            CivilDate::from_parts_unchecked(
                i32::from(w.year()),
                w.month().unsigned_abs().into(),
                w.day().unsigned_abs().into(),
            ),
            CivilTime::from_parts_unchecked(
                w.hour().unsigned_abs().into(),
                w.minute().unsigned_abs().into(),
                w.second().unsigned_abs().into(),
            ),
        )
    }

    fn civil_weekday(&self) -> Weekday {
        let days = self.wall.weekday().to_sunday_zero_offset().unsigned_abs();
        Weekday::from_days_from_sunday(days.into())
    }

    fn resolve_civil(&self, civil: CivilDateTime) -> Result<Resolution<Self>, CronError> {
        let part = |v: u32| i8::try_from(v).map_err(|_| CronError::InvalidDate);
        let year = i16::try_from(civil.year()).map_err(|_| CronError::InvalidDate)?;
        let wall = DateTime::new(
            year,
            part(civil.month())?,
            part(civil.day())?,
            part(civil.hour())?,
            part(civil.minute())?,
            part(civil.second())?,
            0,
        )
        .map_err(|_| CronError::InvalidDate)?;
        let local = |at: Result<Timestamp, jiff::Error>| -> Result<Self, CronError> {
            Ok(Local {
                at: at.map_err(|_| CronError::InvalidTime)?,
                wall,
                zone: self.zone,
            })
        };
        let ambiguous = self.zone.to_ambiguous_timestamp(wall);
        Ok(match ambiguous.offset() {
            AmbiguousOffset::Unambiguous { offset } => {
                Resolution::Single(local(offset.to_timestamp(wall))?)
            }
            AmbiguousOffset::Fold { .. } => {
                Resolution::Ambiguous(local(ambiguous.earlier())?, local(ambiguous.later())?)
            }
            AmbiguousOffset::Gap { .. } => Resolution::Gap,
        })
    }

    fn checked_add_seconds(&self, seconds: i64) -> Option<Self> {
        let at = self
            .at
            .checked_add(SignedDuration::from_secs(seconds))
            .ok()?;
        Some(Local::new(at, self.zone))
    }

    fn cmp_instant(&self, other: &Self) -> Ordering {
        self.at.cmp(&other.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix milliseconds of a UTC time written "2026-03-29T01:00:00Z".
    fn ms(utc: &str) -> u64 {
        let t: Timestamp = utc.parse().unwrap();
        u64::try_from(t.as_millisecond()).unwrap()
    }

    fn utc(ms: u64) -> String {
        Timestamp::from_millisecond(ms as i64).unwrap().to_string()
    }

    fn spec(cron: &str, zone: &str) -> Spec {
        Spec::parse(cron, Some(zone)).unwrap()
    }

    /// The UTC times of the ticks in (after, until].
    fn ticks(s: &Spec, after: &str, until: &str) -> Vec<String> {
        s.ticks_between(ms(after), ms(until), 0, 1000)
            .into_iter()
            .map(utc)
            .collect()
    }

    #[test]
    fn next_ticks_in_utc() {
        // A Saturday.
        const NOON: &str = "2026-01-10T12:00:00Z";
        let cases = [
            ("* * * * *", NOON, "2026-01-10T12:01:00Z"),
            (
                "* * * * *",
                "2026-01-10T12:00:59.999Z",
                "2026-01-10T12:01:00Z",
            ),
            (
                "* * * * *",
                "2026-01-10T12:00:00.001Z",
                "2026-01-10T12:01:00Z",
            ),
            ("*/5 * * * *", NOON, "2026-01-10T12:05:00Z"),
            (
                "*/5 * * * *",
                "2026-01-10T12:03:10Z",
                "2026-01-10T12:05:00Z",
            ),
            (
                "*/5 * * * *",
                "2026-01-10T23:59:00Z",
                "2026-01-11T00:00:00Z",
            ),
            ("0 9 * * MON", NOON, "2026-01-12T09:00:00Z"),
            ("0 0 1 jan *", NOON, "2027-01-01T00:00:00Z"),
            ("@hourly", NOON, "2026-01-10T13:00:00Z"),
            ("@daily", NOON, "2026-01-11T00:00:00Z"),
            ("@weekly", NOON, "2026-01-11T00:00:00Z"),
            ("@monthly", NOON, "2026-02-01T00:00:00Z"),
            ("@yearly", NOON, "2027-01-01T00:00:00Z"),
            ("0 0 29 2 *", NOON, "2028-02-29T00:00:00Z"),
            // croner's extensions: last day, last Friday, fifth Monday.
            ("0 0 L * *", NOON, "2026-01-31T00:00:00Z"),
            ("0 0 * * 5L", NOON, "2026-01-30T00:00:00Z"),
            ("0 0 * * 1#5", NOON, "2026-03-30T00:00:00Z"),
            // Either day field matches when both are restricted.
            ("0 0 13 * FRI", NOON, "2026-01-13T00:00:00Z"),
        ];
        for (cron, after, want) in cases {
            let s = Spec::parse(cron, None).unwrap();
            let got = s.next_after(ms(after), 0).map(utc);
            assert_eq!(got.as_deref(), Some(want), "{cron} after {after}");
        }
    }

    #[test]
    fn every_counts_from_the_anchor() {
        let s = Spec::parse("@every 2s", None).unwrap();
        let anchor = 1_000_500;
        assert_eq!(s.next_after(anchor, anchor), Some(anchor + 2000));
        assert_eq!(s.next_after(anchor + 1999, anchor), Some(anchor + 2000));
        assert_eq!(s.next_after(anchor + 2000, anchor), Some(anchor + 4000));
        // Before its creation a schedule's first tick is still one period in.
        assert_eq!(s.next_after(0, anchor), Some(anchor + 2000));
        assert_eq!(s.next_after(u64::MAX - 1, anchor), None);
        assert_eq!(
            s.ticks_between(anchor, anchor + 7000, anchor, 10),
            [anchor + 2000, anchor + 4000, anchor + 6000]
        );
        let cases = [
            ("@every 1h30m", 5_400_000),
            ("@every 1500ms", 1500),
            ("@EVERY 1d", 86_400_000),
            ("@every 366d", MAX_EVERY_MS),
        ];
        for (cron, want) in cases {
            let s = Spec::parse(cron, None).unwrap();
            assert_eq!(s.next_after(0, 0), Some(want), "{cron}");
        }
    }

    #[test]
    fn daily_in_paris_follows_summer_time() {
        let s = spec("0 9 * * *", "Europe/Paris");
        let winter = s.next_after(ms("2026-01-15T00:00:00Z"), 0).map(utc);
        assert_eq!(winter.as_deref(), Some("2026-01-15T08:00:00Z"));
        let summer = s.next_after(ms("2026-07-15T00:00:00Z"), 0).map(utc);
        assert_eq!(summer.as_deref(), Some("2026-07-15T07:00:00Z"));
        assert_eq!(s.timezone(), "Europe/Paris");
        assert_eq!(s.cron(), "0 9 * * *");
    }

    #[test]
    fn spring_forward_gap_fires_once_after_the_gap() {
        // 2026-03-29 in Paris: 02:00 CET jumps to 03:00 CEST (01:00 UTC),
        // so 02:30 does not happen; the job runs at 03:00 local instead.
        let s = spec("30 2 * * *", "Europe/Paris");
        assert_eq!(
            ticks(&s, "2026-03-27T12:00:00Z", "2026-03-30T12:00:00Z"),
            [
                "2026-03-28T01:30:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-30T00:30:00Z"
            ]
        );
        // Interval expressions skip the times that do not exist.
        let s = spec("*/30 * * * *", "Europe/Paris");
        assert_eq!(
            ticks(&s, "2026-03-29T00:00:00Z", "2026-03-29T01:30:00Z"),
            [
                "2026-03-29T00:30:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-29T01:30:00Z"
            ]
        );
    }

    #[test]
    fn fall_back_overlap_fires_once() {
        // 2026-10-25 in Paris: 03:00 CEST goes back to 02:00 CET (01:00
        // UTC), so 02:30 happens at 00:30 UTC and again at 01:30 UTC.
        let s = spec("30 2 * * *", "Europe/Paris");
        assert_eq!(
            ticks(&s, "2026-10-24T12:00:00Z", "2026-10-26T12:00:00Z"),
            ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
        );
        // From inside the repeated hour the second 02:30 is not a tick.
        let next = s.next_after(ms("2026-10-25T01:15:00Z"), 0).map(utc);
        assert_eq!(next.as_deref(), Some("2026-10-26T01:30:00Z"));
        // Interval expressions count elapsed time: both 02:30s are ticks.
        let s = spec("30 * * * *", "Europe/Paris");
        assert_eq!(
            ticks(&s, "2026-10-25T00:00:00Z", "2026-10-25T02:00:00Z"),
            ["2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z"]
        );
    }

    #[test]
    fn ticks_between_lists_a_downtime() {
        let s = Spec::parse("* * * * *", None).unwrap();
        let down = ms("2026-05-01T10:00:30Z");
        let up = down + 10 * 60_000;
        let missed = s.ticks_between(down, up, 0, 100);
        assert_eq!(missed.len(), 10);
        assert_eq!(utc(missed[0]), "2026-05-01T10:01:00Z");
        assert_eq!(utc(missed[9]), "2026-05-01T10:10:00Z");
        assert_eq!(s.ticks_between(down, up, 0, 3).len(), 3);
        // The end is included, the start is not.
        let on_the_minute = ms("2026-05-01T10:00:00Z");
        let both_ends = s.ticks_between(on_the_minute, on_the_minute + 120_000, 0, 100);
        assert_eq!(both_ends, [on_the_minute + 60_000, on_the_minute + 120_000]);
    }

    #[test]
    fn bad_input_names_the_field() {
        let cases = [
            ("0 */5 * * * *", None, "cron", "want 5 fields"),
            ("* * * *", None, "cron", "found 4"),
            ("61 * * * *", None, "cron", "minute 61 is out of range 0-59"),
            ("0 24 * * *", None, "cron", "hour 24 is out of range 0-23"),
            (
                "0 0 0 * *",
                None,
                "cron",
                "day-of-month 0 is out of range 1-31",
            ),
            ("0 0 * 13 *", None, "cron", "month 13 is out of range 1-12"),
            (
                "0 0 * * 8",
                None,
                "cron",
                "day-of-week 8 is out of range 0-7",
            ),
            (
                "1-70 * * * *",
                None,
                "cron",
                "minute \"1-70\": a range must run low-high within 0-59",
            ),
            (
                "1-0 * * * *",
                None,
                "cron",
                "minute \"1-0\": a range must run low-high",
            ),
            (
                "x * * * *",
                None,
                "cron",
                "minute \"x\": unknown name \"x\"",
            ),
            ("% * * * *", None, "cron", "minute \"%\" is not a number"),
            ("JAN * * * *", None, "cron", "minute \"JAN\": unknown name"),
            ("0 0 * MON *", None, "cron", "month \"MON\": unknown name"),
            (
                "0 0 * * 1#9",
                None,
                "cron",
                "day-of-week \"1#9\": nth specifier",
            ),
            ("0 0 30 2 *", None, "cron", "never fires"),
            ("0 , * * *", None, "cron", "hour \",\" matches no hour"),
            ("@every 0s", None, "cron", "at least 1s"),
            ("@every 999ms", None, "cron", "at least 1s"),
            ("@every 367d", None, "cron", "at most 366d"),
            (
                "@every 99999999999999999999d",
                None,
                "cron",
                "longer than 366d",
            ),
            ("@every 10x", None, "cron", "unknown unit \"x\""),
            ("@every 10", None, "cron", "no unit"),
            ("@every h", None, "cron", "does not start with a number"),
            ("@every", None, "cron", "want one duration"),
            ("@every 1s 2s", None, "cron", "want one duration"),
            ("@daily 5", None, "cron", "takes no fields"),
            ("@reboot", None, "cron", "unknown macro \"@reboot\""),
            ("", None, "cron", "empty"),
            ("   ", None, "cron", "empty"),
            (
                "* * * * *",
                Some("Mars/Base"),
                "timezone",
                "unknown time zone \"Mars/Base\"",
            ),
            ("* * * * *", Some(""), "timezone", "unknown time zone"),
        ];
        for (cron, zone, field, want) in cases {
            let (f, msg) = Spec::parse(cron, zone).unwrap_err();
            assert_eq!(f, field, "{cron:?} {zone:?}: {msg}");
            assert!(msg.contains(want), "{cron:?} {zone:?}: {msg}");
        }
    }

    #[test]
    fn zone_names_are_canonical() {
        assert_eq!(Spec::parse("* * * * *", None).unwrap().timezone(), "UTC");
        let s = Spec::parse("* * * * *", Some("europe/paris")).unwrap();
        assert_eq!(s.timezone(), "Europe/Paris");
        assert_eq!(s, spec("* * * * *", "Europe/Paris"));
        assert_ne!(s, spec("* * * * *", "UTC"));
    }

    #[test]
    fn croner_extensions_and_odd_input() {
        // (expression, whether it parses)
        let cases = [
            ("0 0 L * *", true),
            ("0 0 LW * *", true),
            ("0 0 * * 5L", true),
            ("0 0 * * 1#5", true),
            ("0 0 29 2 +MON", true),
            ("0 0 ? * ?", true),
            ("@every 1m1ms", true),
            ("L * * * *", false),
            ("*/0 * * * *", false),
            ("5/ * * * *", false),
            ("0 0 * * L", false),
            ("@", false),
            ("@every 1s1", false),
        ];
        let zones = ["UTC", "Europe/Paris", "Australia/Lord_Howe", "Pacific/Apia"];
        let ends = [
            ms("4999-12-31T23:59:00Z"),
            ms("9999-12-30T00:00:00Z"),
            u64::MAX,
        ];
        for (cron, parses) in cases {
            for zone in zones {
                let parsed = Spec::parse(cron, Some(zone));
                assert_eq!(parsed.is_ok(), parses, "{cron:?} {zone}: {parsed:?}");
                let Ok(s) = parsed else { continue };
                for after in [0, 1, ms("2026-10-25T00:59:59Z")] {
                    let next = s.next_after(after, after);
                    assert!(next.is_some_and(|n| n > after), "{cron:?} {zone} {after}");
                }
                for after in ends {
                    let next = s.next_after(after, after);
                    assert!(next.is_none_or(|n| n > after), "{cron:?} {zone} {after}");
                }
            }
        }
    }
}
