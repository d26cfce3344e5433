//! The dashboard at `/`: plain HTML, CSS and JavaScript compiled into the
//! binary, no build step and nothing fetched from elsewhere. It reads what
//! any client reads (`/ws/telemetry`, `/health`, `/api/...`) and changes
//! only through the API, with the token kept in the tab's `sessionStorage`.
//!
//! A strict `Content-Security-Policy` lets the page load its own script and
//! style and talk to this daemon only: no inline script, no `eval`, no
//! other origin, no framing. The script puts text in with `textContent`
//! only, so a worker id or label cannot become markup.

use super::head::{Body, Response};
use crate::proto::Status;
use std::sync::{Arc, OnceLock};

const INDEX: &str = include_str!("dashboard/index.html");
const STYLE: &str = include_str!("dashboard/style.css");

/// The script's modules, by name under `/dashboard/`; `app.js` is the
/// entry the page loads, and it imports the others.
const MODULES: [(&str, &str); 9] = [
    ("app.js", include_str!("dashboard/app.js")),
    ("dom.js", include_str!("dashboard/dom.js")),
    ("api.js", include_str!("dashboard/api.js")),
    ("stream.js", include_str!("dashboard/stream.js")),
    ("table.js", include_str!("dashboard/table.js")),
    ("grid.js", include_str!("dashboard/grid.js")),
    ("panel.js", include_str!("dashboard/panel.js")),
    ("views.js", include_str!("dashboard/views.js")),
    ("chart.js", include_str!("dashboard/chart.js")),
];

/// `statuses.js`: the statuses a worker can be shown with, written from
/// [`Status::ALL`] so the page's filter and totals cannot drift from the
/// daemon's list.
fn statuses() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let names: Vec<String> = Status::ALL.iter().map(|s| format!("{:?}", s.as_str())).collect();
        format!(
            "// The statuses a worker is shown with, in the daemon's order.\nexport const STATUSES = [{}];\n",
            names.join(", ")
        )
    })
}

/// What the page may load and where it may connect.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

const SCRIPT: &str = "text/javascript; charset=utf-8";

/// The files, by path.
pub fn file(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/" | "/dashboard" | "/dashboard/" => Some(("text/html; charset=utf-8", INDEX)),
        "/dashboard/style.css" => Some(("text/css; charset=utf-8", STYLE)),
        "/dashboard/statuses.js" => Some((SCRIPT, statuses())),
        _ => {
            let name = path.strip_prefix("/dashboard/")?;
            let (_, text) = MODULES.iter().find(|(n, _)| *n == name)?;
            Some((SCRIPT, text))
        }
    }
}

/// The response for a dashboard file.
pub fn serve(content_type: &'static str, text: &'static str) -> Response {
    Response {
        status: 200,
        content_type,
        body: Body::Shared(Arc::from(text.as_bytes())),
        ..Response::default()
    }
    .with_header("Content-Security-Policy", CSP)
    .with_header("X-Content-Type-Options", "nosniff")
    .with_header("Referrer-Policy", "no-referrer")
    .with_header("Cache-Control", "no-cache")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts() -> Vec<(&'static str, &'static str)> {
        let mut all = vec![
            ("index.html", INDEX),
            ("style.css", STYLE),
            ("statuses.js", statuses()),
        ];
        all.extend(MODULES);
        all
    }

    #[test]
    fn small_and_self_contained() {
        let total: usize = texts().iter().map(|(_, t)| t.len()).sum();
        assert!(total <= 60 * 1024, "{total} bytes");
        for (name, text) in texts() {
            for far in [
                "http://",
                "https://",
                "//cdn",
                "innerHTML",
                "eval(",
                "<script>",
                "window.",
            ] {
                let hits: Vec<&str> = text.lines().filter(|l| l.contains(far)).collect();
                // The SVG namespace is a name, not a fetch.
                assert!(
                    hits.iter().all(|l| l.contains("www.w3.org/2000/svg")),
                    "{name}: {far}: {hits:?}"
                );
            }
        }
        assert!(INDEX.contains("<script type=\"module\" src=\"/dashboard/app.js\">"));
    }

    /// Every module another imports is served, and every module served is
    /// imported by one (or is the entry).
    #[test]
    fn every_import_is_served_and_every_module_imported() {
        let mut imported = vec!["app.js".to_string()];
        for (name, text) in MODULES {
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let from = line
                    .rsplit_once("from \"./")
                    .map(|(_, f)| f.trim_end_matches("\";"));
                let from = from.unwrap_or_else(|| panic!("{name}: {line}"));
                assert!(
                    file(&format!("/dashboard/{from}")).is_some(),
                    "{name} imports {from}, which is not served"
                );
                imported.push(from.to_string());
            }
        }
        for (name, _) in MODULES {
            assert!(
                imported.iter().any(|i| i == name),
                "{name} is served but never imported"
            );
        }
        assert!(imported.iter().any(|i| i == "statuses.js"));
    }

    /// The page's statuses are the daemon's, and each has its colour.
    #[test]
    fn every_status_is_listed_and_coloured() {
        for s in Status::ALL {
            assert!(statuses().contains(&format!("\"{s}\"")), "{s}");
            assert!(STYLE.contains(&format!(".st-{s} ")), "no colour for {s}");
            assert!(
                STYLE.contains(&format!(".st-fill-{s} ")),
                "no chart colour for {s}"
            );
        }
        assert_eq!(file("/dashboard/statuses.js").unwrap().1, statuses());
        assert_eq!(file("/dashboard/nothing.js"), None);
        assert_eq!(file("/dashboard/../app.js"), None);
    }
}
