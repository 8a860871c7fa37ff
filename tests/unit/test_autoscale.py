"""The Batch autoscale formula language: the docs' example formulas, errors with positions, limits."""
from __future__ import annotations

import calendar
import random

import pytest

from podbatch.core import autoscale
from podbatch.core.autoscale import (
    FormulaError, Metrics, Program, Result, Sample, TimeInterval, Timestamp, evaluate, parse,
)

# Wednesday 2024-01-17 10:00:00 UTC
NOW = float(calendar.timegm((2024, 1, 17, 10, 0, 0)))


def at(year, month, day, hour=0, minute=0, second=0) -> float:
    return float(calendar.timegm((year, month, day, hour, minute, second)))


def series(values, *, now=NOW, every=30.0) -> list[Sample]:
    """Samples every `every` seconds, the newest (last value) at `now`."""
    n = len(values)
    return [Sample(now - every * (n - 1 - i), float(v)) for i, v in enumerate(values)]


def run(formula: str, *, now=NOW, samples=None, rng=None, **scalars) -> Result:
    scalars = {("$" + k if not k.startswith("$") else k): float(v) for k, v in scalars.items()}
    return evaluate(parse(formula), Metrics(now=now, samples=samples or {}, scalars=scalars), rng=rng)


def value(expr: str, **kw):
    """The value of one expression, through a user variable."""
    return run(f"$v = {expr};", **kw).variables["$v"]


def parse_error(formula: str) -> FormulaError:
    with pytest.raises(FormulaError) as info:
        parse(formula)
    return info.value


def eval_error(formula: str, **kw) -> FormulaError:
    program = parse(formula)  # must parse: the error is a runtime one
    with pytest.raises(FormulaError) as info:
        run(formula, **kw)
    assert isinstance(program, Program)
    return info.value


# ------------------------------------------------------------------------ the docs' formulas

PENDING_TASKS = """startingNumberOfVMs = 1;
maxNumberofVMs = 25;
pendingTaskSamplePercent = $PendingTasks.GetSamplePercent(180 * TimeInterval_Second);
pendingTaskSamples = pendingTaskSamplePercent < 70 ? startingNumberOfVMs : avg($PendingTasks.GetSample(180 * TimeInterval_Second));
$TargetDedicatedNodes=min(maxNumberofVMs, pendingTaskSamples);
$NodeDeallocationOption = taskcompletion;
"""


def test_pending_tasks_formula_averages_the_last_180_seconds():
    # 20 samples (10 min), 0..19; the last 180 s hold 14..19 (6 samples: one every 30 s)
    r = run(PENDING_TASKS, samples={"$PendingTasks": series(range(20))}, CurrentDedicatedNodes=2)
    assert r.variables["$pendingTaskSamplePercent"] == 100.0
    assert r.variables["$pendingTaskSamples"] == 16.5
    assert r.target_dedicated == 16  # 16.5 truncated, as Batch does
    assert r.node_deallocation_option == "taskcompletion"
    assert r.results_string() == (
        "$TargetDedicatedNodes=16;$TargetLowPriorityNodes=0;$NodeDeallocationOption=taskcompletion;"
        "$maxNumberofVMs=25;$pendingTaskSamplePercent=100;$pendingTaskSamples=16.5;$startingNumberOfVMs=1")


def test_pending_tasks_formula_caps_at_25_and_falls_back_without_enough_samples():
    r = run(PENDING_TASKS, samples={"$PendingTasks": series([100] * 6)})
    assert r.target_dedicated == 25
    # 4 of 6 expected samples = 66.7% < 70: the starting number
    sparse = [s for i, s in enumerate(series([100] * 6)) if i % 3 != 0]
    r = run(PENDING_TASKS, samples={"$PendingTasks": sparse})
    assert round(r.variables["$pendingTaskSamplePercent"], 1) == 66.7
    assert r.target_dedicated == 1
    # a new pool without samples scales to the starting number too
    assert run(PENDING_TASKS).target_dedicated == 1


def test_preempted_nodes_formula_reads_the_target_it_just_set():
    formula = """maxNumberofVMs = 25;
$TargetDedicatedNodes = min(maxNumberofVMs, $PreemptedNodeCount.GetSample(180 * TimeInterval_Second));
$TargetLowPriorityNodes = min(maxNumberofVMs , maxNumberofVMs - $TargetDedicatedNodes);
$NodeDeallocationOption = taskcompletion;"""
    r = run(formula, samples={"$PreemptedNodeCount": series([9, 5, 4, 3, 3, 4, 6])})
    assert (r.target_dedicated, r.target_low_priority) == (3, 22)


