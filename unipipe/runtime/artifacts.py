"""File artifacts, metrics and reports: what a task writes besides its return value.

A task declares ``data: up.Input[up.Dataset]`` or ``model: up.Output[up.Model]`` (also
``up.Artifact``, ``up.Metrics``, ``up.Markdown``), as KFP users write them. The task gets an
artifact object whose ``path`` is a local file (or folder) it reads or writes; ``metadata`` is a
dict it may fill; ``Metrics.log_metric(name, value)`` records a scalar. Inside any task,
``up.log_metric(name, value)`` and ``up.report(markdown)`` record a metric and a Markdown report.

How the bytes move:

- KFP: natively. The component has ``Input[...]``/``Output[...]`` parameters; the shim is handed
  the paths KFP gives it (:func:`bind_native`), and KFP's executor records the artifacts, their
  metadata and the metrics in its executor output.
- Airflow, Prefect and the local runner: through the store (:mod:`unipipe.runtime.store`). An
  output is uploaded content-addressed (``<artifacts>/files/<sha256>/<name>``) once the task
  succeeds; the attempt's *record* (``<scratch>/<run>/<task>/outputs.json``: each artifact's URI,
  digest, size and metadata, the metrics, the report) tells consumers in the same run where to
  read it. Each adapter then shows the record where its engine shows things (an XCom on Airflow,
  link/table/markdown artifacts on Prefect).

An output the task never wrote fails the attempt, naming the task and the output.
"""

from __future__ import annotations

import hashlib
import json
import os

TYPE_CHECKING = False  # keeps `typing` off the shim's import path; type checkers see True
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

#: the artifact types a task can declare, as KFP names them (kfp.dsl.types.artifact_types)
TYPES = ("Artifact", "Dataset", "Model", "Metrics", "Markdown")
#: the outputs the shim adds to a task whose code calls up.log_metric / up.report (KFP needs a
#: declared output to record them; the other engines need nothing)
METRICS_SLOT = "unipipe_metrics"
REPORT_SLOT = "unipipe_report"
RECORD = "outputs.json"


class ArtifactMissing(RuntimeError):
    """A task ended without writing an output it declared (never retried: the code is wrong)."""

    __unipipe_retryable__ = False


class PackagesMissing(RuntimeError):
    """The worker lacks a package the task declared (never retried: installing is a deploy's job)."""

    __unipipe_retryable__ = False


class Artifact:
    """An artifact as a task sees it: a local ``path``, the store ``uri`` and ``metadata``."""

    schema_title = "system.Artifact"

    def __init__(self, name: str = "", path: str = "", uri: str = "",
                 metadata: dict[str, Any] | None = None) -> None:
        self.name = name
        self.path = path
        self.uri = uri
        self.metadata = {} if metadata is None else metadata

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, path={self.path!r}, uri={self.uri!r})"


class Dataset(Artifact):
    schema_title = "system.Dataset"


class Model(Artifact):
    schema_title = "system.Model"


class Metrics(Artifact):
    """Scalar metrics: ``log_metric`` sets ``metadata[name]`` (as KFP's ``Metrics`` does)."""

    schema_title = "system.Metrics"

    def log_metric(self, metric: str, value: float) -> None:
        _check_metric(metric, value)
        self.metadata[metric] = value


class Markdown(Artifact):
    schema_title = "system.Markdown"


CLASSES = {cls.__name__: cls for cls in (Artifact, Dataset, Model, Metrics, Markdown)}

_IN = "unipipe.input"
_OUT = "unipipe.output"


class Input:
    """``up.Input[up.Dataset]``: a parameter that receives an artifact another task wrote."""

    def __class_getitem__(cls, item: type) -> Any:
        return _slot(item, _IN)


class Output:
    """``up.Output[up.Model]``: a parameter the task writes an artifact to."""

    def __class_getitem__(cls, item: type) -> Any:
        return _slot(item, _OUT)


def _slot(item: Any, direction: str) -> Any:
    if not (isinstance(item, type) and issubclass(item, Artifact)):
        raise TypeError(f"Input[...]/Output[...] take an artifact type ({', '.join(TYPES)}), "
                        f"not {item!r}")
    import typing

    return typing.Annotated[item, direction]


