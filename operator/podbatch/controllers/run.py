"""`podbatch-operator`: run the operator (standalone, all namespaces or PODBATCH_NAMESPACES)."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import sys


class JsonFormatter(logging.Formatter):
    """One JSON object per line (PODBATCH_LOG_FORMAT=json), for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname,
               "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


def main() -> None:
    p = argparse.ArgumentParser(prog="podbatch-operator", description=__doc__)
    p.add_argument("--liveness", default=None, help="kopf liveness endpoint, e.g. http://0.0.0.0:8081/healthz")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    # kopf's import looks for the synchronous `kubernetes` client (the CLI's) to log in with,
    # and importing it loads every one of its models: ~18 MiB of RSS the operator never uses.
    # Without it kopf logs in with kubernetes_asyncio, the engine's client, from the same
    # in-cluster account or kubeconfig.
    sys.modules.setdefault("kubernetes", None)
    from podbatch.controllers import handlers  # registers the handlers; validates settings
    import kopf
    level = logging.DEBUG if args.verbose else getattr(logging, handlers.SETTINGS.log_level.upper(), logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if handlers.SETTINGS.log_format == "json":
        for h in logging.getLogger().handlers:
            h.setFormatter(JsonFormatter())
    from podbatch import __version__, metrics
    metrics.BUILD_INFO.labels(__version__, platform.python_version()).set(1)
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)   # a line per liveness probe otherwise
    namespaces = handlers.SETTINGS.namespace_list
    asyncio.run(kopf.operator(standalone=True, clusterwide=not namespaces, namespaces=namespaces or (),
                              liveness_endpoint=args.liveness))


if __name__ == "__main__":
    main()