TIME_OF_DAY = """
$curTime = time();
$workHours = $curTime.hour >= 8 && $curTime.hour < 18;
$isWeekday = $curTime.weekday >= 1 && $curTime.weekday <= 5;
$isWorkingWeekdayHour = $workHours && $isWeekday;
$TargetDedicatedNodes = $isWorkingWeekdayHour ? 20:10;
$NodeDeallocationOption = taskcompletion;
"""


@pytest.mark.parametrize("now, expected", [
    (at(2024, 1, 17, 10), 20),          # Wednesday 10:00
    (at(2024, 1, 17, 8), 20),           # Wednesday 08:00
    (at(2024, 1, 17, 18), 10),          # Wednesday 18:00: after work hours
    (at(2024, 1, 15, 7, 59, 59), 10),   # Monday before 8
    (at(2024, 1, 19, 17, 59), 20),      # Friday
    (at(2024, 1, 20, 12), 10),          # Saturday
    (at(2024, 1, 21, 12), 10),          # Sunday (weekday 0)
])
def test_time_of_day_formula(now, expected):
    assert run(TIME_OF_DAY, now=now).target_dedicated == expected


def test_time_of_day_results_look_like_batch():
    r = run(TIME_OF_DAY, now=at(2016, 10, 13, 19, 18, 47) + 0.805)
    assert r.results_string() == (
        "$TargetDedicatedNodes=10;$TargetLowPriorityNodes=0;$NodeDeallocationOption=taskcompletion;"
        "$curTime=2016-10-13T19:18:47.805Z;$isWeekday=1;$isWorkingWeekdayHour=0;$workHours=0")
    assert isinstance(r.variables["$curTime"], Timestamp)


def test_local_time_zone_offset():
    formula = "$curTime = time() + (-6 * TimeInterval_Hour); $TargetDedicatedNodes = $curTime.hour;"
    assert run(formula, now=at(2024, 1, 17, 3)).target_dedicated == 21


def test_monday_formula_from_the_sdk_samples():
    formula = "$TargetDedicatedNodes = (time().weekday == 1 ? 5:1);"
    assert run(formula, now=at(2024, 1, 15, 12)).target_dedicated == 5
    assert run(formula, now=at(2024, 1, 16, 12)).target_dedicated == 1


CPU = """$totalDedicatedNodes =
    (min($CPUPercent.GetSample(TimeInterval_Minute * 10)) > 0.7) ?
    ($CurrentDedicatedNodes * 1.1) : $CurrentDedicatedNodes;
$totalDedicatedNodes =
    (avg($CPUPercent.GetSample(TimeInterval_Minute * 60)) < 0.2) ?
    ($CurrentDedicatedNodes * 0.9) : $totalDedicatedNodes;
$TargetDedicatedNodes = min(400, $totalDedicatedNodes)
"""


def test_cpu_formula_without_a_final_semicolon():
    busy = {"$CPUPercent": series([0.9] * 120)}
    assert run(CPU, samples=busy, CurrentDedicatedNodes=20).target_dedicated == 22
    idle = {"$CPUPercent": series([0.1] * 120)}
    assert run(CPU, samples=idle, CurrentDedicatedNodes=20).target_dedicated == 18
    assert run(CPU, samples=busy, CurrentDedicatedNodes=1000).target_dedicated == 400


TASK_BASED = """// Get pending tasks for the past 15 minutes.
$samples = $PendingTasks.GetSamplePercent(TimeInterval_Minute * 15);
// If we have fewer than 70 percent data points, we use the last sample point,
// otherwise we use the maximum of last sample point and the history average.
$tasks = $samples < 70 ? max(0,$PendingTasks.GetSample(1)) : max( $PendingTasks.GetSample(1), avg($PendingTasks.GetSample(TimeInterval_Minute * 15)));
// If number of pending tasks is not 0, set targetVM to pending tasks, otherwise
// half of current dedicated.
$targetVMs = $tasks > 0? $tasks:max(0, $TargetDedicatedNodes/2);
// The pool size is capped at 20, if target VM value is more than that, set it
// to 20. This value should be adjusted according to your use case.
$TargetDedicatedNodes = max(0, min($targetVMs, 20));
// Set node deallocation mode - let running tasks finish before removing a node
$NodeDeallocationOption = taskcompletion;
"""


