"""`podbatch-operator` as installed: the operator's entry point, behind a check that the
operator's dependencies are there. They are the `operator` extra (`pip install
'podbatch[operator]'`); `pipx install podbatch` installs the CLI alone, and this says so
instead of failing with an ImportError deep in kopf's import."""
from __future__ import annotations

import importlib.util
import sys

OPERATOR_MODULES = ("kopf", "kubernetes_asyncio", "prometheus_client", "pydantic_settings", "azure.storage.blob")


def missing_modules() -> list[str]:
    out = []
    for name in OPERATOR_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):   # a parent package is missing, or set to None
            found = False
        if not found:
            out.append(name)
    return out


def main() -> int:
    missing = missing_modules()
    if missing:
        print(f"error: podbatch-operator needs the operator's dependencies ({', '.join(missing)} missing): "
              "pip install 'podbatch[operator]' (this installation has the kubectl-podbatch CLI only)",
              file=sys.stderr)
        return 2
    from podbatch.controllers.run import main as run
    run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
