#!/usr/bin/env python3
"""Helpers for benches/harness/run.sh (stdlib only).

  lib.py genbig FILE                      write the 64 KiB compressible JSON body
  lib.py busy SECONDS                     print % CPU busy on the machine
  lib.py snap PIDS UPIDS                  print CPU ticks: target upstream idle total
  lib.py record RUNS TOOL RAW TIME S0 S1 key=val...   parse one load-gen run, append a row
  lib.py sample OUT PHASEFILE DEADLINE name=pid,pid ...   peak RSS/PSS sampler (background)
  lib.py report RUNS RSS REF OUTTSV       print the summary table, write OUTTSV
"""
import json, math, os, re, signal, statistics, sys, time

TICK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- body
def genbig(path, size=65536):
    recs, i = [], 0
    while True:
        recs.append({"id": i, "sku": "SKU-%06d" % i, "name": "Widget %d" % i,
                     "category": ["tools", "garden", "kitchen", "office"][i % 4],
                     "price": round(3.5 + (i * 37 % 10000) / 100, 2), "in_stock": i % 3 != 0,
                     "tags": ["alpha", "beta", "gamma"][: i % 3 + 1],
                     "description": "A reasonably ordinary widget used for benchmarking compression of JSON payloads."})
        i += 1
        if len(json.dumps({"items": recs, "pad": ""})) + 1 > size:
            recs.pop()
            break
    body = json.dumps({"items": recs, "pad": ""})
    body = body[:-2] + "x" * (size - 1 - len(body)) + '"}' + "\n"
    assert len(body) == size
    with open(path, "w") as f:
        f.write(body)


# ---------------------------------------------------------------- cpu
def proc_ticks(pids):
    t = 0
    for p in pids:
        try:
            with open("/proc/%s/stat" % p) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            t += int(fields[11]) + int(fields[12])  # utime stime
        except (OSError, IndexError, ValueError):
            pass
    return t


def snap(pids, upids):
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    # target upstream idle total wallclock busy steal   (ticks, except wallclock)
    # busy = user+nice+system+irq+softirq: a task's stime also holds the softirq ticks
    # (loopback TCP) that /proc/stat books under softirq
    print(proc_ticks(csv(pids)), proc_ticks(csv(upids)), cpu[3] + cpu[4], sum(cpu[:8]),
          "%.3f" % time.time(), cpu[0] + cpu[1] + cpu[2] + cpu[5] + cpu[6], cpu[7])


def busy(seconds):
    """% of all CPUs busy over `seconds` (before the run starts: is the machine quiet?)"""
    def rd():
        with open("/proc/stat") as f:
            c = [int(x) for x in f.readline().split()[1:]]
        return c[3] + c[4], sum(c[:8])
    i0, t0 = rd(); time.sleep(seconds); i1, t1 = rd()
    print("%.0f" % (100 - (i1 - i0) / max(t1 - t0, 1) * 100))


def csv(s):
    return [x for x in s.split(",") if x]


# ---------------------------------------------------------------- load-gen output parsers
def _dur(v, unit):  # -> ms
    return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def parse_hey(txt):
    r = {"p999": math.nan}
    m = re.search(r"Requests/sec:\s+([\d.]+)", txt)
    r["rps"] = float(m.group(1)) if m else math.nan
    for pct, key in (("50", "p50"), ("99", "p99")):
        m = re.search(r"\s%s%% in ([\d.]+) secs" % pct, txt)
        r[key] = float(m.group(1)) * 1e3 if m else math.nan
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", txt)}
    r["requests"] = sum(codes.values())
    r["non2xx"] = sum(n for c, n in codes.items() if not 200 <= c < 300)
    err = txt.split("Error distribution:", 1)
    r["errors"] = sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]", err[1], re.M)) if len(err) > 1 else 0
    return r


def parse_wrk(txt):
    r = {"p999": math.nan}
    m = re.search(r"Requests/sec:\s+([\d.]+)", txt)
    r["rps"] = float(m.group(1)) if m else math.nan
    for pct, key in (("50", "p50"), ("99", "p99")):
        m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s|m)\s*$" % pct, txt, re.M)
        r[key] = _dur(*m.groups()) if m else math.nan
    m = re.search(r"(\d+) requests in", txt)
    r["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", txt)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", txt)
    r["errors"] = sum(map(int, m.groups())) if m else 0
    return r


def parse_oha(txt):
    j = json.loads(txt[txt.index("{"):])
    s, lp = j["summary"], j.get("latencyPercentiles", {})
    codes = {int(k): v for k, v in j.get("statusCodeDistribution", {}).items()}
    ms = lambda v: v * 1e3 if v is not None else math.nan
    return {"rps": s.get("requestsPerSec") or math.nan, "p50": ms(lp.get("p50")), "p99": ms(lp.get("p99")),
            "p999": ms(lp.get("p99.9")), "requests": sum(codes.values()),
            "non2xx": sum(n for c, n in codes.items() if not 200 <= c < 300),
            "errors": sum(j.get("errorDistribution", {}).values())}


