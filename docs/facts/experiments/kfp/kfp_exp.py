import json, os, glob
from kfp import dsl, compiler, local
from kfp.dsl import Input, Output, Dataset, Model, Metrics, Markdown

@dsl.component(install_kfp_package=False)
def make_data(ds: Output[Dataset]):
    with open(ds.path, "w") as f: f.write("1,2\n3,4\n")
    ds.metadata["rows"] = 2

@dsl.component(install_kfp_package=False)
def train(ds: Input[Dataset], model: Output[Model], metrics: Output[Metrics], report: Output[Markdown]):
    rows = open(ds.path).read().splitlines()
    with open(model.path, "w") as f: f.write("weights")
    model.metadata["framework"] = "none"
    metrics.log_metric("accuracy", 0.9)
    with open(report.path, "w") as f: f.write("# Report\nrows=%d" % len(rows))

@dsl.component(packages_to_install=["six==1.16.0"])
def with_pkgs() -> str:
    return "x"

@dsl.pipeline(name="art-demo")
def pipe():
    d = make_data()
    train(ds=d.outputs["ds"])

compiler.Compiler().compile(pipe, "pipe.yaml")
@dsl.pipeline(name="pkg-demo")
def pipe2():
    with_pkgs()
compiler.Compiler().compile(pipe2, "pipe2.yaml")

local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root="/tmp/facts/kfp/local_outputs")
run = pipe()
print("pipeline outputs:", run)
for p in sorted(glob.glob("/tmp/facts/kfp/local_outputs/**/*", recursive=True)):
    print("FILE", p)
