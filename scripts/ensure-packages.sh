#!/usr/bin/env bash
# Installs the Debian packages the tests run as real peers (guide §4), only when they are
# missing, so CI and a developer's second run do nothing: BIND9 (`named`, and bind9-utils'
# `named-checkconf`/`named-checkzone` for checking a test's configuration by hand). Needs apt (Debian/Ubuntu); uses sudo only when
# not already root.
set -euo pipefail

missing=()
command -v named >/dev/null || [ -x /usr/sbin/named ] || missing+=(bind9)
command -v named-checkconf >/dev/null || [ -x /usr/bin/named-checkconf ] || missing+=(bind9-utils)
# openssl makes the discovery tests' weak certificates (RSA 1024, SHA-1), which no Rust crate here signs.
command -v openssl >/dev/null || missing+=(openssl)
# aiosmtpd is the real SMTP server the alert-channel tests deliver email to (e2e/src/smtp.rs):
# lettre's SMTP client is tested against a server, not a mock. Debian's python3 is asked (the
# harness runs /usr/bin/python3 too): a python3 earlier on PATH (pyenv, venv) does not see it.
/usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || missing+=(python3-aiosmtpd)

if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
command -v apt-get >/dev/null || { echo "need ${missing[*]}, but apt-get is not available; install them by hand" >&2; exit 1; }
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
echo "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# An install on a machine whose package lists were never fetched fails; update only then.
"${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}" \
	|| { "${sudo[@]}" apt-get update && "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"; }
