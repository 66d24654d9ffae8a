"""Command tasks: a program's output feeds a Python task; a hostile value stays one argument.

``emit`` prints a log line, then JSON on its last line (the task's output is that JSON); its
``{n}`` comes from a parameter and ``--who={who}`` is one argument whatever ``who`` holds. The
value of ``who`` is written to run shell code three ways: had any shell seen it, the file
``unipipe-pwned`` would exist in the command's folder before Python started, and ``emit`` reports
whether it does. ``echo`` takes an upstream key path, a literal with spaces and a literal list
(as JSON text), and prints plain text (its output is that text).
"""

import unipipe as up

EMIT = (
    "import json, os, sys\n"
    "print('emit: starting')\n"
    "print(json.dumps(dict(args=sys.argv[1:], n=int(sys.argv[1]) * 10,"
    " pwned=os.path.exists('unipipe-pwned'))))\n"
)
ECHO = "import sys; print('total=' + sys.argv[1] + ' | label=' + sys.argv[2] + ' | tags=' + sys.argv[3] + ' | argc=' + str(len(sys.argv)))"

emit = up.command("emit", command=["python3", "-c", EMIT, "{n}", "--who={who}"])
echo = up.command("echo", command=["python3", "-c", ECHO, "{total}", "{label}", "{tags}"])


@up.task
def check(emitted: dict, echoed: str) -> dict:
    return {"args": emitted["args"], "n": emitted["n"], "pwned": emitted["pwned"],
            "echoed": echoed}


@up.pipeline(name="case-command-basic")
def pipe(n: int = 3, who: str = "x; touch unipipe-pwned # $(touch unipipe-pwned) `touch unipipe-pwned`"):
    emitted = emit(n=n, who=who)
    echoed = echo(total=emitted["n"], label="a b  c", tags=["x", 1, True])
    return check(emitted, echoed)