PARSERS = {"hey": parse_hey, "wrk": parse_wrk, "oha": parse_oha}
COLS = ["mode", "scenario", "round", "target", "tool", "url", "rps", "p50_ms", "p99_ms", "p999_ms",
        "requests", "errors", "non2xx", "lg_cpu_pct", "proxy_cpu_pct", "proxy_us_per_req",
        "upstream_cpu_pct", "idle_pct", "other_cpu_pct", "steal_pct", "wall_s"]


def record(runs, tool, raw, timef, s0, s1, kv):
    with open(raw, errors="replace") as f:
        txt = f.read()
    try:
        r = PARSERS[tool](txt)
    except Exception as e:  # unparsable output counts as a failed run
        print("WARN: cannot parse %s: %s" % (raw, e), file=sys.stderr)
        r = {"rps": math.nan, "p50": math.nan, "p99": math.nan, "p999": math.nan,
             "requests": 0, "errors": 1, "non2xx": 0}
    try:
        e, u, s = (float(x) for x in open(timef).read().split()[-3:])
        lg_s = u + s
        lg = lg_s / e * 100 if e > 0 else math.nan
    except Exception:
        lg_s, lg = 0.0, math.nan
    a, b = [float(x) for x in s0.split()], [float(x) for x in s1.split()]
    wall = b[4] - a[4]
    tsec = (b[0] - a[0]) / TICK
    usec = (b[1] - a[1]) / TICK
    tot = b[3] - a[3]
    idle = (b[2] - a[2]) / tot * 100 if tot > 0 else math.nan
    # CPU used by anything else on the machine (build jobs, other sessions...): user+sys time
    # of the whole machine minus target, upstream and load generator. ~0 on a quiet machine.
    known = tsec + (usec if kv.get("target") != "direct" else 0) + lg_s
    other = ((b[5] - a[5]) / TICK - known) / wall * 100
    steal = (b[6] - a[6]) / tot * 100 if tot > 0 else math.nan
    n = r["requests"] or 1
    # count only 2xx responses as throughput (hey's and wrk's req/s include errors and non-2xx)
    good = max(r["requests"] - r["non2xx"], 0) / max(r["requests"] + r["errors"], 1)
    row = dict(kv, tool=tool, rps=r["rps"] * good, p50_ms=r["p50"], p99_ms=r["p99"], p999_ms=r["p999"],
               requests=r["requests"], errors=r["errors"], non2xx=r["non2xx"], lg_cpu_pct=lg,
               proxy_cpu_pct=tsec / wall * 100, proxy_us_per_req=tsec / n * 1e6,
               upstream_cpu_pct=usec / wall * 100, idle_pct=idle, other_cpu_pct=other,
               steal_pct=steal, wall_s=wall)
    new = not os.path.exists(runs)
    with open(runs, "a") as f:
        if new:
            f.write("\t".join(COLS) + "\n")
        f.write("\t".join(fmt(row.get(c, "")) for c in COLS) + "\n")
    print("    %-9s %-11s r%s  %9.0f req/s  p50 %6.2f ms  p99 %6.2f ms  err %d/%d  lg %3.0f%%  proxy %3.0f%% (%.1f us/req)  idle %2.0f%%  other %3.0f%%"
          % (row["target"], row["scenario"], row["round"], row["rps"], r["p50"], r["p99"], r["errors"],
             r["non2xx"], lg, row["proxy_cpu_pct"], row["proxy_us_per_req"], idle, other))


def fmt(v):
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("%.3f" % v)
    return str(v)


# ---------------------------------------------------------------- memory sampler
def _status_kb(pid, key):
    try:
        with open("/proc/%s/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid):
    try:
        with open("/proc/%s/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def sample(out, phasefile, deadline, specs, interval=0.5):
    targets = {}
    for s in specs:
        name, pids = s.split("=", 1)
        targets[name] = csv(pids)
    peak = {}  # (target, phase) -> [rss, pss]
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))

    def dump():
        tmp = out + ".tmp"
        with open(tmp, "w") as f:
            f.write("target\tphase\tpeak_rss_kb\tpeak_pss_kb\thwm_sum_kb\n")
            for (t, ph), (rss, pss) in sorted(peak.items()):
                hwm = sum(_status_kb(p, "VmHWM") for p in targets[t])
                f.write("%s\t%s\t%d\t%d\t%d\n" % (t, ph, rss, pss, hwm))
        os.replace(tmp, out)

    n = 0
    while not stop and time.time() < deadline:
        try:
            phase = open(phasefile).read().strip() or "-"
        except OSError:
            phase = "-"
        for t, pids in targets.items():
            rss = sum(_status_kb(p, "VmRSS") for p in pids)
            pss = sum(_pss_kb(p) for p in pids)
            for key in ((t, phase), (t, "ALL")):
                cur = peak.setdefault(key, [0, 0])
                cur[0], cur[1] = max(cur[0], rss), max(cur[1], pss)
        n += 1
        if n % 10 == 0:
            dump()
        time.sleep(interval)
    dump()


