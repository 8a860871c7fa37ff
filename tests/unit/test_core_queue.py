"""core/queue.py: a job's queue read in order, whatever came, changed and left."""
from __future__ import annotations

import random

import pytest

from podbatch.core.queue import JobQueue, sort_key

pytestmark = pytest.mark.unit


def test_order_is_priority_then_age_then_name():
    q = JobQueue()
    q.add("b", sort_key(0, "2026-01-01T00:00:01Z", "b"))
    q.add("a", sort_key(0, "2026-01-01T00:00:01Z", "a"))
    q.add("old", sort_key(0, "2026-01-01T00:00:00Z", "old"))
    q.add("urgent", sort_key(5, "2026-01-01T00:00:09Z", "urgent"))
    assert list(q) == ["urgent", "old", "a", "b"]
    q.add("b", sort_key(9, "2026-01-01T00:00:01Z", "b"))   # its priority was raised
    assert list(q) == ["b", "urgent", "old", "a"] and len(q) == 4


def test_random_changes_match_a_sort_from_scratch():
    rng = random.Random(3)
    q, truth = JobQueue(), {}
    for step in range(20000):
        name = f"t{rng.randrange(3000)}"
        r = rng.random()
        if r < 0.4:
            k = sort_key(rng.choice([0, 0, 0, 1, 5]), f"2026-01-01T00:{step // 600 % 60:02d}:00Z", name)
            q.add(name, k)
            truth[name] = k
        elif r < 0.9 and truth:
            front = next(iter(q))   # as the scheduler binds: from the front
            q.discard(front)
            truth.pop(front)
        else:
            q.discard(name)
            truth.pop(name, None)
        if step % 997 == 0:
            assert list(q) == [t for _, t in sorted((k, t) for t, k in truth.items())]
    assert list(q) == [t for _, t in sorted((k, t) for t, k in truth.items())]
    assert len(q._sorted) <= 2 * len(truth) + 2048   # dead entries do not pile up


def test_reading_the_first_few_does_not_read_the_rest():
    q = JobQueue()
    for i in range(100_000):
        q.add(f"t{i:06d}", sort_key(0, "2026-01-01T00:00:00Z", f"t{i:06d}"))
    for i in range(50_000):   # the front was bound
        q.discard(f"t{i:06d}")
    it = iter(q)
    assert [next(it) for _ in range(3)] == ["t050000", "t050001", "t050002"]
    assert q._head >= 50_000 or len(q._sorted) == 50_000
