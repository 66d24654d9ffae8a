"""A pipeline whose user-controlled strings try to become code, templates or markup.

Every generated file must carry them as inert literals: parsing, importing or rendering the
output must never execute them (the MARKER file must never appear).
"""

from __future__ import annotations

import unipipe as up

MARKER = "/tmp/unipipe-hostile-marker"
INJECTIONS = [
    f'"); import os; os.system("touch {MARKER}")  #',
    f"'''; import os; os.system('touch {MARKER}'); '''",
    f'"""\nimport os\nos.system("touch {MARKER}")\n"""',
    "{{ ds }} {% for x in range(3) %}{{ x }}{% endfor %} {{ params }}",
    "\\x00 \\N{BULLET} \\u2028 \\",
    "line one\nline two\r\nthe end\u2028\u2029\x00\x1b[31mred",
    "${HOME} $(touch /tmp/unipipe-hostile-marker) `id`",
    "</script><script>alert(1)</script> | `` ** [x](javascript:1)",
    "emoji \U0001f600 and right-to-left \u202e gnp.exe",
]


@up.task
def echo(text: str, extra: list, table: dict) -> dict:
    """Docstring with \"\"\" quotes \\ and {{ ds }} and a ''' too."""
    return {"text": text, "extra": extra, "table": table}


def _brace(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


#: a command whose every argument tries to be code, shell or template (braces doubled: literal)
shell = up.command(
    "shell",
    command=["python3", "-c", "import sys; print(len(sys.argv))",
             *[_brace(i) for i in INJECTIONS if "\x00" not in i], "--text={text}"],
    env={"HOSTILE": INJECTIONS[6]},
)


@up.pipeline(
    name="hostile.strings-1",
    description=INJECTIONS[0] + "\n" + INJECTIONS[2],
    tags=["{{ ds }}", 'tag"; import os'],
    alerts=[up.Alert(on=("failure",), email=("ops+{{ds}}@example.com",))],
)
def hostile(text: str = INJECTIONS[1], other: str = INJECTIONS[3]):
    first = echo(text, INJECTIONS, {k: v for k, v in zip(["a", "b\"c", "{{ ds }}"], INJECTIONS)})
    return {"first": first, "literal": echo(other, [INJECTIONS[5]], {"k": INJECTIONS[6]}),
            "shell": shell(text=text)}
