"""The migration report: one self-contained HTML file and its data as JSON, per run.

Built from what the run recorded: the task instances' states and durations (the Task SDK's
task breadcrumbs of the run), every task's XCom summary, and Prometheus's series over the
moments that matter (each traffic gate's bake, the writes around the switchover). Charts are
inline SVG: no script, no CDN (the network may be closed), so the file opens anywhere and can be
attached to a ticket. Every table cell is a figure with its unit or a word, never raw data.

    report_<dag_id>_<run_id>.html / .json   under validation.report_dir (default reports/)

Where Prometheus's series come from: the tasks record durations, not wall-clock times, so each
window is placed from the one timestamp the run keeps (the Redis switch marker, written at the end
of the switchover) plus the durations of the tasks chained after it. The windows are exact to
the scheduling gaps between tasks (a second or two); the charts say so.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pyairtable_migration.plan import PHASES

REPO_ROOT = Path(__file__).resolve().parents[2]
STATE_COLORS = {
    "success": "#3c9a5f",
    "failed": "#c9423a",
    "upstream_failed": "#e08a3c",
    "skipped": "#b0b0b0",
    "running": "#3b7dd8",
}
# Committed writes per second, as Prometheus sees the writers. The configuration has no field for
# it yet; the default is the lab's writers' counter, a real platform names its own series here.
WRITES_QUERY = os.environ.get("PYAIRTABLE_REPORT_WRITES_QUERY", "sum(rate(lab_loadgen_db_commits_total[5s]))")
# Seconds of writes shown before and after the switchover.
WRITES_BEFORE, WRITES_AFTER = 60, 30
# What an approval task returns that the report shows: who answered and when.
APPROVAL_FIELDS = ("approved", "by", "answered_at", "timed_out")


def resolve_dir(report_dir: str | Path) -> Path:
    path = Path(report_dir)
    return path if path.is_absolute() else REPO_ROOT / path


# Where Airflow's api-server serves report files (plugins/pyairtable_migration/reports_app.py).
REPORTS_URL_PREFIX = "/pyairtable-reports"


def link_for(path: Path, base_url: str = "") -> str:
    """`<base_url>/<file>`; without a base URL, the path the Airflow api-server serves it on."""
    return f"{base_url.rstrip('/') or REPORTS_URL_PREFIX}/{path.name}"


# --- collection -------------------------------------------------------------------------------------


def _task_instances(context: Mapping[str, Any]) -> list[dict[str, Any]]:
    """task_id, state, duration of every finished task of this run (empty when not reachable)."""
    ti = context["ti"]
    try:
        crumbs = ti.get_task_breadcrumbs(context["dag"].dag_id, context["run_id"])
        return [
            {
                "task_id": c["task_id"],
                "state": str(getattr(c.get("state"), "value", c.get("state"))),
                "duration": c.get("duration"),
                "operator": c.get("operator"),
            }
            for c in crumbs
            if c.get("map_index", -1) in (-1, None)
        ]
    except Exception:
        return []


def _xcoms(context: Mapping[str, Any]) -> dict[str, Any]:
    ti, own = context["ti"], context["ti"].task_id
    values: dict[str, Any] = {}
    for task in context["dag"].tasks:
        if task.task_id == own:
            continue
        for key in ("return_value", "figures"):
            with contextlib.suppress(Exception):
                value = ti.xcom_pull(task_ids=task.task_id, key=key)
                if value is not None:
                    values.setdefault(task.task_id, {})[key] = value
    return values


def _prometheus_range(conn_id: str, query: str, start: float, end: float, step: float) -> list[list[float]]:
    """[[epoch seconds, value], ...] of a range query's first series (NaN points left out)."""
    from pyairtable_migration.hooks.prometheus import PrometheusHook

    response = PrometheusHook(conn_id).run(
        "api/v1/query_range",
        data={"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{max(step, 1.0):g}"},
        extra_options={"timeout": 10},
    )
    result = response.json()["data"]["result"]
    if not result:
        return []
    return [[float(t), float(v)] for t, v in result[0]["values"] if not math.isnan(float(v))]


