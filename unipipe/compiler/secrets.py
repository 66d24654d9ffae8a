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


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    kind: str
    excerpt: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.kind}: {self.excerpt}"


def scan_text(text: str, file: str = "<text>") -> list[Finding]:
    findings = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for kind, pattern in PATTERNS.items():
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
