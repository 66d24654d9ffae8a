"""Task graphs as Mermaid text or Graphviz dot. Labels are escaped: names never become syntax."""

from __future__ import annotations

import json

from unipipe.ir.models import OutputInput, Pipeline


def _edges(ir: Pipeline) -> list[tuple[str, str, str]]:
    """(upstream, downstream, kind) with kind data | after | when."""
    edges: list[tuple[str, str, str]] = []
    for t in ir.tasks:
        for inp in t.inputs.values():
            if isinstance(inp, OutputInput) and (inp.task, t.id, "data") not in edges:
                edges.append((inp.task, t.id, "data"))
        for c in t.when:
            edges.append((c.task, t.id, "when" if c.expect else "unless"))
        for a in t.after:
            edges.append((a, t.id, "after"))
    return edges


def _label(ir: Pipeline, task_id: str) -> str:
    t = ir.task(task_id)
    extra = []
    pol = ir.effective(t)
    if t.map_over:
        extra.append(f"map over {t.map_over}")
    if pol.retry and pol.retry.max_retries:
        extra.append(f"retries {pol.retry.max_retries}")
    if pol.cache:
        extra.append("cached")
    if pol.timeout:
        extra.append(f"timeout {pol.timeout:g}s")
    return task_id + (f" ({', '.join(extra)})" if extra else "")


def to_mermaid(ir: Pipeline) -> str:
    lines = ["flowchart TD"]
    for t in ir.tasks:
        label = _label(ir, t.id).replace('"', "#quot;")
        shape = f'[["{label}"]]' if t.map_over else f'["{label}"]'
        lines.append(f"    {t.id}{shape}")
    arrows = {"data": "-->", "after": "-.->", "when": "-- when -->", "unless": "-- unless -->"}
    for a, b, kind in _edges(ir):
        lines.append(f"    {a} {arrows[kind]} {b}")
    return "\n".join(lines)


def to_dot(ir: Pipeline) -> str:
    lines = [f"digraph {json.dumps(ir.name)} {{", "    rankdir=TB;", "    node [shape=box];"]
    for t in ir.tasks:
        style = ", style=bold" if t.map_over else ""
        lines.append(f"    {t.id} [label={json.dumps(_label(ir, t.id))}{style}];")
    styles = {"data": "", "after": " [style=dashed]", "when": ' [label="when"]',
              "unless": ' [label="unless"]'}
    for a, b, kind in _edges(ir):
        lines.append(f"    {a} -> {b}{styles[kind]};")
    lines.append("}")
    return "\n".join(lines)
