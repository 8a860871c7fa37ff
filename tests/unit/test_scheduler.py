"""Table tests of the pure scheduler: a snapshot in, the plan a user would check out."""
from __future__ import annotations

import random

import pytest

from podbatch.core.scheduler import (
    ALL_SLOTS_BUSY, HIGHER_PRIORITY_JOB_AHEAD, JOB_DISABLED, JOB_NOT_FOUND,
    JOB_PREPARATION_FAILED, MAX_PARALLEL_TASKS_REACHED, NO_NODE_READY, NOT_ENOUGH_NODES,
    POOL_NOT_FOUND, REQUIRED_SLOTS_EXCEED_NODE, WAITING_FOR_GANG_NODES, WAITING_FOR_PREEMPTION,
    JobView, NodeView, Plan, PoolView, Snapshot, TaskView, plan,
)

POOL = "ns/pool"


def nodes(*used: int, slots: int = 4, pool: str = POOL, running=None) -> list[NodeView]:
    """Nodes n0, n1, ... with the given slots in use (order = index)."""
    running = running or {}
    return [NodeView(name=f"n{i}", pool=pool, slots_total=slots, slots_used=u, schedulable=True,
                     order=i, running_job_priorities=tuple(running.get(i, ())))
            for i, u in enumerate(used)]


def job(key: str, priority: int = 0, **kw) -> JobView:
    return JobView(key=key, pool=kw.pop("pool", POOL), priority=priority, **kw)


def tasks(job_key: str, count: int, *, start_seq: int = 0, **kw) -> list[TaskView]:
    return [TaskView(key=f"{job_key}-{i}", job=job_key, seq=start_seq + i, **kw) for i in range(count)]


def snap(node_list, job_list, task_list, fill: str = "spread", pools=None) -> Snapshot:
    return Snapshot(pools=pools if pools is not None else {POOL: PoolView(POOL, fill)},
                    nodes=node_list, jobs={j.key: j for j in job_list}, tasks=task_list)


def bound(p: Plan) -> dict[str, tuple[str, ...]]:
    return {b.task: b.nodes for b in p.bindings}


def reasons(p: Plan) -> dict[str, str]:
    return {k: v.reason for k, v in p.pending.items()}


# -- rule 1: priorities and fair share ---------------------------------------------

def test_higher_priority_job_takes_the_only_free_slot():
    p = plan(snap(nodes(3), [job("low", 10), job("high", 500)],
                  tasks("low", 3) + tasks("high", 3, start_seq=10)))
    assert [b.task for b in p.bindings] == ["high-0"]
    assert reasons(p) == {"high-1": ALL_SLOTS_BUSY, "high-2": ALL_SLOTS_BUSY,
                          "low-0": HIGHER_PRIORITY_JOB_AHEAD, "low-1": HIGHER_PRIORITY_JOB_AHEAD,
                          "low-2": HIGHER_PRIORITY_JOB_AHEAD}


def test_equal_priorities_interleave_instead_of_first_come_takes_all():
    p = plan(snap(nodes(0, 0), [job("a"), job("b"), job("c")],
                  tasks("a", 10) + tasks("b", 10, start_seq=10) + tasks("c", 10, start_seq=20)))
    order = [b.task for b in p.bindings]
    assert order == ["a-0", "b-0", "c-0", "a-1", "b-1", "c-1", "a-2", "b-2"]


def test_fair_share_carries_across_passes_by_running_tasks():
    # One slot frees at a time: the job with fewer tasks running gets it, not always the oldest job.
    p = plan(snap(nodes(3), [job("a", running_tasks=2), job("b", running_tasks=1)],
                  tasks("a", 5) + tasks("b", 5, start_seq=10)))
    assert [b.task for b in p.bindings] == ["b-0"]


def test_within_a_job_task_priority_then_fifo():
    ts = [TaskView("j-old-low", "j", priority=0, seq=1), TaskView("j-new-high", "j", priority=5, seq=3),
          TaskView("j-old-high", "j", priority=5, seq=2)]
    p = plan(snap(nodes(1), [job("j")], ts))
    assert [b.task for b in p.bindings] == ["j-old-high", "j-new-high", "j-old-low"]


