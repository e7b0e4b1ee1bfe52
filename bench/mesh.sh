#!/usr/bin/env bash
# What mTLS costs the inbound proxy: pillion CPU time per request over kept-alive connections,
# plain vs TLS vs mTLS, and CPU time per new connection (handshake + one request) with and
# without a client certificate, plus the handshakes per second the clients reached.
#
# One pillion (release, `worker_threads: 1`, RED metrics and a SERVER span per request exported
# over OTLP/HTTP, as in bench/proxy.sh) with `mtls: permissive`, so plain and TLS clients reach
# the same process on the same port; a client certificate offered there is verified and becomes
# the peer identity (x-forwarded-client-cert), as with `mtls: required`. The upstream is nginx
# `return 200` (with the x-forwarded-client-cert it got, checked once before the rounds). Rows:
#   plain        h2load --h1 -> pillion (plain HTTP/1.1)
#   tls          h2load --h1 over TLS -> pillion (TLS 1.3, no client certificate: h2load has none)
#   front plain  h2load --h1 -> nginx -> pillion, plain, nginx keep-alive pool
#   front mtls   h2load --h1 -> nginx -> pillion over mTLS (nginx presents a client certificate)
#   handshake tls / mtls: `openssl s_time -new` (a new TLS connection per HTTP/1.0 request),
#                two clients at once, without / with a client certificate
# "front plain" vs "front mtls" is the like-for-like mTLS comparison (same client, same
# connection pattern). CPU comes from /proc/<pid>/stat (user + system ticks of pillion) divided by
# the requests (or handshakes, counted by pillion_tls_handshakes_total) served meanwhile: robust
# on a shared machine, unlike wall throughput. Certificates are made here with the openssl CLI
# (KEY=ec: ECDSA P-256, KEY=rsa: RSA 2048, cert-manager's default). Loopback only; every run
# stops by itself.
#
# Usage: bench/mesh.sh      env: DURATION=10 REPS=3 CONNS=32 KEY=ec
#        PILLION_BIN=path/to/pillion to measure a given build (default: build this tree)
#        PORT_BASE=18180: six ports from here
# Needs: h2load (apt-get install nghttp2-client), nginx (apt-get install nginx-light), openssl,
#        curl, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10}" REPS="${REPS:-3}" CONNS="${CONNS:-32}" KEY="${KEY:-ec}"
for tool in h2load nginx openssl curl python3; do
    command -v "$tool" >/dev/null || { echo "$tool not found" >&2; exit 2; }
done

if [ -n "${PILLION_BIN:-}" ]; then
    bin="$(realpath "$PILLION_BIN")"
else
    cargo build --release --quiet
    bin="${CARGO_TARGET_DIR:-target}/release/pillion"
fi
# shellcheck source=bench/common.sh
. bench/common.sh

PORT_BASE="${PORT_BASE:-18180}"
UP=$PORT_BASE SINK=$((PORT_BASE + 1)) PILLION=$((PORT_BASE + 2)) ADMIN=$((PORT_BASE + 3))
FRONT_PLAIN=$((PORT_BASE + 4)) FRONT_MTLS=$((PORT_BASE + 5))

# A CA, pillion's certificate (SPIFFE URI + DNS localhost) and a client's (SPIFFE URI).
tls="$work/tls"
mkdir -p "$tls"
case "$KEY" in
    ec) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
    rsa) newkey=(-newkey rsa:2048) ;;
    *) echo "KEY must be ec or rsa" >&2; exit 2 ;;
esac
openssl req -x509 "${newkey[@]}" -nodes -days 2 -subj "/CN=bench mesh CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$tls/ca.key" -out "$tls/ca.crt" 2>/dev/null
leaf() { # name, SANs
    openssl req "${newkey[@]}" -nodes -subj "/CN=$1" -keyout "$tls/$1.key" -out "$tls/$1.csr" 2>/dev/null
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=%s\n' "$2" >"$tls/$1.ext"
    openssl x509 -req -in "$tls/$1.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial -days 2 \
        -extfile "$tls/$1.ext" -out "$tls/$1.crt" 2>/dev/null
}
leaf server "URI:spiffe://cluster.local/ns/bench/sa/server,DNS:localhost"
leaf client "URI:spiffe://cluster.local/ns/bench/sa/client"


# The app (it answers with the caller's identity, so that the check below can see the client
# certificate got through), and on a second port an OTLP/HTTP sink that discards spans.
start_nginx upstream "
    server { listen 127.0.0.1:$UP; location / { return 200 '\$http_x_forwarded_client_cert\n'; } }
    server { listen 127.0.0.1:$SINK; client_max_body_size 64m; location / { return 200; } }"
