#!/usr/bin/env bash
# benches/harness/run.sh - side-by-side HTTP reverse-proxy benchmark, 127.0.0.1 only.
#
# usage: benches/harness/run.sh [--target NAME=URL_BASE | NAME@SCENARIO=URL_BASE ...]
#                     [--scenario simple|cache|compression|slow|all] [--duration 10s]
#                     [--conns 50] [--rounds 3] [--tool hey|wrk|oha] [--rate N]
#                     [--ref nginx] [--peers "nginx haproxy"] [--pin] [--warmup 2s]
#                     [--pause 1] [--quiet-wait 60] [--tag NAME]
#
# Starts its own upstream (nginx, 1 worker, :19000) and peers (nginx :19001-19003,
# haproxy :19004-19006), stops only those PIDs at exit. Targets given with --target are
# NOT started: they must already listen (e.g. the gateway). URL_BASE is scheme://host:port,
# the scenario path is appended. NAME=URL applies to every scenario, NAME@cache=URL only
# to one; a target without a URL for a scenario is skipped there.
#
#   scenario     path       client header            nginx  haproxy
#   simple       /api/test  -                        19001  19004   (plain proxy)
#   cache        /api/test  -                        19002  19005   (cache hits, max-age=60)
#   compression  /big       Accept-Encoding: gzip    19003  19006   (64 KiB JSON, gzip)
#   slow         /slow      -                        19001  19004   (50 ms origin delay; not in "all")
#   "direct" (the upstream itself, :19000) is always a target: the physical ceiling.
#
# --tool    closed-loop load generator (default hey: `hey -z DUR -c CONNS`)
# --rate N  open-loop mode at N req/s total: oha -q N --latency-correction (falls back to
#           hey -q N/CONNS per worker, which has no coordinated-omission correction)
# --pin     proxies on CPU 0; load generator and upstream on CPU 1 (restored at exit)
# --peers   which built-in peers to start ("" = none; only direct + --target ones)
# --quiet-wait S  before each measured run wait up to S seconds for the machine to be <15%
#           busy (other builds/benchmarks on the box); 0 = don't check
#
# Output: a table on stdout; $BENCH_RESULTS (default /tmp/avx-bench-results)/<stamp>/{runs.tsv,rss.tsv,summary.tsv,table.txt,raw/}
# and copies last.tsv (summary), results/last-runs.tsv, results/last.txt.
set -uo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# results go outside this folder, which may be read-only: BENCH_RESULTS overrides
RESULTS=${BENCH_RESULTS:-/tmp/avx-bench-results}
mkdir -p "$RESULTS"
CONF=$BENCH/conf
RUN=/tmp/bench-run
LIB=(python3 "$BENCH/lib.py")

DURATION=10s CONNS=50 ROUNDS=3 SCENARIO=all TOOL=hey RATE=0 REF=nginx PIN=0
WARMUP=2s PAUSE=1 QUIET_WAIT=60 TAG="" PEERS="nginx haproxy"
USER_TARGETS=()

die() { echo "run.sh: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --target)   USER_TARGETS+=("$2"); shift 2 ;;
    --scenario) SCENARIO=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --conns)    CONNS=$2; shift 2 ;;
    --rounds)   ROUNDS=$2; shift 2 ;;
    --tool)     TOOL=$2; shift 2 ;;
    --rate)     RATE=$2; shift 2 ;;
    --ref)      REF=$2; shift 2 ;;
    --peers)    PEERS=$2; shift 2 ;;
    --pin)      PIN=1; shift ;;
    --warmup)   WARMUP=$2; shift 2 ;;
    --pause)    PAUSE=$2; shift 2 ;;
    --quiet-wait) QUIET_WAIT=$2; shift 2 ;;
    --tag)      TAG=$2; shift 2 ;;
    -h|--help)  usage 0 ;;
    *)          echo "unknown argument: $1" >&2; usage 2 ;;
  esac
done