def test_a_job_with_nothing_placeable_is_skipped_in_its_turn():
    # Job a's tasks need 3 slots; with only 1-slot gaps left, job b still gets every slot.
    p = plan(snap(nodes(3, 3), [job("a"), job("b")],
                  tasks("a", 2, required_slots=3) + tasks("b", 3, start_seq=10)))
    assert [b.task for b in p.bindings] == ["b-0", "b-1"]
    assert p.pending["a-0"].reason == ALL_SLOTS_BUSY


# -- rules 2 and 3: slots and fill type ----------------------------------------------

@pytest.mark.parametrize("fill, used, required, expected", [
    ("spread", (2, 0, 1), 1, "n1"),          # most free
    ("spread", (1, 0, 0), 1, "n1"),          # tie: lowest order
    ("pack", (2, 0, 1), 1, "n0"),            # fewest free that fits
    ("pack", (3, 0, 1), 2, "n2"),            # n0 has 1 free: does not fit 2
    ("pack", (1, 1, 0), 3, "n0"),            # tie: lowest order
    ("spread", (2, 3, 1), 3, "n2"),
])
def test_fill_type_picks_the_node(fill, used, required, expected):
    p = plan(snap(nodes(*used), [job("j")], [TaskView("t", "j", required_slots=required)], fill=fill))
    assert bound(p) == {"t": (expected,)}


def test_spread_spreads_and_pack_packs():
    spread = plan(snap(nodes(0, 0, 0), [job("j")], tasks("j", 3)))
    pack = plan(snap(nodes(0, 0, 0), [job("j")], tasks("j", 3), fill="pack"))
    assert sorted(n for b in spread.bindings for n in b.nodes) == ["n0", "n1", "n2"]
    assert {n for b in pack.bindings for n in b.nodes} == {"n0"}


def test_required_slots_must_fit_one_node_and_smaller_tasks_backfill():
    p = plan(snap(nodes(2, 2), [job("j")],
                  [TaskView("big", "j", required_slots=3, seq=0), TaskView("small", "j", seq=1),
                   TaskView("huge", "j", required_slots=5, seq=2)]))
    assert bound(p) == {"small": ("n0",)}
    assert p.pending["big"].reason == ALL_SLOTS_BUSY and p.pending["big"].queue_position == 1
    assert p.pending["huge"].reason == REQUIRED_SLOTS_EXCEED_NODE
    assert p.pending["huge"].queue_position == 0


def test_free_slots_are_never_oversubscribed():
    p = plan(snap(nodes(1, 3, 0), [job("j")], tasks("j", 20, required_slots=2)))
    per_node: dict[str, int] = {}
    for b in p.bindings:
        per_node[b.nodes[0]] = per_node.get(b.nodes[0], 0) + 2
    assert per_node == {"n0": 2, "n2": 4}


def _reference_single_job(node_list, task_list, fill):
    """A slow, obvious scheduler for one job: linear scan per task."""
    free = {n.name: n.slots_total - n.slots_used for n in node_list}
    order = {n.name: n.order for n in node_list}
    out = {}
    for t in sorted(task_list, key=lambda t: (-t.priority, t.seq)):
        fits = [n for n in free if free[n] >= t.required_slots]
        if not fits:
            continue
        sign = -1 if fill == "spread" else 1
        best = min(fits, key=lambda n: (sign * free[n], order[n]))
        free[best] -= t.required_slots
        out[t.key] = (best,)
    return out


