"""Rows of the result table and how they are printed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Row:
    scenario: str
    figure: str
    value: str
    target: str = ""
    passed: bool | None = None  # None: a reference figure, no verdict

    @property
    def result(self) -> str:
        if self.passed is None:
            return ""
        return "pass" if self.passed else "MISS"


@dataclass
class ScenarioReport:
    name: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def row(self, figure: str, value: str, target: str = "", passed: bool | None = None) -> None:
        self.rows.append(Row(self.name, figure, value, target, passed))

    def note(self, text: str) -> None:
        self.notes.append(text)


def number(value: float, decimals: int = 0) -> str:
    return f"{value:,.{decimals}f}"


def millis(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), math.ceil(fraction * len(sorted_values))))
    return sorted_values[rank - 1]


def render(header: str, reports: Sequence[ScenarioReport]) -> str:
    columns = ("scenario", "figure", "value", "target", "result")
    rows = [r for report in reports for r in report.rows]
    table = [columns] + [(r.scenario, r.figure, r.value, r.target, r.result) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    lines = [header, ""]
    for index, line in enumerate(table):
        cells = [
            # numbers read better right-aligned; the value column is the only numeric one
            cell.rjust(widths[i]) if i == 2 and index > 0 else cell.ljust(widths[i])
            for i, cell in enumerate(line)
        ]
        lines.append("  ".join(cells).rstrip())
    noted = [report for report in reports if report.notes or report.error]
    if noted:
        lines.append("")
        for report in noted:
            if report.error:
                lines.append(f"{report.name}: FAILED: {report.error}")
            lines.extend(f"{report.name}: {note}" for note in report.notes)
    return "\n".join(lines)
