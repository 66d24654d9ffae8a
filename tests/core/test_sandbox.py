"""unipipe.sandbox: the environment a sandboxed attempt gets (the isolated lanes' tests run the
real engines; these check the pieces they rely on)."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys

from unipipe import sandbox


def test_the_image_path_leaves_out_the_users_tool_folders_and_keeps_the_interpreters(tmp_path):
    account_home = pwd.getpwuid(os.getuid()).pw_dir
    lane_home = tmp_path / "lane-home"
    interpreter = os.path.dirname(sys.executable)
    path = os.pathsep.join([f"{account_home}/.cargo/bin", f"{lane_home}/.local/bin", interpreter,
                            "/usr/local/bin", "/usr/bin", "/bin"])
    box = sandbox.make(tmp_path / "box", {})
    env = box.env({"PATH": path, "HOME": str(lane_home)}, image_path=True)
    entries = env["PATH"].split(os.pathsep)
    assert entries == [str(box.python.parent), interpreter, "/usr/local/bin", "/usr/bin", "/bin"]
    # without image_path (the default) PATH is kept as it was, after the sandbox's own bin
    assert box.env({"PATH": path})["PATH"] == os.pathsep.join([str(box.python.parent), path])


def test_a_sandbox_with_the_image_path_still_runs_its_python_and_pip(tmp_path):
    box = sandbox.make(tmp_path / "box", {})
    env = box.env(dict(os.environ), image_path=True)
    env["PIP_NO_WARN_CONFLICTS"] = "false"  # as the KFP executor's isolated launches set it
    out = subprocess.run(["python3", "-c", "import sys, os; print(sys.flags.no_site, os.getcwd())"],
                         env=env, cwd=box.work, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", str(box.work)]
    # pip resolves as before: an installed requirement is satisfied, a missing one fails
    ok = subprocess.run(["python3", "-m", "pip", "install", "--quiet", "--no-index", "fsspec"],
                        env=env, cwd=box.work, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    missing = subprocess.run(["python3", "-m", "pip", "install", "--quiet", "--no-index",
                              "unipipe-no-such-package"], env=env, cwd=box.work,
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "unipipe-no-such-package" in missing.stderr