secs() {  # 10s | 2m | 500ms -> whole seconds (>=1)
  case "$1" in
    *ms) echo 1 ;; *s) echo "${1%s}" ;; *m) echo $(( ${1%m} * 60 )) ;; *) echo "$1" ;;
  esac
}
DUR_S=$(secs "$DURATION"); WARM_S=$(secs "$WARMUP")
[[ $DUR_S =~ ^[0-9]+$ && $CONNS =~ ^[0-9]+$ && $ROUNDS =~ ^[0-9]+$ && $RATE =~ ^[0-9]+$ ]] \
  || die "bad --duration/--conns/--rounds/--rate"

case "$SCENARIO" in
  all) SCENARIOS="simple cache compression" ;;
  simple|cache|compression|slow) SCENARIOS=$SCENARIO ;;
  *) die "unknown scenario $SCENARIO" ;;
esac
declare -A SPATH=([simple]=/api/test [cache]=/api/test [compression]=/big [slow]=/slow)

MODE=closed
if [ "$RATE" -gt 0 ]; then
  MODE="rate$RATE"
  if command -v oha >/dev/null; then TOOL=oha
  else TOOL=hey; echo "NOTE: oha not found; hey -q $((RATE / CONNS))/worker has no latency correction"; fi
fi
command -v "$TOOL" >/dev/null || die "load generator $TOOL not installed (benches/harness/setup.sh)"

# ---------------------------------------------------------------- targets
declare -A URL          # "target|scenario" -> base URL
TARGETS=(direct)
for s in simple cache compression slow; do URL[direct|$s]=http://127.0.0.1:19000; done
for p in $PEERS; do
  case "$p" in
    nginx)   URL[nginx|simple]=http://127.0.0.1:19001 URL[nginx|cache]=http://127.0.0.1:19002
             URL[nginx|compression]=http://127.0.0.1:19003 URL[nginx|slow]=http://127.0.0.1:19001 ;;
    haproxy) URL[haproxy|simple]=http://127.0.0.1:19004 URL[haproxy|cache]=http://127.0.0.1:19005
             URL[haproxy|compression]=http://127.0.0.1:19006 URL[haproxy|slow]=http://127.0.0.1:19004 ;;
    *) die "unknown peer $p (nginx, haproxy)" ;;
  esac
  TARGETS+=("$p")
