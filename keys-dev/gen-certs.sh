#!/usr/bin/env bash
# Regenerates the DEVELOPMENT-ONLY certificates in keys-dev/ (see README.md).
# Never use these files in production: their private keys are committed to git.
#
#   keys-dev/gen-certs.sh            # writes into the directory holding this script
#   keys-dev/gen-certs.sh OUT_DIR    # writes into OUT_DIR
#
# It leaves root.key and audit-signing.key untouched.
set -euo pipefail

OUT="${1:-$(cd "$(dirname "$0")" && pwd)}"
DAYS=3650
CLIENTS=(payment-service booking-service support-desk sec-admin-1 sec-admin-2 ir-analyst)
mkdir -p "$OUT"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; chmod 600 "$1"; }

# make_ca NAME SUBJECT
make_ca() {
  newkey "$OUT/$1.key"
  cat >"$WORK/$1.ext" <<EXT
basicConstraints=critical,CA:TRUE,pathlen:0
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash
EXT
  openssl req -new -key "$OUT/$1.key" -subj "$2" -out "$WORK/$1.csr"
  openssl x509 -req -in "$WORK/$1.csr" -signkey "$OUT/$1.key" -days "$DAYS" -sha256 \
    -extfile "$WORK/$1.ext" -out "$OUT/$1.pem" 2>/dev/null
}

# sign NAME CA SUBJECT EXTENSIONS(text)
sign() {
  newkey "$OUT/$1.key"
  printf '%s\n' "$4" >"$WORK/$1.ext"
  openssl req -new -key "$OUT/$1.key" -subj "$3" -out "$WORK/$1.csr"
  openssl x509 -req -in "$WORK/$1.csr" -CA "$OUT/$2.pem" -CAkey "$OUT/$2.key" -set_serial "0x$(openssl rand -hex 16)" \
    -days "$DAYS" -sha256 -extfile "$WORK/$1.ext" -out "$OUT/$1.pem" 2>/dev/null
}

CLIENT_EXT='basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth'

make_ca ca "/O=fieldvault development/CN=fieldvault dev CA (DEVELOPMENT ONLY)"
sign server ca "/O=fieldvault development/CN=localhost" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1"

for name in "${CLIENTS[@]}"; do
  sign "$name" ca "/O=fieldvault development/CN=$name" "$CLIENT_EXT
subjectAltName=URI:spiffe://ego/$name"
done

# A client certificate with no SAN at all: identity must come from the CN.
sign cn-only ca "/O=fieldvault development/CN=booking-service" "$CLIENT_EXT"

# An unrelated CA and a client signed by it: the vault must refuse the handshake.
make_ca other-ca "/O=somebody else/CN=unrelated CA (DEVELOPMENT ONLY)"
sign other-client other-ca "/O=somebody else/CN=payment-service" "$CLIENT_EXT
subjectAltName=URI:spiffe://ego/payment-service"
rm -f "$OUT/other-ca.key"   # nobody needs to sign more with it

chmod 644 "$OUT"/*.pem
echo "wrote development certificates to $OUT (valid $DAYS days; DEVELOPMENT ONLY)"
