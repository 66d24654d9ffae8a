"""Key paths: select nested keys and list indexes from task outputs and parameters."""

import unipipe as up


@up.task
def build() -> dict:
    return {"rows": [{"id": 1, "score": 0.5}, {"id": 2, "score": 0.75}], "meta": {"source": "s"}}


@up.task
def pick(score: float, source: str, first: str) -> str:
    return f"{source}:{score}:{first}"


@up.pipeline(name="case-key-path-nested")
def pipe(config: dict = {"names": ["alpha", "beta"]}):  # noqa: B006 - a JSON default
    data = build()
    chosen = pick(data["rows"][1]["score"], data["meta"]["source"], config["names"][0])
    return {"first_id": data["rows"][0]["id"], "chosen": chosen}
