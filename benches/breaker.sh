#!/usr/bin/env bash
# Circuit breaker impact during an outage, the seed's "circuit breaker" table, re-measured.
#
#   benches/breaker.sh [--requests 400] [--conns 20]
#
# One upstream whose backend hangs (a Python listener that accepts and never answers), with a
# 1 s read timeout, behind two gateways: one without a breaker, one with
# `circuit_breaker: { failure_threshold: 5, open_seconds: 2 }`. hey sends --requests requests
# with --conns connections to each and reports the latency. Then, for the breaker: failure
# detection = time from the first request of the outage until the first 503 from the open
# circuit; recovery = time from the backend's repair until the first 200. Loopback only;
# every process it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=400
CONNS=20
while [ $# -gt 0 ]; do
  case $1 in
    --requests) REQUESTS=$2; shift 2 ;;
    --conns) CONNS=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
# shellcheck source=benches/common.sh
. "$(dirname "$0")/common.sh" breaker

cargo build --release --locked --bin avx-gateway

# The backend: hangs while $WORK/down exists, answers 200 otherwise.
touch "$WORK/down"
python3 - "$WORK/down" <<'PY' &
import os, socket, sys, threading, time
flag = sys.argv[1]
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 18503)); srv.listen(1024)
def serve(c):
    with c:
        while True:
            if os.path.exists(flag):
                time.sleep(0.05)          # hang: read nothing, answer nothing
                continue
            data = c.recv(65536)
            if not data:
                return
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
while True:
    conn, _ = srv.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
PY
PIDS+=($!)

gateway() { # name port breaker-yaml
  cat > "$WORK/$1.yaml" <<YAML
server: { workers: 2, pid_file: $WORK/$1.pid, upgrade_sock: $WORK/$1.sock,
          grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1 }
listeners: [{ address: 127.0.0.1:$2 }]
upstreams:
  flaky:
    servers: [{ address: 127.0.0.1:18503 }]
    timeouts: { read_ms: 1000 }
    passive_health: { enabled: false }
$3
routes:
  - name: all
    match: { path_prefix: / }
    upstream: flaky
YAML
  RUST_LOG=error ./target/release/avx-gateway -c "$WORK/$1.yaml" 2>"$WORK/$1.log" &
  PIDS+=($!)
}
gateway plain 18501 ""
gateway breaker 18502 "    circuit_breaker: { failure_threshold: 5, open_seconds: 2 }"
for port in 18501 18502 18503; do wait_port "$port"; done

summary() { # label hey-output-file
  awk -v label="$1" '
    /Requests\/sec/ {rps=$2} /Average:/ {avg=$2}
    /  50% in/ {p50=$3} /  99% in/ {p99=$3}
    /^  \[[0-9]+\]/ {codes = codes $1 $2 " "}
    END {printf "%-10s avg %8.4f s  p50 %8.4f s  p99 %8.4f s  req/s %8s  statuses %s\n", label, avg, p50, p99, rps, codes}' "$2"
}

echo "backend hanging, read timeout 1 s: $REQUESTS requests, $CONNS connections, $(date -u +%FT%TZ)"
for t in plain=18501 breaker=18502; do
  hey -n "$REQUESTS" -c "$CONNS" -t 10 "http://127.0.0.1:${t#*=}/" > "$WORK/${t%%=*}.hey"
  summary "${t%%=*}" "$WORK/${t%%=*}.hey"
done

# Detection and recovery, measured on the breaker gateway with a fresh outage.
sleep 2.5   # let the circuit from the run above close again (open_seconds: 2, one probe)
python3 - "$WORK/down" <<'PY'
import os, sys, time, urllib.request, urllib.error, concurrent.futures as cf
flag = sys.argv[1]
url = "http://127.0.0.1:18502/"
def status():
    try:
        return urllib.request.urlopen(url, timeout=5).status
    except urllib.error.HTTPError as e:
        return e.code
    except Exception:
        return 0
# Close the circuit first: repair, then wait for a 200.
os.remove(flag)
deadline = time.time() + 15
while status() != 200 and time.time() < deadline:
    time.sleep(0.1)
open(flag, "w").close()
start = time.time()
detected = None
with cf.ThreadPoolExecutor(20) as pool:
    while detected is None and time.time() - start < 30:
        codes = list(pool.map(lambda _: status(), range(20)))
        if 503 in codes:
            detected = time.time() - start
print(f"failure detection: {detected:.2f} s from the start of the outage to the first 503"
      if detected is not None else "failure detection: no 503 within 30 s")
os.remove(flag)
repaired = time.time()
recovered = None
while recovered is None and time.time() - repaired < 30:
    if status() == 200:
        recovered = time.time() - repaired
    else:
        time.sleep(0.05)
print(f"recovery: {recovered:.2f} s from the repair to the first 200 (open_seconds: 2)"
      if recovered is not None else "recovery: no 200 within 30 s")
PY
