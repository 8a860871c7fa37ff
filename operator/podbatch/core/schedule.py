"""When a JobSchedule creates its next Job. Pure: times are epoch seconds, passed in.

Batch semantics: the first occurrence is at `doNotRunUntil` (or when the schedule was
created); then every `recurrenceInterval` (or at each `cron` time, in `timeZone`); none
after `doNotRunAfter`; an occurrence not started within `startWindow` is skipped; at most
one active job at a time (the engine waits for it)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from podbatch.core.durations import seconds

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 6))
MAX_STEPS = 100_000


@dataclass(frozen=True, slots=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]      # 0 = Sunday
    any_day: bool
    any_weekday: bool


def parse_cron(expr: str) -> Cron:
    """A 5-field cron expression (`*/15 8-18 * * 1-5`). ValueError says which field is wrong."""
    parts = expr.split()
    if len(parts) != 5:
        raise ValueError(f"cron {expr!r} must have 5 fields (minute hour day-of-month month day-of-week), not {len(parts)}")
    sets = []
    for text, (name, lo, hi) in zip(parts, _FIELDS):
        values: set[int] = set()
        for item in text.split(","):
            base, _, step_s = item.partition("/")
            step = int(step_s) if step_s else 1
            if base == "*":
                a, b = lo, hi
            elif "-" in base:
                a, b = (int(x) for x in base.split("-", 1))
            else:
                a = b = int(base)
            if name == "day of week" and b == 7:
                b = 7
            if step < 1 or a < lo or b > (7 if name == "day of week" else hi) or a > b:
                raise ValueError(f"cron field {name} {item!r} is out of range {lo}-{hi}")
            values.update(v % 7 if name == "day of week" else v for v in range(a, b + 1, step))
        sets.append(frozenset(values))
    return Cron(*sets, any_day=parts[2] == "*", any_weekday=parts[4] == "*")


def _cron_matches_day(c: Cron, d: datetime) -> bool:
    dom, dow = d.day in c.days, (d.isoweekday() % 7) in c.weekdays
    if c.any_day or c.any_weekday:
        return dom and dow
    return dom or dow        # classic cron: either day field may match


def cron_next(c: Cron, after: float, tz: str | None) -> float | None:
    """The first cron time strictly after `after`."""
    zone = ZoneInfo(tz) if tz else timezone.utc
    t = datetime.fromtimestamp(after, zone).replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(MAX_STEPS):
        if t.month not in c.months or not _cron_matches_day(c, t):
            t = (t + timedelta(days=1)).replace(hour=0, minute=0)
            continue
        if t.hour not in c.hours:
            t = (t + timedelta(hours=1)).replace(minute=0)
            continue
        if t.minute not in c.minutes:
            t += timedelta(minutes=1)
            continue
        return t.timestamp()
    return None


def _ts(value) -> float | None:
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True, slots=True)
class Due:
    at: float | None        # the occurrence to run now (None: nothing is due)
    next_at: float | None   # the next occurrence after `at` (None: the schedule has no more)


def due(schedule: dict, *, created: float, last_run: float | None, now: float) -> Due:
    """The latest occurrence that is due now and not yet run, and the one after it."""
    start = _ts(schedule.get("doNotRunUntil")) or created
    stop = _ts(schedule.get("doNotRunAfter"))
    window = seconds(schedule.get("startWindow"))
    interval = seconds(schedule.get("recurrenceInterval"))
    cron = parse_cron(schedule["cron"]) if schedule.get("cron") else None
    tz = schedule.get("timeZone")

    def following(t: float) -> float | None:
        if cron:
            return cron_next(cron, t, tz)
        return t + interval if interval else None

    first = cron_next(cron, start - 60, tz) if cron else start
    if first is None:
        return Due(None, None)
    # the latest occurrence <= now that comes after the last run
    current, nxt = None, first
    if last_run is not None:
        while nxt is not None and nxt <= last_run:
            nxt = following(nxt)
        if interval and not cron and nxt is not None and nxt <= now:   # jump, not step, over long gaps
            k = int((now - nxt) // interval)
            nxt += k * interval
    steps = 0
    while nxt is not None and nxt <= now and steps < MAX_STEPS:
        current, nxt = nxt, following(nxt)
        steps += 1
    if current is not None and window and now - current > window:
        current = None       # missed its start window: skipped, as in Batch
    if stop is not None:
        if current is not None and current > stop:
            current = None
        if nxt is not None and nxt > stop:
            nxt = None
    return Due(current, nxt)
