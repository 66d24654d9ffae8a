"""DEVELOPING.md stays true: every command in its fenced shell blocks runs (the cheap ones for
real, the whole-suite ones far enough to show their paths, markers and options exist), every
repository path it names exists, and it holds no machine paths."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "DEVELOPING.md"
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
SHELL = ("bash", "sh", "shell", "console")


def guide_commands(text: str) -> list[str]:
    """The commands of every fenced shell block (indented blocks in lists too), one per line,
    ``\\`` continuations joined, comments and blank lines dropped."""
    commands: list[str] = []
    lang: str | None = None
    pending = ""
    for line in text.splitlines():
        fence = FENCE.match(line)
        if fence:
            lang = None if lang is not None else fence.group(2)
            continue
        if lang not in SHELL:
            continue
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        commands.append(pending + line)
        pending = ""
    return commands


def test_guide_commands_are_found():
    cmds = guide_commands("intro\n```bash\nuv run a \\\n  --b\n# note\n```\n```toml\nx = 1\n```\n"
                          "  ```sh\n  bash c.sh\n  ```\n")
    assert cmds == ["uv run a --b", "bash c.sh"]


COMMANDS = guide_commands(GUIDE.read_text(encoding="utf-8"))


def _env(tmp_path: Path) -> dict[str, str]:
    """``uv run --frozen`` is the synced workspace venv: its bin folder first on PATH (this
    interpreter's); homes and stores in tmp_path, never the user's."""
    env = dict(os.environ)
    for key in ("PREFECT_API_URL", "AIRFLOW_HOME", "UNIPIPE_UPDATE_GOLDEN"):
        env.pop(key, None)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    for name in ("home", "xdg-cache", "xdg-config"):
        (tmp_path / name).mkdir(exist_ok=True)
    env.update(HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(tmp_path / "xdg-cache"),
               XDG_CONFIG_HOME=str(tmp_path / "xdg-config"),
               UNIPIPE_CACHE_URL=str(tmp_path / "cache"),
               UNIPIPE_ARTIFACT_URL=str(tmp_path / "artifacts"),
               UNIPIPE_TRACE_DIR=str(tmp_path / "trace"))
    return env


def _split(command: str) -> tuple[dict[str, str], list[str]]:
    """``A=1 uv run --frozen X ...`` -> ({"A": "1"}, ["X", ...]); other commands unchanged."""
    argv = shlex.split(command)
    assigns = {}
    while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", argv[0]):
        key, _, value = argv.pop(0).partition("=")
        assigns[key] = value
    if argv[:3] == ["uv", "run", "--frozen"]:
        argv = argv[3:]
    return assigns, argv


def _run(argv: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def _check_pytest(argv: list[str], env: dict[str, str]) -> None:
    """A test run: collect it (with its paths, -m and -k expressions and plugin options)."""
    args = [a for a in argv[1:] if a not in ("-q", "-x")]
    proc = _run([sys.executable, "-m", "pytest", *args, "--collect-only", "-q",
                 "-p", "no:cacheprovider"], env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    found = re.search(r"(\d+)(?:/\d+)? tests? (?:collected|selected)", proc.stdout)
    assert found and int(found.group(1)) > 0, proc.stdout[-2000:]


def _check_conform(argv: list[str], env: dict[str, str], tmp_path: Path) -> None:
    """The reference runner alone is cheap: run it (output into tmp_path). With the engines
    (minutes per case set), check the cases, the backends and the options exist."""
    backends = (_option(argv, "--backends") or "local,airflow,prefect,kubeflow").split(",")
    targets = [a for a in argv[2:] if not a.startswith("-") and a not in
               {_option(argv, "--backends"), _option(argv, "--out")}]
    assert targets and all((ROOT / t).exists() for t in targets), targets
    if backends == ["local"]:
        out = tmp_path / "conform"
        proc = _run(["unipipe", *argv[1:argv.index("--out")], "--out", str(out)], env)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert (out / "summary.json").exists()
        return
    from unipipe.compiler.registry import available

    assert set(backends) <= set(available())
    helptext = _run(["unipipe", "conform", "--help"], env).stdout
    for opt in (a for a in argv if a.startswith("--")):
        assert opt in helptext, opt


def _check(command: str, tmp_path: Path) -> None:
    env = _env(tmp_path)
    assigns, argv = _split(command)
    env.update({k: v for k, v in assigns.items() if k != "UNIPIPE_UPDATE_GOLDEN"})
    if argv[:2] == ["uv", "sync"]:
        assert (ROOT / "uv.lock").is_file() and (ROOT / "pyproject.toml").is_file()
    elif argv[0] == "bash":
        assert (ROOT / argv[1]).is_file()
        assert _run(["bash", "-n", argv[1]], env).returncode == 0
    elif argv[0] == "pytest":
        _check_pytest(argv, env)
    elif argv[:2] == ["unipipe", "conform"]:
        _check_conform(argv, env, tmp_path)
    elif argv[:2] == ["unipipe", "matrix"] and "--check" not in argv:
        # writes comparisons/MATRIX.md: write it to tmp_path and compare instead
        out = tmp_path / "MATRIX.md"
        proc = _run([*argv, "--out", str(out)], env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert out.read_text() == (ROOT / "comparisons" / "MATRIX.md").read_text()
    else:  # cheap and read-only: run it as written
        proc = _run(argv, env, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_the_guide_has_commands_for_every_section():
    joined = "\n".join(COMMANDS)
    for needed in ("unipipe schema", "unipipe matrix", "unipipe conform", "pytest tests/prefect",
                   "UNIPIPE_UPDATE_GOLDEN=1", "bash scripts/test.sh"):
        assert needed in joined, needed


@pytest.mark.parametrize("command", COMMANDS, ids=COMMANDS)
def test_guide_command_runs(command, tmp_path):
    _check(command, tmp_path)


def test_schema_command_prints_the_ir_schema(tmp_path):
    """One command's output checked by value, not just its exit code."""
    import json

    assert "uv run --frozen unipipe schema" in COMMANDS
    proc = _run(["unipipe", "schema"], _env(tmp_path))
    schema = json.loads(proc.stdout)
    assert schema["title"] == "unipipe pipeline IR" and "tasks" in schema["properties"]


def test_named_paths_exist_and_none_is_a_machine_path():
    text = GUIDE.read_text(encoding="utf-8")
    assert not re.search(r"(?<![\w.~])/(work|tmp|home|root|usr|opt|Users)/", text)
    assert not re.search(r"\b(deadline|UTC|you build one backend|the lead)\b", text, re.I)
    assert "black" not in text.lower()
    named = set(re.findall(r"`([\w./-]+/[\w.-]+)`", text))
    paths = [n for n in named if not n.startswith(("http", ".venv")) and "<" not in n
             and not n.startswith("$")]
    assert len(paths) > 30
    missing = [p for p in sorted(paths) if not (ROOT / p).exists()]
    assert missing == []


def test_readme_points_to_the_guide():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "`DEVELOPING.md`" in readme and GUIDE.exists()
    assert "## Adding a backend" in GUIDE.read_text(encoding="utf-8")
