//! The dashboard at `/` in a real browser: headless Chromium, driven over
//! the DevTools protocol, loads it from a running daemon and shows the
//! fleet live.

mod support;

use std::time::{Duration, Instant};
use support::Daemon;
use support::cdp::{Browser, chromium};

fn beat(d: &Daemon, id: &str, status: &str, cpu: f64) {
    d.udp(
        format!(
            r#"{{"type":"heartbeat","worker_id":"{id}","status":"{status}","cpu_usage":{cpu},"memory_usage":3.5,"queue_depth":4,"current_job":{{"id":"job-{id}"}}}}"#
        )
        .as_bytes(),
    );
}

/// The table fills from the stream, a worker that beats after the load
/// appears, one that falls silent turns inactive, the keyboard opens a
/// worker's panel with its sparklines, and the page logs no error.
#[test]
fn the_dashboard_shows_the_fleet_live() {
    let Some(browser) = chromium().filter(|_| support::require("chromium", chromium().is_some()))
    else {
        return;
    };
    let d = Daemon::start(&["--heartbeat-interval", "1s", "--inactivity-timeout", "2s"]);
    for i in 0..3 {
        beat(&d, "alpha", "working", 10.0 + f64::from(i));
        beat(&d, "beta", "idle", 1.0);
        std::thread::sleep(Duration::from_millis(1100));
    }
    d.wait_applied("beta", 3);

    // The page's own headers.
    let (status, head, _) =
        d.request("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200);
    assert!(
        head.to_lowercase()
            .contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{head}"
    );

    let mut b = Browser::open(browser, &format!("http://{}/", d.http), 1280, 800);
    let ids = "[...document.querySelectorAll('#rows .row')].map(r => r.dataset.id).join(',')";
    b.wait_for(
        "the table",
        &format!("{ids} === 'alpha,beta'"),
        Duration::from_secs(15),
    );
    let alpha = b.eval("document.querySelector('#rows [data-id=alpha]').innerText");
    let alpha = alpha.as_str().unwrap();
    for want in ["alpha", "working", "12.0", "3.5", "4", "job-alpha", "s ago"] {
        assert!(alpha.contains(want), "{want} in {alpha:?}");
    }
    assert_eq!(
        b.eval("document.getElementById('conn').textContent"),
        "live"
    );

    // A heartbeat sent now shows up (the bench measures how fast).
    let sent = Instant::now();
    beat(&d, "gamma", "error", 99.0);
    b.wait_for(
        "a worker that beat after the load",
        "!!document.querySelector('#rows [data-id=gamma] .st-error')",
        Duration::from_secs(10),
    );
    eprintln!(
        "dashboard: a new worker shown {:?} after its heartbeat",
        sent.elapsed()
    );

    // beta falls silent: its row turns inactive (alpha keeps beating).
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        beat(&d, "alpha", "working", 11.0);
        if b.eval("!!document.querySelector('#rows [data-id=beta] .st-inactive')") == true {
            break;
        }
        assert!(Instant::now() < until, "beta never shown inactive");
        std::thread::sleep(Duration::from_millis(300));
    }
    let totals = b.eval("document.getElementById('totals').innerText");
    assert!(totals.as_str().unwrap().contains("inactive"), "{totals}");
    // alpha, beating again, is working in the table as in the API.
    b.wait_for(
        "alpha back to working",
        "!!document.querySelector('#rows [data-id=alpha] .st-working')",
        Duration::from_secs(10),
    );

    // The keyboard: focus the rows, arrow down to alpha, Enter opens it.
    b.eval("document.getElementById('scroll').focus()");
    b.key("ArrowDown", "ArrowDown", 40);
    b.key("Enter", "Enter", 13);
    b.wait_for(
        "alpha's panel with sparklines",
        "!document.getElementById('panel').hidden && document.getElementById('panel-title').textContent === 'alpha' && document.querySelectorAll('#sparks svg polyline').length === 3",
        Duration::from_secs(10),
    );
    b.wait_for(
        "alpha's row selected",
        "document.querySelector('#rows .row.sel')?.dataset.id === 'alpha'",
        Duration::from_secs(5),
    );
    let details = b.eval("document.getElementById('details').innerText");
    assert!(details.as_str().unwrap().contains("udp"), "{details}");
    let runs = b.eval("document.getElementById('runs').innerText");
    assert!(runs.as_str().unwrap().contains("p95"), "{runs}");

    // Only this daemon was asked for anything.
    let foreign = b.eval(&format!(
        "performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith('http://{}/')).join(' ')",
        d.http
    ));
    assert_eq!(foreign, "", "requests elsewhere");

    let shot = b.screenshot();
    assert!(shot.starts_with(b"\x89PNG"), "a PNG");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&path, &shot).unwrap();
    eprintln!("dashboard: screenshot saved to {}", path.display());

    // Escape closes the panel; no console error or exception all along.
    b.key("Escape", "Escape", 27);
    b.wait_for(
        "panel closed",
        "document.getElementById('panel').hidden",
        Duration::from_secs(5),
    );
    assert!(b.errors.is_empty(), "console errors: {:#?}", b.errors);
}
