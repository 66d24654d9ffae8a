"""The shim benchmark's chain written by hand in KFP v2 (no unipipe): ``pipeline(k)``.

The component is a lightweight Python component like unipipe's (same base image, no kfp
install step) and caching is off on every task, as unipipe compiles a task without a cache.
"""

from kfp import dsl


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def step(x: int) -> int:
    return x + 1


def pipeline(k: int):
    @dsl.pipeline(name=f"native-chain-{k}")
    def native_chain(start: int = 0):
        task = step(x=start)
        task.set_display_name("step")
        task.set_caching_options(False)
        for i in range(2, k + 1):
            task = step(x=task.output)
            task.set_display_name(f"step_{i}")
            task.set_caching_options(False)

    return native_chain
