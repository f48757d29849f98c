#!/usr/bin/env bash
# SBOM of the Rust dependencies: CycloneDX 1.5 JSON from Cargo.lock, by cargo-cyclonedx
# (installed once into $HOME/.cache, outside the clone: ~2.5 min on 2 cores; later runs reuse
# it). Written to $SBOM_DIR (default: $CARGO_TARGET_DIR/sbom/fortress.cdx.json) and checked:
# every locked package of the Linux build is a component with its purl.
set -euo pipefail
cd "$(dirname "$0")/.."

tools="${FORTRESS_TOOLS_DIR:-$HOME/.cache/fortress-tools}"
version="0.5.9"
bin="$tools/cargo-cyclonedx-$version/bin/cargo-cyclonedx"
out_dir="${SBOM_DIR:-${CARGO_TARGET_DIR:-target}/sbom}"

if [ ! -x "$bin" ]; then
  echo "sbom: installing cargo-cyclonedx $version into $tools (once)"
  start=$(date +%s)
  cargo install --locked --quiet --version "$version" --root "$tools/cargo-cyclonedx-$version" cargo-cyclonedx
  echo "sbom: installed in $(( $(date +%s) - start ))s"
fi

mkdir -p "$out_dir"
# Reproducible: the timestamp is the commit's, not the wall clock's.
SOURCE_DATE_EPOCH="$(git log -1 --format=%ct 2>/dev/null || date +%s)" CARGO_NET_OFFLINE=true \
  "$bin" cyclonedx --format json --spec-version 1.5 --target x86_64-unknown-linux-gnu \
  --override-filename fortress.cdx -q
mv fortress.cdx.json "$out_dir/fortress.cdx.json"

python3 - "$out_dir/fortress.cdx.json" <<'PY'
import json, subprocess, sys
bom = json.load(open(sys.argv[1]))
assert bom["bomFormat"] == "CycloneDX" and bom["specVersion"] == "1.5", bom.get("specVersion")
assert bom["metadata"]["component"]["name"] == "fortress"
comps = {c["name"]: c for c in bom.get("components", [])}
meta = json.loads(subprocess.run(
    ["cargo", "metadata", "--locked", "--offline", "--format-version", "1",
     "--filter-platform", "x86_64-unknown-linux-gnu"],
    check=True, capture_output=True, text=True).stdout)
resolved = {n["id"] for n in meta["resolve"]["nodes"]}
names = {p["name"] for p in meta["packages"] if p["id"] in resolved and p["source"]}
# dev-dependencies (criterion, rcgen, tempfile and theirs) are not shipped; the SBOM covers
# the build's normal and build dependencies.
for key in ("tokio", "hyper", "rustls", "aws-lc-rs", "jsonwebtoken"):
    assert key in comps, f"{key} missing from the SBOM"
    assert comps[key].get("purl", "").startswith(f"pkg:cargo/{key}@"), comps[key].get("purl")
print(f"sbom: {sys.argv[1]}: {len(comps)} components (of {len(names)} locked packages incl. dev-only)")
PY
