"""Reports of a conformance suite: ``summary.json`` (what the matrix reads), ``results.json``
(every trace), ``report.md`` (a pass/fail table) and ``report.html`` (the matrix plus a timeline
of attempts per backend for each case, so one sees at a glance who retried sooner).

The HTML is built from escaped text (``html.escape``) and has no script: nothing from a case
or a trace can become markup.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from unipipe.harness.execute import Suite
from unipipe.harness.matrix import SYMBOL, feature_rows

COLOUR = {"pass": "#2e7d32", "fail": "#c62828", "xfail": "#ef6c00", "xpass": "#ad1457",
          "unsupported": "#616161", "notimpl": "#8d6e63", "error": "#6a1b9a"}
FEATURE_COLOUR = {"native": "#e8f5e9", "emulated": "#fff8e1", "unsupported": "#eeeeee",
                  "notimpl": "#efebe9"}
ATTEMPT_COLOUR = {"success": "#43a047", "failed": "#e53935", "cache": "#1e88e5",
                  "unknown": "#9e9e9e"}


def cell_text(status: str, declared: str | None = None) -> str:
    label = declared if status == "xfail" and declared else status
    return f"{SYMBOL.get(status, '?')} {label}"


def summary(suite: Suite) -> dict[str, Any]:
    """Statuses only (no timings): stable from run to run when behaviour is."""
    cases = {}
    for case in sorted(suite.cases, key=lambda c: c.id):
        results = {}
        for b in suite.backends:
            o = suite.outcome(case.id, b)
            results[b] = {"status": o.status, "declared": o.declared, "reason": o.reason}
        cases[case.id] = {"doc": case.doc, "tags": list(case.tags), "required": case.required,
                          "results": results}
    return {"backends": list(suite.backends), "cases": cases}


def markdown(suite: Suite) -> str:
    lines = ["# Conformance results", "",
             f"{len(suite.cases)} cases on {', '.join(suite.backends)}: "
             f"{'all match' if suite.ok else f'{len(suite.failures())} problem(s)'} "
             f"({suite.seconds:.0f} s).", "",
             "| case | " + " | ".join(suite.backends) + " |",
             "|---|" + "---|" * len(suite.backends)]
    for case in sorted(suite.cases, key=lambda c: c.id):
        name = f"**{case.id}**" if case.required else case.id
        cells = [cell_text(suite.outcome(case.id, b).status, suite.outcome(case.id, b).declared)
                 for b in suite.backends]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Required cases in bold. " + ", ".join(f"{v} {k}" for k, v in SYMBOL.items()),
              "", "| backend | runs | worker seconds (sum) | median start-up to first attempt |",
              "|---|---|---|---|"]
    for b in suite.backends:
        runs = [r for c in suite.cases for r in suite.outcome(c.id, b).runs]
        secs = sum(r.get("seconds") or 0 for r in runs)
        startups = sorted(r["startup"] for r in runs if r.get("startup") is not None)
        median = f"{startups[len(startups) // 2]:.1f} s" if startups else "-"
        lines.append(f"| {b} | {len(runs)} | {secs:.0f} | {median} |")
    if suite.lane_seconds:
        lines += ["", "Lane wall times (each lane runs its cases one after another): "
                  + ", ".join(f"{k} {v:.0f} s" for k, v in suite.lane_seconds.items()) + "."]
    lines.append("")
    with_records = [(c.id, recorded(suite, c.id)) for c in sorted(suite.cases, key=lambda c: c.id)]
    if any(rows for _c, rows in with_records):
        lines += ["## Metrics, artifacts and reports", "",
                  "As each engine recorded them (artifacts by the sha256 of their bytes).", "",
                  "| case | item | " + " | ".join(suite.backends) + " |",
                  "|---|---|" + "---|" * len(suite.backends)]
        for case_id, rows in with_records:
            for label, cells in rows:
                lines.append(f"| {case_id} | {_md(label)} | " + " | ".join(map(_md, cells))
                             + " |")
        lines.append("")
    lines += chain_lines(suite)
    problems = suite.failures()
    notes = [o for o in suite.outcomes.values() if o.ok and o.reason]
    if problems:
        lines += ["## Problems", ""]
        for o in sorted(problems, key=lambda o: (o.case, o.backend)):
            lines.append(f"- **{o.case}** on {o.backend}: {o.status}: {_md(o.reason)}")
            for d in o.diffs[1:8]:
                lines.append(f"  - {_md(d)}")
        lines.append("")
    if notes:
        lines += ["## Declared differences", ""]
        for o in sorted(notes, key=lambda o: (o.case, o.backend)):
            lines.append(f"- {o.case} on {o.backend}: {o.declared or o.status}: {_md(o.reason)}")
        lines.append("")
    return "\n".join(lines)


def chain_lines(suite: Suite) -> list[str]:
    """Event chains (cases with ``chain:``): per backend, the consumer runs the engine created
    after each producer run, and their states."""
    rows = []
    for case in sorted(suite.cases, key=lambda c: c.id):
        if case.chain is None:
            continue
        for b in suite.backends:
            chain = (suite.raws.get((case.id, b)) or {}).get("chain")
            if chain is None:
                continue
            states = [r.get("state") or r.get("status") for rs in chain["consumer"] for r in rs]
            rows.append(f"| {case.id} | {b} | {chain['consumer_runs']} | "
                        f"{_md(', '.join(map(str, states)) or '-')} |")
    if not rows:
        return []
    return ["## Event chains", "", "Consumer runs the engine itself started after each producer "
            "run (each producer run waits until they finished).", "",
            "| case | backend | consumer runs per producer run | their states |",
            "|---|---|---|---|", *rows, ""]


def recorded(suite: Suite, case_id: str) -> list[tuple[str, list[str]]]:
    """What each backend's engine recorded besides values (metrics, artifact digests, reports),
    one row per item with one cell per backend, from each backend's first run of the case."""
    firsts = {}
    for b in suite.backends:
        runs = suite.outcome(case_id, b).runs
        firsts[b] = runs[0] if runs else {}
    rows: dict[str, dict[str, str]] = {}
    for b, run in firsts.items():
        for task, named in sorted((run.get("metrics") or {}).items()):
            for name, value in sorted(named.items()):
                rows.setdefault(f"{task} metric {name}", {})[b] = str(value)
        for task, named in sorted((run.get("artifacts") or {}).items()):
            for name, digest in sorted(named.items()):
                rows.setdefault(f"{task} artifact {name}", {})[b] = (digest or "?")[:12]
        for task, text in sorted((run.get("reports") or {}).items()):
            import hashlib

            rows.setdefault(f"{task} report", {})[b] = (
                f"{len(text)} chars, sha256 {hashlib.sha256(text.encode()).hexdigest()[:12]}")
    return [(label, [cells.get(b, "-") for b in suite.backends])
            for label, cells in sorted(rows.items())]


