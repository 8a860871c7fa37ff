#!/usr/bin/env bash
# with-cluster.sh CMD...: run CMD against a cluster. With KUBECONFIG set, that one.
# Otherwise the local cluster: reused when already up (and left up), else brought up
# for CMD and taken down afterwards, whatever CMD's outcome.
set -uo pipefail
HACK="$(cd "$(dirname "$0")" && pwd)"
if [ -n "${KUBECONFIG:-}" ]; then exec "$@"; fi
source "$HACK/lib.sh"
if kubectl --kubeconfig "$KUBECONFIG_PATH" get --raw /readyz >/dev/null 2>&1; then
  echo "using the running local cluster (KUBECONFIG=$KUBECONFIG_PATH)" >&2
  KUBECONFIG="$KUBECONFIG_PATH" exec "$@"
fi
trap '"$HACK/cluster-down.sh"' EXIT
trap 'exit 130' INT TERM
"$HACK/cluster-up.sh" >/dev/null || exit 1
KUBECONFIG="$KUBECONFIG_PATH" "$@"