# The front: a client with a keep-alive pool to pillion, plain on one port, mTLS on the other.
start_nginx front "
    upstream plain { server 127.0.0.1:$PILLION; keepalive 64; }
    upstream mtls { server 127.0.0.1:$PILLION; keepalive 64; }
    server { listen 127.0.0.1:$FRONT_PLAIN; location / {
        proxy_pass http://plain; proxy_http_version 1.1; proxy_set_header Connection ''; } }
    server { listen 127.0.0.1:$FRONT_MTLS; location / {
        proxy_pass https://mtls; proxy_http_version 1.1; proxy_set_header Connection '';
        proxy_ssl_certificate $tls/client.crt; proxy_ssl_certificate_key $tls/client.key;
        proxy_ssl_trusted_certificate $tls/ca.crt; proxy_ssl_verify on;
        proxy_ssl_name localhost; proxy_ssl_server_name on; } }"

cat >"$work/pillion.yaml" <<CONF
admin: { listen: "127.0.0.1:$ADMIN" }
worker_threads: 1
logs: { data_dir: "$work/data" }
proxy:
  identity: { cert_file: "$tls/server.crt", key_file: "$tls/server.key", ca_file: "$tls/ca.crt" }
  inbound:
    listen: "127.0.0.1:$PILLION"
    upstream: "http://127.0.0.1:$UP"
    routes: ["/api/users/{id}"]
    mtls: permissive
tracing:
  otlp: { endpoint: "http://127.0.0.1:$SINK", protocol: http/protobuf }
  sample_ratio: 1.0
CONF
"$bin" run --config "$work/pillion.yaml" >"$work/pillion.out" 2>"$work/pillion.err" &
pillion_pid=$!
pids+=("$pillion_pid")

path=/api/users/42
check() { # what, curl arguments...: waits for a 200
    local what="$1"; shift
    for _ in $(seq 100); do curl -sf -o /dev/null "$@" 2>/dev/null && return; sleep 0.05; done
    curl -sS -o /dev/null "$@" || { echo "$what does not answer" >&2; cat "$work"/*.err "$work"/*/error.log >&2; exit 1; }
}
check upstream "http://127.0.0.1:$UP/"
check "pillion plain" "http://127.0.0.1:$PILLION$path"
check "pillion mTLS" --resolve "localhost:$PILLION:127.0.0.1" --cacert "$tls/ca.crt" \
    --cert "$tls/client.crt" --key "$tls/client.key" "https://localhost:$PILLION$path"
check "front plain" "http://127.0.0.1:$FRONT_PLAIN$path"
check "front mTLS" "http://127.0.0.1:$FRONT_MTLS$path"
caller="$(curl -sf "http://127.0.0.1:$FRONT_MTLS$path")"
case "$caller" in
    *URI=spiffe://cluster.local/ns/bench/sa/client*) ;;
    *) echo "the app did not see the client's identity through mTLS: '$caller'" >&2; exit 1 ;;
esac

ticks() { awk '{print $14 + $15}' "/proc/$pillion_pid/stat"; }
handshakes() { # successful inbound handshakes so far
    curl -sf "http://127.0.0.1:$ADMIN/metrics" |
        awk '/^pillion_tls_handshakes_total\{direction="inbound",outcome="success"\}/ {print $2; found=1} END {if (!found) print 0}'
}
failed_handshakes() {
    curl -sf "http://127.0.0.1:$ADMIN/metrics" |
        awk '/^pillion_tls_handshakes_total\{direction="inbound",outcome="failure"\}/ {print $2; found=1} END {if (!found) print 0}'
}

load() { # label, rep: one keep-alive saturation run; writes the h2load output and pillion's ticks
    local url
    case "$1" in
        plain) url="http://127.0.0.1:$PILLION$path" ;;
        tls) url="https://127.0.0.1:$PILLION$path" ;;
        front_plain) url="http://127.0.0.1:$FRONT_PLAIN$path" ;;
        front_mtls) url="http://127.0.0.1:$FRONT_MTLS$path" ;;
    esac
    local before
    before="$(ticks)"
    h2load --h1 -D "$DURATION" -c "$CONNS" -t 1 "$url" >"$work/$1-$2.txt"
    echo "$(( $(ticks) - before ))" >"$work/$1-$2.ticks"
}

