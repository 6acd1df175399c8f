"""The benchmarks that print the index and stall figures still run against the current code.

A benchmark is not timed here (figures are for bench/, never pass/fail in a test); this only keeps
them from rotting when an API they call changes: bench_scale's stall measurement called the publish
step's code with a target that no longer had what publishing reads, and nothing noticed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_bench(*args: str) -> str:
    r = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode in (0, 1), (r.returncode, r.stdout, r.stderr)  # 1: a goal not met here, still figures
    return r.stdout


@pytest.mark.timeout(300)
def test_bench_index_prints_its_figures(tmp_path):
    out = run_bench("bench/bench_index.py", "--images", "30", "--branches", "3", "--tree", str(tmp_path / "tree"))
    assert "images: 30 on 3 branches" in out
    for figure in ("regeneration cold", "regeneration after a restart", "regeneration warm", "sha lookup"):
        assert figure in out, out


@pytest.mark.timeout(300)
def test_bench_scale_index_and_stall_print_their_figures(tmp_path):
    out = run_bench("bench/bench_scale.py", "--only", "index,stall", "--images", "30", "--image-mb", "1",
                    "--tree", str(tmp_path / "tree"))
    assert "index regeneration, 30 images, from nothing, new process, no saved cache:" in out
    assert "the per-image cache of an earlier process" in out
    assert "(31 listed after it" in out  # the large image was published and indexed
    assert "reactor stall while the tree service starts from nothing" in out