def _epoch(value: Any) -> float | None:
    with contextlib.suppress(TypeError, ValueError):
        return dt.datetime.fromisoformat(str(value)).timestamp()
    return None


def _series(
    context: Mapping[str, Any], xcoms: Mapping[str, Any], durations: Mapping[str, float | None]
) -> dict[str, Any]:
    """Prometheus's view of each gate's bake and of the writes around the switchover.

    Windows are placed from the Redis switch marker (written as the switchover ends) plus the
    durations of the tasks that ran after it, in DAG order (see the module docstring).
    """
    switched = _epoch(_value(xcoms, "switchover.switch_redis").get("switched_at"))
    if switched is None:
        return {"note": "the switchover left no timestamp (no Redis switch marker): no series"}
    result: dict[str, Any] = {"gates": {}, "writes": {}, "note": ""}
    shifts = [t for t in context["dag"].tasks if t.task_id.startswith("traffic.shift_to_")]
    conn_id = next((getattr(t, "prometheus_conn_id", None) for t in shifts), None)
    if conn_id is None:
        return {**result, "note": "no traffic gate names a Prometheus connection: no series"}
    bake = float(context["params"].get("bake_seconds") or 0)
    clock = switched
    for task in context["dag"].tasks:
        if not task.task_id.startswith("traffic.") or durations.get(task.task_id) is None:
            continue
        clock += float(durations[task.task_id] or 0)
        if task in shifts and hasattr(task, "gate_queries"):
            step = float(getattr(task, "sample_seconds", 2) or 2)
            start, end = clock - bake, clock
            entry: dict[str, Any] = {"bake_start": start, "bake_end": end}
            try:
                for name, query in task.gate_queries().items():
                    entry[name] = _prometheus_range(conn_id, query, start - 2 * step, end + 2 * step, step)
            except Exception as exc:
                entry["note"] = f"Prometheus did not answer: {type(exc).__name__}: {exc}"[:300]
            result["gates"][task.task_id] = entry
    switch_took = float(durations.get("switchover.switch_database") or 0)
    redis_took = float(durations.get("switchover.switch_redis") or 0)
    writes: dict[str, Any] = {
        "query": WRITES_QUERY,
        "switch_start": switched - redis_took - switch_took,
        "switch_end": switched - redis_took,
    }
    try:
        writes["points"] = _prometheus_range(
            conn_id, WRITES_QUERY, switched - WRITES_BEFORE, switched + WRITES_AFTER, 1
        )
    except Exception as exc:
        writes["note"] = f"Prometheus did not answer: {type(exc).__name__}: {exc}"[:300]
    result["writes"] = writes
    return result


