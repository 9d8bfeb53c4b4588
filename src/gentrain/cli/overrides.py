"""Command-line overrides checked before Hydra runs anything: one clear line, exit 2.

Hydra reports an unknown config group option (``model=vaeg``) or a key that is not in the
config (``trainer.batchsize=8``) with a multi-line message about its search path, exits
with 1, and only after it has written ``.hydra/`` into the run directory. ``check_argv``
runs first, for ``gentrain`` runs and sweeps alike; ``gentrain-compare`` checks its
overrides with ``check_overrides`` and ``composition_error``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gentrain.core.errors import ConfigError
from gentrain.core.registry import LOGGERS, unknown_name_message

# Flags after which Hydra's own handling is wanted: another config, help, shell completion.
HANDS_OFF_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
HANDS_OFF_FLAGS += ("--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc")
HANDS_OFF_FLAGS += ("--experimental-rerun",)
MULTIRUN_FLAGS = ("-m", "--multirun")


def group_options(config_root: Path) -> dict[str, list[str]]:
    """Every config group of ``config_root`` (a folder of ``*.yaml``) and its options,
    with the options only Hydra's ConfigStore has (a registered model without a preset)."""
    from hydra.core.config_store import ConfigStore

    groups = {
        folder.name: {p.stem for p in folder.glob("*.yaml")}
        for folder in sorted(config_root.iterdir())
        if folder.is_dir() and folder.name != "hydra" and any(folder.glob("*.yaml"))
    }
    for group, options in groups.items():
        stored = ConfigStore.instance().repo.get(group, {})
        options.update(name.removesuffix(".yaml") for name in stored)
    return {group: sorted(options) for group, options in groups.items()}


def top_level_keys(config_root: Path) -> list[str]:
    """The primary config's own keys (``seed``, ``init_from``, ...) besides its groups."""
    primary = OmegaConf.load(config_root / "train.yaml")
    return sorted(str(k) for k in primary if k != "defaults")


def _parse(override: str) -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_override(override)
    except HydraException as exc:
        reason = " ".join(str(exc).split())
        raise ConfigError(
            f"cannot read the override {override!r} ({reason}); write it as key=value, "
            "group=option or, in a sweep, key=a,b"
        ) from None


def _values(parsed: Any) -> list[str]:
    """The option names an override asks for: one, a list, or each choice of a sweep."""
    from hydra.core.override_parser.types import ChoiceSweep

    value = parsed.value()
    if isinstance(value, ChoiceSweep):
        return [str(v) for v in value.list]
    if isinstance(value, list):
        return [str(v) for v in value]
    if value is None or not isinstance(value, str | int | float):
        return []  # null (an optional group left out), ~deletions, glob(), ranges
    return [str(value)]


def check_overrides(overrides: list[str], config_root: Path) -> None:
    """Refuse unknown group options (``model=vaeg``) and unknown top-level names
    (``modle=vae``) with a did-you-mean line; sweeps (``model=vae,gann``) are checked
    choice by choice."""
    groups = group_options(config_root)
    top = top_level_keys(config_root)
    for override in overrides:
        parsed = _parse(override)
        key = parsed.key_or_group
        if key.startswith("hydra") or parsed.is_delete():
            continue  # Hydra's own settings and plugins, and deletions, are Hydra's to check
        if key in groups:
            for value in _values(parsed):
                if value not in groups[key]:
                    raise ConfigError(unknown_name_message(key, value, groups[key]))
        elif "." not in key and "/" not in key and not parsed.is_add() and key not in top:
            names = sorted([*groups, *top])
            message = unknown_name_message("config group or key", key, names)
            raise ConfigError(f"{message} (add a new top-level key with +{override})")


