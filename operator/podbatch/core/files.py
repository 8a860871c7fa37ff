"""Resource files in, output files out (Batch's `resourceFiles` and `outputFiles`). Pure.

Resource files are fetched before the command starts by an init container
(`resource-files`, busybox, same user and node-directory mount as the task):

- `httpUrl`: `wget` into `filePath` (relative to the task's working directory);
- `storageContainerUrl` (+ `blobPrefix`): the operator lists the container with
  Microsoft's client (see `expand_resource_files`: it turns the listing into one
  `httpUrl` per blob, SAS kept) and each blob lands under `filePath/<blob name>`;
- `configMapKeyRef` / `secretKeyRef`: the key is mounted (an optional volume, so a
  missing object fails the download instead of hanging the pod) and copied.

`fileMode` is applied with chmod (Batch's Linux default 0770 without one). A failure
writes `url=<url>` and the downloader's error to the init container's termination
message; `download_failure` turns that into Batch's failureInfo (BlobNotFound for a
404, BlobAccessDenied for 401/403, BlobDownloadMiscError otherwise), which
`tasks.observe_attempt` reports as a preprocessing error.

Output files are uploaded after the command ends by a script the task wrapper runs with
the exit code (`PODBATCH_UPLOAD`), its output in fileuploadout.txt / fileuploaderr.txt.
Patterns are globs (`*`, `?`, `[..]`, `**` for any number of directories) relative to
the working directory (`../stdout.txt` is the task's stdout). Destinations: a blob
container (SAS URL) or any `httpUrl`, by HTTP PUT with `x-ms-blob-type: BlockBlob`
(curl when the task image has it, otherwise busybox `nc` for http:// URLs); a
PersistentVolumeClaim, mounted and copied to. The init container puts a static busybox
into the pod (`/podbatch-tools`) so uploads do not depend on the task image's tools.
A failed upload writes `UPLOAD_MARKER` + the error to the task container's termination
message (the exit code stays the command's).
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit, urlunsplit

RESOURCE_CONTAINER = "resource-files"
TOOLS_DIR = "/podbatch-tools"
RESOURCES_DIR = "/podbatch-resources"
OUTPUTS_DIR = "/podbatch-outputs"
UPLOAD_MARKER = "podbatch:FileUploadError:"
DEFAULT_MODE = "0770"
GLOB_CHARS = set("*?[")
TOOLS = ("nc", "find", "grep", "sed", "wc", "cp", "mkdir", "head", "tail", "cat", "rm", "sleep", "dirname")


class FileSpecError(ValueError):
    """A resource or output file entry that can never work (bad path, no source)."""


# ------------------------------------------------------------------ helpers

def redact(text: str) -> str:
    """Hide SAS signatures (and other `sig=`) in anything shown in status or events."""
    return re.sub(r"(?i)\bsig=[^&\s'\"]*", "sig=REDACTED", text or "")


def _safe_rel(path: str, what: str) -> str:
    p = (path or "").strip()
    parts = [x for x in p.split("/") if x not in ("", ".")]
    if p.startswith("/") or ".." in parts:
        raise FileSpecError(f"{what} {path!r} must stay inside the task's working directory (no absolute path, no '..')")
    return "/".join(parts)


def _mode(mode: str | None) -> str:
    m = (mode or DEFAULT_MODE).strip()
    if not re.fullmatch(r"0?[0-7]{3}", m):
        raise FileSpecError(f"fileMode {mode!r} is not an octal mode like 0755")
    return m if len(m) == 4 else "0" + m


def container_listing_wanted(resource_files: list[dict] | None) -> list[tuple[str, str]]:
    """(container URL with SAS, blobPrefix) of every `storageContainerUrl` entry, in order."""
    return [(rf["storageContainerUrl"], rf.get("blobPrefix") or "") for rf in resource_files or []
            if rf.get("storageContainerUrl")]


def blob_url(container_url: str, blob_name: str) -> str:
    """The URL of one blob of a container URL, its query (the SAS) kept."""
    s = urlsplit(container_url)
    return urlunsplit((s.scheme, s.netloc, s.path.rstrip("/") + "/" + quote(blob_name, safe="/~"), s.query, ""))


TASK_DIR_MARK = "_intoTaskDir"   # internal: set by into_task_dir, never part of the API


def expand_resource_files(resource_files: list[dict] | None, listings: dict[tuple[str, str], list[str] | str]) -> list[dict]:
    """Replace each `storageContainerUrl` entry by one `httpUrl` entry per listed blob
    (`listings[(url, prefix)]` = blob names, or a string: why listing failed), kept
    under `filePath/<blob name>`. A failure becomes an `error` entry, which makes the
    init container fail with that message (so every failure takes one path)."""
    out: list[dict] = []
    for rf in resource_files or []:
        url = rf.get("storageContainerUrl")
        if not url:
            out.append(rf)
            continue
        listed = listings.get((url, rf.get("blobPrefix") or ""), [])
        if isinstance(listed, str):   # the listing failed: this is why
            out.append({"error": listed, "url": url})
            continue
        try:
            base = _safe_rel(rf.get("filePath") or "", "filePath")
            for name in listed:
                if name.endswith("/"):
                    continue   # a "directory" marker blob
                rel = _safe_rel(name, "blob name")
                out.append({"httpUrl": blob_url(url, name), "filePath": f"{base}/{rel}" if base else rel,
                            **({"fileMode": rf["fileMode"]} if rf.get("fileMode") else {})})
        except FileSpecError as e:
            out.append({"error": str(e), "url": url})
    return out


# ------------------------------------------------------------------ resource files

RESOURCE_PRELUDE = r'''
wd="$AZ_BATCH_TASK_WORKING_DIR"; mkdir -p "$wd" && cd "$wd" || { echo "cannot create $wd" >"${PODBATCH_TERMINATION_LOG:-/dev/termination-log}"; exit 1; }
pb_fail() { printf 'url=%s\n%s' "$1" "$2" | head -c 3000 >"${PODBATCH_TERMINATION_LOG:-/dev/termination-log}"; printf 'resource file %s: %s\n' "$1" "$2" >&2; exit 1; }
pb_dir() { d=$(dirname "$2"); mkdir -p "$d" || pb_fail "$1" "cannot create directory $d"; }
# (no wget -T: Debian busybox 1.35 wget segfaults with it; maxWallClockTime bounds a hung download)
pb_get() { pb_dir "$1" "$2"; e=$(wget -q $4 -O "$2" "$1" 2>&1) || { rm -f "$2"; pb_fail "$1" "$e"; }; chmod "$3" "$2" || pb_fail "$1" "chmod $3 failed"; }
pb_copy() { pb_dir "$1" "$3"; [ -f "$2" ] || pb_fail "$1" "not found (does the object exist and have this key?)"; cp "$2" "$3" && chmod "$4" "$3" || pb_fail "$1" "cannot write $3"; }
'''.strip()


def resource_script(resource_files: list[dict]) -> str:
    """The init container's script for expanded resource files. Never raises: an entry
    that cannot work becomes a step that fails the download with the reason."""
    lines = [RESOURCE_PRELUDE]
    for i, rf in enumerate(resource_files):
        try:
            lines.append(_resource_step(i, rf))
        except FileSpecError as e:
            lines.append(f"pb_fail {shlex.quote(_source(rf))} {shlex.quote(str(e))}")
    return "\n".join(lines) + "\n"


def _source(rf: dict) -> str:
    for k in ("url", "httpUrl", "storageContainerUrl"):
        if rf.get(k):
            return rf[k]
    for k, kind in (("configMapKeyRef", "configmap"), ("secretKeyRef", "secret")):
        if rf.get(k):
            return f"{kind}:{rf[k].get('name')}/{rf[k].get('key')}"
    return "(no source)"


def _resource_step(i: int, rf: dict) -> str:
    if rf.get("error"):
        raise FileSpecError(rf["error"])
    if rf.get("storageContainerUrl"):
        raise FileSpecError("storageContainerUrl is not supported for this kind of task yet: "
                            "the operator did not list the container")
    mode = _mode(rf.get("fileMode"))
    path = _safe_rel(rf.get("filePath") or "", "filePath")
    # a multi-instance task's common resource files go to the task directory, above `wd`
    where = (lambda p: f'"$AZ_BATCH_TASK_DIR"/{shlex.quote(p)}') if rf.get(TASK_DIR_MARK) else shlex.quote
    if rf.get("httpUrl"):
        url = rf["httpUrl"]
        if not path:
            path = _safe_rel(urlsplit(url).path.rsplit("/", 1)[-1], "file name of httpUrl")
        if not path:
            raise FileSpecError("an httpUrl resource file needs a filePath")
        insecure = "--no-check-certificate" if url.lower().startswith("https:") else "''"
        return f"pb_get {shlex.quote(url)} {where(path)} {mode} {insecure}"
    if not (rf.get("configMapKeyRef") or rf.get("secretKeyRef")):
        raise FileSpecError("a resource file needs one of httpUrl, storageContainerUrl, configMapKeyRef, secretKeyRef")
    if not path:
        raise FileSpecError("a resource file from a ConfigMap or Secret needs a filePath")
    return f"pb_copy {shlex.quote(_source(rf))} {RESOURCES_DIR}/{i}/file {where(path)} {mode}"


def into_task_dir(resource_files: list[dict] | None) -> list[dict]:
    """Expanded resource files marked for the task directory instead of its working
    directory: Batch puts a multi-instance task's commonResourceFiles there."""
    return [{**rf, TASK_DIR_MARK: True} for rf in resource_files or []]


