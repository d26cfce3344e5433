//! `muster watch`: the fleet live over `/ws/telemetry`.
//!
//! On a terminal it draws on the alternate screen (the shell's scrollback
//! is left as it was), in place: each redraw homes the cursor and
//! overwrites, so nothing scrolls. Rows are clipped to the terminal's width
//! and height, with a `+N more` line for the rows that do not fit. It
//! redraws every second (ages tick on a silent fleet), on every change (at
//! most ten times a second) and at once on a resize. When the stream is
//! lost the last table stays, dimmed and marked stale, under a
//! `disconnected — retrying` line, until the daemon is back.
//!
//! Elsewhere (a pipe, a file) it writes one line per change.
//!
//! Connecting and the WebSocket handshake each time out after
//! [`HANDSHAKE_TIMEOUT`], so a server that accepts and never answers is
//! reported and retried, not waited on forever.

use super::client;
use super::net::{self, Conn, Target};
use super::table::{Shape, colour_enabled, num, table};
use super::{Fail, Out};
use crate::clock::unix_ms;
use crate::proto;
use lexopt::prelude::*;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Connect, and the handshake after it, each within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the loop wakes to check for a resize, Ctrl-C and the clock.
const TICK: Duration = Duration::from_millis(200);

pub(super) fn watch(url: &str, args: &[String]) -> Out {
    let mut url = url.to_string();
    let (mut id, mut status) = (None, None);
    let mut wide = false;
    let mut p = lexopt::Parser::from_args(args.iter().cloned());
    while let Some(arg) = p.next()? {
        match arg {
            Value(v) if id.is_none() => id = Some(v.string()?),
            Long("status") => status = Some(p.value()?.string()?),
            Long("wide") => wide = true,
            Long("url") => url = p.value()?.string()?,
            Short('h') | Long("help") => {
                println!(
                    "usage: muster watch [ID] [--status S] [--wide]\n\n\
                     On a terminal the table is drawn in place on the alternate screen,\n\
                     clipped to the window, every second and on each change; otherwise\n\
                     one line per change. Reconnects with backoff when the daemon\n\
                     restarts, showing the last table as stale meanwhile. Ctrl-C ends."
                );
                return Ok(());
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    if let Some(id) = &id {
        if proto::check_worker_id(id).is_err() {
            return Err(Fail(2, format!("{id:?} is not a valid worker id")));
        }
    }
    let http = client::parse_url(&url).map_err(|e| Fail(2, e.to_string()))?;
    let mut path = match &id {
        Some(id) => format!("/ws/telemetry/{id}"),
        None => "/ws/telemetry".to_string(),
    };
    if let Some(s) = &status {
        path.push_str(&format!("?status={s}"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let resized = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, stop.clone());
    }
    let _ = signal_hook::flag::register(signal_hook::consts::SIGWINCH, resized.clone());
    let mut screen = Screen {
        tty: std::io::stdout().is_terminal(),
        shape: Shape {
            wide,
            headers: true,
            colour: colour_enabled(),
        },
        path: path.clone(),
        fleet: BTreeMap::new(),
        lost: None,
        last_draw: None,
        stop,
        resized,
    };
    screen.enter();
    let end = run(&http, &path, &mut screen);
    screen.leave();
    end
}

/// Watch until Ctrl-C, or until the daemon refuses outright.
fn run(http: &Target, path: &str, screen: &mut Screen) -> Out {
    let mut backoff = Duration::from_millis(250);
    loop {
        match watch_once(http, path, screen) {
            End::Stopped => return Ok(()),
            End::Refused(code, msg) => return Err(Fail(code, msg)),
            End::Lost(msg, was_up) => {
                if was_up {
                    backoff = Duration::from_millis(250);
                }
                if !screen.tty && screen.lost.is_none() {
                    eprintln!("muster: {msg}; reconnecting");
                }
                screen.lost = Some((msg, Instant::now()));
            }
        }
        // Wait out the backoff, redrawing each second, awake to Ctrl-C.
        let until = Instant::now() + backoff;
        while Instant::now() < until {
            if screen.stopped() {
                return Ok(());
            }
            screen.draw(false);
            std::thread::sleep(TICK.min(until.saturating_duration_since(Instant::now())));
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

enum End {
    /// Ctrl-C or SIGTERM.
    Stopped,
    /// The daemon answered but refused: do not retry.
    Refused(i32, String),
    /// The connection failed or dropped: retry. The flag says whether the
    /// stream had been up (the backoff starts again).
    Lost(String, bool),
}

/// Time-outs read as `WouldBlock` or `TimedOut`, as in [`client::timed_out`].
fn handshake_error(e: tungstenite::HandshakeError<tungstenite::ClientHandshake<Conn>>) -> End {
    match e {
        tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp)) => {
            let code = resp.status().as_u16();
            let body = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice::<Value>(b).ok());
            let msg = body
                .and_then(|b| b["message"].as_str().map(String::from))
                .unwrap_or_else(|| format!("musterd answered {code}"));
            End::Refused(if code == 400 { 2 } else { 1 }, msg)
        }
        tungstenite::HandshakeError::Failure(tungstenite::Error::Io(e))
            if client::timed_out(&e) =>
        {
            End::Lost(
                format!(
                    "no WebSocket handshake within {} s",
                    HANDSHAKE_TIMEOUT.as_secs()
                ),
                false,
            )
        }
        tungstenite::HandshakeError::Interrupted(_) => End::Lost(
            format!(
                "no WebSocket handshake within {} s",
                HANDSHAKE_TIMEOUT.as_secs()
            ),
            false,
        ),
        tungstenite::HandshakeError::Failure(e) => {
            End::Lost(format!("websocket handshake failed: {e}"), false)
        }
    }
}

fn watch_once(http: &Target, path: &str, screen: &mut Screen) -> End {
    let stream = match net::connect(http, HANDSHAKE_TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            let e = client::ClientError::Unreachable(http.to_string(), e);
            return End::Lost(e.to_string(), false);
        }
    };
    let _ = stream.tcp().set_read_timeout(Some(HANDSHAKE_TIMEOUT));
    let _ = stream.tcp().set_write_timeout(Some(HANDSHAKE_TIMEOUT));
    // The stream is TLS already for https://: the URL names the host.
    let url = format!("ws://{http}{path}");
    let mut ws = match tungstenite::client(url.as_str(), stream) {
        Ok((ws, _)) => ws,
        Err(e) => return handshake_error(e),
    };
    // From here a read wakes every tick, to redraw and to notice Ctrl-C.
    let _ = ws.get_ref().tcp().set_read_timeout(Some(TICK));
    screen.lost = None;
    screen.draw(true);
    loop {
        if screen.stopped() {
            let _ = ws.close(None);
            return End::Stopped;
        }
        let msg = match ws.read() {
            Ok(tungstenite::Message::Text(t)) => t,
            Ok(tungstenite::Message::Close(_)) => {
                return End::Lost("musterd closed the stream".into(), true);
            }
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e)) if client::timed_out(&e) => {
                screen.draw(false);
                continue;
            }
            Err(e) => return End::Lost(format!("stream lost: {e}"), true),
        };
        if let Ok(v) = serde_json::from_str::<Value>(&msg) {
            screen.apply(&v);
            screen.draw(false);
        }
    }
}

/// What is shown, and the terminal it is shown on.
struct Screen {
    tty: bool,
    shape: Shape,
    path: String,
    fleet: BTreeMap<String, Value>,
    /// Why and since when the stream is down.
    lost: Option<(String, Instant)>,
    last_draw: Option<Instant>,
    stop: Arc<AtomicBool>,
    resized: Arc<AtomicBool>,
}

impl Screen {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The alternate screen, cursor hidden.
    fn enter(&self) {
        if self.tty {
            print!("\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J");
            let _ = std::io::stdout().flush();
        }
    }

    /// Back to the shell's screen as it was.
    fn leave(&self) {
        if self.tty {
            print!("\x1b[?25h\x1b[?1049l");
            let _ = std::io::stdout().flush();
        }
    }

    /// Apply a snapshot or a change message; off a terminal, a line per
    /// change.
    fn apply(&mut self, v: &Value) {
        if v["type"] == "snapshot" {
            self.fleet.clear();
        }
        for id in v["worker_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            self.fleet.remove(id);
            if !self.tty {
                println!("{} {id} removed", v["timestamp"]);
            }
        }
        let changed: Map<String, Value> = v["workers"].as_object().cloned().unwrap_or_default();
        for (id, w) in changed {
            if !self.tty {
                println!(
                    "{} {id} {} cpu={} mem={} queue={}",
                    v["timestamp"],
                    w["status"].as_str().unwrap_or("?"),
                    num(&w["cpu_usage"], 1),
                    num(&w["memory_usage"], 1),
                    w["queue_depth"]
                );
            }
            self.fleet.insert(id, w);
        }
        if !self.tty {
            let _ = std::io::stdout().flush();
        }
    }

    /// Redraw when a second has passed, the window was resized, or
    /// (`changed`, or a message) at most ten times a second.
    fn draw(&mut self, changed: bool) {
        if !self.tty {
            return;
        }
        let resized = self.resized.swap(false, Ordering::Relaxed);
        let since = self.last_draw.map(|t| t.elapsed());
        let due = match since {
            None => true,
            Some(s) => resized || s >= Duration::from_secs(1) || (changed && s >= TICK / 2),
        };
        if !due {
            return;
        }
        self.last_draw = Some(Instant::now());
        let (cols, rows) = terminal_size();
        let list: Vec<&Value> = self.fleet.values().collect();
        let frame = frame(
            &table(&list, unix_ms(), self.shape),
            &self.status_line(list.len()),
            self.lost.is_some(),
            cols,
            rows,
        );
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(frame.as_bytes());
        let _ = out.flush();
    }

    fn status_line(&self, workers: usize) -> String {
        match &self.lost {
            None => format!(
                "{workers} workers, live from {} (Ctrl-C to stop)",
                self.path
            ),
            Some((why, since)) => format!(
                "disconnected — retrying ({why}); stale for {} s",
                since.elapsed().as_secs()
            ),
        }
    }
}

/// One screenful: the header and as many rows as fit, a `+N more` line for
/// the rest, the status line; every line clipped to `cols` and cleared to
/// its end, the rest of the screen cleared. Stale rows are dimmed.
pub fn frame(lines: &[String], status: &str, stale: bool, cols: usize, rows: usize) -> String {
    let mut out = String::from("\x1b[H");
    let mut put = |line: &str, dim: bool| {
        if dim {
            out.push_str("\x1b[2m");
        }
        out.push_str(&clip(line, cols));
        out.push_str(if dim {
            "\x1b[0m\x1b[K\r\n"
        } else {
            "\x1b[K\r\n"
        });
    };
    // Header, rows and `+N more` in all but the last two lines (a blank
    // and the status line); the header and one line at least.
    let room = rows.saturating_sub(2).max(2);
    let (shown, more) = if lines.len() > room {
        (&lines[..room - 1], lines.len() - (room - 1))
    } else {
        (lines, 0)
    };
    for (i, l) in shown.iter().enumerate() {
        put(l, stale && i > 0);
    }
    if more > 0 {
        put(&format!("+{more} more"), false);
    }
    put("", false);
    out.push_str(&clip(status, cols));
    out.push_str("\x1b[K\x1b[J");
    out
}

/// A line cut to `cols` visible characters; escape sequences (the status
/// colour) take no room and are kept whole, and colour is reset after a cut.
pub fn clip(line: &str, cols: usize) -> String {
    let mut out = String::with_capacity(line.len().min(cols * 4));
    let mut shown = 0;
    let mut chars = line.chars().peekable();
    let mut cut = false;
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            out.push(c);
            // CSI: ESC [ parameters final-byte.
            for d in chars.by_ref() {
                out.push(d);
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        if shown == cols {
            cut = true;
            break;
        }
        out.push(c);
        shown += 1;
    }
    if cut && out.contains('\x1b') {
        out.push_str("\x1b[0m");
    }
    out
}

/// The terminal's columns and rows (80×24 when it cannot say).
fn terminal_size() -> (usize, usize) {
    crate::sys::terminal::size().unwrap_or((80, 24))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_counts_visible_characters_only() {
        assert_eq!(clip("abcdef", 4), "abcd");
        assert_eq!(clip("ab", 4), "ab");
        assert_eq!(
            clip("\x1b[32mworking\x1b[0m  yes", 4),
            "\x1b[32mwork\x1b[0m"
        );
        assert_eq!(clip("é€xyz", 2), "é€");
    }

    #[test]
    fn frame_fits_the_window_and_says_what_it_left_out() {
        let lines: Vec<String> = std::iter::once("ID  STATUS".to_string())
            .chain((0..30).map(|i| format!("w{i:02}  idle-and-a-long-tail")))
            .collect();
        let f = frame(&lines, "30 workers", false, 12, 10);
        let shown: Vec<&str> = f.split("\r\n").collect();
        assert_eq!(shown.len(), 10, "{f:?}");
        assert!(shown[0].starts_with("\x1b[HID  STATUS\x1b[K"));
        assert!(shown[1].starts_with("w00  idle-an\x1b[K"));
        assert_eq!(shown[7], "+24 more\x1b[K");
        assert_eq!(shown[9], "30 workers\x1b[K\x1b[J");
        assert!(!f.contains("\x1b[2J"), "no full clear: nothing scrolls");
        // Stale rows are dimmed, the header is not.
        let stale = frame(&lines[..3], "gone", true, 80, 24);
        assert!(stale.starts_with("\x1b[HID  STATUS\x1b[K\r\n\x1b[2mw00"));
    }
}