def test_task_based_formula_with_comments():
    full = {"$PendingTasks": series([10] * 29 + [4])}  # avg ~9.8 over 15 min, last 4
    r = run(TASK_BASED, samples=full, CurrentDedicatedNodes=6)
    assert r.variables["$samples"] == 100.0 and r.target_dedicated == 9
    few = {"$PendingTasks": series([7, 4])}             # < 70%: the last sample
    assert run(TASK_BASED, samples=few, CurrentDedicatedNodes=6).target_dedicated == 4
    none_pending = {"$PendingTasks": series([0] * 30)}  # no tasks: half the current target
    assert run(TASK_BASED, samples=none_pending, CurrentDedicatedNodes=6).target_dedicated == 3
    assert run(TASK_BASED, samples={"$PendingTasks": series([50] * 30)}).target_dedicated == 20


def test_parallel_tasks_formula():
    formula = """$samples = $ActiveTasks.GetSamplePercent(TimeInterval_Minute * 15);
$tasks = $samples < 70 ? max(0,$ActiveTasks.GetSample(1)) : max( $ActiveTasks.GetSample(1),avg($ActiveTasks.GetSample(TimeInterval_Minute * 15)));
$cores = $TargetDedicatedNodes * 4;
$extraVMs = (($tasks - $cores) + 3) / 4;
$targetVMs = ($TargetDedicatedNodes + $extraVMs);
$TargetDedicatedNodes = max(0,min($targetVMs,3));
$NodeDeallocationOption = taskcompletion;"""
    r = run(formula, samples={"$ActiveTasks": series([9] * 30)}, CurrentDedicatedNodes=1)
    assert r.variables["$extraVMs"] == 2.0 and r.target_dedicated == 3
    r = run(formula, samples={"$ActiveTasks": series([0] * 30)}, CurrentDedicatedNodes=1)
    assert r.target_dedicated == 0  # 1 + (0 - 4 + 3) / 4 = 0.75, truncated


def test_initial_pool_size_formula():
    created = "Wed, 17 Jan 2024 09:55:00 GMT"  # DateTime.UtcNow.ToString("r")
    formula = f"""
    $TargetDedicatedNodes = 4;
    lifespan         = time() - time("{created}");
    span             = TimeInterval_Minute * 60;
    startup          = TimeInterval_Minute * 10;
    ratio            = 50;

    $TargetDedicatedNodes = (lifespan > startup ? (max($RunningTasks.GetSample(span, ratio), $ActiveTasks.GetSample(span, ratio)) == 0 ? 0 : $TargetDedicatedNodes) : 4);
    """
    idle = {"$RunningTasks": series([0] * 120), "$ActiveTasks": series([0] * 120)}
    r = run(formula, samples=idle)
    assert r.variables["$lifespan"] == TimeInterval(300.0) and r.target_dedicated == 4  # still starting up
    later = at(2024, 1, 17, 11)
    idle = {k: series([0] * 120, now=later) for k in ("$RunningTasks", "$ActiveTasks")}
    assert run(formula, now=later, samples=idle).target_dedicated == 0
    busy = dict(idle, **{"$ActiveTasks": series([0] * 119 + [3], now=later)})
    assert run(formula, now=later, samples=busy).target_dedicated == 4
    # too few samples for the 50% the formula requires: Batch fails the evaluation
    err = eval_error(formula, now=later, samples={k: series([0] * 40, now=later) for k in idle})
    assert err.code == "InsufficientSampleData" and err.line == 8


# ----------------------------------------------------------------------------- semantics

def test_unassigned_targets_default_to_the_current_values():
    r = run("x = 1;", CurrentDedicatedNodes=3, CurrentLowPriorityNodes=2)
    assert (r.target_dedicated, r.target_low_priority, r.node_deallocation_option) == (3, 2, None)
    assert r.results_string() == ("$TargetDedicatedNodes=3;$TargetLowPriorityNodes=2;"
                                  "$NodeDeallocationOption=requeue;$x=1")
    # the pool's current target, when the controller knows it, wins over the node count
    assert run("x = 1;", CurrentDedicatedNodes=3, TargetDedicatedNodes=5).target_dedicated == 5
    assert run("$TargetDedicatedNodes = $TargetDedicatedNodes + 1;", TargetDedicatedNodes=5).target_dedicated == 6


