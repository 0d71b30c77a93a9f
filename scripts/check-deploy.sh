#!/usr/bin/env bash
# Checks deploy/: the systemd unit passes `systemd-analyze verify` and rates an exposure of at
# most 2.5 in `systemd-analyze security --offline=true`; the sysusers.d and tmpfiles.d snippets
# apply cleanly to an empty root; the upgrade script is valid bash and passes ShellCheck;
# deploy/gateway.yaml passes `avx-gateway -t` when a binary is built (the integration test
# `upgrade::the_shipped_production_config_is_valid` checks it too); the Prometheus rules pass
# `promtool check rules` and their unit tests (`promtool test rules`). The Grafana dashboard is
# checked by the integration test `dashboards` (JSON, datasources, and its metric names against a
# real scrape).
# Installs the Debian packages `systemd` and `shellcheck` when missing. Uses sudo when not root.
set -euo pipefail
cd "$(dirname "$0")/.."

MAX_EXPOSURE=2.5
unit=deploy/avx-gateway.service

need=()
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v shellcheck >/dev/null || need+=(shellcheck)
if [ ${#need[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# verify resolves ExecStart=/ExecReload= binaries and dependencies, so it runs against a scratch
# root holding the unit at its install path, executables at /usr/bin (a stub for the gateway,
# which only has to be executable; the real upgrade script) and the host's units for targets.
root="$tmp/root"
mkdir -p "$root/etc/systemd/system" "$root/usr/bin" "$root/usr/lib/systemd" "$root/bin"
# ExecReload= runs through /bin/sh (it picks the in-process reload or the upgrade).
cp "$(readlink -f /bin/sh)" "$root/bin/sh"
ln -s /lib/systemd/system "$root/usr/lib/systemd/system"
printf '#!/bin/sh\nexit 0\n' >"$root/usr/bin/avx-gateway"
install -m 0755 deploy/avx-gateway-upgrade "$root/usr/bin/avx-gateway-upgrade"
chmod 0755 "$root/usr/bin/avx-gateway"
cp "$unit" "$root/etc/systemd/system/avx-gateway.service"
# Any message (an unknown key, a bad value, a missing binary) fails the check, not only a
# non-zero exit: verify exits 0 on mere warnings.
if ! out=$(systemd-analyze verify --root="$root" /etc/systemd/system/avx-gateway.service 2>&1) || [ -n "$out" ]; then
    printf '%s\n' "$out" >&2
    echo "check-deploy: systemd-analyze verify $unit FAILED" >&2
    exit 1
fi
echo "check-deploy: systemd-analyze verify $unit: ok"

report=$(systemd-analyze security --offline=true --no-pager "$unit" 2>&1) || {
    printf '%s\n' "$report" >&2
    echo "check-deploy: systemd-analyze security failed" >&2
    exit 1
}
# "→ Overall exposure level for avx-gateway.service: 1.4 OK 🙂"
score=$(printf '%s\n' "$report" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
if [ -z "$score" ]; then
    printf '%s\n' "$report" >&2
    echo "check-deploy: no 'Overall exposure level' line in systemd-analyze security output" >&2
    exit 1
fi
if ! awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }'; then
    printf '%s\n' "$report" | grep '✗' >&2 || true
    echo "check-deploy: exposure $score is above $MAX_EXPOSURE" >&2
    exit 1
fi
echo "check-deploy: systemd-analyze security $unit: exposure $score (<= $MAX_EXPOSURE)"

# sysusers.d and tmpfiles.d: create the user, then the directories, in an empty root.
sys="$tmp/sys"
mkdir -p "$sys/etc" "$sys/run" "$sys/var/log"
systemd-sysusers --root="$sys" "$PWD/deploy/avx-gateway.sysusers" >"$tmp/sysusers.log" 2>&1 || {
    cat "$tmp/sysusers.log" >&2
    exit 1
}
grep -q '^avx-gateway:' "$sys/etc/passwd"
systemd-tmpfiles --root="$sys" --create "$PWD/deploy/avx-gateway.tmpfiles"
for d in run/avx-gateway var/log/avx-gateway etc/avx-gateway; do
    [ -d "$sys/$d" ] || {
        echo "check-deploy: tmpfiles did not create /$d" >&2
        exit 1
    }
done
echo "check-deploy: sysusers.d and tmpfiles.d snippets: ok"

bash -n deploy/avx-gateway-upgrade
# The measurement scripts are not deployed, but they are shipped and documented: lint them too.
shellcheck -x deploy/avx-gateway-upgrade scripts/check-deploy.sh scripts/fuzz.sh scripts/vendor-pingora.sh benches/*.sh benches/harness/*.sh
echo "check-deploy: shellcheck: ok"

# promtool: on PATH, or the copy scripts/setup.sh unpacks (CI runs setup.sh first).
promtool=$(command -v promtool || echo "$PWD/target/tools/promtool")
if [ ! -x "$promtool" ]; then
    echo "check-deploy: promtool not found: run scripts/setup.sh (or put promtool on PATH)" >&2
    exit 1
fi
rules=deploy/prometheus/avx-gateway-rules.yml
"$promtool" check rules "$rules"
# The test file names its rule file relative to itself.
(cd deploy/prometheus && "$promtool" test rules avx-gateway-rules.test.yml)
echo "check-deploy: promtool check rules and test rules $rules: ok"

# The example config must be valid for the binary it ships with (when one is built).
bin=""
for b in target/debug/avx-gateway target/release/avx-gateway; do
    [ -x "$b" ] && bin=$b && break
done
if [ -n "$bin" ]; then
    "$bin" -t -c deploy/gateway.yaml >/dev/null
    echo "check-deploy: $bin -t -c deploy/gateway.yaml: ok"
fi
echo "check-deploy: all deploy checks passed"
