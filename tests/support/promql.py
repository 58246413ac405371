"""The metric names the Grafana dashboards and the Prometheus alert rules read.

A small PromQL tokenizer, not a parser: an identifier is a metric name unless it is a function or
aggregation (followed by ``(``), a keyword (``by``, ``on``, ``bool``, ``offset``, ``and``, ...),
a label name (inside ``{...}`` or the label list of ``by``/``without``/``on``/``ignoring``/
``group_left``/``group_right``) or part of a range or subquery (``[5m:1m]``). Strings, numbers,
durations, comments and Grafana variables (``$channel``, ``${channel}``, ``$__rate_interval``)
are skipped. ``{__name__="x"}`` and Prometheus 3's quoted ``{"x"}`` name ``x``. A histogram
series (``_bucket``, ``_sum``, ``_count``) is given by its family's name, as docs/metrics.md and
the ``# TYPE`` lines of an exposition name it (``base_name``).

``metric_names_used()`` is what a test that scrapes the running services compares with.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
RULES = ROOT / "deploy" / "prometheus" / "rules"

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

AGGREGATIONS = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    }
)
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = (
    AGGREGATIONS
    | GROUPING
    | frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "start", "end"})
)
"""Lower case: PromQL reads keywords and aggregation operators in any case."""

_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<comment>\#[^\n]*)
    | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    | (?P<variable>\$\{[^}]*\}|\$\w+|\[\[[^\]]*\]\])
    | (?P<number>(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)[a-zA-Z0-9_]*)
    | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
    | (?P<punct>=~|!~|!=|==|<=|>=|[-+*/%^<>=,(){}\[\]@:])
    """,
    re.VERBOSE,
)


class PromQLSyntaxError(ValueError):
    """A character no PromQL token starts with, or brackets that do not match."""


@dataclass(frozen=True)
class Token:
    kind: str
    text: str


