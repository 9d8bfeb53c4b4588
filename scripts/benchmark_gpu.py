"""The first run on a GPU machine: one table of every model's speed switches, in minutes.

    python scripts/benchmark_gpu.py                    # all GPUs here; about 5-8 minutes
    python scripts/benchmark_gpu.py --device cpu --models vae --steps 2 --compile 0 \
        --overrides dataset.limit=256 eval.min_accuracy=0  # end to end on CPU, in seconds

Each model (VAE, GAN, VAE-GAN, defaults) trains ``--steps`` steps on one device at
precision 32, bf16 and 16-mixed, with and without ``torch.compile`` and channels_last:
images/s and peak GPU memory per row. Where two or more GPUs exist (or on ``--device
cpu``), one more row per model: a 2-rank torchrun run with evaluation on, with the
evaluation's seconds, which is what a user scaling out runs. Rows that fail (a precision
the GPU lacks, a compiler missing) print their error and the table goes on.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # beside benchmark_throughput.py

import torch  # noqa: E402
from benchmark_throughput import MNIST_TRAIN_IMAGES, measure  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vae", "gan", "vaegan"])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--precision", nargs="+", default=["32", "bf16", "16-mixed"])
    parser.add_argument("--compile", type=int, nargs="+", default=[0, 1], choices=[0, 1])
    parser.add_argument("--channels-last", type=int, nargs="+", default=[0, 1], choices=[0, 1])
    parser.add_argument("--eval-samples", type=int, default=2000, help="for the torchrun rows")
    parser.add_argument("--data-dir", default=os.environ.get("GENTRAIN_DATA_DIR", "./data"))
    parser.add_argument("--overrides", nargs="*", default=[], help="gentrain overrides, each row")
    args = parser.parse_args()

    gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    if args.device == "cuda" and not gpus:
        raise SystemExit("no CUDA device here; run with --device cpu for the CPU smoke run")
    name = torch.cuda.get_device_name(0) if gpus else "CPU"
    print(f"{name}, {gpus or 'no'} GPU(s), torch {torch.__version__}, {args.steps} steps a row")
    print(
        f"{'model':8} {'ranks':>5} {'precision':>9} {'compile':>7} {'nhwc':>4} "
        f"{'images/s':>9} {'s/epoch':>8} {'peak GiB':>8} {'eval s':>7} {'wall s':>7}"
    )
    common = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "device": args.device,
        "data_dir": args.data_dir,
    }
    rows = [
        (model, 1, precision, compiled, nhwc, False)
        for model, precision, compiled, nhwc in itertools.product(
            args.models, args.precision, args.compile, args.channels_last
        )
    ]
    if gpus >= 2 or args.device == "cpu":
        rows += [(model, 2, "32", 0, 1, True) for model in args.models]
    for model, ranks, precision, compiled, nhwc, evaluate in rows:
        head = f"{model:8} {ranks:>5} {precision:>9} {compiled:>7} {nhwc:>4}"
        extra = (*args.overrides, *([f"eval.num_samples={args.eval_samples}"] if evaluate else []))
        try:
            m = measure(
                model,
                **common,
                nproc=ranks,
                precision=precision,
                compiled=bool(compiled),
                nhwc=bool(nhwc),
                threads=1 if args.device == "cpu" and ranks > 1 else None,
                evaluate=evaluate,
                extra=extra,
            )
        except (Exception, SystemExit) as exc:  # one row's failure is a finding, not the end
            print(f"{head} failed: {str(exc).strip().splitlines()[-1][:120]}", flush=True)
            continue
        speed = m["train/images_per_sec"]
        peak = f"{m['peak_memory_gib']:.2f}" if "peak_memory_gib" in m else "-"
        seconds = f"{m['eval/seconds']:.1f}" if "eval/seconds" in m else "-"
        print(
            f"{head} {speed:>9,.0f} {MNIST_TRAIN_IMAGES / speed:>8.1f} {peak:>8} "
            f"{seconds:>7} {m['wall_seconds']:>7.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