def _md(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")[:500]


# ---------------------------------------------------------------- HTML


def _timeline(suite: Suite, case_id: str) -> str:
    """An SVG per run: one row per (backend, task), one bar per attempt, on a shared time axis."""
    parts = []
    runs_per_backend = {b: suite.outcome(case_id, b).runs for b in suite.backends}
    n_runs = max((len(r) for r in runs_per_backend.values()), default=0)
    for i in range(n_runs):
        rows: list[tuple[str, str, list[dict[str, Any]]]] = []
        horizon = 0.5
        for b in suite.backends:
            runs = runs_per_backend[b]
            if i >= len(runs) or not runs[i].get("tasks"):
                rows.append((b, f"({runs[i]['status'] if i < len(runs) else 'not run'})", []))
                continue
            for label, t in runs[i]["tasks"].items():
                log = [e for e in t.get("attempt_log", []) if e.get("start") is not None]
                if t.get("aggregate"):
                    continue
                rows.append((b, label, log))
                for e in log:
                    horizon = max(horizon, e.get("end") or e["start"])
        width, left, row_h = 900, 260, 16
        scale = (width - left - 20) / horizon
        height = 24 + row_h * len(rows)
        svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
               f'role="img" aria-label="attempt timeline, run {i + 1}">']
        ticks = _ticks(horizon)
        for t in ticks:
            x = left + t * scale
            svg.append(f'<line x1="{x:.1f}" y1="14" x2="{x:.1f}" y2="{height}" stroke="#eee"/>')
            svg.append(f'<text x="{x:.1f}" y="11" font-size="9" text-anchor="middle" '
                       f'fill="#777">{t:g}s</text>')
        previous = None
        for r, (b, label, log) in enumerate(rows):
            y = 18 + r * row_h
            if b != previous:
                svg.append(f'<line x1="0" y1="{y - 2}" x2="{width}" y2="{y - 2}" stroke="#bbb"/>')
                svg.append(f'<text x="4" y="{y + 10}" font-size="11" font-weight="bold">'
                           f'{escape(b)}</text>')
                previous = b
            svg.append(f'<text x="{left - 6}" y="{y + 10}" font-size="10" text-anchor="end">'
                       f'{escape(label)}</text>')
            last_end = None
            for e in log:
                start, end = e["start"], e.get("end") or e["start"]
                kind = "cache" if e.get("cache_hit") else (e.get("outcome") or "unknown")
                x, w = left + start * scale, max(3.0, (end - start) * scale)
                wait = f", waited {start - last_end:.2f}s" if last_end is not None else ""
                title = (f"{b} {label} attempt {e['attempt']}: {kind}"
                         f"{' ' + e['error_type'] if e.get('error_type') else ''}, "
                         f"{start:.2f}-{end:.2f}s{wait} ({e.get('source')})")
                svg.append(f'<rect class="attempt {escape(kind)}" x="{x:.1f}" y="{y}" '
                           f'width="{w:.1f}" height="{row_h - 4}" rx="2" '
                           f'fill="{ATTEMPT_COLOUR.get(kind, "#9e9e9e")}">'
                           f'<title>{escape(title)}</title></rect>')
                if last_end is not None and start - last_end > 0.05:
                    x0 = left + last_end * scale
                    svg.append(f'<line x1="{x0:.1f}" y1="{y + 6}" x2="{x:.1f}" y2="{y + 6}" '
                               f'stroke="#999" stroke-dasharray="2,2"/>')
                last_end = end
        svg.append("</svg>")
        parts.append(f'<div class="run"><div class="runlabel">run {i + 1}</div>{"".join(svg)}</div>')
    return "".join(parts)


