"""Azure Batch autoscale formulas: parse once, evaluate against a pool's metrics every interval.

The language is Batch's ("Create a formula to automatically scale compute nodes in a Batch pool"):
statements ``name = expression;`` separated by ``;``, ``//`` and ``/* */`` comments, user variables
(the ``$`` is optional: ``x`` and ``$x`` are the same variable), service-defined variables (read-only
metrics such as ``$PendingTasks`` with their sample methods, and the settable ``$TargetDedicatedNodes``,
``$TargetLowPriorityNodes``, ``$NodeDeallocationOption``), the types double, doubleVec, doubleVecList,
string, timestamp and timeinterval, C-like operators and Batch's built-in functions.

    program = parse(formula)                 # FormulaError on syntax errors, unknown names, ...
    result = evaluate(program, metrics)      # FormulaError on runtime errors (e.g. too few samples)
    result.target_dedicated, result.results_string()

Evaluation is a tree walk over a parsed program (no ``eval``), bounded by the formula size (8 KB,
100 statements, as Batch), the expression depth, the vector lengths and a step budget.
"""
from __future__ import annotations

import bisect
import difflib
import email.utils
import math
import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Mapping, Sequence

__all__ = [
    "FormulaError", "Program", "Sample", "Metrics", "Result", "Timestamp", "TimeInterval",
    "parse", "evaluate",
    "READ_ONLY_VARIABLES", "SETTABLE_VARIABLES", "FUNCTIONS", "SAMPLE_METHODS", "TIME_INTERVALS",
    "NODE_DEALLOCATION_OPTIONS", "MAX_FORMULA_BYTES", "MAX_STATEMENTS", "MAX_VECTOR_LENGTH",
    "MAX_EXPRESSION_DEPTH", "MAX_NESTING", "MAX_STEPS", "SAMPLE_PERIOD_SECONDS",
]

MAX_FORMULA_BYTES = 8192          # Batch: "The formula string cannot exceed 8 KB"
MAX_STATEMENTS = 100              # Batch: "can include up to 100 statements"
MAX_VECTOR_LENGTH = 100_000       # elements in one doubleVec (a week of 30 s samples is 20 160)
MAX_EXPRESSION_DEPTH = 100        # depth of one expression's tree (a chain of 100 '+' is 100 deep)
MAX_NESTING = 32                  # parentheses, call arguments, ?: branches and unary operators inside each other
MAX_STEPS = 2_000_000             # evaluation work (nodes visited + vector elements touched)
MAX_TARGET_NODES = 2**31 - 1      # targets are int32 in Batch
SAMPLE_PERIOD_SECONDS = 30.0      # Batch records a sample every 30 seconds

READ_ONLY_VARIABLES = (
    "$CPUPercent", "$WallClockSeconds", "$MemoryBytes", "$DiskBytes", "$DiskReadBytes",
    "$DiskWriteBytes", "$DiskReadOps", "$DiskWriteOps", "$NetworkInBytes", "$NetworkOutBytes",
    "$SampleNodeCount", "$ActiveTasks", "$RunningTasks", "$PendingTasks", "$SucceededTasks",
    "$FailedTasks", "$TaskSlotsPerNode", "$CurrentDedicatedNodes", "$CurrentLowPriorityNodes",
    "$UsableNodeCount", "$PreemptedNodeCount",
    # beyond Batch (Azure/Batch #118, #151): the same counts in task slots
    "$ActiveTaskSlots", "$RunningTaskSlots", "$PendingTaskSlots",
)
# settable variable -> the canonical one it sets ($TargetDedicated is Batch's older alias)
SETTABLE_VARIABLES = {
    "$TargetDedicatedNodes": "$TargetDedicatedNodes",
    "$TargetDedicated": "$TargetDedicatedNodes",
    "$TargetLowPriorityNodes": "$TargetLowPriorityNodes",
    "$TargetLowPriority": "$TargetLowPriorityNodes",
    "$NodeDeallocationOption": "$NodeDeallocationOption",
}
NODE_DEALLOCATION_OPTIONS = ("requeue", "terminate", "taskcompletion", "retaineddata")
DEFAULT_NODE_DEALLOCATION_OPTION = "requeue"
TIME_INTERVALS = {
    "TimeInterval_Zero": 0.0,
    "TimeInterval_100ns": 1e-7,
    "TimeInterval_Microsecond": 1e-6,
    "TimeInterval_Millisecond": 1e-3,
    "TimeInterval_Second": 1.0,
    "TimeInterval_Minute": 60.0,
    "TimeInterval_Hour": 3600.0,
    "TimeInterval_Day": 86400.0,
    "TimeInterval_Week": 7 * 86400.0,
    "TimeInterval_Year": 365 * 86400.0,
}
# name -> (min args, max args or None for a doubleVecList)
FUNCTIONS: dict[str, tuple[int, int | None]] = {
    "avg": (1, None), "len": (1, None), "max": (1, None), "min": (1, None), "norm": (1, None),
    "range": (1, None), "std": (1, None), "sum": (1, None),
    "lg": (1, None), "ln": (1, None), "log": (1, None),
    "ceil": (1, None), "floor": (1, None), "round": (1, None),
    "percentile": (2, 2), "rand": (0, 0), "stop": (0, 0), "time": (0, 1), "val": (2, 2),
}
SAMPLE_METHODS: dict[str, tuple[int, int | None]] = {
    "GetSample": (1, 3), "GetSamplePercent": (1, 2), "GetSamplePeriod": (0, 0),
    "Count": (0, 0), "HistoryBeginTime": (0, 0),
}
TIMESTAMP_MEMBERS = ("year", "month", "day", "weekday", "hour", "minute", "second")
_MAX_ARGS = 100

_SERVICE = set(READ_ONLY_VARIABLES) | set(SETTABLE_VARIABLES)
_SERVICE_CI = {name.lower(): name for name in _SERVICE}


# --------------------------------------------------------------------------------------- errors

