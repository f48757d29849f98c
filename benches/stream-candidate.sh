#!/usr/bin/env bash
# The bench's candidate policy plus NDJSON stream validation on /admin/big (the issue's `big`
# target is "with stream validation on"): runs ../shared/bench/fortress-candidate.sh with this
# script standing in for the binary, which adds a `stream:` route for /admin/big (same role,
# same rate limit) to the policy it writes, then runs the real fortress.
#
# Usage: ../shared/bench/run.sh --fortress "benches/stream-candidate.sh PATH/TO/fortress"
set -eu
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
case "${1:-}" in
  check | run)
    : "${STREAM_CANDIDATE_BIN:?}"
    if [ "$1" = check ]; then config=$2; else config=$3; fi
    if ! grep -q '^streams:' "$config"; then
      python3 - "$config" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
route = """  - name: admin-big
    match: { path: "/admin/big" }
    require: ["admin:*"]
    rate_limit: { key: subject, limit: 100000000, per: 10s }
    stream: bench
"""
text = text.replace("  - name: admin\n", route + "  - name: admin\n", 1)
text += """streams:
  bench:
    order: [thinking, data, end]
    repeatable: [data]
    required: [end]
    terminal: [end]
"""
open(path, "w").write(text)
PY
    fi
    exec "$STREAM_CANDIDATE_BIN" "$@"
    ;;
  *)
    export STREAM_CANDIDATE_BIN=${1:?usage: stream-candidate.sh PATH/TO/fortress}
    exec "$HERE/../../shared/bench/fortress-candidate.sh" "$HERE/stream-candidate.sh"
    ;;
esac
