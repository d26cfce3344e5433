#!/usr/bin/env bash
# The dashboard in headless Chromium (BENCHMARKS.md, "Dashboard"): time
# from navigation to the table filled with WORKERS workers (default 1000),
# and the page's CPU while they beat once a second for DURATION seconds (default 30).
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS=${WORKERS:-1000} DURATION=${DURATION:-30} \
  cargo test --release --locked --test dashboard -- --ignored --nocapture dashboard_bench 2>&1 \
  | grep '^dashboard:'
