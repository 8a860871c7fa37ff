#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler and kubelet from Debian
# bookworm's kubernetes source package, once; the binaries are cached under
# ~/.cache/podbatch/bin/kubernetes-<version>/ so later bring-ups skip all of this.
source "$(dirname "$0")/lib.sh"
WANT=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
have_all=1
for b in "${WANT[@]}"; do [ -x "$BIN_DIR/$b" ] || have_all=0; done
if [ $have_all = 1 ]; then say "kubernetes binaries cached in $BIN_DIR"; exit 0; fi

"$(dirname "$0")/install-prereqs.sh"
WORK="$PODBATCH_CACHE/build"
rm -rf "$WORK"; mkdir -p "$WORK/src"
cd "$WORK/src"
say "fetching the kubernetes source package (apt-get source kubernetes)"
run_step apt-source apt-get source --download-only kubernetes
run_step dpkg-source bash -c 'dpkg-source -x --skip-patches kubernetes_*.dsc kubernetes'
TREE="$WORK/src/kubernetes"
[ -d "$TREE/vendor" ] || die "the kubernetes source in $TREE has no vendor/ directory"

# Go >= 1.18 with the vendored reflect2 1.0.1 crashes the API server on custom resources.
say "swapping vendored reflect2 for Debian's 1.0.2"
rm -rf "$TREE/vendor/github.com/modern-go/reflect2"
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$TREE/vendor/github.com/modern-go/reflect2"
rm -f "$TREE/vendor/github.com/modern-go/reflect2/go.mod" "$TREE/vendor/github.com/modern-go/reflect2/go.sum"

export GOPATH="$WORK/gopath" CGO_ENABLED=0 GO111MODULE=off GOFLAGS=
mkdir -p "$GOPATH/src/k8s.io"
ln -sfn "$TREE" "$GOPATH/src/k8s.io/kubernetes"
cd "$GOPATH/src/k8s.io/kubernetes"
say "building ${WANT[*]} (about 5 minutes on 2 cores; log: $LOG_DIR/kube-build.log)"
run_step kube-build make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet cmd/kube-proxy"

mkdir -p "$BIN_DIR.tmp"
for b in "${WANT[@]}"; do cp "_output/local/bin/linux/amd64/$b" "$BIN_DIR.tmp/"; done
# The pause image's source travels with the binaries.
cp build/pause/linux/pause.c "$BIN_DIR.tmp/pause.c"
rm -rf "$BIN_DIR"; mv "$BIN_DIR.tmp" "$BIN_DIR"
cd /; rm -rf "$WORK"
say "kubernetes binaries cached in $BIN_DIR"