def _key_volumes(resource_files: list[dict]) -> tuple[list[dict], list[dict]]:
    vols, mounts = [], []
    for i, rf in enumerate(resource_files):
        for field_, src in (("configMapKeyRef", "configMap"), ("secretKeyRef", "secret")):
            ref = rf.get(field_)
            if not ref:
                continue
            name = f"podbatch-rf-{i}"
            body = {"items": [{"key": ref["key"], "path": "file"}], "optional": True, "defaultMode": 0o444}
            body.update({"name": ref["name"]} if src == "configMap" else {"secretName": ref["name"]})
            vols.append({"name": name, src: body})
            mounts.append({"name": name, "mountPath": f"{RESOURCES_DIR}/{i}", "readOnly": True})
    return vols, mounts


def download_failure(message: str, exit_code: int | None = None) -> dict:
    """failureInfo of a failed resource-file download, from the init container's
    termination message (`url=<url>` then the downloader's error)."""
    text = (message or "").strip()
    url = ""
    m = re.match(r"url=(\S*)\n?(.*)", text, re.S)
    if m:
        url, text = m.group(1), m.group(2).strip()
    status = re.search(r"HTTP(?:/\d(?:\.\d)?)? (\d{3})", text)
    code = "BlobDownloadMiscError"
    if status and status.group(1) == "404":
        code = "BlobNotFound"
    elif status and status.group(1) in ("401", "403"):
        code = "BlobAccessDenied"
    elif "timed out" in text.lower():
        code = "BlobDownloadTimedOut"
    detail = text.replace("wget: ", "").strip() or f"the download exited with code {exit_code}"
    msg = f"Resource file {url} could not be downloaded: {detail}" if url else f"Resource files could not be prepared: {detail}"
    info: dict = {"category": "usererror", "code": code, "message": redact(msg)[:1000]}
    details = [{"name": "ResourceFileUrl", "value": redact(url)}] if url else []
    if status:
        details.append({"name": "HttpStatusCode", "value": status.group(1)})
    if details:
        info["details"] = details
    return info


