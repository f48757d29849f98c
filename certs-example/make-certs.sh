#!/usr/bin/env bash
# Generate a throwaway CA and a localhost server certificate for testing fortress.
#
# Usage: ./make-certs.sh [OUTPUT_DIR]
#   OUTPUT_DIR defaults to the directory containing this script.
#
# Writes: ca.key ca.crt server.key server.crt server-chain.crt
# All keys are EC P-256 (PKCS#8 PEM). Existing files are overwritten.
#
# FOR LOCAL TESTING ONLY. Never use these certificates in production.
set -euo pipefail

if ! command -v openssl >/dev/null 2>&1; then
    echo "error: openssl CLI not found in PATH" >&2
    exit 1
fi

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out_dir="${1:-$script_dir}"
mkdir -p "$out_dir"
out_dir="$(cd "$out_dir" && pwd)"

work_dir="$(mktemp -d)"
trap 'rm -rf "$work_dir"' EXIT
umask 077

# Run an openssl command quietly; show its output only if it fails.
ossl() {
    if ! openssl "$@" >"$work_dir/openssl.log" 2>&1; then
        echo "error: openssl $1 failed:" >&2
        cat "$work_dir/openssl.log" >&2
        exit 1
    fi
}

# Self-contained configs so the system openssl.cnf does not matter.
cat >"$work_dir/ca.cnf" <<'CNF'
[req]
prompt             = no
distinguished_name = dn
x509_extensions    = v3_ca

[dn]
CN = Fortress Example CA

[v3_ca]
basicConstraints       = critical, CA:TRUE, pathlen:0
keyUsage               = critical, keyCertSign, cRLSign
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always
CNF

cat >"$work_dir/server.cnf" <<'CNF'
[req]
prompt             = no
distinguished_name = dn

[dn]
CN = localhost
CNF

cat >"$work_dir/server.ext" <<'CNF'
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = serverAuth
subjectAltName         = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid
CNF

# --- CA (10 years) ----------------------------------------------------------
ossl genpkey -algorithm EC \
    -pkeyopt ec_paramgen_curve:P-256 -pkeyopt ec_param_enc:named_curve \
    -out "$work_dir/ca.key"
ossl req -new -x509 -sha256 -days 3650 \
    -config "$work_dir/ca.cnf" \
    -key "$work_dir/ca.key" \
    -out "$work_dir/ca.crt"

# --- Server certificate (825 days) -------------------------------------------
ossl genpkey -algorithm EC \
    -pkeyopt ec_paramgen_curve:P-256 -pkeyopt ec_param_enc:named_curve \
    -out "$work_dir/server.key"
ossl req -new -sha256 \
    -config "$work_dir/server.cnf" \
    -key "$work_dir/server.key" \
    -out "$work_dir/server.csr"
ossl x509 -req -sha256 -days 825 \
    -in "$work_dir/server.csr" \
    -CA "$work_dir/ca.crt" -CAkey "$work_dir/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" \
    -extfile "$work_dir/server.ext" \
    -out "$work_dir/server.crt"

cat "$work_dir/server.crt" "$work_dir/ca.crt" >"$work_dir/server-chain.crt"

# Sanity check before touching the output directory.
ossl verify -CAfile "$work_dir/ca.crt" "$work_dir/server.crt"

# --- Install into the output directory (overwrites) --------------------------
for f in ca.key server.key; do
    install -m 600 "$work_dir/$f" "$out_dir/$f"
done
for f in ca.crt server.crt server-chain.crt; do
    install -m 644 "$work_dir/$f" "$out_dir/$f"
done

echo "Wrote (for local testing only):"
echo "  $out_dir/ca.key            CA private key (EC P-256)"
echo "  $out_dir/ca.crt            CA certificate, CN=Fortress Example CA, valid 10 years"
echo "  $out_dir/server.key        server private key (EC P-256)"
echo "  $out_dir/server.crt        server certificate for DNS:localhost, IP:127.0.0.1, valid 825 days"
echo "  $out_dir/server-chain.crt  server certificate followed by the CA certificate"