def collect(context: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the report shows, as plain JSON-able data."""
    dag_run = context.get("dag_run")
    run_started = getattr(dag_run, "start_date", None)
    instances = {t["task_id"]: t for t in _task_instances(context)}
    tasks = []
    for task in context["dag"].tasks:
        if task.task_id == context["ti"].task_id:
            continue
        known = instances.get(task.task_id, {})
        tasks.append(
            {
                "task_id": task.task_id,
                "phase": task.task_id.split(".", 1)[0],
                "state": known.get("state") or "unknown",
                "duration": known.get("duration"),
            }
        )
    xcoms = _xcoms(context)
    try:
        series = _series(context, xcoms, {t["task_id"]: t["duration"] for t in tasks})
    except Exception as exc:  # the report is written whatever happened
        series = {"note": f"series not collected: {type(exc).__name__}: {exc}"[:300]}
    return build_data(
        dag_id=context["dag"].dag_id,
        run_id=str(context["run_id"]),
        mode=str(context["params"].get("mode", "plan")),
        started=run_started.isoformat() if run_started else None,
        tasks=tasks,
        xcoms=xcoms,
        lag_threshold_bytes=context["params"].get("lag_threshold_bytes"),
        series=series,
    )


def _value(xcoms: Mapping[str, Any], task_id: str) -> dict[str, Any]:
    entry = xcoms.get(task_id) or {}
    value = entry.get("return_value") or entry.get("figures")
    return value if isinstance(value, dict) else {}


def _find(value: Any, keys: Sequence[str]) -> list[tuple[str, Any]]:
    """Every (key, value) under any of `keys`, anywhere inside `value`."""
    found: list[tuple[str, Any]] = []
    if isinstance(value, Mapping):
        for k, v in value.items():
            if k in keys:
                found.append((k, v))
            found.extend(_find(v, keys))
    elif isinstance(value, list):
        for item in value:
            found.extend(_find(item, keys))
    return found


WATCH_TASK = "traffic.watch"


def _gate_entry(xcoms: Mapping[str, Any], task_id: str, weight: int) -> dict[str, Any]:
    """What a gated task (a weight step, the watch after 100 %) measured: peaks, limits, verdict."""
    value = _value(xcoms, task_id)
    peaks = next((v for _, v in _find(value, ("peaks",)) if isinstance(v, Mapping)), {})
    gate: Mapping[str, Any] = value["gate"] if isinstance(value.get("gate"), Mapping) else {}
    return {
        "task_id": task_id,
        "weight": weight,
        "error_ratio": peaks.get("error_ratio"),
        "p99": peaks.get("p99"),
        "limits": dict(gate.get("limits") or {}),
        "samples": gate.get("samples"),
        "complete_samples": gate.get("complete_samples"),
        "status": gate.get("status") or ("breached" if gate.get("message") else None),
    }


def build_data(
    *,
    dag_id: str,
    run_id: str,
    mode: str,
    started: str | None,
    tasks: list[dict[str, Any]],
    xcoms: dict[str, Any],
    lag_threshold_bytes: float | None = None,
    series: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    phases = []
    for phase in PHASES:
        inside = [t for t in tasks if t["phase"] == phase]
        if not inside:
            continue
        states: dict[str, int] = {}
        for t in inside:
            states[t["state"]] = states.get(t["state"], 0) + 1
        phases.append(
            {
                "phase": phase,
                "tasks": len(inside),
                "states": states,
                "task_seconds": round(sum(t["duration"] or 0 for t in inside), 2),
                "longest_task": max(inside, key=lambda t: t["duration"] or 0)["task_id"],
            }
        )
    switch = _value(xcoms, "switchover.switch_database")
    lag_gate = _value(xcoms, "database.lag_gate")
    lags = next((v for _, v in _find(lag_gate, ("lags", "samples_bytes")) if isinstance(v, list)), [])
    traffic = [
        _gate_entry(xcoms, task_id, int(re.sub(r"\D", "", task_id) or 0))
        for task_id in sorted(
            (t for t in xcoms if t.startswith("traffic.shift_to_")),
            key=lambda t: int(re.sub(r"\D", "", t) or 0),
        )
    ]
    watch = _gate_entry(xcoms, WATCH_TASK, 100) if WATCH_TASK in xcoms else None
    if watch is not None:
        watch["watch_seconds"] = _value(xcoms, WATCH_TASK).get("watch_seconds")
    validation = {t: _value(xcoms, t) for t in xcoms if t.startswith("validation.")}
    approvals = [
        {"task_id": task_id, **{k: _value(xcoms, task_id).get(k) for k in APPROVAL_FIELDS}}
        for task_id in sorted(xcoms)
        if task_id.split(".")[-1].startswith("approve")
    ]
    rolled_back = [
        f"{task_id}: {key} {_words(value)}"
        for task_id in sorted(xcoms)
        for key, value in _find(xcoms[task_id], ("rolled_back_from", "reverted", "rolled_back", "revert"))
        if value
    ]
    rolled_back += [f"{t['task_id']}: failed" for t in tasks if t["state"] == "failed"]
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "mode": mode,
        "started": started,
        "generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "elapsed_seconds": _elapsed(started),
        "tasks": tasks,
        "phases": phases,
        "write_stall_ms": switch.get("write_stall_ms"),
        "redis_stall_ms": _value(xcoms, "switchover.switch_redis").get("stall_ms"),
        "switchover": switch,
        "replication_lag_bytes": [x for x in lags if isinstance(x, int | float)],
        "lag_gate": {"passed": lag_gate.get("passed"), "threshold_bytes": lag_threshold_bytes}
        if lag_gate
        else {},
        "traffic": traffic,
        "watch": watch,
        "approvals": approvals,
        "validation": validation,
        "rolled_back": rolled_back,
        "series": dict(series or {}),
    }


def _elapsed(started: str | None) -> float | None:
    """Wall time from the run's start to this report, in seconds."""
    if not started:
        return None
    with contextlib.suppress(ValueError):
        return round((dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(started)).total_seconds(), 1)
    return None


def write(data: Mapping[str, Any], report_dir: str | Path) -> tuple[Path, Path]:
    directory = resolve_dir(report_dir)
    directory.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"report_{data['dag_id']}_{data['run_id']}")
    html_path, json_path = directory / f"{stem}.html", directory / f"{stem}.json"
    json_path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    html_path.write_text(render_html(data))
    return html_path, json_path


