"""A pipeline triggered by any of two assets, whose task updates a third."""

import unipipe as up

raw_events = up.Asset("s3://lake/raw/events/")
raw_users = up.Asset("s3://lake/raw/users")
features = up.Asset("s3://lake/features")


@up.task(produces=[features])
def build_features(rows: int) -> int:
    return rows * 2


@up.pipeline(name="case-asset-trigger-any", trigger=up.On(raw_events, raw_users, mode="any"))
def pipe(rows: int = 21):
    return build_features(rows)
