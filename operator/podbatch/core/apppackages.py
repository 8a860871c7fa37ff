"""Batch application packages (`applicationPackageReferences`), unpacked on the node. Pure.

A package is one version of an application, kept in the namespace (a Batch account's
packages are the account's): by default the ConfigMap `podbatch-app-<id>.<version>`
(`podbatch-app-<id>` for the default version), each key a file of the package and a key
ending in `.zip` unzipped (Batch packages are zip files); or any ConfigMap named by
`configMapName`; or a directory of an image (`image` + `imagePath`).

The pod's setup container (core/podtemplates.py) unpacks ConfigMap packages from
optional ConfigMap volumes (a missing ConfigMap is a directory holding only the kubelet's
`..data` links, so the task fails with ApplicationPackageNotFound instead of its pod waiting); an image package is copied
by an init container `podbatch-app-<n>` running that image with podbatch's static
busybox, so the image needs no tools. Each goes to
`$AZ_BATCH_NODE_ROOT_DIR/applications/<id>_<version>` (`<id>` for the default version)
once per node: a lock directory makes concurrent pods wait for the first, and a
`.podbatch-unpacked` marker makes later pods skip it (as Batch installs a package once
per node). Reimaging a node wipes them. The variable is Batch's Linux name:
AZ_BATCH_APP_PACKAGE_<id>_<version>, or AZ_BATCH_APP_PACKAGE_<id> for the default
version, with `.`, `-` and `#` turned into `_` and the id's case kept.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from podbatch.core.podtemplates import APP_CONTAINER_PREFIX, RUN_BIN, RUN_DIR, RUN_VOLUME, SETUP_PRELUDE

SOURCES_DIR = "/podbatch-apps"
MARKER = ".podbatch-unpacked"

# $1 what (for messages), $2 source directory, $3 target directory
UNPACK = r'''
pb_pkg() {
  pb_has=; for n in $(ls -A "$2" 2>/dev/null); do case $n in ..*) ;; *) pb_has=1 ;; esac; done
  [ -n "$pb_has" ] || pb_fail ApplicationPackageNotFound "$1 was not found (or is empty)"
  mkdir -p "${3%/*}" 2>/dev/null
  while [ ! -e "$3/.podbatch-unpacked" ]; do
    if mkdir "$3.lock" 2>/dev/null; then
      rm -rf "$3"; mkdir -p "$3" || { rmdir "$3.lock"; pb_fail ApplicationPackageError "$1: cannot create $3"; }
      for n in $(ls -A "$2"); do
        case $n in ..*) continue ;; esac
        case $n in
          *.zip) unzip -o -q "$2/$n" -d "$3" >/dev/null 2>&1 || { rm -rf "$3"; rmdir "$3.lock"; pb_fail ApplicationPackageError "$1: $n is not a zip file that unzips"; } ;;
          *) cp -RL "$2/$n" "$3/" || { rm -rf "$3"; rmdir "$3.lock"; pb_fail ApplicationPackageError "$1: cannot copy $n"; } ;;
        esac
      done
      chmod -R a+rX "$3" 2>/dev/null; : >"$3/.podbatch-unpacked"; rmdir "$3.lock"
    elif [ -d "$3.lock" ]; then   # another pod unpacks it (a lock older than 10 min is a dead pod's)
      find "$3.lock" -maxdepth 0 -mmin +10 -exec rmdir {} \; 2>/dev/null; sleep 1
    else
      pb_fail ApplicationPackageError "$1: cannot write ${3%/*}"
    fi
  done
}
'''.strip()


@dataclass(frozen=True, slots=True)
class Package:
    app: str
    version: str | None
    config_map: str | None
    image: str | None
    image_path: str | None

    @property
    def dir_name(self) -> str:
        return f"{self.app}_{self.version}" if self.version else self.app

    @property
    def what(self) -> str:
        name = f"application package {self.app}" + (f" version {self.version}" if self.version else " (default version)")
        src = f"image {self.image} ({self.image_path})" if self.image else f"ConfigMap {self.config_map}"
        return f"{name}, {src},"


@dataclass(slots=True)
class PackagePlan:
    env: dict[str, str] = field(default_factory=dict)
    setup_lines: list[str] = field(default_factory=list)
    setup_mounts: list[dict] = field(default_factory=list)
    volumes: list[dict] = field(default_factory=list)
    init_containers: list[dict] = field(default_factory=list)

    @property
    def needs_run_dir(self) -> bool:
        return bool(self.init_containers)


def app_id(application_id: str) -> str:
    """The application's id: the last segment of a fully qualified Batch id."""
    return application_id.rstrip("/").rsplit("/", 1)[-1]


def env_name(app: str, version: str | None) -> str:
    """Batch's variable on Linux: AZ_BATCH_APP_PACKAGE_<id>[_<version>], `.`, `-`, `#` as `_`."""
    return re.sub(r"[.#-]", "_", f"AZ_BATCH_APP_PACKAGE_{app}" + (f"_{version}" if version else ""))


def _dns(text: str) -> str:
    return text.lower().replace("_", "-")


def default_config_map(app: str, version: str | None) -> str:
    return f"podbatch-app-{_dns(app)}" + (f".{_dns(version)}" if version else "")


def packages(*reference_lists: list[dict] | None) -> list[Package]:
    """The packages of the reference lists (pool's first), one per application and version:
    a later reference to the same one replaces the earlier."""
    out: dict[tuple[str, str | None], Package] = {}
    for refs in reference_lists:
        for r in refs or []:
            app, version = app_id(r["applicationId"]), r.get("version")
            out[(app, version)] = Package(app, version, None if r.get("image") else (r.get("configMapName") or default_config_map(app, version)),
                                          r.get("image"), r.get("imagePath"))
    return list(out.values())


def plan(pkgs: list[Package], *, node_root: str, node_mount: dict, security: dict, image_pull_policy: str) -> PackagePlan:
    """What the pod needs to unpack `pkgs` under <node_root>/applications (node_root is
    $AZ_BATCH_NODE_ROOT_DIR) and name them in the environment."""
    out = PackagePlan()
    if not pkgs:
        return out
    apps = f"{node_root.rstrip('/')}/applications"
    out.setup_lines.append(UNPACK)
    for i, p in enumerate(pkgs):
        target = f"{apps}/{p.dir_name}"
        out.env[env_name(p.app, p.version)] = target
        if p.image:
            script = "\n".join([f"export PATH={RUN_BIN}:$PATH", SETUP_PRELUDE, UNPACK,
                                f"pb_pkg {shlex.quote(p.what)} {shlex.quote(p.image_path or '/')} {shlex.quote(target)}"])
            out.init_containers.append({
                "name": f"{APP_CONTAINER_PREFIX}{i}",
                "image": p.image,
                "imagePullPolicy": image_pull_policy,
                "command": [f"{RUN_BIN}/sh", "-c", script + "\n"],
                "volumeMounts": [node_mount, {"name": RUN_VOLUME, "mountPath": RUN_DIR, "readOnly": True}],
                "securityContext": security,
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "FallbackToLogsOnError",
            })
            continue
        vol = f"podbatch-app-{i}"
        out.volumes.append({"name": vol, "configMap": {"name": p.config_map, "optional": True, "defaultMode": 0o755}})
        out.setup_mounts.append({"name": vol, "mountPath": f"{SOURCES_DIR}/{i}", "readOnly": True})
        out.setup_lines.append(f"pb_pkg {shlex.quote(p.what)} {SOURCES_DIR}/{i} {shlex.quote(target)}")
    return out
