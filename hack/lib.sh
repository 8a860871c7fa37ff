# Shared helpers for the local-cluster scripts. Sourced, never run.
# Every long step logs to its own file; on failure we say which step and where its log is.
set -euo pipefail

PODBATCH_CACHE="${PODBATCH_CACHE:-$HOME/.cache/podbatch}"
CLUSTER_DIR="${PODBATCH_CLUSTER_DIR:-$PODBATCH_CACHE/cluster}"
LOG_DIR="$CLUSTER_DIR/logs"
KUBECONFIG_PATH="$CLUSTER_DIR/kubeconfig"
K8S_SRC_VERSION="1.20.5+really1.20.2"
BIN_DIR="$PODBATCH_CACHE/bin/kubernetes-$K8S_SRC_VERSION"
mkdir -p "$LOG_DIR"

say()  { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die()  { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# run_step NAME CMD...: run CMD with output in $LOG_DIR/NAME.log; on failure name the step and log.
run_step() {
  local name="$1"; shift
  local log="$LOG_DIR/$name.log"
  if ! "$@" >"$log" 2>&1; then
    printf '\033[31merror:\033[0m step "%s" failed; its log is %s. Last lines:\n' "$name" "$log" >&2
    tail -n 20 "$log" >&2
    exit 1
  fi
}

require_root() {
  [ "$(id -u)" = 0 ] || die "the local cluster needs root (it runs containerd and a kubelet). Run as root, or give a KUBECONFIG of another cluster (e.g. 'make kind-up' where Docker works)."
}

port_free() { [ -z "$(ss -Hltn "sport = :$1")" ]; }
