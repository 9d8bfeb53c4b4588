"""Typed schemas for the composed config, checked before anything is built.

Each section of the Hydra config is merged into its dataclass schema: OmegaConf rejects
unknown keys and values of the wrong type, and each dataclass's ``__post_init__``
checks ranges. The result is one ``ConfigError`` with a readable message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

import gentrain.models  # noqa: F401  (registers MODELS)
import gentrain.tracking.loggers  # noqa: F401  (registers LOGGERS)
from gentrain.core.errors import ConfigError, require_at_least
from gentrain.core.registry import DATASETS, LOGGERS, MODELS, OPTIMIZERS, store_schema
from gentrain.data import DatasetConfig
from gentrain.evaluation.evaluator import EvalConfig
from gentrain.training.optim import OptimizerConfig
from gentrain.training.throughput import check_precision

DEVICES = ("auto", "cpu", "cuda", "mps")
OPTIMIZED_METRIC = "val/fid"  # what train() returns for sweepers, unless optimized_metric says


@dataclass
class TrainerConfig:
    max_epochs: int = 10
    max_steps: int | None = None  # stop after this many steps, even mid-epoch
    max_seconds: float | None = None  # training-time budget (evaluation excluded), mid-epoch too
    batch_size: int = 64
    val_batch_size: int = 500
    limit_val_batches: int | None = None  # None: the whole validation split
    gradient_clip_norm: float | None = None
    log_every_n_steps: int = 50
    images_every_n_steps: int = 500  # sample/reconstruction grids (also at each epoch end)
    checkpoint_every_n_steps: int = 1000  # last.ckpt (also at each epoch end)
    num_grid_images: int = 64
    deterministic: bool = False
    resume: str | None = None  # None | auto | /path/to/last.ckpt
    progress: bool = True  # rich progress bar on a terminal; plain lines otherwise
    on_runaway: str = (
        "warn"  # exploding/collapsing losses: warn | stop | off (gentrain.training.runaway)
    )
    sync_batchnorm: bool = True  # data-parallel runs: BatchNorm statistics of the global batch
    precision: str = "32"  # 32 | bf16 | 16-mixed (autocast; GradScaler per optimiser)
    channels_last: bool = True  # NHWC weights and batches (docs/guides/scaling.md)
    compile: bool = False  # torch.compile each network

    def __post_init__(self) -> None:
        require_at_least(
            self,
            "trainer",
            1,
            "max_epochs",
            "batch_size",
            "val_batch_size",
            "log_every_n_steps",
            "images_every_n_steps",
            "checkpoint_every_n_steps",
            "num_grid_images",
        )
        require_at_least(self, "trainer", 1, "max_steps", "limit_val_batches", nullable=True)
        if self.on_runaway not in ("warn", "stop", "off"):
            raise ConfigError(
                f"trainer.on_runaway must be warn, stop or off, got {self.on_runaway!r}"
            )
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ConfigError(f"trainer.max_seconds must be > 0 or null, got {self.max_seconds}")
        self.precision = str(self.precision)  # `trainer.precision=32` arrives as a number
        check_precision(self.precision)
        if self.gradient_clip_norm is not None and self.gradient_clip_norm <= 0:
            raise ConfigError(
                f"trainer.gradient_clip_norm must be > 0 or null, got {self.gradient_clip_norm}"
            )


@dataclass
class DeviceConfig:
    name: str = "auto"  # auto | cpu | cuda | mps
    num_threads: int | None = None  # CPU threads for torch; None: torch's default

    def __post_init__(self) -> None:
        if self.name not in DEVICES:
            raise ConfigError(f"unknown device {self.name!r}; available: {', '.join(DEVICES)}")


@dataclass
class PathsConfig:
    """Where datasets are read from (and downloaded to), where this run writes, and where
    evaluation's feature classifiers are cached; the environment variables override."""

    data_dir: str = "${oc.env:GENTRAIN_DATA_DIR,./data}"
    output_dir: str = "${hydra:runtime.output_dir}"
    cache_dir: str = "${oc.env:GENTRAIN_CACHE_DIR,'~/.cache/gentrain'}"


@dataclass
class RunConfig:
    """The validated config of one training run."""

    model: Any
    dataset: DatasetConfig
    optimizer: OptimizerConfig
    device: DeviceConfig
    trainer: TrainerConfig
    logger: dict[str, Any]  # backend name -> its settings (its registered Config); {}: none
    paths: PathsConfig
    eval: EvalConfig
    seed: int = 0
    optimized_metric: str = OPTIMIZED_METRIC
    extras: dict[str, Any] = field(default_factory=dict)


# Sections whose schema follows their `name:` (a registry's option), and sections with one.
BY_NAME_SECTIONS = {
    "dataset": (DATASETS, lambda name: DatasetConfig),
    "optimizer": (OPTIMIZERS, lambda name: OptimizerConfig),
    "model": (MODELS, lambda name: MODELS.get(name).Config),
}
ONE_SCHEMA_SECTIONS = {
    "device": DeviceConfig,
    "trainer": TrainerConfig,
    "paths": PathsConfig,
    "eval": EvalConfig,
}
# configs/<group>/*.yaml extend these (one home per default)
for _group, _schema in (("trainer", TrainerConfig), ("eval", EvalConfig), ("paths", PathsConfig)):
    store_schema(_group, "default", _schema)
