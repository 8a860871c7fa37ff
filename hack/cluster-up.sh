#!/usr/bin/env bash
# Brings up a real one-machine Kubernetes cluster (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kube-proxy, containerd and a kubelet
# named `localhost`) plus podbatch's node simulator, all from Debian packages and
# binaries built by build-kubernetes.sh. Idempotent: a running cluster is left alone.
# A second real node, `127.0.0.2` (its own containerd and kubelet, in their own mount
# namespace so its /var/log/pods and /var/lib/podbatch are its own, under its own cgroup
# root), lets multi-instance tasks run on distinct real nodes; PODBATCH_REAL_NODES=1
# leaves it out.
# Every process it starts is recorded by pid in $CLUSTER_DIR/pids; cluster-down.sh
# stops them all.
source "$(dirname "$0")/lib.sh"
HACK="$(cd "$(dirname "$0")" && pwd)"
REPO="$(dirname "$HACK")"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
PID_DIR="$CLUSTER_DIR/pids"
CTR_SOCK="$CLUSTER_DIR/containerd/containerd.sock"
POD_CIDR=10.244.0.0/24
BRIDGE_IP=10.244.0.1
BRIDGE=podbatch0
SERVICE_CIDR=10.0.0.0/24
IMG_DIR="$PODBATCH_CACHE/images"
REAL_NODES="${PODBATCH_REAL_NODES:-2}"
NODE2=127.0.0.2                      # its name is its kubelet's address: the API server dials it
NODE2_IP=10.244.0.2                  # on the bridge, outside the pods' address range
NODE2_DIR="$CLUSTER_DIR/node2"
CTR2_SOCK="$NODE2_DIR/containerd/containerd.sock"
CGROUP2=podbatch-node2

alive() { [ -f "$PID_DIR/$1.pid" ] && kill -0 "$(cat "$PID_DIR/$1.pid")" 2>/dev/null; }
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy nodesim)
[ "$REAL_NODES" = 1 ] || COMPONENTS+=(containerd2 kubelet2)

require_root
all_alive=1
for c in "${COMPONENTS[@]}"; do alive "$c" || all_alive=0; done
if [ $all_alive = 1 ] && kubectl --kubeconfig "$KUBECONFIG_PATH" get --raw /readyz >/dev/null 2>&1; then
  say "local cluster already running; KUBECONFIG=$KUBECONFIG_PATH"
  echo "$KUBECONFIG_PATH"
  exit 0
fi
# Half-running is worse than down: restart from a clean state.
"$HACK/cluster-down.sh" >/dev/null 2>&1 || true

for port in 2379 2380 6443 10250 10257 10259 10249 10256; do
  port_free "$port" || die "port $port is in use by another program ($(ss -Hltnp "sport = :$port" | sed 's/.*users:((\("[^"]*"\).*/\1/' | head -1)); stop it or give KUBECONFIG of another cluster."
done

"$HACK/install-prereqs.sh"
"$HACK/build-kubernetes.sh"
mkdir -p "$PID_DIR" "$LOG_DIR" "$IMG_DIR"

# --- images, built once -------------------------------------------------------
build_images() {
  if [ ! -f "$IMG_DIR/pause.tar" ]; then
    say "building the pause image"
    local d; d=$(mktemp -d)
    gcc -Os -static -o "$d/pause" "$BIN_DIR/pause.c" || die "gcc -static of pause.c failed"
    mkdir -p "$d/root"; cp "$d/pause" "$d/root/pause"
    python3 "$HACK/oci_image.py" --rootfs "$d/root" --name k8s.gcr.io/pause:3.2 --entrypoint /pause --out "$IMG_DIR/pause.tar" >/dev/null
    rm -rf "$d"
  fi
  if [ ! -f "$IMG_DIR/busybox.tar" ]; then
    say "building the busybox task image"
    local d; d=$(mktemp -d)
    mkdir -p "$d/bin" "$d/etc" "$d/tmp" "$d/root" "$d/home" "$d/var/tmp"
    chmod 1777 "$d/tmp" "$d/var/tmp"
    cp /bin/busybox "$d/bin/busybox"
    for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$d/bin/$a"; done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/sh\nbatch:x:1000:1000:batch:/home:/bin/sh\n' >"$d/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\nbatch:x:1000:\n' >"$d/etc/group"
    python3 "$HACK/oci_image.py" --rootfs "$d" --name docker.io/library/busybox:latest --cmd /bin/sh --out "$IMG_DIR/busybox.tar" >/dev/null
    rm -rf "$d"
  fi
}
build_images

