#!/usr/bin/env bash
# The Debian package under a real systemd: build the .deb with cargo-deb,
# check it with lintian, then boot a minimal Debian (debootstrap, cached in
# $MUSTER_NSPAWN_CACHE) with systemd as PID 1 in systemd-nspawn, install the
# package there and check what an operator relies on: enabled and started
# on install, STATUS= in systemctl status, the state directory, reload
# applying a change and failing on a bad file, journald priorities, the
# watchdog restarting a stopped daemon, socket activation, the sandbox's
# score, and dpkg -r stopping it, --purge removing its state.
#
# Run by test.sh. Needs root. When the machine cannot run a part (no root,
# no network for debootstrap, nspawn refused), it says exactly why and
# skips that part; under CI=true a missing tool is installed, not skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "nspawn: $*"; }
failed=0
check() { say "$*"; }
fail() { echo "nspawn: FAIL: $*" >&2; failed=$((failed + 1)); }
skip() { say "SKIPPED: $*"; exit 0; }

[ "$(id -u)" = 0 ] || skip "needs root (debootstrap, systemd-nspawn, dpkg inside the container)"
want=()
command -v debootstrap >/dev/null 2>&1 || want+=(debootstrap)
command -v systemd-nspawn >/dev/null 2>&1 || want+=(systemd-container)
command -v lintian >/dev/null 2>&1 || want+=(lintian)
if [ ${#want[@]} -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || skip "needs ${want[*]} and has no apt-get to install them"
  say "installing ${want[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
fi
if ! command -v cargo-deb >/dev/null 2>&1; then
  say "installing cargo-deb"
  cargo install --locked --quiet cargo-deb
fi

# The package, and lintian on it.
cargo deb --locked >/dev/null 2>&1 || cargo deb --locked
deb=$(ls -t target/debian/muster_*.deb | head -1)
lint_rc=0
lint=$(lintian --pedantic --fail-on error,warning,pedantic "$deb" 2>&1) || lint_rc=$?
lint=$(echo "$lint" | grep -v '^running with root' || true)
if [ "$lint_rc" = 0 ] && [ -z "$lint" ]; then
  check "lintian --pedantic: clean ($(lintian --pedantic --show-overrides "$deb" 2>/dev/null | grep -c '^O:') override, with its reason in debian/lintian-overrides)"
else
  fail "lintian (exit $lint_rc): $lint"
fi
for bin in musterd muster; do
  dpkg-deb --fsys-tarfile "$deb" | tar -xO "./usr/bin/$bin" > "/tmp/muster-deb-$bin.$$"
  if file "/tmp/muster-deb-$bin.$$" | grep -q 'stripped' && ! file "/tmp/muster-deb-$bin.$$" | grep -q 'not stripped'; then
    check "$bin is stripped ($(du -h "/tmp/muster-deb-$bin.$$" | cut -f1))"
  else
    fail "$bin is not stripped"
  fi
  rm -f "/tmp/muster-deb-$bin.$$"
done

# The root file system, built once.
. /etc/os-release
suite=${VERSION_CODENAME:-bookworm}
cache=${MUSTER_NSPAWN_CACHE:-/var/cache/muster-nspawn}
root=$cache/$suite
if [ ! -x "$root/usr/lib/systemd/systemd" ] || [ ! -x "$root/usr/bin/kill" ]; then
  rm -rf "$root"
  say "building a $suite root file system in $root (debootstrap, once)"
  mkdir -p "$cache"
  rm -rf "$root.tmp"
  # procps for /bin/kill, which ExecReload runs (the package depends on it).
  if ! debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,procps "$suite" "$root.tmp" \
      http://deb.debian.org/debian > "$cache/debootstrap.log" 2>&1; then
    tail -3 "$cache/debootstrap.log" >&2
    skip "debootstrap could not build $suite (no network to deb.debian.org?); see $cache/debootstrap.log"
  fi
  mv "$root.tmp" "$root"
fi

# Boot it: a throwaway copy (--ephemeral), the package bound in read-only.
# --register=no and --keep-unit: no machined or system bus needed outside.
debdir=$(dirname "$(realpath "$deb")")
log=$(mktemp)
systemd-nspawn --quiet --ephemeral --register=no --keep-unit -D "$root" \
  --bind-ro="$debdir:/mnt/deb" -b --console=pipe > "$log" 2>&1 &
nspawn=$!
leader=""
cleanup() {
  kill "$nspawn" 2>/dev/null || true
  wait "$nspawn" 2>/dev/null || true
  rm -f "$log"
}
trap cleanup EXIT
for _ in $(seq 600); do  # --ephemeral copies the tree first
  leader=$(pgrep -P "$nspawn" 2>/dev/null | head -1 || true)
  [ -n "$leader" ] && [ "$(cat "/proc/$leader/comm" 2>/dev/null)" = systemd ] && break
  kill -0 "$nspawn" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$leader" ] || ! kill -0 "$nspawn" 2>/dev/null; then
  cat "$log" >&2
  skip "systemd-nspawn could not boot the container here (see above)"
fi
c() { nsenter -t "$leader" -a "$@"; }
booted() { case $(c systemctl is-system-running 2>/dev/null) in running|degraded) return 0 ;; *) return 1 ;; esac; }
for _ in $(seq 150); do booted && break; sleep 0.2; done
check "booted systemd $(c systemctl --version | head -1 | cut -d' ' -f2) as PID 1 in the container ($(c systemctl is-system-running 2>&1 || true))"
health() { c muster health --json 2>/dev/null || true; }
# muster health answers: 0 healthy, 3 degraded (musterd itself: it
# dropped frames, or failed to save or journal); 1 is no answer.
answers() { local rc=0; c muster health >/dev/null 2>&1 || rc=$?; [ "$rc" = 0 ] || [ "$rc" = 3 ]; }
wait_until() { # what, command...
  local what=$1; shift
  for _ in $(seq 150); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  fail "$what"; return 1
}
main_pid() { c systemctl show -p MainPID --value musterd.service; }

