"""Command tasks: one attempt runs a program (``up.command``), never a shell.

The rules, the same on every backend because every backend's task body reaches them through
:func:`unipipe.runtime.invoke.run_attempt` (so retries, timeouts, alerts, caching and trace
events are those of a Python task):

- **argv.** Each item of ``command`` is one argument. ``{name}`` inside an item is replaced by the
  input ``name``; the item stays one argument whatever the value holds (spaces, quotes, ``;``,
  ``$(...)``): the program is started with :class:`subprocess.Popen` on a list, no shell.
  ``{{`` and ``}}`` are literal braces. A string value is inserted as it is; any other value
  (int, float, bool, None, list, dict) as its JSON text (``true``, ``null``, ``[1, 2]``).
  Linux takes at most 128 KiB per argument: pass a large value as a path, not as text.
- **Environment.** The worker's environment, with ``env`` set over it, and the attempt's facts
  (what ``up.current()`` tells a Python task) over both: ``UNIPIPE_RUN_ID``,
  ``UNIPIPE_PIPELINE``, ``UNIPIPE_TASK_ID``, ``UNIPIPE_ATTEMPT`` (from 1),
  ``UNIPIPE_MAX_ATTEMPTS``, ``UNIPIPE_MAP_INDEX`` (mapped elements only) and
  ``UNIPIPE_BACKEND``. Working folder: the attempt's own.
- **Output.** The last non-blank line of stdout, parsed as JSON if it is JSON, else that line as
  text; no output at all is ``None``. The attempt ends when the program exits (not when a
  process it left in the background closes its copy of stdout). Everything the program wrote is copied to this process's
  stdout/stderr afterwards, so the engine's task log shows it.
- **Failure.** An exit code other than 0 raises :class:`CommandFailed` (retried like any error;
  its message ends with the tail of stderr). A program that cannot be started raises it too.
- **Stopping.** The program runs in its own session, so it and everything it starts share one
  process group. When the attempt ends in any way (the shim's timeout, an engine's timeout
  exception, the attempt's process killed by the runner that timed it out) the whole group is
  killed: in-process by this module, and for a killed attempt process by a small reaper process
  that waits for the attempt to go away (its stdin pipe reaches end of file) and then kills the
  group. Nothing the command started outlives its attempt.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

#: how much of stderr a failure's message carries
STDERR_TAIL = 2000

# Started with its stdin a pipe from the attempt and the group id as argument: reads until end
# of file (the attempt closed it, or its process died), then kills the group. -I -S: no site,
# no user environment, the quickest start.
_REAPER = (
    "import os,signal,sys\n"
    "while os.read(0, 4096):\n"
    "    pass\n"
    "try:\n"
    "    os.killpg(int(sys.argv[1]), signal.SIGKILL)\n"
    "except OSError:\n"
    "    pass\n"
)


class CommandFailed(RuntimeError):
    """A command task's program exited with a code other than 0 (or could not start)."""

    def __init__(self, message: str, returncode: int | None = None, stderr: str = ""):
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


class PlaceholderError(ValueError):
    """A command item whose ``{...}`` is not a plain ``{name}`` placeholder."""


def placeholders(item: str) -> list[str]:
    """Names of the ``{name}`` placeholders in one argv item, in order (duplicates kept).

    Only plain identifiers are placeholders: ``{x.attr}``, ``{x[0]}``, ``{x!r}``, ``{x:>4}``,
    ``{}`` and a lone brace are errors, so no value is ever looked into or formatted.
    """
    return [name for kind, name in _parts(item) if kind == "field"]


def _parts(item: str) -> list[tuple[str, str]]:
    """``item`` split into ("text", s) and ("field", name) parts."""
    out: list[tuple[str, str]] = []
    text: list[str] = []
    i, n = 0, len(item)
    while i < n:
        ch = item[i]
        if ch == "{" and item.startswith("{{", i):
            text.append("{")
            i += 2
        elif ch == "}" and item.startswith("}}", i):
            text.append("}")
            i += 2
        elif ch == "{":
            end = item.find("}", i + 1)
            if end < 0:
                raise PlaceholderError(f"{item!r}: '{{' without a closing '}}' (write '{{{{' "
                                       "for a literal brace)")
            name = item[i + 1:end]
            if not name.isidentifier() or not name.isascii():
                raise PlaceholderError(f"{item!r}: '{{{name}}}' is not a placeholder; a "
                                       "placeholder is '{input_name}' (write '{{' and '}}' for "
                                       "literal braces)")
            if text:
                out.append(("text", "".join(text)))
                text = []
            out.append(("field", name))
            i = end + 1
        elif ch == "}":
            raise PlaceholderError(f"{item!r}: a lone '}}' (write '}}}}' for a literal brace)")
        else:
            text.append(ch)
            i += 1
    if text:
        out.append(("text", "".join(text)))
    return out


