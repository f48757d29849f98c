#!/usr/bin/env bash
# Static checks of docker/Dockerfile that need no Docker engine (run in CI by .ci/run):
#   - every base image is pinned: an exact version tag (1.95.0-bookworm) or a digest
#     (@sha256:…); with --release every base must carry a digest;
#   - the runtime is distroless, runs as a numeric non-root user, has no RUN (no shell);
#   - every COPY source exists in the repository and is allowed by the .dockerignore
#     allowlist; the binary the builder installs is the one the runtime copies and the
#     ENTRYPOINT runs, and `cargo build --bin NAME` names a binary of this crate;
#   - HEALTHCHECK runs `fortress health` (exec form) against the default admin address;
#   - the OCI labels are there and the license label matches Cargo.toml;
#   - the builder's Rust is at least Cargo.toml's rust-version.
# Usage: docker/build-check.sh [--release]
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 - "$@" <<'PY'
import os, re, sys, fnmatch

release = "--release" in sys.argv[1:]
errors, warnings = [], []
dockerfile = "docker/Dockerfile"
text = open(dockerfile).read()

# Join continuation lines, drop comments.
lines, cur = [], ""
for raw in text.splitlines():
    s = raw.strip()
    if not cur and (not s or s.startswith("#")):
        continue
    if s.endswith("\\"):
        cur += s[:-1] + " "
        continue
    cur += s
    lines.append(cur)
    cur = ""