for _group, _schema in (
    ("device", DeviceConfig),
    ("optimizer", OptimizerConfig),
    ("dataset", DatasetConfig),
):  # the schema every option of the group extends; not an option itself
    store_schema(_group, "default", _schema, option=False)
TOP_LEVEL = {"seed", "optimized_metric", "task_name", "tags", "init_from"}


def _refuse_non_finite(section: str, values: Any) -> None:
    """No knob of gentrain takes NaN or infinity (a limit that is off is null): refused
    here, before the run, instead of failing at its first steps."""
    items = values.items() if isinstance(values, dict) else enumerate(values or [])
    for key, value in items:
        if isinstance(value, dict | list):
            _refuse_non_finite(f"{section}.{key}", value)
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(
                f"{section}.{key} must be a finite number, got {value}; "
                "set a number (or null where the key allows it)"
            )


def _build_section(section: str, schema: type, values: Any) -> Any:
    """Merge ``values`` into ``schema`` and build the dataclass, or raise ConfigError."""
    try:
        if isinstance(values, DictConfig):  # resolve against the whole config first
            values = OmegaConf.to_container(values, resolve=True, throw_on_missing=False)
        _refuse_non_finite(section, values)
        merged = OmegaConf.merge(OmegaConf.structured(schema), values)
        return OmegaConf.to_object(merged)
    except MissingMandatoryValue as exc:
        raise ConfigError(
            f"'{section}.{exc.full_key}' is required; set it, e.g. {section}.{exc.full_key}=..."
        ) from None
    except ConfigKeyError as exc:
        valid = ", ".join(schema.__dataclass_fields__)
        raise ConfigError(
            f"unknown config key '{section}.{exc.key}'; valid keys of {section}: {valid}"
        ) from None
    except OmegaConfBaseException as exc:
        reason = str(exc).splitlines()[0]
        raise ConfigError(f"invalid value for '{section}.{exc.full_key}': {reason}") from None


def _loggers(values: Any) -> dict[str, Any]:
    """The ``logger`` section: each backend's name -> its typed settings, in the order
    given (``{}``: log nothing). The form of runs from before loggers combined,
    ``{name: tensorboard}``, still reads (a resumed or evaluated old run validates)."""
    if isinstance(values, DictConfig):
        try:
            values = OmegaConf.to_container(values, resolve=True, throw_on_missing=False)
        except OmegaConfBaseException as exc:
            reason = str(exc).splitlines()[0]
            raise ConfigError(f"invalid value for 'logger.{exc.full_key}': {reason}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(
            f"logger must map logger names to their settings, got {values!r}; pick loggers "
            f"with logger=<name> or logger=[<name>,<name>] (available: {', '.join(LOGGERS)})"
        )
    if isinstance(values.get("name"), str) and len(values) == 1:
        values = {} if values["name"] == "none" else {values["name"]: {}}
    typed = {}
    for name, settings in values.items():
        if name not in LOGGERS:
            raise ConfigError(LOGGERS.unknown_message(name))
        typed[name] = _build_section(f"logger.{name}", LOGGERS.get(name).Config, settings or {})
    return typed


def validate_config(cfg: DictConfig) -> RunConfig:
    """Check every section of ``cfg`` and return typed, range-checked config objects."""
    missing = [s for s in [*BY_NAME_SECTIONS, "logger", *ONE_SCHEMA_SECTIONS] if s not in cfg]
    if missing:
        raise ConfigError(f"the config has no {', '.join(missing)} section(s)")
    typed: dict[str, Any] = {}
    for section, (registry, schema_for) in BY_NAME_SECTIONS.items():
        values = cfg[section]
        name = values.get("name") if isinstance(values, DictConfig) else None
        if name is None:
            raise ConfigError(f"{section}.name is missing; available: {', '.join(registry)}")
        if name not in registry:
            raise ConfigError(registry.unknown_message(name))
        typed[section] = _build_section(section, schema_for(name), values)
    typed["logger"] = _loggers(cfg["logger"])
    for section, schema in ONE_SCHEMA_SECTIONS.items():
        typed[section] = _build_section(section, schema, cfg[section])
    extras = {k: cfg[k] for k in cfg if k not in typed}
    unknown = sorted(set(extras) - TOP_LEVEL - {"hydra"})
    if unknown:
        raise ConfigError(
            f"unknown top-level config key(s) {unknown}; valid: "
            f"{', '.join(sorted([*BY_NAME_SECTIONS, 'logger', *ONE_SCHEMA_SECTIONS, *TOP_LEVEL]))}"
        )
    seed = extras.pop("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    metric = str(extras.pop("optimized_metric", "val/fid"))
    typed["paths"].data_dir = str(Path(typed["paths"].data_dir).expanduser().resolve())
    typed["paths"].cache_dir = str(Path(typed["paths"].cache_dir).expanduser().resolve())
    return RunConfig(**typed, seed=seed, optimized_metric=metric, extras=extras)
