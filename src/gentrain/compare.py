"""``gentrain-compare``: train VAE, GAN, VAE-GAN and a VAE turned into a VAE-GAN on the
same data, with the same budget, seeds and evaluation, and compare them in one report.

examples:
  gentrain-compare                                  # MNIST, 3 epochs a model, seeds 0,1,2
  gentrain-compare --seconds 300 dataset=fashion_mnist
  gentrain-compare --out DIR                        # again: finished runs are kept, the rest resume
  gentrain-compare --report-only --out DIR          # rebuild the report from the run directories

Each run is an ordinary ``gentrain`` command (printed, and listed in the report), with its
own directory under ``DIR/runs/<arm>/seed_<n>``; the report (``report.md``, ``report.html``,
grids, ``fid_vs_time.png``, ``summary.json``, ``tb/``) is built from those directories'
``metrics.json`` and ``history.jsonl`` only. The arms are in ``configs/compare.yaml``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gentrain.checkpoint import atomic_write_bytes
from gentrain.cli_help import command_parser
from gentrain.config import RunConfig
from gentrain.console import console, print_error, print_line
from gentrain.errors import ConfigError, GentrainError
from gentrain.overrides import check_overrides, compose_without, composition_error

STATE_FILE = "compare.json"  # the plan and each run's status: what a rerun continues from


@dataclass
class Arm:
    name: str
    label: str
    overrides: list[str]
    init_from: str | None = None


@dataclass
class Run:
    arm: Arm
    seed: int
    run_dir: Path
    overrides: list[str]  # everything but how it starts (init_from / resume)

    @property
    def key(self) -> str:
        return f"{self.arm.name}/seed_{self.seed}"

    def command(self, source: Run | None, resume: bool) -> list[str]:
        """The ``gentrain`` arguments of this run: fresh, warm-started, or resumed."""
        args = [*self.overrides, f"hydra.run.dir={self.run_dir}"]
        if resume:
            args.append(f"trainer.resume={self.run_dir / 'checkpoints' / 'last.ckpt'}")
        elif source is not None:
            args.append(f"init_from={source.run_dir}")
        return args

    def reproduce(self, source: Run | None) -> str:
        """The command that trains this run again from scratch, into a new directory (the
        comparison's own is taken: gentrain refuses to start a new run over a checkpoint)."""
        args = list(self.overrides)
        if source is not None:
            args.append(f"init_from={source.run_dir}")
        return display(args)


def spec_path() -> Path:
    from gentrain.train import config_dir

    return config_dir() / "compare.yaml"


def load_arms(path: Path, names: list[str] | None) -> list[Arm]:
    """The arms of ``path`` (all, or ``names`` in that file's order), sources first."""
    if not path.is_file():
        raise ConfigError(f"--spec {path}: no such file")
    spec = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if not isinstance(spec, dict) or not isinstance(spec.get("arms"), dict) or not spec["arms"]:
        raise ConfigError(f"{path}: expected a mapping `arms: {{name: {{label, overrides}}}}`")
    arms = []
    for name, body in spec["arms"].items():
        if not isinstance(body, dict) or not isinstance(body.get("overrides"), list):
            raise ConfigError(f"{path}: arm {name!r} needs a list `overrides`")
        unknown = set(body) - {"label", "overrides", "init_from"}
        if unknown:
            raise ConfigError(
                f"{path}: arm {name!r} has unknown key(s) {sorted(unknown)}; "
                "valid: label, overrides, init_from"
            )
        arms.append(
            Arm(
                name=str(name),
                label=str(body.get("label", name)),
                overrides=[str(o) for o in body["overrides"]],
                init_from=body.get("init_from"),
            )
        )
    by_name = {a.name: a for a in arms}
    if names:
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ConfigError(
                f"unknown arm(s) {', '.join(unknown)}; {path} has: {', '.join(by_name)}"
            )
        wanted = set(names)
        for arm in arms:  # a chosen warm-started arm brings its source along
            if arm.name in wanted and arm.init_from:
                wanted.add(arm.init_from)
        arms = [a for a in arms if a.name in wanted]
    seen: set[str] = set()
    for arm in arms:
        if arm.init_from is not None and arm.init_from not in seen:
            raise ConfigError(
                f"{path}: arm {arm.name!r} starts from {arm.init_from!r}, which must be an arm "
                f"listed before it; arms: {', '.join(by_name)}"
            )
        seen.add(arm.name)
    return arms


def plan_runs(arms: list[Arm], seeds: list[int], overrides: list[str], out: Path) -> list[Run]:
    """Every (seed, arm) run, seed by seed so a first full comparison comes early."""
    runs = []
    for seed in seeds:
        for arm in arms:
            run_dir = (out / "runs" / arm.name / f"seed_{seed}").resolve()
            args = [*arm.overrides, *overrides, f"seed={seed}"]
            runs.append(Run(arm, seed, run_dir, args))
    return runs


def check_runs(runs: list[Run], time_budget: bool = False) -> RunConfig:
    """Compose and validate every run's config, and check each warm start's shapes, before
    anything trains: a typo or a mismatched arm fails in seconds, not after an hour."""
    import torch
    from hydra import compose, initialize_config_dir

    from gentrain.config import validate_config
    from gentrain.data import build_dataset
    from gentrain.models import build_model
    from gentrain.train import config_dir
    from gentrain.warm_start import plan_warm_start

    configs = {}
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        for run in runs:
            if run.seed != runs[0].seed:
                break  # the other seeds' configs differ only in their seed
            overrides = [o for o in run.overrides if not o.startswith("hydra.")]
            overrides.append(f"paths.output_dir={run.run_dir}")  # Hydra's, outside an app
            try:
                check_overrides(overrides, config_dir())  # did-you-mean for group options
                cfg = compose(config_name="train", overrides=overrides)
            except Exception as exc:  # Hydra's own messages, made one line
                error = exc
                if not isinstance(exc, ConfigError):
                    error = composition_error(exc, compose_without(exc, overrides))
                raise ConfigError(f"arm {run.arm.name}: {error}") from None
            try:
                configs[run.arm.name] = validate_config(cfg)
            except ConfigError as exc:
                raise ConfigError(f"arm {run.arm.name}: {exc}") from None
    cosine = [name for name, c in configs.items() if c.optimizer.scheduler == "cosine"]
    if time_budget and cosine:
        raise ConfigError(
            f"arm(s) {', '.join(cosine)} use optimizer.scheduler=cosine, which decays over a "
            "known number of steps; under --seconds that number is unknown and the rate would "
            "not decay. Use --epochs, or add optimizer.scheduler=constant"
        )
    latents = {name: c.model.latent_dim for name, c in configs.items()}
    if len(set(latents.values())) > 1:
        console.print(
            "[yellow]warning:[/yellow] the arms' latent sizes differ "
            f"({latents}); their sample grids cannot come from the same noise",
            highlight=False,
        )
    first = next(iter(configs.values()))
    warm = [r for r in runs if r.arm.init_from and r.arm.name in configs]
    if not warm:
        return first
    data = build_dataset(first.dataset)
    for run in warm:
        source_name = run.arm.init_from
        source = build_model(configs[source_name].model, data.image_shape)
        target = build_model(configs[run.arm.name].model, data.image_shape)
        with torch.no_grad():
            plan_warm_start(
                target,
                type(source).__name__,
                source.state_dict(),
                f"<arm {source_name}>",
                asdict(configs[source_name].model),
            )
    return first


def prepare_features(cfg: RunConfig) -> None:
    """Train (or load) the evaluation's feature classifier now, once, so that no run's wall
    time includes it."""
    if not cfg.eval.enabled or cfg.eval.features != "classifier":
        return
    from gentrain.data import build_dataset
    from gentrain.evaluation.classifier import load_or_train_classifier
    from gentrain.train import resolve_device

    load_or_train_classifier(
        build_dataset(cfg.dataset),
        Path(cfg.paths.cache_dir),
        resolve_device(cfg.device),
        cfg.eval.min_accuracy,
    )


class CompareState:
    """``compare.json``: the plan, each run's command and status, rewritten atomically.

    A directory accumulates one comparison: later calls may add seeds or arms, but not
    change the budget, the overrides or an arm's definition (the numbers would not be
    comparable), and only one ``gentrain-compare`` works in it at a time.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = out / STATE_FILE
        self.data: dict[str, Any] = self._read()

    def _read(self) -> dict[str, Any]:
        return json.loads(self.path.read_text()) if self.path.is_file() else {"runs": {}}

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold ``DIR/.lock`` while training: a second process would resume the first
        one's runs and overwrite its state."""
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; one process at a time by hand
            yield
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with (self.out / ".lock").open("a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise ConfigError(
                    f"{self.out} is in use by another gentrain-compare ({holder}); wait for "
                    "it to finish, or use another --out"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}\n")
            handle.flush()
            self.data = self._read()  # what the last holder left, not what we read before
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def merge_plan(
        self,
        arms: list[Arm],
        order: list[str],
        seeds: list[int],
        budget: list[str],
        overrides: list[str],
    ) -> None:
        """Add this call's arms and seeds to the directory's plan; refuse other settings."""
        for key, now in (("budget", budget), ("overrides", overrides)):
            if key in self.data and self.data[key] != now:
                raise ConfigError(
                    f"{self.out} holds runs made with {key} {self.data[key]}, not {now}: their "
                    "numbers would not be comparable. Use another --out, or the same settings "
                    "(more --seeds or --arms are fine)"
                )
        known = {a["name"]: a for a in self.data.get("arms", [])}
        for arm in arms:
            before = known.get(arm.name)
            if before is None:
                continue
            if (
                before.get("overrides", arm.overrides) != arm.overrides
                or before.get("init_from") != arm.init_from
            ):
                raise ConfigError(
                    f"arm {arm.name!r} was {before.get('overrides')} "
                    f"(init_from {before.get('init_from')}) when {self.out} was made and is "
                    f"{arm.overrides} (init_from {arm.init_from}) now: their numbers would not "
                    "be comparable. Use another --out, or restore the arm's definition"
                )
        merged = {**known, **{a.name: _arm_record(a) for a in arms}}
        rank = {name: i for i, name in enumerate(order)}
        names = sorted(merged, key=lambda n: rank.get(n, len(rank)))
        self.data.update(
            arms=[merged[n] for n in names],
            seeds=sorted(set(self.data.get("seeds", [])) | set(seeds)),
            budget=budget,
            overrides=overrides,
        )

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, (json.dumps(self.data, indent=2) + "\n").encode())

    def run(self, key: str) -> dict[str, Any]:
        return self.data["runs"].setdefault(key, {"status": "pending"})


