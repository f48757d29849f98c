#!/usr/bin/env bash
# TLS handshakes per second, fortress against nginx with the same certificate and key
# (EC P-256 from certs-example/make-certs.sh), one worker each, on 127.0.0.1 only.
# `openssl s_time` connects, handshakes and closes in a loop for DURATION seconds: `-new`
# makes every handshake a full one, `-reuse` resumes the first session (TLS 1.3 tickets).
# Prints connections per second (wall clock) and each server's CPU ms per 1000 handshakes.
#
# Usage: benches/tls-handshakes.sh PATH/TO/fortress [DURATION_SECONDS]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
BIN=${1:?usage: tls-handshakes.sh PATH/TO/fortress [SECONDS]}
SECS=${2:-10}
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
W="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
for tool in nginx openssl curl; do command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }; done

"$HERE/certs-example/make-certs.sh" "$W/certs" >/dev/null
P_NGX=18443 P_FX=18444 P_ADMIN=18494 P_UP=18480
mkdir -p "$W/nginx"
cat >"$W/nginx.conf" <<CONF
worker_processes 1;
pid $W/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$P_UP;
    location / { return 200 "ok\n"; }
  }
  server {
    listen 127.0.0.1:$P_NGX ssl;
    ssl_certificate $W/certs/server-chain.crt;
    ssl_certificate_key $W/certs/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:tls:1m;
    ssl_session_tickets on;
    location / { return 200 "ok\n"; }
  }
}
CONF
nginx -p "$W/nginx" -e "$W/nginx/error.log" -c "$W/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
NGX_PID=$!
start_fortress "$BIN" "$W" "127.0.0.1:$P_FX" "127.0.0.1:$P_ADMIN" "http://127.0.0.1:$P_UP" \
  "  tls: { cert: $W/certs/server-chain.crt, key: $W/certs/server.key }"
wait_for "http://127.0.0.1:$P_ADMIN/healthz" "https://127.0.0.1:$P_NGX/"

cpu_ticks() { # user + system clock ticks of a process tree's root and its children
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$total"
}

echo "| server | handshakes | per second | server CPU ms / 1k handshakes |"
echo "|---|---|---:|---:|"
for mode in new reuse; do
  for target in nginx fortress; do
    if [ "$target" = nginx ]; then port=$P_NGX; pid=$NGX_PID; else port=$P_FX; pid=$FX_PID; fi
    before=$(cpu_ticks "$pid")
    out=$(openssl s_time -connect "127.0.0.1:$port" "-$mode" -time "$SECS" 2>/dev/null)
    after=$(cpu_ticks "$pid")
    line=$(echo "$out" | grep -m1 "connections in .* real seconds")
    n=$(echo "$line" | awk '{print $1}')
    real=$(echo "$line" | awk '{print $4}')
    hz=$(getconf CLK_TCK)
    awk -v t="$target" -v m="$mode" -v n="$n" -v r="$real" -v c=$((after - before)) -v hz="$hz" \
      'BEGIN { printf "| %s | %s | %.0f | %.1f |\n", t, (m == "new" ? "full" : "resumed"), n / r, c * 1000 / hz / n * 1000 }'
  done
done
