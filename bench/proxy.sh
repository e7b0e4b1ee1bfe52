#!/usr/bin/env bash
# Proxy overhead, side by side in one run: the same trivial upstream (nginx `return 200`)
# reached directly, through pillion (RED metrics and tracing on, every span exported over
# OTLP/HTTP), and through nginx (proxy_pass, keep-alive pool); each proxy with one worker.
# Reports p50/p99 latency at a fixed request rate, saturation throughput, CPU time per request
# (robust when the machine is shared) and peak RSS. Loopback only; every run stops by itself.
#
# Usage: bench/proxy.sh      env: RATE=2000 DURATION=10 REPS=3 CONNS=32
#        PILLION_BIN=path/to/pillion to measure a given build (default: build this tree)
#        PORT_BASE=18080: five ports from here (change it to run two benches side by side)
# Needs: h2load (apt-get install nghttp2-client), nginx (apt-get install nginx-light), python3.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE="${RATE:-2000}" DURATION="${DURATION:-10}" REPS="${REPS:-3}" CONNS="${CONNS:-32}"
RATE_CLIENTS=20
command -v h2load >/dev/null || { echo "h2load not found: apt-get install nghttp2-client" >&2; exit 2; }
command -v nginx >/dev/null || { echo "nginx not found: apt-get install nginx-light" >&2; exit 2; }

if [ -n "${PILLION_BIN:-}" ]; then
    bin="$(realpath "$PILLION_BIN")"
else
    cargo build --release --quiet
    bin="${CARGO_TARGET_DIR:-target}/release/pillion"
fi
work="$(mktemp -d)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

PORT_BASE="${PORT_BASE:-18080}"
UP=$PORT_BASE SINK=$((PORT_BASE + 1)) NGINX=$((PORT_BASE + 2)) PILLION=$((PORT_BASE + 3)) ADMIN=$((PORT_BASE + 4))

start_nginx() { # name, server blocks
    mkdir -p "$work/$1"
    cat >"$work/$1/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/$1/nginx.pid;
error_log $work/$1/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/$1; proxy_temp_path $work/$1; fastcgi_temp_path $work/$1;
    uwsgi_temp_path $work/$1; scgi_temp_path $work/$1;
    keepalive_requests 1000000;
    $2
}
CONF
    nginx -c "$work/$1/nginx.conf" -e "$work/$1/error.log" &
    pids+=($!)
}

# The upstream app, and on a second port an OTLP/HTTP sink that accepts and discards spans.
start_nginx upstream "
    server { listen 127.0.0.1:$UP; location / { return 200 'ok\n'; } }
    server { listen 127.0.0.1:$SINK; client_max_body_size 64m; location / { return 200; } }"
# nginx as the proxy to compare with: keep-alive pool to the upstream.
start_nginx proxy "
    upstream app { server 127.0.0.1:$UP; keepalive 64; }
    server { listen 127.0.0.1:$NGINX; location / {
        proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ''; } }"

cat >"$work/pillion.yaml" <<CONF
admin: { listen: "127.0.0.1:$ADMIN" }
worker_threads: 1
logs: { data_dir: "$work/data" }
proxy:
  inbound:
    listen: "127.0.0.1:$PILLION"
    upstream: "http://127.0.0.1:$UP"
    routes: ["/api/users/{id}"]
tracing:
  otlp: { endpoint: "http://127.0.0.1:$SINK", protocol: http/protobuf }
  sample_ratio: 1.0
CONF
"$bin" run --config "$work/pillion.yaml" >"$work/pillion.out" 2>"$work/pillion.err" &
pillion_pid=$!
pids+=("$pillion_pid")