def render_value(value: Any) -> str:
    """A value as it goes into an argument: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def render(command: Sequence[str], inputs: Mapping[str, Any]) -> list[str]:
    """The argv: each item with its placeholders filled, still one item each."""
    argv = []
    for item in command:
        pieces = []
        for kind, text in _parts(item):
            if kind == "text":
                pieces.append(text)
            else:
                if text not in inputs:
                    raise PlaceholderError(f"{item!r}: no input named {text!r}")
                pieces.append(render_value(inputs[text]))
        argv.append("".join(pieces))
    return argv


def parse_output(stdout: str) -> Any:
    """The last non-blank line of stdout as JSON, else as text; None when there is none."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line:
            try:
                return json.loads(line, parse_constant=_no_constant)
            except ValueError:
                return line
    return None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON a task output can carry")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:  # already gone
        pass


def _drain(pipe: Any, into: bytearray) -> threading.Thread:
    """Read ``pipe`` to its end in a thread (so neither pipe fills up and blocks the program)."""

    def read() -> None:
        with pipe:
            while chunk := pipe.read1(65536):
                into.extend(chunk)

    thread = threading.Thread(target=read, daemon=True, name="unipipe-command-output")
    thread.start()
    return thread


def _start_reaper(pgid: int) -> subprocess.Popen[bytes] | None:
    try:
        return subprocess.Popen([sys.executable, "-I", "-S", "-c", _REAPER, str(pgid)],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:  # no interpreter to spare: the in-process kill still covers most endings
        return None


def run(command: Sequence[str], inputs: Mapping[str, Any], *,
        env: Mapping[str, str] | None = None) -> Any:
    """Run the command once with ``inputs`` filled in; return its output (see the module doc)."""
    argv = render(command, inputs)
    full_env = dict(os.environ)
    full_env.update(env or {})
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=full_env, start_new_session=True)
    except (OSError, ValueError) as exc:  # ValueError: a value with a NUL character
        raise CommandFailed(f"command {argv[0]!r} could not start: {exc}") from None
    reaper = _start_reaper(proc.pid)
    out, err = bytearray(), bytearray()
    readers = [_drain(proc.stdout, out), _drain(proc.stderr, err)]
    try:
        # the attempt ends when the program does, not when every copy of its stdout closes
        # (a process it left in the background may hold one): wait for it, then the group goes
        proc.wait()
    except BaseException:
        # the shim's timeout (SIGALRM), an engine's timeout exception, an interrupt: stop the
        # whole group now, then let the error end the attempt as it would a Python task's
        _kill_group(proc)
        proc.wait()
        raise
    finally:
        _kill_group(proc)  # whatever it left running goes with it: its pipes close
        for reader in readers:
            reader.join()
        if reaper is not None:
            assert reaper.stdin is not None
            reaper.stdin.close()
            reaper.wait()
    stdout = bytes(out).decode("utf-8", "replace")
    stderr = bytes(err).decode("utf-8", "replace")
    if stdout:
        sys.stdout.write(stdout)
        sys.stdout.flush()
    if stderr:
        sys.stderr.write(stderr)
        sys.stderr.flush()
    if proc.returncode != 0:
        code = proc.returncode
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        tail = stderr[-STDERR_TAIL:].strip()
        raise CommandFailed(f"command {argv[0]!r} {how}" + (f": {tail}" if tail else ""),
                            code, tail)
    return parse_output(stdout)


def context_env() -> dict[str, str]:
    """The running attempt's facts as environment variables (empty outside an attempt)."""
    from unipipe.runtime.context import _CURRENT

    ctx = _CURRENT.get()
    if ctx is None:
        return {}
    env = {"UNIPIPE_RUN_ID": ctx.run_id, "UNIPIPE_PIPELINE": ctx.pipeline,
           "UNIPIPE_TASK_ID": ctx.task_id, "UNIPIPE_ATTEMPT": str(ctx.attempt),
           "UNIPIPE_MAX_ATTEMPTS": str(ctx.max_attempts), "UNIPIPE_BACKEND": ctx.backend}
    if ctx.map_index is not None:
        env["UNIPIPE_MAP_INDEX"] = str(ctx.map_index)
    return env


def bind(spec: Mapping[str, Any]) -> Callable[..., Any]:
    """The callable one attempt of a command task calls with its inputs as keywords.

    Called in the attempt (after its context is set, in the thread that set it): the context's
    variables are read here, since a watchdog thread that may make the call sees no context.
    """
    command = list(spec["command"])
    env = {**(spec.get("env") or {}), **context_env()}

    def call(**inputs: Any) -> Any:
        return run(command, inputs, env=env)

    return call


__all__ = ["CommandFailed", "PlaceholderError", "bind", "parse_output", "placeholders", "render",
           "render_value", "run"]
