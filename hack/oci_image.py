#!/usr/bin/env python3
"""Builds OCI image tarballs from a folder, with no registry and no Docker.

An OCI image archive is a tar of `oci-layout`, `index.json` and `blobs/sha256/...`
(one layer tar, a config JSON, a manifest JSON); `ctr images import` loads it.
The local cluster uses this for its pause image and the small busybox task image, and
hack/build-image.sh for the operator's image (a Debian root filesystem).

    oci_image.py --rootfs DIR --name docker.io/library/busybox:latest \
        --entrypoint /bin/sh --out busybox.tar

Every file's mtime is 0 and entries are sorted, so the same folder gives the same layer
digest. Files are owned by root unless --keep-owners (a root filesystem made by a
package manager owns some files by other users and groups). The layer is streamed
through temporary files next to --out, so a large root filesystem is not held in memory.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time

CHUNK = 1 << 20
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class _Hashing(io.RawIOBase):
    """A write-only file that hashes and counts what goes through it."""

    def __init__(self, out) -> None:
        self.out, self.sha, self.size = out, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.out.write(data)
        self.sha.update(data)
        self.size += len(data)
        return len(data)


def _write_layer(rootfs: str, out, *, keep_owners: bool) -> None:
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(rootfs):
            dirnames.sort()
            for name in dirnames + sorted(filenames):
                full = os.path.join(dirpath, name)
                info = tar.gettarinfo(full, arcname=os.path.relpath(full, rootfs))
                if info is None:   # a socket: nothing an image can hold
                    continue
                if not keep_owners:
                    info.uid = info.gid = 0
                info.uname = info.gname = "root" if not keep_owners else ""
                info.mtime = 0
                if info.isfile():
                    with open(full, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)


def build(rootfs: str, name: str, out: str, entrypoint: list[str], cmd: list[str], env: list[str], *,
          user: str = "", workdir: str = "/", labels: dict[str, str] | None = None,
          keep_owners: bool = False) -> str:
    """Write the image archive `out`; return the manifest digest (what `ctr images ls` shows)."""
    workspace = tempfile.mkdtemp(prefix=".oci-", dir=os.path.dirname(os.path.abspath(out)))
    try:
        layer_path = os.path.join(workspace, "layer.tar.gz")
        with open(layer_path, "wb") as raw:
            compressed = _Hashing(raw)
            with gzip.GzipFile(fileobj=compressed, mode="wb", compresslevel=6, mtime=0) as gz:
                uncompressed = _Hashing(gz)
                with io.BufferedWriter(uncompressed, CHUNK) as buffered:
                    _write_layer(rootfs, buffered, keep_owners=keep_owners)
        diff_id = "sha256:" + uncompressed.sha.hexdigest()
        layer_digest, layer_size = "sha256:" + compressed.sha.hexdigest(), compressed.size

        blobs: dict[str, bytes] = {}

        def add(data: bytes) -> tuple[str, int]:
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            blobs[digest] = data
            return digest, len(data)

        image_config: dict = {"Entrypoint": entrypoint or None, "Cmd": cmd or None,
                              "Env": env or [DEFAULT_PATH], "WorkingDir": workdir}
        if user:
            image_config["User"] = user
        if labels:
            image_config["Labels"] = dict(sorted(labels.items()))
        config = {
            "architecture": "amd64", "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": image_config,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "podbatch hack/oci_image.py"}],
        }
        config_digest, config_size = add(json.dumps(config, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                       "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest,
                        "size": layer_size}],
        }
        manifest_digest, manifest_size = add(json.dumps(manifest, sort_keys=True).encode())
        index = {
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
                           "size": manifest_size,
                           "annotations": {"io.containerd.image.name": name,
                                           "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]}}],
        }
        tmp = os.path.join(workspace, "image.tar")
        with tarfile.open(tmp, "w") as tar:
            def put(path: str, data: bytes) -> None:
                info = tarfile.TarInfo(path)
                info.size = len(data)
                info.mtime = int(time.time())
                tar.addfile(info, io.BytesIO(data))
            put("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
            put("index.json", json.dumps(index).encode())
            for digest, data in blobs.items():
                put("blobs/sha256/" + digest.split(":", 1)[1], data)
            info = tar.gettarinfo(layer_path, arcname="blobs/sha256/" + layer_digest.split(":", 1)[1])
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with open(layer_path, "rb") as f:
                tar.addfile(info, f)
        os.replace(tmp, out)
        return manifest_digest
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rootfs", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--entrypoint", action="append", default=[])
    p.add_argument("--cmd", action="append", default=[])
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE; the default is PATH alone")
    p.add_argument("--user", default="", help="UID[:GID] the image runs as")
    p.add_argument("--workdir", default="/")
    p.add_argument("--label", action="append", default=[], help="KEY=VALUE")
    p.add_argument("--keep-owners", action="store_true", help="keep the files' uid/gid instead of root")
    a = p.parse_args()
    labels = dict(item.split("=", 1) for item in a.label)
    print(build(a.rootfs, a.name, a.out, a.entrypoint, a.cmd, a.env, user=a.user, workdir=a.workdir,
                labels=labels, keep_owners=a.keep_owners))


if __name__ == "__main__":
    main()
