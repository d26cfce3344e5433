//! The fuzz corpus, replayed on stable in the normal test run: every input
//! checked in under `fuzz/corpus/<target>/` (the seeds, and whatever a
//! fuzzing run found worth keeping) goes through the same check its
//! libFuzzer target runs. `bench/fuzz.sh` runs the targets themselves.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(
            outcome.is_ok(),
            "{target}: {} fails its check",
            path.display()
        );
        n += 1;
    }
    assert!(n > 0, "{target}: empty corpus");
}

#[test]
fn frame_corpus() {
    replay("frame", checks::frame);
}

#[test]
fn http_head_corpus() {
    replay("http_head", checks::http_head);
}

#[test]
fn config_file_corpus() {
    replay("config_file", checks::config_file);
}

#[test]
fn ws_query_corpus() {
    replay("ws_query", checks::ws_query);
}

#[test]
fn http_answer_corpus() {
    replay("http_answer", checks::http_answer);
}

#[test]
fn reply_corpus() {
    replay("reply", checks::reply);
}

#[test]
fn registry_corpus() {
    replay("registry", checks::registry);
}

#[test]
fn submission_corpus() {
    replay("submission", checks::submission);
}

#[test]
fn journal_corpus() {
    replay("journal", checks::journal);
}

#[test]
fn bulk_corpus() {
    replay("bulk", checks::bulk);
}

#[test]
fn cron_corpus() {
    replay("cron", checks::cron);
}

#[test]
fn schedule_corpus() {
    replay("schedule", checks::schedule);
}

#[test]
fn limit_corpus() {
    replay("limit", checks::limit);
}

#[test]
fn cert_subject_corpus() {
    replay("cert_subject", checks::cert_subject);
}

/// CI checks the fuzz crate with `--locked`: its lock file must already
/// resolve every dependency the daemon's manifest brings, or CI stops on
/// "cannot update the lock file" the first time a dependency moves.
#[test]
fn the_fuzz_lock_file_is_up_to_date() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--locked",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(root.join("fuzz/Cargo.toml"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "fuzz/Cargo.lock is stale (copy Cargo.lock over it and run \
         `cargo check --manifest-path fuzz/Cargo.toml`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
