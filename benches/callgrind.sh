#!/usr/bin/env bash
# Instructions and allocations per proxied request, counted by valgrind's callgrind.
#
#   benches/callgrind.sh [--requests 2000] [--cache | --plugins] [--no-header-case]
#
# callgrind counts instructions, not time, so the figures repeat exactly for the same binary
# and inputs whatever else the machine is doing. For the gateway (the shipped floor config:
# one route, a rate limit far above the load, one upstream, 1 worker) and the bare Pingora
# reference (benches/bare-proxy), it runs the proxy under callgrind twice - once for 1
# request, once for 1 + N sequential keep-alive requests (hey -c 1) to the harness's origin -
# and reports (run2 - run1) / N: instructions, malloc, free and realloc calls per request.
# With --cache the gateway's route caches (the origin sends max-age=60), so every request after
# the first is a cache hit. The kernel's share (syscalls, wake-ups) is not counted; see
# docs/performance.md for that. AVX_GW_BIN=/path/to/avx-gateway counts another build (an
# older one, to measure what a change costs) on the same config.
set -euo pipefail
N=2000
CACHE=""
PLUGINS=""
HDRS=()
SERVER_EXTRA=""
while [ $# -gt 0 ]; do
  case $1 in
    --requests) N=$2; shift 2 ;;
    --cache) CACHE="    cache: { enabled: true }"; shift ;;
    --plugins) PLUGINS=1; shift ;;
    --no-header-case) SERVER_EXTRA=", preserve_header_case: false"; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
# shellcheck source=benches/common.sh
. "$(dirname "$0")/common.sh" callgrind
if [ -n "$PLUGINS" ]; then
  SECRET="callgrind-bench-secret-of-32-bytes"
  TOKEN=$(hs256_token "$SECRET")
  CACHE="    plugins:
      - cors: { allow_origins: [\"https://app.example.com\"] }
      - jwt: { keys: [{ alg: HS256, secret: \"$SECRET\" }] }
      - request_headers: { set: { x-client: \"\$client_ip\", x-env: bench } }"
  HDRS=(-H "Authorization: Bearer $TOKEN" -H "Origin: https://app.example.com")
fi
# KEEP=DIR keeps the callgrind files for callgrind_annotate.
keep_files() {
  if [ -n "${KEEP:-}" ]; then
    mkdir -p "$KEEP"
    cp "$WORK"/*.out "$KEEP"/ 2>/dev/null || true
  fi
}
KEEP_HOOK=keep_files

# AVX_GW_BIN names a binary already built (then the working tree is not rebuilt).
[ -n "${AVX_GW_BIN:-}" ] || cargo build --release --locked --bin avx-gateway
cargo build --release --locked --manifest-path benches/bare-proxy/Cargo.toml
start_origin
cat > "$WORK/gw.yaml" <<YAML
server: { workers: 1, pid_file: $WORK/gw.pid, upgrade_sock: $WORK/gw.sock,
          grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1$SERVER_EXTRA }
listeners: [{ address: 127.0.0.1:18401 }]
upstreams:
  origin:
    servers: [{ address: 127.0.0.1:19000 }]
    circuit_breaker: { failure_threshold: 50 }
routes:
  - name: all
    match: { path_prefix: / }
    upstream: origin
    rate_limit: { requests_per_second: 1000000, burst: 100000, key: client_ip }
$CACHE
YAML


profile() { # name requests port cmd...
  local name=$1 count=$2 port=$3
  shift 3
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$WORK/$name.$count.out" "$@" \
    >/dev/null 2>"$WORK/$name.$count.log" &
  local pid=$!
  wait_200 "http://127.0.0.1:$port/api/test" "${HDRS[@]}"
  if [ "$count" -gt 1 ]; then
    hey -n $((count - 1)) -c 1 "${HDRS[@]}" "http://127.0.0.1:$port/api/test" >/dev/null
  fi
  kill -INT "$pid"
  wait "$pid" 2>/dev/null || true
}

for n in 1 $((N + 1)); do
  profile gw "$n" 18401 "${AVX_GW_BIN:-./target/release/avx-gateway}" -c "$WORK/gw.yaml"
  profile bare "$n" 18402 benches/bare-proxy/target/release/bare_proxy 127.0.0.1:18402 127.0.0.1:19000 1
done

python3 - "$WORK" "$N" <<'PY'
import re, subprocess, sys
work, n = sys.argv[1], int(sys.argv[2])

def summary(path):
    text = open(path).read()
    return int(re.search(r"^summary: (\d+)", text, re.M).group(1))

def calls(path, fn):
    """Calls into `fn`, summed over its callers in callgrind_annotate's caller tree."""
    out = subprocess.run(["callgrind_annotate", "--tree=caller", path],
                         capture_output=True, text=True).stdout
    block = []
    for line in out.splitlines():
        if not line.strip():
            block = []
            continue
        block.append(line)
        if "*  " in line and re.search(r":%s \[" % re.escape(fn), line):
            return sum(int(m.group(1).replace(",", ""))
                       for b in block[:-1] if (m := re.search(r"\(([\d,]+)x\)", b)))
    return 0

print(f"per request, over {n} sequential keep-alive requests (1 worker):")
print(f"{'proxy':<8} {'instructions':>12} {'malloc':>7} {'free':>7} {'realloc':>8}")
for name in ("gw", "bare"):
    one, many = f"{work}/{name}.1.out", f"{work}/{name}.{n + 1}.out"
    per = lambda f: (f(many) - f(one)) / n
    row = [per(summary)] + [per(lambda p, fn=fn: calls(p, fn)) for fn in ("malloc", "free", "realloc")]
    print(f"{name:<8} {row[0]:>12,.0f} {row[1]:>7.1f} {row[2]:>7.1f} {row[3]:>8.1f}")
PY
