#!/usr/bin/env bash
# Every test: unit tests beside the code, integration tests that run the
# real musterd, the documentation checks, and the operations checks with the
# real tools (mandoc, systemd-analyze, promtool, a Prometheus server), and
# a WebSocket client we did not write (Python's websockets), schemathesis
# to fuzz the API from its OpenAPI document, openssl for
# test certificates, headless Chromium for what a web page can do and Node
# for the seeds' JavaScript clients, tmux for `muster watch`, PostgreSQL for
# cluster mode (each test starts its own server), Go, Python and Node for
# the worker libraries (their own tests, then the conformance suite in
# tests/clients.rs against the real musterd), and last the
# Debian package under systemd in a container. On a fresh
# Debian machine, run as root, it first installs those tools.
#
# Every step runs even when one before it failed, and every test binary
# runs even when one before it failed (`--no-fail-fast`): the summary at
# the end names each failed step, and the exit status is 1 if any did.
set -uo pipefail
cd "$(dirname "$0")"
want=()
command -v mandoc >/dev/null 2>&1 || want+=(mandoc)
command -v promtool >/dev/null 2>&1 || want+=(prometheus)
command -v curl >/dev/null 2>&1 || want+=(curl)
command -v systemd-analyze >/dev/null 2>&1 || want+=(systemd)
command -v openssl >/dev/null 2>&1 || want+=(openssl)
command -v chromium >/dev/null 2>&1 || want+=(chromium)
command -v node >/dev/null 2>&1 || want+=(nodejs)
command -v go >/dev/null 2>&1 || want+=(golang-go)
command -v jq >/dev/null 2>&1 || want+=(jq)
command -v tmux >/dev/null 2>&1 || want+=(tmux)
command -v zsh >/dev/null 2>&1 || want+=(zsh)
command -v file >/dev/null 2>&1 || want+=(file)
command -v amtool >/dev/null 2>&1 || want+=(prometheus-alertmanager)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || want+=(postgresql)
if [ ${#want[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "test.sh: installing ${want[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
fi
if ! python3 -c 'import websockets' >/dev/null 2>&1; then
  echo "test.sh: installing the Python websockets client"
  python3 -m pip install -q --disable-pip-version-check websockets
fi
if ! command -v schemathesis >/dev/null 2>&1; then
  echo "test.sh: installing schemathesis, which fuzzes the API with its OpenAPI document"
  python3 -m pip install -q --disable-pip-version-check schemathesis
fi

# Go keeps its build cache beside cargo's, so that a machine without a
# home directory (a CI container) can build the Go client too.
export GOCACHE="${GOCACHE:-$PWD/target/go-cache}"

failed=()
step() { # name, command...
  local name=$1; shift
  echo "test.sh: == $name"
  if ! "$@"; then
    failed+=("$name")
    echo "test.sh: FAILED: $name"
  fi
}
# Nothing else runs without the binaries.
cargo build --locked --bins || { echo "test.sh: the build failed"; exit 1; }
step "operations checks (tests/ops.sh)" tests/ops.sh
# The worker libraries' own tests (no daemon needed).
step "clients/python tests" python3 -m unittest discover -s clients/python/tests
step "clients/go tests" sh -c 'cd clients/go && GOFLAGS=-mod=mod GOTOOLCHAIN=local go vet ./... && GOFLAGS=-mod=mod GOTOOLCHAIN=local go test ./...'
step "clients/node tests" node --test clients/node/test/
step "cargo test" cargo test --locked --all-targets --no-fail-fast "$@"
# A worker thread's resident stack is a property of the optimised build.
step "release stack guard" cargo test --locked --release --lib a_worker_thread_touches_at_most_two_pages_of_stack
# The package under a real systemd (builds the release .deb).
step "the package under systemd (tests/systemd-nspawn.sh)" tests/systemd-nspawn.sh

if [ ${#failed[@]} -gt 0 ]; then
  echo "test.sh: ${#failed[@]} step(s) failed:"
  printf 'test.sh:   - %s\n' "${failed[@]}"
  echo "test.sh: (cargo test names each failed test above its summary)"
  exit 1
fi
echo "test.sh: every step passed"
