#!/usr/bin/env bash
# build-image.sh: builds the operator image, podbatch/operator:<version of pyproject.toml>,
# without a container daemon, and loads it into the local cluster's containerd on both
# real nodes. What the Containerfile does with Docker or Podman, from Debian and PyPI only:
#   1. a minimal Debian root filesystem (mmdebstrap, variant essential, + python3);
#   2. the podbatch wheel and its dependencies, the `operator` extra included (wheels for
#      the image's Python, fetched on this machine) installed into it by pip running on the
#      image's own python3;
#   3. a non-root user (65532), no docs, locales, caches, compilers or setuid bits, nor
#      kubernetes.aio (the kubernetes package's own asyncio client, a third of the image:
#      the operator uses kubernetes_asyncio, kopf's login the synchronous client); the
#      .pyc files are compiled again as unchecked-hash: the image's files all get mtime 0,
#      which would make every timestamp-checked .pyc stale, and on a read-only root
#      filesystem every start would compile ~1,500 modules again (3 s instead of 1 s);
#   4. an OCI image tarball (hack/oci_image.py), imported with `ctr images import`.
# The tarball is cached in ~/.cache/podbatch/images, keyed by a hash of its inputs
# (pyproject.toml, operator/, this script, oci_image.py, the Debian suite): a second run
# only checks that each node holds the image. Prints the image name on stdout.
#
#   hack/build-image.sh [--no-import] [--rebuild]
source "$(dirname "$0")/lib.sh"
HACK="$(cd "$(dirname "$0")" && pwd)"
REPO="$(dirname "$HACK")"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
SUITE="${PODBATCH_IMAGE_SUITE:-bookworm}"
MIRROR="${PODBATCH_IMAGE_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${PODBATCH_IMAGE_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
IMG_DIR="$PODBATCH_CACHE/images"
UID_GID=65532
NODE_SOCKETS=("localhost=$CLUSTER_DIR/containerd/containerd.sock" "127.0.0.2=$CLUSTER_DIR/node2/containerd/containerd.sock")

import=1 rebuild=0
for arg in "$@"; do
  case "$arg" in
    --no-import) import=0 ;;
    --rebuild) rebuild=1 ;;
    *) die "unknown argument $arg (usage: hack/build-image.sh [--no-import] [--rebuild])" ;;
  esac
done
require_root   # mmdebstrap builds as root here, and ctr talks to root's containerd

VERSION=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$REPO/pyproject.toml" | head -1)
[ -n "$VERSION" ] || die "no version in $REPO/pyproject.toml"
NAME="docker.io/podbatch/operator:$VERSION"

# The inputs, hashed. egg-info and bytecode are made by installs, not inputs.
KEY=$( {
  echo "$SUITE $MIRROR $SECURITY_MIRROR $UID_GID"
  cd "$REPO" && find pyproject.toml operator hack/build-image.sh hack/oci_image.py -type f \
    ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
} | sha256sum | cut -c1-16)
TAR="$IMG_DIR/podbatch-operator-$VERSION-$KEY.tar"
mkdir -p "$IMG_DIR"
exec 9>"$IMG_DIR/.operator-build.lock"
flock 9   # two sessions building at once would both do the work and race on the files

