#!/usr/bin/env bash
# Verify a lethe certificate with openssl and coreutils alone (no lethe needed).
# usage: verify-with-openssl.sh CERTIFICATE.jws signing-key.pub.pem
set -euo pipefail
jws=$(tr -d '\n' < "$1")
b64url_decode() {
  local s; s=$(printf '%s' "$1" | tr '_-' '/+')
  while [ $(( ${#s} % 4 )) -ne 0 ]; do s="$s="; done
  printf '%s' "$s" | base64 -d
}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
printf '%s' "${jws%.*}" > "$work/signing-input"
b64url_decode "${jws##*.}" > "$work/signature"
openssl pkeyutl -verify -pubin -inkey "$2" -rawin \
  -in "$work/signing-input" -sigfile "$work/signature"
payload=${jws#*.}; payload=${payload%.*}
b64url_decode "$payload" > "$work/payload.json"
echo "payload:"; cat "$work/payload.json"; echo
