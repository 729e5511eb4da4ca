"""The migration report: one self-contained HTML file and its data as JSON, per run.

Built from what the run recorded: the task instances' states and durations (the Task SDK's
task breadcrumbs of the run) and every task's XCom summary. Charts are inline SVG: no script,
no CDN (the network may be closed), so the file opens anywhere and can be attached to a ticket.

    report_<dag_id>_<run_id>.html / .json   under validation.report_dir (default reports/)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import json
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
    return build_data(
        dag_id=context["dag"].dag_id,
        run_id=str(context["run_id"]),
        mode=str(context["params"].get("mode", "plan")),
        started=run_started.isoformat() if run_started else None,
        tasks=tasks,
        xcoms=_xcoms(context),
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


def build_data(
    *,
    dag_id: str,
    run_id: str,
    mode: str,
    started: str | None,
    tasks: list[dict[str, Any]],
    xcoms: dict[str, Any],
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
    traffic = []
    for task_id in sorted(
        (t for t in xcoms if t.startswith("traffic.shift_to_")), key=lambda t: int(re.sub(r"\D", "", t) or 0)
    ):
        value = _value(xcoms, task_id)
        peaks = next((v for _, v in _find(value, ("peaks",)) if isinstance(v, Mapping)), {})
        traffic.append(
            {
                "task_id": task_id,
                "weight": int(re.sub(r"\D", "", task_id) or 0),
                "error_ratio": peaks.get("error_ratio"),
                "p99": peaks.get("p99"),
                "gate": value.get("gate"),
            }
        )
    gates = {task_id: gate for task_id in xcoms if (gate := _value(xcoms, task_id).get("gate")) is not None}
    if lag_gate:
        gates["database.lag_gate"] = lag_gate
    validation = {t: _value(xcoms, t) for t in xcoms if t.startswith("validation.")}
    rolled_back = [
        f"{task_id}: {key} = {json.dumps(value, default=str)[:200]}"
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
        "switchover": switch,
        "replication_lag_bytes": [x for x in lags if isinstance(x, int | float)],
        "traffic": traffic,
        "gates": gates,
        "validation": validation,
        "rolled_back": rolled_back,
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


# --- rendering ----------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def bar_chart(items: Sequence[tuple[str, float, str]], unit: str, width: int = 640) -> str:
    """Horizontal bars: (label, value, color)."""
    if not items:
        return "<p><em>no data</em></p>"
    top = max(v for _, v, _ in items) or 1.0
    row, left = 22, 190
    height = row * len(items) + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
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


def line_chart(series: Sequence[float], label: str, width: int = 640, height: int = 180) -> str:
    if not series:
        return "<p><em>no samples recorded</em></p>"
    top = max(series) or 1.0
    pad = 40
    step = (width - 2 * pad) / max(1, len(series) - 1)
    points = " ".join(
        f"{pad + i * step:.1f},{height - pad - (height - 2 * pad) * v / top:.1f}"
        for i, v in enumerate(series)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#888"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#888"/>'
        f'<polyline points="{points}" fill="none" stroke="#3b7dd8" stroke-width="2"/>'
        f'<text x="{pad}" y="{pad - 8}" font-size="12">{_e(label)} (max {top:g})</text>'
        f'<text x="{width - pad}" y="{height - pad + 16}" text-anchor="end" font-size="12">sample</text>'
        "</svg>"
    )


def traffic_chart(steps: Sequence[Mapping[str, Any]], width: int = 640, height: int = 220) -> str:
    """Production weight per step (bars, left axis 0-100 %) and the peak error ratio (line, right axis)."""
    if not steps:
        return "<p><em>no traffic step ran</em></p>"
    pad = 44
    slot = (width - 2 * pad) / len(steps)
    ratios = [float(s["error_ratio"]) if s.get("error_ratio") is not None else None for s in steps]
    top = max([r for r in ratios if r is not None] or [0.0]) or 0.01
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    inner = height - 2 * pad
    points = []
    for i, step in enumerate(steps):
        x = pad + i * slot
        bar = inner * step["weight"] / 100
        parts.append(
            f'<rect x="{x + slot * 0.2:.1f}" y="{height - pad - bar:.1f}" width="{slot * 0.6:.1f}" '
            f'height="{bar:.1f}" fill="#c8dcf5"/>'
        )
        parts.append(
            f'<text x="{x + slot / 2:.1f}" y="{height - pad + 16}" text-anchor="middle" font-size="12">'
            f"{step['weight']} %</text>"
        )
        if ratios[i] is not None:
            points.append(f"{x + slot / 2:.1f},{height - pad - inner * (ratios[i] or 0) / top:.1f}")
    if points:
        parts.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="#c9423a" stroke-width="2"/>')
    parts.append(
        f'<text x="{pad}" y="{pad - 10}" font-size="12">bars: production weight; red: peak production '
        f"error ratio (max {top:.4g})</text></svg>"
    )
    return "".join(parts)


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    if not rows:
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_e(_short(row.get(c)))}</td>" for c in columns) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _short(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str, sort_keys=True)[:300]
    return str(value)


def _latency_rows(validation: Mapping[str, Any]) -> list[dict[str, Any]]:
    services = (validation.get("validation.latency_slos") or {}).get("services") or {}
    return [{"service": name, **figures} for name, figures in sorted(services.items())]


LATENCY_COLUMNS = ("service", "slo_class", "budget_ms", "p95_ms", "verdict")


def render_html(data: Mapping[str, Any]) -> str:
    phases = data["phases"]
    durations = bar_chart(
        [
            (
                p["phase"],
                float(p["task_seconds"]),
                STATE_COLORS["failed"] if p["states"].get("failed") else "#3c9a5f",
            )
            for p in phases
        ],
        "s",
    )
    stall = data.get("write_stall_ms")
    validation = data.get("validation") or {}
    checks = [
        {"check": task_id.split(".", 1)[1], "figures": value} for task_id, value in sorted(validation.items())
    ]
    latency = _latency_rows(validation)
    latency_bars = bar_chart(
        [
            (r["service"], float(r["p95_ms"] or 0), "#3c9a5f" if r["verdict"] == "met" else "#c9423a")
            for r in latency
        ],
        "ms",
    )
    gates = [{"gate": k, "values": v} for k, v in sorted(data["gates"].items())]
    rolled_back = [{"what": line} for line in data["rolled_back"]]
    sections = [
        f"<h1>PyAirtable migration report</h1><p>DAG <code>{_e(data['dag_id'])}</code>, run "
        f"<code>{_e(data['run_id'])}</code>, mode <strong>{_e(data['mode'])}</strong>; started "
        f"{_e(data.get('started') or '—')}, report written {_e(data['generated'])}.</p>",
        '<section id="summary"><h2>At a glance</h2><ul>'
        f'<li>write stall at the switchover: <strong id="write-stall">'
        f"{_e(f'{stall} ms' if stall is not None else 'not measured in this run')}</strong></li>"
        f"<li>rolled back / failed: <strong>{len(data['rolled_back'])}</strong></li>"
        f"<li>tasks: {len(data['tasks'])}; run wall time until this report: "
        f"{_e(data.get('elapsed_seconds') if data.get('elapsed_seconds') is not None else '—')} s</li>"
        "</ul></section>",
        f'<section id="phases"><h2>Phases (task time)</h2>{durations}'
        f"{_table(phases, ('phase', 'tasks', 'states', 'task_seconds', 'longest_task'))}</section>",
        '<section id="lag"><h2>Replication lag (lag gate samples, bytes)</h2>'
        f"{line_chart(data['replication_lag_bytes'], 'lag bytes')}</section>",
        '<section id="traffic"><h2>Traffic weight and production error ratio</h2>'
        f"{traffic_chart(data['traffic'])}"
        f"{_table(data['traffic'], ('task_id', 'weight', 'error_ratio', 'p99'))}</section>",
        f'<section id="gates"><h2>Gates</h2>{_table(gates, ("gate", "values"))}</section>',
        '<section id="latency"><h2>Latency SLOs (p95 of real production requests)</h2>'
        f"{latency_bars}{_table(latency, LATENCY_COLUMNS)}</section>",
        '<section id="validation"><h2>Validation checks</h2>'
        f"{_table(checks, ('check', 'figures'))}</section>",
        f'<section id="rollback"><h2>Rolled back or failed</h2>{_table(rolled_back, ("what",))}</section>',
        '<section id="tasks"><h2>Every task</h2>'
        f"{_table(data['tasks'], ('task_id', 'state', 'duration'))}</section>",
    ]
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:72em}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px;text-align:left;vertical-align:top}"
        "th{background:#f0f0f0}code{background:#f4f4f4}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>PyAirtable migration report {_e(data['run_id'])}</title><style>{style}</style></head>"
        f"<body>{''.join(sections)}</body></html>\n"
    )