for port in $UP $NGINX $PILLION; do
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.05; done
    curl -sf "http://127.0.0.1:$port/" >/dev/null || { echo "nothing on port $port" >&2; cat "$work"/*.err >&2; exit 1; }
done
nginx_worker="$(pgrep -P "$(cat "$work/proxy/nginx.pid")" | head -1)"
cpu_ticks() { [ -z "$1" ] && { echo 0; return; }; awk '{print $14 + $15}' "/proc/$1/stat"; }
user_ticks() { [ -z "$1" ] && { echo 0; return; }; awk '{print $14}' "/proc/$1/stat"; }

url() { echo "http://127.0.0.1:$1/api/users/42"; }
for port in $UP $PILLION $NGINX; do h2load --h1 -D 2 -c "$CONNS" -t 1 "$(url "$port")" >/dev/null; done # warm up
for rep in $(seq "$REPS"); do
    for target in direct:$UP:0 pillion:$PILLION:$pillion_pid nginx:$NGINX:$nginx_worker; do
        IFS=: read -r label port pid <<<"$target"
        # Fixed rate: RATE_CLIENTS connections, each at RATE/RATE_CLIENTS req/s; per-request log.
        h2load --h1 -D "$DURATION" -c "$RATE_CLIENTS" -t 1 --rps $((RATE / RATE_CLIENTS)) \
            --log-file "$work/$label-rate-$rep.log" "$(url "$port")" >"$work/$label-rate-$rep.txt"
        # Saturation: CONNS connections as fast as the proxy answers; CPU ticks around it.
        before="$(cpu_ticks "${pid#0}")" before_user="$(user_ticks "${pid#0}")"
        h2load --h1 -D "$DURATION" -c "$CONNS" -t 1 "$(url "$port")" >"$work/$label-max-$rep.txt"
        echo "$(( $(cpu_ticks "${pid#0}") - before ))" >"$work/$label-max-$rep.ticks"
        echo "$(( $(user_ticks "${pid#0}") - before_user ))" >"$work/$label-max-$rep.user"
    done
done

hwm() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
pillion_kib="$(hwm "$pillion_pid")" nginx_kib="$(hwm "$nginx_worker")"
# The binary's own pages (text, read-only data) count in RSS too: show what is anonymous.
rss_split="$(awk '/RssAnon|RssFile/ {printf "%s %.1f MiB ", $1, $2 / 1024}' "/proc/$pillion_pid/status")"
spans="$(curl -sf "http://127.0.0.1:$ADMIN/metrics" | grep -E '^pillion_spans_(exported|dropped)_total' | tr '\n' ' ')"

python3 - "$work" "$REPS" "$RATE" "$CONNS" "$DURATION" "$pillion_kib" "$nginx_kib" "$(getconf CLK_TCK)" "$spans" "$rss_split" <<'PY'
import re, statistics, sys
work, reps, rate, conns, duration, pillion_kib, nginx_kib, clk_tck, spans, rss_split = sys.argv[1:11]
reps, clk_tck = int(reps), int(clk_tck)
def percentiles(label, rep):
    latencies = []
    with open(f"{work}/{label}-rate-{rep}.log") as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 3 and parts[1] == "200":
                latencies.append(int(parts[2]))
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]
    return pick(0.50), pick(0.99)
def summary(label, mode, rep):
    text = open(f"{work}/{label}-{mode}-{rep}.txt").read()
    rps = float(re.search(r"finished in [0-9.]+s, ([0-9.]+) req/s", text).group(1))
    done = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", text)
    return rps, int(done.group(3)), int(done.group(4)) + int(done.group(5))
rows, users = {}, {}
for label in ("direct", "pillion", "nginx"):
    p50 = statistics.median(percentiles(label, r)[0] for r in range(1, reps + 1))
    p99 = statistics.median(percentiles(label, r)[1] for r in range(1, reps + 1))
    maxes = [summary(label, "max", r) for r in range(1, reps + 1)]
    failures = sum(summary(label, m, r)[2] for m in ("rate", "max") for r in range(1, reps + 1))
    rps = statistics.median(m[0] for m in maxes)
    cpu_us = statistics.median(
        int(open(f"{work}/{label}-max-{r}.ticks").read()) / clk_tck * 1e6 / max(1, maxes[r - 1][1])
        for r in range(1, reps + 1))
    user_us = statistics.median(
        int(open(f"{work}/{label}-max-{r}.user").read()) / clk_tck * 1e6 / max(1, maxes[r - 1][1])
        for r in range(1, reps + 1))
    rows[label] = (p50, p99, rps, cpu_us, failures)
    users[label] = user_us
print(f"\n{reps} runs of {duration}s per cell, medians; fixed rate {rate} req/s over 20 connections; "
      f"saturation with {conns} connections; one worker per proxy.\n")
print(f"| path | p50 @ {rate}/s | p99 @ {rate}/s | added p99 | saturation req/s | vs nginx | proxy CPU per request | peak RSS | failed |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
direct_p99 = rows["direct"][1]
for label in ("direct", "pillion", "nginx"):
    p50, p99, rps, cpu_us, failures = rows[label]
    added = "" if label == "direct" else f"{p99 - direct_p99:+d} us"
    ratio = "" if label == "direct" else f"{rps / rows['nginx'][2]:.2f}x"
    cpu = "" if label == "direct" else f"{cpu_us:.1f} us"
    rss = {"pillion": f"{int(pillion_kib) / 1024:.1f} MiB", "nginx": f"{int(nginx_kib) / 1024:.1f} MiB (worker)"}.get(label, "")
    print(f"| {label} | {p50} us | {p99} us | {added} | {rps:.0f} | {ratio} | {cpu} | {rss} | {failures} |")
print(f"\npillion: {spans}")
print(f"pillion at the end: {rss_split}")
print("CPU per request in user space: " + ", ".join(f"{label} {users[label]:.1f} us" for label in ("pillion", "nginx")))
PY
