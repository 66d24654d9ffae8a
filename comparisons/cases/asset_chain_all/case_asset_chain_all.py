"""An event chain in mode "all": the consumer runs once both assets were updated since its last
run. The producer's two tasks update one asset each; a failed task updates nothing, though its
sibling's update (in the same failed run) counts."""

import unipipe as up

features = up.Asset("s3://lake/chain-all/features")
labels = up.Asset("s3://lake/chain-all/labels")


@up.task(produces=[features])
def build_features() -> int:
    return 42


@up.task(produces=[labels])
def build_labels(fail: bool) -> int:
    if fail:
        raise RuntimeError("no labels today")
    return 7


@up.pipeline(name="case-asset-chain-all-producer")
def producer(fail_labels: bool = False):
    build_features()
    return build_labels(fail_labels)


@up.task
def train() -> dict:
    return {"logical_date_present": up.current().logical_date is not None}


@up.pipeline(name="case-asset-chain-all-consumer", trigger=up.On(features, labels))
def consumer():
    return train()