# ------------------------------------------------------------------ output files

def glob_regex(pattern: str) -> str:
    """An extended regular expression (grep -E and Python `re` alike) for a glob over
    paths relative to the pattern's base: `*`/`?` stay in a segment, `**` spans any."""
    segs = pattern.split("/")
    out = ""
    for i, seg in enumerate(segs):
        last = i == len(segs) - 1
        if seg == "**":
            out += ".*" if last else "(.*/)?"
            continue
        j = 0
        while j < len(seg):
            ch = seg[j]
            if ch == "*":
                out += "[^/]*"
            elif ch == "?":
                out += "[^/]"
            elif ch == "[":
                k = j + 1
                if seg[k:k + 1] in ("!", "^") and k < len(seg):
                    k += 1
                if seg[k:k + 1] == "]":
                    k += 1
                end = seg.find("]", k)
                if end < 0:
                    out += "\\["
                else:
                    body = seg[j + 1:end]
                    if body.startswith("!"):
                        body = "^" + body[1:]
                    out += "[" + body.replace("\\", "\\\\") + "]"
                    j = end
            else:
                out += re.sub(r"([.+()^$|{}\\\[\]])", r"\\\1", ch)
            j += 1
        if not last:
            out += "/"
    return "^" + out + "$"


def split_pattern(pattern: str) -> tuple[str, str | None]:
    """(base directory, glob below it) of a file pattern; glob None for a plain path."""
    p = pattern.strip()
    if not any(c in GLOB_CHARS for c in p):
        return p, None
    segs = p.split("/")
    k = next(i for i, s in enumerate(segs) if any(c in GLOB_CHARS for c in s))
    base = "/".join(segs[:k]) or ("/" if p.startswith("/") else ".")
    return base, "/".join(segs[k:])


