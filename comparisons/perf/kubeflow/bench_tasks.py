"""The 1000-task pipeline of the compile benchmark, written twice: with unipipe and natively in KFP.

Shape: a chain of 1000 steps where step i consumes step i-1's output, every step with 2 retries,
so both compilers see the same graph. (The native version also turns KFP's cache on for every
tenth step and off elsewhere; unipipe's turns it off everywhere: one field per task either way.)
"""


from kfp import dsl

import unipipe as up

N_TASKS = 1000


@up.task(retries=2)
def step(x: int) -> int:
    return x + 1


@up.pipeline(name="bench-1000")
def bench_unipipe(start: int = 0):
    value = step(start)
    for _ in range(N_TASKS - 1):
        value = step(value)
    return value


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def native_step(x: int) -> int:
    return x + 1


@dsl.pipeline(name="bench-1000-native")
def bench_native(start: int = 0):
    value = native_step(x=start)
    value.set_retry(num_retries=2)
    value.set_caching_options(False)
    for i in range(N_TASKS - 1):
        value = native_step(x=value.output)
        value.set_retry(num_retries=2)
        value.set_caching_options(i % 10 == 0)
