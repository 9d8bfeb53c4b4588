"""The benchmark scripts run end to end (tiny sizes, CPU): a person's first run on a new
machine must not be the first time they run at all."""

from __future__ import annotations

import runpy
import sys

from conftest import REPO


def test_the_gpu_benchmark_runs_end_to_end_on_cpu(data_dir, cache_dir, monkeypatch, capsys):
    """One row on one device and the 2-rank torchrun row with evaluation on, as on a GPU
    machine with two GPUs. The script runs as ``__main__`` in this process (its torchrun
    row in processes of its own), which saves an interpreter's imports."""
    argv = [
        *(str(REPO / "scripts" / "benchmark_gpu.py"), "--device", "cpu"),
        *("--models", "vae", "--steps", "2", "--batch-size", "32", "--precision", "32"),
        *("--compile", "0", "--channels-last", "1", "--eval-samples", "64"),
        # the smoke runs' 512 images (debug=fast): their cached feature classifier
        *("--data-dir", str(data_dir), "--overrides", "dataset.limit=512", "model.width=8"),
        *("eval.min_accuracy=0", "eval.kid_subset_size=32", "eval.nll_images=32"),
        f"paths.cache_dir={cache_dir}",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts scripts/ first
    capsys.readouterr()
    runpy.run_path(argv[0], run_name="__main__")
    lines = capsys.readouterr().out.splitlines()  # the table, between the runs' own output
    assert lines[0].startswith("CPU, no GPU(s)") and "images/s" in lines[1]
    rows = [line.split() for line in lines[2:] if line.startswith("vae ")]
    assert [row[:5] for row in rows] == [["vae", "1", "32", "0", "1"], ["vae", "2", "32", "0", "1"]]
    assert not any("failed:" in row for row in rows), "\n".join(lines)
    assert float(rows[0][5].replace(",", "")) > 0 and rows[0][8] == "-"  # no evaluation
    assert float(rows[1][8]) > 0  # the 2-rank row evaluated
