"""A command task fanned out over a list: one program per item, each item one argument."""

import unipipe as up

shout = up.command("shout", command=["python3", "-c",
                                     "import sys; print(sys.argv[1].upper() + '!' * len(sys.argv))",
                                     "{word}"])


@up.pipeline(name="case-command-map")
def pipe():
    return shout.map(word=["a b", "$(id)", "--flag"])