# --- words and numbers ---------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _words(value: Any) -> str:
    """A value as a person reads it: lists as counts or short enumerations, mappings as `key value` pairs."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, Mapping):
        if not value:
            return "none"
        return "; ".join(
            f"{k} {f'{len(v)} entries' if isinstance(v, Mapping) else _words(v)}" for k, v in value.items()
        )
    if isinstance(value, list | tuple):
        if not value:
            return "none"
        if all(isinstance(v, str) for v in value) and sum(len(v) for v in value) < 200:
            return ", ".join(value)
        return f"{len(value)} items"
    return str(value)


def _pct(ratio: Any) -> str:
    return "—" if ratio is None else f"{float(ratio) * 100:.2f} %"


def _s(seconds: Any) -> str:
    return "—" if seconds is None else f"{float(seconds):.3f} s"


def _bytes(value: Any) -> str:
    if value is None:
        return "—"
    number = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(number) < 1024 or unit == "GiB":
            return f"{number:,.0f} {unit}" if unit == "B" else f"{number:,.1f} {unit}"
        number /= 1024
    return ""


def _verdict(ok: bool | None) -> str:
    return "—" if ok is None else "pass" if ok else "FAIL"


# --- charts --------------------------------------------------------------------------------------------


SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="{label}">'


def bar_chart(items: Sequence[tuple[str, float, str]], unit: str, width: int = 640) -> str:
    """Horizontal bars: (label, value, color)."""
    if not items:
        return "<p><em>no data</em></p>"
    top = max(v for _, v, _ in items) or 1.0
    row, left = 22, 190
    height = row * len(items) + 10
    parts = [SVG.format(w=width, h=height, label=_e(f"bars in {unit}"))]
    for i, (label, value, color) in enumerate(items):
        y = 5 + i * row
        length = max(1.0, (width - left - 90) * value / top)
        parts.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end" font-size="12">{_e(label)}</text>')
        parts.append(f'<rect x="{left}" y="{y + 2}" width="{length:.1f}" height="{row - 6}" fill="{color}"/>')
        parts.append(
            f'<text x="{left + length + 4:.1f}" y="{y + 14}" font-size="12">{value:g} {_e(unit)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def time_chart(
    points: Sequence[Sequence[float]],
    *,
    title: str,
    unit: str,
    scale: float = 1.0,
    limit: float | None = None,
    band: tuple[float, float, str] | None = None,
    zero: float = 0.0,
    x_label: str = "s",
    width: int = 420,
    height: int = 190,
) -> str:
    """A line over time: `points` are [x, y]; x shown relative to `zero`, y times `scale` in `unit`.

    `limit` draws the threshold as a dashed red line; `band` (x0, x1, label) shades a span.
    """
    left, right, top_pad, bottom = 56, 14, 26, 34
    if not points:
        return f'<div class="chart"><p class="title">{_e(title)}</p><p><em>no samples recorded</em></p></div>'
    xs = [p[0] - zero for p in points]
    ys = [p[1] * scale for p in points]
    lo_x, hi_x = (
        min(xs + ([band[0] - zero, band[1] - zero] if band else [])),
        max(xs + ([band[0] - zero, band[1] - zero] if band else [])),
    )
    hi_x = hi_x if hi_x > lo_x else lo_x + 1
    limit_y = limit * scale if limit is not None else None
    top = max([*ys, limit_y or 0.0]) * 1.1 or 1.0
    inner_w, inner_h = width - left - right, height - top_pad - bottom

    def x_at(x: float) -> float:
        return left + inner_w * (x - lo_x) / (hi_x - lo_x)

    def y_at(y: float) -> float:
        return top_pad + inner_h * (1 - y / top)

    parts = [SVG.format(w=width, h=height, label=_e(title))]
    parts.append(f'<text x="{left}" y="15" font-size="12" font-weight="bold">{_e(title)}</text>')
    if band:
        x0, x1 = x_at(band[0] - zero), x_at(band[1] - zero)
        parts.append(
            f'<rect x="{x0:.1f}" y="{top_pad}" width="{max(x1 - x0, 2):.1f}" height="{inner_h}" '
            'fill="#f3d9a4" opacity="0.7"/>'
        )
        parts.append(
            f'<text x="{x0 + 3:.1f}" y="{top_pad + 12}" font-size="11" fill="#8a5a00">{_e(band[2])}</text>'
        )
    axis = f"{left},{top_pad} {left},{top_pad + inner_h} {left + inner_w},{top_pad + inner_h}"
    parts.append(f'<polyline points="{axis}" fill="none" stroke="#888"/>')
    for value in (0.0, top / 1.1):
        parts.append(
            f'<text x="{left - 4}" y="{y_at(value) + 4:.1f}" text-anchor="end" font-size="11">'
            f"{_e(f'{value:.3g}')}</text>"
        )
    for value in (lo_x, hi_x):
        parts.append(
            f'<text x="{x_at(value):.1f}" y="{top_pad + inner_h + 14}" text-anchor="middle" font-size="11">'
            f"{value:+.0f} {_e(x_label)}</text>"
        )
    parts.append(
        f'<text x="{left + inner_w / 2:.1f}" y="{height - 4}" text-anchor="middle" font-size="11">'
        f"{_e(unit)}</text>"
    )
    if limit_y is not None:
        y = y_at(limit_y)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + inner_w}" y2="{y:.1f}" stroke="#c9423a" '
            'stroke-dasharray="5,4"/>'
        )
        parts.append(
            f'<text x="{left + inner_w - 2}" y="{y - 4:.1f}" text-anchor="end" font-size="11" fill="#c9423a">'
            f"limit {_e(f'{limit_y:g}')}</text>"
        )
    line = " ".join(f"{x_at(x):.1f},{y_at(y):.1f}" for x, y in zip(xs, ys, strict=True))
    parts.append(f'<polyline points="{line}" fill="none" stroke="#3b7dd8" stroke-width="2"/>')
    parts.append("</svg>")
    return f'<div class="chart">{"".join(parts)}</div>'


# --- tables --------------------------------------------------------------------------------------------


def _approval_rows(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Who answered each approval and when (a skipped one, approvals off, returned nothing)."""
    return [
        {
            "approval": a["task_id"],
            "answer": "approved" if a.get("approved") else "planned, not asked",
            "by": a.get("by") or "—",
            "at": a.get("answered_at") or "—",
        }
        for a in data.get("approvals") or []
    ]


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """`columns`: (key, heading). Every cell goes through `_words`: no raw data in a cell."""
    if not rows:
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{_e(title)}</th>" for _, title in columns)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{_cell_class(row.get(key))}">{_e(_words(row.get(key)))}</td>' for key, _ in columns
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell_class(value: Any) -> str:
    return {"pass": "pass", "FAIL": "fail", "met": "pass", "breached": "fail"}.get(str(value), "")


