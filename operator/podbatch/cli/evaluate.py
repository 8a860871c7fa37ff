"""`kubectl podbatch pool evaluate POOL [--formula F | --formula-file PATH]`: Batch's
evaluateAutoScale. The formula is written to the Pool's annotation podbatch.io/evaluate
with a fresh id; the operator evaluates it on the pool's own samples (the history only it
keeps) without applying it, and answers in status.autoScaleEvaluation; this prints each
variable and the result."""
from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from typing import Any, Callable

ANNOTATION = "podbatch.io/evaluate"


def add_commands(cmd: Callable[..., argparse.ArgumentParser], sub: Any) -> None:
    pool = cmd("pool", "pool operations")
    psub = pool.add_subparsers(dest="action", metavar="ACTION", required=True)
    x = cmd("evaluate", "evaluate an autoscale formula on the pool's samples without applying it (Batch's "
                        "evaluateAutoScale); without --formula, the pool's own", psub)
    x.add_argument("pool")
    x.add_argument("--formula", help="the formula to try")
    x.add_argument("--formula-file", metavar="PATH", help="read the formula from a file (- for stdin)")
    x.add_argument("-o", "--output", choices=("json", "yaml"), help="the whole answer instead of a table")
    x.add_argument("--timeout", type=float, default=30, help="seconds to wait for the operator's answer (default 30)")
    x.set_defaults(run=cmd_evaluate)


def parse_results(results: str | None) -> list[tuple[str, str]]:
    """Batch's `$a=1;$b=[1,2]` into [(name, value)] (a ';' inside brackets stays)."""
    out, depth, cur = [], 0, ""
    for ch in (results or "") + ";":
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == ";" and depth <= 0:
            if "=" in cur:
                name, value = cur.split("=", 1)
                out.append((name.strip(), value.strip()))
            cur = ""
        else:
            cur += ch
    return out


def render(answer: dict) -> str:
    if answer.get("error"):
        err = answer["error"]
        return f"error ({err.get('code')}): {err.get('message')}"
    rows = parse_results(answer.get("results"))
    width = max((len(n) for n, _ in rows), default=8)
    return "\n".join(f"{n:<{width}}  {v}" for n, v in rows)


def _formula(args: argparse.Namespace) -> str | None:
    if args.formula_file:
        text = sys.stdin.read() if args.formula_file == "-" else open(args.formula_file, encoding="utf-8").read()
        return text
    return args.formula


def cmd_evaluate(args: argparse.Namespace, out=None) -> int:
    from podbatch.cli.kube import CliError, Cluster, new_client
    from kubernetes.client.rest import ApiException
    from podbatch import GROUP, VERSION
    out = out or sys.stdout
    api, default_ns = new_client(getattr(args, "kubeconfig", None), getattr(args, "context", None))
    cluster = Cluster(api, getattr(args, "namespace", None) or default_ns)
    pool = cluster.get("Pool", args.pool)
    formula = _formula(args)
    if formula is None and not pool["spec"].get("autoScaleFormula"):
        raise CliError(f"pool {args.pool} has no autoScaleFormula: give one with --formula")
    rid = uuid.uuid4().hex[:12]
    try:
        cluster.custom.patch_namespaced_custom_object(
            GROUP, VERSION, cluster.namespace, "pools", args.pool,
            {"metadata": {"annotations": {ANNOTATION: json.dumps({"id": rid, **({"formula": formula} if formula else {})})}}},
            _content_type="application/merge-patch+json")
    except ApiException as e:
        raise CliError(f"asking pool {args.pool} to evaluate: {e.reason} ({e.status})") from None
    deadline = time.monotonic() + args.timeout
    answer = None
    while time.monotonic() < deadline:
        answer = ((cluster.get("Pool", args.pool).get("status") or {}).get("autoScaleEvaluation") or {})
        if answer.get("id") == rid:
            break
        time.sleep(0.5)
    else:
        raise CliError(f"no answer from the operator within {args.timeout:.0f}s (is podbatch running for namespace "
                       f"{cluster.namespace}?)")
    if args.output == "json":
        print(json.dumps(answer, indent=2), file=out)
    elif args.output == "yaml":
        import yaml
        print(yaml.safe_dump(answer, sort_keys=False).rstrip(), file=out)
    else:
        print(render(answer), file=out)
    return 1 if answer.get("error") else 0