@pytest.mark.parametrize("expr, expected", [("-3", 0), ("2.999", 2), ("0.5", 0), ("7", 7), ("1e12", 2**31 - 1)])
def test_targets_are_clamped_and_truncated(expr, expected):
    r = run(f"$TargetDedicatedNodes = {expr}; $TargetLowPriorityNodes = {expr};")
    assert r.target_dedicated == r.target_low_priority == expected
    assert r.variables["$TargetDedicatedNodes"] == expected


def test_aliases_and_full_name_precedence():
    assert run("$TargetDedicated = 4; $TargetLowPriority = 2;").target_dedicated == 4
    assert run("$TargetDedicated = 4; $TargetLowPriority = 2;").target_low_priority == 2
    r = run("$TargetDedicatedNodes = 7; $TargetDedicated = 4;")
    assert r.target_dedicated == 7 and "$TargetDedicated" not in r.variables


def test_user_variables_with_and_without_dollar_are_the_same():
    r = run("x = 2; $x = x * 3; $TargetDedicatedNodes = x;")
    assert r.target_dedicated == 6 and r.variables["$x"] == 6.0


def test_stop_ends_the_evaluation_keeping_what_was_assigned():
    r = run("$TargetDedicatedNodes = 2; x = $PendingTasks.Count() == 0 ? stop() : 1; $TargetDedicatedNodes = 9;")
    assert r.target_dedicated == 2 and "$x" not in r.variables


def test_ternary_and_logical_operators_are_lazy_and_nest():
    assert value("0 ? 1/0 : 2") == 2.0
    assert value("0 && 1/0") == 0.0 and value("1 || 1/0") == 1.0
    assert value("1 ? 0 ? 5 : 6 : 7") == 6.0
    assert value("!0") == 1.0 and value("!3") == 0.0 and value("-(2 - 5)") == 3.0


@pytest.mark.parametrize("expr, expected", [
    ("1 + 2 * 3", 7.0), ("(1 + 2) * 3", 9.0), ("10 / 4", 2.5), ("7 - 2 - 1", 4.0), ("8 / 2 / 2", 2.0),
    ("1 < 2", 1.0), ("2 <= 1", 0.0), ("2 == 2", 1.0), ("2 != 2", 0.0), ("3 >= 3 && 4 > 5", 0.0),
    ("1 < 2 == 1", 1.0), ("-2 * -3", 6.0), (".5 + 1.5e1", 15.5),
    ('"abc" < "abd"', 1.0), ('"x" == "x"', 1.0), ("taskcompletion == \"taskcompletion\"", 1.0),
    ("TimeInterval_Minute > 59 * TimeInterval_Second", 1.0),
    ("TimeInterval_Hour == 60 * TimeInterval_Minute", 1.0),
    ("time() > time(\"2024-01-01T00:00:00Z\")", 1.0),
])
def test_operators(expr, expected):
    assert value(expr) == expected


def test_time_arithmetic():
    assert value("2 * TimeInterval_Minute + TimeInterval_Second * 3") == TimeInterval(123.0)
    assert value("TimeInterval_Hour / 4 - TimeInterval_Minute") == TimeInterval(840.0)
    assert value("-TimeInterval_Day") == TimeInterval(-86400.0)
    assert value("TimeInterval_Week") == TimeInterval(604800.0)
    assert value("TimeInterval_Zero") == TimeInterval(0.0)
    assert value("time() - time(\"2024-01-17T09:00:00Z\")") == TimeInterval(3600.0)
    assert value("TimeInterval_Hour + time()") == Timestamp(NOW + 3600)
    assert value("time() - TimeInterval_Day").datetime.day == 16
    assert str(TimeInterval(90061.5)) == "1.01:01:01.5000000"
    assert str(TimeInterval(-180)) == "-00:03:00"
    assert run("$t = 3 * TimeInterval_Minute;").results_string().endswith(";$t=00:03:00")


@pytest.mark.parametrize("text", [
    "2024-01-17T10:00:00Z", "2024-01-17T10:00:00.000Z", "2024-01-17T11:00+01:00", "2024-01-17T05:00:00-05:00",
    "Wed, 17 Jan 2024 10:00:00 GMT", "2024-01-17T10:00:00",
])
def test_time_parses_w3c_dtf_and_rfc1123(text):
    assert value(f'time("{text}")') == Timestamp(NOW)


