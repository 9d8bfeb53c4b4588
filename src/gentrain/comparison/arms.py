"""The arms of a comparison (``configs/compare.yaml``) and the runs planned from them."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from gentrain.errors import ConfigError
from gentrain.paths import config_dir, last_checkpoint


@dataclass
class Arm:
    name: str
    label: str
    overrides: list[str]
    init_from: str | None = None


@dataclass
class PlannedRun:
    """One training run of a comparison: an arm at a seed, in its own directory."""

    arm: Arm
    seed: int
    run_dir: Path
    overrides: list[str]  # everything but how it starts (init_from / resume)

    @property
    def key(self) -> str:
        return f"{self.arm.name}/seed_{self.seed}"

    def command(self, source: PlannedRun | None, resume: bool) -> list[str]:
        """The ``gentrain`` arguments of this run: fresh, warm-started, or resumed."""
        args = [*self.overrides, f"hydra.run.dir={self.run_dir}"]
        if resume:
            args.append(f"trainer.resume={last_checkpoint(self.run_dir)}")
        elif source is not None:
            args.append(f"init_from={source.run_dir}")
        return args

    def reproduce(self, source: PlannedRun | None) -> str:
        """The command that trains this run again from scratch, into a new directory (the
        comparison's own is taken: gentrain refuses to start a new run over a checkpoint)."""
        args = list(self.overrides)
        if source is not None:
            args.append(f"init_from={source.run_dir}")
        return display(args)


def spec_path() -> Path:
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


def plan_runs(
    arms: list[Arm], seeds: list[int], overrides: list[str], out: Path
) -> list[PlannedRun]:
    """Every (seed, arm) run, seed by seed so a first full comparison comes early."""
    runs = []
    for seed in seeds:
        for arm in arms:
            run_dir = (out / "runs" / arm.name / f"seed_{seed}").resolve()
            args = [*arm.overrides, *overrides, f"seed={seed}"]
            runs.append(PlannedRun(arm, seed, run_dir, args))
    return runs


def display(args: list[str]) -> str:
    return "gentrain " + shlex.join(args)
