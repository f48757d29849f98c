# Shared by benches/*.sh (sourced): fortress with one worker on a catch-all public policy.

# start_fortress BIN DIR LISTEN ADMIN UPSTREAM [SERVER_LINES]: writes DIR/fortress.yaml (the
# server: block gets SERVER_LINES, already indented), starts fortress in the background, sets
# FX_PID and adds it to PIDS.
start_fortress() {
  local bin=$1 dir=$2 listen=$3 admin=$4 upstream=$5 extra=${6:-}
  cat >"$dir/fortress.yaml" <<YAML
server:
  listen: $listen
  admin: $admin
  upstream: $upstream
  environment: local
$extra
routes:
  - name: all
    match: { path: "/**" }
    public: true
YAML
  TOKIO_WORKER_THREADS=1 "$bin" run --config "$dir/fortress.yaml" >"$dir/fortress.log" 2>&1 &
  FX_PID=$!
  PIDS+=("$FX_PID")
}

# wait_for URL...: until every URL answers (any status), up to 10 s.
wait_for() {
  local _ url ok
  for _ in $(seq 1 100); do
    ok=1
    for url in "$@"; do curl -sk -o /dev/null "$url" || ok=0; done
    [ "$ok" = 1 ] && return 0
    sleep 0.1
  done
  echo "not ready: $*" >&2
  return 1
}
