"""A job's queued tasks in the order the scheduler takes them, kept as tasks come and go,
so a pass reads the first few without sorting (or even looking at) the rest.

A sorted list of (sort key, task) with lazy removal: a task that leaves (bound, deleted)
or whose key changes (its priority) leaves a dead entry behind, skipped when read; dead
entries at the front, where tasks leave, are dropped as reading passes them, and the list
is compacted once most of it is dead. Adding is a binary search (tasks come mostly in
creation order: at the end). Pure: no clock, no I/O."""
from __future__ import annotations

from bisect import insort
from collections.abc import Iterator

COMPACT_AT = 1024   # dead entries before a compaction is considered


def sort_key(priority: int, created: str, name: str) -> tuple:
    """Batch's order within a job: higher priority first, then older first (creation time,
    then name, so the order is total and the same after a restart)."""
    return (-priority, created or "", name)


class JobQueue:
    __slots__ = ("_key", "_sorted", "_head", "_dead", "_adds")

    def __init__(self) -> None:
        self._key: dict[str, tuple] = {}        # task -> its live entry of _sorted (dead ones are other tuples)
        self._sorted: list[tuple[tuple, int, str]] = []
        self._adds = 0
        self._head = 0                          # entries before it are all dead
        self._dead = 0

    def __len__(self) -> int:
        return len(self._key)

    def __contains__(self, task: str) -> bool:
        return task in self._key

    def add(self, task: str, key: tuple) -> None:
        old = self._key.get(task)
        if old is not None and old[0] == key:
            return
        if old is not None:
            self._dead += 1
        self._adds += 1   # an entry left dead by an earlier add of the same key never comes back to life
        entry = (key, self._adds, task)
        self._key[task] = entry
        if not self._sorted or self._sorted[-1] < entry:
            self._sorted.append(entry)
        else:
            insort(self._sorted, entry, lo=self._head)

    def discard(self, task: str) -> None:
        if self._key.pop(task, None) is not None:
            self._dead += 1
            if self._dead > COMPACT_AT and self._dead > len(self._key):
                self._compact()

    def __iter__(self) -> Iterator[str]:
        """The queued tasks in order. Reading moves the front past dead entries for good."""
        keys, entries = self._key, self._sorted
        i = self._head
        front = True
        while i < len(entries):
            entry = entries[i]
            task = entry[2]
            i += 1
            if keys.get(task) is not entry:
                if front:
                    self._head = i
                    self._dead -= 1
                continue
            front = False
            yield task
        if self._head > COMPACT_AT and self._head * 2 > len(entries):
            self._compact()

    def _compact(self) -> None:
        self._sorted = [e for e in self._sorted[self._head:] if self._key.get(e[2]) is e]
        self._head = 0
        self._dead = 0
