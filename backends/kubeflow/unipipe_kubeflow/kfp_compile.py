"""Turn a generated module into the PipelineSpec YAML with kfp's own compiler."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import re
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path


def load_pipeline(module_path: Path, pipeline_name: str):  # type: ignore[no-untyped-def]
    """Import a generated module from its file and return its ``@dsl.pipeline`` function.

    The module gets a unique name, so two pipelines (or two versions of one) never clash; it
    stays in sys.modules because kfp reads component sources through ``inspect``.
    """
    mod_name = f"_unipipe_kfp_{uuid.uuid4().hex[:12]}"
    spec = importlib.util.spec_from_file_location(mod_name, module_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    return getattr(module, pipeline_name)


def compile_yaml(module_path: Path, pipeline_name: str, yaml_path: Path) -> Path:
    """kfp.compiler.Compiler().compile(...) into a temp file, then an atomic rename."""
    from kfp import compiler

    with kfp_speedups():  # kfp builds the whole PipelineSpec while the module is imported
        func = load_pipeline(module_path, pipeline_name)
    yaml_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{yaml_path.name}.", suffix=".yaml", dir=yaml_path.parent)
    os.close(fd)
    try:
        with kfp_speedups():
            compiler.Compiler().compile(func, tmp)
        os.replace(tmp, yaml_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return yaml_path


# ------------------------------------------------------------------ faster, byte-identical kfp

def _unique_name(name: str, collection: list[str], delimiter: str) -> str:
    """``kfp.dsl.utils.make_name_unique_by_adding_index`` with a set: the same answer (the
    smallest free index from 2), without a list scan per candidate (O(n) per candidate there)."""
    if name not in collection:
        return name
    taken = set(collection)
    i = 2
    while f"{name}{delimiter}{i}" in taken:
        i += 1
    return f"{name}{delimiter}{i}"


@contextlib.contextmanager
def kfp_speedups() -> Iterator[None]:
    """Make kfp's compiler linear-time where it is quadratic, without changing a byte it writes.

    kfp 2.16 re-sanitises every task name of a DAG once per task (``build_spec_by_group``: a
    regex per name, n^2 calls), finds a free task name by scanning a list per candidate index
    (``make_name_unique_by_adding_index``: n^2 to n^3 when one component is called n times).
    Here the sanitiser (a pure function of a string) is memoised and the free-name search uses a
    set. kfp writes the YAML with PyYAML's pure-Python emitter (``yaml.dump_all``,
    kfp/compiler/pipeline_spec_builder.py ~2309); :func:`_yaml_speedups` makes that emitter skip
    work without changing its output. (libyaml's emitter, ``yaml.CDumper``, is 5x faster but
    folds long double-quoted strings, the component sources, at other places: the bytes would
    change, so it is not used.) ``UNIPIPE_KFP_SPEEDUPS=0`` compiles with kfp untouched; tests
    check that both give the same bytes.
    """
    if os.environ.get("UNIPIPE_KFP_SPEEDUPS", "1") == "0":
        yield
        return
    from kfp.dsl import utils

    saved = {name: getattr(utils, name) for name in
             ("maybe_rename_for_k8s", "sanitize_task_name", "make_name_unique_by_adding_index")}
    try:
        rename = functools.lru_cache(maxsize=None)(saved["maybe_rename_for_k8s"])
        utils.maybe_rename_for_k8s = rename
        utils.sanitize_task_name = rename  # kfp's sanitize_task_name is exactly this call
        utils.make_name_unique_by_adding_index = _unique_name
        with _yaml_speedups():
            yield
    finally:
        for name, fn in saved.items():
            setattr(utils, name, fn)


# PyYAML 6.0 (yaml/emitter.py): the characters write_double_quoted escapes (~933: these five
# and, unless allow_unicode, everything outside printable ASCII) and the line breaks
# write_plain treats specially (~1097, ~1116).
_ESCAPED = {False: re.compile('["\\\\\x85\u2028\u2029\ufeff]|[^\x20-\x7e]'),
            True: re.compile('["\\\\\x85\u2028\u2029\ufeff]|[^\x20-\x7e\xa0-\ud7ff\ue000-\ufffd]')}
_PLAIN_SPECIAL = re.compile("[ \n\x85\u2028\u2029]")


@contextlib.contextmanager
def _yaml_speedups() -> Iterator[None]:
    """PyYAML's pure-Python emitter, writing the same characters with less work.

    - ``analyze_scalar`` (yaml/emitter.py ~626) reads only the scalar and ``allow_unicode``:
      its answer is memoised (kfp's YAML repeats the same keys and values thousands of times);
    - ``write_plain`` (~1080) writes a scalar with no space and no line break in one piece, as
      its loop does for such text;
    - ``write_double_quoted`` (~926) runs its own loop body, unchanged, only at the positions
      where that body can do something (a character it escapes, the one after it, a space, the
      end): at any other position the body neither writes nor changes state.
    """
    from yaml.emitter import Emitter

    saved = {name: Emitter.__dict__[name]
             for name in ("analyze_scalar", "write_plain", "write_double_quoted")}
    analyze = functools.lru_cache(maxsize=None)(
        lambda allow_unicode, scalar: saved["analyze_scalar"](
            _Unicode(allow_unicode), scalar))

    def analyze_scalar(self, scalar):  # type: ignore[no-untyped-def]
        return analyze(bool(self.allow_unicode), scalar)

    def write_plain(self, text, split=True):  # type: ignore[no-untyped-def]
        if not text or _PLAIN_SPECIAL.search(text):
            return saved["write_plain"](self, text, split)
        if self.root_context:
            self.open_ended = True
        for data in ((text,) if self.whitespace else (" ", text)):  # two writes, as PyYAML
            self.column += len(data)
            self.stream.write(data.encode(self.encoding) if self.encoding else data)
        self.whitespace = False
        self.indention = False

    Emitter.analyze_scalar = analyze_scalar
    Emitter.write_plain = write_plain
    Emitter.write_double_quoted = _write_double_quoted
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(Emitter, name, fn)


class _Unicode:
    """The one attribute ``Emitter.analyze_scalar`` reads."""

    def __init__(self, allow_unicode: bool) -> None:
        self.allow_unicode = allow_unicode


def _write_double_quoted(self, text, split=True):  # type: ignore[no-untyped-def]  # noqa: ANN001
    """PyYAML 6.0's ``Emitter.write_double_quoted`` (yaml/emitter.py ~926-980), its loop body
    verbatim, visiting only the positions where the body acts. At any other position ``ch`` is
    printable and not a space, so the escape branch is skipped, and the split test needs
    ``ch == ' '`` or ``start >= end``, which holds only right after an escaped character."""
    self.write_indicator('"', True)
    escaped = [m.start() for m in _ESCAPED[bool(self.allow_unicode)].finditer(text)]
    stops = sorted({i for i, ch in enumerate(text) if ch == " "}.union(
        escaped, (i + 1 for i in escaped), (len(text),)))
    start = 0
    for end in stops:
        if end > len(text):
            break
        ch = None
        if end < len(text):
            ch = text[end]
        if ch is None or ch in '"\\\x85\u2028\u2029\uFEFF' \
                or not ('\x20' <= ch <= '\x7E'
                        or (self.allow_unicode
                            and ('\xA0' <= ch <= '\uD7FF'
                                 or '\uE000' <= ch <= '\uFFFD'))):
            if start < end:
                data = text[start:end]
                self.column += len(data)
                if self.encoding:
                    data = data.encode(self.encoding)
                self.stream.write(data)
                start = end
            if ch is not None:
                if ch in self.ESCAPE_REPLACEMENTS:
                    data = '\\' + self.ESCAPE_REPLACEMENTS[ch]
                elif ch <= '\xFF':
                    data = f'\\x{ord(ch):02X}'
                elif ch <= '\uFFFF':
                    data = f'\\u{ord(ch):04X}'
                else:
                    data = f'\\U{ord(ch):08X}'
                self.column += len(data)
                if self.encoding:
                    data = data.encode(self.encoding)
                self.stream.write(data)
                start = end + 1
        if 0 < end < len(text) - 1 and (ch == ' ' or start >= end) \
                and self.column + (end - start) > self.best_width and split:
            data = text[start:end] + '\\'
            if start < end:
                start = end
            self.column += len(data)
            if self.encoding:
                data = data.encode(self.encoding)
            self.stream.write(data)
            self.write_indent()
            self.whitespace = False
            self.indention = False
            if text[start] == ' ':
                data = '\\'
                self.column += len(data)
                if self.encoding:
                    data = data.encode(self.encoding)
                self.stream.write(data)
    self.write_indicator('"', False)