# --- credentials ----------------------------------------------------------------
PKI="$CLUSTER_DIR/pki"; mkdir -p "$PKI"
[ -f "$PKI/sa.key" ] || run_step sa-key openssl genrsa -out "$PKI/sa.key" 2048
[ -f "$PKI/sa.pub" ] || run_step sa-pub openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"
[ -f "$PKI/token" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$PKI/token"
TOKEN=$(cat "$PKI/token")
echo "$TOKEN,admin,admin,\"system:masters\"" >"$PKI/tokens.csv"
cat >"$KUBECONFIG_PATH" <<KC
apiVersion: v1
kind: Config
clusters:
- name: podbatch-local
  cluster:
    server: https://127.0.0.1:6443
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: $TOKEN
contexts:
- name: podbatch-local
  context: {cluster: podbatch-local, user: admin}
current-context: podbatch-local
KC
chmod 600 "$KUBECONFIG_PATH"

start() {  # start NAME CMD...: run in its own session, log and pid recorded
  local name="$1"; shift
  setsid "$@" >"$LOG_DIR/$name.log" 2>&1 < /dev/null &
  echo $! >"$PID_DIR/$name.pid"
}
wait_for() {  # wait_for WHAT SECONDS CMD...
  local what="$1" secs="$2"; shift 2
  for _ in $(seq "$secs"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  die "timed out waiting for $what; logs are in $LOG_DIR"
}
check_alive() { alive "$1" || die "$1 exited at start; its log is $LOG_DIR/$1.log: $(tail -n 5 "$LOG_DIR/$1.log")"; }

# --- pod network: our own bridge, so the API server can advertise an address pods reach
modprobe br_netfilter 2>/dev/null || true
sysctl -qw net.ipv4.ip_forward=1 || true
sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
ip addr show dev "$BRIDGE" | grep -F "$BRIDGE_IP/" >/dev/null || ip addr add "$BRIDGE_IP/24" dev "$BRIDGE"
ip addr show dev "$BRIDGE" | grep -F "$NODE2_IP/" >/dev/null || ip addr add "$NODE2_IP/32" dev "$BRIDGE"
ip link set "$BRIDGE" up
mkdir -p "$CLUSTER_DIR/cni/net.d"
cat >"$CLUSTER_DIR/cni/net.d/10-podbatch.conflist" <<CNI
{"cniVersion": "0.4.0", "name": "podbatch", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$BRIDGE_IP", "rangeStart": "10.244.0.16"}]],
            "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$CLUSTER_DIR/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "loopback"}]}
CNI

# --- etcd and the control plane -----------------------------------------------
say "starting etcd"
rm -rf "$CLUSTER_DIR/etcd"
start etcd etcd --name podbatch --data-dir "$CLUSTER_DIR/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster podbatch=http://127.0.0.1:2380 --quota-backend-bytes 8589934592 --logger zap
wait_for etcd 30 curl -fsS http://127.0.0.1:2379/health
check_alive etcd

say "starting kube-apiserver"
start kube-apiserver "$BIN_DIR/kube-apiserver" --etcd-servers http://127.0.0.1:2379 \
  --bind-address 0.0.0.0 --advertise-address "$BRIDGE_IP" --secure-port 6443 \
  --cert-dir "$PKI/apiserver" --token-auth-file "$PKI/tokens.csv" \
  --authorization-mode Node,RBAC --service-cluster-ip-range "$SERVICE_CIDR" --allow-privileged \
  --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$PKI/sa.pub" \
  --service-account-signing-key-file "$PKI/sa.key" --api-audiences https://kubernetes.default.svc \
  --max-requests-inflight 1000 --max-mutating-requests-inflight 500 \
  --kubelet-preferred-address-types Hostname,InternalIP --v 1
wait_for kube-apiserver 90 kubectl --kubeconfig "$KUBECONFIG_PATH" get --raw /readyz
K() { kubectl --kubeconfig "$KUBECONFIG_PATH" "$@"; }

say "starting kube-controller-manager and kube-scheduler"
start kube-controller-manager "$BIN_DIR/kube-controller-manager" --kubeconfig "$KUBECONFIG_PATH" \
  --service-account-private-key-file "$PKI/sa.key" --use-service-account-credentials \
  --root-ca-file "$PKI/apiserver/apiserver.crt" --node-monitor-grace-period 16s \
  --kube-api-qps 200 --kube-api-burst 400 \
  --secure-port 10257 --bind-address 127.0.0.1 --leader-elect=false --v 1
start kube-scheduler "$BIN_DIR/kube-scheduler" --kubeconfig "$KUBECONFIG_PATH" \
  --secure-port 10259 --bind-address 127.0.0.1 --leader-elect=false --kube-api-qps 200 --kube-api-burst 400 --v 1

# --- containerd and the kubelet ------------------------------------------------
say "starting containerd"
mkdir -p "$CLUSTER_DIR/containerd"
containerd config default 2>/dev/null | python3 "$HACK/containerd_config.py" "$CLUSTER_DIR" "$CTR_SOCK" >"$CLUSTER_DIR/containerd/config.toml" \
  || die "could not write the containerd config (see the message above)"
start containerd containerd --config "$CLUSTER_DIR/containerd/config.toml"
wait_for containerd 30 ctr --address "$CTR_SOCK" version
say "importing images"
run_step import-pause ctr --address "$CTR_SOCK" -n k8s.io images import --all-platforms "$IMG_DIR/pause.tar"
run_step import-busybox ctr --address "$CTR_SOCK" -n k8s.io images import --all-platforms "$IMG_DIR/busybox.tar"

say "starting the kubelet"
mkdir -p "$CLUSTER_DIR/kubelet"
kubelet_config() {  # kubelet_config ADDRESS [CGROUP_ROOT]
  cat <<KCFG
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $1
port: 10250
readOnlyPort: 0
healthzBindAddress: $1
${2:+cgroupRoot: /$2}
cgroupDriver: cgroupfs
failSwapOn: false
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
maxPods: 110
serializeImagePulls: false
resolvConf: /etc/resolv.conf
KCFG
}
kubelet_config 127.0.0.1 >"$CLUSTER_DIR/kubelet/config.yaml"
start kubelet "$BIN_DIR/kubelet" --config "$CLUSTER_DIR/kubelet/config.yaml" --kubeconfig "$KUBECONFIG_PATH" \
  --container-runtime remote --container-runtime-endpoint "unix://$CTR_SOCK" \
  --hostname-override localhost --node-ip "$BRIDGE_IP" --root-dir "$CLUSTER_DIR/kubelet/root" \
  --node-labels local.podbatch.io/real-node=true --pod-infra-container-image k8s.gcr.io/pause:3.2 --v 1

if [ "$REAL_NODES" != 1 ]; then
  # Two kubelets on one machine must not see each other's pods: each garbage-collects the
  # log directories under /var/log/pods and the pod cgroups under its cgroup root that
  # it does not know. So node 2 gets its own mount namespace (its own /var/log/pods,
  # /var/log/containers and /var/lib/podbatch, as a second machine would have), shared
  # by its containerd and kubelet, and its own cgroup root.
  say "starting the second real node ($NODE2)"
  mkdir -p "$NODE2_DIR/containerd" "$NODE2_DIR/log/pods" "$NODE2_DIR/log/containers" "$NODE2_DIR/podbatch" \
    /var/log/pods /var/log/containers /var/lib/podbatch
  for d in /sys/fs/cgroup/*/; do
    [ -d "$d$CGROUP2" ] || mkdir "$d$CGROUP2" 2>/dev/null || true
    [ -f "$d/cpuset.cpus" ] && cp "$d/cpuset.cpus" "$d$CGROUP2/cpuset.cpus" && cp "$d/cpuset.mems" "$d$CGROUP2/cpuset.mems"
  done
  containerd config default 2>/dev/null | python3 "$HACK/containerd_config.py" "$CLUSTER_DIR" "$CTR2_SOCK" "$NODE2_DIR/containerd" \
    >"$NODE2_DIR/containerd/config.toml" || die "could not write node 2's containerd config"
  start containerd2 unshare --mount --propagation private sh -c "mount --bind '$NODE2_DIR/log/pods' /var/log/pods \
    && mount --bind '$NODE2_DIR/log/containers' /var/log/containers \
    && mount --bind '$NODE2_DIR/podbatch' /var/lib/podbatch && exec containerd --config '$NODE2_DIR/containerd/config.toml'"
  wait_for containerd2 30 ctr --address "$CTR2_SOCK" version
  run_step import-pause-2 ctr --address "$CTR2_SOCK" -n k8s.io images import --all-platforms "$IMG_DIR/pause.tar"
  run_step import-busybox-2 ctr --address "$CTR2_SOCK" -n k8s.io images import --all-platforms "$IMG_DIR/busybox.tar"
  mkdir -p "$NODE2_DIR/kubelet"
  kubelet_config "$NODE2" "$CGROUP2" >"$NODE2_DIR/kubelet/config.yaml"
  start kubelet2 nsenter --target "$(cat "$PID_DIR/containerd2.pid")" --mount -- "$BIN_DIR/kubelet" \
    --config "$NODE2_DIR/kubelet/config.yaml" --kubeconfig "$KUBECONFIG_PATH" \
    --container-runtime remote --container-runtime-endpoint "unix://$CTR2_SOCK" \
    --hostname-override "$NODE2" --node-ip "$NODE2_IP" --root-dir "$NODE2_DIR/kubelet/root" \
    --node-labels local.podbatch.io/real-node=true --pod-infra-container-image k8s.gcr.io/pause:3.2 --v 1
fi

say "starting kube-proxy"
start kube-proxy "$BIN_DIR/kube-proxy" --kubeconfig "$KUBECONFIG_PATH" --hostname-override localhost \
  --cluster-cidr "$POD_CIDR" --proxy-mode iptables --conntrack-max-per-core 0 \
  --metrics-bind-address 127.0.0.1:10249 --healthz-bind-address 127.0.0.1:10256

if [ -x "$PYTHON" ]; then
  say "starting the node simulator"
  start nodesim "$PYTHON" "$HACK/nodesim.py" --kubeconfig "$KUBECONFIG_PATH"
else
  say "no $PYTHON yet: the node simulator is not started (make venv first)"
fi

say "waiting for node localhost to be Ready"
ready() { kubectl --kubeconfig "$KUBECONFIG_PATH" get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -qx True; }
wait_for "node localhost Ready" 120 ready localhost
[ "$REAL_NODES" = 1 ] || wait_for "node $NODE2 Ready" 120 ready "$NODE2"
wait_for "the default service account" 60 kubectl --kubeconfig "$KUBECONFIG_PATH" -n default get serviceaccount default
for c in "${COMPONENTS[@]}"; do [ "$c" = nodesim ] && [ ! -x "$PYTHON" ] && continue; check_alive "$c"; done
say "local cluster is up. export KUBECONFIG=$KUBECONFIG_PATH"
echo "$KUBECONFIG_PATH"
