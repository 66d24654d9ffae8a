"""Fault: a command hangs past its timeout; every attempt is stopped, its whole process group too.

The program starts a child (``sleep``-like, in the same process group) and records both process
ids in a file named for the run, then hangs. The next attempt first checks that the previous
attempt's processes are gone (waiting up to 3 s for the kill to land) and removes the file: if
any still runs, it prints ``leaked`` and exits 0, so the task would succeed and the case fail;
else it hangs too.
"""

import unipipe as up

HANG = (
    "import os, subprocess, sys, tempfile, time\n"
    "path = os.path.join(tempfile.gettempdir(), 'unipipe-hang-' + os.environ['UNIPIPE_RUN_ID'])\n"
    "def alive(pid):\n"
    "    try:\n"
    "        with open('/proc/%d/stat' % pid) as f:\n"
    "            return f.read().split(') ')[-1][:1] != 'Z'\n"
    "    except OSError:\n"
    "        return False\n"
    "if os.path.exists(path):\n"
    "    pids = [int(p) for p in open(path).read().split()]\n"
    "    deadline = time.time() + 3\n"
    "    while any(alive(p) for p in pids) and time.time() < deadline:\n"
    "        time.sleep(0.05)\n"
    "    os.unlink(path)\n"
    "    if any(alive(p) for p in pids):\n"
    "        print('leaked')\n"
    "        sys.exit(0)\n"
    "else:\n"
    "    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(float(%r))' % sys.argv[1]])\n"
    "    with open(path, 'w') as f:\n"
    "        f.write('%d %d' % (os.getpid(), child.pid))\n"
    "time.sleep(float(sys.argv[1]))\n"
    "print('woke up')\n"
)

hangs = up.command("hangs", command=["python3", "-c", HANG, "{seconds}"], timeout="5s",
                   retries=1)


@up.pipeline(name="case-command-timeout-hang")
def pipe(seconds: float = 60.0):
    return hangs(seconds=seconds)