# ---------------------------------------------------------------- report
def read_tsv(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        hdr = f.readline().rstrip("\n").split("\t")
        return [dict(zip(hdr, l.rstrip("\n").split("\t"))) for l in f if l.strip()]


def med(xs):
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else math.nan


def report(runs_path, rss_path, ref, out):
    runs = read_tsv(runs_path)
    mem = {(r["target"], r["phase"]): r for r in read_tsv(rss_path)}
    groups = {}
    for r in runs:
        groups.setdefault((r["mode"], r["scenario"], r["target"]), []).append(r)
    f = lambda rows, k: [float(r[k]) for r in rows]
    summ = []
    for (mode, scen, tgt), rows in groups.items():
        rps = f(rows, "rps")
        ok = [x for x in rps if not math.isnan(x)]
        m = mem.get((tgt, scen), {})
        summ.append({
            "mode": mode, "scenario": scen, "target": tgt, "rounds": len(rows), "rps_med": med(rps),
            "rps_min": min(ok) if ok else math.nan, "rps_max": max(ok) if ok else math.nan,
            "spread_pct": (max(ok) - min(ok)) / med(rps) * 100 if ok else math.nan,
            "p50_ms": med(f(rows, "p50_ms")), "p99_ms": med(f(rows, "p99_ms")), "p999_ms": med(f(rows, "p999_ms")),
            "errors": int(sum(f(rows, "errors")) + sum(f(rows, "non2xx"))),
            "proxy_cpu_pct": med(f(rows, "proxy_cpu_pct")), "proxy_us_per_req": med(f(rows, "proxy_us_per_req")),
            "lg_cpu_pct": med(f(rows, "lg_cpu_pct")), "idle_pct": med(f(rows, "idle_pct")),
            "other_cpu_pct": max(f(rows, "other_cpu_pct")),
            "peak_rss_mb": int(m.get("peak_rss_kb", 0)) / 1024, "peak_pss_mb": int(m.get("peak_pss_kb", 0)) / 1024,
        })
    for s in summ:
        r = [x for x in summ if x["target"] == ref and x["scenario"] == s["scenario"] and x["mode"] == s["mode"]]
        s["rps_vs_ref"] = s["rps_med"] / r[0]["rps_med"] if r and r[0]["rps_med"] else math.nan
        s["p99_vs_ref"] = s["p99_ms"] / r[0]["p99_ms"] if r and r[0]["p99_ms"] else math.nan
    cols = list(summ[0].keys()) if summ else []
    with open(out, "w") as fo:
        fo.write("\t".join(cols) + "\n")
        for s in summ:
            fo.write("\t".join(fmt(s[c]) for c in cols) + "\n")
    h = ("%-11s %-9s %8s %15s %6s %6s %6s %7s %6s %6s %6s %7s %6s %6s %5s %5s %5s"
         % ("scenario", "target", "req/s", "min..max", "sprd%", "p50ms", "p99ms", "p99.9ms", "errs",
            "x" + ref[:5], "p99x", "prxCPU%", "us/req", "RSSMB", "PSSMB", "lg%", "oth%"))
    print(h)
    print("-" * len(h))
    last = None
    for s in summ:
        if last and last != (s["mode"], s["scenario"]):
            print()
        last = (s["mode"], s["scenario"])
        print("%-11s %-9s %8.0f %15s %6.1f %6.2f %6.2f %7s %6d %6.2f %6.2f %7.0f %6.1f %6.1f %5.1f %5.0f %5.0f"
              % (s["scenario"][:11], s["target"][:9], s["rps_med"], "%.0f..%.0f" % (s["rps_min"], s["rps_max"]),
                 s["spread_pct"], s["p50_ms"], s["p99_ms"], "-" if math.isnan(s["p999_ms"]) else "%.2f" % s["p999_ms"],
                 s["errors"], s["rps_vs_ref"], s["p99_vs_ref"], s["proxy_cpu_pct"], s["proxy_us_per_req"],
                 s["peak_rss_mb"], s["peak_pss_mb"], s["lg_cpu_pct"], s["other_cpu_pct"]))


def main(a):
    cmd = a[0]
    if cmd == "genbig":
        genbig(a[1])
    elif cmd == "busy":
        busy(float(a[1]))
    elif cmd == "snap":
        snap(a[1], a[2])
    elif cmd == "record":
        record(a[1], a[2], a[3], a[4], a[5], a[6], dict(x.split("=", 1) for x in a[7:]))
    elif cmd == "sample":
        sample(a[1], a[2], float(a[3]), a[4:])
    elif cmd == "report":
        report(a[1], a[2], a[3], a[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