@pytest.mark.parametrize("seed", range(40))
def test_bucketed_placement_matches_a_linear_scan(seed):
    rng = random.Random(seed)
    fill = rng.choice(["spread", "pack"])
    slots = rng.randint(1, 8)
    node_list = [NodeView(f"n{i}", POOL, slots, rng.randint(0, slots), True, order=rng.randint(0, 5))
                 for i in range(rng.randint(1, 12))]
    node_list.sort(key=lambda n: (n.order, n.name))  # reference breaks ties by order, then input order
    task_list = [TaskView(f"t{i}", "j", required_slots=rng.randint(1, slots), priority=rng.randint(0, 2), seq=i)
                 for i in range(rng.randint(0, 40))]
    p = plan(snap(node_list, [job("j")], task_list, fill=fill))
    assert bound(p) == _reference_single_job(node_list, task_list, fill)


# -- rule 4: job and pool states ------------------------------------------------------

def test_max_parallel_tasks_counts_running_and_newly_bound():
    p = plan(snap(nodes(0, 0), [job("j", max_parallel_tasks=3, running_tasks=1)], tasks("j", 5)))
    assert len(p.bindings) == 2
    assert reasons(p) == {"j-2": MAX_PARALLEL_TASKS_REACHED, "j-3": MAX_PARALLEL_TASKS_REACHED,
                          "j-4": MAX_PARALLEL_TASKS_REACHED}


def test_disabled_job_waits_and_others_run():
    p = plan(snap(nodes(0), [job("off", 100, enabled=False), job("on")],
                  tasks("off", 2) + tasks("on", 2, start_seq=5)))
    assert set(bound(p)) == {"on-0", "on-1"}
    assert p.pending["off-0"].reason == JOB_DISABLED and p.pending["off-0"].queue_position == 0


@pytest.mark.parametrize("node_list", [[], [NodeView("n0", POOL, 4, 0, schedulable=False)],
                                       nodes(0, pool="ns/other")])
def test_no_ready_node(node_list):
    p = plan(snap(node_list, [job("j")], tasks("j", 3)))
    assert not p.bindings
    assert [(v.reason, v.queue_position) for v in p.pending.values()] == [
        (NO_NODE_READY, 1), (NO_NODE_READY, 2), (NO_NODE_READY, 3)]


def test_missing_pool_and_missing_job():
    p = plan(snap(nodes(0), [job("j", pool="ns/gone")], tasks("j", 1) + [TaskView("orphan", "nojob")]))
    assert reasons(p) == {"j-0": POOL_NOT_FOUND, "orphan": JOB_NOT_FOUND}
    assert "ns/gone" in p.pending["j-0"].message


def test_prep_blocked_nodes_are_not_used_for_that_job():
    p = plan(snap(nodes(0, 0), [job("j", prep_blocked_nodes=frozenset({"n0"})), job("k")],
                  tasks("j", 6) + tasks("k", 1, start_seq=10)))
    assert {b.nodes for b in p.bindings if b.task.startswith("j")} == {("n1",)}
    assert sum(1 for b in p.bindings if b.task.startswith("j")) == 4
    assert bound(p)["k-0"] == ("n0",)


def test_prep_failed_everywhere_is_reported():
    p = plan(snap(nodes(0, 0), [job("j", prep_blocked_nodes=frozenset({"n0", "n1"}))], tasks("j", 1)))
    assert reasons(p) == {"j-0": JOB_PREPARATION_FAILED}


# -- rule 5: gangs ----------------------------------------------------------------------

def test_gang_is_all_or_nothing():
    p = plan(snap(nodes(0, 4, 0, 4), [job("j")], [TaskView("mpi", "j", instances=3)]))
    assert not p.bindings
    assert p.pending["mpi"].reason == WAITING_FOR_GANG_NODES
    assert len(p.reserved["mpi"]) == 3 and len(set(p.reserved["mpi"])) == 3


def test_gang_gets_distinct_nodes():
    p = plan(snap(nodes(0, 0, 0, 0), [job("j")], [TaskView("mpi", "j", instances=3, required_slots=2)]))
    assert bound(p) == {"mpi": ("n0", "n1", "n2")}


