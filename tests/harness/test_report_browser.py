"""The HTML report, opened in a real headless Chromium: the DOM and the pixels say what happened.

Chromium comes from the system packages (.ci/install-system-packages.sh); this test is never skipped.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib

import pytest

from unipipe.harness.cases import load_case
from unipipe.harness.execute import run_suite
from unipipe.harness.report import ATTEMPT_COLOUR, COLOUR, write_reports

from .conftest import CASES

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("no Chromium: run .ci/install-system-packages.sh (apt-get install chromium)")


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def decode_png(data: bytes) -> tuple[int, int, list[bytes], int]:
    """(width, height, rows, bytes per pixel) of an 8-bit RGB/RGBA non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and ctype in (2, 6) and interlace == 0
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, rows, bpp


def _count(rows: list[bytes], bpp: int, colour: tuple[int, int, int]) -> int:
    target = bytes(colour)
    return sum(1 for row in rows for i in range(0, len(row), bpp) if row[i:i + 3] == target)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    cases = [load_case(CASES / "retry_fail_twice"), load_case(CASES / "map_shard_retry")]
    suite = run_suite(cases, ["local"], out / "work")
    assert suite.ok
    return write_reports(suite, out)["html"]


def test_report_renders_matrix_and_attempt_timelines_in_chromium(report, tmp_path):
    chromium = _chromium()
    url = report.resolve().as_uri()
    dom = subprocess.run([chromium, *FLAGS, f"--user-data-dir={tmp_path / 'p1'}", "--dump-dom",
                          url], capture_output=True, text=True, timeout=120).stdout
    # retry_fail_twice: 2 failed attempts then a success; map_shard_retry: shards, then four
    # elements of which shard 1 failed once.
    assert len(re.findall(r'class="attempt failed"', dom)) == 3
    assert len(re.findall(r'class="attempt success"', dom)) == 1 + 1 + 4
    assert len(re.findall(r'<td class="status pass"', dom)) == 2
    assert "retry_fail_twice" in dom and "waited 0." in dom

    shot = tmp_path / "report.png"
    subprocess.run([chromium, *FLAGS, f"--user-data-dir={tmp_path / 'p2'}",
                    f"--screenshot={shot}", "--window-size=1000,2400", url],
                   capture_output=True, timeout=120, check=True)
    width, height, rows, bpp = decode_png(shot.read_bytes())
    assert (width, height) == (1000, 2400)
    # the pixels a person sees: passed cells, failed and successful attempt bars
    assert _count(rows, bpp, _rgb(COLOUR["pass"])) > 200
    assert _count(rows, bpp, _rgb(ATTEMPT_COLOUR["failed"])) > 20
    assert _count(rows, bpp, _rgb(ATTEMPT_COLOUR["success"])) > 40
