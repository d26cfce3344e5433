//! `muster`: the operator's and worker's command line. See muster(1).

fn main() {
    let args = std::env::args().skip(1).collect();
    std::process::exit(muster::cli::main(args));
}