def test_two_gangs_on_four_nodes_needing_three_each_exactly_one_placed():
    gangs = [TaskView("g1", "a", instances=3, required_slots=4, seq=0),
             TaskView("g2", "b", instances=3, required_slots=4, seq=1)]
    p = plan(snap(nodes(0, 0, 0, 0), [job("a"), job("b")], gangs))
    assert len(p.bindings) == 1 and len(p.bindings[0].nodes) == 3
    placed = p.bindings[0].task
    other = "g2" if placed == "g1" else "g1"
    assert p.pending[other].reason == WAITING_FOR_GANG_NODES
    # Next pass, with the first gang running: the second is still not half-started.
    used = {n: 4 for n in p.bindings[0].nodes}
    again = plan(snap([NodeView(f"n{i}", POOL, 4, used.get(f"n{i}", 0), True, i) for i in range(4)],
                      [job("a"), job("b")], [g for g in gangs if g.key == other]))
    assert not again.bindings


def test_gang_reservation_protects_it_from_small_tasks():
    # 4 one-slot nodes, two free; the gang (higher priority) needs 3; small tasks must not take the free ones.
    p = plan(snap(nodes(0, 1, 0, 1, slots=1), [job("mpi", 10), job("small", 1)],
                  [TaskView("gang", "mpi", instances=3)] + tasks("small", 5, start_seq=1)))
    assert not p.bindings
    assert set(p.reserved["gang"]) >= {"n0", "n2"} and len(p.reserved["gang"]) == 3
    assert p.pending["small-0"].reason == HIGHER_PRIORITY_JOB_AHEAD


def test_gang_reservation_leaves_unreserved_nodes_to_small_tasks():
    # The gang holds the three nodes closest to free; the other free slot still goes to a small task.
    p = plan(snap(nodes(0, 1, 1, 2, 2, 1, slots=2), [job("mpi", 10), job("small", 1)],
                  [TaskView("gang", "mpi", instances=3, required_slots=2)] + tasks("small", 5, start_seq=1)))
    assert p.reserved["gang"] == ("n0", "n1", "n2")
    assert bound(p) == {"small-0": ("n5",)}
    assert p.pending["small-1"].reason == HIGHER_PRIORITY_JOB_AHEAD


def test_only_the_highest_ranked_waiting_gang_holds_nodes():
    gangs = [TaskView("g-high", "a", instances=3, seq=5), TaskView("g-low", "b", instances=3, seq=0)]
    p = plan(snap(nodes(1, 1, 0, 1, slots=1), [job("a", 5), job("b", 1)], gangs))
    assert set(p.reserved) == {"g-high"}
    assert p.pending["g-low"].reason == WAITING_FOR_GANG_NODES
    assert "g-high" in p.pending["g-low"].message


def test_gang_larger_than_the_pool_does_not_hold_nodes():
    p = plan(snap(nodes(0, 0), [job("j")], [TaskView("mpi", "j", instances=3)] + tasks("j", 2, start_seq=1)))
    assert p.pending["mpi"].reason == NOT_ENOUGH_NODES
    assert not p.reserved and len(p.bindings) == 2


# -- rule 6: job manager ------------------------------------------------------------------

def test_job_manager_goes_before_every_other_task_of_the_pool():
    p = plan(snap(nodes(3), [job("high", 500), job("low", 1)],
                  tasks("high", 3) + [TaskView("low-jm", "low", is_job_manager=True, seq=99)]))
    assert [b.task for b in p.bindings] == ["low-jm"]


def test_job_manager_preempts_only_lower_priority_jobs():
    running = {0: [("mid-r0", 50, 1, True), ("mid-r1", 50, 1, True)],        # equal priority: never
               1: [("low-r0", 1, 1, True), ("high-r0", 900, 1, True)],        # one higher: never
               2: [("low-r1", 1, 1, True), ("low-r2", 1, 1, True)]}           # all lower: yes
    p = plan(snap(nodes(2, 2, 2, slots=2, running=running), [job("mid", 50)],
                  [TaskView("jm", "mid", is_job_manager=True)]))
    assert not p.bindings
    assert p.pending["jm"].reason == WAITING_FOR_PREEMPTION
    assert [(x.task, x.node) for x in p.preemptions] == [("low-r1", "n2")]
    assert p.reserved["jm"] == ("n2",)


