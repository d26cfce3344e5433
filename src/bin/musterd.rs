//! `musterd`: the daemon. See musterd(8).

fn main() {
    let args = std::env::args().skip(1).collect();
    std::process::exit(muster::daemon::main(args));
}
