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
    // Started first: a cold start (a fresh machine's first run) must not
    // eat into the 2 s the workers below have before they turn inactive.
    let mut b = Browser::start(browser, 1280, 800);
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

    beat(&d, "alpha", "working", 12.0);
    b.goto(&format!("http://{}/", d.http));
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
        b.eval("getComputedStyle(document.querySelector('#rows [data-id=alpha] .node')).display"),
        "none",
        "no node column on a single node"
    );
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
    // The header tells the daemon's own health from the fleet's, and the
    // alerts come from their stream.
    b.wait_for(
        "the daemon's figures",
        "/musterd\\s*healthy/.test(document.getElementById('daemon').innerText) && /fleet\\s*\\w+/.test(document.getElementById('daemon').innerText) && /alerts\\s*none firing/.test(document.getElementById('daemon').innerText)",
        Duration::from_secs(10),
    );

    // The label filter is the API's key:value.
    d.udp(br#"{"type":"heartbeat","worker_id":"delta","status":"idle","labels":{"pool":"scan"}}"#);
    let filter = |b: &mut Browser, text: &str| {
        b.eval(&format!(
            "(() => {{ const l = document.getElementById('label'); l.value = '{text}'; l.dispatchEvent(new Event('input')); }})()"
        ));
    };
    filter(&mut b, "pool:scan");
    b.wait_for(
        "only delta under pool:scan",
        &format!("{ids} === 'delta'"),
        Duration::from_secs(10),
    );
    filter(&mut b, "pool:other");
    b.wait_for(
        "nobody under pool:other",
        &format!("{ids} === ''"),
        Duration::from_secs(5),
    );
    filter(&mut b, "");
    b.wait_for(
        "everyone again",
        &format!("{ids} === 'alpha,beta,delta,gamma'"),
        Duration::from_secs(5),
    );
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

    // A task run by an agent: the Tasks view lists it, and its worker's
    // panel shows its log.
    let dir = tempfile::tempdir().unwrap();
    let handler = dir.path().join("handler.sh");
    std::fs::write(
        &handler,
        "#!/bin/sh\necho '::progress 0.5 halfway'\necho line-from-the-task\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &handler,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut agent = std::process::Command::new(env!("CARGO_BIN_EXE_muster"))
        .args(["agent", "--tasks", "--interval", "300ms", "--id", "tasker"])
        .args(["--heartbeat-addr", &d.heartbeat.to_string(), "--"])
        .arg(&handler)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    d.wait_for("the agent", |d| d.get("/api/workers/tasker").0 == 200);
    let body = r#"{"type":"resize"}"#;
    let (status, _, _) = d.request(&format!(
        "POST /api/tasks HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    assert_eq!(status, 201);
    d.wait_for("the task done", |d| {
        d.json("/api/tasks")["tasks"][0]["state"] == "succeeded"
    });
    b.eval("document.querySelector('nav button[data-view=tasks]').click()");
    b.wait_for(
        "the Tasks view",
        "document.getElementById('tasks').innerText.includes('resize') && document.getElementById('tasks').innerText.includes('succeeded')",
        Duration::from_secs(10),
    );
    // Its progress, as the handler said it, beside it.
    let resize =
        "[...document.querySelectorAll('#tasks tr')].find(r => r.innerText.includes('resize'))";
    assert_eq!(
        b.eval(&format!("{resize}.querySelector('progress').value + ' ' + {resize}.innerText.includes('halfway')")),
        "0.5 true"
    );
    // A queued task cancelled from the view: the stream brings its new state.
    let body = r#"{"type":"nobody-runs-this","worker_id":"nobody"}"#;
    let (status, _, _) = d.request(&format!(
        "POST /api/tasks HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    assert_eq!(status, 201);
    let row = "[...document.querySelectorAll('#tasks tr')].find(r => r.innerText.includes('nobody-runs-this'))";
    b.wait_for(
        "the queued task",
        &format!("{row}?.innerText.includes('queued') && !!{row}.querySelector('button')"),
        Duration::from_secs(10),
    );
    b.eval(&format!("{row}.querySelector('button').click()"));
    b.wait_for(
        "the task cancelled",
        &format!("{row}?.innerText.includes('cancelled')"),
        Duration::from_secs(10),
    );
    // Retried from its row; then cancelled with every queued task at once.
    b.wait_for(
        "its Retry button",
        &format!("{row}?.querySelector('button')?.textContent === 'Retry'"),
        Duration::from_secs(10),
    );
    b.eval(&format!("{row}.querySelector('button').click()"));
    b.wait_for(
        "the task queued again",
        &format!("{row}?.innerText.includes('queued')"),
        Duration::from_secs(10),
    );
    b.eval("(() => { const s = document.getElementById('task-state'); s.value = 'queued'; s.dispatchEvent(new Event('change')); })()");
    b.eval("document.getElementById('bulk-cancel').click()");
    b.wait_for(
        "the bulk cancel",
        "document.getElementById('bulk-msg').textContent === 'cancel: 1 queued tasks'",
        Duration::from_secs(10),
    );
    b.eval("(() => { const s = document.getElementById('task-state'); s.value = ''; s.dispatchEvent(new Event('change')); })()");
    b.wait_for(
        "the task cancelled in bulk",
        &format!("{row}?.innerText.includes('cancelled')"),
        Duration::from_secs(10),
    );
    // Schedules are listed with their next tick, and paused from the view.
    let body = r#"{"name":"hourly-report","cron":"@hourly","task":{"type":"report"}}"#;
    let (status, _, _) = d.request(&format!(
        "POST /api/schedules HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    assert_eq!(status, 201);
    let sched = "[...document.querySelectorAll('#schedules tr')].find(r => r.innerText.includes('hourly-report'))";
    b.wait_for(
        "the schedule listed",
        &format!("{sched}?.querySelector('button')?.textContent === 'Pause'"),
        Duration::from_secs(10),
    );
    b.eval(&format!("{sched}.querySelector('button').click()"));
    d.wait_for("the schedule paused", |d| {
        d.json("/api/schedules/hourly-report")["paused"] == true
    });
    b.wait_for(
        "the schedule shown paused",
        &format!("{sched}?.querySelector('button')?.textContent === 'Resume'"),
        Duration::from_secs(10),
    );
    // The header's chart of the last hour: the task that succeeded, the
    // one cancelled (twice: once by hand, once in bulk), and the workers
    // by status now, each minute's figures in its column's tooltip.
    let chart = "document.getElementById('trend')";
    b.wait_for(
        "the chart of the last hour",
        &format!(
            "/1 succeeded, 0 failed/.test({chart}.innerText) && {chart}.querySelectorAll('rect.ok').length === 1 && {chart}.querySelectorAll('rect.off').length >= 1"
        ),
        Duration::from_secs(15),
    );
    let tips = b.eval(&format!(
        "[...{chart}.querySelectorAll('svg')[0].querySelectorAll('title')].map(t => t.textContent).join('|')"
    ));
    let tips = tips.as_str().unwrap();
    assert_eq!(tips.split('|').count(), 61, "{tips}");
    let cancelled: u32 = tips
        .split('|')
        .filter_map(|t| t.split(", ").find(|p| p.ends_with(" cancelled")))
        .map(|p| p.trim_end_matches(" cancelled").parse::<u32>().unwrap())
        .sum();
    assert_eq!(cancelled, 2, "{tips}");
    let workers = b.eval(&format!(
        "{chart}.querySelectorAll('svg')[1].lastElementChild.querySelector('title').textContent"
    ));
    assert!(workers.as_str().unwrap().contains(" idle"), "{workers}");
    // Tasks and alerts are streamed, never polled; and without ?trace the
    // page measures nothing.
    let polled = b.eval(
        "performance.getEntriesByType('resource').map(e => new URL(e.name).pathname).filter(p => p === '/api/tasks' || p === '/api/alerts').join(' ')",
    );
    assert_eq!(polled, "", "polled instead of streamed");
    assert_eq!(b.eval("performance.getEntriesByType('mark').length"), 0);

    b.eval("document.querySelector('nav button[data-view=workers]').click()");
    b.wait_for(
        "tasker's row",
        "!!document.querySelector('#rows [data-id=tasker]')",
        Duration::from_secs(10),
    );
    b.eval("document.querySelector('#rows [data-id=tasker]').click()");
    b.wait_for(
        "tasker's task in its panel",
        "!!document.querySelector('#worker-tasks button')",
        Duration::from_secs(10),
    );
    b.eval("document.querySelector('#worker-tasks button').click()");
    b.wait_for(
        "the task's log",
        "document.getElementById('task-log').textContent.includes('line-from-the-task')",
        Duration::from_secs(10),
    );
    let _ = agent.kill();
    let _ = agent.wait();

    // Escape closes the panel; no console error or exception all along.
    b.key("Escape", "Escape", 27);
    b.wait_for(
        "panel closed",
        "document.getElementById('panel').hidden",
        Duration::from_secs(5),
    );
    assert!(b.errors.is_empty(), "console errors: {:#?}", b.errors);
}

/// The fleet grid: a cell per worker, grouped by the label key picked,
/// each group's counts by status as its workers said them (error, bye,
/// silence), drawn in the table's colours; a status change moves a count
/// and a colour but not the layout, a newcomer regroups; hovering a cell
/// names its worker and clicking it opens that worker's panel.
#[test]
fn the_fleet_grid_groups_the_fleet_and_opens_a_worker() {
    use serde_json::{Value, json};
    let Some(browser) = chromium().filter(|_| support::require("chromium", chromium().is_some()))
    else {
        return;
    };
    let mut b = Browser::start(browser, 1280, 800);
    let d = Daemon::start(&["--heartbeat-interval", "1s", "--inactivity-timeout", "3s"]);
    // 300 workers in two pools, five in none; five say error, three say
    // bye, three fall silent. w300 joins later.
    let pool = |i: usize| match i {
        295..=299 => "(no pool)",
        _ if i % 3 == 0 => "scan",
        _ => "batch",
    };
    let (errors, byes, silent) = ([10, 20, 30, 40, 297], [7, 100, 201], [3, 150, 298]);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let send = |i: usize, status: &str| {
        let labels = match pool(i) {
            "(no pool)" => String::new(),
            p => format!(r#","labels":{{"pool":"{p}","zone":"z{}"}}"#, i % 2),
        };
        let f =
            format!(r#"{{"type":"heartbeat","worker_id":"w{i:03}","status":"{status}"{labels}}}"#);
        sock.send_to(f.as_bytes(), d.heartbeat).unwrap();
    };
    let said = |i: usize| match i {
        _ if errors.contains(&i) => "error",
        _ if i % 2 == 0 => "working",
        _ => "idle",
    };
    let shown = |i: usize| match i {
        _ if byes.contains(&i) => "terminated",
        _ if silent.contains(&i) => "inactive",
        _ => said(i),
    };
    for i in 0..300 {
        send(i, said(i));
        // Paced, so that a small socket buffer drops none.
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    for i in 0..300 {
        d.wait_applied(&format!("w{i:03}"), 1);
    }
    for i in byes {
        let bye = format!(r#"{{"type":"bye","worker_id":"w{i:03}"}}"#);
        sock.send_to(bye.as_bytes(), d.heartbeat).unwrap();
    }

    // What the grid must say of the first `n` workers, shown as `now` says.
    let want = |n: usize, now: &dyn Fn(usize) -> &'static str| {
        let groups = ["batch", "scan", "(no pool)"].map(|name| {
            let members: Vec<usize> = (0..n).filter(|&i| pool(i) == name).collect();
            let mut counts = std::collections::BTreeMap::new();
            for &i in &members {
                *counts.entry(now(i)).or_insert(0u32) += 1;
            }
            json!({"name": name, "cells": members.len(), "counts": counts})
        });
        json!(groups)
    };
    let fleet = "document.getElementById('fleet-map')";
    let groups = |b: &mut Browser| -> Value {
        let text = b.eval(&format!(
            "(() => {{ try {{ return JSON.stringify(JSON.parse({fleet}.dataset.summary).map(g => ({{ name: g.name, cells: g.cells, counts: g.counts }}))); }} catch (e) {{ return 'null'; }} }})()"
        ));
        serde_json::from_str(text.as_str().unwrap()).unwrap()
    };
    // Until the grid says `expected`, the first `n` workers that neither
    // said bye nor fell silent keep beating, saying what `says` says.
    let settle =
        |b: &mut Browser, n: usize, says: &dyn Fn(usize) -> &'static str, expected: &Value| {
            let until = Instant::now() + Duration::from_secs(30);
            loop {
                for i in (0..n).filter(|i| !byes.contains(i) && !silent.contains(i)) {
                    send(i, says(i));
                }
                let got = groups(b);
                if got == *expected {
                    return;
                }
                assert!(
                    Instant::now() < until,
                    "the grid's groups:\n{got:#}\nwanted:\n{expected:#}"
                );
                std::thread::sleep(Duration::from_millis(500));
            }
        };

    b.goto(&format!("http://{}/", d.http));
    b.wait_for(
        "the grid of 300 in one group",
        &format!("{fleet}.dataset.cells === '300' && {fleet}.dataset.groups === '1'"),
        Duration::from_secs(15),
    );
    // The keys offered are the labels' (no node on a single node).
    b.wait_for(
        "the label keys offered",
        "[...document.getElementById('fleet-by').options].map(o => o.value).join() === ',label:pool,label:zone'",
        Duration::from_secs(10),
    );
    b.eval("(() => { const s = document.getElementById('fleet-by'); s.value = 'label:pool'; s.dispatchEvent(new Event('change')); })()");
    settle(&mut b, 300, &said, &want(300, &shown));
    let legend = b.eval("document.getElementById('fleet-legend').innerText");
    for part in ["300 workers", "error 5", "inactive 3", "terminated 3"] {
        assert!(
            legend.as_str().unwrap().contains(part),
            "{part} in {legend}"
        );
    }

    // w250 (batch, working) reports error: its group's counts follow, and
    // nothing is laid out again.
    let regroups = format!("{fleet}.dataset.regroups");
    let before = b.eval(&regroups);
    let said_now = |i: usize| if i == 250 { "error" } else { said(i) };
    let shown_now = |i: usize| if i == 250 { "error" } else { shown(i) };
    settle(&mut b, 300, &said_now, &want(300, &shown_now));
    assert_eq!(b.eval(&regroups), before, "a status change regrouped");
    // Every error cell is drawn, whole, in the table's error colour.
    let error = "getComputedStyle(document.documentElement).getPropertyValue('--error').trim()";
    b.wait_for(
        "six error cells drawn",
        &format!(
            "(() => {{ const c = {fleet}; const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; const rgb = [1, 3, 5].map(i => parseInt({error}.slice(i, i + 2), 16)); let n = 0; for (let i = 0; i < px.length; i += 4) if (px[i] === rgb[0] && px[i + 1] === rgb[1] && px[i + 2] === rgb[2] && px[i + 3] === 255) n++; return n / c.dataset.cell ** 2; }})() === 6"
        ),
        Duration::from_secs(10),
    );

    // w250's cell, from the layout the grid publishes: batch is the
    // first group, its workers in id order, `cols` to a row. Read again
    // before each try: the page above the grid (the header's chart) may
    // still be laid out, moving the canvas after it was read.
    let rank = (0..250).filter(|&i| pool(i) == "batch").count() as f64;
    let locate = |b: &mut Browser| {
        let geo = b.eval(&format!(
            "(() => {{ const c = {fleet}; const r = c.getBoundingClientRect(); return JSON.stringify({{ left: r.left, top: r.top, d: {{ ...c.dataset }}, groups: JSON.parse(c.dataset.summary) }}); }})()"
        ));
        let geo: Value = serde_json::from_str(geo.as_str().unwrap()).unwrap();
        let num = |k: &str| geo["d"][k].as_str().unwrap().parse::<f64>().unwrap();
        let (dpr, pitch, cell, pad, cols) = (
            num("dpr"),
            num("pitch"),
            num("cell"),
            num("pad"),
            num("cols"),
        );
        assert_eq!(geo["groups"][0]["name"], "batch");
        assert!(rank >= cols, "w250 is past the first row: {rank} of {cols}");
        let px = pad + (rank % cols) * pitch + (cell / 2.0).floor();
        let py = geo["groups"][0]["top"].as_f64().unwrap()
            + (rank / cols).floor() * pitch
            + (cell / 2.0).floor();
        assert_eq!(
            b.eval(&format!(
                "'#' + [...{fleet}.getContext('2d').getImageData({px}, {py}, 1, 1).data.slice(0, 3)].map(v => v.toString(16).padStart(2, '0')).join('')"
            )),
            b.eval(error),
            "w250's cell is where the layout says, in the error colour"
        );
        (
            geo["left"].as_f64().unwrap() + (px + 0.5) / dpr,
            geo["top"].as_f64().unwrap() + (py + 0.5) / dpr,
        )
    };
    let named = format!("{fleet}.title.startsWith('w250 ')");
    let mut at = None;
    for _ in 0..10 {
        let (x, y) = locate(&mut b);
        b.call(
            "Input.dispatchMouseEvent",
            json!({"type": "mouseMoved", "x": x, "y": y}),
        );
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until && b.eval(&named) != true {
            std::thread::sleep(Duration::from_millis(50));
        }
        if b.eval(&named) == true {
            at = Some((x, y));
            break;
        }
        // Off the canvas, so that the next try is a move onto it.
        b.call(
            "Input.dispatchMouseEvent",
            json!({"type": "mouseMoved", "x": 0, "y": 0}),
        );
    }
    let (x, y) = at.unwrap_or_else(|| {
        panic!(
            "w250 never named on hover: {}",
            b.eval(&format!("{fleet}.title"))
        )
    });
    for kind in ["mousePressed", "mouseReleased"] {
        b.call(
            "Input.dispatchMouseEvent",
            json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
        );
    }
    b.wait_for(
        "w250's panel",
        "!document.getElementById('panel').hidden && document.getElementById('panel-title').textContent === 'w250'",
        Duration::from_secs(10),
    );

    // A newcomer joins scan: a regroup, and one cell more.
    settle(&mut b, 301, &said_now, &want(301, &shown_now));
    assert_ne!(b.eval(&regroups), before, "a newcomer regroups");
    // No grouping: one group of everyone.
    b.eval("(() => { const s = document.getElementById('fleet-by'); s.value = ''; s.dispatchEvent(new Event('change')); })()");
    b.wait_for(
        "one group of 301",
        &format!(
            "{fleet}.dataset.groups === '1' && JSON.parse({fleet}.dataset.summary)[0].cells === 301"
        ),
        Duration::from_secs(10),
    );
    assert!(b.errors.is_empty(), "console errors: {:#?}", b.errors);
}

/// With tokens and reads behind them: the page asks for the token, says
/// its role, streams with it, and shows only the actions that role may
/// take (a submit token's Cancel on its own tasks only).
#[test]
fn the_dashboard_shows_what_the_token_may_do() {
    let Some(browser) = chromium().filter(|_| support::require("chromium", chromium().is_some()))
    else {
        return;
    };
    let mut b = Browser::start(browser, 1280, 800);
    let dir = tempfile::tempdir().unwrap();
    let mut file = String::new();
    let mut token = |name: &str, role: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_muster"))
            .args(["token", "new", name, role])
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let (t, line) = text.trim().split_once('\n').unwrap();
        file.push_str(line);
        file.push('\n');
        t.to_string()
    };
    let (oncall, ci, other) = (
        token("oncall", "operate"),
        token("ci", "submit"),
        token("other", "submit"),
    );
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, &file).unwrap();
    let d = Daemon::start(&[
        "--api-tokens-file",
        tokens.to_str().unwrap(),
        "--api-read-requires-token",
        "on",
    ]);
    beat(&d, "alpha", "working", 10.0);
    let submit = |t: &str, kind: &str| {
        let body = format!(r#"{{"type":"{kind}","worker_id":"nobody"}}"#);
        let (status, _, _) = d.request(&format!(
            "POST /api/tasks HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {t}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ));
        assert_eq!(status, 201);
    };
    submit(&ci, "mine");
    submit(&other, "theirs");
    b.goto(&format!("http://{}/", d.http));
    b.wait_for(
        "no role without a token",
        "document.getElementById('role').textContent === 'read only'",
        Duration::from_secs(10),
    );
    let enter = |b: &mut Browser, t: &str| {
        b.eval(&format!(
            "(() => {{ const i = document.getElementById('token'); i.value = '{t}'; i.dispatchEvent(new Event('change')); }})()"
        ));
    };
    enter(&mut b, &oncall);
    b.wait_for(
        "the operate role said",
        "document.getElementById('role').textContent === 'role: operate (oncall)'",
        Duration::from_secs(10),
    );
    // The stream takes the token too: reload, and the table fills. (Until
    // the token was given, every read was refused, as the console says.)
    assert!(b.errors.iter().any(|e| e.contains("401")), "{:?}", b.errors);
    b.errors.clear();
    b.goto(&format!("http://{}/", d.http));
    b.wait_for(
        "the table, streamed with the token",
        "!!document.querySelector('#rows [data-id=alpha]')",
        Duration::from_secs(15),
    );
    b.eval("document.querySelector('nav button[data-view=tasks]').click()");
    let buttons = |kind: &str| {
        format!(
            "[...document.querySelectorAll('#tasks tr')].find(r => r.innerText.includes('{kind}'))?.querySelectorAll('button').length"
        )
    };
    b.wait_for(
        "operate cancels any task",
        &format!("{} === 1 && {} === 1", buttons("mine"), buttons("theirs")),
        Duration::from_secs(10),
    );
    let shown = "document.getElementById('bulk-cancel').offsetParent !== null";
    assert_eq!(b.eval(shown), true);
    enter(&mut b, &ci);
    b.wait_for(
        "the submit role said",
        "document.getElementById('role').textContent === 'role: submit (ci)'",
        Duration::from_secs(10),
    );
    b.wait_for(
        "submit cancels its own task only",
        &format!("{} === 1 && {} === 0", buttons("mine"), buttons("theirs")),
        Duration::from_secs(10),
    );
    assert_eq!(b.eval(shown), false, "bulk actions are operate's");
    assert!(b.errors.is_empty(), "console errors: {:#?}", b.errors);
}

/// The dashboard's cost in the browser, for BENCHMARKS.md (run by
/// bench/dashboard.sh, never as a timed test): the time from navigation to
/// the table filled with 1,000 workers, and the page's CPU (DevTools'
/// TaskDuration) while the 1,000 beat once a second.
#[test]
#[ignore = "a benchmark: bench/dashboard.sh"]
fn dashboard_bench() {
    let browser = chromium().expect("chromium");
    let workers: usize = std::env::var("WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let secs: u64 = std::env::var("DURATION")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    // Each worker beats once every INTERVAL seconds (default 1).
    let every: u64 = std::env::var("INTERVAL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let cap = (workers + 100).to_string();
    let (beat_every, timeout) = (format!("{every}s"), format!("{}s", 30 * every));
    let d = Daemon::start(&[
        "--heartbeat-interval",
        &beat_every,
        "--inactivity-timeout",
        &timeout,
        "--max-workers",
        &cap,
    ]);
    // The first beats paced at 20,000 a second, which the kernel's
    // socket buffer takes whole.
    let began = Instant::now();
    for i in 0..workers {
        beat(&d, &format!("w{i:05}"), "working", (i % 100) as f64);
        if i % 1000 == 999 {
            let due = Duration::from_millis(50) * ((i + 1) / 1000) as u32;
            std::thread::sleep(due.saturating_sub(began.elapsed()));
        }
    }
    d.wait_applied(&format!("w{:05}", workers - 1), 1);
    let mut first = Vec::new();
    for _ in 0..5 {
        let mut b = Browser::open(browser, &format!("http://{}/?trace", d.http), 1280, 800);
        b.wait_for(
            "rows",
            &format!("document.getElementById('count').textContent.startsWith('{workers} of')"),
            Duration::from_secs(30),
        );
        let t = b.eval("[performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? -1, performance.getEntriesByName('muster-rows')[0]?.startTime ?? -1]");
        let phases = b.eval("JSON.stringify({dcl: performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd, open: performance.getEntriesByName('muster-ws-open')[0]?.startTime, snapshot: performance.getEntriesByName('muster-snapshot')[0]?.startTime})");
        println!("dashboard: phases {phases}");
        first.push((t[0].as_f64().unwrap(), t[1].as_f64().unwrap()));
    }
    first.sort_by(|a, b| a.1.total_cmp(&b.1));
    let (fcp, rows) = first[first.len() / 2];
    println!(
        "dashboard: {workers} workers: first contentful paint {fcp:.0} ms, table filled {rows:.0} ms after navigation (median of 5: {first:?})"
    );

    let mut b = Browser::open(browser, &format!("http://{}/", d.http), 1280, 800);
    b.wait_for(
        "rows",
        "document.querySelectorAll('#rows .row').length > 0",
        Duration::from_secs(30),
    );
    b.call("Performance.enable", serde_json::json!({}));
    let task = |b: &mut Browser| {
        let m = b.call("Performance.getMetrics", serde_json::json!({}));
        m["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == "TaskDuration")
            .unwrap()["value"]
            .as_f64()
            .unwrap()
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let beater = {
        let stop = stop.clone();
        let hb = d.heartbeat;
        std::thread::spawn(move || {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                for i in 0..workers {
                    let f = format!(
                        r#"{{"type":"heartbeat","worker_id":"w{i:05}","status":"working","cpu_usage":{}}}"#,
                        (n + i as u64) % 100
                    );
                    let _ = s.send_to(f.as_bytes(), hb);
                    // Spread over the interval: 100 at a time.
                    if i % 100 == 99 {
                        let due = Duration::from_secs(every) * (i as u32 + 1) / workers as u32;
                        std::thread::sleep(due.saturating_sub(started.elapsed()));
                    }
                }
                n += 1;
                std::thread::sleep(Duration::from_secs(every).saturating_sub(started.elapsed()));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let (t0, c0) = (Instant::now(), task(&mut b));
    std::thread::sleep(Duration::from_secs(secs));
    let (t1, c1) = (Instant::now(), task(&mut b));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    beater.join().unwrap();
    let cpu = (c1 - c0) / (t1 - t0).as_secs_f64() * 100.0;
    println!(
        "dashboard: {workers} workers each beating every {every} s for {secs} s: the page's main thread busy {cpu:.1} % of one core"
    );
    assert!(b.errors.is_empty(), "{:#?}", b.errors);
}