def test_job_manager_without_lower_priority_victims_just_waits():
    running = {0: [("a", 50, 1, True)]}
    p = plan(snap(nodes(1, slots=1, running=running), [job("mid", 50)],
                  [TaskView("jm", "mid", is_job_manager=True)]))
    assert not p.preemptions and p.pending["jm"].reason == ALL_SLOTS_BUSY


def test_job_manager_chooses_fewest_preemptions():
    running = {0: [("a", 1, 1, True), ("b", 1, 1, True)], 1: [("c", 1, 2, True)]}
    p = plan(snap(nodes(2, 2, slots=2, running=running), [job("j", 9)],
                  [TaskView("jm", "j", is_job_manager=True, required_slots=2)]))
    assert [(x.task, x.node) for x in p.preemptions] == [("c", "n1")]


def test_run_exclusive_job_manager_needs_an_empty_node():
    p = plan(snap(nodes(1, 0), [job("j")],
                  [TaskView("jm", "j", is_job_manager=True, run_exclusive=True)] + tasks("j", 8, start_seq=1)))
    assert bound(p)["jm"] == ("n1",)
    assert all(b.nodes == ("n0",) for b in p.bindings if b.task != "jm")
    assert sum(1 for b in p.bindings if b.task != "jm") == 3


def test_run_exclusive_job_manager_preempts_every_task_of_a_node():
    running = {0: [("x", 1, 1, True), ("y", 1, 1, True)], 1: [("z", 1, 1, True)]}
    p = plan(snap(nodes(2, 1, slots=2, running=running), [job("j", 5)],
                  [TaskView("jm", "j", is_job_manager=True, run_exclusive=True)]))
    assert [(x.task, x.node) for x in p.preemptions] == [("z", "n1")]


# -- queue positions and determinism ----------------------------------------------------------

def test_queue_positions_follow_the_placement_order():
    p = plan(snap(nodes(3, 3, slots=4), [job("a", 1), job("b", 1), job("top", 9)],
                  tasks("a", 3) + tasks("b", 2, start_seq=10) + tasks("top", 1, start_seq=20)))
    assert [b.task for b in p.bindings] == ["top-0", "a-0"]
    positions = {k: v.queue_position for k, v in p.pending.items()}
    assert positions == {"b-0": 1, "a-1": 2, "b-1": 3, "a-2": 4}
    assert reasons(p) == dict.fromkeys(positions, ALL_SLOTS_BUSY)


def test_queue_positions_are_per_pool():
    pools = {POOL: PoolView(POOL), "ns/b": PoolView("ns/b")}
    other = [NodeView("b0", "ns/b", 1, 1, True)]
    p = plan(snap(nodes(4) + other, [job("x"), job("y", pool="ns/b")],
                  tasks("x", 2) + tasks("y", 2, start_seq=5), pools=pools))
    assert [p.pending[k].queue_position for k in ("x-0", "x-1", "y-0", "y-1")] == [1, 2, 1, 2]
    assert reasons(p) == dict.fromkeys(("x-0", "x-1", "y-0", "y-1"), ALL_SLOTS_BUSY)


def test_same_snapshot_same_plan_whatever_the_input_order():
    rng = random.Random(7)
    node_list = nodes(*(rng.randint(0, 4) for _ in range(30)))
    job_list = [job(f"j{i}", rng.choice([0, 5, 9]), max_parallel_tasks=rng.choice([-1, 7])) for i in range(6)]
    task_list = [TaskView(f"t{i}", f"j{rng.randrange(6)}", required_slots=rng.randint(1, 3),
                          priority=rng.randint(0, 2), seq=i, instances=rng.choice([1, 1, 1, 1, 2]))
                 for i in range(300)]
    first = plan(snap(node_list, job_list, task_list))
    shuffled_nodes, shuffled_tasks, shuffled_jobs = node_list[:], task_list[:], job_list[:]
    rng.shuffle(shuffled_nodes)
    rng.shuffle(shuffled_tasks)
    rng.shuffle(shuffled_jobs)
    second = plan(snap(shuffled_nodes, shuffled_jobs, shuffled_tasks))
    assert first.bindings == second.bindings
    assert first.pending == second.pending
    assert first.reserved == second.reserved
    # Every task is either bound or pending, never both; no node is oversubscribed.
    assert set(bound(first)).isdisjoint(first.pending)
    assert len(bound(first)) + len(first.pending) == len(task_list)
    need = {t.key: t.required_slots for t in task_list}
    load = {n.name: n.slots_used for n in node_list}
    for b in first.bindings:
        for name in b.nodes:
            load[name] += need[b.task]
    assert all(used <= 4 for used in load.values())


