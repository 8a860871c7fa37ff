"""Node removals and a pool's target, without touching the spec a GitOps repo owns.

Batch lowers a pool's target when a node is removed, or the node would come right back.
Writing `spec.targetDedicatedNodes` would fight Argo CD / Flux (self-heal puts the old
target back, and the node returns). So a removal is recorded in the Pool's annotation
`podbatch.io/removed-nodes` as `<generation>:<d|l>:<requestId>,…`, and the *effective*
target is the spec's minus the removals recorded for the spec's current generation. When
the spec changes (a new generation: someone set the target again), it counts as given.
Pure; tested in tests/unit/test_removals.py."""
from __future__ import annotations

KEEP = 50   # request ids remembered (a removal is acted on once per request id)


def parse(value: str | None) -> tuple[int | None, list[tuple[str, str]]]:
    """(generation, [(kind 'd'|'l', request id), …]) from the annotation; (None, []) when unset or malformed."""
    if not value or ":" not in value:
        return None, []
    gen, _, rest = value.partition(":")
    try:
        generation = int(gen)
    except ValueError:
        return None, []
    items = []
    for entry in rest.split(","):
        kind, _, req = entry.partition(":")
        if kind in ("d", "l") and req:
            items.append((kind, req))
    return generation, items


def record(value: str | None, *, generation: int, dedicated: bool, request_id: str) -> str | None:
    """The annotation after one more removal; None when this request was already recorded."""
    gen, items = parse(value)
    if any(req == request_id for _, req in items):
        return None
    if gen != generation:
        items = []   # an older spec's removals no longer count: the target was set again since
    items.append(("d" if dedicated else "l", request_id))
    return f"{generation}:" + ",".join(f"{k}:{r}" for k, r in items[-KEEP:])


def effective_targets(*, dedicated: int, low_priority: int, annotation: str | None, generation: int | None) -> tuple[int, int]:
    """The targets the pool grows or shrinks to: the spec's, less this generation's removals."""
    gen, items = parse(annotation)
    if gen is None or gen != generation:
        return dedicated, low_priority
    d = sum(1 for k, _ in items if k == "d")
    lp = sum(1 for k, _ in items if k == "l")
    return max(0, dedicated - d), max(0, low_priority - lp)


def already_recorded(annotation: str | None, request_id: str) -> bool:
    return any(req == request_id for _, req in parse(annotation)[1])
