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


#: the shared store each multi-machine target is deployed with unless a test says otherwise
#: (compiled into the output; planning and uploading never touch it)
SHARED_STORES = {"mwaa": "s3://unipipe-shared-store/runs", "kubeflow": "s3://unipipe-shared-store/runs",
                 "composer": "gs://unipipe-shared-store/runs", "vertex": "gs://unipipe-shared-store/runs"}


def deploy(ir, to: str, options: list[str], *, dry_run: bool = False,
           store: str | None = "default", store_local: bool = False) -> Outcome:
    from unipipe.store import with_store

    buf = io.StringIO()
    console = Console(file=buf, width=400, color_system=None, force_terminal=False)
    ir = with_store(ir, SHARED_STORES.get(to) if store == "default" else store)
    code = deploy_main(ir, to, dry_run=dry_run, options=options, console=console,
                       store_local=store_local)
    return Outcome(code, buf.getvalue())
