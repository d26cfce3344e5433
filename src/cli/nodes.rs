//! `muster nodes`: the cluster's nodes as the asked node sees them.

use super::client;
use super::table::{age, align, word};
use super::{Fail, Out};
use lexopt::prelude::*;

const HELP: &str = "usage: muster nodes [--json] [--no-headers]

The nodes of the cluster, as the node at --url last read them from the
database: name, state (alive or gone: its lease lapsed), whether it leads
and in which epoch, its addresses, version, and how long ago it renewed its lease.
Exit status 1 when the node runs on its own (cluster_database off).";

pub(super) fn show(url: &str, args: &[String]) -> Out {
    let mut url = url.to_string();
    let (mut as_json, mut headers) = (false, true);
    let mut p = lexopt::Parser::from_args(args.iter().cloned());
    while let Some(arg) = p.next()? {
        match arg {
            Long("json") => as_json = true,
            Long("no-headers") => headers = false,
            Long("url") => url = p.value()?.string()?,
            Short('h') | Long("help") => {
                println!("{HELP}");
                return Ok(());
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    let to = client::parse_url(&url).map_err(|e| Fail(2, e.to_string()))?;
    let (status, b) = client::get(&to, "/api/nodes")?;
    let v = client::answer(&to, status, &b).map_err(|e| Fail(1, e.to_string()))?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    if let Some(e) = v["database"]["error"].as_str() {
        eprintln!(
            "muster: {} cannot reach its database ({e}): the list is as of its last reading",
            word(v["node"].as_str())
        );
    }
    let now = crate::clock::unix_ms();
    let mut rows = Vec::new();
    if headers {
        rows.push(
            [
                "NODE",
                "STATE",
                "LEADER",
                "EPOCH",
                "HTTP",
                "HEARTBEAT",
                "VERSION",
                "RENEWED",
            ]
            .map(String::from)
            .to_vec(),
        );
    }
    for n in v["nodes"].as_array().into_iter().flatten() {
        let leads = n["leader"] == true;
        rows.push(vec![
            word(n["node_id"].as_str()),
            if n["alive"] == true { "alive" } else { "gone" }.into(),
            if leads { "yes" } else { "-" }.into(),
            if leads {
                v["leader"]["epoch"].to_string()
            } else {
                "-".into()
            },
            word(n["http"].as_str()),
            word(n["heartbeat"].as_str()),
            word(n["version"].as_str()),
            n["renewed_at"]
                .as_u64()
                .map_or("-".into(), |t| format!("{}_ago", age(t, now))),
        ]);
    }
    for line in align(&rows, &[]) {
        println!("{line}");
    }
    Ok(())
}