# -- resources: CPU, memory, GPUs beside slots -----------------------------------------

def rnodes(*free_cpu: int, alloc_cpu: int = 4000, slots: int = 8, gpus: int = 0) -> list[NodeView]:
    """Nodes n0, n1, ... with `free_cpu` millicores left of `alloc_cpu` (and `gpus` GPUs free)."""
    return [NodeView(name=f"n{i}", pool=POOL, slots_total=slots, slots_used=0, schedulable=True, order=i,
                     free_resources={"cpu": f, "memory": 8 << 30, "nvidia.com/gpu": gpus},
                     allocatable={"cpu": alloc_cpu, "memory": 8 << 30, "nvidia.com/gpu": gpus})
            for i, f in enumerate(free_cpu)]


@pytest.mark.parametrize("free, cpu, count, want_bound, want_reason", [
    ((4000, 4000), 1000, 8, 8, None),                        # 4 per node fit
    ((4000, 4000), 1500, 8, 4, "WaitingForResources"),       # 2 per node; slots would allow 8
    ((1000, 0), 2000, 1, 0, "WaitingForResources"),          # fits a node's allocatable, not what is left
    ((4000,), 5000, 1, 0, "ResourcesExceedNode"),            # more than any node has at all
], ids=["fit", "cpu-bounds-before-slots", "wait-for-cpu", "never-fits"])
def test_a_node_is_never_given_more_cpu_than_it_has_left(free, cpu, count, want_bound, want_reason):
    p = plan(snap(rnodes(*free), [job("j")], tasks("j", count, requests=(("cpu", cpu),))))
    assert len(p.bindings) == want_bound
    per_node: dict[str, int] = {}
    for b in p.bindings:
        per_node[b.nodes[0]] = per_node.get(b.nodes[0], 0) + cpu
    assert all(per_node[f"n{i}"] <= f for i, f in enumerate(free) if f"n{i}" in per_node)
    if want_reason:
        assert set(reasons(p).values()) == {want_reason}


def test_the_waiting_reason_says_what_is_missing():
    p = plan(snap(rnodes(500), [job("j")], tasks("j", 1, requests=(("cpu", 2000),))))
    msg = p.pending["j-0"].message
    assert "cpu 2" in msg and "most: cpu 500m" in msg and p.pending["j-0"].queue_position == 1
    p = plan(snap(rnodes(4000), [job("j")], tasks("j", 1, requests=(("cpu", 8000),))))
    assert "largest: cpu 4" in p.pending["j-0"].message and p.pending["j-0"].queue_position == 0


def test_gpus_are_placed_only_where_they_are():
    gpu_nodes = rnodes(4000, gpus=1) + [NodeView("g0", POOL, 8, 0, True, order=9, free_resources={"cpu": 4000},
                                                 allocatable={"cpu": 4000})]
    p = plan(snap(gpu_nodes, [job("j")], tasks("j", 3, requests=(("nvidia.com/gpu", 1),))))
    assert bound(p) == {"j-0": ("n0",)}
    assert reasons(p) == {"j-1": "WaitingForResources", "j-2": "WaitingForResources"}


