//! The tree keeps the map in `src/lib.rs`: each folder imports only the
//! folders below it, `serve` and `ingest` never import each other, and no
//! file grows past 1,000 lines outside its tests (past 600, it is named).
//! These tests read the sources; they build nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What each top-level unit of `src/` may import, as `src/lib.rs` says.
const ALLOWED: &[(&str, &[&str])] = &[
    (
        "daemon",
        &[
            "serve", "ingest", "store", "audit", "alerts", "pool", "tasks", "cluster", "cron",
            "fleet", "config", "stats", "proto", "sys", "logging", "clock",
        ],
    ),
    (
        "alerts",
        &[
            "pool", "tasks", "fleet", "config", "stats", "proto", "logging", "clock",
        ],
    ),
    (
        "pool",
        &[
            "tasks", "fleet", "config", "stats", "proto", "sys", "logging", "clock",
        ],
    ),
    (
        "tasks",
        &[
            "cluster", "cron", "fleet", "config", "stats", "proto", "logging", "clock",
        ],
    ),
    (
        "store",
        &[
            "cluster", "fleet", "config", "stats", "proto", "sys", "logging", "clock",
        ],
    ),
    ("audit", &["cluster", "fleet", "config", "logging", "clock"]),
    (
        "serve",
        &[
            "audit", "alerts", "pool", "tasks", "cluster", "cron", "fleet", "config", "stats",
            "proto", "sys", "logging", "clock",
        ],
    ),
    (
        "ingest",
        &[
            "tasks", "fleet", "config", "stats", "proto", "sys", "logging", "clock",
        ],
    ),
    (
        "fleet",
        &["config", "stats", "proto", "sys", "logging", "clock"],
    ),
    ("cluster", &["config", "clock"]),
    ("config", &[]),
    ("cron", &[]),
    ("stats", &["proto"]),
    ("proto", &[]),
    ("sys", &[]),
    ("cli", &["proto", "sys", "config", "clock"]),
    ("logging", &["clock"]),
    ("clock", &[]),
    ("script", &[]),
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Each source file's unit (`src/serve/ws/conn.rs` → `serve`) and its text
/// before its test module.
fn units() -> Vec<(String, PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files
        .into_iter()
        .filter_map(|path| {
            let rel = path.strip_prefix(&src).unwrap();
            let first = rel.components().next()?.as_os_str().to_str()?.to_string();
            let unit = first.trim_end_matches(".rs").to_string();
            if unit == "lib" || unit == "bin" {
                return None;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = match text.find("#[cfg(test)]\nmod tests") {
                Some(i) => text[..i].to_string(),
                None => match text.find("#[cfg(test)]\npub(crate) mod tests") {
                    Some(i) => text[..i].to_string(),
                    None => text,
                },
            };
            Some((unit, path, code))
        })
        .collect()
}

#[test]
fn imports_point_down_only() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for (unit, path, code) in units() {
        let Some(may) = allowed.get(unit.as_str()) else {
            wrong.push(format!("{}: unit {unit} is not on the map", path.display()));
            continue;
        };
        // `use crate::x`, `crate::x::…` in code; doc comments are not imports.
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let name: String = line[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                let is_unit = allowed.contains_key(name.as_str());
                if is_unit && name != unit && !may.contains(&name.as_str()) {
                    wrong.push(format!("{}: {unit} imports {name}", path.display()));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the map:\n{}",
        wrong.join("\n")
    );
}

/// Files are mostly 150-600 lines (STYLE.md); past 1,000 they must be
/// split. Past 600 a file is named here, to be looked at for a split by
/// concern, not cut to a count.
#[test]
fn no_file_is_over_1000_lines_outside_its_tests() {
    let mut long = Vec::new();
    for (_, path, code) in units() {
        let n = code.lines().count();
        if n > 600 {
            eprintln!(
                "layout: {} has {n} lines outside its tests: split by concern?",
                path.display()
            );
        }
        if n > 1000 {
            long.push(format!("{}: {n} lines", path.display()));
        }
    }
    assert!(long.is_empty(), "{}", long.join("\n"));
}