class FormulaError(ValueError):
    """A formula that does not parse or does not evaluate.

    ``str(err)`` says where (``line L, column C``), what is wrong and how to fix it; ``code`` is a
    short category (SyntaxError, UnknownFunction, ReadOnlyVariable, UndefinedVariable, TypeError,
    InvalidArgument, InsufficientSampleData, MissingMetric, DivideByZero, LimitExceeded).
    """

    def __init__(self, message: str, *, line: int | None = None, column: int | None = None,
                 code: str = "InvalidFormula", hint: str | None = None):
        self.reason = message
        self.line = line
        self.column = column
        self.code = code
        self.hint = hint
        text = f"line {line}, column {column}: {message}" if line is not None else message
        if hint:
            text += f" (hint: {hint})"
        super().__init__(text)


def _did_you_mean(name: str, candidates) -> str | None:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in candidates}
        if name.lower() in lowered:
            close = [lowered[name.lower()]]
    return f"did you mean {close[0]}?" if close else None


# ---------------------------------------------------------------------------------------- values

@dataclass(frozen=True, order=True)
class TimeInterval:
    """A timeinterval value (seconds)."""
    seconds: float

    def __str__(self) -> str:  # like .NET's TimeSpan: [-][d.]hh:mm:ss[.fffffff]
        if not math.isfinite(self.seconds):
            return _fmt_double(self.seconds)
        total = abs(self.seconds)
        sign = "-" if self.seconds < 0 else ""
        ticks = int(round(total * 10_000_000))
        whole, frac = divmod(ticks, 10_000_000)
        days, rest = divmod(whole, 86400)
        hours, rest = divmod(rest, 3600)
        minutes, secs = divmod(rest, 60)
        text = f"{sign}{f'{days}.' if days else ''}{hours:02d}:{minutes:02d}:{secs:02d}"
        return text + (f".{frac:07d}" if frac else "")


@dataclass(frozen=True, order=True)
class Timestamp:
    """A timestamp value (epoch seconds, UTC). Members: year, month, day, weekday (0 = Sunday,
    1 = Monday ... 6 = Saturday), hour, minute, second."""
    epoch: float

    @property
    def datetime(self) -> datetime:
        return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=self.epoch)

    def member(self, name: str) -> float:
        dt = self.datetime  # OverflowError outside years 1..9999
        if name == "weekday":
            return float(dt.isoweekday() % 7)
        return float(getattr(dt, name))

    def __str__(self) -> str:
        try:
            dt = self.datetime
        except (OverflowError, ValueError):
            return _fmt_double(self.epoch)
        return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{dt.microsecond // 1000:03d}Z"


def _type_name(value: object) -> str:
    if isinstance(value, float):
        return "double"
    if isinstance(value, tuple):
        return "doubleVec"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Timestamp):
        return "timestamp"
    if isinstance(value, TimeInterval):
        return "timeinterval"
    return type(value).__name__


def _fmt_double(x: float) -> str:
    if math.isfinite(x) and x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return format(x, ".15g")


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (int, float)):
        return _fmt_double(float(value))
    if isinstance(value, tuple):
        return "[" + ",".join(_fmt_double(v) for v in value) + "]"
    return str(value)


# ----------------------------------------------------------------------------------------- lexer

@dataclass(frozen=True)
class _Tok:
    kind: str        # num, str, name, op, eof
    text: str
    line: int
    col: int
    value: object = None


_OPS2 = ("&&", "||", "==", "!=", "<=", ">=")
_OPS1 = "<>=+-*/!?:(),.;"
_NAME = re.compile(r"\$?[A-Za-z_][A-Za-z0-9_]*")
_NUM = re.compile(r"(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][+-]?\d+)?")


