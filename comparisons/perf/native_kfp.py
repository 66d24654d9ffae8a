"""The synthetic pipelines written natively in KFP, and their compile time with kfp alone.

    uv run python comparisons/perf/native_kfp.py N OUT.yaml [--speedups] [--shape mixed|one|per_task]

Prints one JSON line: {"tasks": N, "shape": ..., "seconds": S} where S covers what `kfp dsl
compile` does for a user: building the pipeline (the `@dsl.pipeline` decorator runs the function
and builds the PipelineSpec) and writing the YAML; importing kfp is excluded. `--speedups`
applies unipipe's byte-identical speedups (unipipe_kubeflow.kfp_compile.kfp_speedups) to the same
compile. Shapes, as synthetic.py builds them, one retry with a 1 s delay on every task, KFP's
cache off:
- mixed: a chain where every 10th task also joins the output of the task 10 steps back (two
  components, `step` and `join`);
- one: a plain chain of N calls of ONE component (`step`);
- per_task: a plain chain of N distinct components, one `@dsl.component` per function, in a
  module written to a temp folder; S then also covers importing that module (the N decorators
  build the N ComponentSpecs: kfp's work, as unipipe's compile of the same shape pays it too).
"""

import contextlib
import importlib
import json
import sys
import tempfile
import time
from pathlib import Path

from kfp import compiler, dsl


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def step(x: int) -> int:
    return x + 1


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def join(a: int, b: int) -> int:
    return a + b


def _retry(task):  # noqa: ANN001, ANN202
    task.set_retry(num_retries=1, backoff_duration="1s", backoff_factor=1.0)
    task.set_caching_options(False)
    return task


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
            tasks.append(_retry(task))
        return tasks[-1].output

    return synthetic


def chain_func(components: list):  # noqa: ANN201 - task i calls components[i]
    def chain(start: int = 0) -> int:
        value = start
        for component in components:
            value = _retry(component(x=value)).output
        return value

    return chain


_WRITTEN: list[str] = []


def per_task_module(n: int, folder: Path) -> str:
    """A module of N components, as a person writes them: one decorated function per task."""
    name = f"native_per_task_{n}_{len(_WRITTEN)}"  # a new name per call: never a cached import
    _WRITTEN.append(name)
    (folder / f"{name}.py").write_text("from kfp import dsl\n\n\n" + "".join(
        f'@dsl.component(base_image="python:3.11", install_kfp_package=False)\n'
        f"def f{i:05d}(x: int) -> int:\n    return x + {i + 1}\n\n\n" for i in range(n)))
    return name


def compile_native(n: int, out: str, *, speedups: bool = False, shape: str = "mixed") -> float:
    if speedups:
        from unipipe_kubeflow.kfp_compile import kfp_speedups

        context = kfp_speedups()
    else:
        context = contextlib.nullcontext()
    with tempfile.TemporaryDirectory() as tmp:
        module = per_task_module(n, Path(tmp)) if shape == "per_task" else None
        sys.path.insert(0, tmp)
        start = time.perf_counter()
        with context:
            if module is not None:
                mod = importlib.import_module(module)
                func = chain_func([getattr(mod, f"f{i:05d}") for i in range(n)])
            else:
                func = chain_func([step] * n) if shape == "one" else pipeline_func(n)
            pipeline = dsl.pipeline(name=f"{shape.replace('_', '-')}-{n}-native")(func)
            compiler.Compiler().compile(pipeline, out)
        seconds = time.perf_counter() - start
        sys.path.remove(tmp)
    return seconds


if __name__ == "__main__":
    n, out = int(sys.argv[1]), sys.argv[2]
    shape = sys.argv[sys.argv.index("--shape") + 1] if "--shape" in sys.argv else "mixed"
    speedups = "--speedups" in sys.argv
    compile_native(10, out, speedups=speedups, shape=shape)  # warm-up: kfp's lazy imports
    print(json.dumps({"tasks": n, "shape": shape, "seconds": round(compile_native(
        n, out, speedups=speedups, shape=shape), 4)}))
