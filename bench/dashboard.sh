#!/usr/bin/env bash
# The dashboard in headless Chromium (BENCHMARKS.md, "Dashboard"): time
# from navigation to the table filled with WORKERS workers (default 1000),
# and the page's CPU while each beats every INTERVAL seconds (default 1) for
# DURATION seconds (default 30). WORKERS=90000 INTERVAL=5 for a large fleet
# (kernel.pid_max and vm.max_map_count must allow a thread per worker:
# bench/scale.sh raises them).
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS=${WORKERS:-1000} DURATION=${DURATION:-30} INTERVAL=${INTERVAL:-1} \
  cargo test --release --locked --test dashboard -- --ignored --nocapture dashboard_bench 2>&1 \
  | grep '^dashboard:'
