#!/bin/sh
# `kubectl` in the replay's release scenario (replay/standins.py kubectl_double): the cluster is
# tests/support/deploy_doubles/kubectl.py, whose state file the scenario mounts into each exec at its host
# path, as the kubeconfig's `file://` server names it. The real kubectl reads kubeconfigs
# (`config …`: the module's `kubectl config view -o json`) and renders kustomizations for the double.
REAL=/opt/kubectl-real/kubectl
case "$1" in
  config) exec "$REAL" "$@" ;;
esac
KUBECTL_DOUBLE_REAL="$REAL" exec python /opt/mlship-double/kubectl.py "$@"
