"""Every run's config composed and validated, and each warm start's shapes checked, before
anything trains; the evaluation's classifier prepared once."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from gentrain.cli.overrides import check_overrides, compose_without, composition_error
from gentrain.core.config import RunConfig
from gentrain.core.errors import ConfigError
from gentrain.core.paths import config_dir
from gentrain.core.runtime import resolve_device
from gentrain.experiments.comparison.arms import PlannedRun
from gentrain.tracking.console import console


def check_runs(runs: list[PlannedRun], time_budget: bool = False) -> RunConfig:
    """Compose and validate every run's config, and check each warm start's shapes, before
    anything trains: a typo or a mismatched arm fails in seconds, not after an hour."""
    from hydra import compose, initialize_config_dir

    from gentrain.core.config import validate_config

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
    check_warm_starts(runs, configs, first)
    return first


def check_warm_starts(
    runs: list[PlannedRun], configs: dict[str, RunConfig], first: RunConfig
) -> None:
    """Build each warm-started arm and its source and map the weights: a shape that does
    not fit is a ConfigError now (with the overrides that fix it), not after training."""
    import torch

    from gentrain.data import build_dataset
    from gentrain.models import build_model
    from gentrain.training.warm_start import plan_warm_start

    warm = [r for r in runs if r.arm.init_from and r.arm.name in configs]
    if not warm:
        return
    data = build_dataset(first.dataset)
    for run in warm:
        source_name = run.arm.init_from
        classes = (data.image_shape, data.num_classes, data.name)
        source = build_model(configs[source_name].model, *classes)
        target = build_model(configs[run.arm.name].model, *classes)
        with torch.no_grad():
            plan_warm_start(
                target,
                type(source).__name__,
                source.state_dict(),
                f"<arm {source_name}>",
                asdict(configs[source_name].model),
            )


def prepare_features(cfg: RunConfig) -> None:
    """Train (or load) the evaluation's feature classifier now, once, so that no run's wall
    time includes it."""
    if not cfg.eval.enabled or cfg.eval.features != "classifier":
        return
    from gentrain.data import build_dataset
    from gentrain.evaluation.classifier import load_or_train_classifier

    load_or_train_classifier(
        build_dataset(cfg.dataset),
        Path(cfg.paths.cache_dir),
        resolve_device(cfg.device),
        cfg.eval.min_accuracy,
    )