def _phase_rows(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "phase": p["phase"],
            "tasks": p["tasks"],
            "succeeded": p["states"].get("success", 0),
            "failed": p["states"].get("failed", 0) + p["states"].get("upstream_failed", 0),
            "skipped": p["states"].get("skipped", 0),
            "seconds": f"{p['task_seconds']:.1f} s",
            "longest": p["longest_task"],
        }
        for p in data["phases"]
    ]


def _gate_rows(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    lag_gate = data.get("lag_gate") or {}
    lags = data.get("replication_lag_bytes") or []
    if lag_gate or lags:
        threshold = lag_gate.get("threshold_bytes")
        rows.append(
            {
                "gate": "replication lag (database.lag_gate)",
                "measure": "lag behind the source",
                "worst": _bytes(max(lags) if lags else None),
                "limit": f"< {_bytes(threshold)}" if threshold is not None else "—",
                "samples": f"last {len(lags)} below the limit",
                "verdict": _verdict(lag_gate.get("passed")),
            }
        )
    watch = data.get("watch")
    gated = [(f"traffic {step['weight']} % ({step['task_id']})", step) for step in data["traffic"]]
    if watch:
        seconds = watch.get("watch_seconds")
        during = f" for {seconds:g} s" if isinstance(seconds, int | float) else ""
        gated.append((f"watch after 100 %{during} ({watch['task_id']})", watch))
    for gate, step in gated:
        limits = step.get("limits") or {}
        samples = (
            f"{step['complete_samples']} of {step['samples']} complete"
            if step.get("samples") is not None
            else "—"
        )
        verdict = _verdict(step["status"] == "passed" if step.get("status") else None)
        for measure, worst, limit in (
            ("error ratio", _pct(step.get("error_ratio")), _pct(limits.get("error_ratio"))),
            ("p99 latency", _s(step.get("p99")), _s(limits.get("p99"))),
        ):
            rows.append(
                {
                    "gate": gate,
                    "measure": f"production {measure}",
                    "worst": worst,
                    "limit": f"≤ {limit}",
                    "samples": samples,
                    "verdict": verdict,
                }
            )
    return rows


SWITCH_STEPS = (
    ("pause_ms", "pause the pooler(s)"),
    ("catch_up_ms", "marker caught up on the new primary"),
    ("sequences_ms", "sequences synced"),
    ("replication_ms", "reverse replication started, forward dropped"),
    ("repoint_ms", "pooler(s) repointed"),
    ("resume_ms", "pooler(s) resumed"),
    ("write_stall_ms", "write stall in all (writers waited, none failed)"),
)


def _switch_rows(switch: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {"step": title, "took": f"{float(switch[key]):.1f} ms"}
        for key, title in SWITCH_STEPS
        if key in switch
    ]


def _slo_rows(validation: Mapping[str, Any]) -> list[dict[str, Any]]:
    services = (validation.get("validation.latency_slos") or {}).get("services") or {}
    return [
        {
            "service": name,
            "class": f.get("slo_class"),
            "budget": f"< {f['budget_ms']} ms" if f.get("budget_ms") is not None else "—",
            "p95": f"{float(f['p95_ms']):.1f} ms" if f.get("p95_ms") is not None else "no requests",
            "verdict": {"met": "pass", "breached": "FAIL"}.get(str(f.get("verdict")), f.get("verdict")),
        }
        for name, f in sorted(services.items())
    ]


def _check_outcome(value: Mapping[str, Any]) -> str:
    if value.get("mode") == "plan":
        return "plan only"
    problems = [value.get(k) for k in ("problems", "mismatches", "differences", "breached", "down")]
    if value.get("passed") is False or any(p for p in problems if isinstance(p, list | int) and p):
        return "FAIL"
    return "pass"


def _check_rows(validation: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "check": task_id.split(".", 1)[1],
            "outcome": _check_outcome(value),
            "figures": _words({k: v for k, v in value.items() if k not in ("mode", "services")}),
        }
        for task_id, value in sorted(validation.items())
    ]