def slot_of(annotation: Any) -> tuple[str, str] | None:
    """``("input"|"output", type name)`` for an ``Input[...]``/``Output[...]`` annotation."""
    meta = getattr(annotation, "__metadata__", None)
    origin = getattr(annotation, "__origin__", None)
    if not meta or not (isinstance(origin, type) and issubclass(origin, Artifact)):
        return None
    if _IN in meta:
        return "input", origin.__name__
    if _OUT in meta:
        return "output", origin.__name__
    return None


def _check_metric(name: Any, value: Any) -> None:
    if not isinstance(name, str) or not name or len(name) > 200:
        raise ValueError(f"a metric name is a non-empty string, not {name!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
            or value in (float("inf"), float("-inf")):
        raise ValueError(f"metric {name!r}: the value must be a finite number, not {value!r}")


# ---------------------------------------------------------------- up.log_metric / up.report


class Records:
    """What one attempt recorded: metrics (name -> number) and a Markdown report."""

    __slots__ = ("metrics", "report")

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}
        self.report: str | None = None


_RECORDS: Records | None = None


def log_metric(name: str, value: float) -> None:
    """Record a scalar metric of the running task (KFP Metrics, a Prefect table artifact, an
    Airflow XCom; every backend's RunResult.metrics)."""
    _check_metric(name, value)
    _active().metrics[name] = float(value) if isinstance(value, float) else value


def report(markdown: str) -> None:
    """Record the running task's Markdown report (a later call adds to it)."""
    if not isinstance(markdown, str):
        raise TypeError(f"up.report() takes a Markdown string, not {type(markdown).__name__}")
    rec = _active()
    rec.report = markdown if rec.report is None else rec.report + "\n\n" + markdown


def _active() -> Records:
    if _RECORDS is None:
        raise RuntimeError("up.log_metric() and up.report() are only available while a unipipe "
                           "task runs")
    return _RECORDS


def begin() -> Records:
    global _RECORDS
    _RECORDS = Records()
    return _RECORDS


def end() -> None:
    global _RECORDS
    _RECORDS = None


# ---------------------------------------------------------------- the store route


def content_digest(path: str) -> tuple[str, int]:
    """sha256 and size of a file, or of a folder's files (relative names and contents)."""
    h = hashlib.sha256()
    size = 0
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                rel = os.path.relpath(full, path).replace(os.sep, "/")
                fh_digest, n = content_digest(full)
                h.update(f"{rel}\0{fh_digest}\n".encode())
                size += n
        return h.hexdigest(), size
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def record_url(run_id: str, task_id: str, map_index: int | None = None) -> str:
    from unipipe.runtime.store import scratch_root

    suffix = f"-{map_index}" if map_index is not None else ""
    return f"{scratch_root()}/{run_id}/{task_id}{suffix}/{RECORD}"


def read_record(run_id: str, task_id: str, map_index: int | None = None) -> dict[str, Any] | None:
    """The record a successful attempt of ``task_id`` left in run ``run_id`` (None: none)."""
    from unipipe.runtime.store import read_bytes

    data = read_bytes(record_url(run_id, task_id, map_index))
    return None if data is None else json.loads(data)


def write_record(run_id: str, task_id: str, map_index: int | None, record: Mapping[str, Any]) -> None:
    from unipipe.runtime.store import write_bytes

    write_bytes(record_url(run_id, task_id, map_index),
                json.dumps(record, sort_keys=True).encode())


def upload(local: str, name: str) -> dict[str, Any]:
    """Put a written output into the store, content-addressed; its entry in the record."""
    from unipipe.runtime.store import _fs, artifact_root

    digest, size = content_digest(local)
    url = f"{artifact_root()}/files/{digest}/{name}"
    fs, path = _fs(url)
    if not fs.exists(path):
        if os.path.isdir(local):
            fs.put(local.rstrip("/") + "/", path, recursive=True)
        else:
            parent = path.rsplit("/", 1)[0]
            fs.makedirs(parent, exist_ok=True)
            fs.put_file(local, path)
    return {"uri": url, "sha256": digest, "size": size, "folder": os.path.isdir(local)}


def download(entry: Mapping[str, Any], local: str) -> None:
    from unipipe.runtime.store import _fs

    fs, path = _fs(entry["uri"])
    if not fs.exists(path):
        raise FileNotFoundError(f"artifact {entry['uri']} is missing from the store")
    if entry.get("folder"):
        os.makedirs(local, exist_ok=True)
        fs.get(path.rstrip("/") + "/", local.rstrip("/") + "/", recursive=True)
    else:
        fs.get_file(path, local)


