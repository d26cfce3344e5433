#!/usr/bin/env bash
# Alert latency (BENCHMARKS.md, "Alerts"): from a worker's inactivity mark
# to the webhook post of its worker_inactive alert, less alert_for.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --locked --test alerts -- --ignored --nocapture alert_latency_bench 2>&1 | grep '^alerts:'
