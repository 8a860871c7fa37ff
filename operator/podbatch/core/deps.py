"""Task dependencies within a job: which ids a task waits for, and cycles. Pure."""
from __future__ import annotations

MAX_RANGE = 100_000


def wanted_ids(depends_on: dict | None) -> list[str]:
    """Every task id named by dependsOn.taskIds and dependsOn.taskIdRanges (integer ids)."""
    if not depends_on:
        return []
    out = list(depends_on.get("taskIds") or [])
    for r in depends_on.get("taskIdRanges") or []:
        start, end = int(r["start"]), int(r["end"])
        out.extend(str(i) for i in range(start, min(end, start + MAX_RANGE - 1) + 1))
    return out


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A dependency cycle as a list of ids (first == last), or None. Iterative DFS."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(graph, WHITE)
    for root in graph:
        if color[root] != WHITE:
            continue
        stack = [(root, iter(graph[root]))]
        path = [root]
        color[root] = GREY
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                color[node] = BLACK
                stack.pop()
                path.pop()
                continue
            if nxt not in graph:
                continue
            if color[nxt] == GREY:
                return path[path.index(nxt):] + [nxt]
            if color[nxt] == WHITE:
                color[nxt] = GREY
                stack.append((nxt, iter(graph[nxt])))
                path.append(nxt)
    return None
