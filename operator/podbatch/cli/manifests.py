"""Reading manifests from files and directories, and validating podbatch objects before
they are sent (a 1.20 API server prunes unknown fields silently; `validate_object` does not)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

from podbatch import GROUP
from podbatch.api import InvalidObject, validate_object

SUFFIXES = (".yaml", ".yml", ".json")


@dataclass
class Manifest:
    source: str          # "path" or "path#2" for the 3rd document of a file
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", ""))

    @property
    def name(self) -> str:
        return str((self.body.get("metadata") or {}).get("name", ""))

    @property
    def is_podbatch(self) -> bool:
        return str(self.body.get("apiVersion", "")).startswith(GROUP + "/")


class ManifestError(Exception):
    """A file that cannot be read or parsed."""


def files_of(paths: Iterable[str | Path], recursive: bool = True) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = p.rglob("*") if recursive else p.glob("*")
            out.extend(sorted(f for f in found if f.is_file() and f.suffix in SUFFIXES))
        elif p.is_file() or str(p) == "-":
            out.append(p)
        else:
            raise ManifestError(f"{p}: no such file or directory")
    return out


def parse(text: str, source: str) -> list[Manifest]:
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        raise ManifestError(f"{source}: not valid YAML: {e}") from None
    out = []
    for i, doc in enumerate(docs):
        if doc is None:
            continue
        src = source if len(docs) == 1 else f"{source}#{i}"
        if not isinstance(doc, dict):
            raise ManifestError(f"{src}: a manifest must be a mapping, not {type(doc).__name__}")
        if doc.get("kind", "").endswith("List") and isinstance(doc.get("items"), list):
            out.extend(Manifest(f"{src}.items[{j}]", item) for j, item in enumerate(doc["items"]))
        else:
            out.append(Manifest(src, doc))
    return out


def load(paths: Iterable[str | Path], recursive: bool = True) -> list[Manifest]:
    import sys
    out: list[Manifest] = []
    for f in files_of(paths, recursive):
        if str(f) == "-":
            out.extend(parse(sys.stdin.read(), "<stdin>"))
            continue
        try:
            text = f.read_text()
        except OSError as e:
            raise ManifestError(f"{f}: {e.strerror}") from None
        out.extend(parse(text, str(f)))
    return out


def validate(manifests: Iterable[Manifest]) -> list[tuple[str, str, str, str]]:
    """(source, kind, name, message) of every invalid podbatch object; others are left to the server."""
    problems = []
    for m in manifests:
        if not m.is_podbatch:
            if not m.body.get("apiVersion") or not m.kind:
                problems.append((m.source, m.kind, m.name, "apiVersion and kind are required"))
            continue
        if not m.name:
            problems.append((m.source, m.kind, m.name, "metadata.name: Field required"))
        try:
            validate_object(m.body)
        except InvalidObject as e:
            problems.append((m.source, m.kind, m.name, str(e)))
    return problems
