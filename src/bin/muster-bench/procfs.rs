//! `muster-bench procfs`: what one sample of a process tree costs the agent.

use lexopt::prelude::*;
use std::time::{Duration, Instant};

/// `muster-bench procfs [--processes N] [--samples M]`: time one sample of
/// a process tree of N processes (a shell and N-1 sleeps), as the agent
/// takes every interval.
pub fn main(args: &[String]) -> i32 {
    let mut p = lexopt::Parser::from_args(args.iter().cloned());
    let (mut n, mut samples) = (20usize, 1000usize);
    let parsed = (|| -> Result<bool, lexopt::Error> {
        while let Some(arg) = p.next()? {
            match arg {
                Long("processes") => n = p.value()?.parse()?,
                Long("samples") => samples = p.value()?.parse()?,
                Short('h') | Long("help") => return Ok(false),
                _ => return Err(arg.unexpected()),
            }
        }
        Ok(true)
    })();
    match parsed {
        Ok(true) if n >= 1 && samples >= 1 => {}
        Ok(false) => {
            println!("usage: muster-bench procfs [--processes N] [--samples M]");
            return 0;
        }
        _ => {
            eprintln!(
                "muster-bench procfs: usage: muster-bench procfs [--processes N] [--samples M]"
            );
            return 2;
        }
    }
    let script = format!("for i in $(seq {}); do sleep 60 & done; wait", n - 1);
    let Ok(mut child) = std::process::Command::new("sh")
        .args(["-c", &script])
        .spawn()
    else {
        eprintln!("muster-bench procfs: cannot start sh");
        return 1;
    };
    std::thread::sleep(Duration::from_millis(500));
    let mut sampler = muster::sys::usage::Sampler::new(child.id());
    let mut times = Vec::with_capacity(samples);
    let mut seen = 0;
    for _ in 0..samples {
        let t = Instant::now();
        let u = sampler.sample();
        times.push(t.elapsed().as_secs_f64() * 1e6);
        seen = u.map_or(0, |u| u.processes);
    }
    let _ = std::process::Command::new("pkill")
        .args(["-P", &child.id().to_string()])
        .status();
    let _ = child.kill();
    let _ = child.wait();
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
    println!(
        "procfs sample of a {seen}-process tree, {samples} samples: median {:.0} us, p99 {:.0} us, max {:.0} us",
        pct(0.5),
        pct(0.99),
        times[times.len() - 1]
    );
    0
}