def condition_test(condition: str | None) -> str:
    c = (condition or "taskCompletion")
    return {"taskSuccess": '[ "$rc" -eq 0 ]', "taskFailure": '[ "$rc" -ne 0 ]'}.get(c, "true")


UPLOAD_PRELUDE = r'''
rc="${1:-0}"; bad=0; t="${TMPDIR:-/tmp}/.podbatch-up-$$"
if [ -x /podbatch-tools/busybox ] && /podbatch-tools/busybox true 2>/dev/null; then PATH="/podbatch-tools:$PATH"; fi
cd "$AZ_BATCH_TASK_WORKING_DIR" 2>/dev/null || cd "$AZ_BATCH_TASK_DIR" || exit 1
pb_err() { echo "$*" >&2; echo "$*" >>"$t.err"; bad=1; }
pb_enc() { printf '%s' "$1" | sed -e 's/%/%25/g' -e 's/ /%20/g' -e 's/#/%23/g' -e 's/?/%3F/g' -e 's/+/%2B/g' -e 's/&/%26/g'; }
pb_put() {
  f="$1"; url="$2"; r="$t.resp"
  if command -v curl >/dev/null 2>&1; then
    code=$(curl -sS -o /dev/null -w '%{http_code}' -X PUT -H 'x-ms-blob-type: BlockBlob' --data-binary "@$f" "$url") || code=000
  else
    case "$url" in http://*) ;; *) pb_err "cannot upload $f to ${url%%\?*}: https uploads need curl in the task image"; return 1;; esac
    u="${url#http://}"; hp="${u%%/*}"; p="/${u#*/}"; [ "$u" = "$hp" ] && p=/
    h="${hp%:*}"; port="${hp##*:}"; [ "$port" = "$hp" ] && port=80
    n=$(wc -c <"$f"); rm -f "$r" "$r.x"
    { printf 'PUT %s HTTP/1.1\r\nHost: %s\r\nx-ms-blob-type: BlockBlob\r\nContent-Type: application/octet-stream\r\nContent-Length: %s\r\nConnection: close\r\n\r\n' "$p" "$hp" "$n"
      cat "$f"; i=0; while [ ! -s "$r" ] && [ ! -e "$r.x" ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done; } | { nc -w 30 "$h" "$port" >"$r"; : >"$r.x"; }
    set -- $(head -n 1 "$r" 2>/dev/null); code="${2:-000}"; rm -f "$r" "$r.x"
  fi
  case "$code" in 2??) echo "uploaded $f to ${url%%\?*}"; return 0;; esac
  pb_err "upload of $f to ${url%%\?*} failed: HTTP $code"; return 1
}
pb_cp() { mkdir -p "$(dirname "$2")" && cp "$1" "$2" && echo "copied $1 to $2" || pb_err "copy of $1 to $2 failed"; }
pb_list() { ( cd "$1" 2>/dev/null && find . -type f 2>/dev/null | sed 's|^\./||' | grep -E "$2" ) >"$t.list"; }
'''.strip()


