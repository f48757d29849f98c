#!/usr/bin/env bash
# The supply-chain gate: `cargo deny check` (advisories, licenses, bans, sources) fully
# offline, the RustSec database read from the snapshot in ../shared/advisory-db (CI cannot
# fetch it). cargo-deny opens its databases as git repositories named after their URL, so the
# snapshot is copied into one (committed with the snapshot's date, so the staleness limit in
# deny.toml applies to the snapshot's age, not to today). cargo-deny itself is installed once
# into $HOME/.cache (outside the clone) and reused by later runs.
set -euo pipefail
cd "$(dirname "$0")/.."

snapshot="${ADVISORY_DB_SNAPSHOT:-../shared/advisory-db}"
tools="${FORTRESS_TOOLS_DIR:-$HOME/.cache/fortress-tools}"
deny_version="0.20.2"
deny="$tools/cargo-deny-$deny_version/bin/cargo-deny"

if [ ! -d "$snapshot/crates" ]; then
  echo "deny: no advisory snapshot at $snapshot (expected its crates/ folder)" >&2
  exit 1
fi
if [ ! -x "$deny" ]; then
  echo "deny: installing cargo-deny $deny_version into $tools (once; ~3-4 min on 2 cores)"
  start=$(date +%s)
  cargo install --locked --quiet --version "$deny_version" --root "$tools/cargo-deny-$deny_version" cargo-deny
  echo "deny: installed in $(( $(date +%s) - start ))s"
fi

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
# The directory name cargo-deny derives from db-urls in deny.toml (its URL hash).
db="$root/advisory-db-3157b0e258782691"
mkdir -p "$db"
cp -R "$snapshot/." "$db/"
chmod -R u+w "$db"
# The snapshot's date, from its README ("as of its commit of YYYY-MM-DD"); today if absent.
date_line="$(grep -o 'commit of [0-9]\{4\}-[0-9]\{2\}-[0-9]\{2\}' "$snapshot/README.md" | head -1 | awk '{print $3}')"
stamp="${date_line:+${date_line}T00:00:00Z}"
(
  cd "$db"
  git init -q
  git add -A
  GIT_AUTHOR_DATE="${stamp:-now}" GIT_COMMITTER_DATE="${stamp:-now}" \
    git -c user.name=ci -c user.email=ci@localhost -c commit.gpgsign=false commit -q -m "RustSec snapshot ${date_line:-}"
)
# cargo-deny reads `cargo metadata` offline, which needs every locked crate in the local
# registry, also those only built for other platforms (Windows console crates, …): a fresh
# machine has only the ones its own builds downloaded. `cargo fetch` (crates.io) gets them.
cargo fetch --locked --quiet
echo "deny: advisory snapshot of ${date_line:-unknown date}, $(find "$db/crates" -name '*.md' | wc -l) advisories"
DENY_ADVISORY_DB_ROOT="$root" CARGO_NET_OFFLINE=true "$deny" deny --offline --locked ${DENY_LOG:+-L "$DENY_LOG"} check --show-stats --hide-inclusion-graph