def test_time_members_and_date_only_strings():
    r = run('t = time("2024-02-29"); y = t.year; mo = t.month; d = t.day; wd = t.weekday; '
            'h = t.hour; mi = time().minute; s = time().second;')
    v = r.variables
    assert (v["$y"], v["$mo"], v["$d"], v["$wd"], v["$h"], v["$mi"], v["$s"]) == (2024, 2, 29, 4, 0, 0, 0)


def test_doublevec_arithmetic_is_elementwise():
    samples = {"$ActiveTasks": series([1, 2, 3]), "$RunningTasks": series([10, 20, 30])}
    r = run("a = $ActiveTasks.GetSample(3); r = $RunningTasks.GetSample(3); "
            "s = a + r; d = r - a; p = a * 2; q = r / 10; b = 1 + a; n = -a; m = max(s); "
            "$TargetDedicatedNodes = max(a + r);", samples=samples)
    v = r.variables
    assert v["$s"] == (11.0, 22.0, 33.0) and v["$d"] == (9.0, 18.0, 27.0) and v["$p"] == (2.0, 4.0, 6.0)
    assert v["$q"] == (1.0, 2.0, 3.0) and v["$b"] == (2.0, 3.0, 4.0) and v["$n"] == (-1.0, -2.0, -3.0)
    assert r.target_dedicated == 33 and "$s=[11,22,33]" in r.results_string()


def test_functions_over_double_vec_lists():
    samples = {"$PendingTasks": series([1, 2, 3, 4])}
    v = "$PendingTasks.GetSample(4)"
    cases = {
        f"avg({v})": 2.5, f"avg({v}, 7)": 17 / 5, "avg(1, 2, 3)": 2.0, f"len({v}, 1)": 5.0,
        f"max({v})": 4.0, f"min({v}, 0)": 0.0, f"max(0, {v})": 4.0, f"sum({v})": 10.0,
        f"range({v})": 3.0, "norm(3, 4)": 5.0, "std(2, 4, 4, 4, 5, 5, 7, 9)": 2.138089935299395,
        "std(5)": 0.0, f"val({v}, 0)": 1.0, f"val({v}, 3)": 4.0, f"percentile({v}, 50)": 2.0,
        f"percentile({v}, 100)": 4.0, f"percentile({v}, 0)": 1.0, f"percentile({v}, 75)": 3.0,
        "lg(8)": 3.0, "ln(1)": 0.0, "log(1000)": 3.0, "ceil(1.2)": 2.0, "floor(-1.2)": -2.0,
        "round(2.5)": 3.0, "round(-2.5)": -3.0, "round(2.4)": 2.0,
    }
    for expr, expected in cases.items():
        assert value(expr, samples=samples) == pytest.approx(expected), expr
    assert value(f"lg({v})", samples=samples) == pytest.approx((0.0, 1.0, 1.584962500721156, 2.0))
    assert value("log(10, 100)") == (1.0, 2.0)
    assert value(f"ceil({v} / 3)", samples=samples) == (1.0, 1.0, 1.0, 2.0)


def test_rand_is_in_0_1_and_reproducible_with_an_rng():
    a = value("rand()", rng=random.Random(7))
    assert 0.0 <= a < 1.0 and a == value("rand()", rng=random.Random(7))


def test_sample_methods():
    history = series(range(10))  # 4.5 minutes of history, newest at NOW
    samples = {"$CPUPercent": history}
    assert value("$CPUPercent.Count()", samples=samples) == 10.0
    assert value("$CPUPercent.HistoryBeginTime()", samples=samples) == Timestamp(NOW - 270)
    assert value("$CPUPercent.GetSamplePeriod()", samples=samples) == TimeInterval(30.0)
    assert value("$CPUPercent.GetSample(3)", samples=samples) == (7.0, 8.0, 9.0)
    assert value("$CPUPercent.GetSample(TimeInterval_Minute * 2)", samples=samples) == (6.0, 7.0, 8.0, 9.0)
    # look-back start and end: between 1 and 3 minutes ago
    assert value("$CPUPercent.GetSample(1 * TimeInterval_Minute, 3 * TimeInterval_Minute)",
                 samples=samples) == (4.0, 5.0, 6.0, 7.0)
    assert value("$CPUPercent.GetSample(time() - 2 * TimeInterval_Minute, time() - TimeInterval_Minute, 100)",
                 samples=samples) == (6.0, 7.0)
    assert value("$CPUPercent.GetSamplePercent(TimeInterval_Minute * 10)", samples=samples) == 50.0
    assert value("$CPUPercent.GetSamplePercent(TimeInterval_Minute, TimeInterval_Minute * 3)",
                 samples=samples) == 100.0
    assert value("$CPUPercent.GetSample(TimeInterval_Minute * 10)", samples={}) == ()
    assert value("$CPUPercent.GetSamplePercent(TimeInterval_Minute * 10)", samples={}) == 0.0


