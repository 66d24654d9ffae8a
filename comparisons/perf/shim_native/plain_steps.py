"""The same step as chain_unipipe.step in a module that does not import unipipe.

Only for attribution: a unipipe pipeline whose tasks point here (``plain_steps:step``) shows
what a task attempt costs when resolving the user's function does not import unipipe's
authoring layer (``import unipipe`` + ``@up.task`` loads pydantic and the IR models).
"""


def step(x: int) -> int:
    return x + 1
