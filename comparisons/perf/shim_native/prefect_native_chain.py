"""The shim benchmark's chain written by hand as a Prefect flow (no unipipe).

``python prefect_native_chain.py K`` runs it against ``PREFECT_API_URL`` and prints
``FLOW-RUN <id>``. The tasks use ``cache_policy=NO_CACHE``, as the flow unipipe generates for a
task without a cache policy does, so both sides ask Prefect for the same work.
"""

import sys

from prefect import flow, task
from prefect.cache_policies import NO_CACHE


@task(cache_policy=NO_CACHE)
def step(x: int) -> int:
    return x + 1


@flow(name="native-chain")
def native_chain(k: int = 20, start: int = 0) -> int:
    value = step(start)
    for _ in range(k - 1):
        value = step(value)
    return value


if __name__ == "__main__":
    state = native_chain(int(sys.argv[1]), return_state=True)
    print(f"FLOW-RUN {state.state_details.flow_run_id} {state.type.value}", flush=True)