def _workdir(spec: Mapping[str, Any], run_id: str, map_index: int | None) -> str:
    import tempfile

    suffix = f"-{map_index}" if map_index is not None else ""
    return tempfile.mkdtemp(prefix=f"unipipe-{spec['id']}{suffix}-")


def prepare(spec: Mapping[str, Any], run_id: str, map_index: int | None) -> dict[str, Artifact]:
    """The artifact objects one attempt is called with, inputs fetched from the store."""
    slots = spec.get("artifacts") or {}
    if not slots:
        return {}
    work = _workdir(spec, run_id, map_index)
    out: dict[str, Artifact] = {}
    for name, slot in (slots.get("in") or {}).items():
        cls = CLASSES[slot["type"]]
        if slot.get("uri"):
            entry: Mapping[str, Any] = {"uri": slot["uri"], "metadata": {},
                                        "folder": slot["uri"].endswith("/")}
        else:
            record = read_record(run_id, slot["task"], None)
            if record is None or slot["name"] not in record.get("artifacts", {}):
                raise FileNotFoundError(
                    f"task {spec['id']!r}: input artifact {name!r} comes from "
                    f"{slot['task']}.outputs[{slot['name']!r}], which this run has no record of")
            entry = record["artifacts"][slot["name"]]
        local = os.path.join(work, "in", name, os.path.basename(entry["uri"].rstrip("/")) or name)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        download(entry, local)
        out[name] = cls(name=name, path=local, uri=entry["uri"],
                        metadata=dict(entry.get("metadata") or {}))
    for name, type_name in (slots.get("out") or {}).items():
        local = os.path.join(work, "out", name, name)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        out[name] = CLASSES[type_name](name=name, path=local)
    return out


def input_digests(handles: Mapping[str, Artifact], spec: Mapping[str, Any]) -> dict[str, str]:
    """What a cache key hashes for the input artifacts: their contents."""
    return {f"artifact:{name}": content_digest(handles[name].path)[0]
            for name in (spec.get("artifacts") or {}).get("in") or {}}


def _check_written(spec: Mapping[str, Any], name: str, type_name: str, handle: Artifact) -> None:
    """An output the task declared and never wrote fails the attempt, naming both (a Metrics
    output counts as written once it has a metric)."""
    if os.path.exists(handle.path) or (type_name == "Metrics" and handle.metadata):
        return
    how = f"call {name}.log_metric(...)" if type_name == "Metrics" else \
        f"write a file or folder at {name}.path"
    raise ArtifactMissing(f"task {spec['id']!r} never wrote its output {name!r} "
                          f"(Output[{type_name}]): {how}")


def _write(path: str, text: str) -> None:
    """``text`` into ``path``, its folder made first (an engine's output path may not exist)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text)


def finish(spec: Mapping[str, Any], handles: Mapping[str, Artifact], records: Records) -> dict[str, Any]:
    """After a successful call: check every output was written, upload it; the record."""
    result: dict[str, Any] = {"artifacts": {}, "metrics": {}}
    for name, type_name in ((spec.get("artifacts") or {}).get("out") or {}).items():
        handle = handles[name]
        _check_written(spec, name, type_name, handle)
        if type_name == "Metrics":
            result["metrics"].update(handle.metadata)
            if not os.path.exists(handle.path):
                _write(handle.path, json.dumps(handle.metadata, sort_keys=True))
        entry = upload(handle.path, name)
        entry["type"] = type_name
        entry["metadata"] = handle.metadata
        result["artifacts"][name] = entry
    result["metrics"].update(records.metrics)
    if records.report is not None:
        result["report"] = records.report
    return result


def bind_native(spec: Mapping[str, Any], native: Mapping[str, Any]) -> dict[str, Artifact]:
    """Artifact objects over the ones an engine made (KFP: ``.path``, ``.uri``, ``.metadata``);
    the metadata dict is shared, so what the task records reaches the engine's output."""
    out: dict[str, Artifact] = {}
    slots = spec.get("artifacts") or {}
    for direction in ("in", "out"):
        for name, slot in (slots.get(direction) or {}).items():
            type_name = slot["type"] if direction == "in" else slot
            art = native[name]
            if direction == "out":
                os.makedirs(os.path.dirname(art.path) or ".", exist_ok=True)
            out[name] = CLASSES[type_name](name=name, path=art.path, uri=getattr(art, "uri", ""),
                                           metadata=art.metadata)
    return out