def test_get_sample_percent_semantics_from_the_docs():
    # 10 minutes = 20 expected samples; the last minute is missing: 18 = 90%
    samples = {"$CPUPercent": [s for s in series([50] * 20) if s.time <= NOW - 60]}
    assert value("$CPUPercent.GetSamplePercent(TimeInterval_Minute * 10)", samples=samples) == 90.0
    assert len(value("$CPUPercent.GetSample(TimeInterval_Minute * 10, 80)", samples=samples)) == 18
    err = eval_error("$v = $CPUPercent.GetSample(TimeInterval_Minute * 10, 95);", samples=samples)
    assert err.code == "InsufficientSampleData" and (err.line, err.column) == (1, 6)
    assert "90% of the expected samples" in str(err) and "95% required" in str(err)
    assert "GetSamplePercent" in str(err)


def test_unsorted_and_future_samples_are_handled():
    history = list(reversed(series(range(5)))) + [Sample(NOW + 300, 99.0)]
    assert value("$PendingTasks.GetSample(2)", samples={"$PendingTasks": history}) == (3.0, 4.0)


def test_program_is_reusable():
    program = parse("$TargetDedicatedNodes = max($PendingTasks.GetSample(1));")
    for n in (1, 5, 2):
        metrics = Metrics(now=NOW, samples={"$PendingTasks": series([n])}, scalars={})
        assert evaluate(program, metrics).target_dedicated == n
    assert program.assigned_variables == ("$TargetDedicatedNodes",)


def test_scalars_read_as_doubles():
    r = run("$TargetDedicatedNodes = $TaskSlotsPerNode * $UsableNodeCount;", TaskSlotsPerNode=4, UsableNodeCount=3)
    assert r.target_dedicated == 12


def test_comments_and_whitespace():
    formula = "/* block\n comment */ $TargetDedicatedNodes = /* inline */ 3; // trailing\n// only a comment\n"
    assert run(formula).target_dedicated == 3


# ------------------------------------------------------------------------------ parse errors

@pytest.mark.parametrize("formula, line, column, words", [
    ("$x = 1 +;", 1, 9, "expected a value"),
    ("$x = (1 + 2;", 1, 12, "expected ')'"),
    ("$x = 1\n$y = 2;", 2, 1, "expected ';'"),
    ("$x = max(1, 2;", 1, 14, "expected ')'"),
    ("$x = 1 ? 2;", 1, 11, "expected ':'"),
    ("$x 1;", 1, 4, "expected '='"),
    ("a = 1;\n  b = 2 % 3;", 2, 9, "no modulo"),
    ("$x = 1 & 2;", 1, 8, "use &&"),
    ("x = \"abc;", 1, 5, "unterminated string"),
    ("x = 1; /* never closed", 1, 8, "unterminated comment"),
    ("1 + 2;", 1, 1, "must start with a variable"),
    ("max(1, 2);", 1, 1, "must assign a variable"),
    ("$ = 1;", 1, 1, "unexpected character '$'"),
    ("x = 12abc;", 1, 5, "malformed number"),
    ("x == 1;", 1, 3, "expected '='"),
    ("x = y = 1;", 1, 5, "used before it is assigned"),
    ("x = 1 = 2;", 1, 7, "expected ';'"),
    ("x = $PendingTasks.GetSample(1).hour.;", 1, 37, "expected a member"),
    ("", 1, 1, "no statements"),
    ("// nothing\n;;", 1, 1, "no statements"),
])
def test_syntax_errors_say_where_and_what(formula, line, column, words):
    err = parse_error(formula)
    assert (err.line, err.column) == (line, column), str(err)
    assert words in str(err)
    assert str(err).startswith(f"line {line}, column {column}: ")


