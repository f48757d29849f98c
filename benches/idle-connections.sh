#!/usr/bin/env bash
# Resident memory with N idle keep-alive client connections (default 10 000; measured 3 s after
# the last one was opened), fortress
# against a plain nginx reverse proxy in front of the same upstream, one worker each, on
# 127.0.0.1 only. Each client connection sends one GET, reads the response and stays open.
#
# Usage: benches/idle-connections.sh PATH/TO/fortress [CONNECTIONS]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
BIN=${1:?usage: idle-connections.sh PATH/TO/fortress [CONNECTIONS]}
N=${2:-10000}
W="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"
P_UP=18580 P_NGX=18581 P_FX=18583 P_ADMIN=18593
mkdir -p "$W/nginx"
cat >"$W/nginx.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile $(ulimit -Hn);
pid $W/nginx.pid;
events { worker_connections $((N * 2 + 512)); }
http {
  access_log off;
  keepalive_timeout 600s;
  keepalive_requests 100000;
  upstream app { server 127.0.0.1:$P_UP; keepalive 64; }
  server { listen 127.0.0.1:$P_UP; location / { return 200 "ok\n"; } }
  server {
    listen 127.0.0.1:$P_NGX;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
nginx -p "$W/nginx" -e "$W/nginx/error.log" -c "$W/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
start_fortress "$BIN" "$W" "127.0.0.1:$P_FX" "127.0.0.1:$P_ADMIN" "http://127.0.0.1:$P_UP" \
  "  require_https: false
  max_connections: $((N + 100))
  timeouts: { idle: 600s }"
wait_for "http://127.0.0.1:$P_ADMIN/healthz" "http://127.0.0.1:$P_NGX/"
# The nginx proxy's worker (the master holds no connections).
NGX_WORKER=$(pgrep -P "$(cat "$W/nginx.pid")" | head -1)
# nginx serves both the upstream and the proxy server blocks in one worker: the upstream part
# holds at most its 64 keep-alive connections.

rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }

hold() { # port -> opens N connections, one request each, holds them until stdin closes
  python3 - "$1" "$N" <<'PY' &
import asyncio, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
async def one():
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET /idle HTTP/1.1\r\nHost: app.test\r\n\r\n")
    await w.drain()
    data = b""
    while not data.endswith(b"ok\n"):
        chunk = await r.read(4096)
        if not chunk:
            raise SystemExit("closed early")
        data += chunk
    return (r, w)
async def main():
    conns = []
    for i in range(0, n, 200):
        conns += await asyncio.gather(*[one() for _ in range(min(200, n - i))])
    print("ready", len(conns), flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
PY
}

for target in fortress nginx; do
  if [ "$target" = fortress ]; then port=$P_FX; pid=$FX_PID; else port=$P_NGX; pid=$NGX_WORKER; fi
  before=$(rss "$pid")
  hold "$port" >"$W/hold-$target.out" 2>&1
  holder=$!
  for _ in $(seq 1 600); do grep -q ready "$W/hold-$target.out" && break; sleep 0.1; done
  grep -q ready "$W/hold-$target.out" || { cat "$W/hold-$target.out"; exit 1; }
  # Idle for real: past fortress's 2 s release of each client connection's upstream connection.
  sleep 3
  after=$(rss "$pid")
  echo "$target: $N idle keep-alive connections: RSS $((before / 1024)) MiB before, $((after / 1024)) MiB with them ($(awk -v a="$after" -v b="$before" -v n="$N" 'BEGIN { printf "%.1f", (a - b) / n }') KiB per connection), peak $(($(hwm "$pid") / 1024)) MiB"
  kill "$holder"; wait "$holder" 2>/dev/null || true
done