shake() { # label, rep: two s_time clients making a new connection per request
    local cert=()
    [ "$1" = handshake_mtls ] && cert=(-cert "$tls/client.crt" -key "$tls/client.key")
    local before_ticks before_count
    before_ticks="$(ticks)" before_count="$(handshakes)"
    local clients=()
    for client in 1 2; do
        openssl s_time -connect "127.0.0.1:$PILLION" -new -time "$DURATION" -www "$path" \
            -CAfile "$tls/ca.crt" "${cert[@]}" >"$work/$1-$2-$client.txt" 2>&1 &
        clients+=($!)
    done
    wait "${clients[@]}"
    echo "$(( $(ticks) - before_ticks )) $(( $(handshakes) - before_count ))" >"$work/$1-$2.ticks"
}

# Warm up both paths (connection pools, lazily built state).
for label in plain tls front_plain front_mtls; do DURATION=2 load "$label" 0; done
failures_before="$(failed_handshakes)"
for rep in $(seq "$REPS"); do
    for label in plain tls front_plain front_mtls; do load "$label" "$rep"; done
    for label in handshake_tls handshake_mtls; do shake "$label" "$rep"; done
done
failures="$(( $(failed_handshakes) - failures_before ))"
hwm="$(awk '/VmHWM/ {print $2}' "/proc/$pillion_pid/status")"
# The binary's own pages count in RSS too: show what is anonymous.
rss_split="$(awk '/RssAnon|RssFile/ {printf "%s %.1f MiB ", $1, $2 / 1024}' "/proc/$pillion_pid/status")"

python3 - "$work" "$REPS" "$DURATION" "$CONNS" "$(getconf CLK_TCK)" "$hwm" "$failures" "$KEY" "$rss_split" <<'PY'
import re, statistics, sys
work, reps, duration, conns, clk_tck, hwm, failures, key, rss_split = sys.argv[1:10]
reps, clk_tck = int(reps), int(clk_tck)
def requests(label, rep):
    text = open(f"{work}/{label}-{rep}.txt").read()
    rps = float(re.search(r"finished in [0-9.]+s, ([0-9.]+) req/s", text).group(1))
    done = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored", text)
    return rps, int(done.group(1)), int(done.group(2)) + int(done.group(3))
rows = {}
for label in ("plain", "tls", "front_plain", "front_mtls"):
    runs = [requests(label, r) for r in range(1, reps + 1)]
    cpu = [int(open(f"{work}/{label}-{r}.ticks").read()) / clk_tck * 1e6 / max(1, runs[r - 1][1])
           for r in range(1, reps + 1)]
    rows[label] = (statistics.median(cpu), min(cpu), max(cpu), statistics.median(r[0] for r in runs),
                   sum(r[2] for r in runs))
print(f"\nKEY={key}; {reps} rounds of {duration}s per cell, medians (min-max of the rounds); "
      f"{conns} h2load connections; pillion worker_threads: 1, mtls: permissive.\n")
print("| path | pillion CPU per request | vs plain | req/s (wall, shared machine) | failed |")
print("| --- | --- | --- | --- | --- |")
names = {"plain": "plain", "tls": "TLS (no client cert)", "front_plain": "nginx -> plain",
         "front_mtls": "nginx -> mTLS (client cert)"}
for label, base in (("plain", "plain"), ("tls", "plain"), ("front_plain", "front_plain"), ("front_mtls", "front_plain")):
    cpu, low, high, rps, failed = rows[label]
    ratio = "" if label == base else f"{cpu / rows[base][0]:.2f}x"
    print(f"| {names[label]} | {cpu:.1f} us ({low:.1f}-{high:.1f}) | {ratio} | {rps:.0f} | {failed} |")
print("\n| new connection per request | pillion CPU per handshake + request | handshakes/s (wall, 2 s_time clients) | max handshakes/s per pillion core (1 / CPU) |")
print("| --- | --- | --- | --- |")
for label, name in (("handshake_tls", "TLS 1.3 (no client cert)"), ("handshake_mtls", "mTLS 1.3 (client cert verified)")):
    cpu, rate = [], []
    for r in range(1, reps + 1):
        ticks, count = map(int, open(f"{work}/{label}-{r}.ticks").read().split())
        cpu.append(ticks / clk_tck * 1e6 / max(1, count))
        rate.append(count / float(duration))
    median = statistics.median(cpu)
    print(f"| {name} | {median:.0f} us ({min(cpu):.0f}-{max(cpu):.0f}) | {statistics.median(rate):.0f} | {1e6 / median:.0f} |")
print(f"\nfailed inbound handshakes during the rounds: {failures}; pillion peak RSS {int(hwm) / 1024:.1f} MiB (at the end: {rss_split.strip()})")
PY