def finish_native(spec: Mapping[str, Any], handles: Mapping[str, Artifact], records: Records,
                  native: Mapping[str, Any]) -> dict[str, Any]:
    """As :func:`finish` where the engine moves the bytes: check the outputs, put the records
    into the engine's hidden Metrics/Markdown outputs; the record (URIs as the engine gave)."""
    result: dict[str, Any] = {"artifacts": {}, "metrics": {}}
    for name, type_name in ((spec.get("artifacts") or {}).get("out") or {}).items():
        handle = handles[name]
        _check_written(spec, name, type_name, handle)
        if type_name == "Metrics":
            result["metrics"].update(handle.metadata)
        result["artifacts"][name] = {"uri": handle.uri, "type": type_name,
                                     "metadata": handle.metadata}
        if os.path.exists(handle.path):
            digest, size = content_digest(handle.path)
            result["artifacts"][name].update(sha256=digest, size=size)
    result["metrics"].update(records.metrics)
    if METRICS_SLOT in native:
        native[METRICS_SLOT].metadata.update(records.metrics)
        _write(native[METRICS_SLOT].path, json.dumps(records.metrics, sort_keys=True))
    if records.report is not None:
        result["report"] = records.report
    if REPORT_SLOT in native:
        _write(native[REPORT_SLOT].path, records.report or "")
    return result


def stash_native(spec: Mapping[str, Any], record: Mapping[str, Any],
                 native: Mapping[str, Any]) -> dict[str, Any]:
    """For a cache entry of a task whose engine moves the bytes (KFP, the shim caching): each
    output also put into the store (``stored``), and the metrics up.log_metric recorded apart
    (``logged``), so a hit in a later run can give them back in that run's engine paths."""
    out = json.loads(json.dumps(record))
    for name, entry in out.get("artifacts", {}).items():
        path = native[name].path
        if os.path.exists(path):
            entry["stored"] = upload(path, name)
    if METRICS_SLOT in native:
        out["logged"] = dict(native[METRICS_SLOT].metadata)
    return out


def restore_native(spec: Mapping[str, Any], record: Mapping[str, Any],
                   native: Mapping[str, Any]) -> bool:
    """A cache hit where the engine moves the bytes: the cached outputs (from the store) at the
    engine's output paths, with their metadata; the hidden metrics and report outputs filled.
    False when the entry cannot give an output back (the attempt then runs)."""
    entries = record.get("artifacts") or {}
    plan = []
    for name, type_name in ((spec.get("artifacts") or {}).get("out") or {}).items():
        entry = entries.get(name)
        if entry is None:
            return False
        stored = entry.get("stored")
        if stored is None and type_name != "Metrics":
            stored = entry if "folder" in entry else None  # a store-route entry
            if stored is None:
                return False
        plan.append((name, entry, stored))
    for name, entry, stored in plan:
        art = native[name]
        if stored is not None:
            os.makedirs(os.path.dirname(art.path) or ".", exist_ok=True)
            download(stored, art.path)
        art.metadata.update(entry.get("metadata") or {})
    if METRICS_SLOT in native:
        logged = record.get("logged")
        if logged is None:  # a store-route entry: its metrics less the declared outputs'
            declared = {k for e in entries.values() if e.get("type") == "Metrics"
                        for k in (e.get("metadata") or {})}
            logged = {k: v for k, v in (record.get("metrics") or {}).items() if k not in declared}
        native[METRICS_SLOT].metadata.update(logged)
        _write(native[METRICS_SLOT].path, json.dumps(logged, sort_keys=True))
    if REPORT_SLOT in native:
        _write(native[REPORT_SLOT].path, record.get("report") or "")
    return True


# ---------------------------------------------------------------- per-task packages


def unmet_packages(packages: list[str]) -> list[str]:
    """The requirements this environment does not satisfy, each with what it has instead."""
    if not packages:
        return []
    from importlib import metadata

    from packaging.requirements import Requirement

    unmet = []
    for text in packages:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            have = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            unmet.append(f"{text} (not installed)")
            continue
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            unmet.append(f"{text} (installed: {have})")
    return unmet
