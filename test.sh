#!/usr/bin/env bash
# Every test: unit tests beside the code, integration tests that run the
# real musterd, the documentation checks, and the operations checks with the
# real tools (mandoc, systemd-analyze, promtool, a Prometheus server), and
# a WebSocket client we did not write (Python's websockets), openssl for
# test certificates, headless Chromium for what a web page can do and Node
# for the seeds' JavaScript clients, tmux for `muster watch`, and last the
# Debian package under systemd in a container. On a fresh
# Debian machine, run as root, it first installs those tools.
set -euo pipefail
cd "$(dirname "$0")"
want=()
command -v mandoc >/dev/null 2>&1 || want+=(mandoc)
command -v promtool >/dev/null 2>&1 || want+=(prometheus)
command -v curl >/dev/null 2>&1 || want+=(curl)
command -v systemd-analyze >/dev/null 2>&1 || want+=(systemd)
command -v openssl >/dev/null 2>&1 || want+=(openssl)
command -v chromium >/dev/null 2>&1 || want+=(chromium)
command -v node >/dev/null 2>&1 || want+=(nodejs)
command -v jq >/dev/null 2>&1 || want+=(jq)
command -v tmux >/dev/null 2>&1 || want+=(tmux)
command -v zsh >/dev/null 2>&1 || want+=(zsh)
command -v file >/dev/null 2>&1 || want+=(file)
command -v amtool >/dev/null 2>&1 || want+=(prometheus-alertmanager)
if [ ${#want[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "test.sh: installing ${want[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
fi
if ! python3 -c 'import websockets' >/dev/null 2>&1; then
  echo "test.sh: installing the Python websockets client"
  python3 -m pip install -q --disable-pip-version-check websockets
fi
cargo build --locked --bins
tests/ops.sh
cargo test --locked --all-targets "$@"
# A worker thread's resident stack is a property of the optimised build.
cargo test --locked --release --lib a_worker_thread_touches_at_most_two_pages_of_stack
# The package under a real systemd (builds the release .deb).
tests/systemd-nspawn.sh