def _arm_record(arm: Arm) -> dict[str, Any]:
    return {
        "name": arm.name,
        "label": arm.label,
        "init_from": arm.init_from,
        "overrides": arm.overrides,
    }


def display(args: list[str]) -> str:
    return "gentrain " + shlex.join(args)


class ChildRun:
    """One ``gentrain`` process that stops cleanly when we are asked to stop.

    Ctrl-C and SIGTERM here reach the child once (SIGHUP as SIGTERM), and we wait while it
    saves its checkpoint; a second Ctrl-C stops it at once. The child has its own session,
    so a terminal's Ctrl-C is not delivered twice (which the trainer reads as "stop now").
    The handlers are in place before the child starts: no signal falls in between.
    """

    HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.stopped_by: str | None = None  # the first signal we forwarded
        self._child: subprocess.Popen | None = None
        self._pending: list[int] = []

    def _forward(self, signum: int, frame: Any) -> None:
        self.stopped_by = self.stopped_by or signal.Signals(signum).name
        sent = signal.SIGTERM if signum == signal.SIGHUP else signum
        if self._child is None:
            self._pending.append(sent)
        else:
            self._child.send_signal(sent)

    def run(self) -> int:
        from gentrain.train import PARENT_PID_ENV

        previous = {s: signal.signal(s, self._forward) for s in self.HANDLED}
        try:
            # The child stops (saving) if we die: see gentrain.train.stop_with_parent.
            env = {**os.environ, PARENT_PID_ENV: str(os.getpid())}
            self._child = subprocess.Popen(self.command, start_new_session=True, env=env)
            for sent in self._pending:
                self._child.send_signal(sent)
            return self._child.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def execute(runs: list[Run], state: CompareState) -> int:
    """Run what is not done yet, in order; return how many runs failed or were skipped."""
    by_key = {r.key: r for r in runs}
    problems = 0
    root = state.out.resolve()
    for index, run in enumerate(runs, start=1):
        record = state.run(run.key)
        record.update(
            arm=run.arm.name,
            label=run.arm.label,
            seed=run.seed,
            dir=str(run.run_dir.relative_to(root)),  # relative: the directory may move
        )
        source = by_key.get(f"{run.arm.init_from}/seed_{run.seed}") if run.arm.init_from else None
        record["source"] = source.key if source else None
        if record["status"] != "done" or "command" not in record:
            record["command"] = run.reproduce(source)
        if record["status"] == "done" and (run.run_dir / "metrics.json").is_file():
            console.print(f"[dim][{index}/{len(runs)}] {run.key}: done, kept[/dim]")
            continue
        if source is not None and state.run(source.key)["status"] != "done":
            record.update(status="skipped", error=f"its source run {source.key} did not finish")
            problems += 1
            state.save()
            continue
        resume = (run.run_dir / "checkpoints" / "last.ckpt").is_file()
        args = run.command(source, resume)
        console.rule(f"[{index}/{len(runs)}] {run.arm.label}, seed {run.seed}")
        console.print(display(args), highlight=False, soft_wrap=True)
        record.update(status="running", started=time.time())
        state.save()
        child = ChildRun([sys.executable, "-m", "gentrain", *args])
        code = child.run()
        if code == 0:
            record.update(status="done", returncode=0, error=None)
        else:
            record.update(status="failed", returncode=code, error=f"exit code {code}")
            problems += 1
        state.save()
        # The user stopped it (whatever the child managed to exit with: 130/143 after a clean
        # save, -2/-15 if the signal came during start-up or a second Ctrl-C): stop here.
        if child.stopped_by or code in (130, 143, -signal.SIGINT, -signal.SIGTERM):
            raise KeyboardInterrupt
    return problems


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
    parser.add_argument("--epochs", type=int, default=3, help="training epochs per run")
    parser.add_argument(
        "--seconds",
        type=float,
        help="training-time budget per run instead of epochs (evaluation not counted)",
    )
    parser.add_argument(
        "--arms", type=lambda text: text.split(","), help="comma-separated subset of the arms"
    )
    parser.add_argument("--spec", type=Path, help="arms file (default configs/compare.yaml)")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report only")
    parser.add_argument("--dry-run", action="store_true", help="check and print the commands")
    return parser.parse_args(argv)


