"""Prometheus metrics, declared once, small fixed label sets. Per-pool series carry
`namespace` and `pool`: bounded by the pools that exist, never by tasks or nodes."""
from prometheus_client import Counter, Gauge, Histogram

TASKS = Gauge("podbatch_tasks", "Tasks known to the operator by pool and state", ["namespace", "pool", "state"])
TASK_TRANSITIONS = Counter("podbatch_task_transitions_total", "Task state changes", ["to"])
TASK_RETRIES = Counter("podbatch_task_retries_total", "Task attempts started again after a non-zero exit", ["namespace", "pool"])
TASK_REQUEUES = Counter("podbatch_task_requeues_total", "Task attempts started again after a lost node, eviction or node operation",
                        ["namespace", "pool"])
SCHEDULING_LATENCY = Histogram("podbatch_task_scheduling_latency_seconds", "From a task's creation to its first pod",
                               buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
TASK_RUN_SECONDS = Histogram("podbatch_task_run_seconds", "Run time of completed task attempts",
                             buckets=(0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600))
SCHEDULER_PASS_SECONDS = Histogram("podbatch_scheduler_pass_seconds", "Duration of one scheduler plan() call",
                                   buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5))
RECONCILE_PASS_SECONDS = Histogram("podbatch_reconcile_pass_seconds", "Duration of one reconcile pass",
                                   buckets=(0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 10))
BINDINGS = Counter("podbatch_bindings_total", "Task attempts bound to nodes", ["namespace", "pool"])
BUILD_INFO = Gauge("podbatch_build_info", "The running operator's version (value 1)", ["version", "python"])
EVENTS_GROUPED = Counter("podbatch_events_grouped_total", "Warnings not posted again because the same one was posted recently")
API_ERRORS = Counter("podbatch_api_errors_total", "Failed API calls", ["verb", "kind"])
API_WRITES = Counter("podbatch_api_writes_total", "API writes made by the engine (creates, patches, deletes)")
