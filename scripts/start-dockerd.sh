#!/bin/sh
# Start dockerd in the background if no daemon answers; wait until `docker info` works.
set -eu
LOG="${DOCKERD_LOG:-/tmp/dockerd.log}"
if docker info >/dev/null 2>&1; then exit 0; fi
command -v dockerd >/dev/null || { echo "dockerd not installed: apt-get install -y docker.io" >&2; exit 3; }
nohup dockerd >"$LOG" 2>&1 &
i=0
until docker info >/dev/null 2>&1; do
  i=$((i + 1)); [ "$i" -le 60 ] || { echo "dockerd did not start in 60 s; see $LOG" >&2; exit 3; }
  sleep 1
done
