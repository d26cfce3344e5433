//! What each fuzz target checks, as plain functions: the libFuzzer targets
//! in `fuzz_targets/` call them on generated input, and `tests/fuzz.rs`
//! calls them on every file of the checked-in corpus in the normal test run.
//! A check panics only when the code under test is wrong.
//!
//! Each target uses one of these, so the others are unused there.
#![allow(dead_code)]

use muster::config;
use muster::proto::{self, Frame};
use muster::serve::{access, head, ws};
use std::path::Path;

/// Frame limit the daemon uses by default.
const MAX: usize = 65536;

/// A heartbeat frame: decoding never panics; whenever the fast path takes
/// a frame, the general path decodes the very same one; and a decoded
/// frame encodes to bytes that decode to it again.
pub fn frame(data: &[u8]) {
    let decoded = proto::decode(data, MAX);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(beat) = proto::fast::heartbeat(text) {
            let general = proto::decode::general(text);
            assert_eq!(
                Some(Frame::Heartbeat(beat)),
                general,
                "the two paths disagree on {text:?}"
            );
        }
    }
    if let Ok(f) = decoded {
        // What the frame would leave its worker holding is counted
        // without panicking, and never under its own worker id's refusal.
        let n = proto::retained::retained_bytes(&f);
        if let Err(rej) = proto::within_state(f.clone(), n.saturating_sub(1)) {
            assert_eq!(rej.worker_id.as_ref(), f.worker_id());
        }
        let again = proto::encode(&f);
        assert_eq!(
            proto::decode(again.as_bytes(), usize::MAX).as_ref(),
            Ok(&f),
            "{again}"
        );
    }
}

/// An HTTP request head: parsing never panics, and a parsed head says it
/// ended within the bytes it was given.
pub fn http_head(data: &[u8]) {
    if let Ok(Some((req, len))) = head::parse(data) {
        assert!(len <= data.len());
        let _ = head::query_param(&req.query, "status");
        let _ = head::percent_decode(&req.path);
        // The access checks read Host, Origin and Authorization.
        let mut cfg = config::defaults();
        let names = access::Names::of_this_machine();
        let peer = std::net::IpAddr::from([192, 0, 2, 1]);
        let _ = access::check(&req, peer, &cfg, &names);
        let _ = access::check_ws(&req, peer, &cfg, &names);
        cfg.http.tokens = config::Tokens::parse(&format!(
            "ci submit {}",
            config::tokens::hex(&config::tokens::digest(b"t"))
        ))
        .unwrap();
        cfg.http.api_read_requires_token = true;
        if let Ok(who) = access::check(&req, peer, &cfg, &names) {
            // With tokens, a change that passes carries one; a read without
            // one is an open read (the page, /health, a preflight).
            assert!(who.role.is_some() || !req.method.is_change(), "{who:?}");
            assert!(who.role.is_none() || req.authorization.is_some());
        }
        if let Ok(who) = access::check_ws(&req, peer, &cfg, &names) {
            assert_eq!(&*who.name, "ci");
        }
    }
}

/// A registry file (`state_dir/registry`) or a series file
/// (`state_dir/series`): reading never panics, and what it reads writes
/// back to a file that reads the same.
pub fn registry(data: &[u8]) {
    use muster::store::format;
    round_trip(
        data,
        format::MAGIC,
        |r, each| format::read(r, each),
        format::write_worker,
    );
    round_trip(
        data,
        format::SERIES_MAGIC,
        |r, each| format::read_series(r, each),
        |out, id: &String, series| format::write_series(out, id, series),
    );
}

type Each<'a, H> = &'a mut dyn FnMut(muster::store::format::Record<H>);

/// Read one kind of file; write what it read back with `write`; read that
/// again: the same workers, heads and runs.
fn round_trip<H: PartialEq + std::fmt::Debug>(
    data: &[u8],
    magic: &[u8; 8],
    read: impl Fn(&mut &[u8], Each<H>) -> Result<(u64, u64), muster::store::format::FormatError>,
    write: impl Fn(&mut Vec<u8>, &H, &[u8]) -> std::io::Result<()>,
) {
    use muster::store::format;
    let mut records = Vec::new();
    let Ok((saved_at, n)) = read(&mut &data[..], &mut |r| records.push(r)) else {
        return;
    };
    assert_eq!(n as usize, records.len());
    let mut out = Vec::new();
    format::write_header(&mut out, magic, saved_at).unwrap();
    for r in &records {
        let mut series = Vec::new();
        format::put_series(&mut series, saved_at, &r.samples, &r.runs);
        write(&mut out, &r.meta, &series).unwrap();
    }
    format::write_trailer(&mut out, n).unwrap();
    let mut again = Vec::new();
    let read = read(&mut &out[..], &mut |r| again.push((r.meta, r.runs)));
    assert_eq!(read.ok(), Some((saved_at, n)));
    let back: Vec<_> = records.into_iter().map(|r| (r.meta, r.runs)).collect();
    assert_eq!(again, back);
}

