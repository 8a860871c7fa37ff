#!/usr/bin/env bash
# kind-down.sh: delete the kind cluster `podbatch` made by kind-up.sh, and its kubeconfig.
set -euo pipefail
NAME="${PODBATCH_KIND_NAME:-podbatch}"
DIR="${PODBATCH_CACHE:-$HOME/.cache/podbatch}/kind"
die() { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }
command -v kind >/dev/null || die "kind is not installed, so there is no kind cluster to delete"
command -v docker >/dev/null || die "docker is not installed, so there is no kind cluster to delete"
if kind get clusters 2>/dev/null | grep -qx "$NAME"; then
  kind delete cluster --name "$NAME" >&2
else
  printf '==> no kind cluster %s\n' "$NAME" >&2
fi
rm -f "$DIR/kubeconfig"
