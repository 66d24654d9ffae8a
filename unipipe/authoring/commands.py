"""``up.command``: a task that runs a program instead of a Python function.

``up.command(name, command=[...], image=None, env=None, retries=..., timeout=..., ...)`` returns a
task used in a pipeline exactly like an ``@up.task`` (keyword inputs, ``.map()``, ``.after()``,
the same policy keywords). Each keyword input fills the ``{name}`` placeholders of the argv; how
the program runs (no shell, output, failure, timeout) is :mod:`unipipe.runtime.command`.

Checked at the ``up.command(...)`` line: the name, that ``command`` is a non-empty list of strings
whose placeholders are plain ``{identifier}``, and that ``env`` maps variable names to strings.
Checked when the pipeline is traced (by :func:`unipipe.ir.validate.validate`, at the call's line):
every placeholder has an input and every input is used by a placeholder (an input no argument
uses would change nothing the program sees, only the cache key: it is almost always a typo).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from unipipe.authoring.decorators import TaskDef, TaskRef, _active, _Builder, _to_input
from unipipe.authoring.policies import (
    Alert,
    Cache,
    Duration,
    Loc,
    Resources,
    Retry,
    caller_location,
    fail,
    policies_ir,
)
from unipipe.ir.errors import PipelineError, Problem
from unipipe.result import RUN_IF_VALUES
from unipipe.runtime.command import PlaceholderError, placeholders
from unipipe.runtime.loading import executing

#: the import path every command task names as its callable (unipipe.ir.models.COMMAND_FN)
COMMAND_FN = "unipipe.runtime.command:run"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,199}$")


def command_hash(command: Sequence[str], env: Mapping[str, str]) -> str:
    """The command task's ``source_hash``: the argv and env, so a changed command is a new
    cache key, as changed source is for a Python task."""
    canon = json.dumps({"command": list(command), "env": dict(env)}, sort_keys=True,
                       separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canon.encode()).hexdigest()


def _check(loc: Loc, name: Any, command: Any, env: Any) -> list[Problem]:
    problems: list[Problem] = []

    def bad(field: str, message: str) -> None:
        problems.append(Problem(message, loc.file, loc.line, field))

    if not isinstance(name, str) or not _IDENT.match(name):
        bad("name", f"a command's name is its task id, a Python identifier; got {name!r}")
    if isinstance(command, str) or not isinstance(command, (list, tuple)):
        bad("command", "command= takes a list of strings, one per argument (never a shell "
                       f"string); got {type(command).__name__}")
    elif not command:
        bad("command", "command= needs at least the program to run: command=['prog', ...]")
    else:
        for i, item in enumerate(command):
            if not isinstance(item, str):
                bad(f"command[{i}]", f"each argument is a string; got {type(item).__name__} "
                                     f"{item!r} (write it as a string, or pass it as an input "
                                     "and use a '{placeholder}')")
                continue
            if "\x00" in item:
                bad(f"command[{i}]", "an argument cannot hold a NUL character (no program "
                                     "can receive it)")
                continue
            try:
                placeholders(item)
            except PlaceholderError as exc:
                bad(f"command[{i}]", str(exc))
        if isinstance(command[0], str) and not command[0].strip():
            bad("command[0]", "the program (the first item) is empty")
    if env is not None:
        if not isinstance(env, Mapping):
            bad("env", f"env= takes a dict of variable name -> string; got {type(env).__name__}")
        else:
            for key, value in env.items():
                if not isinstance(key, str) or not _IDENT.match(key):
                    bad(f"env.{key}", f"{key!r} is not an environment variable name")
                elif not isinstance(value, str):
                    bad(f"env.{key}", f"env values are strings; got {type(value).__name__} "
                                      f"{value!r}")
                elif "\x00" in value:
                    bad(f"env.{key}", "an environment value cannot hold a NUL character")
    return problems


class CommandDef(TaskDef):
    """A task that runs ``command`` (see :mod:`unipipe.runtime.command`)."""

    def __init__(self, name: str, command: Sequence[str], env: Mapping[str, str] | None, *,
                 policies: Any, loc: Loc):
        # not TaskDef.__init__: there is no function to inspect
        self.id = name
        self.__name__ = name
        self.__doc__ = f"Runs {list(command)!r}."
        self.command = tuple(command)
        self.env = dict(env or {})
        self._policies = policies
        self.loc = loc
        self.fn_path = COMMAND_FN
        self.returns = "any"
        self._source_hash: str | None = command_hash(self.command, self.env)
        names: dict[str, None] = {}
        for item in self.command:
            names.update(dict.fromkeys(placeholders(item)))
        self.placeholders = tuple(names)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        builder = _active()
        if builder is None:  # outside a pipeline: run it here, as a plain function call would
            from unipipe.runtime.command import run

            if args:
                raise TypeError(f"command {self.id!r} takes keyword inputs only")
            return run(self.command, kwargs, env=self.env)
        return self._record(builder, args, kwargs, map_over=None, loc=caller_location(2))

    def _record(self, builder: _Builder, args: tuple[Any, ...], kwargs: dict[str, Any], *,
                map_over: str | None, loc: Loc) -> TaskRef:
        if args:
            raise fail(loc, self.id, f"command {self.id!r} takes keyword inputs only, one per "
                                     f"placeholder: {self.id}(" +
                       ", ".join(f"{p}=..." for p in self.placeholders) + ")")
        inputs = {name: _to_input(value, loc, f"{self.id}.{name}")
                  for name, value in kwargs.items()}
        # placeholders without inputs and inputs without placeholders are reported by
        # unipipe.ir.validate, all at once, at this call's line
        return self._add_node(builder, inputs, map_over=map_over, loc=loc, doc="",
                              command=self.command, env=self.env)

    def __repr__(self) -> str:
        return f"<unipipe command {self.id} {list(self.command)!r}>"


def command(name: str, command: Sequence[str], *, image: str | None = None,
            env: Mapping[str, str] | None = None, retry: Retry | None = None,
            retries: int | None = None, cache: Cache | bool | None = None,
            timeout: Duration | None = None, resources: Resources | None = None,
            alerts: list[Alert] | None = None, run_if: str = "all_success") -> CommandDef:
    """A task that runs a program: ``up.command("count", command=["wc", "-l", "{path}"])``.

    Called in a pipeline with one keyword input per placeholder (``count(path=ref)``). Takes the
    policy keywords ``@up.task`` takes; ``image`` is the image policy; ``run_if`` as on
    ``@up.task`` (a cleanup command: ``run_if="all_done"``).
    """
    loc = caller_location(2)
    if run_if not in RUN_IF_VALUES:
        raise fail(loc, "run_if", f"run_if={run_if!r} is not one of "
                   + ", ".join(repr(v) for v in RUN_IF_VALUES))
    problems = _check(loc, name, command, env)
    if problems:
        raise PipelineError(problems)
    args = {"retry": retry, "retries": retries, "cache": cache, "timeout": timeout,
            "resources": resources, "image": image, "alerts": alerts}
    pol = args if executing() else policies_ir(loc, **args)
    made = CommandDef(name, command, env, policies=pol, loc=loc)
    made.run_if = run_if
    return made


__all__ = ["CommandDef", "command", "command_hash"]
