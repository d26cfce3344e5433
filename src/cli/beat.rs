//! `muster beat`: one frame from a shell script, built with the protocol's
//! own types and checked before it is sent (over UDP the daemon cannot say
//! what was wrong).

use super::client::{self};
use super::net::{self, Target};
use super::{Fail, Out};
use crate::proto::{self, Frame, Heartbeat, Hello, Reply, Reported, WorkerId};
use lexopt::prelude::*;
use std::io::Write;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::time::Duration;

pub(super) fn beat(args: &[String]) -> Out {
    let mut hb_addr = client::env_heartbeat_addr();
    let mut beat = Heartbeat::default();
    let (mut id, mut tcp, mut bye) = (
        std::env::var("MUSTER_WORKER_ID")
            .ok()
            .filter(|v| !v.is_empty()),
        false,
        false,
    );
    let mut token_file = std::env::var_os(client::HEARTBEAT_TOKEN_ENV).map(PathBuf::from);
    let mut tls = net::env_tls().map_err(|m| Fail(2, m))?;
    let mut files = net::files();
    let mut p = lexopt::Parser::from_args(args.iter().cloned());
    let number = |p: &mut lexopt::Parser, name: &str| -> Result<f64, Fail> {
        let v = p.value()?.string()?;
        v.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| Fail(2, format!("--{name} needs a number, got {v:?}")))
    };
    while let Some(arg) = p.next()? {
        match arg {
            Long("id") => id = Some(p.value()?.string()?),
            Long("status") => {
                let v = p.value()?.string()?;
                beat.status = Some(Reported::parse(&v).ok_or_else(|| {
                    Fail(2, format!("--status is idle, working or error, not {v:?}"))
                })?);
            }
            Long("cpu") => beat.cpu_usage = Some(number(&mut p, "cpu")?),
            Long("mem") => beat.memory_usage = Some(number(&mut p, "mem")?),
            Long("queue") => {
                let v = p.value()?.string()?;
                let q: u64 = v
                    .parse()
                    .map_err(|_| Fail(2, format!("--queue needs a whole number, got {v:?}")))?;
                beat.queue_depth = Some(q);
            }
            Long("tcp") => tcp = true,
            Long("udp") => tcp = false,
            Long("bye") => bye = true,
            Long("heartbeat-addr") => hb_addr = p.value()?.string()?,
            Long("heartbeat-token-file") => token_file = Some(p.value()?.into()),
            Long("tls") => tls = true,
            Long("ca-file") => files.ca = Some(p.value()?.into()),
            Long("cert-file") => files.cert = Some(p.value()?.into()),
            Long("key-file") => files.key = Some(p.value()?.into()),
            Short('h') | Long("help") => {
                println!(
                    "usage: muster beat --id ID [--status idle|working|error] [--cpu N] [--mem N] [--queue N] [--tcp] [--heartbeat-addr ADDR[,ADDR…]] [--heartbeat-token-file F]\n                   [--tls [--ca-file F] [--cert-file F --key-file F]]\n       muster beat --id ID --bye"
                );
                return Ok(());
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    let id = id.ok_or_else(|| Fail(2, "beat needs --id".into()))?;
    // TLS runs over TCP only.
    tcp |= tls;
    net::set_files(files);
    if let Err(reason) = proto::check_worker_id(&id) {
        return Err(Fail(
            2,
            format!("{}: {id:?} is not a valid worker id", reason.as_str()),
        ));
    }
    let token = client::read_token(token_file.as_deref()).map_err(|m| Fail(2, m))?;
    let worker_id = Some(WorkerId::from(id.as_str()));
    let mut frame = if bye {
        Frame::Bye {
            worker_id,
            token: None,
        }
    } else {
        Frame::Heartbeat(Heartbeat { worker_id, ..beat })
    };
    if !tcp {
        // Over UDP every frame carries it; over TCP the hello does.
        frame.set_token(token.clone());
    }
    let text = proto::encode(&frame);
    // Check it here: over UDP the daemon cannot tell us what was wrong.
    if let Err(r) = proto::decode(text.as_bytes(), 65536) {
        return Err(Fail(2, r.to_string()));
    }
    let addrs = client::parse_addrs(&hb_addr)
        .map_err(|_| Fail(2, format!("bad --heartbeat-addr {hb_addr:?}")))?;
    if tcp {
        // The first node of the list that answers.
        let mut last = None;
        for to in addrs {
            match beat_tcp(&to.with_tls(tls), &id, token.clone(), &text) {
                Err(Fail(1, why)) if why.starts_with("cannot reach") => last = Some(why),
                done => return done,
            }
        }
        Err(Fail(1, last.unwrap_or_default()))
    } else {
        // A datagram has no answer to fail over on: the first address.
        let to = addrs[0].addr;
        let s = UdpSocket::bind(if to.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" })
            .map_err(|e| Fail(1, format!("udp socket: {e}")))?;
        s.send_to(text.as_bytes(), to)
            .map_err(|e| Fail(1, format!("cannot send to {to}: {e}")))?;
        Ok(())
    }
}

/// hello, the frame, and a check that no error came back.
fn beat_tcp(to: &Target, id: &str, token: Option<String>, text: &str) -> Out {
    let unreachable = |e: std::io::Error| Fail(1, format!("cannot reach musterd at {to}: {e}"));
    let mut s = net::connect(to, Duration::from_secs(5)).map_err(unreachable)?;
    s.tcp()
        .set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(unreachable)?;
    // The worker is the script that runs `muster beat`: our parent.
    let script = std::os::unix::process::parent_id();
    let hello = proto::encode(&Frame::Hello(Hello {
        worker_id: WorkerId::from(id),
        pid: Some(script),
        hostname: Some(crate::cli::agent::hostname()),
        capacity: None,
        task_types: None,
        labels: None,
        token,
        running: None,
    }));
    s.write_all(format!("{hello}\n{text}\n").as_bytes())
        .map_err(unreachable)?;
    let _ = s.shutdown_write();
    let mut reply = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut reply);
    let mut welcomed = false;
    for line in reply.lines() {
        match proto::decode_reply(line.as_bytes()) {
            Ok(Reply::Welcome(_)) => welcomed = true,
            Ok(Reply::Error(e)) => {
                return Err(Fail(
                    1,
                    format!("musterd refused the frame: {} ({})", e.message, e.code),
                ));
            }
            // `beat` says no capacity: it is never offered tasks.
            Ok(Reply::Task(_) | Reply::Cancel { .. } | Reply::Lease { .. }) | Err(_) => {}
        }
    }
    if !welcomed {
        return Err(Fail(1, format!("no welcome from musterd at {to}")));
    }
    Ok(())
}
