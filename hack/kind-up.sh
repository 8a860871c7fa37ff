#!/usr/bin/env bash
# kind-up.sh: create (idempotently) a kind cluster named `podbatch` for people with Docker,
# write its kubeconfig to ~/.cache/podbatch/kind/kubeconfig and print that path.
# Then: KUBECONFIG=$(hack/kind-up.sh) make test     (hack/kind-down.sh deletes it)
set -euo pipefail
NAME="${PODBATCH_KIND_NAME:-podbatch}"
DIR="${PODBATCH_CACHE:-$HOME/.cache/podbatch}/kind"
KUBECONFIG_PATH="$DIR/kubeconfig"
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }

command -v docker >/dev/null || die "docker is not installed; kind runs Kubernetes in Docker containers (https://docs.docker.com/engine/install/). Without Docker, as root, use 'make cluster-up'."
docker info >/dev/null 2>&1 || die "docker is installed but the daemon does not answer 'docker info' (is it running, and may this user use it?)"
command -v kind >/dev/null || die "kind is not installed: 'go install sigs.k8s.io/kind@latest' or https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
mkdir -p "$DIR"

if kind get clusters 2>/dev/null | grep -qx "$NAME"; then
  say "kind cluster $NAME already exists"
else
  say "creating kind cluster $NAME (kind create cluster; a minute or two)"
  kind create cluster --name "$NAME" --wait 120s >&2 || die "kind create cluster --name $NAME failed (see above)"
fi
kind get kubeconfig --name "$NAME" >"$KUBECONFIG_PATH" || die "kind get kubeconfig --name $NAME failed"
chmod 600 "$KUBECONFIG_PATH"
say "kind cluster $NAME is up; KUBECONFIG=$KUBECONFIG_PATH"
echo "$KUBECONFIG_PATH"