stages = []  # (name, base, [instructions])
for l in lines:
    word, _, rest = l.partition(" ")
    word = word.upper()
    if word == "FROM":
        m = re.match(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$", rest.strip(), re.I)
        if not m:
            errors.append(f"cannot parse FROM {rest!r}")
            continue
        stages.append({"base": m.group(1), "name": m.group(2), "ins": []})
    elif stages:
        stages[-1]["ins"].append((word, rest.strip()))
if len(stages) < 2:
    errors.append("expected a multi-stage build (builder + runtime)")

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
EXACT = re.compile(r":(\d+\.\d+\.\d+)(-[a-z0-9.-]+)?(@sha256:[0-9a-f]{64})?$")
for st in stages:
    base = st["base"]
    if "${" in base or "$" in base:
        errors.append(f"FROM {base}: a variable base image cannot be checked; write it out")
    elif DIGEST.search(base):
        pass
    elif EXACT.search(base):
        if release:
            errors.append(f"FROM {base}: --release needs a digest (@sha256:…)")
    elif base.startswith("gcr.io/distroless/") and base.endswith(":nonroot"):
        msg = f"FROM {base}: distroless has no version tags; pin it by digest at release (crane digest {base})"
        (errors if release else warnings).append(msg)
    else:
        errors.append(f"FROM {base}: not pinned (an exact version tag like 1.95.0-bookworm, or @sha256:…)")
    if base.endswith(":latest") or (":" not in base.split("/")[-1] and "@" not in base):
        errors.append(f"FROM {base}: floating tag")

final = stages[-1] if stages else {"base": "", "ins": []}
if not final["base"].startswith("gcr.io/distroless/"):
    errors.append(f"runtime base {final['base']} is not distroless")
if any(w == "RUN" for w, _ in final["ins"]):
    errors.append("RUN in the runtime stage (distroless has no shell)")
users = [r for w, r in final["ins"] if w == "USER"]
if not users:
    errors.append("no USER in the runtime stage")
else:
    user = users[-1].split(":")[0]
    if not user.isdigit() or user == "0":
        errors.append(f"USER {users[-1]}: must be a numeric non-root uid (Kubernetes runAsNonRoot checks numbers)")

# .dockerignore allowlist.
ignore = [l.strip() for l in open(".dockerignore").read().splitlines() if l.strip() and not l.startswith("#")]
if not ignore or ignore[0] != "*":
    errors.append(".dockerignore must start with `*` (an allowlist)")
allowed = [p[1:].rstrip("/") for p in ignore if p.startswith("!")]
def is_allowed(path):
    path = path.rstrip("/")
    return any(path == a or path.startswith(a + "/") or fnmatch.fnmatch(path, a) for a in allowed)
for a in allowed:
    if not os.path.exists(a):
        errors.append(f".dockerignore allows {a}, which does not exist")

builder_runs = " ".join(r for st in stages[:-1] for w, r in st["ins"] if w == "RUN")
copied_bins = {}
for st in stages:
    for w, r in st["ins"]:
        if w not in ("COPY", "ADD"):
            continue
        if w == "ADD":
            errors.append(f"ADD {r}: use COPY (ADD fetches URLs and unpacks archives)")
        parts = [p for p in r.split() if not p.startswith("--chown") and not p.startswith("--chmod") and not p.startswith("--link")]
        from_stage = next((p.split("=", 1)[1] for p in parts if p.startswith("--from=")), None)
        parts = [p for p in parts if not p.startswith("--")]
        *srcs, dest = parts
        for src in srcs:
            if from_stage:
                if src not in builder_runs:
                    errors.append(f"COPY --from={from_stage} {src}: no RUN of the builder produces it")
                copied_bins[dest] = src
            else:
                if not os.path.exists(src):
                    errors.append(f"COPY {src}: does not exist in the repository")
                elif not is_allowed(src):
                    errors.append(f"COPY {src}: excluded by .dockerignore")

m = re.search(r"cargo build [^&]*--bin (\S+)", builder_runs)
cargo = open("Cargo.toml").read()
pkg = re.search(r'^name\s*=\s*"([^"]+)"', cargo, re.M).group(1)
if not m:
    errors.append("the builder does not run `cargo build --release --locked --bin NAME`")
else:
    if m.group(1) != pkg or not os.path.exists("src/main.rs"):
        errors.append(f"--bin {m.group(1)}: not this crate's binary ({pkg}, src/main.rs)")
    for flag in ("--release", "--locked"):
        if flag not in builder_runs:
            errors.append(f"cargo build without {flag}")

entry = [r for w, r in final["ins"] if w == "ENTRYPOINT"]
if not entry:
    errors.append("no ENTRYPOINT")
else:
    exe = re.match(r'\[\s*"([^"]+)"', entry[-1])
    if not exe:
        errors.append("ENTRYPOINT must be the exec form ([\"/usr/local/bin/fortress\"])")
    elif exe.group(1) not in copied_bins:
        errors.append(f"ENTRYPOINT {exe.group(1)} is not a file copied from the builder ({sorted(copied_bins)})")

hc = [r for w, r in final["ins"] if w == "HEALTHCHECK"]
default_admin = "127.0.0.1:9901"
if "SocketAddr::from(([127, 0, 0, 1], 9901))" not in open("src/config/compile.rs").read():
    errors.append("the default admin address in src/config/compile.rs is no longer 127.0.0.1:9901: update HEALTHCHECK and this check")
if not hc:
    errors.append("no HEALTHCHECK")
else:
    cmd = re.search(r"CMD\s+(\[.*\])\s*$", hc[-1])
    if not cmd:
        errors.append("HEALTHCHECK must use the exec form: CMD [\"/usr/local/bin/fortress\", \"health\", …]")
    else:
        import json
        argv = json.loads(cmd.group(1))
        if argv[:2] != [entry and re.match(r'\[\s*"([^"]+)"', entry[-1]).group(1), "health"]:
            errors.append(f"HEALTHCHECK {argv}: must run the image's fortress binary with `health`")
        if not any(a.startswith(f"http://{default_admin}/") for a in argv):
            errors.append(f"HEALTHCHECK {argv}: must GET http://{default_admin}/… (the default admin listener)")

labels = " ".join(r for w, r in final["ins"] if w == "LABEL")
for key in ("title", "description", "licenses", "version", "revision", "created", "base.name"):
    if f"org.opencontainers.image.{key}=" not in labels:
        errors.append(f"missing LABEL org.opencontainers.image.{key}")
lic = re.search(r'^license\s*=\s*"([^"]+)"', cargo, re.M)
if not lic:
    errors.append("Cargo.toml has no license")
elif f'org.opencontainers.image.licenses="{lic.group(1)}"' not in labels:
    errors.append(f"the licenses label does not say {lic.group(1)} (Cargo.toml)")
if not os.path.exists("LICENSE"):
    errors.append("no LICENSE file")

rv = re.search(r'^rust-version\s*=\s*"([^"]+)"', cargo, re.M)
rust = re.search(r"rust:(\d+)\.(\d+)\.(\d+)", stages[0]["base"] if stages else "")
if not rv:
    errors.append("Cargo.toml has no rust-version")
elif not rust:
    errors.append("the builder is not a rust:X.Y.Z image")
elif tuple(map(int, rust.groups()[:2])) < tuple(map(int, rv.group(1).split(".")[:2])):
    errors.append(f"the builder's Rust {'.'.join(rust.groups())} is older than rust-version {rv.group(1)}")

for w in warnings:
    print(f"build-check: warning: {w}")
for e in errors:
    print(f"build-check: error: {e}")
if errors:
    sys.exit(1)
print(f"build-check: ok ({len(stages)} stages, {len(warnings)} warning(s))")
PY