def test_unknown_functions_and_methods():
    err = parse_error("$TargetDedicatedNodes = avrg($PendingTasks.GetSample(1));")
    assert err.code == "UnknownFunction" and (err.line, err.column) == (1, 25)
    assert "unknown function avrg()" in str(err) and "did you mean avg?" in str(err)
    err = parse_error("x = Max(1, 2);")
    assert err.code == "UnknownFunction" and "did you mean max?" in str(err)
    err = parse_error("x = $PendingTasks.GetSamples(1);")
    assert err.code == "UnknownFunction" and "did you mean GetSample?" in str(err)
    err = parse_error('x = __import__("os");')
    assert err.code == "UnknownFunction"
    err = parse_error("x = 1; y = x.GetSample(1);")
    assert err.code == "TypeError" and "service-defined metric" in str(err)
    err = parse_error("x = time().hours;")
    assert "unknown member .hours" in str(err) and "did you mean hour?" in str(err)
    err = parse_error("x = $PendingTasks.Count;")
    assert "call it" in str(err)


@pytest.mark.parametrize("formula, words", [
    ("x = max();", "max() takes at least 1 argument"),
    ("x = rand(1);", "rand() takes 0 arguments"),
    ("x = val(1);", "val() takes 2 arguments"),
    ("x = time(1, 2);", "time() takes 0 to 1 arguments"),
    ("x = $PendingTasks.GetSample();", "GetSample() takes 1 to 3 arguments"),
    ("x = $PendingTasks.GetSample(1, 2, 3, 4);", "GetSample() takes 1 to 3 arguments"),
])
def test_arity_is_checked_when_parsing(formula, words):
    assert words in str(parse_error(formula))


@pytest.mark.parametrize("formula", [
    "$PendingTasks = 1;", "$CPUPercent = 3;", "$CurrentDedicatedNodes = 2;", "$TaskSlotsPerNode = 4;",
    "x = 1;\n$ActiveTasks = x;",
])
def test_read_only_variables_cannot_be_assigned(formula):
    err = parse_error(formula)
    assert err.code == "ReadOnlyVariable" and "read-only" in str(err) and "$TargetDedicatedNodes" in str(err)
    assert err.column == 1


def test_constants_cannot_be_assigned_and_names_are_checked():
    assert parse_error("TimeInterval_Second = 2;").code == "ReadOnlyVariable"
    assert parse_error("requeue = 2;").code == "ReadOnlyVariable"
    err = parse_error("$targetDedicatedNodes = 2;")
    assert "did you mean $TargetDedicatedNodes?" in str(err)
    err = parse_error("PendingTasks = 2;")
    assert "write $PendingTasks" in str(err)
    err = parse_error("x = 3 * TimeInterval_Minutes;")
    assert "unknown time interval" in str(err) and "TimeInterval_Minute?" in str(err)
    err = parse_error("x = 1;\ny = totl + x;")
    assert err.code == "UndefinedVariable" and (err.line, err.column) == (2, 5)


def test_limits_are_batchs():
    parse("\n".join(f"x{i} = {i};" for i in range(100)))
    err = parse_error("\n".join(f"x{i} = {i};" for i in range(101)))
    assert err.code == "LimitExceeded" and err.line == 101
    err = parse_error("x = 1;" + " " * 8192)
    assert err.code == "LimitExceeded" and "8 KB" in str(err)
    err = parse_error("x = " + "(" * 150 + "1" + ")" * 150 + ";")
    assert err.code == "LimitExceeded" and err.column == 5 + autoscale.MAX_NESTING
    assert parse_error("x = " + "-" * 500 + "1;").code == "LimitExceeded"
    assert parse_error("x = " + "max(" * 100 + "1" + ")" * 100 + ";").code == "LimitExceeded"
    assert value("(" * 30 + "1" + ")" * 30) == 1.0
    err = parse_error("x = " + " + ".join(["1"] * 200) + ";")
    assert err.code == "LimitExceeded" and "several statements" in str(err)


