#!/usr/bin/env bash
# Creates (or keeps) the CA key pair Secret "demo-ca" that examples/issuer-ca.yaml uses, in the
# namespace given as the first argument: a self-signed ECDSA P-256 CA made with openssl, stored as
# a kubernetes.io/tls Secret (tls.crt, tls.key). Idempotent: an existing Secret is left alone, so
# Certificates already issued from it stay valid. For local trials only — a real CA key belongs
# in your secret management, not in a script.
#
# Usage: scripts/demo-ca.sh <namespace> [secret-name]
# KUBECTL overrides the kubectl command (e.g. "target/devcluster/devcluster kubectl").
set -euo pipefail

namespace=${1:?usage: scripts/demo-ca.sh <namespace> [secret-name]}
name=${2:-demo-ca}
kubectl=${KUBECTL:-kubectl}

if $kubectl get secret -n "$namespace" "$name" >/dev/null 2>&1; then
	echo "secret/$name already exists in $namespace"
	exit 0
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
openssl ecparam -name prime256v1 -genkey -noout -out "$dir/ca.key" 2>/dev/null
openssl pkcs8 -topk8 -nocrypt -in "$dir/ca.key" -out "$dir/tls.key"
openssl req -x509 -new -key "$dir/tls.key" -sha256 -days 3650 -subj "/CN=pki-operator demo CA" \
	-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
	-out "$dir/tls.crt"
$kubectl create secret tls "$name" -n "$namespace" --cert "$dir/tls.crt" --key "$dir/tls.key"
