"""Extra pipelines for the kubeflow backend: shapes and policies the shared set does not cover.

Importable as ``kfp_cases`` (tests/kubeflow is put on sys.path), so component processes can
import the tasks through RunOptions.search_path.
"""

from __future__ import annotations

import time

import unipipe as up


@up.task(cache=True)
def stamp(x: int) -> dict:
    """Cached natively by KFP (no expiry, no key function, no success alert)."""
    return {"x": x, "at": time.time()}


@up.task
def stamp_x(s: dict) -> int:
    return s["x"]


@up.pipeline(name="native-cache")
def native_cache(x: int = 5):
    s = stamp(x)
    stamp_x(s)
    return s


def first_letter_key(inputs: dict) -> str:
    return str(inputs["word"])[:1]


@up.task(cache=up.Cache(key_fn=first_letter_key))
def shout(word: str) -> dict:
    return {"word": word.upper(), "at": time.time()}


@up.pipeline(name="key-fn-cache")
def key_fn_cache(word: str = "apple"):
    return shout(word)


@up.task(cache=True, alerts=[up.Alert(on=("success",), webhook="env:UNIPIPE_TEST_WEBHOOK")])
def cached_announce(text: str) -> str:
    return text + "!"


@up.pipeline(name="cached-success-alert")
def cached_success_alert(text: str = "hi"):
    return cached_announce(text)


@up.task(timeout="0.5s", retries=1,
         alerts=[up.Alert(on=("retry", "failure"), webhook="env:UNIPIPE_TEST_WEBHOOK")])
def sleepy(seconds: float) -> str:
    time.sleep(seconds)
    return "awake"


@up.pipeline(name="timeout-alerts")
def timeout_alerts(seconds: float = 20.0):
    return sleepy(seconds)


@up.task
def kinds(value: object) -> dict:
    """Names of the Python types that arrived: ints must stay ints through KFP."""
    def walk(v):  # noqa: ANN001, ANN202
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return type(v).__name__
    return {"value": value, "types": walk(value)}


@up.task
def double(x: int) -> int:
    return 2 * x


@up.task
def is_small(n: int) -> bool:
    return n < 3


@up.task
def note(text: str) -> str:
    return text


@up.task
def big_blob(n: int) -> dict:
    """Over the 64 KiB inline limit: travels as an artifact-store pointer."""
    return {"rows": list(range(n))}


@up.task
def count_rows(blob: dict) -> int:
    return len(blob["rows"])


@up.pipeline(name="shapes")
def shapes(cfg: dict = {"k": [1, 2], "name": "x"}, items: list = [3, 4],  # noqa: B006
           n: int = 5):
    """Dict/list params, key paths, a literal fan-out, else-branches, a large value, after()."""
    seen = kinds(cfg["k"])
    listed = kinds(items)
    doubled = double.map(x=[1, 2, 3])
    small = is_small(n)
    with up.when(small):
        yes = note("small")
    with up.when(small, expect=False):
        no = note("large").after(seen)
    rows = count_rows(big_blob(20000))
    return {"seen": seen, "listed": listed, "doubled": doubled, "yes": yes, "no": no,
            "rows": rows, "name": cfg["name"]}


@up.task(resources=up.Resources(cpu="500m", memory="2Gi", gpu=2, gpu_type="nvidia.com/gpu"),
         image="ghcr.io/example/trainer:1.2")
def on_gpu(x: int) -> int:
    return x


@up.task
def on_default(x: int) -> int:
    return x


@up.pipeline(name="placement", defaults=up.Defaults(image="python:3.12-slim"))
def placement(x: int = 1):
    return on_default(on_gpu(x))


@up.task(retries=1)
def dies(code: int) -> str:
    """Kills its own process on the first attempt (no exception for the shim to report)."""
    import os

    if up.current().attempt == 1:
        os._exit(code)
    return "survived"


@up.pipeline(name="killed-process")
def killed_process(code: int = 3):
    return dies(code)


@up.task(cache=up.Cache(expire="30m"))
def fresh(x: int) -> dict:
    return {"x": x, "at": time.time()}


@up.pipeline(name="expiring-cache")
def expiring_cache(x: int = 1):
    return fresh(x)


@up.task(retries=1)
def bump(x: int) -> int:
    """Fails once per task id on its first attempt, so each shared-component task retries."""
    if up.current().attempt == 1:
        raise ConnectionError(f"{up.current().task_id} first attempt")
    return x + 1


@up.pipeline(name="chain")
def chain(start: int = 0):
    """One task called three times: one KFP component serving three tasks."""
    return bump(bump(bump(start)))
