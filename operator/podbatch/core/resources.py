"""Kubernetes resource quantities for placement: what a task asks for and what a node has
left. Pure.

Amounts are integers in one unit per resource: CPU in millicores, everything else in its
base unit (bytes for memory and ephemeral storage, devices for GPUs), rounded up, so a
sum never under-counts what the kubelet will admit.
"""
from __future__ import annotations

from decimal import ROUND_CEILING, Decimal, InvalidOperation

Amounts = dict[str, int]

_BINARY = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1), "k": Decimal(10) ** 3,
            "M": Decimal(10) ** 6, "G": Decimal(10) ** 9, "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18}


class QuantityError(ValueError):
    pass


def quantity(value, resource: str) -> int:
    """A quantity ("500m", "2", "1.5Gi", "1e3", 4) in the resource's unit (see the module)."""
    text = str(value).strip()
    number, scale = text, Decimal(1)
    for suffix, factor in _BINARY.items():
        if text.endswith(suffix):
            number, scale = text[: -len(suffix)], Decimal(factor)
            break
    else:
        if text[-1:] in _DECIMAL and text[-1:] and not text[-1:].isdigit() and "e" not in text[:-1].lower():
            number, scale = text[:-1], _DECIMAL[text[-1]]
    try:
        amount = Decimal(number) * scale
    except InvalidOperation:
        raise QuantityError(f"{value!r} is not a Kubernetes quantity (e.g. 500m, 2, 1.5Gi)") from None
    if amount < 0:
        raise QuantityError(f"{value!r} is negative")
    if resource == "cpu":
        amount *= 1000
    return int(amount.to_integral_value(rounding=ROUND_CEILING))


def amounts(resources: dict | None) -> Amounts:
    """{resource: amount} of a requests (or allocatable) map; unparsable entries are left out
    (the API server validated pods; a Task's are validated by its schema)."""
    out: Amounts = {}
    for name, value in (resources or {}).items():
        try:
            out[name] = quantity(value, name)
        except QuantityError:
            continue
    return out


def task_requests(task_spec: dict) -> Amounts:
    """What one instance of a task asks of its node: its container's requests (limits stand
    in for requests left unset, as Kubernetes defaults them)."""
    res = task_spec.get("resources") or {}
    return {**amounts(res.get("limits")), **amounts(res.get("requests"))}


def fits(requests: Amounts, free: Amounts | None) -> bool:
    """Whether `requests` fit in `free` (None: the node's resources are not known, so only
    slots count). A resource the node does not offer at all fits only a request of 0."""
    if free is None:
        return True
    return all(free.get(name, 0) >= amount for name, amount in requests.items() if amount)


def left(allocatable: Amounts, used: list[Amounts]) -> Amounts:
    out = dict(allocatable)
    for u in used:
        for name, amount in u.items():
            out[name] = out.get(name, 0) - amount
    return out


def show(requests: Amounts) -> str:
    """Human form: "cpu 1500m, memory 2Gi"."""
    return ", ".join(f"{name} {_human(name, amount)}" for name, amount in sorted(requests.items()) if amount) or "nothing"


def _human(name: str, amount: int) -> str:
    if name == "cpu":
        return f"{amount // 1000}" if amount % 1000 == 0 else f"{amount}m"
    if name in ("memory", "ephemeral-storage") or name.startswith("hugepages-"):
        for suffix in ("Ti", "Gi", "Mi", "Ki"):
            if amount >= _BINARY[suffix]:
                return f"{round(amount / _BINARY[suffix], 1):g}{suffix}"
    return str(amount)
