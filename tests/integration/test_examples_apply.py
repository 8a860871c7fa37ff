"""Every manifest under examples/ is accepted by a real API server as it is
(server-side validation through a dry-run create, so nothing runs)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from podbatch import GROUP, VERSION
from podbatch.api import KINDS, validate_object

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FILES = sorted(EXAMPLES.rglob("*.yaml"))


def contains(actual, expected) -> bool:
    """Whether `actual` holds everything of `expected` (the server may add defaults, nothing else)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and contains(actual[k], v) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(actual) == len(expected) and all(map(contains, actual, expected))
    return actual == expected


@pytest.fixture(scope="module")
def crds(api_client):
    from kit import install_crds
    install_crds(api_client)


def test_examples_exist():
    assert len(FILES) >= 5


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_is_accepted(api_client, custom_api, namespace, crds, path):
    from kubernetes import utils
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        if doc["apiVersion"].startswith(GROUP + "/"):
            info = KINDS[doc["kind"]]
            created = (custom_api.create_namespaced_custom_object(GROUP, VERSION, namespace, info.plural, doc, dry_run="All")
                       if info.namespaced else
                       custom_api.create_cluster_custom_object(GROUP, VERSION, info.plural, doc, dry_run="All"))
            # The server's defaults are ones the model knows and agrees with.
            model = validate_object(created)
            assert model.spec.to_dict() == created["spec"]
            assert contains(created["spec"], doc["spec"]), f"{path}: the server changed or pruned part of the spec"
        else:
            utils.create_from_dict(api_client, doc, namespace=namespace, dry_run="All")