@dataclass(slots=True)
class OutputPlan:
    script: str = ""
    volumes: list[dict] = field(default_factory=list)
    mounts: list[dict] = field(default_factory=list)


def _url_target(url: str, rel_shell: str | None, fixed: str) -> str:
    """Shell words for a PUT URL: `url` with `fixed` (a name, quoted here) added to its
    path and, for a glob match, the relative name (`rel_shell`, encoded at run time)."""
    s = urlsplit(url)
    path = s.path
    if fixed:
        path = path.rstrip("/") + "/" + quote(fixed, safe="/~")
    if rel_shell:
        path = path.rstrip("/") + "/"
    head = urlunsplit((s.scheme, s.netloc, path, "", ""))
    q = "?" + s.query if s.query else ""
    if not rel_shell:
        return shlex.quote(head + q)
    return shlex.quote(head) + f'"$(pb_enc "{rel_shell}")"' + (shlex.quote(q) if q else "")


def upload_plan(output_files: list[dict] | None) -> OutputPlan:
    """The upload script (run by the wrapper as `sh -c SCRIPT podbatch-upload RC`) and
    the PVC volumes/mounts it needs."""
    plan = OutputPlan()
    if not output_files:
        return plan
    lines = [UPLOAD_PRELUDE]
    claims: dict[str, str] = {}
    for n, of in enumerate(output_files):
        try:
            lines.extend(_upload_step(n, of, claims))
        except FileSpecError as e:
            lines.append(f"pb_err {shlex.quote(f'outputFiles[{n}]: {e}')}")
    lines.append(f'if [ $bad != 0 ]; then {{ printf "%s " {shlex.quote(UPLOAD_MARKER)}; head -c 2000 "$t.err"; }} >"${{PODBATCH_TERMINATION_LOG:-/dev/termination-log}}"; fi')
    lines.append('rm -f "$t.err"; exit $bad')
    plan.script = "\n".join(lines) + "\n"
    for claim, vol in claims.items():
        plan.volumes.append({"name": vol, "persistentVolumeClaim": {"claimName": claim}})
        plan.mounts.append({"name": vol, "mountPath": f"{OUTPUTS_DIR}/{claim}"})
    return plan


def _upload_step(n: int, of: dict, claims: dict[str, str]) -> list[str]:
    pattern = (of.get("filePattern") or "").strip()
    if not pattern:
        raise FileSpecError("an output file needs a filePattern")
    dest = of.get("destination") or {}
    cond = condition_test((of.get("uploadOptions") or {}).get("uploadCondition"))
    base, glob = split_pattern(pattern)
    lines = [f"# outputFiles[{n}]: {pattern}", f"if {cond}; then"]
    if glob is None:
        src = shlex.quote(base)
        name = base.rstrip("/").rsplit("/", 1)[-1]
        lines.append(f"  if [ ! -f {src} ]; then pb_err {shlex.quote(f'no file {pattern} to upload')}; else")
        lines.append("    " + _action(dest, src, None, name, claims))
        lines.append("  fi")
    else:
        src = shlex.quote(base.rstrip("/") + "/") + '"$f"'
        lines.append(f"  pb_list {shlex.quote(base)} {shlex.quote(glob_regex(glob))}")
        lines.append(f"  while IFS= read -r f; do {_action(dest, src, '$f', None, claims)}; done <\"$t.list\"")
        lines.append('  rm -f "$t.list"')
    lines.append("fi")
    return lines


