"""Durations as Batch writes them (ISO 8601, `PT30M`) or as Kubernetes does (`30m`)."""
from __future__ import annotations

import re

_ISO = re.compile(r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$")
_K8S = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(value: str | int | float | None) -> float | None:
    """Seconds in a duration string, or None when unset. Raises ValueError when malformed."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    m = _ISO.match(value)
    if m and value not in ("P", "PT") and not value.endswith("T"):
        d, h, mi, s = (float(m.group(k) or 0) for k in "dhms")
        return d * 86400 + h * 3600 + mi * 60 + s
    parts = _K8S.findall(value)
    if parts and "".join(n + u for n, u in parts) == value:
        return sum(float(n) * _UNIT[u] for n, u in parts)
    raise ValueError(f"{value!r} is not a duration: use ISO 8601 like PT30M or P1DT2H, or 30m / 1h30m")