def test_small_tasks_backfill_around_a_big_one():
    p = plan(snap(rnodes(1000), [job("j")], [TaskView("big", "j", seq=0, requests=(("cpu", 2000),)),
                                            TaskView("small", "j", seq=1, requests=(("cpu", 500),))]))
    assert bound(p) == {"small": ("n0",)} and reasons(p) == {"big": "WaitingForResources"}


def test_a_gang_gets_distinct_nodes_that_each_fit():
    p = plan(snap(rnodes(4000, 1000, 4000), [job("j")],
                  [TaskView("g", "j", instances=2, requests=(("cpu", 2000),))]))
    assert sorted(bound(p)["g"]) == ["n0", "n2"]


def test_nodes_with_unknown_resources_count_slots_only():
    p = plan(snap(nodes(0, slots=2), [job("j")], tasks("j", 3, requests=(("cpu", 64000),))))
    assert len(p.bindings) == 2


def test_a_job_manager_that_may_not_use_low_priority_nodes_waits_for_a_dedicated_one():
    spot = [NodeView("s0", POOL, 4, 0, True, order=0, dedicated=False)]
    jm = TaskView("jm", "j", is_job_manager=True, dedicated_only=True)
    p = plan(snap(spot, [job("j")], [jm]))
    assert not p.bindings and "jm" in p.pending
    p = plan(snap(spot + [NodeView("d0", POOL, 4, 3, True, order=1)], [job("j")], [jm, *tasks("j", 1)]))
    assert bound(p) == {"jm": ("d0",), "j-0": ("s0",)}


def test_required_slots_are_judged_by_the_pool_before_it_has_nodes():
    p = plan(snap([], [job("j")], [TaskView("big", "j", required_slots=9), TaskView("ok", "j", required_slots=2)],
                  pools={POOL: PoolView(POOL, slots_per_node=4)}))
    assert reasons(p) == {"big": REQUIRED_SLOTS_EXCEED_NODE, "ok": NO_NODE_READY}


# -- rule 2: allowTaskPreemption ---------------------------------------------------------------
# running entries: (task, job priority, slots, the job allows preemption)

@pytest.mark.parametrize("running, exclusive, preempted", [
    # tasks of jobs without allowTaskPreemption are never chosen: the job manager waits
    ({0: [("a", 1, 1, False), ("b", 1, 1, False)]}, False, []),
    ({0: [("a", 1, 1, False), ("b", 1, 1, False)]}, True, []),
    # a node with both: only the preemptible task goes (a job manager needs one slot)
    ({0: [("a", 1, 1, False), ("b", 1, 1, True)]}, False, [("b", "n0")]),
    # run_exclusive needs the whole node: a node keeping a non-preemptible task is no use,
    # another node is cleared instead even if that takes more requeues
    ({0: [("a", 1, 1, False), ("b", 1, 1, True)], 1: [("c", 1, 1, True), ("d", 1, 1, True)]}, True,
     [("c", "n1"), ("d", "n1")]),
    ({0: [("a", 1, 2, True)], 1: [("b", 1, 1, False), ("c", 1, 1, True)]}, False, [("a", "n0")]),
])
def test_job_manager_preempts_only_tasks_of_jobs_that_allow_it(running, exclusive, preempted):
    p = plan(snap(nodes(*(2 for _ in running), slots=2, running=running), [job("boss", 100)],
                  [TaskView("jm", "boss", is_job_manager=True, run_exclusive=exclusive)]))
    assert not p.bindings
    assert sorted((x.task, x.node) for x in p.preemptions) == preempted
    if preempted:
        assert p.pending["jm"].reason == WAITING_FOR_PREEMPTION
    else:
        assert p.pending["jm"].reason == ALL_SLOTS_BUSY
        assert "allowTaskPreemption" in p.pending["jm"].message and "jm" not in p.reserved


# -- rule 7: affinity --------------------------------------------------------------------------

