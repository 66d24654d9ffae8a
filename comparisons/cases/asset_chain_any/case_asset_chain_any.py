"""An event chain: the producer's task updates an asset, and the engine itself starts the
consumer, whose trigger is that asset or another (mode="any")."""

import unipipe as up

features = up.Asset("s3://lake/chain/features")
labels = up.Asset("s3://lake/chain/labels")


@up.task(produces=[features])
def build_features(fail: bool) -> int:
    if fail:
        raise RuntimeError("no features today")
    return 42


@up.pipeline(name="case-asset-chain-producer")
def producer(fail: bool = False):
    return build_features(fail)


@up.task
def train() -> dict:
    # an engine-started run still has a logical date (Airflow 3: its run_after)
    return {"logical_date_present": up.current().logical_date is not None}


@up.pipeline(name="case-asset-chain-consumer", trigger=up.On(features, labels, mode="any"))
def consumer():
    return train()
