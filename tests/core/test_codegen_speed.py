"""The compile-speed shortcuts in unipipe.compiler (issue 16) give exactly what they replace."""

from __future__ import annotations

import re

import libcst as cst
import pytest

from unipipe.compiler import codegen, secrets

SOURCE = '''\
"""Doc."""
from a.b import c as d, e
import x.y


@decorator(arg=[1, 2.5, -3, {"k": (None,)}])
async def f(a: int, /, b: "str" = 'q', *args: list[int], c=lambda z: z ** 2, **kw) -> dict[str, int]:
    global g
    async with ctx() as (p, q):
        for i in range(10):
            if i % 2 and not (i > 3 or i < -1):
                yield i
            elif i:
                continue
            else:
                raise ValueError(f"bad {i!r:>4}") from None
    while True:
        try:
            x = [v for v in w if v] + {k: v for k, v in z.items()}[0:2:1]
        except (A, B) as e:
            del x
        finally:
            pass
        break
    return {**kw, "a": a} if a else ...


class C(B, metaclass=M):
    attr: int = 1

    @property
    def p(self) -> int:  # comment
        return self.attr @ other
'''


def test_module_code_is_libcsts_own():
    mod = cst.parse_module(SOURCE)
    assert codegen.module_code(mod) == mod.code == SOURCE
    built = codegen.module([cst.Expr(codegen.literal({"a": [1, -2.5, None, ("x",)], "b": "q'\"\n"}))],
                           header=["# h"], docstring='tricky """ doc\\')
    assert codegen.module_code(built) == built.code


def test_parsed_fragments_are_shared_and_render_alike():
    assert codegen.parse_expression("a.b.c") is codegen.parse_expression("a.b.c")
    assert codegen.parse_statement("from x import y") is codegen.parse_statement("from x import y")
    shared = codegen.parse_expression("pkg.fn")
    mod = codegen.module([cst.Expr(cst.Call(shared)), cst.Expr(cst.Call(shared))], header=[])
    fresh = codegen.module([cst.Expr(cst.Call(cst.parse_expression("pkg.fn")))] * 2, header=[])
    assert codegen.module_code(mod) == fresh.code == "pkg.fn()\npkg.fn()\n"


SECRETS = [
    "key = 'AKIA" + "A" * 16 + "'",
    "aws_secret_access_key = '" + "a" * 40 + "'",
    "url = 'https://hooks.slack.com/services/T0001/B0002/abcdef'",
    "tok = 'xoxb-" + "1" * 12 + "'",
    "gh = 'ghp_" + "a" * 36 + "'",
    "k = 'AIza" + "b" * 35 + "'",
    "-----BEGIN RSA PRIVATE KEY-----",
    "p = 'pnu_" + "c" * 30 + "'",
    "PassWord: 'hunter2hunter2'",
    "dsn = 'postgres://user:s3cret@db/x'",
]


def _line_by_line(text: str) -> list[secrets.Finding]:
    """scan_text as it was: every pattern on every line."""
    found = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for kind, pattern in secrets.PATTERNS.items():
            match = pattern.search(line)
            if match:
                shown = match.group(0)
                found.append(secrets.Finding("<text>", lineno, kind,
                                             shown[:6] + "…" if len(shown) > 6 else shown))
    return found


def test_every_match_holds_a_needle():
    """Needles only for case-sensitive patterns, and each example's match contains one."""
    assert set(secrets.NEEDLES) <= set(secrets.PATTERNS)
    matched = set()
    for kind, needles in secrets.NEEDLES.items():
        assert not secrets.PATTERNS[kind].flags & re.IGNORECASE, kind
        for secret in SECRETS:
            match = secrets.PATTERNS[kind].search(secret)
            if match:
                matched.add(kind)
                assert any(needle in match.group(0) for needle in needles), (kind, secret)
    assert matched == set(secrets.NEEDLES)


@pytest.mark.parametrize("secret", SECRETS)
def test_scan_finds_what_the_line_by_line_scan_finds(secret):
    text = "clean = 1\n" + secret + "\nalso = 'AKIA'\n" + secret + " # twice\n"
    expected = _line_by_line(text)
    assert expected, secret
    assert secrets.scan_text(text) == expected


def test_clean_text_has_no_findings():
    text = "def f(x):\n    return x + 1\n" * 1000
    assert secrets.scan_text(text) == _line_by_line(text) == []