def _lex(src: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, line, line_start, n = 0, 1, 0, len(src)

    def col(pos: int) -> int:
        return pos - line_start + 1

    while i < n:
        c = src[i]
        if c == "\n":
            i += 1
            line, line_start = line + 1, i
            continue
        if c in " \t\r\f\v":
            i += 1
            continue
        if src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
            continue
        if src.startswith("/*", i):
            j = src.find("*/", i + 2)
            if j < 0:
                raise FormulaError("unterminated comment", line=line, column=col(i), code="SyntaxError",
                                   hint="close it with */")
            for k in range(i, j):
                if src[k] == "\n":
                    line, line_start = line + 1, k + 1
            i = j + 2
            continue
        start_col = col(i)
        if c == '"':
            j = src.find('"', i + 1)
            nl = src.find("\n", i + 1)
            if j < 0 or (0 <= nl < j):
                raise FormulaError("unterminated string", line=line, column=start_col, code="SyntaxError",
                                   hint='close it with " on the same line')
            toks.append(_Tok("str", src[i:j + 1], line, start_col, src[i + 1:j]))
            i = j + 1
            continue
        m = _NUM.match(src, i)
        if m and (c.isdigit() or c == "."):
            text = m.group(0)
            end = m.end()
            if end < n and (src[end].isalpha() or src[end] in "_$"):
                raise FormulaError(f"malformed number {src[i:end + 1]!r}", line=line, column=start_col,
                                   code="SyntaxError", hint="separate numbers from names with an operator")
            toks.append(_Tok("num", text, line, start_col, float(text)))
            i = end
            continue
        m = _NAME.match(src, i)
        if m:
            toks.append(_Tok("name", m.group(0), line, start_col))
            i = m.end()
            continue
        two = src[i:i + 2]
        if two in _OPS2:
            toks.append(_Tok("op", two, line, start_col))
            i += 2
            continue
        if c in _OPS1:
            toks.append(_Tok("op", c, line, start_col))
            i += 1
            continue
        hints = {"&": "use && for logical and", "|": "use || for logical or",
                 "%": "the autoscale language has no modulo operator",
                 "$": "a variable name must follow $ (e.g. $TargetDedicatedNodes)",
                 "'": 'strings use double quotes: "..."',
                 "[": "vectors come from GetSample(); there are no vector literals",
                 "{": "the autoscale language has no blocks: use the ternary a ? b : c"}
        raise FormulaError(f"unexpected character {c!r}", line=line, column=start_col, code="SyntaxError",
                           hint=hints.get(c, "remove it"))
    toks.append(_Tok("eof", "end of formula", line, col(i)))
    return toks


# ------------------------------------------------------------------------------------------- AST

@dataclass(frozen=True)
class _Node:
    line: int
    col: int


@dataclass(frozen=True)
class _Lit(_Node):
    value: object
    depth: int = 1


@dataclass(frozen=True)
class _Var(_Node):
    name: str        # canonical: "$x" for user variables, service names as spelled by Batch
    kind: str        # user | read | write
    depth: int = 1


@dataclass(frozen=True)
class _Unary(_Node):
    op: str
    operand: _Node
    depth: int = 1


@dataclass(frozen=True)
class _Binary(_Node):
    op: str
    left: _Node
    right: _Node
    depth: int = 1


@dataclass(frozen=True)
class _Ternary(_Node):
    cond: _Node
    then: _Node
    other: _Node
    depth: int = 1


@dataclass(frozen=True)
class _Call(_Node):
    name: str
    args: tuple
    depth: int = 1


@dataclass(frozen=True)
class _Member(_Node):
    obj: _Node
    name: str
    depth: int = 1


@dataclass(frozen=True)
class _Method(_Node):
    var: str
    name: str
    args: tuple
    depth: int = 1


@dataclass(frozen=True)
class _Assign:
    line: int
    col: int
    target: str      # canonical variable name
    kind: str        # user | write
    expr: _Node


@dataclass(frozen=True)
class Program:
    """A parsed formula: immutable, reusable across evaluations."""
    source: str
    statements: tuple

    @property
    def assigned_variables(self) -> tuple[str, ...]:
        """Canonical names of the variables the formula assigns, in first-assignment order."""
        seen: dict[str, None] = {}
        for st in self.statements:
            seen.setdefault(st.target, None)
        return tuple(seen)


# ---------------------------------------------------------------------------------------- parser

def _depth(*children: _Node) -> int:
    return 1 + max((c.depth for c in children), default=0)


class _Parser:
    def __init__(self, src: str):
        self.toks = _lex(src)
        self.i = 0
        self.assigned: set[str] = set()
        self.nesting = 0

    # -- helpers
    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def advance(self) -> _Tok:
        t = self.toks[self.i]
        if t.kind != "eof":
            self.i += 1
        return t

    def at(self, text: str) -> bool:
        t = self.tok
        return t.kind == "op" and t.text == text

    def error(self, message: str, tok: _Tok | None = None, *, code: str = "SyntaxError",
              hint: str | None = None) -> FormulaError:
        tok = tok or self.tok
        return FormulaError(message, line=tok.line, column=tok.col, code=code, hint=hint)

    def expect(self, text: str, hint: str) -> _Tok:
        if not self.at(text):
            raise self.error(f"expected '{text}' but found {self._describe(self.tok)}", hint=hint)
        return self.advance()

    @staticmethod
    def _describe(t: _Tok) -> str:
        return "the end of the formula" if t.kind == "eof" else repr(t.text)

    def check_depth(self, node: _Node) -> _Node:
        if node.depth > MAX_EXPRESSION_DEPTH:
            raise FormulaError(f"expression nested more than {MAX_EXPRESSION_DEPTH} levels deep",
                               line=node.line, column=node.col, code="LimitExceeded",
                               hint="split it into several statements with intermediate variables")
        return node

    # -- names
    def resolve_variable(self, tok: _Tok, *, assigning: bool) -> tuple[str, str]:
        text = tok.text
        bare = text.lstrip("$")
        if text.startswith("$"):
            if text in READ_ONLY_VARIABLES:
                if assigning:
                    raise self.error(
                        f"{text} is a read-only service-defined variable and cannot be assigned", tok,
                        code="ReadOnlyVariable",
                        hint="assign a user variable (e.g. "
                             f"{bare[0].lower() + bare[1:]} = ...) or one of $TargetDedicatedNodes, "
                             "$TargetLowPriorityNodes, $NodeDeallocationOption")
                return text, "read"
            if text in SETTABLE_VARIABLES:
                return text, "write"
            if text.lower() in _SERVICE_CI:
                raise self.error(f"unknown service-defined variable {text}", tok, code="UndefinedVariable",
                                 hint=f"names are case-sensitive: did you mean {_SERVICE_CI[text.lower()]}?")
        else:
            if bare in TIME_INTERVALS or bare in NODE_DEALLOCATION_OPTIONS:
                raise self.error(f"{bare} is a built-in constant and cannot be assigned", tok,
                                 code="ReadOnlyVariable", hint="choose another variable name")
            if ("$" + bare).lower() in _SERVICE_CI:
                real = _SERVICE_CI[("$" + bare).lower()]
                raise self.error(f"'{bare}' looks like the service-defined variable {real}", tok,
                                 code="UndefinedVariable",
                                 hint=f"write {real} (service variables start with $), "
                                      "or choose another name for a user variable")
        name = "$" + bare
        if not assigning and name not in self.assigned:
            candidates = sorted(self.assigned | _SERVICE | set(TIME_INTERVALS))
            raise self.error(f"variable {text} is used before it is assigned", tok, code="UndefinedVariable",
                             hint=_did_you_mean(text, candidates)
                             or f"assign it in an earlier statement: {text} = ...;")
        return name, "user"

    # -- statements
    def program(self, src: str) -> Program:
        statements: list[_Assign] = []
        while True:
            while self.at(";"):
                self.advance()
            if self.tok.kind == "eof":
                break
            if len(statements) >= MAX_STATEMENTS:
                raise self.error(f"more than {MAX_STATEMENTS} statements", code="LimitExceeded",
                                 hint="Batch allows at most 100 statements per formula")
            statements.append(self.statement())
            if self.tok.kind == "eof":
                break
            if not self.at(";"):
                prev = self.toks[self.i - 1]
                raise self.error(
                    f"expected ';' after the statement ending at line {prev.line}, column {prev.col}, "
                    f"but found {self._describe(self.tok)}",
                    hint="end each statement with ';' (an operator may also be missing)")
        if not statements:
            raise FormulaError("the formula has no statements", line=1, column=1, code="SyntaxError",
                               hint="assign at least one variable, e.g. $TargetDedicatedNodes = 1;")
        return Program(source=src, statements=tuple(statements))

    def statement(self) -> _Assign:
        tok = self.tok
        if tok.kind != "name":
            raise self.error(f"a statement must start with a variable name, found {self._describe(tok)}",
                             hint="statements have the form name = expression;")
        nxt = self.toks[self.i + 1]
        if nxt.kind == "op" and nxt.text == "(":
            if tok.text in FUNCTIONS:
                raise self.error(f"a statement must assign a variable, found a call of {tok.text}()", tok,
                                 hint="write name = expression;")
        if not (nxt.kind == "op" and nxt.text == "="):
            raise self.error(f"expected '=' after {tok.text} but found {self._describe(nxt)}", nxt,
                             hint="statements have the form name = expression; (use == to compare)")
        target, kind = self.resolve_variable(tok, assigning=True)
        self.advance()
        self.advance()
        expr = self.expression()
        self.assigned.add(target)
        return _Assign(tok.line, tok.col, target, kind, expr)

    # -- expressions (C precedence: ?: || && ==,!= <,<=,>,>= +,- *,/ unary postfix)
    def nest(self) -> None:
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise self.error(f"expression nested more than {MAX_NESTING} levels deep", code="LimitExceeded",
                             hint="split it into several statements with intermediate variables")

    def expression(self) -> _Node:
        self.nest()
        try:
            return self._expression()
        finally:
            self.nesting -= 1

    def _expression(self) -> _Node:
        cond = self.binary(0)
        if self.at("?"):
            q = self.advance()
            then = self.expression()
            self.expect(":", f"complete the conditional started at line {q.line}, column {q.col}: "
                             "cond ? a : b")
            other = self.expression()
            return self.check_depth(_Ternary(cond.line, cond.col, cond, then, other,
                                             _depth(cond, then, other)))
        return cond

    _LEVELS = (("||",), ("&&",), ("==", "!="), ("<", "<=", ">", ">="), ("+", "-"), ("*", "/"))

    def binary(self, level: int) -> _Node:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.tok.kind == "op" and self.tok.text in self._LEVELS[level]:
            op = self.advance()
            right = self.binary(level + 1)
            left = self.check_depth(_Binary(op.line, op.col, op.text, left, right, _depth(left, right)))
        return left

    def unary(self) -> _Node:
        if self.at("-") or self.at("!"):
            op = self.advance()
            self.nest()
            try:
                operand = self.unary()
            finally:
                self.nesting -= 1
            if op.text == "-" and isinstance(operand, _Lit) and isinstance(operand.value, float):
                return _Lit(op.line, op.col, -operand.value)
            return self.check_depth(_Unary(op.line, op.col, op.text, operand, _depth(operand)))
        if self.at("="):
            raise self.error("unexpected '='", hint="use == to compare; assignments are statements")
        return self.postfix()

    def postfix(self) -> _Node:
        node = self.primary()
        while self.at("."):
            dot = self.advance()
            name = self.tok
            if name.kind != "name" or name.text.startswith("$"):
                raise self.error(f"expected a member or method name after '.', found {self._describe(name)}",
                                 hint="e.g. $PendingTasks.GetSample(...) or time().hour")
            self.advance()
            if self.at("("):
                if name.text not in SAMPLE_METHODS:
                    raise self.error(f"unknown method {name.text}()", name, code="UnknownFunction",
                                     hint=_did_you_mean(name.text, SAMPLE_METHODS)
                                     or "methods: " + ", ".join(SAMPLE_METHODS))
                if not (isinstance(node, _Var) and node.kind == "read"):
                    raise self.error(f"{name.text}() can only be called on a service-defined metric "
                                     "variable", dot, code="TypeError",
                                     hint="e.g. $PendingTasks.GetSample(TimeInterval_Minute * 5)")
                args = self.arguments(name, SAMPLE_METHODS[name.text])
                node = self.check_depth(_Method(node.line, node.col, node.name, name.text, args,
                                                _depth(node, *args)))
            else:
                if name.text not in TIMESTAMP_MEMBERS:
                    if name.text in SAMPLE_METHODS:
                        hint = f"call it: .{name.text}(...)"
                    else:
                        hint = _did_you_mean(name.text, TIMESTAMP_MEMBERS) or \
                            "timestamp members: " + ", ".join(TIMESTAMP_MEMBERS)
                    raise self.error(f"unknown member .{name.text}", name, code="SyntaxError", hint=hint)
                node = self.check_depth(_Member(dot.line, dot.col, node, name.text, _depth(node)))
        return node

    def arguments(self, fn: _Tok, arity: tuple[int, int | None]) -> tuple:
        open_ = self.expect("(", "")
        args: list[_Node] = []
        if not self.at(")"):
            while True:
                args.append(self.expression())
                if not self.at(","):
                    break
                self.advance()
        self.expect(")", f"close the argument list opened at line {open_.line}, column {open_.col} "
                         "(separate arguments with ',')")
        lo, hi = arity
        hi_eff = _MAX_ARGS if hi is None else hi
        if not lo <= len(args) <= hi_eff:
            want = f"{lo}" if lo == hi else (f"at least {lo}" if hi is None else f"{lo} to {hi}")
            raise self.error(f"{fn.text}() takes {want} argument{'s' if want != '1' else ''}, "
                             f"got {len(args)}", fn, code="InvalidArgument", hint=_SIGNATURES.get(fn.text))
        return tuple(args)

    def primary(self) -> _Node:
        tok = self.tok
        if tok.kind == "num":
            self.advance()
            return _Lit(tok.line, tok.col, tok.value)
        if tok.kind == "str":
            self.advance()
            return _Lit(tok.line, tok.col, tok.value)
        if self.at("("):
            self.advance()
            inner = self.expression()
            self.expect(")", f"close the '(' opened at line {tok.line}, column {tok.col}")
            return inner
        if tok.kind == "name":
            nxt = self.toks[self.i + 1]
            if nxt.kind == "op" and nxt.text == "(":
                if tok.text not in FUNCTIONS:
                    raise self.error(f"unknown function {tok.text}()", tok, code="UnknownFunction",
                                     hint=_did_you_mean(tok.text, FUNCTIONS)
                                     or "functions: " + ", ".join(sorted(FUNCTIONS)))
                self.advance()
                args = self.arguments(tok, FUNCTIONS[tok.text])
                return self.check_depth(_Call(tok.line, tok.col, tok.text, args, _depth(*args)))
            self.advance()
            if tok.text in TIME_INTERVALS:
                return _Lit(tok.line, tok.col, TimeInterval(TIME_INTERVALS[tok.text]))
            if tok.text in NODE_DEALLOCATION_OPTIONS:
                return _Lit(tok.line, tok.col, tok.text)
            if tok.text.startswith("TimeInterval") and ("$" + tok.text) not in self.assigned:
                raise self.error(f"unknown time interval {tok.text}", tok, code="UndefinedVariable",
                                 hint=_did_you_mean(tok.text, TIME_INTERVALS)
                                 or "e.g. TimeInterval_Second, TimeInterval_Minute, TimeInterval_Hour")
            name, kind = self.resolve_variable(tok, assigning=False)
            return _Var(tok.line, tok.col, name, kind)
        raise self.error(f"expected a value but found {self._describe(tok)}",
                         hint="a number, \"string\", variable, function call or (expression)")


_SIGNATURES = {
    "percentile": "percentile(doubleVec v, double p)",
    "val": "val(doubleVec v, double i)",
    "time": 'time() or time("2024-01-01T00:00:00Z")',
    "rand": "rand() takes no arguments", "stop": "stop() takes no arguments",
    "GetSample": "GetSample(count) | GetSample(start [, samplePercent]) | "
                 "GetSample(start, end [, samplePercent])",
    "GetSamplePercent": "GetSamplePercent(start [, end])",
}


def parse(formula: str) -> Program:
    """Parse an autoscale formula. Raises FormulaError (with line and column) when it is invalid:
    syntax errors, unknown functions/methods/variables, assignments to read-only variables,
    variables used before they are assigned, or a formula over Batch's limits."""
    if not isinstance(formula, str):
        raise FormulaError("the formula must be a string", code="SyntaxError")
    size = len(formula.encode("utf-8"))
    if size > MAX_FORMULA_BYTES:
        raise FormulaError(f"the formula is {size} bytes, more than {MAX_FORMULA_BYTES}", code="LimitExceeded",
                           hint="Batch formulas are limited to 8 KB: shorten it")
    return _Parser(formula).program(formula)


# ------------------------------------------------------------------------------------ evaluation

@dataclass(frozen=True)
class Sample:
    time: float      # epoch seconds
    value: float


@dataclass(frozen=True)
class Metrics:
    """What a formula sees. ``samples``: metric name ("$PendingTasks") -> samples, newest last;
    ``scalars``: current values ("$CurrentDedicatedNodes", "$TaskSlotsPerNode", and optionally the
    current "$TargetDedicatedNodes"/"$TargetLowPriorityNodes"); ``sample_period``: the expected
    spacing of samples, which GetSample's and GetSamplePercent's percentages are relative to."""
    now: float
    samples: Mapping[str, Sequence[Sample]] = field(default_factory=dict)
    scalars: Mapping[str, float] = field(default_factory=dict)
    sample_period: float = SAMPLE_PERIOD_SECONDS


@dataclass(frozen=True)
class Result:
    """An evaluation's outcome. Targets are clamped to >= 0 and truncated to integers, as Batch
    does; ``node_deallocation_option`` is None unless the formula assigned it (Batch's default is
    requeue). ``variables``: the three settable variables, then every user variable (sorted)."""
    target_dedicated: int
    target_low_priority: int
    node_deallocation_option: str | None
    variables: dict[str, object]

    def results_string(self) -> str:
        """Batch's autoScaleRun.results: ``$TargetDedicatedNodes=3;...;$x=1.5``."""
        return ";".join(f"{k}={_fmt(v)}" for k, v in self.variables.items())


class _Stop(Exception):
    pass


_ARITH = {"+", "-", "*", "/"}
_COMPARE = {"<", "<=", ">", ">=", "==", "!="}


class _Evaluator:
    def __init__(self, metrics: Metrics, rng: random.Random):
        self.m = metrics
        self.now = float(metrics.now)
        self.rng = rng
        self.steps = 0
        self.vars: dict[str, object] = {}
        self.history: dict[str, tuple[list[float], list[float]]] = {}
        cur_d = self._scalar_or("$CurrentDedicatedNodes", 0.0)
        cur_l = self._scalar_or("$CurrentLowPriorityNodes", 0.0)
        self.initial = {
            "$TargetDedicatedNodes": self._scalar_or("$TargetDedicatedNodes", cur_d),
            "$TargetLowPriorityNodes": self._scalar_or("$TargetLowPriorityNodes", cur_l),
            "$NodeDeallocationOption": DEFAULT_NODE_DEALLOCATION_OPTION,
        }
        self.settable: dict[str, object] = {}      # as assigned, by the name used (incl. aliases)
        self.latest: dict[str, object] = {}        # canonical -> last value assigned via either name

    def _scalar_or(self, name: str, default: float) -> float:
        v = self.m.scalars.get(name)
        return default if v is None else float(v)

    # -- bookkeeping
    def step(self, node: _Node, n: int = 1) -> None:
        self.steps += n
        if self.steps > MAX_STEPS:
            raise self.err(node, "the formula does too much work", code="LimitExceeded",
                           hint="use shorter sample windows or fewer statements")

    @staticmethod
    def err(node, message: str, *, code: str = "TypeError", hint: str | None = None) -> FormulaError:
        return FormulaError(message, line=node.line, column=node.col, code=code, hint=hint)

    def vec(self, node: _Node, values) -> tuple:
        values = tuple(values)
        if len(values) > MAX_VECTOR_LENGTH:
            raise self.err(node, f"a vector of {len(values)} elements is longer than {MAX_VECTOR_LENGTH}",
                           code="LimitExceeded", hint="use a shorter sample window")
        self.step(node, len(values))
        return values

    # -- statements
    def run(self, program: Program) -> None:
        for st in program.statements:
            try:
                value = self.eval(st.expr)
            except _Stop:
                return
            if st.kind == "write":
                canonical = SETTABLE_VARIABLES[st.target]
                if canonical == "$NodeDeallocationOption":
                    if not isinstance(value, str) or value not in NODE_DEALLOCATION_OPTIONS:
                        raise FormulaError(f"$NodeDeallocationOption cannot be {_fmt(value)!s} "
                                           f"({_type_name(value)})", line=st.line, column=st.col,
                                           code="InvalidArgument",
                                           hint="use one of " + ", ".join(NODE_DEALLOCATION_OPTIONS))
                elif not isinstance(value, float):
                    raise FormulaError(f"{st.target} must be a double, got a {_type_name(value)}",
                                       line=st.line, column=st.col, code="TypeError",
                                       hint="reduce vectors with max(), min() or avg()"
                                       if isinstance(value, tuple) else None)
                elif math.isnan(value):
                    raise FormulaError(f"{st.target} is not a number (NaN)", line=st.line, column=st.col,
                                       code="InvalidArgument")
                self.settable[st.target] = value
                self.latest[canonical] = value
            else:
                self.vars[st.target] = value

    def final(self, canonical: str, alias: str | None) -> object:
        if canonical in self.settable:
            return self.settable[canonical]
        if alias and alias in self.settable:
            return self.settable[alias]
        return self.initial[canonical]

    # -- expressions
    def eval(self, node: _Node) -> object:
        self.step(node)
        t = type(node)
        if t is _Lit:
            return node.value
        if t is _Var:
            return self.variable(node)
        if t is _Binary:
            if node.op in ("&&", "||"):
                left = self.truth(node.left, self.eval(node.left), node.op)
                if (node.op == "&&" and not left) or (node.op == "||" and left):
                    return 1.0 if left else 0.0
                return 1.0 if self.truth(node.right, self.eval(node.right), node.op) else 0.0
            return self.binary(node, self.eval(node.left), self.eval(node.right))
        if t is _Ternary:
            cond = self.truth(node.cond, self.eval(node.cond), "?:")
            return self.eval(node.then if cond else node.other)
        if t is _Unary:
            v = self.eval(node.operand)
            if node.op == "!":
                return 0.0 if self.truth(node.operand, v, "!") else 1.0
            if isinstance(v, float):
                return -v
            if isinstance(v, TimeInterval):
                return TimeInterval(-v.seconds)
            if isinstance(v, tuple):
                return self.vec(node, (-x for x in v))
            raise self.err(node, f"cannot negate a {_type_name(v)}")
        if t is _Call:
            try:
                return self.call(node)
            except FormulaError:
                raise
            except (OverflowError, ValueError) as exc:  # e.g. fsum of huge values
                raise self.err(node, f"{node.name}(): {exc}", code="InvalidArgument",
                               hint="the values are too large or not finite") from None
        if t is _Member:
            v = self.eval(node.obj)
            if not isinstance(v, Timestamp):
                raise self.err(node, f".{node.name} needs a timestamp, got a {_type_name(v)}",
                               hint="e.g. time().hour")
            try:
                return v.member(node.name)
            except (OverflowError, ValueError):
                raise self.err(node, f"timestamp {_fmt_double(v.epoch)} is outside years 1..9999",
                               code="InvalidArgument") from None
        if t is _Method:
            return self.method(node)
        raise AssertionError(t)  # pragma: no cover

    def truth(self, node: _Node, v: object, op: str) -> bool:
        if isinstance(v, float):
            return v != 0.0
        raise self.err(node, f"'{op}' needs a double (0 is false, anything else true), got a {_type_name(v)}",
                       hint="reduce vectors with max(), min() or avg() first" if isinstance(v, tuple) else None)

    def variable(self, node: _Var) -> object:
        if node.kind == "user":
            return self.vars[node.name]
        if node.kind == "write":
            canonical = SETTABLE_VARIABLES[node.name]
            return self.latest.get(canonical, self.initial[canonical])
        v = self.m.scalars.get(node.name)
        if v is not None:
            return float(v)
        if self.m.samples.get(node.name):
            raise self.err(node, f"{node.name} is a sampled metric, not a single value",
                           hint=f"read its samples, e.g. avg({node.name}.GetSample(TimeInterval_Minute * 5))")
        raise self.err(node, f"{node.name} has no value in this pool", code="MissingMetric",
                       hint=f"read its samples with {node.name}.GetSample(...) or use another variable")

    def binary(self, node: _Binary, a: object, b: object) -> object:
        op = node.op
        if op in _COMPARE:
            return self.compare(node, a, b)
        fa, fb = isinstance(a, float), isinstance(b, float)
        if fa and fb:
            if op == "/" and b == 0.0:
                raise self.err(node, "division by zero", code="DivideByZero",
                               hint="guard the divisor, e.g. d > 0 ? n / d : 0")
            return _apply(op, a, b)
        va, vb = isinstance(a, tuple), isinstance(b, tuple)
        if va or vb:
            if (va and not (vb or fb)) or (vb and not (va or fa)):
                raise self.bad_operands(node, a, b)
            if va and vb and len(a) != len(b):
                raise self.err(node, f"'{op}' on doubleVecs of different lengths ({len(a)} and {len(b)})",
                               hint="use windows that return the same number of samples, or reduce them first")
            xs = a if va else (a,) * len(b)
            ys = b if vb else (b,) * len(a)
            if op == "/" and any(y == 0.0 for y in ys):
                raise self.err(node, "division by zero in a doubleVec", code="DivideByZero")
            return self.vec(node, (_apply(op, x, y) for x, y in zip(xs, ys)))
        ia, ib = isinstance(a, TimeInterval), isinstance(b, TimeInterval)
        ta, tb = isinstance(a, Timestamp), isinstance(b, Timestamp)
        if op == "*" and ia and fb:
            return TimeInterval(a.seconds * b)
        if op == "*" and fa and ib:
            return TimeInterval(a * b.seconds)
        if op == "/" and ia and fb:
            if b == 0.0:
                raise self.err(node, "division by zero", code="DivideByZero")
            return TimeInterval(a.seconds / b)
        if op in ("+", "-") and ia and ib:
            return TimeInterval(a.seconds + b.seconds if op == "+" else a.seconds - b.seconds)
        if op == "+" and ta and ib:
            return Timestamp(a.epoch + b.seconds)
        if op == "+" and ia and tb:
            return Timestamp(b.epoch + a.seconds)
        if op == "-" and ta and ib:
            return Timestamp(a.epoch - b.seconds)
        if op == "-" and ta and tb:
            return TimeInterval(a.epoch - b.epoch)
        raise self.bad_operands(node, a, b)

    def bad_operands(self, node: _Binary, a: object, b: object) -> FormulaError:
        hint = None
        if isinstance(a, TimeInterval) or isinstance(b, TimeInterval):
            hint = "timeintervals can be scaled by doubles (* and /), added to each other and to timestamps"
        return self.err(node, f"cannot apply '{node.op}' to {_type_name(a)} and {_type_name(b)}", hint=hint)

    def compare(self, node: _Binary, a: object, b: object) -> float:
        if type(a) is not type(b) or isinstance(a, tuple):
            hint = "reduce vectors with max(), min() or avg() before comparing" \
                if isinstance(a, tuple) or isinstance(b, tuple) else None
            raise self.err(node, f"cannot compare {_type_name(a)} with {_type_name(b)}", hint=hint)
        if isinstance(a, TimeInterval):
            a, b = a.seconds, b.seconds
        elif isinstance(a, Timestamp):
            a, b = a.epoch, b.epoch
        op = node.op
        r = {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "==": a == b, "!=": a != b}[op]
        return 1.0 if r else 0.0

    # -- functions
    def flat(self, node: _Call, args: list[object]) -> tuple:
        out: list[float] = []
        for v in args:
            if isinstance(v, float):
                out.append(v)
            elif isinstance(v, tuple):
                out.extend(v)
            else:
                raise self.err(node, f"{node.name}() takes doubles and doubleVecs, got a {_type_name(v)}")
        return self.vec(node, out)

    def call(self, node: _Call) -> object:
        name = node.name
        if name == "stop":
            raise _Stop()
        if name == "rand":
            return self.rng.random()
        args = [self.eval(a) for a in node.args]
        if name == "time":
            if not args:
                return Timestamp(self.now)
            if not isinstance(args[0], str):
                raise self.err(node, f"time() takes a date-time string, got a {_type_name(args[0])}",
                               hint=_SIGNATURES["time"])
            return _parse_time(node, args[0])
        if name == "val":
            v, i = args
            if isinstance(v, float):
                v = (v,)
            if not isinstance(v, tuple) or not isinstance(i, float):
                raise self.err(node, "val() takes a doubleVec and an index", hint=_SIGNATURES["val"])
            if not 0 <= i < len(v) or i != int(i):
                raise self.err(node, f"val() index {_fmt_double(i)} is outside the vector of length {len(v)}",
                               code="InvalidArgument", hint="indices start at 0; check len() first")
            return v[int(i)]
        if name == "percentile":
            v, p = args
            if isinstance(v, float):
                v = (v,)
            if not isinstance(v, tuple) or not isinstance(p, float):
                raise self.err(node, "percentile() takes a doubleVec and a percentile",
                               hint=_SIGNATURES["percentile"])
            if not 0.0 <= p <= 100.0:
                raise self.err(node, f"percentile {_fmt_double(p)} is outside 0..100", code="InvalidArgument")
            if not v:
                raise self.empty(node)
            self.step(node, len(v))
            ordered = sorted(v)
            rank = math.ceil(p / 100.0 * len(ordered))  # nearest rank: an element of v
            return ordered[max(rank, 1) - 1]
        if name in ("lg", "ln", "log", "ceil", "floor", "round"):
            fn = _ELEMENTWISE[name]
            if len(args) == 1 and isinstance(args[0], float):
                return self.elementwise(node, fn, args[0])
            return self.vec(node, (self.elementwise(node, fn, x) for x in self.flat(node, args)))
        xs = self.flat(node, args)
        if name == "len":
            return float(len(xs))
        if name == "sum":
            return math.fsum(xs)
        if name == "norm":
            return math.sqrt(math.fsum(x * x for x in xs))
        if not xs:
            raise self.empty(node)
        if name == "avg":
            return math.fsum(xs) / len(xs)
        if name == "max":
            return max(xs)
        if name == "min":
            return min(xs)
        if name == "range":
            return max(xs) - min(xs)
        if name == "std":  # sample standard deviation
            if len(xs) < 2:
                return 0.0
            mean = math.fsum(xs) / len(xs)
            return math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
        raise AssertionError(name)  # pragma: no cover

    def elementwise(self, node: _Call, fn, x: float) -> float:
        if node.name in ("lg", "ln", "log") and not x > 0.0:
            raise self.err(node, f"{node.name}() of {_fmt_double(x)}: logarithms need a positive number",
                           code="InvalidArgument", hint="guard it, e.g. x > 0 ? log(x) : 0")
        return fn(x)

    def empty(self, node: _Call) -> FormulaError:
        return self.err(node, f"{node.name}() of an empty vector", code="InsufficientSampleData",
                        hint="no samples in the window: check with GetSamplePercent() or Count() and fall back")

    # -- sample methods
    def samples_of(self, name: str) -> tuple[list[float], list[float]]:
        cached = self.history.get(name)
        if cached is None:
            raw = [(float(s.time), float(s.value)) for s in self.m.samples.get(name, ())
                   if float(s.time) <= self.now]
            if any(raw[k][0] > raw[k + 1][0] for k in range(len(raw) - 1)):
                raw.sort(key=lambda s: s[0])
            cached = ([t for t, _ in raw], [v for _, v in raw])
            self.history[name] = cached
        return cached

    def instant(self, node: _Method, v: object, what: str) -> float:
        if isinstance(v, TimeInterval):
            return self.now - v.seconds
        if isinstance(v, Timestamp):
            return v.epoch
        raise self.err(node, f"{node.var}.{node.name}(): {what} must be a timeinterval or timestamp, "
                             f"got a {_type_name(v)}", hint=_SIGNATURES.get(node.name))

    def window(self, node: _Method, start: object, end: object | None) -> tuple[float, float, int, float]:
        """(lo, hi, samples available in (lo, hi], percent of the expected samples)."""
        a = self.instant(node, start, "the start")
        b = self.now if end is None else self.instant(node, end, "the end")
        lo, hi = min(a, b), max(a, b)
        times, _ = self.samples_of(node.var)
        first, last = bisect.bisect_right(times, lo), bisect.bisect_right(times, hi)
        count = last - first
        period = float(self.m.sample_period) or SAMPLE_PERIOD_SECONDS
        expected = max(1, int((hi - lo) / period + 1e-9))
        return first, last, count, min(100.0, 100.0 * count / expected)

    def method(self, node: _Method) -> object:
        name, var = node.name, node.var
        args = [self.eval(a) for a in node.args]
        times, values = self.samples_of(var)
        if name == "Count":
            return float(len(times))
        if name == "GetSamplePeriod":
            return TimeInterval(float(self.m.sample_period))
        if name == "HistoryBeginTime":
            if not times:
                raise self.err(node, f"{var} has no samples yet", code="InsufficientSampleData",
                               hint=f"check {var}.Count() > 0 first")
            return Timestamp(times[0])
        if name == "GetSamplePercent":
            _, _, _, pct = self.window(node, args[0], args[1] if len(args) > 1 else None)
            return pct
        # GetSample
        first = args[0]
        if isinstance(first, float):
            if len(args) > 1:
                raise self.err(node, f"{var}.GetSample(count) takes no other argument",
                               code="InvalidArgument", hint=_SIGNATURES["GetSample"])
            if not 1 <= first <= MAX_VECTOR_LENGTH or first != int(first):
                raise self.err(node, f"{var}.GetSample({_fmt_double(first)}): the count must be a whole "
                                     f"number from 1 to {MAX_VECTOR_LENGTH}", code="InvalidArgument",
                               hint="for a time window multiply by a TimeInterval, e.g. 5 * TimeInterval_Minute")
            n = int(first)
            if n > len(values):
                raise self.err(node, f"{var}.GetSample({n}): only {len(values)} sample"
                                     f"{'s are' if len(values) != 1 else ' is'} available",
                               code="InsufficientSampleData",
                               hint=f"check {var}.Count() first and fall back, e.g. "
                                    f"{var}.Count() < {n} ? 0 : max({var}.GetSample({n}))")
            return self.vec(node, values[len(values) - n:])
        end, percent = None, None
        if len(args) >= 2:
            if isinstance(args[1], float):
                if len(args) == 3:
                    raise self.err(node, f"{var}.GetSample(start, end, samplePercent): end must be a "
                                         "timeinterval or timestamp", hint=_SIGNATURES["GetSample"])
                percent = args[1]
            else:
                end = args[1]
        if len(args) == 3:
            percent = args[2]
            if not isinstance(percent, float):
                raise self.err(node, f"{var}.GetSample(): samplePercent must be a double, got a "
                                     f"{_type_name(percent)}", hint=_SIGNATURES["GetSample"])
        if percent is not None and not 0.0 <= percent <= 100.0:
            raise self.err(node, f"samplePercent {_fmt_double(percent)} is outside 0..100", code="InvalidArgument")
        lo_i, hi_i, count, pct = self.window(node, first, end)
        if percent is not None and pct < percent:
            raise self.err(node, f"{var}.GetSample(): only {pct:.4g}% of the expected samples are "
                                 f"available in the window ({count} samples), {_fmt_double(percent)}% required",
                           code="InsufficientSampleData",
                           hint=f"check {var}.GetSamplePercent(...) first and fall back, or lower the percent")
        return self.vec(node, values[lo_i:hi_i])


def _apply(op: str, a: float, b: float) -> float:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return a / b


def _round_half_away(x: float) -> float:
    return float(math.floor(x + 0.5)) if x >= 0 else -float(math.floor(-x + 0.5))


def _finite(fn):
    def wrapped(x: float) -> float:
        return float(fn(x)) if math.isfinite(x) else x
    return wrapped


_ELEMENTWISE = {
    "lg": math.log2, "ln": math.log, "log": math.log10,
    "ceil": _finite(math.ceil), "floor": _finite(math.floor), "round": _finite(_round_half_away),
}

_W3C = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?"
                  r"(Z|[+-]\d{2}:\d{2})?)?)?)?$")