build() {
  if ! command -v mmdebstrap >/dev/null; then
    say "installing mmdebstrap"
    run_step image-apt-update apt-get update
    run_step image-apt-install env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mmdebstrap
  fi
  local work root started=$SECONDS
  work=$(mktemp -d "$IMG_DIR/build.XXXXXX")
  WORK=$work; trap 'rm -rf "$WORK"' EXIT
  root="$work/rootfs"

  say "building the podbatch wheel"
  # From a copy: an in-tree build would leave build/ and egg-info in the checkout.
  mkdir -p "$work/src" "$work/wheels"
  cp -a "$REPO/pyproject.toml" "$REPO/README.md" "$work/src/"
  (cd "$REPO" && find operator -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' \
    -exec cp --parents {} "$work/src/" \;)
  run_step image-wheel "$PYTHON" -m pip wheel --no-deps --no-cache-dir -w "$work/wheels" "$work/src"
  local wheel; wheel=$(ls "$work"/wheels/podbatch-*.whl)

  say "making a Debian $SUITE root filesystem with python3 (mmdebstrap; log: $LOG_DIR/image-mmdebstrap.log)"
  # dpkg drops docs (but the copyright files), man pages, locales as it unpacks.
  # The merged-usr hook lays out /usr as bookworm does without the usrmerge package (and perl).
  run_step image-mmdebstrap mmdebstrap --mode=root --variant=essential --include=python3 \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
    "$SUITE" "$root" "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" \
    "deb $SECURITY_MIRROR $SUITE-security main" </dev/null

  # Wheels for the image's own interpreter and C library, fetched here (this machine's pip
  # configuration and certificates); pip inside the image then installs them offline.
  local pyver glibc platforms=()
  pyver=$(chroot "$root" python3 -c 'import sys; print("%d%d" % sys.version_info[:2])')
  glibc=$(chroot "$root" python3 -c 'import os; print(os.confstr("CS_GNU_LIBC_VERSION").split()[1].split(".")[1])')
  for m in $(seq "$glibc" -1 17); do platforms+=(--platform "manylinux_2_${m}_x86_64"); done
  say "fetching the wheels of podbatch's dependencies for cp$pyver, glibc 2.$glibc"
  run_step image-pip-download "$PYTHON" -m pip download --no-cache-dir --only-binary=:all: \
    --python-version "$pyver" --implementation cp --abi "cp$pyver" --abi abi3 --abi none \
    "${platforms[@]}" --platform manylinux2014_x86_64 -d "$work/wheels" "$wheel[operator]"
  run_step image-pip-download-pip "$PYTHON" -m pip download --no-cache-dir --no-deps --only-binary=:all: \
    -d "$work/pip" pip
  mkdir -p "$root/tmp/wheels" "$root/tmp/pip"
  cp "$work"/wheels/*.whl "$root/tmp/wheels/"
  cp "$work"/pip/pip-*.whl "$root/tmp/pip/pip.whl"
  say "installing podbatch into the image (pip on the image's python3)"
  run_step image-pip-install env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root PIP_CONFIG_FILE=/dev/null \
    chroot "$root" python3 /tmp/pip/pip.whl/pip install --no-index --find-links /tmp/wheels --no-cache-dir \
    --no-compile --disable-pip-version-check --root-user-action=ignore --break-system-packages \
    "/tmp/wheels/$(basename "$wheel")[operator]"
  chroot "$root" podbatch-operator --help >/dev/null || die "podbatch-operator does not start in the image"

  say "trimming the root filesystem"
  printf 'podbatch:x:%s:%s:podbatch operator:/home/podbatch:/usr/sbin/nologin\n' $UID_GID $UID_GID >>"$root/etc/passwd"
  printf 'podbatch:x:%s:\n' $UID_GID >>"$root/etc/group"
  install -d -m 0755 -o $UID_GID -g $UID_GID "$root/home/podbatch"
  rm -rf "$root"/tmp/* "$root"/dev/* "$root"/run/* "$root"/var/cache/* "$root"/var/log/* \
    "$root"/var/lib/apt "$root"/etc/apt "$root"/usr/share/info "$root"/usr/share/man \
    "$root"/usr/local/lib/python3*/dist-packages/kubernetes/aio \
    "$root"/etc/resolv.conf "$root"/etc/hostname "$root"/etc/machine-id
  find "$root" -xdev -type f -perm /6000 -exec chmod ug-s {} +
  find "$root" -xdev -depth -name __pycache__ -type d -exec rm -rf {} +
  run_step image-compileall chroot "$root" python3 -m compileall -q -j 1 --invalidation-mode unchecked-hash \
    /usr/lib/python3 "/usr/lib/python3.${pyver#3}" /usr/local/lib
  chroot "$root" python3 -c 'import podbatch.controllers.handlers, podbatch.cli.main, kubernetes.config' \
    || die "the operator's modules do not import in the image"

  say "writing the OCI image $NAME"
  local digest
  digest=$(python3 "$HACK/oci_image.py" --rootfs "$root" --name "$NAME" --out "$work/image.tar" --keep-owners \
    --entrypoint /usr/local/bin/podbatch-operator --user "$UID_GID:$UID_GID" --workdir /home/podbatch \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env HOME=/home/podbatch \
    --env LANG=C.UTF-8 --env PYTHONDONTWRITEBYTECODE=1 --env PYTHONUNBUFFERED=1 \
    --label org.opencontainers.image.title=podbatch-operator --label "org.opencontainers.image.version=$VERSION" \
    --label org.opencontainers.image.licenses=Apache-2.0 \
    --label "org.opencontainers.image.description=podbatch: Azure Batch semantics on Kubernetes (the operator)")
  du -sb "$root" | cut -f1 >"$work/unpacked"
  mv "$work/image.tar" "$TAR"
  echo "$digest" >"$TAR.digest"
  mv "$work/unpacked" "$TAR.unpacked"
  # Older builds of the image are of no use any more.
  find "$IMG_DIR" -maxdepth 1 -name 'podbatch-operator-*.tar*' ! -name "$(basename "$TAR")*" -delete
  ln -sfn "$(basename "$TAR")" "$IMG_DIR/podbatch-operator.tar"
  rm -rf "$work"; trap - EXIT
  say "built in $((SECONDS - started))s"
}

if [ $rebuild = 1 ] || [ ! -f "$TAR" ] || [ ! -f "$TAR.digest" ]; then
  build
else
  say "cached: $TAR"
fi
DIGEST=$(cat "$TAR.digest")
say "$NAME: $(( $(stat -c %s "$TAR") / 1000000 )) MB compressed, $(( $(cat "$TAR.unpacked" 2>/dev/null || echo 0) / 1000000 )) MB unpacked ($TAR)"

if [ $import = 1 ]; then
  for node_sock in "${NODE_SOCKETS[@]}"; do
    node=${node_sock%%=*} sock=${node_sock#*=}
    if [ ! -S "$sock" ] || ! ctr --address "$sock" version >/dev/null 2>&1; then
      say "node $node of the local cluster is not running: image not imported there"
      continue
    fi
    have=$(ctr --address "$sock" -n k8s.io images ls "name==$NAME" 2>/dev/null | awk 'NR > 1 {print $3}')
    if [ "$have" = "$DIGEST" ]; then
      say "node $node already has $NAME"
    else
      say "importing $NAME into node $node's containerd"
      run_step "image-import-$node" ctr --address "$sock" -n k8s.io images import --all-platforms "$TAR"
    fi
  done
fi
echo "$NAME"