/// A config file: parsing never panics, and every value it accepts for a
/// key goes through that setting's own parser without panicking.
pub fn config_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = config::env::parse_dotenv(Path::new(".env"), text);
    if let Ok(map) = config::parse_file(Path::new("fuzz.conf"), text) {
        let mut cfg = config::defaults();
        for (k, v) in &map {
            if let Some(s) = config::find(k) {
                let _ = (s.set)(&mut cfg, v);
            }
        }
    }
}

/// A request path and query (split at the first `?`): parsing a WebSocket
/// subscription and its filters, or a tRPC call and its input, never
/// panics.
pub fn ws_query(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query) = text.split_once('?').unwrap_or((text, ""));
    let _ = ws::subscription(path, query);
    if let Some(procedures) = path.strip_prefix("/trpc/") {
        let _ = muster::serve::trpc::calls(procedures, query);
    }
}

/// A reply line from the daemon, as `muster beat` and the agent read it:
/// never panics, and what decodes encodes back to the same reply.
pub fn reply(data: &[u8]) {
    let Ok(r) = proto::decode_reply(data) else {
        return;
    };
    let line = match &r {
        // The daemon writes version 1 only.
        proto::Reply::Welcome(w) if w.version != 1 => return,
        proto::Reply::Welcome(w) => proto::encode_welcome(
            &w.worker_id,
            w.heartbeat_interval_ms,
            w.inactivity_timeout_ms,
            w.nodes.clone(),
        ),
        proto::Reply::Error(e) => match proto::ErrorCode::parse(&e.code) {
            Some(code) => proto::encode_error(code, &e.message),
            // A code the daemon never writes: read, and nothing to echo.
            None => return,
        },
        proto::Reply::Task(o) => proto::encode_task(o.clone()),
        proto::Reply::Cancel { task_id } => proto::encode_cancel(task_id),
        proto::Reply::Lease { task_id, lease } => proto::encode_lease(task_id, *lease),
    };
    assert_eq!(proto::decode_reply(&line).ok(), Some(r));
}

/// What an HTTP server sends back: to `muster` (the CLI's client and its
/// JSON answers) and to musterd posting alerts (the status line). Never
/// panics; a status read has three digits (`009` reads as 9, which the
/// notifier counts as a failure like any other that is not 2xx).
pub fn http_answer(data: &[u8]) {
    if let Ok(code) = muster::alerts::notify::status_of(data) {
        assert!(code <= 999, "{code}");
    }
    if let Ok((status, body)) = muster::cli::client::parse_response(data) {
        let at = muster::cli::net::Target::plain("127.0.0.1:8080".parse().unwrap());
        let _ = muster::cli::client::answer(&at, status, &body);
    }
}

/// The task journal (`state_dir/tasks.journal`): replay never panics, and
/// the records it keeps encode to a journal that replays the same.
pub fn journal(data: &[u8]) {
    use muster::tasks::journal;
    let mut records = Vec::new();
    let r = journal::replay(data, |rec| records.push(rec));
    assert_eq!(r.records, records.len());
    assert!(r.cut_at.is_none_or(|at| at as usize <= data.len()));
    let bytes: Vec<u8> = records.iter().flat_map(journal::encode).collect();
    let mut again = Vec::new();
    let r2 = journal::replay(&bytes, |rec| again.push(rec));
    assert_eq!(
        (r2.records, r2.skipped, r2.cut_at),
        (records.len(), 0, None)
    );
    assert_eq!(again, records);
}

/// A `POST /api/tasks` body: reading it never panics; a task it makes is
/// due no earlier than it was submitted, waits `scheduled` exactly when
/// it is due later, and round-trips through the journal's form.
pub fn submission(data: &[u8]) {
    use muster::tasks::task::{State, Task, TaskId, parse_submit, trace_context};
    let now = 1_796_202_000_000;
    // The same bytes as trace context headers: kept only when they parse.
    let text = String::from_utf8_lossy(data);
    if let Some(t) = trace_context(Some(&text), Some(&text)) {
        assert_eq!(t.traceparent.len(), 55);
        assert!(t.tracestate.is_none_or(|s| s.len() <= 512));
    }
    let Ok(t) = parse_submit(data, TaskId(1), now) else {
        return;
    };
    let later = t.progress.run_at.is_some_and(|at| at > now);
    assert_eq!(t.state() == State::Scheduled, later);
    assert!(t.state() == State::Scheduled || t.state() == State::Queued);
    assert!((1..=muster::tasks::task::MAX_ATTEMPTS).contains(&t.max_attempts));
    if let Some(b) = t.retry {
        assert!(b.backoff_base_ms >= 1 && b.backoff_max_ms >= b.backoff_base_ms);
    }
    let text = serde_json::to_string(&t).unwrap();
    let back: Task = serde_json::from_str(&text).unwrap();
    assert_eq!(back, t);
    serde_json::to_string(&t.shown()).unwrap();
}

