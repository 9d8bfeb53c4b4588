"""``gentrain-eval``: measure the sample quality and likelihood of a trained checkpoint.

examples:
  gentrain-eval outputs/runs/2026-11-22/vae-mnist-10-00-00  # a run dir or a .ckpt
  gentrain-eval RUN --num-samples 10000 --nll-samples 1000 --device cuda
  torchrun --nproc_per_node=2 -m gentrain.cli.evaluate RUN  # the samples shared by 2 ranks

Prints a table with the real-data floor beside FID and KID, and writes ``eval.json`` in
the run directory (or ``--output``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

from rich.logging import RichHandler
from rich.table import Table

from gentrain.cli.parser import command_parser
from gentrain.core.checkpoint import atomic_write_bytes, check_writable
from gentrain.core.config import DeviceConfig
from gentrain.core.errors import GentrainError
from gentrain.core.runtime import resolve_device
from gentrain.evaluation import Evaluator
from gentrain.tracking.console import console, print_error, print_line
from gentrain.training.data_parallel import World
from gentrain.training.data_parallel import setup as setup_data_parallel
from gentrain.training.restore import load_trained_run

AGAIN = "(--output), then run gentrain-eval again"
FLOORED = {"val/fid": "val/fid_floor", "val/kid": "val/kid_floor"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = command_parser("gentrain-eval", __doc__)
    parser.add_argument("checkpoint", help="run directory or .ckpt file")
    parser.add_argument("--num-samples", type=int, help="generated images (default: the run's)")
    parser.add_argument("--nll-samples", type=int, help="importance samples k of the VAE's NLL")
    parser.add_argument("--nll-images", type=int, help="test images for NLL and reconstruction")
    parser.add_argument("--features", choices=["classifier", "inception"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir", help="default: $GENTRAIN_DATA_DIR, else the run's")
    parser.add_argument("--cache-dir", help="feature classifiers (default: the run's)")
    parser.add_argument("--output", type=Path, help="JSON file (default: <run>/eval.json)")
    return parser.parse_args(argv)


def evaluate(args: argparse.Namespace) -> dict[str, float]:
    """One process, or every rank under torchrun (each its share; rank 0 reports)."""
    world = setup_data_parallel(resolve_device(DeviceConfig(name=args.device)))
    try:
        return _evaluate(args, world)
    finally:
        world.close()


def _evaluate(args: argparse.Namespace, world: World) -> dict[str, float]:
    run = load_trained_run(args.checkpoint, world.device, args.data_dir)
    output = args.output or run.run_dir / "eval.json"
    if world.is_main:  # an unwritable --output is found before the evaluation, not after
        check_writable(output, AGAIN)
    overrides = {
        "num_samples": args.num_samples,
        "nll_samples": args.nll_samples,
        "nll_images": args.nll_images,
        "features": args.features,
    }
    cfg = replace(run.config.eval, **{k: v for k, v in overrides.items() if v is not None})
    cfg.__post_init__()
    cache_dir = Path(args.cache_dir or run.config.paths.cache_dir).expanduser()
    evaluator = Evaluator(cfg, run.data, run.device, cache_dir, world)
    metrics = evaluator(run.model)
    if not world.is_main:
        return metrics

    table = Table(
        title=f"{run.config.model.name} on {run.data.name}, step {run.step} "
        f"({int(metrics['eval/num_generated'])} generated vs "
        f"{int(metrics['eval/num_real'])} real test images)"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("real-data floor", justify="right")
    for key, value in metrics.items():
        if key.endswith("_floor"):
            continue
        floor = metrics.get(FLOORED.get(key, ""), None)
        table.add_row(key, f"{value:.6g}", "" if floor is None else f"{floor:.6g}")
    console.print(table)

    payload = {"checkpoint": str(run.path), "step": run.step, "metrics": metrics}
    atomic_write_bytes(output, (json.dumps(payload, indent=2) + "\n").encode(), AGAIN)
    print_line(f"written to {output}")
    return metrics


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    try:
        evaluate(parse_args(argv))
    except GentrainError as exc:
        print_error(exc)
        sys.exit(2)


if __name__ == "__main__":
    main()
