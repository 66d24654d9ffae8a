"""The synthetic pipeline written natively in KFP, and its compile time with kfp alone.

    uv run python comparisons/perf/native_kfp.py N OUT.yaml [--speedups]

Prints one JSON line: {"tasks": N, "seconds": S} where S covers what `kfp dsl compile` does for a
user: building the pipeline (the `@dsl.pipeline` decorator runs the function and builds the
PipelineSpec) and writing the YAML; importing kfp is excluded. `--speedups` applies unipipe's
byte-identical speedups (unipipe_kubeflow.kfp_compile.kfp_speedups) to the same compile.
Same shape as synthetic.pipeline: a chain where every 10th task also joins the output of the
task 10 steps back; one retry with a 1 s delay on every task, KFP's cache off.
"""

import contextlib
import json
import sys
import time

from kfp import compiler, dsl


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def step(x: int) -> int:
    return x + 1


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def join(a: int, b: int) -> int:
    return a + b


def pipeline_func(n: int):  # noqa: ANN201 - a pipeline function for @dsl.pipeline
    def synthetic(start: int = 0) -> int:
        tasks = []
        for i in range(n):
            if i == 0:
                task = step(x=start)
            elif i % 10 == 0 and i >= 10:
                task = join(a=tasks[i - 1].output, b=tasks[i - 10].output)
            else:
                task = step(x=tasks[i - 1].output)
            task.set_retry(num_retries=1, backoff_duration="1s", backoff_factor=1.0)
            task.set_caching_options(False)
            tasks.append(task)
        return tasks[-1].output

    return synthetic


def compile_native(n: int, out: str, *, speedups: bool = False) -> float:
    func = pipeline_func(n)
    if speedups:
        from unipipe_kubeflow.kfp_compile import kfp_speedups

        context = kfp_speedups()
    else:
        context = contextlib.nullcontext()
    start = time.perf_counter()
    with context:
        pipeline = dsl.pipeline(name=f"synthetic-{n}-native")(func)
        compiler.Compiler().compile(pipeline, out)
    return time.perf_counter() - start


if __name__ == "__main__":
    n, out = int(sys.argv[1]), sys.argv[2]
    compile_native(10, out, speedups="--speedups" in sys.argv)  # warm-up: kfp's lazy imports
    print(json.dumps({"tasks": n, "seconds": round(compile_native(
        n, out, speedups="--speedups" in sys.argv), 4)}))
