#!/usr/bin/env bash
# Stops every process cluster-up.sh started (by pid), the containers of the local
# kubelet, and leaves nothing mounted. Safe to run when nothing is up.
source "$(dirname "$0")/lib.sh"
PID_DIR="$CLUSTER_DIR/pids"
CTR_SOCK="$CLUSTER_DIR/containerd/containerd.sock"
CTR2_SOCK="$CLUSTER_DIR/node2/containerd/containerd.sock"
BIN_DIR_PROXY="$BIN_DIR/kube-proxy"

stop() {  # stop NAME: TERM, wait up to 15 s, then KILL; the whole session goes
  local f="$PID_DIR/$1.pid" pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

[ "$(id -u)" = 0 ] || die "cluster-down needs root, as cluster-up did"
[ -d "$PID_DIR" ] || { say "no local cluster state in $CLUSTER_DIR"; exit 0; }
say "stopping the local cluster"
for c in nodesim kube-proxy kubelet; do stop "$c"; done

# Containers outlive the kubelet: kill them while containerd still answers.
kill_containers() {  # kill_containers SOCKET
  local sock="$1" t c
  [ -S "$sock" ] && ctr --address "$sock" version >/dev/null 2>&1 || return 0
  for t in $(ctr --address "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
    ctr --address "$sock" -n k8s.io tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true
  done
  sleep 1
  for t in $(ctr --address "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
    ctr --address "$sock" -n k8s.io tasks delete -f "$t" >/dev/null 2>&1 || true
  done
  for c in $(ctr --address "$sock" -n k8s.io containers ls -q 2>/dev/null); do
    ctr --address "$sock" -n k8s.io containers delete "$c" >/dev/null 2>&1 || true
  done
}
# The second real node (its mounts live in its own mount namespace and go with it).
stop kubelet2
kill_containers "$CTR2_SOCK"
stop containerd2
pkill -KILL -f "containerd-shim.*-address $CTR2_SOCK" 2>/dev/null || true
kill_containers "$CTR_SOCK"
stop containerd
# Shims of our containerd (they carry our socket address on their command line).
pkill -KILL -f "containerd-shim.*-address $CTR_SOCK" 2>/dev/null || true
for c in kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$c"; done

# kube-proxy's iptables rules, the bridge, and every mount under our state dir.
[ -x "$BIN_DIR_PROXY" ] && "$BIN_DIR_PROXY" --cleanup >/dev/null 2>&1 || true
findmnt -rn -o TARGET | grep -F "$CLUSTER_DIR/" | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
for ns in /run/netns/cni-*; do [ -e "$ns" ] && { umount -l "$ns" 2>/dev/null; rm -f "$ns"; }; done
ip link del podbatch0 2>/dev/null || true
rm -rf "$CLUSTER_DIR/containerd/state" "$CLUSTER_DIR/kubelet/root/pods" "$CLUSTER_DIR/cni/ipam" \
  "$CLUSTER_DIR/node2/containerd/state" "$CLUSTER_DIR/node2/kubelet/root/pods" "$CLUSTER_DIR/node2/log"
# node 2's cgroup root, once its pods are gone (deepest first; busy ones stay)
for d in /sys/fs/cgroup/*/podbatch-node2; do
  [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
done
left=$(pgrep -f "$CLUSTER_DIR|$BIN_DIR" || true)
[ -z "$left" ] || say "still running after cluster-down: $(ps -o pid=,comm= -p $left | tr '\n' ' ')"
say "local cluster stopped"
