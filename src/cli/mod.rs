//! The `muster` command line: operator commands (`workers`, `status`,
//! `health`, `watch`) over musterd's HTTP and WebSocket API, the worker-side
//! `beat` for shell scripts. The load generators are `muster-bench`, a
//! binary of their own.
//!
//! Exit codes: 0 ok, 1 daemon unreachable or an error answer, 2 usage,
//! 4 worker not found. Errors are one line on stderr, never a backtrace.
//! Colour only on a terminal and never with `NO_COLOR` set.

pub mod agent;
pub mod beat;
pub mod client;
pub mod complete;
pub mod net;
pub mod nodes;
pub mod ops;
pub mod pool;
pub mod schedules;
pub mod table;
pub mod tasks;
pub mod token;
pub mod watch;

use crate::VERSION;
use client::ClientError;
use net::TlsFiles;

const USAGE: &str = "muster: the command line for musterd

usage: muster [--url URL] [--ca-file F] <command> [options]

operator commands:
  workers [--status S] [--json]     list workers as a table
  status ID [--json]                everything known about one worker
  health [--json]                   the daemon's health and counters;
                                    exits 3 when degraded
  alerts [--all] [--json]           built-in alerts firing; exits 3 if any
  watch [ID] [--status S]           live view over WebSocket; reconnects
  forget ID [--token-file F]        forget a worker (DELETE; token from
                                    --token-file or $MUSTER_TOKEN_FILE)
  tasks [--state S] [--type T] [--worker ID] [--label K:V] [--q TEXT]
        [--created-after T] ... [--json]
                                    list tasks
  tasks cancel|retry|delete FILTER  the same on every task the filter
                                    matches (the filter flags above)
  task submit TYPE [--payload JSON|@FILE|-] [--priority N] [--worker ID]
       [--label K=V] [--max-attempts N] [--timeout-ms N]
       [--delay-ms N | --run-at TIME] [--depends-on ID]...
       [--unique-key K] [--wait]
                                    submit; --wait exits 0 succeeded,
                                    3 failed or dead, 5 cancelled or
                                    timed out
  task show ID | task logs ID [-f] | task cancel ID | task retry ID
  queues [--json]                   task types queued or paused
  queue pause|resume TYPE           stop or restart dispatch of a type
  schedule add NAME CRON TYPE [--timezone Z] [--overlap O] [--catch-up C]
                                    a periodic task (CRON: 5 fields, @daily,
                                    or @every 30s)
  schedule ls | rm NAME | pause NAME | resume NAME
  scale N [--token-file F]          resize the pool
  pool [--json]                     the pool's members
  nodes [--json]                    the cluster's nodes (cluster mode)

worker commands:
  beat --id ID [--status S] [--cpu N] [--mem N] [--queue N] [--tcp]
                                    send one heartbeat (UDP unless --tcp)
  beat --id ID --bye                say goodbye: the worker is terminated
  beat ... --heartbeat-token-file F the heartbeat token, when musterd asks
                                    (default $MUSTER_HEARTBEAT_TOKEN_FILE)
  beat ... --tls [--ca-file F] [--cert-file F --key-file F]
                                    over TLS, to heartbeat_tls_addr
  agent [options] -- CMD [ARGS...]  run CMD as a monitored worker (usage, runs)
  agent [options] --pid PID         watch a running process until it exits
  agent --tasks [--capacity N] -- HANDLER [ARGS...]
                                    take tasks: HANDLER runs once per task

other:
  token new NAME ROLE               a new API token, and its line for
                                    api_tokens_file (roles: read, submit,
                                    operate, admin)
  completions bash|zsh              a shell completion script
  help, version

The daemon is at --url or $MUSTER_URL (default http://127.0.0.1:8080;
https:// is verified against --ca-file, $MUSTER_TLS_CA_FILE or the system's
roots);
heartbeats go to --heartbeat-addr or $MUSTER_HEARTBEAT_ADDR (default
127.0.0.1:8090). Exit status: 0 ok, 1 daemon unreachable or error,
2 usage, 4 worker not found. `muster <command> --help` for details.
";

/// A failed command: its exit code and one line for stderr.
#[derive(Debug)]
pub(crate) struct Fail(pub i32, pub String);

impl From<ClientError> for Fail {
    fn from(e: ClientError) -> Fail {
        match e {
            ClientError::Status(404, m) => Fail(4, m),
            e => Fail(1, e.to_string()),
        }
    }
}

impl From<lexopt::Error> for Fail {
    fn from(e: lexopt::Error) -> Fail {
        Fail(2, format!("{e} (see --help)"))
    }
}

pub(crate) type Out = Result<(), Fail>;

pub fn main(args: Vec<String>) -> i32 {
    match run(args) {
        Ok(()) => 0,
        Err(Fail(code, msg)) => {
            if !msg.is_empty() {
                eprintln!("muster: {msg}");
            }
            code
        }
    }
}

fn run(args: Vec<String>) -> Out {
    // Global --url before the command.
    let mut url = crate::cli::client::env_url();
    let mut files = TlsFiles::from_env();
    let mut rest = args.into_iter().peekable();
    let mut head = Vec::new();
    while let Some(a) = rest.peek() {
        if a == "--url" {
            rest.next();
            url = rest
                .next()
                .ok_or_else(|| Fail(2, "--url needs a value".into()))?;
        } else if let Some(u) = a.strip_prefix("--url=") {
            url = u.to_string();
            rest.next();
        } else if a == "--ca-file" {
            rest.next();
            files.ca = Some(
                rest.next()
                    .ok_or_else(|| Fail(2, "--ca-file needs a value".into()))?
                    .into(),
            );
        } else {
            head.push(rest.next().unwrap_or_default());
            break;
        }
    }
    // `beat` and `agent` add their own TLS flags to these.
    net::set_files(files);
    let cmd = head.pop();
    let args: Vec<String> = rest.collect();
    match cmd.as_deref() {
        None | Some("help" | "-h" | "--help") => {
            print!("{USAGE}");
            Ok(())
        }
        Some("version" | "-V" | "--version") => {
            println!("muster {VERSION}");
            Ok(())
        }
        Some("workers") => ops::workers(&url, &args),
        Some("status") => ops::status(&url, &args),
        Some("health") => ops::health(&url, &args),
        Some("alerts") => ops::alerts(&url, &args),
        Some("watch") => watch::watch(&url, &args),
        Some("forget") => ops::forget(&url, &args),
        Some("tasks") => tasks::list(&url, &args),
        Some("scale") => pool::scale(&url, &args),
        Some("pool") => pool::show(&url, &args),
        Some("nodes") => nodes::show(&url, &args),
        Some("token") => token::main(&args),
        Some("task") => tasks::task(&url, &args),
        Some("queues") => tasks::queues(&url, &args),
        Some("queue") => tasks::queue(&url, &args),
        Some("schedule") => schedules::schedule(&url, &args),
        Some("beat") => beat::beat(&args),
        Some("completions") => complete::main(&args),
        Some("agent") => match crate::cli::agent::main(&args) {
            0 => Ok(()),
            // The agent has said what went wrong, or passes on CMD's status.
            n => Err(Fail(n, String::new())),
        },
        Some(other) => Err(Fail(
            2,
            format!("unknown command {other:?} (see muster --help)"),
        )),
    }
}
