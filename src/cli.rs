//! The `muster` command line: argument dispatch to subcommands.
//!
//! For now it knows `help`, `version` and `bench heartbeats`; the operator
//! subcommands (`workers`, `status`, `watch`, `beat`, `agent`) come later.

use crate::api::VERSION;

const USAGE: &str = "muster: the command line for musterd

usage: muster <command> [options]

commands:
  bench heartbeats   load musterd with paced heartbeats and report loss (see --help)
  help               print this help
  version            print the version

Operator and worker commands (workers, status, watch, beat, agent) are not
available in this version; query musterd over HTTP meanwhile:
  curl localhost:8080/telemetry
";

pub fn main(args: Vec<String>) -> i32 {
    match args.first().map(String::as_str) {
        None | Some("help" | "-h" | "--help") => {
            print!("{USAGE}");
            0
        }
        Some("version" | "-V" | "--version") => {
            println!("muster {VERSION}");
            0
        }
        Some("bench") => crate::bench::main(&args[1..]),
        Some(other) => {
            eprintln!("muster: unknown command {other:?} (see muster --help)");
            2
        }
    }
}