done
for spec in "${USER_TARGETS[@]}"; do
  [[ $spec =~ ^([A-Za-z0-9_-]+)(@([a-z]+))?=(https?://[^/]+)/?$ ]] || die "bad --target $spec"
  name=${BASH_REMATCH[1]} sc=${BASH_REMATCH[3]} base=${BASH_REMATCH[4]}
  [[ " direct $PEERS " == *" $name "* ]] && die "target name $name clashes with a built-in"
  [[ " ${TARGETS[*]} " == *" $name "* ]] || TARGETS+=("$name")
  if [ -n "$sc" ]; then URL[$name|$sc]=$base
  else for s in simple cache compression slow; do URL[$name|$s]=$base; done; fi
done
[[ " ${TARGETS[*]} " == *" $REF "* ]] || { echo "NOTE: reference $REF not a target; using direct"; REF=direct; }

port_of() { [[ $1 =~ ^https?://[^/:]+:([0-9]+) ]] && echo "${BASH_REMATCH[1]}" || echo 80; }
listening() { [ -n "$(ss -Htln "sport = :$1")" ]; }
pids_on_port() { ss -Htlnp "sport = :$1" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u; }

# ---------------------------------------------------------------- cleanup (only what we started)
STARTED=()        # PIDs of processes this script started (masters)
OWN_PIDS=()       # their children, recorded at start
LG_PID="" SAMPLER_PID=""
declare -A AFFINITY   # pid -> original mask, for external processes we re-pinned
cleanup() {
  trap - EXIT INT TERM
  [ -n "$LG_PID" ] && kill -TERM -- "-$LG_PID" 2>/dev/null
  [ -n "$SAMPLER_PID" ] && kill -TERM "$SAMPLER_PID" 2>/dev/null && wait "$SAMPLER_PID" 2>/dev/null
  for pid in "${!AFFINITY[@]}"; do taskset -a -p "${AFFINITY[$pid]}" "$pid" >/dev/null 2>&1; done
  for pid in "${STARTED[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for _ in $(seq 50); do   # bounded wait: 5 s
    alive=0; for pid in "${STARTED[@]}" "${OWN_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break; sleep 0.1
  done
  for pid in "${STARTED[@]}" "${OWN_PIDS[@]}"; do   # still there after 5 s: force, if still ours
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) =~ ^(nginx|haproxy)$ ]] && kill -KILL "$pid" 2>/dev/null
  done
  [ ${#STARTED[@]} -gt 0 ] && echo "stopped PIDs: ${STARTED[*]} ${OWN_PIDS[*]}"
}
trap cleanup EXIT
trap 'echo interrupted; exit 130' INT TERM

start() {  # name port cmd... ; waits (bounded) for the port
  local name=$1 port=$2; shift 2
  listening "$port" && die "port $port already in use (a leftover run? check: ss -ltnp)"
  "$@" >"$RUN/$name.out" 2>&1 &
  local pid=$!; STARTED+=("$pid")
  for _ in $(seq 50); do listening "$port" && break; sleep 0.1; done
  listening "$port" || { cat "$RUN/$name.out" >&2; die "$name did not start"; }
  sleep 0.5   # let nginx fork its workers before recording them
  mapfile -t -O "${#OWN_PIDS[@]}" OWN_PIDS < <(pgrep -P "$pid")
  echo "started $name (pid $pid) on :$port"
}

# ---------------------------------------------------------------- start upstream and peers
BUSY=$("${LIB[@]}" busy 2)
[ "$BUSY" -gt 10 ] && echo "WARNING: machine already ${BUSY}% busy before start (other jobs?): results will be noisy" >&2
mkdir -p "$RUN"/www "$RUN"/upstream-tmp "$RUN"/nginx-tmp
rm -rf "$RUN"/nginx-cache
"${LIB[@]}" genbig "$RUN/www/big.json"
NGX=(nginx -p "$RUN/" -g 'daemon off;')
start upstream 19000 "${NGX[@]}" -e "$RUN/upstream-error.log" -c "$CONF/upstream.nginx.conf"
[[ " $PEERS " == *" nginx "* ]] && start nginx 19001 "${NGX[@]}" -e "$RUN/nginx-error.log" -c "$CONF/proxy.nginx.conf"
[[ " $PEERS " == *" haproxy "* ]] && start haproxy 19004 haproxy -db -f "$CONF/haproxy.cfg"

# PIDs per target = every process listening on its ports + their children (nginx cache manager)
declare -A PIDS
for t in "${TARGETS[@]}"; do
  ps_=""
  for s in simple cache compression slow; do
    u=${URL[$t|$s]:-}; [ -z "$u" ] && continue
    port=$(port_of "$u")
    listening "$port" || die "target $t ($u) is not listening"
    for p in $(pids_on_port "$port"); do ps_="$ps_ $p $(pgrep -P "$p" | tr '\n' ' ')"; done
  done
  # shellcheck disable=SC2086 # split on purpose: one PID per word
  PIDS[$t]=$(echo $ps_ | tr ' ' '\n' | sort -un | paste -sd,)
  [ -n "${PIDS[$t]}" ] || echo "WARN: no PIDs found for $t (CPU/RSS columns will be 0)"
done
UP_PIDS=${PIDS[direct]}

LG_PIN=()
if [ $PIN = 1 ]; then   # proxies -> CPU 0, upstream + load generator -> CPU 1
  for t in "${TARGETS[@]}"; do
    cpu=0; [ "$t" = direct ] && cpu=1
    for pid in ${PIDS[$t]//,/ }; do
      [[ " ${STARTED[*]} ${OWN_PIDS[*]} " == *" $pid "* ]] || AFFINITY[$pid]=$(taskset -p "$pid" | awk '{print $NF}')
      taskset -a -p -c "$cpu" "$pid" >/dev/null
    done
  done
  LG_PIN=(taskset -c 1)
fi
LG_THREADS=$(( PIN ? 1 : $(nproc) ))

# ---------------------------------------------------------------- output
STAMP=$(date +%Y%m%d-%H%M%S)${TAG:+-$TAG}
OUT=$RESULTS/$STAMP
mkdir -p "$OUT/raw"
RUNS=$OUT/runs.tsv
{ echo "date: $(date -Is)  host: $(uname -r), $(nproc) cpus, ${BUSY}% busy before start"
  echo "args: mode=$MODE tool=$TOOL duration=$DURATION conns=$CONNS rounds=$ROUNDS pin=$PIN scenarios='$SCENARIOS'"
  for t in "${TARGETS[@]}"; do echo "target $t pids=${PIDS[$t]} urls: $(for s in $SCENARIOS; do printf '%s=%s ' "$s" "${URL[$t|$s]:--}"; done)"; done
  echo "versions: $(nginx -v 2>&1 | cut -d/ -f2) haproxy $(haproxy -v | head -1 | cut -d' ' -f3)"
} | tee "$OUT/meta.txt"

# ---------------------------------------------------------------- memory sampler (bounded)
N_T=${#TARGETS[@]} N_S=$(wc -w <<<"$SCENARIOS")
EST=$(( N_S * N_T * (ROUNDS * (DUR_S + PAUSE + 3) + WARM_S + 3) ))
echo "estimated run time: ~${EST}s"
echo setup > "$RUN/phase"
specs=(); for t in "${TARGETS[@]}"; do specs+=("$t=${PIDS[$t]}"); done
"${LIB[@]}" sample "$OUT/rss.tsv" "$RUN/phase" $(( $(date +%s) + 2 * EST + 300 + N_S * N_T * ROUNDS * QUIET_WAIT )) "${specs[@]}" &
SAMPLER_PID=$!

# ---------------------------------------------------------------- load generator
lg_cmd() {  # scenario url duration_s -> LGCMD array
  local hdr=() d=$3
  [ "$1" = compression ] && hdr=(-H "Accept-Encoding: gzip")
  case "$TOOL" in
    hey) LGCMD=(hey -z "${d}s" -c "$CONNS" -disable-compression "${hdr[@]}")
         [ "$RATE" -gt 0 ] && LGCMD+=(-q $(( (RATE + CONNS - 1) / CONNS ))) ;;
    wrk) LGCMD=(wrk -t "$LG_THREADS" -c "$CONNS" -d "${d}s" --latency "${hdr[@]}") ;;
    oha) LGCMD=(oha -z "${d}s" -w -c "$CONNS" --no-tui --output-format json --disable-compression "${hdr[@]}")
         [ "$RATE" -gt 0 ] && LGCMD+=(-q "$RATE" --latency-correction) ;;
  esac
  LGCMD=(timeout -k 5 $(( d + 30 )) /usr/bin/time -f '%e %U %S' -o "$RUN/lg.time" "${LG_PIN[@]}" "${LGCMD[@]}" "$2")
}
run_lg() {  # scenario url duration_s rawfile ; background + wait so traps stay responsive
  lg_cmd "$1" "$2" "$3"
  "${LGCMD[@]}" >"$4" 2>&1 &
  LG_PID=$!; wait "$LG_PID"; LG_PID=""
}

wait_quiet() {  # bounded: at most QUIET_WAIT seconds
  [ "$QUIET_WAIT" -gt 0 ] || return 0
  local end=$(( SECONDS + QUIET_WAIT )) b
  while [ $SECONDS -lt $end ]; do
    b=$("${LIB[@]}" busy 1); [ "$b" -le 15 ] && return 0
  done
  echo "    (machine still ${b}% busy after ${QUIET_WAIT}s wait; measuring anyway, see oth%)"
}

sanity() {  # scenario target url : status, gzip, cache marker
  local h=$RUN/hdr.txt code size note="" hdr=()
  [ "$1" = compression ] && hdr=(-H "Accept-Encoding: gzip")
  curl -sk -m 5 -o /dev/null "${hdr[@]}" "$3" >/dev/null          # prime caches
  read -r code size < <(curl -sk -m 5 -o /dev/null -D "$h" -w '%{http_code} %{size_download}' "${hdr[@]}" "$3")
  case "$1" in
    compression) grep -qi '^content-encoding: *gzip' "$h" && note="gzip ok" || note="WARN: response not gzip-encoded" ;;
    cache) if grep -qiE '^x-cache-status: *hit|^age:' "$h"; then note="cache hit seen"
           else note="no cache marker (X-Cache-Status: HIT or Age:) seen"; fi ;;
  esac
  [ "$code" = 200 ] || note="WARN: HTTP $code $note"
  printf '  check %-9s %-11s %s -> %s, %s bytes %s\n' "$2" "$1" "$3" "$code" "$size" "$note"
}

# ---------------------------------------------------------------- main loop
for scen in $SCENARIOS; do
  list=(); for t in "${TARGETS[@]}"; do [ -n "${URL[$t|$scen]:-}" ] && list+=("$t"); done
  echo; echo "== scenario $scen ($MODE, $TOOL, ${DUR_S}s x $ROUNDS rounds, $CONNS conns): ${list[*]}"
  echo "$scen" > "$RUN/phase"
  for t in "${list[@]}"; do
    url=${URL[$t|$scen]}${SPATH[$scen]}
    sanity "$scen" "$t" "$url"
    run_lg "$scen" "$url" "$WARM_S" "$RUN/warmup.txt"
  done
  n=${#list[@]}
  for r in $(seq "$ROUNDS"); do
    for i in $(seq 0 $(( n - 1 ))); do      # rotate the order each round: A B C, B C A, ...
      t=${list[$(( (i + r - 1) % n ))]}
      url=${URL[$t|$scen]}${SPATH[$scen]}
      raw=$OUT/raw/$scen-$t-r$r.txt
      wait_quiet
      s0=$("${LIB[@]}" snap "${PIDS[$t]}" "$UP_PIDS")
      run_lg "$scen" "$url" "$DUR_S" "$raw"
      s1=$("${LIB[@]}" snap "${PIDS[$t]}" "$UP_PIDS")
      cp "$RUN/lg.time" "$raw.time" 2>/dev/null
      "${LIB[@]}" record "$RUNS" "$TOOL" "$raw" "$raw.time" "$s0" "$s1" \
        mode="$MODE" scenario="$scen" round="$r" target="$t" url="$url"
      sleep "$PAUSE"
    done
  done
done

echo 'done' > "$RUN/phase"
kill -TERM "$SAMPLER_PID" 2>/dev/null; wait "$SAMPLER_PID" 2>/dev/null; SAMPLER_PID=""

echo
echo "== $MODE, $TOOL, ${DUR_S}s x $ROUNDS rounds, $CONNS conns, pin=$PIN; medians over rounds; errs = errors + non-2xx"
echo "   x$REF = req/s ratio, p99x = p99 ratio to $REF; prxCPU% = target's CPU (100 = 1 core); us/req = its CPU per request"
echo "   RSS/PSS = peak sum over the target's processes during that scenario; lg% = load generator CPU;"
echo "   oth% = max CPU used by other processes on the machine during a run (should be ~0; noise source)"
"${LIB[@]}" report "$RUNS" "$OUT/rss.tsv" "$REF" "$OUT/summary.tsv" | tee "$OUT/table.txt"
cp "$OUT/summary.tsv" "$RESULTS/last.tsv"
cp "$RUNS" "$RESULTS/last-runs.tsv"
cp "$OUT/table.txt" "$RESULTS/last.txt"
echo "results: $OUT (summary: $RESULTS/last.tsv)"