# --- the page ------------------------------------------------------------------------------------------


def _gate_charts(data: Mapping[str, Any]) -> str:
    series = data.get("series") or {}
    gates = series.get("gates") or {}
    figures = []
    for step in data["traffic"]:
        entry = gates.get(step["task_id"]) or {}
        limits = step.get("limits") or {}
        band = (entry["bake_start"], entry["bake_end"], "bake") if "bake_start" in entry else None
        zero = entry.get("bake_start", 0.0)
        panels = time_chart(
            entry.get("error_ratio") or [],
            title="error ratio",
            unit="% of production requests",
            scale=100,
            limit=limits.get("error_ratio"),
            band=band,
            zero=zero,
        ) + time_chart(
            entry.get("p99") or [],
            title="p99 latency",
            unit="seconds",
            limit=limits.get("p99"),
            band=band,
            zero=zero,
        )
        note = f'<p class="note">{_e(entry["note"])}</p>' if entry.get("note") else ""
        figures.append(
            f'<figure class="gate"><figcaption>traffic {step["weight"]} %: gate '
            f"{_e(step.get('status') or '—')}</figcaption>{panels}{note}</figure>"
        )
    if not figures:
        return "<p><em>no traffic step ran</em></p>"
    note = series.get("note") or (
        "Series from Prometheus at step = the gate's sample interval; the bake window (shaded) is placed "
        "from the switchover's timestamp and the durations of the tasks since, exact to a second or two."
    )
    return "".join(figures) + f'<p class="note">{_e(note)}</p>'


