"""Fault: a command exits 1 on its first two attempts, then succeeds; retried as a Python task is.

The program reads its attempt number from ``UNIPIPE_ATTEMPT`` (the shim sets it, as
``up.current().attempt`` for a Python task) and writes why it fails to stderr.
"""

import unipipe as up

FLAKY = (
    "import os, sys\n"
    "attempt = int(os.environ['UNIPIPE_ATTEMPT'])\n"
    "if attempt <= int(sys.argv[1]):\n"
    "    sys.stderr.write('attempt %d failed on purpose' % attempt)\n"
    "    sys.exit(1)\n"
    "print('ok after %d' % attempt)\n"
)

flaky = up.command("flaky", command=["python3", "-c", FLAKY, "{fail_times}"],
                   retry=up.Retry(max_retries=3, delay="0.5s"))


@up.pipeline(name="case-command-fail-retry")
def pipe(fail_times: int = 2):
    return flaky(fail_times=fail_times)
