"""A custom cache key: only the dataset name matters, not the free-text note."""

import unipipe as up


def dataset_key(inputs: dict) -> str:
    return inputs["dataset"]


@up.task(cache=up.Cache(key_fn=dataset_key, version="cache-key-fn"))
def profile(dataset: str, note: str) -> str:
    return f"profile of {dataset} ({note})"


@up.pipeline(name="case-cache-key-fn")
def pipe(dataset: str = "sales", note: str = "first"):
    return profile(dataset, note)
