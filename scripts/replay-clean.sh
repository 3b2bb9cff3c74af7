#!/bin/sh
# Remove what the replay tier keeps between runs (its exec cache and stand-ins): images
# mlship-replay-state:*, mlship-replay-standin-*:*, cache volumes mlship-replay-cache-*,
# the exec sidecars in ~/.cache/mlship-replay, and any leftover mlship-replay-* container.
# Nothing else is touched. The next replay run starts cold (stand-ins rebuilt, execs re-run).
set -eu
docker ps -aq --filter name=mlship-replay- | xargs -r docker rm --force >/dev/null
docker images --format '{{.Repository}}:{{.Tag}}' | grep -E '^mlship-replay-(state|standin-[a-z]+):' \
  | xargs -r docker rmi --force >/dev/null
docker volume ls -q --filter name=mlship-replay-cache- | xargs -r docker volume rm --force >/dev/null
rm -rf "${MLSHIP_REPLAY_CACHE:-$HOME/.cache/mlship-replay}"
echo "replay cache removed"
