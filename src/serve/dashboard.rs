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
use std::sync::Arc;

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

/// What the page may load and where it may connect.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The files, by path.
pub fn file(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/" | "/dashboard" | "/dashboard/" => Some(("text/html; charset=utf-8", INDEX)),
        "/dashboard/app.js" => Some(("text/javascript; charset=utf-8", SCRIPT)),
        "/dashboard/style.css" => Some(("text/css; charset=utf-8", STYLE)),
        _ => None,
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

    #[test]
    fn small_and_self_contained() {
        let total = INDEX.len() + SCRIPT.len() + STYLE.len();
        assert!(total <= 60 * 1024, "{total} bytes");
        for text in [INDEX, SCRIPT, STYLE] {
            for far in [
                "http://",
                "https://",
                "//cdn",
                "innerHTML",
                "eval(",
                "<script>",
            ] {
                let hits: Vec<&str> = text.lines().filter(|l| l.contains(far)).collect();
                // The SVG namespace is a name, not a fetch.
                assert!(
                    hits.iter().all(|l| l.contains("www.w3.org/2000/svg")),
                    "{far}: {hits:?}"
                );
            }
        }
        assert!(INDEX.contains("src=\"/dashboard/app.js\""));
    }
}
