"""The arms of a comparison (``configs/compare.yaml``) and the runs planned from them."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from gentrain.core.errors import ConfigError
from gentrain.core.paths import config_dir, last_checkpoint


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


DEFAULT_SET = "default"


def read_spec(path: Path) -> tuple[dict[str, Arm], dict[str, list[str]]]:
    """Every arm of ``path`` by name, in the file's order, and its named sets of arms
    (``sets: {name: [arm, ...]}``; none if the file has no ``sets``)."""
    if not path.is_file():
        raise ConfigError(f"--spec {path}: no such file")
    spec = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if not isinstance(spec, dict) or not isinstance(spec.get("arms"), dict) or not spec["arms"]:
        raise ConfigError(f"{path}: expected a mapping `arms: {{name: {{label, overrides}}}}`")
    arms = {}
    for name, body in spec["arms"].items():
        if not isinstance(body, dict) or not isinstance(body.get("overrides"), list):
            raise ConfigError(f"{path}: arm {name!r} needs a list `overrides`")
        unknown = set(body) - {"label", "overrides", "init_from"}
        if unknown:
            raise ConfigError(
                f"{path}: arm {name!r} has unknown key(s) {sorted(unknown)}; "
                "valid: label, overrides, init_from"
            )
        arms[str(name)] = Arm(
            name=str(name),
            label=str(body.get("label", name)),
            overrides=[str(o) for o in body["overrides"]],
            init_from=body.get("init_from"),
        )
    sets = spec.get("sets") or {}
    if not isinstance(sets, dict):
        raise ConfigError(f"{path}: expected a mapping `sets: {{name: [arm, ...]}}`")
    for name, members in sets.items():
        if name in arms:
            raise ConfigError(f"{path}: set {name!r} has the name of an arm; rename one")
        if not isinstance(members, list) or not members:
            raise ConfigError(f"{path}: set {name!r} needs a non-empty list of arms")
        unknown = [str(m) for m in members if m not in arms]
        if unknown:
            raise ConfigError(
                f"{path}: set {name!r} names unknown arm(s) {', '.join(unknown)}; "
                f"arms: {', '.join(arms)}"
            )
    return arms, {str(k): [str(m) for m in v] for k, v in sets.items()}


def load_arms(path: Path, names: list[str] | None) -> list[Arm]:
    """The arms of ``path`` named by ``names`` (arms, or sets of arms), in that file's
    order, sources first. No ``names``: the ``default`` set if the file has one, else all."""
    arms, sets = read_spec(path)
    if not names:
        names = sets.get(DEFAULT_SET, list(arms))
    unknown = [n for n in names if n not in arms and n not in sets]
    if unknown:
        named_sets = f"; sets: {', '.join(sets)}" if sets else ""
        raise ConfigError(
            f"unknown arm(s) {', '.join(unknown)}; {path} has: {', '.join(arms)}{named_sets}"
        )
    wanted = {arm for n in names for arm in sets.get(n, [n])}
    for arm in arms.values():  # a chosen warm-started arm brings its source along
        if arm.name in wanted and arm.init_from:
            wanted.add(arm.init_from)
    chosen = [a for a in arms.values() if a.name in wanted]
    seen: set[str] = set()
    for arm in chosen:
        if arm.init_from is not None and arm.init_from not in seen:
            raise ConfigError(
                f"{path}: arm {arm.name!r} starts from {arm.init_from!r}, which must be an arm "
                f"listed before it; arms: {', '.join(arms)}"
            )
        seen.add(arm.name)
    return chosen


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