def budget_overrides(epochs: int, seconds: float | None) -> list[str]:
    if epochs < 1 or (seconds is not None and seconds <= 0):
        raise ConfigError("--epochs must be >= 1 and --seconds > 0")
    if seconds is None:
        return [f"trainer.max_epochs={epochs}"]
    return ["trainer.max_epochs=100000", f"trainer.max_seconds={seconds:g}"]


def whole_command(
    state: CompareState, out: Path, epochs: int, seconds: float | None, spec: Path | None
) -> list[str]:
    """``gentrain-compare`` arguments that make (or continue) everything in ``out``."""
    args = ["--out", str(out), "--seeds", ",".join(str(s) for s in state.data["seeds"])]
    args += ["--arms", ",".join(a["name"] for a in state.data["arms"])]
    args += ["--seconds", f"{seconds:g}"] if seconds is not None else ["--epochs", str(epochs)]
    if spec is not None:
        args += ["--spec", str(spec)]
    return [*args, *state.data["overrides"]]


def main(argv: list[str] | None = None) -> None:
    from gentrain.report import build_report

    args = parse_args(argv)
    out = args.out or Path("outputs/compare") / time.strftime("%Y-%m-%d_%H-%M-%S")
    try:
        if args.report_only:
            if not (out / STATE_FILE).is_file():
                raise ConfigError(f"--report-only: no {STATE_FILE} in {out}; pass --out DIR")
            paths = build_report(out)
            print_line(f"report: {paths['markdown']}")
            return
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
        order = [a.name for a in load_arms(spec, None)]
        plan = (arms, order, args.seeds, budget, args.overrides)
        state.merge_plan(*plan)  # refuses other settings before anything runs
        if args.dry_run:
            for run in runs:
                source = f"{run.arm.init_from}/seed_{run.seed}" if run.arm.init_from else None
                extra = [f"init_from=<{source}>"] if source else []
                console.print(display([*run.overrides, *extra]), highlight=False, soft_wrap=True)
            return
        with state.locked():  # reads compare.json again: another process may just have ended
            state.merge_plan(*plan)
            state.data["argv"] = whole_command(state, out, args.epochs, args.seconds, args.spec)
            state.save()
            prepare_features(first)
            console.print(f"comparing {', '.join(a.label for a in arms)} in {out}", highlight=False)
            try:
                problems = execute(runs, state)
            except KeyboardInterrupt:
                console.print(
                    f"[yellow]stopped; finished runs are kept. To continue, rerun the same "
                    f"command with --out {out}[/yellow]",
                    highlight=False,
                    soft_wrap=True,
                )
                sys.exit(130)
            paths = build_report(out)
    except GentrainError as exc:
        print_error(exc)
        sys.exit(2)
    print_line(f"report: {paths['markdown']} (and .html); TensorBoard: tensorboard --logdir {out}")
    if problems:
        console.print(f"[bold red]{problems} run(s) failed or were skipped[/bold red]")
        sys.exit(1)


if __name__ == "__main__":
    main()