def _writes_chart(data: Mapping[str, Any]) -> str:
    writes = (data.get("series") or {}).get("writes") or {}
    if not writes:
        return f'<p class="note">{_e((data.get("series") or {}).get("note") or "no series collected")}</p>'
    stall = data.get("write_stall_ms")
    label = f"switch_database (stall {stall} ms inside)" if stall is not None else "switch_database"
    chart = time_chart(
        writes.get("points") or [],
        title="committed writes per second",
        unit="seconds from the switch task's start",
        band=(writes["switch_start"], writes["switch_end"], label),
        zero=writes["switch_start"],
        width=860,
        height=220,
    )
    note = writes.get("note") or (
        f"Prometheus query {writes.get('query')} at 1 s steps. A stall shorter than the query's rate "
        "window shows as a dip, not a gap; its exact length is the switch task's own measure."
    )
    return chart + f'<p class="note">{_e(note)}</p>'


def _lag_chart(data: Mapping[str, Any]) -> str:
    lags = data.get("replication_lag_bytes") or []
    threshold = (data.get("lag_gate") or {}).get("threshold_bytes")
    chart = time_chart(
        [[float(i), float(v)] for i, v in enumerate(lags)],
        title="replication lag at the lag gate",
        unit="KiB behind the source, by sample",
        scale=1 / 1024,
        limit=float(threshold) if threshold is not None else None,
        x_label="",
        width=640,
    )
    return chart + (
        '<p class="note">The samples that passed the gate (the gate keeps the consecutive samples below '
        "the limit, not the whole wait).</p>"
    )


