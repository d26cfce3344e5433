//! `muster bench`: load generators that measure musterd from outside, the
//! way a user would: `heartbeats` (UDP or TCP workers), `ws` (WebSocket
//! subscribers), `push` (the same fleet against a Pushgateway) and `procfs`
//! (what one agent sample costs), `tasks` (a work queue: musterd or
//! beanstalkd under the same clients). `report` is how each runs and prints.

pub mod heartbeats;
pub mod procfs;
pub mod push;
pub mod report;
pub mod tasks;
pub mod ws;

pub fn main(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("ws") => ws::main(&args[1..]),
        Some("push") => push::main(&args[1..]),
        Some("procfs") => procfs::main(&args[1..]),
        Some("tasks") => tasks::main(&args[1..]),
        _ => heartbeats::main(args),
    }
}