# Install: enabled and started, the way Debian's own daemons are.
c dpkg -i "/mnt/deb/$(basename "$deb")" > /dev/null 2>&1
[ "$(c systemctl is-enabled musterd.service)" = enabled ] && check "dpkg -i: musterd.service enabled" || fail "not enabled after install"
wait_until "musterd never became active after install" c systemctl is-active --quiet musterd.service \
  && check "dpkg -i: musterd.service active (pid $(main_pid))"
wait_until "no answer on 127.0.0.1:8080" answers \
  && check "muster health answers inside the container"
status=$(c systemctl status musterd.service --no-pager 2>&1 || true)
if echo "$status" | grep -q 'Status: "[0-9]* workers'; then
  check "systemctl status shows STATUS=: $(echo "$status" | grep 'Status:' | sed 's/^ *//')"
else
  fail "no STATUS= in systemctl status: $status"
fi

# The state directory: a worker survives a restart.
c muster beat --id nspawn-1 --status working --cpu 5 > /dev/null
wait_until "the heartbeat was not applied" c muster status nspawn-1
c systemctl restart musterd.service
wait_until "no answer after restart" answers
if c muster status nspawn-1 --json | grep -q '"restored": true'; then
  check "StateDirectory: the worker was saved in $(c readlink -f /var/lib/muster) and restored after a restart"
else
  fail "worker not restored after restart"
fi

# Reload applies a change; a bad file fails the reload and changes nothing.
# musterd applies a SIGHUP within 100 ms of it; systemd 252 does not wait.
max_is() { health | tr -d ' \n' | grep -q "\"max\":$1,"; }
c sed -i 's/^#max_workers = .*/max_workers = 500/' /etc/muster/musterd.conf
if c systemctl reload musterd.service && wait_until "reload did not apply max_workers" max_is 500; then
  check "systemctl reload applied max_workers = 500"
fi
c sed -i 's/^max_workers = 500/max_workers = lots/' /etc/muster/musterd.conf
if c systemctl reload musterd.service 2>/dev/null; then
  fail "systemctl reload with a bad file exited 0"
elif sleep 0.5 && c systemctl is-active --quiet musterd.service && max_is 500; then
  check "systemctl reload with a bad file: non-zero, daemon unchanged"
else
  fail "a bad reload changed or stopped the daemon"
