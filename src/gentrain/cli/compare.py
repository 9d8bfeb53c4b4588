"""``gentrain-compare``: train VAE, GAN, VAE-GAN and a VAE turned into a VAE-GAN on the
same data, with the same budget, seeds and evaluation, and compare them in one report.

examples:
  gentrain-compare                                  # MNIST, 3 epochs a model, seeds 0,1,2
  gentrain-compare --seconds 300 dataset=fashion_mnist
  gentrain-compare --arms conditional               # cVAE, cGAN (projection, ACGAN), cVAE-GAN
  gentrain-compare --out DIR                        # again: finished runs are kept, the rest resume
  gentrain-compare --report-only --out DIR          # rebuild the report from the run directories

Each run is an ordinary ``gentrain`` command (printed, and listed in the report), with its
own directory under ``DIR/runs/<arm>/seed_<n>``; the report (``report.md``, ``report.html``,
grids, ``fid_vs_time.png``, ``summary.json``, ``tb/``) is built from those directories'
``metrics.json`` and ``history.jsonl`` only. The arms, and the sets of arms ``--arms``
can name, are in ``configs/compare.yaml``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from gentrain.cli.overrides import check_overrides
from gentrain.cli.parser import command_parser
from gentrain.core.config import RunConfig
from gentrain.core.errors import ConfigError, GentrainError
from gentrain.experiments.comparison.arms import (
    Arm,
    PlannedRun,
    display,
    load_arms,
    plan_runs,
    read_spec,
    spec_path,
)
from gentrain.experiments.comparison.checks import check_runs, prepare_features
from gentrain.experiments.comparison.runner import execute
from gentrain.experiments.comparison.state import STATE_FILE, CompareState
from gentrain.experiments.report import build_report
from gentrain.tracking.console import console, print_error, print_line
from gentrain.tracking.hparams_table import write_group_hparams


def int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 0,1,2, got {text!r}") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = command_parser(
        "gentrain-compare",
        __doc__,
        epilog="Any other argument is a gentrain override applied to every run, e.g.\n"
        "dataset=fashion_mnist eval.num_samples=5000.",
    )
    parser.add_argument("overrides", nargs="*", help="gentrain overrides for every run")
    parser.add_argument("--out", type=Path, help="output dir (default outputs/compare/<time>)")
    parser.add_argument(
        "--seeds", type=int_list, default=[0, 1, 2], help="comma-separated (default 0,1,2)"
    )
    parser.add_argument(
        "--epochs", type=int, help="training epochs per run (default 3 without --seconds)"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        help="training-time budget per run (evaluation not counted); with --epochs, "
        "whichever ends first",
    )
    parser.add_argument(
        "--arms",
        type=lambda text: text.split(","),
        help="comma-separated arms or sets of arms (default: the set 'default'; "
        "'conditional': the class-conditional models)",
    )
    parser.add_argument("--spec", type=Path, help="arms file (default configs/compare.yaml)")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report only")
    parser.add_argument("--dry-run", action="store_true", help="check and print the commands")
    return parser.parse_args(argv)


def budget_overrides(epochs: int | None, seconds: float | None) -> list[str]:
    """Each run's length: ``epochs`` (3 when neither is given), ``seconds`` of training,
    or both, whichever ends first."""
    if epochs is not None and epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {epochs}")
    if seconds is not None and not seconds > 0:
        raise ConfigError(f"--seconds must be > 0, got {seconds:g}")
    if seconds is None:
        return [f"trainer.max_epochs={epochs or 3}"]
    return [f"trainer.max_epochs={epochs or 100000}", f"trainer.max_seconds={seconds:g}"]


def whole_command(
    state: CompareState, out: Path, epochs: int | None, seconds: float | None, spec: Path | None
) -> list[str]:
    """``gentrain-compare`` arguments that make (or continue) everything in ``out``."""
    args = ["--out", str(out), "--seeds", ",".join(str(s) for s in state.data["seeds"])]
    args += ["--arms", ",".join(a["name"] for a in state.data["arms"])]
    args += ["--seconds", f"{seconds:g}"] if seconds is not None else []
    args += ["--epochs", str(epochs or 3)] if seconds is None or epochs is not None else []
    if spec is not None:
        args += ["--spec", str(spec)]
    return [*args, *state.data["overrides"]]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = args.out or Path("outputs/compare") / time.strftime("%Y-%m-%d_%H-%M-%S")
    try:
        if args.report_only:
            if not (out / STATE_FILE).is_file():
                raise ConfigError(f"--report-only: no {STATE_FILE} in {out}; pass --out DIR")
            print_line(f"report: {build_report(out)['markdown']}")
            return
        comparison = plan_comparison(args, out)  # every config checked: nothing trained yet
        if args.dry_run:
            for run in comparison.runs:
                source = f"{run.arm.init_from}/seed_{run.seed}" if run.arm.init_from else None
                extra = [f"init_from=<{source}>"] if source else []
                console.print(display([*run.overrides, *extra]), highlight=False, soft_wrap=True)
            return
        problems = run_comparison(args, out, comparison)
        first_metric = comparison.first.optimized_metric
        write_group_hparams(out, [run.run_dir for run in comparison.runs], first_metric)
        paths = build_report(out)
    except GentrainError as exc:
        print_error(exc)
        sys.exit(2)
    print_line(f"report: {paths['markdown']} (and .html); TensorBoard: tensorboard --logdir {out}")
    if problems:
        console.print(f"[bold red]{problems} run(s) failed or were skipped[/bold red]")
        sys.exit(1)


@dataclass
class Comparison:
    """What ``plan_comparison`` settled: the runs, a validated config, the merged state."""

    arms: list[Arm]
    runs: list[PlannedRun]
    first: RunConfig  # the first arm's config: dataset and evaluation of every run
    state: CompareState
    plan: tuple  # CompareState.merge_plan's arguments


def plan_comparison(args: argparse.Namespace, out: Path) -> Comparison:
    """The runs of the spec's arms and seeds, each config validated, and the directory's
    plan merged (refusing other settings) before anything runs."""
    spec = args.spec or spec_path()
    arms = load_arms(spec, args.arms)
    for override in args.overrides:
        if override.split("=")[0].lstrip("+~") in ("seed", "hydra.run.dir", "init_from"):
            raise ConfigError(f"{override}: gentrain-compare sets this itself (see --seeds)")
    check_overrides(args.overrides, spec_path().parent)  # before naming any arm
    overrides = [*budget_overrides(args.epochs, args.seconds), *args.overrides]
    runs = plan_runs(arms, args.seeds, overrides, out)
    first = check_runs(runs, time_budget=args.seconds is not None)
    state = CompareState(out)
    budget = overrides[: len(overrides) - len(args.overrides)]
    order = list(read_spec(spec)[0])  # every arm of the file, in its order
    plan = (arms, order, args.seeds, budget, args.overrides)
    state.merge_plan(*plan)
    return Comparison(arms, runs, first, state, plan)


def run_comparison(args: argparse.Namespace, out: Path, comparison: Comparison) -> int:
    """Train what is not done, under the directory's lock; return how many runs failed."""
    state = comparison.state
    with state.locked():  # reads compare.json again: another process may just have ended
        state.merge_plan(*comparison.plan)
        state.data["argv"] = whole_command(state, out, args.epochs, args.seconds, args.spec)
        state.save()
        prepare_features(comparison.first)
        labels = ", ".join(a.label for a in comparison.arms)
        console.print(f"comparing {labels} in {out}", highlight=False)
        try:
            return execute(comparison.runs, state)
        except KeyboardInterrupt:
            console.print(
                f"[yellow]stopped; finished runs are kept. To continue, rerun the same "
                f"command with --out {out}[/yellow]",
                highlight=False,
                soft_wrap=True,
            )
            sys.exit(130)


if __name__ == "__main__":
    main()
