"""Reading and writing IR documents (JSON or YAML) with errors that point into the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from unipipe.ir.errors import PipelineError, Problem, line_of
from unipipe.ir.models import Pipeline
from unipipe.ir.validate import validate


def problems_from_validation_error(exc: ValidationError, file: str, text: str = "") -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        field = ".".join(str(p) for p in loc)
        problems.append(Problem(err.get("msg", "invalid"), file, line_of(text, loc) if text else 0, field))
    return problems


def load_ir_data(data: Any, *, file: str = "<ir>", text: str = "") -> Pipeline:
    if not isinstance(data, dict):
        raise PipelineError(Problem("an IR document must be a mapping at the top level", file, 1))
    try:
        ir = Pipeline.model_validate(data)
    except ValidationError as exc:
        raise PipelineError(problems_from_validation_error(exc, file, text)) from None
    return validate(ir, file=file, text=text)


def load_ir_file(path: str | Path) -> Pipeline:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PipelineError(Problem(f"cannot read IR file: {exc.strerror}", str(p))) from None
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PipelineError(Problem(f"invalid JSON: {exc.msg}", str(p), exc.lineno)) from None
    except Exception as exc:  # yaml.YAMLError and friends
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        raise PipelineError(Problem(f"invalid YAML: {exc}", str(p), line)) from None
    return load_ir_data(data, file=str(p), text=text)


def dump_ir(ir: Pipeline, fmt: str = "json") -> str:
    data = ir.model_dump(mode="json")
    if fmt == "yaml":
        import yaml

        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def json_schema() -> dict[str, Any]:
    schema = Pipeline.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "unipipe pipeline IR"
    return schema