def _action(dest: dict, src: str, rel_shell: str | None, name: str | None, claims: dict[str, str]) -> str:
    """One upload command: src (shell words) to the destination; a glob match's relative
    name is `rel_shell` ($f), a plain file's `name`."""
    if dest.get("persistentVolumeClaim"):
        pvc = dest["persistentVolumeClaim"]
        claim = pvc["claimName"]
        claims.setdefault(claim, f"podbatch-out-{len(claims)}")
        sub = (pvc.get("path") or "").strip("/")
        if sub and ".." in sub.split("/"):
            raise FileSpecError(f"persistentVolumeClaim path {pvc.get('path')!r} must not contain '..'")
        root = f"{OUTPUTS_DIR}/{claim}"
        if rel_shell:
            target = shlex.quote(f"{root}/{sub}/" if sub else f"{root}/") + f'"{rel_shell}"'
        else:
            target = shlex.quote(f"{root}/{sub}" if sub else f"{root}/{name}")
        return f"pb_cp {src} {target}"
    if dest.get("container"):
        c = dest["container"]
        path = (c.get("path") or "").strip("/")
        fixed = path if (rel_shell or path) else (name or "")
        return f"pb_put {src} {_url_target(c['containerUrl'], rel_shell, fixed)}"
    if dest.get("httpUrl"):
        return f"pb_put {src} {_url_target(dest['httpUrl'], rel_shell, '')}"
    raise FileSpecError("an output file destination needs one of container, persistentVolumeClaim, httpUrl")


def upload_failure(message: str) -> str:
    """The upload error of a task container's termination message ('' if none)."""
    m = (message or "")
    i = m.find(UPLOAD_MARKER)
    return redact(m[i + len(UPLOAD_MARKER):].strip())[:1000] if i >= 0 else ""


# ------------------------------------------------------------------ the pod

@dataclass(slots=True)
class PodFiles:
    init_containers: list[dict] = field(default_factory=list)
    volumes: list[dict] = field(default_factory=list)
    main_mounts: list[dict] = field(default_factory=list)
    main_env: list[dict] = field(default_factory=list)


def pod_files(spec: dict, *, resource_files: list[dict] | None, tools_image: str, security: dict,
              env: list[dict], node_mount: dict) -> PodFiles:
    """What a task pod needs for its resource and output files (nothing without any).
    `resource_files` are the expanded ones (`expand_resource_files`); None takes the
    spec's own, which must then hold no `storageContainerUrl`."""
    rfs = spec.get("resourceFiles") if resource_files is None else resource_files
    rfs = list(rfs or [])
    out = upload_plan(spec.get("outputFiles"))
    res = PodFiles()
    if not rfs and not out.script:
        return res
    script = resource_script(rfs) if rfs else "true\n"
    init_mounts = [node_mount]
    if out.script:
        tools = {"name": "podbatch-tools", "emptyDir": {}}
        res.volumes.append(tools)
        init_mounts.append({"name": "podbatch-tools", "mountPath": TOOLS_DIR})
        res.main_mounts.append({"name": "podbatch-tools", "mountPath": TOOLS_DIR, "readOnly": True})
        # a static busybox and its applets for the upload step, whatever the task image has
        links = " ".join(TOOLS)
        # (busybox's own sh answers `command -v busybox` with the bare applet name: look for a path)
        script = (f'for b in "$(command -v busybox)" /bin/busybox /usr/bin/busybox /sbin/busybox /usr/sbin/busybox; do '
                  f'case "$b" in /*) [ -x "$b" ] && break;; esac; b=; done; '
                  f'[ -n "$b" ] && cp "$b" {TOOLS_DIR}/busybox && '
                  f'for a in {links}; do ln -sf busybox {TOOLS_DIR}/$a; done\n') + script
        res.main_env.append({"name": "PODBATCH_UPLOAD", "value": out.script})
        res.volumes.extend(out.volumes)
        res.main_mounts.extend(out.mounts)
    vols, mounts = _key_volumes(rfs)
    res.volumes.extend(vols)
    res.init_containers.append({
        "name": RESOURCE_CONTAINER,
        "image": tools_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-c", script],
        "env": env,
        "volumeMounts": init_mounts + mounts,
        "securityContext": security,
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
    })
    return res
