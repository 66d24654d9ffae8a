"""Hand-written KFP pipelines (plain kfp.dsl, no unipipe) that pin the executor's semantics."""

from kfp import dsl, kubernetes

IMAGE = "python:3.11"


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def fail_until(succeed_at: int) -> int:
    import os

    attempt = int(os.environ["UNIPIPE_KFP_ATTEMPT"])
    if attempt < succeed_at:
        raise RuntimeError(f"attempt {attempt}")
    return attempt


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def final_state(status: dsl.PipelineTaskFinalStatus) -> str:
    return f"{status.state}|{status.pipeline_task_name}"


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def echo(text: str) -> str:
    return text


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def nap(seconds: int) -> str:
    import time

    time.sleep(seconds)
    return "woke"


@dsl.pipeline(name="retry-formula")
def retry_formula(succeed_at: int = 3):
    task = fail_until(succeed_at=succeed_at)
    task.set_caching_options(False)
    task.set_retry(num_retries=4, backoff_duration="2s", backoff_factor=3.0)


@dsl.pipeline(name="retry-budget")
def retry_budget():
    task = fail_until(succeed_at=99)
    task.set_caching_options(False)
    task.set_retry(num_retries=5, backoff_duration="2s", backoff_factor=2.0,
                   backoff_max_duration="7s")


@dsl.pipeline(name="exit-and-if")
def exit_and_if(flag: str = "no"):
    handler = final_state()
    handler.set_caching_options(False)
    with dsl.ExitHandler(handler):
        first = echo(text=flag).set_caching_options(False)
        with dsl.If(first.output == "yes"):
            echo(text="inside").set_caching_options(False)
        fail_until(succeed_at=99).set_caching_options(False)


@dsl.pipeline(name="cached-echo")
def cached_echo(text: str = "a"):
    echo(text=text).set_caching_options(True)


@dsl.pipeline(name="deadline")
def deadline():
    task = nap(seconds=60).set_caching_options(False)
    kubernetes.set_timeout(task, 1)


@dsl.pipeline(name="loop")
def loop():
    with dsl.ParallelFor(items=["x", "y", "z"]) as item:
        shout = echo(text=item).set_caching_options(False)
    echo(text="after").after(shout).set_caching_options(False)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def nothing() -> str:
    return None  # kfp's executor writes no output for None


@dsl.pipeline(name="missing-output")
def missing_output():
    empty = nothing().set_caching_options(False)
    echo(text=empty.output).set_caching_options(False)