def tokens(expr: str) -> list[Token]:
    """The tokens of ``expr`` without white space and comments."""
    result: list[Token] = []
    position = 0
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        if match is None:
            raise PromQLSyntaxError(f"unexpected {expr[position]!r} at {position} in {expr!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind not in ("space", "comment"):
            result.append(Token(kind, match.group()))
        position = match.end()
    return result


def _unquote(text: str) -> str:
    body = text[1:-1]
    return body if text[0] == "`" else re.sub(r"\\(.)", r"\1", body)


def _closing(items: list[Token], start: int, opening: str, closing: str) -> int:
    """The index of the token closing the bracket opened at ``start``."""
    depth = 0
    for index in range(start, len(items)):
        if items[index].text == opening:
            depth += 1
        elif items[index].text == closing:
            depth -= 1
            if depth == 0:
                return index
    raise PromQLSyntaxError(f"unclosed {opening!r}")


def _names_in_matchers(items: list[Token]) -> list[str]:
    """Metric names inside ``{...}``: ``__name__="x"`` and a lone quoted ``"x"``."""
    names: list[str] = []
    for index, token in enumerate(items):
        if token.kind != "string":
            continue
        before = items[index - 1].text if index else ","
        after = items[index + 1].text if index + 1 < len(items) else ","
        by_name = before == "=" and index >= 2 and items[index - 2].text == "__name__"
        alone = before == "," and after == ","
        if by_name or alone:
            names.append(_unquote(token.text))
    return names


def selectors(expr: str) -> list[str]:
    """Every metric name ``expr`` selects, as written (``foo_bucket`` stays ``foo_bucket``)."""
    items = tokens(expr)
    names: list[str] = []
    index = 0
    while index < len(items):
        token = items[index]
        following = items[index + 1].text if index + 1 < len(items) else ""
        if token.text == "{":
            end = _closing(items, index, "{", "}")
            names += _names_in_matchers(items[index + 1 : end])
            index = end + 1
            continue
        if token.text == "[":
            index = _closing(items, index, "[", "]") + 1
            continue
        if token.kind == "ident":
            word = token.text.lower()
            if word in GROUPING and following == "(":
                index = _closing(items, index + 1, "(", ")") + 1
                continue
            if following != "(" and word not in KEYWORDS:
                names.append(token.text)
        index += 1
    return names


def base_name(name: str) -> str:
    """A histogram series' family name: ``x_bucket``, ``x_sum`` and ``x_count`` are ``x``."""
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def metric_names(expr: str) -> set[str]:
    """The metrics ``expr`` reads, histograms by their family name."""
    return {base_name(name) for name in selectors(expr)}


# -- where the expressions are --------------------------------------------------------------------


@dataclass(frozen=True)
class Expression:
    where: str
    """File and place, for messages: ``herald-overview.json: panel 'Breakers' target A``."""
    expr: str


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def rule_files() -> list[Path]:
    return sorted(RULES.glob("*.yml"))


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard, rows and the panels of collapsed rows included (and the
    ``rows`` of the old schema)."""

    def walk(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from walk(panel.get("panels", []))

    yield from walk(dashboard.get("panels", []))
    for row in dashboard.get("rows", []):
        yield from walk(row.get("panels", []))


def _split_arguments(text: str) -> list[str]:
    """The top-level comma-separated arguments of a call's argument list."""
    arguments: list[str] = []
    depth = 0
    quote = ""
    current = ""
    for char in text:
        if quote:
            quote = "" if char == quote and not current.endswith("\\") else quote
        elif char in "\"'`":
            quote = char
        elif char in "({[":
            depth += 1
        elif char in ")}]":
            depth -= 1
        elif char == "," and depth == 0:
            arguments.append(current.strip())
            current = ""
            continue
        current += char
    if current.strip():
        arguments.append(current.strip())
    return arguments


def templating_expressions(query: str) -> list[str]:
    """The PromQL inside a Grafana Prometheus variable query: ``label_values(selector, label)``
    reads ``selector``, ``label_values(label)``, ``label_names()`` and ``metrics(regex)`` read no
    expression, ``query_result(expr)`` reads ``expr``; anything else is an expression."""
    call = re.fullmatch(
        r"\s*(label_values|label_names|metrics|query_result)\s*\((.*)\)\s*", query, re.DOTALL
    )
    if call is None:
        return [query] if query.strip() else []
    function, inner = call.groups()
    arguments = _split_arguments(inner)
    if function == "label_values":
        return arguments[:1] if len(arguments) == 2 else []
    if function == "label_names":
        return arguments[:1]
    if function == "query_result":
        return [inner]
    return []


def dashboard_expressions(path: Path) -> list[Expression]:
    """Every query of a dashboard: the targets of every panel and the query variables."""
    dashboard = json.loads(path.read_text())
    found: list[Expression] = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if expr:
                where = f"{path.name}: panel {panel.get('title')!r} target {target.get('refId')}"
                found.append(Expression(where, expr))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        for expr in templating_expressions(text):
            found.append(Expression(f"{path.name}: variable {variable.get('name')!r}", expr))
    return found


def rule_expressions(path: Path) -> list[Expression]:
    """The expression of every alerting and recording rule of a rules file."""
    document = yaml.safe_load(path.read_text())
    return [
        Expression(f"{path.name}: {rule.get('alert') or rule.get('record')}", rule["expr"])
        for group in document.get("groups", [])
        for rule in group.get("rules", [])
    ]


def all_expressions() -> list[Expression]:
    found: list[Expression] = []
    for dashboard in dashboard_files():
        found += dashboard_expressions(dashboard)
    for rules in rule_files():
        found += rule_expressions(rules)
    return found


def metric_names_used() -> set[str]:
    """Every metric the dashboards and the alert rules read, as the services must export them,
    without RabbitMQ's (``rabbitmq_*``) and Prometheus' own ``up``. Counters carry their
    ``_total``; histograms are named by family (see ``base_name``)."""
    return {
        name
        for expression in all_expressions()
        for name in metric_names(expression.expr)
        if name != "up" and not name.startswith("rabbitmq_")
    }