@pytest.mark.parametrize("used, fill, affinity, expected", [
    ((2, 0, 0), "spread", "n0", "n0"),     # spread would take an empty node; the affinity wins
    ((0, 3, 0), "pack", "n2", "n2"),       # pack would fill n1; the affinity wins
    ((4, 0, 1), "spread", "n0", "n1"),     # its node is full: elsewhere at once, by the fill type
    ((4, 0, 1), "pack", "n0", "n2"),
    ((1, 0), "spread", "nowhere", "n1"),   # a name that is no ready node of the pool
])
def test_a_task_goes_to_its_affinity_node_when_it_has_room(used, fill, affinity, expected):
    p = plan(snap(nodes(*used), [job("j")], [TaskView("t", "j", affinity=affinity)], fill=fill))
    assert bound(p) == {"t": (expected,)} and not p.pending


def test_affinity_never_makes_a_task_wait_and_respects_slots_and_order():
    # n0 has one free slot: the first of the two tasks that prefer it gets it, the other
    # goes elsewhere; the task without affinity is placed as always
    p = plan(snap(nodes(3, 2, 0), [job("j")],
                  [TaskView("a", "j", seq=1, affinity="n0"), TaskView("b", "j", seq=2, affinity="n0"),
                   TaskView("c", "j", seq=3, required_slots=4)], fill="pack"))
    assert bound(p) == {"a": ("n0",), "b": ("n1",), "c": ("n2",)}


def test_affinity_skips_a_node_without_room_for_the_task():
    big = TaskView("big", "j", required_slots=3, affinity="n0", seq=1)
    fat = TaskView("fat", "j", requests=(("cpu", 2000),), affinity="n1", seq=2)
    node_list = nodes(2, 0, 0)
    node_list[1] = NodeView("n1", POOL, 4, 0, True, order=1, free_resources={"cpu": 1000}, allocatable={"cpu": 4000})
    p = plan(snap(node_list, [job("j", prep_blocked_nodes=frozenset({"n2"}))],
                  [big, fat, TaskView("blocked", "j", affinity="n2", seq=3)]))
    b = bound(p)
    assert b["big"] != ("n0",) and b["fat"] != ("n1",) and b["blocked"] != ("n2",)


def test_affinity_does_not_take_a_node_held_for_a_gang():
    # the gang needs two nodes with 2 free slots, only n3 has them: it holds n3 and n0 (the
    # lowest order of the others); the task preferring n0 must not take it
    p = plan(snap(nodes(3, 3, 3, 0, slots=4), [job("g", 9), job("j", 1)],
                  [TaskView("gang", "g", instances=2, required_slots=2, seq=1),
                   TaskView("t", "j", affinity="n0", seq=2)]))
    assert p.pending["gang"].reason == WAITING_FOR_GANG_NODES
    assert set(p.reserved["gang"]) == {"n0", "n3"}
    assert bound(p) == {"t": ("n1",)}


def test_a_gangs_primary_takes_its_affinity_node():
    p = plan(snap(nodes(0, 0, 0, 2), [job("j")], [TaskView("g", "j", instances=2, affinity="n3")]))
    assert bound(p)["g"][0] == "n3" and len(set(bound(p)["g"])) == 2


@pytest.mark.parametrize("seed", range(30))
def test_affinity_keeps_every_node_within_its_slots(seed):
    rng = random.Random(seed)
    slots = rng.randint(1, 4)
    node_list = nodes(*(rng.randint(0, slots) for _ in range(rng.randint(1, 8))), slots=slots)
    names = [n.name for n in node_list] + ["gone"]
    task_list = [TaskView(f"t{i}", "j", seq=i, required_slots=rng.randint(1, slots),
                          instances=rng.choice([1, 1, 1, 2]), affinity=rng.choice([None, *names]))
                 for i in range(rng.randint(1, 30))]
    p = plan(snap(node_list, [job("j")], task_list, fill=rng.choice(["spread", "pack"])))
    by_key = {t.key: t for t in task_list}
    used = {n.name: n.slots_used for n in node_list}
    for b in p.bindings:
        assert len(set(b.nodes)) == len(b.nodes) == by_key[b.task].instances
        for name in b.nodes:
            used[name] += by_key[b.task].required_slots
    assert all(used[n.name] <= n.slots_total for n in node_list), used
