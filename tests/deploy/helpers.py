"""Running ``deploy_main`` the way the CLI does, capturing what it prints."""

from __future__ import annotations

import io
from dataclasses import dataclass

from rich.console import Console

from unipipe.deploy import deploy_main


@dataclass
class Outcome:
    code: int
    text: str

    def lines(self, mark: str) -> list[str]:
        return [line for line in self.text.splitlines() if line.startswith(mark + " ")]


def deploy(ir, to: str, options: list[str], *, dry_run: bool = False) -> Outcome:
    buf = io.StringIO()
    console = Console(file=buf, width=400, color_system=None, force_terminal=False)
    code = deploy_main(ir, to, dry_run=dry_run, options=options, console=console)
    return Outcome(code, buf.getvalue())
