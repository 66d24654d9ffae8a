"""Sub-pipelines (``Pipeline.groups``) seen from the tasks: membership, order and boundary.

A group is one unit to the tasks around it: they run before it or after it, never in between
(validation refuses a pipeline where a task outside a group is both downstream of one member
and upstream of another). :func:`children` orders a group's direct children (its own tasks and
the groups called in it) with each inner group collapsed to one node; the reference runner, the
Prefect subflows and the KFP sub-pipelines are all built from that order.
"""

from __future__ import annotations

from dataclasses import dataclass

from unipipe.ir.models import OutputInput, Pipeline


@dataclass(frozen=True)
class Node:
    """A direct child of a group (or of the pipeline): a task or an inner group."""

    kind: str  # "task" | "group"
    id: str


def ancestry(ir: Pipeline, group_id: str | None) -> list[str]:
    """``group_id`` and the groups around it, innermost first ([] for the pipeline itself)."""
    out: list[str] = []
    while group_id is not None:
        out.append(group_id)
        group_id = ir.group(group_id).parent
    return out


def _group_of(ir: Pipeline) -> dict[str, str | None]:
    # a plain map, not ir.task(): that caches an index on the model, and validation (which
    # calls these) must leave the pipeline exactly as it found it
    return {t.id: t.group for t in ir.tasks}


def in_group(ir: Pipeline, task_id: str, group_id: str | None) -> bool:
    """True if the task was created in ``group_id`` or in a group called inside it."""
    return group_id is None or group_id in ancestry(ir, _group_of(ir)[task_id])


def members(ir: Pipeline, group_id: str) -> list[str]:
    """Every task of the group, inner groups' included, in topological order."""
    group_of = _group_of(ir)
    return [t for t in ir.topo_order() if group_id in ancestry(ir, group_of[t])]


def _top(ir: Pipeline, group_of: dict[str, str | None], task_id: str,
         group_id: str | None) -> Node | None:
    """The direct child of ``group_id`` that holds the task; None if the task is outside it."""
    chain = ancestry(ir, group_of[task_id])
    if group_id is None:
        return Node("group", chain[-1]) if chain else Node("task", task_id)
    if group_id not in chain:
        return None
    i = chain.index(group_id)
    return Node("group", chain[i - 1]) if i > 0 else Node("task", task_id)


def _group_top(ir: Pipeline, gid: str, group_id: str | None) -> Node | None:
    """The direct child of ``group_id`` that is group ``gid`` or holds it; None if outside."""
    chain = ancestry(ir, gid)
    if group_id is None:
        return Node("group", chain[-1])
    if group_id not in chain or group_id == gid:
        return None
    return Node("group", chain[chain.index(group_id) - 1])


def children(ir: Pipeline, group_id: str | None = None) -> list[Node]:
    """The direct children of a group (None: of the pipeline) in a deterministic topological
    order (authoring order among ready ones), each inner group one node. Raises ValueError on
    a cycle through a group."""
    nodes: list[Node] = []
    deps: dict[Node, set[Node]] = {}
    group_of = _group_of(ir)
    for t in ir.tasks:
        node = _top(ir, group_of, t.id, group_id)
        if node is None:
            continue
        if node not in deps:
            nodes.append(node)
            deps[node] = set()
        for up in t.upstream():
            other = _top(ir, group_of, up, group_id) if up in group_of else None
            if other is not None and other != node:
                deps[node].add(other)
    for g in ir.groups:  # a mapped group waits for the task its items come from
        if isinstance(g.items, OutputInput) and g.items.task in group_of:
            node = _group_top(ir, g.id, group_id)
            other = _top(ir, group_of, g.items.task, group_id)
            if node is not None and other is not None and node != other and node in deps:
                deps[node].add(other)
    # in waves: every node ready after the previous wave, in authoring order (linear time)
    index = {n: i for i, n in enumerate(nodes)}
    waiting = {n: len(d) for n, d in deps.items()}
    after: dict[Node, list[Node]] = {n: [] for n in nodes}
    for n, d in deps.items():
        for u in d:
            after[u].append(n)
    order: list[Node] = []
    wave = [n for n in nodes if not waiting[n]]
    while wave:
        order.extend(wave)
        nxt = []
        for n in wave:
            for m in after[n]:
                waiting[m] -= 1
                if not waiting[m]:
                    nxt.append(m)
        wave = sorted(nxt, key=index.__getitem__)
    if len(order) < len(nodes):
        pending = [n for n in nodes if waiting[n]]
        raise ValueError("cycle through a sub-pipeline among "
                         + ", ".join(sorted(n.id for n in pending)))
    return order


def upstream_outside(ir: Pipeline, group_id: str) -> list[str]:
    """Tasks outside the group that its members wait for (data, condition or ordering), in
    topological order: what a subflow or a sub-pipeline component takes in."""
    inside = set(members(ir, group_id))
    seen = {u for t in ir.tasks if t.id in inside for u in t.upstream() if u not in inside}
    for g in ir.groups:
        if (isinstance(g.items, OutputInput) and g.items.task not in inside
                and (g.id == group_id or group_id in ancestry(ir, g.id))):
            seen.add(g.items.task)
    return [t for t in ir.topo_order() if t in seen]


def used_outside(ir: Pipeline, group_id: str) -> list[str]:
    """Members whose output a task outside the group or the pipeline's output reads: what a
    subflow or a sub-pipeline component gives back, in topological order."""
    inside = set(members(ir, group_id))
    used: set[str] = set()
    for t in ir.tasks:
        if t.id in inside:
            continue
        used.update(inp.task for inp in t.inputs.values()
                    if isinstance(inp, OutputInput) and inp.task in inside)
        used.update(c.task for c in t.when if c.task in inside)
    if ir.output is not None:
        used.update(t for t in output_tasks(ir.output) if t in inside)
    return [t for t in ir.topo_order() if t in used]


def output_tasks(value: object) -> list[str]:
    """The tasks a value (the pipeline's output expression) reads, in the order it names them."""
    from unipipe.ir.models import DictValue, ListValue

    if isinstance(value, OutputInput):
        return [value.task]
    if isinstance(value, ListValue):
        return [t for v in value.items for t in output_tasks(v)]
    if isinstance(value, DictValue):
        return [t for v in value.items.values() for t in output_tasks(v)]
    return []
