//! The tables `muster` prints: columns two spaces apart, numbers
//! right-aligned, no trailing blanks, every cell one word so that each row
//! splits into as many fields as the header; and the ages and colours in
//! them.

use crate::proto::Status;
use serde_json::Value;
use std::io::IsTerminal;

pub fn colour_enabled() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

pub fn paint(status: &str, on: bool) -> String {
    if !on {
        return status.to_string();
    }
    let code = match Status::parse(status) {
        Some(Status::Working) => "32",
        Some(Status::Idle) => "36",
        Some(Status::Error) => "31",
        Some(Status::Inactive) => "33",
        Some(Status::Terminated | Status::Created) => "2",
        None => "0",
    };
    format!("\x1b[{code}m{status}\x1b[0m")
}

/// An age as one word: "3s", "5m", "2h", "4d".
pub fn age(then_ms: u64, now_ms: u64) -> String {
    let s = now_ms.saturating_sub(then_ms) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// "3s ago", "5m ago", "2h ago".
pub fn ago(then_ms: u64, now_ms: u64) -> String {
    format!("{} ago", age(then_ms, now_ms))
}

pub fn num(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map_or("-".to_string(), |x| format!("{x:.digits$}"))
}

/// A cell as one word: blanks and control characters become `_`, so every
/// row splits into as many fields as the header, and a missing value is
/// `-`.
pub fn word(s: Option<&str>) -> String {
    match s {
        None | Some("") => "-".into(),
        Some(s) => s
            .chars()
            .map(|c| {
                if c.is_whitespace() || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect(),
    }
}

/// A table column: its header, whether it is a number (right-aligned),
/// whether only `--wide` shows it, and its cell.
struct Column {
    name: &'static str,
    number: bool,
    wide: bool,
    cell: fn(&Value, u64) -> String,
}

const COLUMNS: &[Column] = &[
    Column {
        name: "ID",
        number: false,
        wide: false,
        cell: |w, _| word(w["worker_id"].as_str()),
    },
    Column {
        name: "STATUS",
        number: false,
        wide: false,
        cell: |w, _| word(w["status"].as_str()),
    },
    Column {
        name: "ACTIVE",
        number: false,
        wide: false,
        cell: |w, _| if w["is_active"] == true { "yes" } else { "no" }.into(),
    },
    Column {
        name: "CPU%",
        number: true,
        wide: false,
        cell: |w, _| num(&w["cpu_usage"], 1),
    },
    Column {
        name: "MEM%",
        number: true,
        wide: false,
        cell: |w, _| num(&w["memory_usage"], 1),
    },
    Column {
        name: "GPU%",
        number: true,
        wide: true,
        cell: |w, _| num(&w["gpu_usage"], 1),
    },
    Column {
        name: "RSS_MB",
        number: true,
        wide: false,
        cell: |w, _| num(&w["resource_usage"]["rss_mb"], 1),
    },
    Column {
        name: "QUEUE",
        number: true,
        wide: false,
        cell: |w, _| {
            w["queue_depth"]
                .as_u64()
                .map_or("-".into(), |q| q.to_string())
        },
    },
    Column {
        name: "JOB",
        number: false,
        wide: true,
        cell: |w, _| {
            let j = &w["current_job"];
            word(j["id"].as_str().or(j["type"].as_str()))
        },
    },
    Column {
        name: "HOST",
        number: false,
        wide: true,
        cell: |w, _| word(w["hostname"].as_str()),
    },
    Column {
        name: "TRANSPORT",
        number: false,
        wide: true,
        cell: |w, _| word(w["transport"].as_str()),
    },
    Column {
        name: "LAST_SEEN",
        number: false,
        wide: false,
        cell: |w, now| {
            w["last_update"]
                .as_u64()
                .map_or("-".into(), |t| age(t, now))
        },
    },
];

/// How a table is shown.
#[derive(Clone, Copy, Default)]
pub struct Shape {
    pub wide: bool,
    pub headers: bool,
    pub colour: bool,
}

/// The table of `muster workers` and `muster watch`, a line each (no
/// newline): columns two spaces apart, numbers right-aligned, no trailing
/// blanks, every line as many fields as the header.
pub fn table(workers: &[&Value], now_ms: u64, shape: Shape) -> Vec<String> {
    let columns: Vec<&Column> = COLUMNS.iter().filter(|c| shape.wide || !c.wide).collect();
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| columns.iter().map(|c| (c.cell)(w, now_ms)).collect())
        .collect();
    let numbers: Vec<bool> = columns.iter().map(|c| c.number).collect();
    let mut lines: Vec<Vec<String>> = Vec::with_capacity(rows.len() + 1);
    if shape.headers {
        lines.push(columns.iter().map(|c| c.name.to_string()).collect());
    }
    let first_row = lines.len();
    lines.extend(rows);
    let status = columns.iter().position(|c| c.name == "STATUS");
    // Colour goes on after the widths are taken: escape codes take no room.
    align_styled(&lines, &numbers, &|row, col, cell| {
        (shape.colour && row >= first_row && Some(col) == status).then(|| paint(cell, true))
    })
}

/// Rows aligned in columns two spaces apart, `numbers` right-aligned, no
/// trailing blanks.
pub fn align(rows: &[Vec<String>], numbers: &[bool]) -> Vec<String> {
    align_styled(rows, numbers, &|_, _, _| None)
}

/// [`align`], with `style(row, column, cell)` giving a cell's text as
/// shown (coloured) when it differs; widths come from the plain text.
fn align_styled(
    rows: &[Vec<String>],
    numbers: &[bool],
    style: &dyn Fn(usize, usize, &str) -> Option<String>,
) -> Vec<String> {
    let mut width: Vec<usize> = Vec::new();
    for r in rows {
        width.resize(width.len().max(r.len()), 0);
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    rows.iter()
        .enumerate()
        .map(|(row, cells)| {
            let mut out = String::new();
            for (i, c) in cells.iter().enumerate() {
                let pad = " ".repeat(width[i] - c.chars().count());
                let shown = style(row, i, c).unwrap_or_else(|| c.clone());
                if i > 0 {
                    out.push_str("  ");
                }
                if numbers.get(i).copied().unwrap_or(false) {
                    out.push_str(&pad);
                    out.push_str(&shown);
                } else {
                    out.push_str(&shown);
                    if i + 1 < cells.len() {
                        out.push_str(&pad);
                    }
                }
            }
            out
        })
        .collect()
}