fi
# A SIGHUP that bypasses the check is refused by the daemon, at error.
c sh -c 'kill -HUP "$(systemctl show -p MainPID --value musterd.service)"'
warned() { c journalctl -u musterd.service -p warning --no-pager -q | grep -q 'max_workers'; }
if wait_until "journalctl -p warning shows nothing of musterd's" warned; then
  check "journalctl -p warning shows musterd's error: $(c journalctl -u musterd.service -p warning --no-pager -q -o cat | tail -1)"
fi
c sed -i 's/^max_workers = lots/#max_workers = 10000/' /etc/muster/musterd.conf

# The watchdog: a stopped daemon is killed and started again.
before=$(main_pid)
c sh -c "kill -STOP $before"
say "waiting for the watchdog (WatchdogSec=30s) to restart a SIGSTOPped daemon"
restarted() { local now; now=$(main_pid); [ "$now" != 0 ] && [ "$now" != "$before" ] && c systemctl is-active --quiet musterd.service; }
for _ in $(seq 90); do restarted && break; sleep 1; done
timeout_line=$(c journalctl -u musterd.service --no-pager -q -o cat | grep -m1 'Watchdog timeout' || true)
if restarted && [ -n "$timeout_line" ]; then
  check "watchdog: pid $before stopped, restarted as $(main_pid) (systemd: $timeout_line)"
else
  fail "the watchdog did not restart the stopped daemon"
fi

# Security, under this systemd.
score=$(c systemd-analyze security musterd.service 2>/dev/null | grep 'Overall exposure level' | grep -o '[0-9][0-9]*\.[0-9]' | head -1)
if [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s <= 1.5) }'; then
  check "systemd-analyze security: exposure $score"
else
  fail "systemd-analyze security: exposure ${score:-?}"
fi

# Socket activation, as the README describes it.
c systemctl disable --now musterd.service > /dev/null 2>&1
c cp /usr/share/doc/muster/examples/musterd.socket /etc/systemd/system/
c systemctl daemon-reload
c systemctl enable --now musterd.socket > /dev/null 2>&1
if c systemctl is-active --quiet musterd.service; then
  fail "musterd.service running before any connection"
elif adopted() { c journalctl -u musterd.service --no-pager -q -o cat | grep -q 'adopted 3 sockets from systemd'; } \
    && wait_until "no answer through the socket" answers \
    && c systemctl is-active --quiet musterd.service \
    && wait_until "musterd did not adopt the sockets" adopted; then
  check "musterd.socket: the first request started musterd.service on the passed sockets"
else
  fail "socket activation: $(c journalctl -u musterd.service --no-pager -q -o cat | tail -3)"
fi
c systemctl disable --now musterd.socket musterd.service > /dev/null 2>&1
c rm /etc/systemd/system/musterd.socket
c systemctl daemon-reload
c systemctl enable --now musterd.service > /dev/null 2>&1
wait_until "no answer after re-enabling the service" answers

# Removal stops it and masks it, as dh_installsystemd does: the enable
# link stays until purge, so a reinstall keeps the administrator's choice.
# Purge removes the link, the mask, the state and the configuration.
link=/etc/systemd/system/multi-user.target.wants/musterd.service
c dpkg -r muster > /dev/null
if c systemctl is-active --quiet musterd.service; then
  fail "dpkg -r left musterd running"
elif [ "$(c systemctl is-enabled musterd.service 2>&1)" != masked ]; then
  fail "dpkg -r: musterd.service is $(c systemctl is-enabled musterd.service 2>&1), not masked"
elif c test -e /usr/bin/musterd; then
  fail "dpkg -r left /usr/bin/musterd"
else
  check "dpkg -r: stopped and masked, state kept ($(c ls /var/lib/private/muster | tr '\n' ' '))"
fi
c dpkg --purge muster > /dev/null
if c test -L "$link" || c test -e /etc/systemd/system/musterd.service; then
  fail "dpkg --purge left the enable link or the mask"
elif c test -e /var/lib/private/muster || c test -e /var/lib/muster || c test -e /etc/muster; then
  fail "dpkg --purge left state or configuration"
else
  check "dpkg --purge: enable link, mask, state and configuration removed"
fi

if [ "$failed" -gt 0 ]; then
  echo "nspawn: $failed failed" >&2
  exit 1
fi
say "all checks passed"
