from datetime import datetime, timezone

import pytest

from podbatch.core.schedule import cron_next, due, parse_cron

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc).timestamp()


def test_once_without_recurrence():
    d = due({}, created=T0, last_run=None, now=T0 + 1)
    assert (d.at, d.next_at) == (T0, None)
    assert due({}, created=T0, last_run=T0, now=T0 + 999).at is None


def test_recurrence_runs_the_latest_due_occurrence():
    s = {"recurrenceInterval": "PT10M"}
    assert due(s, created=T0, last_run=None, now=T0 + 5).at == T0
    d = due(s, created=T0, last_run=T0, now=T0 + 25 * 60)
    assert d.at == T0 + 20 * 60 and d.next_at == T0 + 30 * 60
    assert due(s, created=T0, last_run=T0 + 20 * 60, now=T0 + 25 * 60).at is None


def test_do_not_run_until_after_and_start_window():
    s = {"recurrenceInterval": "PT10M", "doNotRunUntil": "2026-11-25T13:00:00Z", "doNotRunAfter": "2026-11-25T13:15:00Z"}
    assert due(s, created=T0, last_run=None, now=T0 + 30 * 60).at is None
    d = due(s, created=T0, last_run=None, now=T0 + 3601)
    assert d.at == T0 + 3600 and d.next_at == T0 + 3600 + 600
    assert due(s, created=T0, last_run=T0 + 4200, now=T0 + 5000).next_at is None
    w = {"recurrenceInterval": "PT10M", "startWindow": "PT1M"}
    assert due(w, created=T0, last_run=T0, now=T0 + 13 * 60).at is None   # 12:10 missed its window


def test_cron():
    c = parse_cron("*/15 8-18 * * 1-5")
    wed_1801 = datetime(2026, 11, 25, 18, 1, tzinfo=timezone.utc).timestamp()
    thu_0800 = datetime(2026, 11, 26, 8, 0, tzinfo=timezone.utc).timestamp()
    assert cron_next(c, wed_1801 + 14 * 60, None) == wed_1801 + 29 * 60
    assert cron_next(c, wed_1801 + 44 * 60, None) == thu_0800
    berlin = cron_next(parse_cron("0 9 * * *"), T0, "Europe/Berlin")
    assert datetime.fromtimestamp(berlin, timezone.utc).hour == 8
    assert due({"cron": "0 * * * *"}, created=T0 - 1, last_run=None, now=T0 + 30).at == T0


@pytest.mark.parametrize("bad", ["* * *", "60 * * * *", "* 24 * * *", "*/0 * * * *", "5-1 * * * *"])
def test_bad_cron(bad):
    with pytest.raises(ValueError):
        parse_cron(bad)
