#!/usr/bin/env bash
# Run every fuzz target (or those named) for a given time each and print
# what each did: executions, executions per second, corpus size, findings.
#
#   bench/fuzz.sh            # 600 s per target
#   bench/fuzz.sh 60 frame   # one target for a minute
#
# Needs the nightly toolchain and cargo-fuzz (installed when missing). New
# inputs go to fuzz/work/TARGET, not the checked-in corpus; a finding is
# written to fuzz/artifacts/TARGET and fails the run. Copy a finding into
# fuzz/corpus/TARGET once fixed, so that tests/fuzz.rs replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame http_head config_file ws_query reply http_answer registry journal submission bulk cron schedule limit cert_subject)
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
cargo +nightly fuzz build >/dev/null
found=0
printf '%-12s %8s %14s %10s %8s %9s\n' target seconds executions exec/s corpus findings
for t in "${targets[@]}"; do
  mkdir -p "fuzz/work/$t" "fuzz/artifacts/$t"
  log=$(mktemp)
  before=$(find "fuzz/artifacts/$t" -type f | wc -l)
  status=0
  cargo +nightly fuzz run "$t" "fuzz/work/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1 || status=$?
  execs=$(awk -F: '/stat::number_of_executed_units/ {gsub(/ /,"",$NF); print $NF}' "$log" | tail -1)
  rate=$(awk -F: '/stat::average_exec_per_sec/ {gsub(/ /,"",$NF); print $NF}' "$log" | tail -1)
  corpus=$(find "fuzz/work/$t" "fuzz/corpus/$t" -type f | wc -l)
  findings=$(( $(find "fuzz/artifacts/$t" -type f | wc -l) - before ))
  printf '%-12s %8s %14s %10s %8s %9s\n' "$t" "$secs" "${execs:-?}" "${rate:-?}" "$corpus" "$findings"
  if [ "$findings" -gt 0 ] || [ "$status" -ne 0 ]; then
    found=1
    echo "  $t: exit $status; see $log and fuzz/artifacts/$t" >&2
  else
    rm -f "$log"
  fi
done
exit $found
