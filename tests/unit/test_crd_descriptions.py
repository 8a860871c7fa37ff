"""Every field of every CRD says what it means, so `kubectl explain bpool.spec.<field>`
answers: a property without a description (a new field added without a docstring) fails
here, with the path of each one."""
from __future__ import annotations

from typing import Any, Iterator

import pytest

from podbatch.api import KINDS
from podbatch.api.crdgen import crd

pytestmark = pytest.mark.unit


def properties(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every named property under `schema` (through arrays and maps), with its path."""
    for name, sub in schema.get("properties", {}).items():
        yield f"{path}.{name}", sub
        yield from properties(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from properties(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from properties(schema["additionalProperties"], f"{path}[*]")


def undescribed(schema: dict[str, Any], path: str) -> list[str]:
    return [p for p, sub in properties(schema, path) if not str(sub.get("description", "")).strip()]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_spec_and_status_field_has_a_description(kind):
    schema = crd(KINDS[kind])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert schema.get("description", "").strip(), f"{kind} has no description"
    missing = []
    for part in ("spec", "status"):
        assert schema["properties"][part].get("description", "").strip(), f"{kind}.{part} has no description"
        missing += undescribed(schema["properties"][part], f"{kind}.{part}")
    assert not missing, f"{len(missing)} fields without a description:\n" + "\n".join(missing)


def test_the_walk_finds_a_field_without_a_description():
    schema = {"type": "object", "properties": {
        "a": {"type": "string", "description": "said"},
        "b": {"type": "array", "description": "said", "items": {"type": "object", "properties": {
            "c": {"type": "string"},
            "d": {"type": "object", "description": "said", "additionalProperties": {
                "type": "object", "properties": {"e": {"type": "string", "description": " "}}}},
        }}},
    }}
    assert undescribed(schema, "X.spec") == ["X.spec.b[].c", "X.spec.b[].d[*].e"]
