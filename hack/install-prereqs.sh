#!/usr/bin/env bash
# Installs the Debian packages the local cluster is built and run from (LOCAL_CLUSTER.md).
# Idempotent: skips apt entirely when everything is already there.
source "$(dirname "$0")/lib.sh"
require_root
command -v apt-get >/dev/null || die "apt-get not found: the local cluster is built from Debian bookworm packages. Use a KUBECONFIG of another cluster instead."

PKGS=(golang-go etcd-server rsync containerd runc containernetworking-plugins busybox-static
      iptables golang-github-modern-go-reflect2-dev gcc make openssl dpkg-dev conntrack iproute2 procps)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep 'install ok installed' >/dev/null || missing+=("$p")
done

# apt-get source needs a deb-src entry for bookworm.
SRC_LIST=/etc/apt/sources.list.d/podbatch-bookworm-src.sources
need_src=0
if [ ! -f "$SRC_LIST" ] && ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ && ! grep -qs '^deb-src' /etc/apt/sources.list; then
  cat >"$SRC_LIST" <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  need_src=1
fi

if [ ${#missing[@]} -gt 0 ] || [ $need_src = 1 ] || [ "${FORCE_APT_UPDATE:-0}" = 1 ]; then
  say "apt-get update"
  run_step apt-update apt-get update
fi
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  run_step apt-install env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
# containerd's packaged service must not fight ours.
if command -v systemctl >/dev/null && systemctl is-active -q containerd 2>/dev/null; then
  systemctl stop containerd || true
fi
