"""Autoscale of pools: Batch's task metrics sampled per pool (every
PODBATCH_AUTOSCALE_SAMPLE_SECONDS, kept 24 h in memory), the pool's formula evaluated on
them every autoScaleEvaluationInterval, and Batch's evaluateAutoScale (a formula evaluated
on request, applied to nothing). A mixin of the engine; the pools reconciler asks it."""
from __future__ import annotations

import json
import logging

from podbatch.controllers import clock
from podbatch.controllers.status import body_key, now_iso
from podbatch.core import autoscale, naming, resources
from podbatch.core import jobs as jobcore
from podbatch.core.durations import seconds

ANNOTATION_EVALUATE = "podbatch.io/evaluate"
log = logging.getLogger("podbatch.engine")


class Autoscaling:
    SAMPLE_KEEP = 24 * 3600.0

    def _sample_pool(self, pk: str, members: list[dict]) -> None:
        """Batch's service-defined metrics of a pool, one sample every 30 s, kept 24 h in memory."""
        samples = self._samples.setdefault(pk, {})
        now = clock.time()
        last = samples.get("$ActiveTasks")
        if last and now - last[-1].time < self.settings.autoscale_sample_seconds:
            return
        values: dict = self.pool_demand(pk, members)
        values.update(self.pool_usage(members))
        for metric, v in values.items():
            series = samples.setdefault(metric, [])
            series.append(autoscale.Sample(time=now, value=float(v)))
            while series and now - series[0].time > self.SAMPLE_KEEP:
                series.pop(0)

    METRICS_RETRY = 300.0   # a cluster without metrics-server is asked again this often (and when a formula changes)

    async def refresh_node_metrics(self) -> None:
        """metrics-server's node usage, read once per sample period (only while some pool
        has a formula); None where the cluster does not serve metrics.k8s.io."""
        now = clock.monotonic()
        formulas = {(k, p["metadata"].get("generation")) for k, p in self.store.pools.items() if p["spec"].get("enableAutoScale")}
        if not formulas:
            return
        if formulas - getattr(self, "_metrics_formulas", set()):
            self._metrics_due = 0.0   # a new or changed formula may read usage: ask the cluster again now
        self._metrics_formulas = formulas
        if now < getattr(self, "_metrics_due", 0.0):
            return
        try:
            items = await self.ex.node_metrics()
        except Exception as e:   # the next period tries again; formulas reading usage see no new sample
            log.warning("reading node metrics failed: %s", str(e)[:300])
            items = None
        if items is None:
            self._node_usage = {}
            self._metrics_due = now + self.METRICS_RETRY
            return
        self._node_usage = {m["metadata"]["name"]: resources.amounts(m.get("usage")) for m in items}
        self._metrics_due = now + self.settings.autoscale_sample_seconds

    def pool_usage(self, members: list[dict]) -> dict[str, float]:
        """Batch's resource metrics of a pool from metrics-server: $CPUPercent (average CPU use
        of its nodes, percent of allocatable), $MemoryBytes (average memory used per node, in
        megabytes, as Batch counts it) and $SampleNodeCount (nodes that reported). Nothing when
        no node of the pool reported: a formula reading them then fails with MissingMetric."""
        usage = getattr(self, "_node_usage", {})
        cpu, mem = [], []
        for m in members:
            used = usage.get(m["metadata"]["name"])
            alloc = resources.amounts((m.get("status") or {}).get("allocatable"))
            if used is None:
                continue
            if alloc.get("cpu"):
                cpu.append(100.0 * used.get("cpu", 0) / alloc["cpu"])
            mem.append(used.get("memory", 0) / 2 ** 20)
        if not mem:
            return {}
        out = {"$MemoryBytes": sum(mem) / len(mem), "$SampleNodeCount": len(mem)}
        if cpu:
            out["$CPUPercent"] = sum(cpu) / len(cpu)
        return out

    def pool_demand(self, pk: str, members: list[dict]) -> dict[str, int]:
        """The pool's task metrics as Batch counts them. $ActiveTasks: tasks ready to run (their
        dependencies met, their job enabled) that are not running, each multi-instance task
        counted by its instances; a task that can never fit the pool's nodes (more slots than
        taskSlotsPerNode, or requests above a node's allocatable) is not demand: adding nodes
        would not run it (its pending reason says why). $RunningTasks: instances preparing or
        running on the pool's nodes. $PendingTasks = active + running. The *TaskSlots variables
        count the same in task slots."""
        ns, name = pk.split("/", 1)
        pool = self.store.pools.get(pk) or {"spec": {}}
        slots_per_node = int(pool["spec"].get("taskSlotsPerNode", 1))
        node_size = self._node_allocatable(pool, members)
        ready, jobs, _ = self._ready_tasks_by_pool({pk})
        active = active_slots = 0
        for tv in ready.get(pk, []):
            job = jobs.get(tv.job)
            if job is None or not job.enabled or tv.required_slots > slots_per_node:
                continue
            if tv.requests and node_size is not None and not resources.fits(dict(tv.requests), node_size):
                continue
            active += tv.instances
            active_slots += tv.instances * tv.required_slots
        running = running_slots = 0
        for c in self.store.cnodes_of(pk):
            for tk in self.store.inflight.get(body_key(c), ()):
                t = self.store.tasks.get(tk)
                if t:
                    running += 1
                    running_slots += int(t["spec"].get("requiredSlots", 1))
        done = dict.fromkeys(("succeeded", "failed"), 0)
        for j in self.store.jobs.values():
            if j["metadata"]["namespace"] == ns and jobcore.pool_id_of(j) == name:
                counts = (j.get("status") or {}).get("taskCounts") or {}
                for k in done:
                    done[k] += int(counts.get(k, 0))
        return {"$ActiveTasks": active, "$RunningTasks": running, "$PendingTasks": active + running,
                "$ActiveTaskSlots": active_slots, "$RunningTaskSlots": running_slots,
                "$PendingTaskSlots": active_slots + running_slots,
                "$SucceededTasks": done["succeeded"], "$FailedTasks": done["failed"]}

    def _node_allocatable(self, pool: dict, members: list[dict]) -> dict | None:
        """What one node of the pool offers: the largest allocatable of its Nodes, or (none yet)
        the kwok template's capacity; None when unknown."""
        sizes = [resources.amounts((m.get("status") or {}).get("allocatable")) for m in members]
        sizes = [x for x in sizes if x]
        if sizes:
            return {k: max(x.get(k, 0) for x in sizes) for k in set().union(*sizes)}
        group = pool["spec"].get("nodeGroup") or {}
        if group.get("provider", "kwok") == "kwok":
            return resources.amounts((group.get("kwok") or {}).get("capacity") or {"cpu": "32", "memory": "256Gi", "pods": "110"})
        return None

    def _autoscale_pool(self, pool: dict, members: list[dict]) -> tuple[dict | None, int, int]:
        """Evaluate the pool's formula every autoScaleEvaluationInterval (and at once when it
        changes). On an error the size stays as it was, as in Batch, and the error is shown."""
        meta, spec = pool["metadata"], pool["spec"]
        pk = body_key(pool)
        state = self._autoscale.get(pk) or {}
        interval = seconds(spec.get("autoScaleEvaluationInterval")) or 900
        now = clock.time()
        fresh = state.get("generation") == meta.get("generation") and now - state.get("at", 0) < interval
        if fresh:
            return state["run"], state["dedicated"], state["low"]
        low_now = sum(1 for m in members if naming.LABEL_LOW_PRIORITY in (m["metadata"].get("labels") or {}))
        keep_d = state.get("dedicated", len(members) - low_now)
        keep_l = state.get("low", low_now)
        run, result = self._evaluate(pool, members, spec.get("autoScaleFormula") or "", keep_d, keep_l)
        err_text, dealloc = None, None
        if result is not None:
            dedicated, low, dealloc = result.target_dedicated, result.target_low_priority, result.node_deallocation_option
        else:
            run["error"]["message"] += ". Fix spec.autoScaleFormula; the pool keeps its size until it evaluates."
            dedicated, low = keep_d, keep_l
            err_text = run["error"]["message"]
            if state.get("error") != err_text:
                self.ex.event(pool, "Warning", "AutoScaleFormulaError", run["error"]["message"])
        self._autoscale[pk] = {"generation": meta.get("generation"), "at": now, "run": run,
                               "dedicated": dedicated, "low": low, "error": err_text,
                               "dealloc": dealloc if not err_text else state.get("dealloc")}
        return run, dedicated, low

    def _evaluate(self, pool: dict, members: list[dict], formula: str, keep_d: int, keep_l: int):
        """One evaluation of `formula` over the pool's samples and current values: (run, the
        result or None on an error). Applies nothing."""
        pk = body_key(pool)
        low_now = sum(1 for m in members if naming.LABEL_LOW_PRIORITY in (m["metadata"].get("labels") or {}))
        run: dict = {"timestamp": now_iso()}
        try:
            program = autoscale.parse(formula)
            result = autoscale.evaluate(program, autoscale.Metrics(
                now=clock.time(), samples=self._samples.get(pk, {}),
                scalars={"$CurrentDedicatedNodes": len(members) - low_now, "$CurrentLowPriorityNodes": low_now,
                         "$TargetDedicatedNodes": keep_d, "$TargetLowPriorityNodes": keep_l,
                         "$TaskSlotsPerNode": int(pool["spec"].get("taskSlotsPerNode", 1)),
                         "$UsableNodeCount": len(members), "$PreemptedNodeCount": self._preempted_count(pk)}))
        except autoscale.FormulaError as e:
            run["error"] = {"code": getattr(e, "code", "FormulaError") or "FormulaError", "message": str(e)}
            return run, None
        run["results"] = result.results_string()
        return run, result

    def evaluation_request(self, pool: dict, members: list[dict]) -> dict | None:
        """Batch's evaluateAutoScale: a formula written to the Pool's annotation
        podbatch.io/evaluate (`{"id": …, "formula": …}`, by `kubectl podbatch pool evaluate`)
        is evaluated on the pool's samples, without applying it; the answer is the status's
        autoScaleEvaluation, once per id. None when there is nothing (new) to answer."""
        raw = (pool["metadata"].get("annotations") or {}).get(ANNOTATION_EVALUATE)
        if not raw:
            return None
        try:
            ask = json.loads(raw)
            rid, formula = str(ask["id"]), ask.get("formula") or pool["spec"].get("autoScaleFormula") or ""
        except (ValueError, KeyError, TypeError):
            return {"id": "", "timestamp": now_iso(), "error": {
                "code": "InvalidRequest", "message": f"annotation {ANNOTATION_EVALUATE} must be JSON {{\"id\": …, \"formula\": …}}"}}
        if ((pool.get("status") or {}).get("autoScaleEvaluation") or {}).get("id") == rid:
            return None
        low_now = sum(1 for m in members if naming.LABEL_LOW_PRIORITY in (m["metadata"].get("labels") or {}))
        decided = self._pool_decided.get(body_key(pool))
        keep_d, keep_l = (decided[1], decided[2]) if decided else (len(members) - low_now, low_now)
        run, _ = self._evaluate(pool, members, formula, keep_d, keep_l)
        return {"id": rid, **run}

    def _preempted_count(self, pk: str) -> int:
        return sum(1 for c in self.store.cnodes_of(pk) if (c.get("status") or {}).get("state") == "preempted")