def _parse_time(node: _Node, text: str) -> Timestamp:
    s = text.strip()
    m = _W3C.match(s)
    try:
        if m:
            year, month, day, hh, mm, ss, frac, tz = m.groups()
            dt = datetime(int(year), int(month or 1), int(day or 1), int(hh or 0), int(mm or 0),
                          int(ss or 0), tzinfo=timezone.utc)
            if frac:
                dt += timedelta(seconds=float(frac))
            if tz and tz != "Z":
                sign = 1 if tz[0] == "+" else -1
                dt -= sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6]))
        else:
            dt = email.utils.parsedate_to_datetime(s)
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=timezone.utc)
    except (TypeError, ValueError, IndexError, OverflowError):
        raise FormulaError(f"time({text!r}): not a W3C-DTF or RFC 1123 date-time", line=node.line,
                           column=node.col, code="InvalidArgument",
                           hint='e.g. time("2024-01-15T10:00:00Z") or time("Mon, 15 Jan 2024 10:00:00 GMT")')
    return Timestamp((dt - datetime(1970, 1, 1, tzinfo=timezone.utc)).total_seconds())


def _target(value: object) -> int:
    x = float(value)  # validated as a non-NaN double on assignment; initial values are floats
    if math.isnan(x) or x <= 0:
        return 0
    return int(min(x, MAX_TARGET_NODES))  # truncated toward zero, as Batch does


def evaluate(program: Program, metrics: Metrics, *, rng: random.Random | None = None) -> Result:
    """Evaluate a parsed formula against ``metrics``. Raises FormulaError on runtime errors
    (type errors, division by zero, too few samples for GetSample's samplePercent, ...).
    A statement calling ``stop()`` ends the evaluation; the values assigned so far stand.
    ``rng`` makes ``rand()`` reproducible."""
    ev = _Evaluator(metrics, rng or random.Random())
    ev.run(program)
    dedicated = _target(ev.final("$TargetDedicatedNodes", "$TargetDedicated"))
    low = _target(ev.final("$TargetLowPriorityNodes", "$TargetLowPriority"))
    dealloc_assigned = "$NodeDeallocationOption" in ev.settable
    dealloc = ev.final("$NodeDeallocationOption", None)
    variables: dict[str, object] = {
        "$TargetDedicatedNodes": dedicated,
        "$TargetLowPriorityNodes": low,
        "$NodeDeallocationOption": dealloc,
    }
    for name in sorted(ev.vars):
        variables[name] = ev.vars[name]
    return Result(target_dedicated=dedicated, target_low_priority=low,
                  node_deallocation_option=dealloc if dealloc_assigned else None, variables=variables)
