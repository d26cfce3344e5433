//! `muster-bench`: load generators that measure musterd from outside, the
//! way a user would: `heartbeats` (UDP or TCP workers), `ws` (WebSocket
//! subscribers), `push` (the same fleet against a Pushgateway), `procfs`
//! (what one agent sample costs), `tasks` (a work queue: musterd or
//! beanstalkd under the same clients). `report` is how each runs and
//! prints. Not part of the product: the package ships `musterd` and
//! `muster` only; the scripts in `bench/` run this.

mod dispatch;
mod heartbeats;
mod procfs;
mod push;
mod report;
mod tasks;
mod ws;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("ws") => ws::main(&args[1..]),
        Some("push") => push::main(&args[1..]),
        Some("procfs") => procfs::main(&args[1..]),
        Some("tasks") => tasks::main(&args[1..]),
        _ => heartbeats::main(&args),
    };
    std::process::exit(code);
}
