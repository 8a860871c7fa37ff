"""The throughput bench's summary: every figure and ratio of one run on one screen, built
from its result dict alone (pure, so the layout is checked without a cluster)."""
from __future__ import annotations

import math

from meters import CONTROL_PLANE
from steady import report_lines as steady_lines

# (result key, label, short name, the client's own create per object, issue 13's target for podbatch / it)
PEERS = (("jobcontroller", "one Job of N", "one-Job", "POST jobs", 0.5),
         ("singlejobs", "N single Jobs", "single-Jobs", "POST jobs", 2.0),
         ("raw", "raw pods", "raw", "POST pods", 0.5))
# the collection phase's peers at its own N: (result key, label, short name, client create, target collection / it)
COLLECTION_PEERS = (("collection_jobcontroller", "one Job of N", "one-Job", "POST jobs", 1.2),
                    ("collection_raw", "raw pods", "raw", "POST pods", 0.8))
MB = 1e6 / 2**20   # MiB per MB (issue 13's memory target is in MB)


def rate(ph: dict) -> float | None:
    return ph.get("tasks_per_s") or ph.get("pods_per_s")


def per_object(ph: dict, n: int, client_create: str) -> dict:
    """API writes and kube-apiserver CPU per task or pod of a phase: all writes, and the
    writes besides the client's own create of each object (what the system adds)."""
    writes = ph.get("api_writes") or {}
    api_cpu = (ph.get("cpu") or {}).get("cpu_s", {}).get("kube-apiserver")
    return {"writes": round(sum(writes.values()) / n, 2) if writes else None,
            "system_writes": round(sum(v for k, v in writes.items() if k != client_create) / n, 2) if writes else None,
            "apiserver_ms": round(api_cpu * 1000 / n, 1) if api_cpu is not None else None}


def ratios(r: dict) -> dict:
    pb = rate(r.get("podbatch") or {})
    out = {}
    for key, *_ in PEERS:
        peer = rate(r.get(key) or {})
        out[f"podbatch_over_{key}"] = round(pb / peer, 2) if pb and peer else None
    coll = rate(r.get("collection") or {})
    for key, *_ in COLLECTION_PEERS if r.get("collection") else ():
        peer = rate(r.get(key) or {})
        out[f"collection_over_{key.removeprefix('collection_')}"] = round(coll / peer, 2) if coll and peer else None
    return out


def _f(x, fmt: str = "") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def summary(r: dict) -> str:
    r["ratios"] = ratios(r)
    cluster = (f"cluster {r.get('server')} on {r['cpus']} CPUs (control plane, simulator, operator and this client share "
               f"them); {r['nodes']} fake nodes x {r['slots']} slots")
    lines = ["", "=" * 110]
    if any(r.get(k) for k in ("podbatch", *(p[0] for p in PEERS))):
        lines += single_task_lines(r, cluster)
    else:
        lines.append(cluster)
    lines += collection_lines(r)
    if r.get("steady"):
        lines += steady_lines(r["steady"])
    lines += memory_lines(r.get("memory"))
    lines += collection_memory_lines(r.get("collection_memory"))
    lines += [f"PROBLEM: {p}" for p in r["problems"]]
    lines.append(f"operator log: {r.get('operator_log')}")
    return "\n".join(lines)


def single_task_lines(r: dict, cluster: str) -> list[str]:
    """podbatch's single Tasks and their peers at BENCH_TASKS."""
    n, pb, rat = r["tasks"], r.get("podbatch") or {}, r["ratios"]
    head = f"podbatch {n} single Tasks: {_f(rate(pb))}/s | " + " | ".join(
        f"{label.replace('N', str(n))}: {_f(rate(r.get(key) or {}))}/s" for key, label, *_ in PEERS)
    lines = [head,
             "ratios: " + " | ".join(f"podbatch/{short} = {_f(rat[f'podbatch_over_{key}'])} (target >= {target})"
                                     for key, _, short, _, target in PEERS),
             "=" * 110,
             f"{cluster}; one Job: {r.get('jobcontroller_mode') or '-'}",
             f"  {'phase':<16}{'wall s':>8}{'per s':>8}{'create/s':>10}{'podbatch/x':>12}{'writes/obj':>12}"
             f"{'sys writes':>12}{'apiserver ms/obj':>18}"]
    rows = (("podbatch", "podbatch Tasks", "POST tasks"),) + tuple((k, label, c) for k, label, _, c, _ in PEERS)
    for key, label, create in rows:
        ph = r.get(key)
        if not ph:
            continue
        po = ph["per_object"] = per_object(ph, n, create)
        ratio = "" if key == "podbatch" else _f(rat[f"podbatch_over_{key}"])
        lines.append(f"  {label:<16}{ph['seconds']:>8.1f}{_f(rate(ph)):>8}{_f(ph.get('create_per_s')):>10}{ratio:>12}"
                     f"{_f(po['writes']):>12}{_f(po['system_writes']):>12}{_f(po['apiserver_ms']):>18}")
    for key, label, _ in rows:
        w = (r.get(key) or {}).get("api_writes")
        if w:
            lines.append(f"  writes per object, {label}: " + ", ".join(f"{k} {v / n:.2f}" for k, v in list(w.items())[:8 if key == "podbatch" else 6]))
    lines.append("  (writes are the API server's cluster-wide apiserver_request_total: other users of the cluster add to them)")
    lines += cpu_lines(r, rows)
    lines += operator_lines(pb)
    return lines


