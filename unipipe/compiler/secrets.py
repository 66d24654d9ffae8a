"""Secret-looking values in generated files: what must never be there.

Alert channels and deploy credentials are references (``env:NAME``, ``airflow-conn:ID``,
``prefect-block:NAME``), so no generated file should ever hold a literal secret. This scanner is
run over every golden file and generated test output, and by the compile driver after a
backend writes, so a regression is reported instead of shipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

PATTERNS: dict[str, re.Pattern[str]] = {
    "aws access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "aws secret key assignment": re.compile(r"aws_secret_access_key\s*[=:]\s*['\"][A-Za-z0-9/+=]{30,}"),
    "slack webhook url": re.compile(r"hooks\.slack\.com/services/T[0-9A-Za-z]+/B[0-9A-Za-z]+/[0-9A-Za-z]+"),
    "slack token": re.compile(r"\bxox[abprs]-[0-9A-Za-z-]{10,}"),
    "github token": re.compile(r"\bgh[pousr]_[0-9A-Za-z]{36,}\b"),
    "google api key": re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"),
    "private key block": re.compile(r"-----BEGIN (?:RSA |EC |OPENSSH |DSA )?PRIVATE KEY-----"),
    "prefect api key": re.compile(r"\bpnu_[0-9A-Za-z]{30,}\b"),
    "password assignment": re.compile(r"(?i)\b(?:password|passwd|secret|api_key|token)\b\s*[=:]\s*['\"][^'\"\s]{8,}['\"]"),
    "credentials in url": re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:[^/\s@'\"]{3,}@"),
}


#: Text every match of a pattern contains (a match needs one of them): a plain substring test
#: rules a pattern out faster than the regex, which (starting with ``\b``) tries every position.
NEEDLES: dict[str, tuple[str, ...]] = {
    "aws access key id": ("AKIA", "ASIA"),
    "aws secret key assignment": ("aws_secret_access_key",),
    "slack webhook url": ("hooks.slack.com/services/T",),
    "slack token": ("xox",),
    "github token": ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
    "google api key": ("AIza",),
    "private key block": ("PRIVATE KEY-----",),
    "prefect api key": ("pnu_",),
    "credentials in url": ("://",),
}


def _may_match(kind: str, pattern: re.Pattern[str], text: str) -> bool:
    """False only if ``pattern`` matches no line of ``text``. A pattern without needles (the
    case-insensitive one) is searched in the whole text: a match within a line is a match there
    too, as no pattern is anchored to a line's start or end."""
    needles = NEEDLES.get(kind)
    if needles is None:
        return pattern.search(text) is not None
    return any(needle in text for needle in needles)


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    kind: str
    excerpt: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.kind}: {self.excerpt}"


def scan_text(text: str, file: str = "<text>") -> list[Finding]:
    # Only patterns that may match somewhere are tried line by line: the same findings, in the
    # same order, and a clean 2 MB file (a 1000-task KFP YAML) costs a few substring tests.
    found = {kind: pattern for kind, pattern in PATTERNS.items() if _may_match(kind, pattern, text)}
    if not found:
        return []
    findings = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for kind, pattern in found.items():
            match = pattern.search(line)
            if match:
                shown = match.group(0)
                findings.append(Finding(file, lineno, kind, shown[:6] + "…" if len(shown) > 6 else shown))
    return findings


def scan_paths(paths: list[Path]) -> list[Finding]:
    findings: list[Finding] = []
    for path in paths:
        if path.is_file() and path.stat().st_size < 5_000_000:
            try:
                findings += scan_text(path.read_text(encoding="utf-8"), str(path))
            except UnicodeDecodeError:
                continue
    return findings
