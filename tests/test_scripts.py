"""The benchmark scripts run end to end (tiny sizes, CPU): a person's first run on a new
machine must not be the first time they run at all."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO


def test_the_gpu_benchmark_runs_end_to_end_on_cpu(data_dir, cache_dir):
    """One row on one device and the 2-rank torchrun row with evaluation on, as on a GPU
    machine with two GPUs."""
    command = [
        *(sys.executable, str(REPO / "scripts" / "benchmark_gpu.py"), "--device", "cpu"),
        *("--models", "vae", "--steps", "2", "--batch-size", "32", "--precision", "32"),
        *("--compile", "0"),
        *("--channels-last", "1", "--eval-samples", "64", "--data-dir", str(data_dir)),
        *("--overrides", "dataset.limit=256", "model.width=8", "eval.min_accuracy=0"),
        *("eval.kid_subset_size=32", "eval.nll_images=32", f"paths.cache_dir={cache_dir}"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()  # the table, between the runs' own output
    assert lines[0].startswith("CPU, no GPU(s)") and "images/s" in lines[1]
    rows = [line.split() for line in lines[2:] if line.startswith("vae ")]
    assert [row[:5] for row in rows] == [["vae", "1", "32", "0", "1"], ["vae", "2", "32", "0", "1"]]
    assert not any("failed:" in row for row in rows), done.stdout
    assert float(rows[0][5].replace(",", "")) > 0 and rows[0][8] == "-"  # no evaluation
    assert float(rows[1][8]) > 0  # the 2-rank row evaluated
