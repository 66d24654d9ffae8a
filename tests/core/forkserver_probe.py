"""A fork server with no engine behind it, for tests/core/test_forkserver.py: ``argv[0]`` says
what the child does (``echo``: write its pid, cwd and one variable; ``sleep``: start a
grandchild and sleep; ``exit N``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

WARMED: list[str] = []


def warm() -> None:
    if os.environ.get("PROBE_THREAD") == "1":  # a warm-up that leaves a thread behind
        import threading

        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
    WARMED.append("yes")


def child(request: dict[str, Any]) -> int:
    what = request["argv"]
    if what[0] == "echo":
        print(json.dumps({"pid": os.getpid(), "cwd": os.getcwd(), "mark": os.environ.get("MARK"),
                          "warmed": WARMED, "sid": os.getsid(0)}))
        return 0
    if what[0] == "sleep":
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        print(json.dumps({"grandchild": grandchild.pid}), flush=True)
        time.sleep(300)
        return 0
    return int(what[1])


if __name__ == "__main__":
    from unipipe.forkserver import serve

    serve(sys.argv[1], warm, child)