def cpu_lines(r: dict, rows) -> list[str]:
    names = ["operator", *CONTROL_PLANE]
    lines = ["CPU seconds used during each phase:",
             "  " + f"{'phase':<16}{'wall':>7}" + "".join(f"{x[:14]:>16}" for x in names)]
    for key, label, _ in rows:
        ph = r.get(key)
        if ph:
            c = ph["cpu"]["cpu_s"]
            lines.append("  " + f"{label:<16}{ph['cpu']['wall_s']:>7.1f}" + "".join(f"{c.get(x, math.nan):>16.1f}" for x in names))
    return lines


def operator_lines(pb: dict) -> list[str]:
    if not pb:
        return []
    lines = []
    op_share = pb["cpu"]["cpu_s"].get("operator", 0) / max(pb["cpu"]["wall_s"], 1e-9)
    pb["operator_cpu_share"] = round(op_share, 2)
    lines.append(f"podbatch phase: create phase {pb['create_seconds']} s, then {pb['after_create_seconds']} s; operator CPU "
                 f"{op_share:.0%} of one core " + ("(single asyncio thread: CPU-bound)" if op_share > 0.8 else "(not CPU-saturated)")
                 + f"; Task status patches {_f(pb.get('task_status_patches_per_task'))}/task")
    om = pb.get("operator_metrics") or {}
    passes = om.get("podbatch_reconcile_pass_seconds_count")
    if passes:
        lat_n = max(om.get("podbatch_task_scheduling_latency_seconds_count", 0), 1)
        lines.append(f"operator: {passes:.0f} reconcile passes, mean {om.get('podbatch_reconcile_pass_seconds_sum', 0) / passes:.2f} s; "
                     f"scheduler plan() {om.get('podbatch_scheduler_pass_seconds_sum', 0):.2f} s in "
                     f"{om.get('podbatch_scheduler_pass_seconds_count', 0):.0f} calls; bindings "
                     f"{sum(v for k, v in om.items() if k.split('{')[0] == 'podbatch_bindings_total'):.0f}; mean creation->pod "
                     f"{om.get('podbatch_task_scheduling_latency_seconds_sum', 0) / lat_n:.1f} s; API errors "
                     f"{sum(v for k, v in om.items() if k.startswith('podbatch_api_errors_total')):.0f}")
    return lines


def memory_lines(mem: dict | None) -> list[str]:
    if not mem:
        return []
    ms = mem.get("scheduler_pass_ms")
    lines = [f"memory: operator RSS {mem['rss_before_mib']} MiB -> {mem['rss_settled_mib']} MiB with {mem['tasks']} tasks queued "
             f"(peak {mem['rss_peak_mib']}): {mem['mib_per_1000_tasks']} MiB per 1,000 (settled after "
             f"{mem['seen_and_settled_seconds']} s, operator CPU {mem['operator_cpu_s']} s)",
             f"memory: at that depth scheduler plan() {_f(ms)} ms mean of {mem.get('scheduler_passes')} passes (target <= 100), "
             f"reconcile pass {_f(mem.get('reconcile_pass_ms'))} ms mean of {mem.get('reconcile_passes')}"]
    if not mem["settled"]:
        lines.append("memory: the operator was still busy (CPU) with the queued tasks when RSS was read")
    return lines


