"""The seeds' KFP training pipeline, written in unipipe without dropping its orchestration.

The pipeline in the articles reads, in KFP v2::

    @dsl.container_component
    def download(day: str, out: dsl.OutputPath(str)):
        return dsl.ContainerSpec(image="data-tools:2.0", command=["python3", "-c", DOWNLOAD],
                                 args=[day, out])

    @dsl.component(packages_to_install=["scikit-learn"])
    def train(data: str, alpha: float) -> float: ...

    @dsl.pipeline(name="training")
    def training(day: str = "2024-01-01", min_score: float = 0.8):
        data = download(day=day)
        with dsl.ParallelFor([0.1, 0.3, 1.0], parallelism=2) as alpha:
            score = train(data=data.output, alpha=alpha).set_retry(2)
        best = pick_best(scores=dsl.Collected(score.output))
        with dsl.If(best.outputs["score"] >= min_score):
            deploy(...)
        with dsl.Else():
            open_ticket(...)

In unipipe the container step is ``up.command``, the sweep is ``task.map(...,
max_parallel=2)``, ``dsl.If``/``dsl.Else`` are ``up.when``/``up.otherwise``; each engine gets
its own form of each (KFP: the same constructs again).
"""

from __future__ import annotations

import unipipe as up

# Prints one day's training sample (x, y pairs) as JSON: the container step's output.
DOWNLOAD = (
    "import json, random, sys\n"
    "rng = random.Random(sys.argv[1])\n"
    "xs = [i / 10 for i in range(40)]\n"
    "print(json.dumps([[x, round(3 * x + 1 + rng.uniform(-0.2, 0.2), 4)] for x in xs]))\n"
)

download = up.command("download", command=["python3", "-c", DOWNLOAD, "{day}"],
                      image="registry.example.com/data-tools:2.0", retries=1, timeout="10m")


@up.task(retries=2, cache=True, timeout="5m")
def train(data: list, alpha: float) -> dict:
    """Ridge regression through the origin-shifted data, in closed form; score = R^2."""
    n = len(data)
    mx = sum(x for x, _ in data) / n
    my = sum(y for _, y in data) / n
    sxx = sum((x - mx) ** 2 for x, _ in data)
    sxy = sum((x - mx) * (y - my) for x, y in data)
    slope = sxy / (sxx + alpha * n)
    ss_res = sum((y - (my + slope * (x - mx))) ** 2 for x, y in data)
    ss_tot = sum((y - my) ** 2 for _, y in data)
    return {"alpha": alpha, "slope": round(slope, 4), "score": round(1 - ss_res / ss_tot, 4)}


@up.task
def pick_best(results: list) -> dict:
    return max(results, key=lambda r: r["score"])


@up.task
def good_enough(best: dict, min_score: float) -> bool:
    return best["score"] >= min_score


@up.task
def deploy(best: dict) -> str:
    return f"deployed model alpha={best['alpha']} (R2 {best['score']})"


@up.task
def open_ticket(best: dict) -> str:
    return f"model below target: best R2 {best['score']} at alpha={best['alpha']}"


@up.pipeline(name="kfp-training", tags=["ml", "example"])
def training(day: str = "2024-01-01", min_score: float = 0.8):
    """Download a day's sample in a container, sweep the regularisation two at a time, and
    deploy the best model if it scores well enough, else open a ticket."""
    data = download(day=day)
    results = train.map(alpha=[0.01, 0.3, 3.0], data=data, max_parallel=2)
    best = pick_best(results)
    with up.when(good_enough(best, min_score)):
        deployed = deploy(best)
    with up.otherwise():
        ticket = open_ticket(best)
    return {"best": best, "deployed": deployed, "ticket": ticket}