def _ticks(horizon: float) -> list[float]:
    step = next(s for s in (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1e9)
                if horizon / s <= 12)
    out, t = [], 0.0
    while t <= horizon + 1e-9:
        out.append(round(t, 2))
        t += step
    return out


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:22px} h2{font-size:18px;margin-top:32px} h3{font-size:15px;margin:20px 0 4px}
table{border-collapse:collapse;margin:8px 0} td,th{border:1px solid #ddd;padding:3px 8px;font-size:12px}
th{background:#f5f5f5;text-align:left} td.status{color:#fff;font-weight:600;text-align:center}
.doc{color:#555;font-size:12px;max-width:900px} .diffs{font-size:12px;color:#b71c1c}
.legend span{display:inline-block;padding:1px 6px;margin-right:6px;color:#fff;font-size:11px}
.run{margin:4px 0 10px} .runlabel{font-size:11px;color:#555}
"""


def html(suite: Suite, matrix_rows: list[tuple[str, list[str]]] | None = None) -> str:
    out = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
           "<title>unipipe conformance report</title>", f"<style>{CSS}</style></head><body>",
           "<h1>unipipe conformance report</h1>",
           f'<p id="verdict">{len(suite.cases)} cases on {escape(", ".join(suite.backends))}: '
           f'<b>{"all match" if suite.ok else f"{len(suite.failures())} problem(s)"}</b> '
           f"({suite.seconds:.0f} s)</p>"]
    out.append('<p class="legend">' + "".join(
        f'<span style="background:{c}">{escape(k)}</span>' for k, c in COLOUR.items()) +
        " &nbsp; attempts: " + "".join(
        f'<span style="background:{c}">{escape(k)}</span>' for k, c in ATTEMPT_COLOUR.items())
        + "</p>")
    if matrix_rows:
        out.append("<h2>Features</h2><table id=\"features\"><tr><th>feature</th>" +
                   "".join(f"<th>{escape(b)}</th>" for b in suite.backends) + "</tr>")
        for feature, cells in matrix_rows:
            out.append(f"<tr><td>{escape(feature)}</td>" + "".join(
                f'<td style="background:{FEATURE_COLOUR.get(c.split(" ", 1)[0], "#fff")}">'
                f"{escape(c)}</td>" for c in cells) + "</tr>")
        out.append("</table>")
    out.append('<h2>Cases</h2><table id="matrix"><tr><th>case</th>' +
               "".join(f"<th>{escape(b)}</th>" for b in suite.backends) + "</tr>")
    for case in sorted(suite.cases, key=lambda c: c.id):
        out.append(f'<tr><td><a href="#case-{escape(case.id)}">{escape(case.id)}</a>'
                   f'{" (required)" if case.required else ""}</td>')
        for b in suite.backends:
            o = suite.outcome(case.id, b)
            out.append(f'<td class="status {escape(o.status)}" '
                       f'style="background:{COLOUR.get(o.status, "#999")}" '
                       f'title="{escape(o.reason)}">{escape(o.declared if o.status == "xfail" and o.declared else o.status)}</td>')
        out.append("</tr>")
    out.append("</table><h2>Timelines</h2>")
    for case in sorted(suite.cases, key=lambda c: c.id):
        out.append(f'<section id="case-{escape(case.id)}"><h3>{escape(case.id)}</h3>'
                   f'<div class="doc">{escape(case.doc)}<br>tags: {escape(", ".join(case.tags))}</div>')
        for b in suite.backends:
            o = suite.outcome(case.id, b)
            if not o.ok or o.reason:
                out.append(f'<div class="diffs"><b>{escape(b)}: {escape(o.status)}</b>: '
                           f'{escape(o.reason)}')
                if o.diffs[1:]:
                    out.append("<ul>" + "".join(f"<li>{escape(d)}</li>" for d in o.diffs[1:10])
                               + "</ul>")
                out.append("</div>")
        rows = recorded(suite, case.id)
        if rows:
            out.append('<table class="records"><tr><th>recorded</th>' + "".join(
                f"<th>{escape(b)}</th>" for b in suite.backends) + "</tr>" + "".join(
                f"<tr><td>{escape(label)}</td>" + "".join(f"<td>{escape(c)}</td>" for c in cells)
                + "</tr>" for label, cells in rows) + "</table>")
        out.append(_timeline(suite, case.id))
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out)


def write_reports(suite: Suite, out_dir: str | Path) -> dict[str, Path]:
    """Write every report into ``out_dir``; return their paths by kind."""
    from unipipe.compiler.codegen import write_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summ = summary(suite)
    full = {"seconds": round(suite.seconds, 1), "ok": suite.ok, "backends": suite.backends,
            "lane_seconds": suite.lane_seconds,
            "outcomes": [o.to_dict() for o in suite.outcomes.values()]}
    paths = {
        "summary": write_atomic(out / "summary.json", json.dumps(summ, indent=2, sort_keys=True)
                                + "\n"),
        "results": write_atomic(out / "results.json", json.dumps(full, indent=1, default=repr)),
        "markdown": write_atomic(out / "report.md", markdown(suite)),
        "html": write_atomic(out / "report.html", html(suite, feature_rows(summ, plain=True))),
    }
    return paths
