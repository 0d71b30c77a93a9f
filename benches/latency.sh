#!/usr/bin/env bash
# Latency distribution at an equal, fixed load: the seed's p50/p90/p95/p99/p99.9 table.
#
#   benches/latency.sh [--rate 2000] [--rounds 5] [--duration 10s]
#
# Open loop: hey -q (rate / 50) -c 50 offers --rate requests a second in total, whatever the
# proxy's latency, to the simple proxy of NGINX, HAProxy (the harness's configs), the gateway
# (defaults, one route) and the bare Pingora reference, rounds interleaved. Percentiles come
# from every request's latency (hey -o csv), so p99.9 is exact; hey does not correct for
# coordinated omission, so a stalled proxy's tail is understated rather than overstated.
# Loopback only; every process it starts is stopped on exit.
set -euo pipefail
RATE=2000
ROUNDS=5
DURATION=10s
CONNS=50
while [ $# -gt 0 ]; do
  case $1 in
    --rate) RATE=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
# shellcheck source=benches/common.sh
. "$(dirname "$0")/common.sh" latency

cargo build --release --locked --bin avx-gateway
cargo build --release --locked --manifest-path benches/bare-proxy/Cargo.toml
start_origin
nginx -c "$BENCH/conf/proxy.nginx.conf" -p "$WORK" -e "$WORK/px.err" -g 'daemon off;' &
PIDS+=($!)
haproxy -db -f "$BENCH/conf/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
PIDS+=($!)
start_simple_pair 18701 18702

TARGETS=(nginx=19001 haproxy=19004 gw=18701 bare=18702)
for t in "${TARGETS[@]}"; do
  wait_200 "http://127.0.0.1:${t#*=}/api/test"
  hey -z 2s -c "$CONNS" "http://127.0.0.1:${t#*=}/api/test" >/dev/null   # warm-up
done

echo "open loop: $RATE req/s, $CONNS connections, $DURATION x $ROUNDS rounds, $(date -u +%FT%TZ), $(nproc) cpus"
for round in $(seq "$ROUNDS"); do
  # Rotate the order every round so drift over the run spreads evenly.
  n=${#TARGETS[@]}
  for i in $(seq 0 $((n - 1))); do
    t=${TARGETS[$(((i + round) % n))]}
    hey -z "$DURATION" -c "$CONNS" -q $((RATE / CONNS)) -o csv \
      "http://127.0.0.1:${t#*=}/api/test" > "$WORK/${t%%=*}.$round.csv"
  done
done

python3 - "$WORK" "$ROUNDS" "${TARGETS[@]}" <<'PY'
import csv, statistics, sys
work, rounds, targets = sys.argv[1], int(sys.argv[2]), [t.split("=")[0] for t in sys.argv[3:]]

def pct(sorted_ms, p):
    return sorted_ms[min(len(sorted_ms) - 1, int(p / 100 * len(sorted_ms)))]

print(f"{'target':<8} {'requests':>9} {'errors':>6} {'p50':>7} {'p90':>7} {'p95':>7} {'p99':>7} {'p99.9':>7}  ms, median of rounds")
for name in targets:
    per_round, total, errors = [], 0, 0
    for r in range(1, rounds + 1):
        with open(f"{work}/{name}.{r}.csv") as f:
            rows = list(csv.DictReader(f))
        ok = sorted(float(x["response-time"]) * 1000 for x in rows if x["status-code"] == "200")
        errors += len(rows) - len(ok)
        total += len(rows)
        per_round.append([pct(ok, p) for p in (50, 90, 95, 99, 99.9)])
    med = [statistics.median(col) for col in zip(*per_round)]
    print(f"{name:<8} {total:>9} {errors:>6} " + " ".join(f"{v:>7.3f}" for v in med))
PY
