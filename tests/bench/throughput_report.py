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
    return out


def _f(x, fmt: str = "") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def summary(r: dict) -> str:
    n, pb = r["tasks"], r.get("podbatch") or {}
    r["ratios"] = rat = ratios(r)
    head = f"podbatch {n} single Tasks: {_f(rate(pb))}/s | " + " | ".join(
        f"{label.replace('N', str(n))}: {_f(rate(r.get(key) or {}))}/s" for key, label, *_ in PEERS)
    lines = ["", "=" * 110, head,
             "ratios: " + " | ".join(f"podbatch/{short} = {_f(rat[f'podbatch_over_{key}'])} (target >= {target})"
                                     for key, _, short, _, target in PEERS),
             "=" * 110,
             f"cluster {r.get('server')} on {r['cpus']} CPUs (control plane, simulator, operator and this client share them); "
             f"{r['nodes']} fake nodes x {r['slots']} slots; one Job: {r.get('jobcontroller_mode') or '-'}",
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
    if r.get("steady"):
        lines += steady_lines(r["steady"])
    lines += memory_lines(r.get("memory"))
    lines += [f"PROBLEM: {p}" for p in r["problems"]]
    lines.append(f"operator log: {r.get('operator_log')}")
    return "\n".join(lines)


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
