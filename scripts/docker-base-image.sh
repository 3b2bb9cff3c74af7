#!/bin/sh
# Build mlship-base:bookworm (Debian bookworm + python3 + python3-venv) with debootstrap
# from the Debian mirror configured in apt, then `docker import`. Skips if it exists.
# Needs root (debootstrap, chroot). Takes ~2-3 min; the tag is the cache.
set -eu
TAG="${1:-mlship-base:bookworm}"
if docker image inspect "$TAG" >/dev/null 2>&1; then echo "$TAG exists"; exit 0; fi
MIRROR=$(grep -rhoE '(https?://[^ ]+/debian)/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | head -1 | tr -d ' ')
[ -n "$MIRROR" ] || MIRROR=$(grep -rhoE '^URIs: *https?://[^ ]+' /etc/apt/sources.list.d/ | head -1 | sed 's/^URIs: *//')
[ -n "$MIRROR" ] || { echo "no Debian mirror found in /etc/apt/sources.list*" >&2; exit 3; }
ROOT=$(mktemp -d)
trap 'rm -rf "$ROOT"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$ROOT" "$MIRROR"
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/*
# Trust the CAs this host added locally (a TLS-intercepting egress proxy, a corporate CA), so
# a build on this base reaches PyPI the way the host does. No-op where the host added none.
EXTRA_CA_DIR="${MLSHIP_EXTRA_CA_DIR:-/usr/local/share/ca-certificates}"
if ls "$EXTRA_CA_DIR"/*.crt >/dev/null 2>&1; then
  cp "$EXTRA_CA_DIR"/*.crt "$ROOT/usr/local/share/ca-certificates/"
  chroot "$ROOT" update-ca-certificates >/dev/null
fi
tar -C "$ROOT" -c . | docker import -c 'CMD ["python3"]' - "$TAG"