def collection_lines(r: dict) -> list[str]:
    """The collection phase: its rate, its ratios to its peers at the same N with their
    targets, per task writes and kube-apiserver CPU, and its status writes."""
    co = r.get("collection")
    if not co:
        return []
    n, rat = co["n"], r["ratios"]
    mode = r.get("collection_jobcontroller_mode") or "-"
    lines = ["=" * 110,
             f"collection of {n} tasks (one TaskCollection): {_f(rate(co))}/s | " + " | ".join(
                 f"{label.replace('N', str(n))}: {_f(rate(r.get(key) or {}))}/s" for key, label, *_ in COLLECTION_PEERS)
             + f" (one Job: {mode})",
             "collection ratios: " + " | ".join(
                 f"collection/{short} = {_f(rat[f'collection_over_' + key.removeprefix('collection_')])} (target >= {target})"
                 for key, _, short, _, target in COLLECTION_PEERS),
             f"  {'phase':<16}{'wall s':>8}{'per s':>8}{'coll/x':>12}{'writes/obj':>12}{'sys writes':>12}{'apiserver ms/obj':>18}"]
    rows = (("collection", "TaskCollection", "POST taskcollections"),) + tuple((k, lab, c) for k, lab, _, c, _ in COLLECTION_PEERS)
    for key, label, create in rows:
        ph = r.get(key)
        if not ph:
            continue
        po = ph["per_object"] = per_object(ph, ph.get("n") or n, create)
        ratio = "" if key == "collection" else _f(rat[f"collection_over_{key.removeprefix('collection_')}"])
        lines.append(f"  {label:<16}{ph['seconds']:>8.1f}{_f(rate(ph)):>8}{ratio:>12}"
                     f"{_f(po['writes']):>12}{_f(po['system_writes']):>12}{_f(po['apiserver_ms']):>18}")
    w = co.get("api_writes") or {}
    po = co["per_object"]
    lines.append(f"collection: {_f(po['writes'])} API writes per task ({_f(po['system_writes'])} besides the client's create), "
                 f"kube-apiserver {_f(po['apiserver_ms'])} ms CPU per task; TaskCollection status writes: "
                 f"{co.get('status_writes_watched')} (watched), {w.get('PATCH taskcollections/status', 0)} (API server counter)")
    if w:
        lines.append("  writes per task, collection: " + ", ".join(f"{k} {v / n:.3f}" for k, v in list(w.items())[:8]))
    lines.append(f"collection: its state completed after {_f(co.get('collection_completed_seconds'))} s, its job after "
                 f"{co['seconds']} s (timed from the job's create; the collection and the job switched to terminatejob "
                 f"took {co.get('create_seconds')} s)")
    lines += cpu_lines(r, rows)
    om = co.get("operator_metrics") or {}
    passes = om.get("podbatch_reconcile_pass_seconds_count")
    if passes:
        op_share = co["cpu"]["cpu_s"].get("operator", 0) / max(co["cpu"]["wall_s"], 1e-9)
        lines.append(f"collection: operator CPU {op_share:.0%} of one core; {passes:.0f} reconcile passes, mean "
                     f"{om.get('podbatch_reconcile_pass_seconds_sum', 0) / passes * 1000:.0f} ms; scheduler plan() "
                     f"{om.get('podbatch_scheduler_pass_seconds_sum', 0):.2f} s in {om.get('podbatch_scheduler_pass_seconds_count', 0):.0f} calls")
    return lines


def collection_memory_lines(mem: dict | None) -> list[str]:
    if not mem:
        return []
    lines = [f"collection memory: operator RSS {mem['rss_before_mib']} MiB -> {mem['rss_settled_mib']} MiB "
             f"= {mem['rss_settled_mib'] / MB:.0f} MB (target <= 300 MB) with one collection of {mem['tasks']} tasks queued "
             f"(peak {mem['rss_peak_mib']}; {mem['mib_per_100000_tasks']} MiB per 100,000); counted in its status after "
             f"{mem['seen_seconds']} s, settled after {mem['seen_and_settled_seconds']} s, operator CPU {mem['operator_cpu_s']} s, "
             f"{mem['status_writes_watched']} status writes",
             f"collection memory: at that depth scheduler plan() {_f(mem.get('scheduler_pass_ms'))} ms mean of "
             f"{mem.get('scheduler_passes')} passes (target <= 100), reconcile pass {_f(mem.get('reconcile_pass_ms'))} ms "
             f"mean of {mem.get('reconcile_passes')}"]
    if not mem["all_seen"]:
        lines.append("collection memory: the collection's status never counted every task")
    if not mem["settled"]:
        lines.append("collection memory: the operator was still busy (CPU) with the collection when RSS was read")
    return lines
