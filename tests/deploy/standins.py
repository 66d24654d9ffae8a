"""Local stand-ins for the clouds, started as real server processes on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer in {timeout}s")


class Server:
    def __init__(self, args: list[str], url: str, log: Path, env: dict[str, str] | None = None,
                 ready_path: str = "/") -> None:
        self.url = url
        self.log = log
        self._fh = open(log, "wb")
        self.proc = subprocess.Popen(args, stdout=self._fh, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})}, start_new_session=True)
        wait_http(url + ready_path, self.proc)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._fh.close()


def moto_s3(tmp: Path) -> Server:
    port = free_port()
    return Server([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                  f"http://127.0.0.1:{port}", tmp / "moto.log", ready_path="/moto-api/")


def gcs_emulator(tmp: Path) -> Server:
    port = free_port()
    return Server([str(BIN / "gcp-storage-emulator"), "start", "--host", "127.0.0.1", "--port", str(port),
                   "--in-memory"], f"http://127.0.0.1:{port}", tmp / "gcs.log")