def render_html(data: Mapping[str, Any]) -> str:
    durations = bar_chart(
        [
            (
                p["phase"],
                float(p["task_seconds"]),
                STATE_COLORS["failed"] if p["states"].get("failed") else "#3c9a5f",
            )
            for p in data["phases"]
        ],
        "s",
    )
    stall, redis_stall = data.get("write_stall_ms"), data.get("redis_stall_ms")
    validation = data.get("validation") or {}
    slo_rows = _slo_rows(validation)
    services = (validation.get("validation.latency_slos") or {}).get("services") or {}
    latency_bars = bar_chart(
        [
            (name, float(f["p95_ms"]), "#3c9a5f" if f.get("verdict") == "met" else "#c9423a")
            for name, f in sorted(services.items())
            if f.get("p95_ms") is not None
        ],
        "ms",
    )
    failures = [t for t in data["tasks"] if t["state"] in ("failed", "upstream_failed")]
    outcome = "completed" if not failures and data["tasks"] else f"{len(failures)} task(s) failed"
    task_rows = [
        {
            "task": t["task_id"],
            "state": t["state"],
            "took": f"{float(t['duration']):.1f} s" if t.get("duration") is not None else "—",
        }
        for t in data["tasks"]
    ]
    sections = [
        f"<h1>PyAirtable migration report</h1><p>DAG <code>{_e(data['dag_id'])}</code>, run "
        f"<code>{_e(data['run_id'])}</code>, mode <strong>{_e(data['mode'])}</strong>; started "
        f"{_e(data.get('started') or '—')}, report written {_e(data['generated'])}.</p>",
        '<section id="summary"><h2>At a glance</h2><ul>'
        f"<li>outcome: <strong>{_e(outcome)}</strong></li>"
        f'<li>write stall at the switchover: <strong id="write-stall">'
        f"{_e(f'{stall} ms' if stall is not None else 'not measured in this run')}</strong> (PostgreSQL), "
        f'<strong id="redis-stall">{_e(f"{redis_stall} ms" if redis_stall is not None else "none")}</strong> '
        "(Redis, through its write endpoint)</li>"
        f"<li>rolled back / failed: <strong>{len(data['rolled_back'])}</strong></li>"
        f"<li>tasks: {len(data['tasks'])}; run wall time until this report: "
        f"{_e(data.get('elapsed_seconds') if data.get('elapsed_seconds') is not None else '—')} s</li>"
        "</ul></section>",
        f'<section id="phases"><h2>Phases (task time)</h2>{durations}'
        + _table(
            _phase_rows(data),
            (
                ("phase", "phase"),
                ("tasks", "tasks"),
                ("succeeded", "succeeded"),
                ("failed", "failed"),
                ("skipped", "skipped"),
                ("seconds", "task time"),
                ("longest", "longest task"),
            ),
        )
        + "</section>",
        f'<section id="lag"><h2>Replication lag</h2>{_lag_chart(data)}</section>',
        '<section id="switchover"><h2>Write switchover</h2>'
        + _writes_chart(data)
        + _table(_switch_rows(data.get("switchover") or {}), (("step", "step"), ("took", "took")))
        + "</section>",
        '<section id="approvals"><h2>Approvals</h2>'
        + _table(
            _approval_rows(data), (("approval", "approval"), ("answer", "answer"), ("by", "by"), ("at", "at"))
        )
        + "</section>",
        '<section id="traffic"><h2>Traffic gates: production during each bake</h2>'
        + _gate_charts(data)
        + "</section>",
        '<section id="gates"><h2>Gates</h2>'
        + _table(
            _gate_rows(data),
            (
                ("gate", "gate"),
                ("measure", "measure"),
                ("worst", "worst sample"),
                ("limit", "limit"),
                ("samples", "samples"),
                ("verdict", "verdict"),
            ),
        )
        + "</section>",
        '<section id="latency"><h2>Latency SLOs (p95 of real production requests, every service)</h2>'
        + latency_bars
        + _table(
            slo_rows,
            (
                ("service", "service"),
                ("class", "SLO class"),
                ("budget", "budget"),
                ("p95", "p95"),
                ("verdict", "verdict"),
            ),
        )
        + "</section>",
        '<section id="validation"><h2>Validation checks</h2>'
        + _table(
            _check_rows(validation), (("check", "check"), ("outcome", "outcome"), ("figures", "figures"))
        )
        + "</section>",
        '<section id="rollback"><h2>Rolled back or failed</h2>'
        + _table([{"what": line} for line in data["rolled_back"]], (("what", "what"),))
        + "</section>",
        '<section id="tasks"><h2>Every task</h2>'
        + _table(task_rows, (("task", "task"), ("state", "state"), ("took", "took")))
        + "</section>",
    ]
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:72em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px;text-align:left;vertical-align:top}"
        "th{background:#f0f0f0}code{background:#f4f4f4}td.pass{color:#2d7a48}td.fail{color:#c9423a;"
        "font-weight:bold}.chart{display:inline-block;margin:0 1em .5em 0;vertical-align:top}"
        "figure.gate{margin:.5em 0 1em;border-left:3px solid #c8dcf5;padding-left:.8em}"
        "figcaption{font-weight:bold;margin-bottom:.3em}.note{color:#666;font-size:12px;max-width:60em}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>PyAirtable migration report {_e(data['run_id'])}</title><style>{style}</style></head>"
        f"<body>{''.join(sections)}</body></html>\n"
    )
