//! How every bench runs and reports: parse, run, print a table or JSON;
//! find the daemon to measure; say how much CPU the host stole.

use serde_json::Value;

/// The shape every bench shares: parse, run, print a table or JSON.
/// Exit status 0, 1 (the run failed) or 2 (usage).
pub(crate) fn drive<O, E: std::fmt::Display>(
    name: &str,
    usage: &str,
    parsed: Result<Option<O>, E>,
    run: impl FnOnce(&O) -> (bool, Result<Value, String>),
    table: fn(&Value),
) -> i32 {
    let opts = match parsed {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{usage}");
            return 0;
        }
        Err(e) => {
            eprintln!("{name}: {e}\n\n{usage}");
            return 2;
        }
    };
    match run(&opts) {
        (true, Ok(report)) => {
            println!("{report}");
            0
        }
        (false, Ok(report)) => {
            table(&report);
            0
        }
        (_, Err(e)) => {
            eprintln!("{name}: {e}");
            1
        }
    }
}

/// The daemon to measure when no `--pid` is given: the one process named
/// `musterd` on this host, or none when there are several.
pub(crate) fn find_musterd() -> Option<u32> {
    let mut found = std::fs::read_dir("/proc").ok()?.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "musterd").then_some(pid)
    });
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// This machine's CPU time taken by the hypervisor for other guests during
/// the run: when it is high, every figure above is from a smaller machine.
pub fn print_steal(r: &Value) {
    if let Some(s) = r["host_steal_percent"].as_f64() {
        println!("  host steal      {s:>11.1}%  of CPU time, taken by the hypervisor");
    }
}
