"""controllers/fastjson.py: kopf's watch stream and the engine's client decode with orjson,
and decode what the API server sends to the same objects as the standard library."""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.unit

orjson = pytest.importorskip("orjson")


POD_EVENT = json.dumps({"type": "MODIFIED", "object": {
    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "t-1", "namespace": "ns", "resourceVersion": "12345",
                                                    "labels": {"podbatch.io/role": "task"},
                                                    "annotations": {"podbatch.io/binding": "{\"boundAt\":\"2026-12-02T00:00:00Z\"}"}},
    "spec": {"nodeName": "n1", "containers": [{"name": "task", "command": ["/bin/sh", "-c", "echo \"é ✓\"\n"]}]},
    "status": {"phase": "Succeeded", "containerStatuses": [{"state": {"terminated": {"exitCode": 0}}}],
               "cpu": 1.5, "big": 2 ** 62, "none": None, "ok": True}}})


def test_kopf_watch_stream_decodes_with_orjson_to_the_same_objects():
    from kopf._cogs.clients import api
    from podbatch.controllers import fastjson
    assert fastjson.speed_up_kopf() is True
    assert api.json.loads is orjson.loads
    assert fastjson.speed_up_kopf() is True   # twice: still orjson, nothing wrapped twice
    line = POD_EVENT.encode()
    assert api.json.loads(line.decode("utf-8")) == json.loads(line)
    assert fastjson.loads(line) == json.loads(line)


def test_a_bad_line_still_raises_a_json_error():
    from podbatch.controllers import fastjson
    with pytest.raises(json.JSONDecodeError):   # orjson.JSONDecodeError is a subclass
        fastjson.loads(b'{"type": "ADDED", "object": ')
