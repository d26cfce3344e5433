//! Cluster mode against a real PostgreSQL (Debian's server, started by each
//! test in a temporary directory on a private port): the schema, the node
//! and leader leases, losing the database, and the settings an operator
//! can get wrong.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};
use support::Daemon;
use support::pg::{self, TTL, node};

/// The schema version this build migrates a database to.
fn latest() -> String {
    muster::cluster::schema::VERSION.to_string()
}

fn nodes(d: &Daemon) -> serde_json::Value {
    d.json("/api/nodes")
}

/// The node ids `d` lists as alive, and the one it says leads.
fn alive_and_leader(d: &Daemon) -> (Vec<String>, Option<String>) {
    let v = nodes(d);
    let alive = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["alive"] == true)
        .map(|n| n["node_id"].as_str().unwrap().to_string())
        .collect();
    let leader = v["leader"]
        .as_object()
        .filter(|l| l["held"] == true)
        .map(|l| l["node_id"].as_str().unwrap().to_string());
    (alive, leader)
}

/// Run musterd to its end; its status and its stderr.
fn run_to_end(args: &[&str]) -> (Option<i32>, String) {
    let out = support::command(args)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn three_nodes_migrate_once_see_each_other_and_elect_one_leader() {
    let Some(pg) = pg::start() else { return };
    // All three at once: the advisory lock lets one migrate.
    let ds: Vec<Daemon> = std::thread::scope(|s| {
        let hs: Vec<_> = ["n1", "n2", "n3"]
            .map(|n| {
                let pg = &pg;
                s.spawn(move || node(pg, n, &[]))
            })
            .into_iter()
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        pg.psql("SELECT string_agg(version::text, ',' ORDER BY version) FROM muster_schema"),
        (1..=muster::cluster::schema::VERSION)
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    for d in &ds {
        d.wait_for("three alive nodes and a leader", |d| {
            let (alive, leader) = alive_and_leader(d);
            alive == ["n1", "n2", "n3"] && leader.is_some()
        });
    }
    let leaders: Vec<_> = ds.iter().map(|d| alive_and_leader(d).1).collect();
    assert!(leaders.windows(2).all(|w| w[0] == w[1]), "{leaders:?}");
    let h = ds[1].json("/health");
    assert_eq!(h["status"], "healthy", "{h}");
    assert_eq!(h["cluster"]["node"], "n2");
    assert_eq!(h["cluster"]["nodes"], 3);
    assert_eq!(h["cluster"]["leader"].as_str(), leaders[0].as_deref());
    assert_eq!(h["cluster"]["database"]["status"], "up");
    assert_eq!(
        h["cluster"]["database"]["schema_version"],
        muster::cluster::schema::VERSION
    );
    let n = &nodes(&ds[0])["nodes"][2];
    assert_eq!(n["http"], ds[2].http.to_string(), "{n}");
    assert_eq!(n["heartbeat"], ds[2].heartbeat.to_string(), "{n}");
    // `muster nodes`: one row per node, the leader marked, with its epoch.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_muster"))
        .args(["--url", &format!("http://{}", ds[0].http), "nodes"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("NODE"), "{text}");
    let leading: Vec<Vec<&str>> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f[2] == "yes")
        .collect();
    assert_eq!(leading.len(), 1, "{text}");
    assert_eq!(Some(leading[0][0]), leaders[0].as_deref(), "{text}");
    assert!(leading[0][3].parse::<i64>().unwrap() >= 1, "{text}");
    assert!(
        lines[1..].iter().all(|l| l.split_whitespace().count() == 8),
        "{text}"
    );
}

#[test]
fn a_killed_leader_is_replaced_with_a_higher_epoch_and_a_stopped_one_at_once() {
    let Some(pg) = pg::start() else { return };
    let mut ds: Vec<Option<Daemon>> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| Some(node(&pg, n, &[])))
        .collect();
    let live = |ds: &Vec<Option<Daemon>>| -> usize { ds.iter().position(Option::is_some).unwrap() };
    ds[0].as_ref().unwrap().wait_for("a leader", |d| {
        let (alive, leader) = alive_and_leader(d);
        alive.len() == 3 && leader.is_some()
    });
    let epoch = |d: &Daemon| nodes(d)["leader"]["epoch"].as_i64().unwrap();
    let first = epoch(ds[0].as_ref().unwrap());
    let leader_index = |ds: &Vec<Option<Daemon>>| -> usize {
        let d = ds[live(ds)].as_ref().unwrap();
        let name = alive_and_leader(d).1.unwrap();
        ["n1", "n2", "n3"].iter().position(|n| *n == name).unwrap()
    };

    // kill -9: the lease lapses after node_ttl, and another node takes it
    // at its next renewal (a third of node_ttl).
    let i = leader_index(&ds);
    let mut dead = ds[i].take().unwrap();
    dead.child.kill().unwrap();
    let _ = dead.child.wait();
    let killed = Instant::now();
    let watcher = ds[live(&ds)].as_ref().unwrap();
    watcher.wait_for("a new leader", |d| {
        let (alive, leader) = alive_and_leader(d);
        leader.is_some_and(|l| l != ["n1", "n2", "n3"][i]) && alive.len() == 2
    });
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "a new leader after {took:?}"
    );
    let second = epoch(watcher);
    assert!(second > first, "epoch {first} then {second}");
    let gone = &nodes(watcher)["nodes"][i];
    assert_eq!(gone["alive"], false, "{gone}");

    // SIGTERM: the stopping leader lets its lease lapse at once.
    let j = leader_index(&ds);
    let stopped = ds[j].take().unwrap();
    let _ = stopped.stop();
    let watcher = ds[live(&ds)].as_ref().unwrap();
    watcher.wait_for("the last node leads", |d| {
        alive_and_leader(d).1.as_deref() == Some(["n1", "n2", "n3"][live(&ds)])
    });
    assert!(epoch(watcher) > second);
    watcher.wait_log("this node leads");
}

#[test]
fn a_node_without_its_database_says_degraded_and_heals_when_it_is_back() {
    let Some(mut pg) = pg::start() else { return };
    let d = node(&pg, "solo", &[]);
    d.wait_for("the lease held", |d| {
        d.json("/health")["status"] == "healthy" && alive_and_leader(d).1.is_some()
    });
    pg.stop("fast");
    d.wait_for("degraded", |d| {
        let h = d.json("/health");
        h["status"] == "degraded" && h["cluster"]["database"]["status"] == "down"
    });
    let h = d.json("/health");
    let reasons = h["reasons"].to_string();
    assert!(reasons.contains("cannot reach its database"), "{h}");
    assert!(h["cluster"]["database"]["down_since"].is_u64(), "{h}");
    // Its roll call carries on meanwhile.
    d.udp(br#"{"type":"heartbeat","worker_id":"still-here","queue_depth":1}"#);
    d.wait_for("the worker", |d| d.get("/telemetry/still-here").0 == 200);
    pg.restart();
    d.wait_for("healthy again", |d| {
        d.json("/health")["status"] == "healthy"
    });
    assert_eq!(d.json("/health")["cluster"]["database"]["status"], "up");
    d.wait_log("the database answers again");
}

#[test]
fn a_database_away_at_start_is_waited_for_not_fatal() {
    let Some(mut pg) = pg::start() else { return };
    pg.stop("fast");
    let d = node(&pg, "early", &[]);
    let h = d.json("/health");
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["cluster"]["database"]["status"], "down", "{h}");
    pg.restart();
    d.wait_for("joined", |d| {
        let (alive, leader) = alive_and_leader(d);
        alive == ["early"] && leader.as_deref() == Some("early")
    });
    assert_eq!(pg.psql("SELECT max(version) FROM muster_schema"), latest());
}

#[test]
fn settings_an_operator_can_get_wrong_are_refused_with_exit_status_2() {
    let Some(pg) = pg::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    pg.psql(&format!(
        "CREATE ROLE {} LOGIN PASSWORD 'right-horse'",
        pg::PASSWORD_ROLE
    ));
    let with_role = format!(
        "postgresql://{}@127.0.0.1:{}/muster",
        pg::PASSWORD_ROLE,
        pg.port
    );
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "battery-staple\n").unwrap();
    let (code, err) = run_to_end(&[
        "--cluster-database",
        &with_role,
        "--cluster-database-password-file",
        wrong.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains("battery-staple"), "{err}");

    // The right password from its file: the node starts.
    let right = dir.path().join("right");
    std::fs::write(&right, "right-horse\n").unwrap();
    pg.psql(&format!(
        "GRANT CREATE ON SCHEMA public TO {}",
        pg::PASSWORD_ROLE
    ));
    let d = Daemon::start(&[
        "--cluster-database",
        &with_role,
        "--cluster-database-password-file",
        right.to_str().unwrap(),
        "--node-id",
        "pw",
    ]);
    d.wait_for("joined", |d| alive_and_leader(d).0 == ["pw"]);
    assert!(!d.log_has("right-horse"));
    drop(d);

    // A password in the URI never reaches the log.
    let in_uri = format!(
        "postgresql://{}:right-horse@127.0.0.1:{}/nowhere",
        pg::PASSWORD_ROLE,
        pg.port
    );
    let (code, err) = run_to_end(&["--cluster-database", &in_uri]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("does not exist"), "{err}");
    assert!(!err.contains("right-horse"), "{err}");

    // A migration the database refuses (its table is there already, as
    // someone's hand-made copy would be): refused, naming it, not waited on.
    drop(node(&pg, "migrator", &[]));
    pg.psql(&format!(
        "DELETE FROM muster_schema WHERE version = {}",
        latest()
    ));
    let (code, err) = run_to_end(&["--cluster-database", &pg.uri()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("refused schema migration {}", latest())),
        "{err}"
    );
    assert!(err.contains("already exists"), "{err}");
    pg.psql(&format!(
        "INSERT INTO muster_schema (version, release) VALUES ({}, 'by hand')",
        latest()
    ));

    // A schema from a newer release.
    pg.psql("INSERT INTO muster_schema (version, release) VALUES (99, '9.9.9')");
    let (code, err) = run_to_end(&["--cluster-database", &pg.uri()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "version 99, newer than this musterd's {}",
            latest()
        )),
        "{err}"
    );

    // --check-config connects and reads the version.
    let (code, err) = run_to_end(&["--cluster-database", &pg.uri(), "--check-config"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("newer"), "{err}");
    pg.psql("DELETE FROM muster_schema WHERE version = 99");
    let out = support::command(&["--cluster-database", &pg.uri(), "--check-config"])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!("schema version {}", latest())),
        "{said}"
    );
    // Nothing listens there: --check-config warns (a node would start
    // degraded and keep trying, so the unit's ExecStartPre must not fail).
    let (code, err) = run_to_end(&[
        "--cluster-database",
        "postgresql://muster@127.0.0.1:1/muster",
        "--check-config",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("does not answer"), "{err}");
    // Not a connection string at all.
    let (code, err) = run_to_end(&["--cluster-database", "host=db port=notaport"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cluster_database"), "{err}");
}

#[test]
fn two_processes_cannot_be_one_node() {
    let Some(pg) = pg::start() else { return };
    let d = node(&pg, "twin", &[]);
    d.wait_for("joined", |d| alive_and_leader(d).0 == ["twin"]);
    let started = Instant::now();
    let (code, err) = run_to_end(&[
        "--cluster-database",
        &pg.uri(),
        "--node-id",
        "twin",
        "--node-ttl",
        TTL,
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("node_id twin is in use by another running musterd"),
        "{err}"
    );
    // It waited for a crashed predecessor's lease to lapse first.
    assert!(started.elapsed() >= Duration::from_secs(3));
    // The first one was not disturbed.
    assert_eq!(
        alive_and_leader(&d),
        (vec!["twin".to_string()], Some("twin".to_string()))
    );
}

/// Without `cluster_database`, nothing of cluster mode shows.
#[test]
fn the_single_node_default_has_no_cluster() {
    let d = Daemon::start(&[]);
    let h = d.json("/health");
    assert!(h.get("cluster").is_none(), "{h}");
    let (status, body) = d.get("/api/nodes");
    assert_eq!(status, 409);
    assert_eq!(body["error"], "not_clustered");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_muster"))
        .args(["--url", &format!("http://{}", d.http), "nodes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cluster_database is off"));
}

/// A primary and its synchronous standby behind one multi-host URI: the
/// standby promoted and the primary stopped, the node follows the URI to
/// the new primary and holds its leases there, with the schema it wrote
/// on the old one.
#[test]
fn a_node_follows_a_failover_to_the_promoted_standby() {
    let Some(mut primary) = pg::start() else {
        return;
    };
    let standby = primary.standby();
    let d = pg::node_at(&pg::either(&primary, &standby), "ha", &[]);
    d.wait_for("leading on the primary", |d| {
        alive_and_leader(d).1.as_deref() == Some("ha")
    });
    standby.promote();
    primary.stop("fast");
    let failed_over = Instant::now();
    d.wait_for("leading on the new primary", |d| {
        let h = d.json("/health");
        h["status"] == "healthy" && h["cluster"]["database"]["status"] == "up"
    });
    assert!(failed_over.elapsed() < Duration::from_secs(15));
    assert_eq!(
        standby.psql("SELECT max(version) FROM muster_schema"),
        latest()
    );
    assert_eq!(
        standby
            .psql("SELECT count(*) FROM muster_nodes WHERE node_id = 'ha' AND expires_at > now()"),
        "1"
    );
    assert_eq!(
        alive_and_leader(&d),
        (vec!["ha".to_string()], Some("ha".to_string()))
    );
}

/// TLS to the database, as `sslmode` asks: `require` and `verify-full`
/// (against the server's own CA) connect over TLS, every connection of the
/// node encrypted; a CA that did not sign the server's certificate, or
/// `require` against a server without TLS, is refused at start (exit 2).
#[test]
fn sslmode_require_and_verify_full_connect_over_tls_and_a_wrong_ca_is_refused() {
    let Some(mut pg) = pg::start() else { return };
    let plain = pg.uri();
    let (code, err) = run_to_end(&["--cluster-database", &format!("{plain}?sslmode=require")]);
    assert_eq!(code, Some(2), "require against a server without TLS: {err}");
    assert!(err.contains("TLS"), "{err}");

    let ca = pg.with_tls();
    for (name, query) in [
        ("tls-require", "sslmode=require".to_string()),
        (
            "tls-full",
            format!("sslmode=verify-full&sslrootcert={}", ca.display()),
        ),
    ] {
        let d = pg::node_at(&format!("{plain}?{query}"), name, &[]);
        d.wait_for("leading over TLS", |d| {
            alive_and_leader(d).1.as_deref() == Some(name)
        });
        let counts = pg.psql(&format!(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.application_name LIKE 'musterd {name} %'"
        ));
        let (tls, clear) = counts.split_once('|').unwrap();
        assert!(tls.parse::<u32>().unwrap() >= 3, "{name}: {counts}");
        assert_eq!(clear, "0", "{name}: {counts}");
        d.stop();
    }

    // A CA of its own, which signed nothing the server has.
    let other = tempfile::tempdir().unwrap();
    let other_ca = other.path().join("other.crt");
    let key = other.path().join("other.key");
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=elsewhere", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&other_ca)
        .output()
        .unwrap();
    assert!(made.status.success());
    let uri = format!(
        "{plain}?sslmode=verify-full&sslrootcert={}",
        other_ca.display()
    );
    let (code, err) = run_to_end(&["--cluster-database", &uri, "--node-id", "tls-wrong"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("certificate"), "{err}");
}
