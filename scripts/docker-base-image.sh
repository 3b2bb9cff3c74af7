#!/bin/sh
# Build mlship-base:bookworm (Debian bookworm + python3 + python3-venv) with debootstrap
# from the Debian mirror configured in apt, then `docker import`. Skips if it exists.
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
tar -C "$ROOT" -c . | docker import -c 'CMD ["python3"]' - "$TAG"