def composition_error(exc: Exception, cfg_without: Any = None) -> ConfigError:
    """Hydra's composition error (several lines, a search path, HYDRA_FULL_ERROR) as one
    line. ``cfg_without``: the config composed without the failing override, whose keys
    give an unknown key's did-you-mean."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    head = (lines[0] if lines else type(exc).__name__).rstrip(".")
    if head.startswith("Could not override '"):
        key = head.split("'")[1]
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg_without, parent) if cfg_without is not None and parent else None
        if node is not None and OmegaConf.is_dict(node):
            return ConfigError(unknown_name_message(f"{parent} key", leaf, sorted(map(str, node))))
        section, _, rest = key.partition(".")
        backend = rest.split(".")[0]
        if section == "logger" and backend in LOGGERS:
            return ConfigError(
                f"{key} sets a logger this run does not use; add logger={backend} (or "
                f"several: logger=[tensorboard,{backend}])"
            )
        return ConfigError(f"unknown config key {key!r}; gentrain --cfg job prints every key")
    return ConfigError(f"{head}; gentrain --help lists the groups and their options")


def compose_and_validate(overrides: list[str], config_root: Path) -> None:
    """Compose the primary config with ``overrides`` (Hydra's own settings left out) and
    validate it as ``train`` will, the loggers' packages included: every ConfigError
    before Hydra touches the run dir."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from gentrain.core.config import validate_config
    from gentrain.tracking.loggers import check_installed

    own = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    if not any(o.lstrip("+~").startswith("paths.output_dir=") for o in own):
        own.append("paths.output_dir=.")  # Hydra's run dir, unknown outside a Hydra app
    with initialize_config_dir(version_base="1.3", config_dir=str(config_root)):
        try:
            cfg = compose(config_name="train", overrides=own)
        except (HydraException, OmegaConfBaseException) as exc:
            raise composition_error(exc, compose_without(exc, own)) from None
    check_installed(validate_config(cfg).logger)  # logger=wandb without wandb: said now


def compose_without(exc: Exception, overrides: list[str]) -> Any:
    """The config without the override that ``exc`` names, or None."""
    from hydra import compose

    text = str(exc)
    if not text.startswith("Could not override '"):
        return None
    key = text.split("'")[1]
    rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
    try:
        return compose(config_name="train", overrides=rest)
    except Exception:  # another bad override: the message goes without suggestions
        return None


def check_argv(argv: list[str], config_root: Path) -> None:
    """What ``gentrain`` checks before handing ``argv`` to Hydra.

    Group options and top-level names always; for a plain single run (no ``-m``, no
    ``--cfg``) also the whole composition and the config's types and ranges, so a bad run
    stops before Hydra writes ``.hydra/`` and ``train.log`` into its directory.
    """
    if any(arg.split("=", 1)[0] in HANDS_OFF_FLAGS for arg in argv):
        return
    overrides = [a for a in argv if not a.startswith("-") and ("=" in a or a.startswith("~"))]
    check_overrides(overrides, config_root)
    if not any(arg.startswith("-") for arg in argv):
        compose_and_validate(overrides, config_root)
        check_run_dir(overrides)


def check_run_dir(overrides: list[str]) -> None:
    """The run directory Hydra is about to create can be created: not a file, under a
    directory this user may write to (else Hydra's own traceback, after the fact)."""
    given = [o.split("=", 1)[1] for o in overrides if o.startswith("hydra.run.dir=")]
    target = Path(given[-1]) if given and "${" not in given[-1] else Path("outputs")
    if target.exists() and not target.is_dir():
        raise ConfigError(f"the run directory {target} is a file. Fix: pick another hydra.run.dir")
    ancestor = target.absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(
            f"cannot create the run directory {target}: {ancestor} is a file. "
            "Fix: pick another hydra.run.dir"
        )
    if not os.access(ancestor, os.W_OK):
        raise ConfigError(
            f"cannot create the run directory {target}: {ancestor} is not writable (a "
            "read-only file system or no permission). Fix: pick a writable hydra.run.dir, "
            "or run gentrain from a writable directory"
        )
