//! `muster scale N` and `muster pool`: the pool from the command line.
//! `scale` sends the API token from `--token-file` or `$MUSTER_TOKEN_FILE`.

use super::client;
use super::{Fail, Out};
use lexopt::prelude::*;
use serde_json::Value;
use std::path::PathBuf;

/// The answer's JSON; a refused count (400) is a usage error.
fn answer(to: &super::net::Target, status: u16, body: &[u8]) -> Result<Value, Fail> {
    client::answer(to, status, body).map_err(|e| match e {
        client::ClientError::Status(400, _) => Fail(2, e.to_string()),
        e => Fail(1, e.to_string()),
    })
}

pub(super) fn scale(url: &str, args: &[String]) -> Out {
    let mut url = url.to_string();
    let (mut count, mut token_file) =
        (None, std::env::var_os(client::TOKEN_ENV).map(PathBuf::from));
    let mut p = lexopt::Parser::from_args(args.iter().cloned());
    while let Some(arg) = p.next()? {
        match arg {
            Value(v) if count.is_none() => {
                let v = v.string()?;
                count = Some(
                    v.parse::<u64>()
                        .map_err(|_| Fail(2, format!("scale needs a whole number, got {v:?}")))?,
                );
            }
            Long("token-file") => token_file = Some(p.value()?.into()),
            Long("url") => url = p.value()?.string()?,
            Short('h') | Long("help") => {
                println!("usage: muster scale N [--token-file F]");
                return Ok(());
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    let count = count.ok_or_else(|| Fail(2, "scale needs a count".into()))?;
    let to = client::parse_url(&url).map_err(|e| Fail(2, e.to_string()))?;
    let token = client::read_token(token_file.as_deref()).map_err(|m| Fail(2, m))?;
    let body = format!(r#"{{"count":{count}}}"#);
    let (status, b) = client::request_body(
        &to,
        "POST",
        "/api/workers/scale",
        token.as_deref(),
        body.as_bytes(),
    )?;
    let v = answer(&to, status, &b)?;
    println!(
        "created {} terminated {} count {}",
        v["created"], v["terminated"], v["count"]
    );
    Ok(())
}

pub(super) fn show(url: &str, args: &[String]) -> Out {
    let usage =
        "usage: muster pool [--json]\n\nThe pool's members: id, pid, state, restarts, last exit.";
    let Some(v) = super::tasks::listing(url, args, usage, "/api/pool", None)? else {
        return Ok(());
    };
    println!("desired {} actual {}", v["desired"], v["actual"]);
    println!(
        "{:<10} {:>8} {:<9} {:>8}  LAST EXIT",
        "ID", "PID", "STATE", "RESTARTS"
    );
    for m in v["members"].as_array().into_iter().flatten() {
        println!(
            "{:<10} {:>8} {:<9} {:>8}  {}",
            m["id"].as_str().unwrap_or("-"),
            m["pid"].as_u64().map_or("-".into(), |p| p.to_string()),
            m["state"].as_str().unwrap_or("-"),
            m["restarts"],
            m["last_exit"].as_str().unwrap_or("-")
        );
    }
    Ok(())
}