/// A `POST /api/tasks/bulk` body, and the same bytes as a task list's
/// query string: reading them never panics, a bulk selection is bounded,
/// and a filter read from a query matches a task without panicking.
pub fn bulk(data: &[u8]) {
    use muster::tasks::bulk::{MAX_BULK, Selection, parse};
    use muster::tasks::filter::{Filter, MAX_Q};
    use muster::tasks::task::{TaskId, parse_submit};
    if let Ok((_, which)) = parse(data) {
        match which {
            Selection::Ids(ids) => assert!(ids.len() <= MAX_BULK),
            Selection::Filter(f) => assert!(!f.is_empty()),
        }
    }
    let query = String::from_utf8_lossy(data);
    if let Ok(f) = Filter::read(|k| head::query_param(&query, k)) {
        assert!(f.q.as_ref().is_none_or(|q| q.len() <= MAX_Q));
        let t = parse_submit(br#"{"type":"scan","labels":{"a":"b"}}"#, TaskId(7), 1).unwrap();
        let _ = f.matches(&t);
    }
}

/// A schedule's timing (`cron`, a newline, then the zone): parsing any
/// expression and zone never panics, and a parsed one answers
/// `next_after` and `ticks_between` without panicking, with ticks
/// strictly after the time asked about, in order.
pub fn cron(data: &[u8]) {
    use muster::cron::Spec;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (cron, zone) = match text.split_once('\n') {
        Some((cron, zone)) => (cron, Some(zone)),
        None => (text, None),
    };
    let Ok(spec) = Spec::parse(cron, zone) else {
        return;
    };
    // 2026-03-29T00:59:59Z, a second before Paris springs forward.
    let before_gap = 1_774_745_999_000;
    for after in [0, before_gap, before_gap + 999, u64::MAX - 1] {
        if let Some(next) = spec.next_after(after, before_gap) {
            assert!(next > after, "{cron:?} {zone:?}: {next} after {after}");
        }
    }
    let ticks = spec.ticks_between(before_gap, before_gap + 3_600_000, before_gap, 100);
    assert!(ticks.windows(2).all(|w| w[0] < w[1]), "{cron:?} {zone:?}");
}

/// A `POST /api/schedules` body: reading it never panics, and a schedule
/// read is kept and asked for its ticks without panicking, each due tick
/// after the schedule was made and at or before the time asked about.
pub fn schedule(data: &[u8]) {
    use muster::tasks::schedule::{Schedules, parse};
    let now = 1_796_202_000_000;
    let Ok((s, _)) = parse(data, now) else {
        return;
    };
    let mut all = Schedules::default();
    assert!(all.put(s.clone()));
    for later in [now, now + 1_000, now + 86_400_000, now + 400 * 86_400_000] {
        for d in all.due(later) {
            assert!(d.tick > now && d.tick <= later, "{s:?}: {d:?}");
        }
    }
}

/// A `PUT /api/limits` body: reading it never panics, and a limit read
/// is kept and asked about a task without panicking.
pub fn limit(data: &[u8]) {
    use muster::tasks::limit::{Limits, parse};
    use muster::tasks::task::{TaskId, parse_submit};
    let Ok((scope, limit)) = parse(data) else {
        return;
    };
    let mut all = Limits::default();
    all.set(scope, limit);
    let t = parse_submit(br#"{"type":"scan","concurrency_key":"acme"}"#, TaskId(1), 0).unwrap();
    for now in [0, 1, u64::MAX / 2] {
        if all.admits(&t, now) {
            all.started(&t, now);
            all.held(&t, 1);
        }
    }
    let _ = all.views();
}

/// A client certificate's subject (DER, as a TLS peer sends it): reading
/// its common name never panics, and a name read is text inside it.
pub fn cert_subject(data: &[u8]) {
    if let Some(cn) = muster::proto::cert::common_name(data) {
        let at = cn.as_ptr() as usize - data.as_ptr() as usize;
        assert!(at + cn.len() <= data.len());
    }
}
