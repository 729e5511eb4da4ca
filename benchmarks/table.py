"""One shape for every benchmark's figures, so `make bench` can print them as one table with their
goals, and each benchmark run alone prints the same table for its own figures."""

from __future__ import annotations

import importlib
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

COLUMNS = ("phase", "figure", "measured", "goal", "met")


@dataclass(frozen=True)
class Figure:
    """One measured figure; `met` is None when it has no goal and is shown for context."""

    phase: str
    what: str
    value: float
    unit: str
    goal: str = ""
    met: bool | None = None

    @property
    def measured(self) -> str:
        return f"{number(self.value)} {self.unit}".rstrip()


def number(value: float) -> str:
    """Counts and large figures with thousands separators, the rest to three significant digits."""
    if not math.isfinite(value):
        return str(value)
    if value == int(value) or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def at_most(phase: str, what: str, value: float, unit: str, limit: float) -> Figure:
    """A figure whose goal is an upper bound; a limit of 0 reads as "0" (none at all)."""
    bound = "0" if limit == 0 else f"<= {number(limit)}"
    return Figure(phase, what, value, unit, f"{bound} {unit}".rstrip(), value <= limit)


def at_least(phase: str, what: str, value: float, unit: str, limit: float) -> Figure:
    return Figure(phase, what, value, unit, f">= {number(limit)} {unit}".rstrip(), value >= limit)


def format_table(figures: Sequence[Figure]) -> str:
    """Aligned plain text (it goes to terminals and CI logs), with a count of the goals met."""
    rows = [COLUMNS, *((f.phase, f.what, f.measured, f.goal, verdict(f.met)) for f in figures)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(COLUMNS))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    judged = [f.met for f in figures if f.met is not None]
    lines.append(f"\n{sum(judged)} of {len(judged)} goals met")
    return "\n".join(lines)


def verdict(met: bool | None) -> str:
    return "" if met is None else "yes" if met else "NO"


def note(text: str) -> None:
    """Progress and detail go to stderr: stdout carries only the table."""
    print(text, file=sys.stderr, flush=True)


def collect(module: str) -> list[Figure]:
    """A benchmark module's figures, in the child process `python -m benchmarks` starts for it (a
    spawned child cannot import benchmarks.__main__, hence here). Its stdout joins stderr, so the
    parent's stdout carries only the table."""
    os.dup2(2, 1)
    figures: list[Figure] = importlib.import_module(module).figures()
    return figures