def test_work_is_bounded(monkeypatch):
    monkeypatch.setattr(autoscale, "MAX_STEPS", 1000)
    samples = {"$CPUPercent": series([1] * 200)}
    formula = "\n".join(f"x{i} = sum($CPUPercent.GetSample(TimeInterval_Hour));" for i in range(10))
    err = eval_error(formula, samples=samples)
    assert err.code == "LimitExceeded"
    monkeypatch.setattr(autoscale, "MAX_VECTOR_LENGTH", 100)
    monkeypatch.setattr(autoscale, "MAX_STEPS", 10**6)
    err = eval_error("x = $CPUPercent.GetSample(TimeInterval_Hour);", samples=samples)
    assert err.code == "LimitExceeded" and "longer than 100" in str(err)


# ---------------------------------------------------------------------------- runtime errors

@pytest.mark.parametrize("formula, code, words", [
    ("x = 1 / 0;", "DivideByZero", "division by zero"),
    ("x = TimeInterval_Hour / 0;", "DivideByZero", "division by zero"),
    ("x = $PendingTasks.GetSample(3);", "InsufficientSampleData", "only 2 samples are available"),
    ("x = $PendingTasks.GetSample(0);", "InvalidArgument", "whole number from 1"),
    ("x = $PendingTasks.GetSample(1.5);", "InvalidArgument", "whole number from 1"),
    ("x = $PendingTasks.GetSample(1, 50);", "InvalidArgument", "takes no other argument"),
    ("x = $PendingTasks.GetSample(TimeInterval_Minute, 150);", "InvalidArgument", "outside 0..100"),
    ("x = $PendingTasks.GetSample(TimeInterval_Minute, 50, 50);", "TypeError", "end must be"),
    ("x = $PendingTasks.GetSample(\"a\");", "TypeError", "start must be a timeinterval"),
    ("x = $PendingTasks.GetSample(1) > 0;", "TypeError", "reduce vectors"),
    ("x = $PendingTasks.GetSample(2) ? 1 : 0;", "TypeError", "needs a double"),
    ("x = $PendingTasks.GetSample(2) + $PendingTasks.GetSample(1);", "TypeError", "different lengths"),
    ("x = $PendingTasks;", "TypeError", "sampled metric"),
    ("x = $CPUPercent;", "MissingMetric", "no value"),
    ("x = $CPUPercent.HistoryBeginTime();", "InsufficientSampleData", "no samples yet"),
    ("x = avg($CPUPercent.GetSample(TimeInterval_Minute));", "InsufficientSampleData", "empty vector"),
    ("x = TimeInterval_Hour + 1;", "TypeError", "cannot apply '+' to timeinterval and double"),
    ("x = time() + time();", "TypeError", "cannot apply '+' to timestamp and timestamp"),
    ("x = 1 < TimeInterval_Hour;", "TypeError", "cannot compare double with timeinterval"),
    ("x = \"a\" + 1;", "TypeError", "cannot apply '+' to string and double"),
    ("x = max(time());", "TypeError", "takes doubles and doubleVecs"),
    ("x = (1).hour;", "TypeError", "needs a timestamp"),
    ("x = val($PendingTasks.GetSample(2), 2);", "InvalidArgument", "outside the vector"),
    ("x = percentile(1, 101);", "InvalidArgument", "outside 0..100"),
    ("x = log(0);", "InvalidArgument", "positive"),
    ("x = ln(-1, 2);", "InvalidArgument", "positive"),
    ("x = time(\"yesterday\");", "InvalidArgument", "W3C-DTF or RFC 1123"),
    ("x = time(3);", "TypeError", "date-time string"),
    ("$TargetDedicatedNodes = $PendingTasks.GetSample(2);", "TypeError", "must be a double"),
    ("$TargetDedicatedNodes = \"5\";", "TypeError", "must be a double"),
    ("$NodeDeallocationOption = \"drain\";", "InvalidArgument", "requeue, terminate, taskcompletion, retaineddata"),
    ("$NodeDeallocationOption = 1;", "InvalidArgument", "use one of"),
])
def test_runtime_errors(formula, code, words):
    err = eval_error(formula, samples={"$PendingTasks": series([1, 2])})
    assert err.code == code, str(err)
    assert words in str(err)
    assert err.line == 1 and err.column >= 1 and str(err).startswith("line 1, column ")


def test_node_deallocation_options():
    for option in autoscale.NODE_DEALLOCATION_OPTIONS:
        assert run(f"$NodeDeallocationOption = {option};").node_deallocation_option == option
        assert run(f'$NodeDeallocationOption = "{option}";').node_deallocation_option == option
