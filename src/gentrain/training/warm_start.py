"""Warm start: a new run whose networks begin from another trained model's weights.

Not resume. Resume (``trainer.resume``) continues *the same run*: every network, optimiser,
schedule, RNG and the step counter come back and training goes on as if never stopped.
A warm start (``init_from``) begins *a new run*, usually with a different objective: only
the weights of compatible networks are copied (a VAE's encoder and decoder into a VAE-GAN,
a VAE's decoder into a GAN's generator); optimisers, schedules and step start fresh, and
networks with no counterpart (a discriminator) keep their random initialisation.

Networks are matched by what they are: each model class names its networks' roles in
``network_roles`` (encoder, decoder, discriminator), and a network takes the weights of the
source's network of the same role, so any model, a new one included, can start from any
other whose networks it shares.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from gentrain.core.checkpoint import load_checkpoint
from gentrain.core.errors import ConfigError, bulleted
from gentrain.core.paths import checkpoint_path
from gentrain.core.registry import MODELS
from gentrain.models import GenerativeModel, build_model

log = logging.getLogger("gentrain")


def warm_start(model: GenerativeModel, path: str | Path) -> str:
    """Copy the mapped weights of checkpoint ``path`` into ``model``; return a summary.

    Raises ConfigError, before anything is changed, when the source model cannot feed this
    one or any mapped tensor has another shape (listing every mismatch).
    """
    ckpt = checkpoint_path(path)
    state = load_checkpoint(ckpt)
    source_class = str(state.get("model_class"))
    source_cfg = source_model_config(state)
    updates, loaded_prefixes = plan_warm_start(
        model, source_class, state["model"], str(ckpt), source_cfg
    )
    model.load_state_dict(updates, strict=False)
    target_weights = model.state_dict()
    fresh = sorted({k.split(".")[0] for k in target_weights} - {k.split(".")[0] for k in updates})
    summary = (
        f"warm start from {ckpt} (a {source_class} at step {int(state['step'])}): loaded "
        f"{'; '.join(loaded_prefixes)}. Fresh: {', '.join(fresh) or 'nothing'}. "
        "Optimisers, schedules and step start anew."
    )
    log.info(summary)
    return summary


def source_model_config(state: dict[str, Any]) -> dict[str, Any] | None:
    """The ``model`` section of the config a checkpoint was trained with, if it has one."""
    try:
        config = OmegaConf.to_container(OmegaConf.create(state.get("config") or ""))
    except Exception:  # an old or foreign checkpoint: no fix can be derived
        return None
    model = config.get("model") if isinstance(config, dict) else None
    return model if isinstance(model, dict) else None


def plan_warm_start(
    model: GenerativeModel,
    source_class: str,
    source_weights: dict[str, torch.Tensor],
    source_name: str = "the source",
    source_cfg: dict[str, Any] | None = None,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The tensors ``model`` would take from a ``source_class``'s ``source_weights`` and a
    line per mapped network; ConfigError listing every mismatch if they do not fit, with
    the overrides that make them fit when ``source_cfg`` (the source's model config) says."""
    target_class = type(model).__name__
    mapping = role_mapping(model, source_class, source_weights)
    if not mapping:
        roles = sorted(set(model.network_roles.values())) or ["none"]
        raise ConfigError(
            f"init_from={source_name}: a {target_class} cannot start from a {source_class}: "
            f"they share no network (this model's: {', '.join(roles)}; the checkpoint's: "
            f"{', '.join(sorted(set(roles_of(source_class).values()))) or 'unknown'})"
        )
    updates, mismatched, loaded_prefixes = _match(model, mapping, source_weights)
    if mismatched:
        fixes = fixing_overrides(model, mapping, source_weights, source_cfg)
        if fixes:
            fix = (
                f"Fix: add {' '.join(fixes)} to this command (the source run's "
                f"{'setting' if len(fixes) == 1 else 'settings'}), or train the source with "
                "this run's values"
            )
        else:
            fix = (
                "Fix: use the same image size, model.latent_dim and model.width (and norms) "
                "as the source run (see .hydra/config.yaml in its run directory)"
            )
        raise ConfigError(
            f"init_from={source_name}: the {source_class}'s weights do not fit this {target_class} "
            f"({len(mismatched)} tensor(s)):\n{bulleted(mismatched, 12)}\n{fix}"
        )
    if not updates:
        raise ConfigError(
            f"init_from={source_name}: no tensor of the {source_class} maps onto this "
            f"{target_class}'s networks, so nothing would be loaded; check the model config"
        )
    return updates, loaded_prefixes


def roles_of(model_class: str) -> dict[str, str]:
    """The ``network_roles`` of the registered model class named ``model_class``."""
    for name in MODELS:
        if MODELS.get(name).__name__ == model_class:
            return MODELS.get(name).network_roles
    return {}


def role_mapping(
    model: GenerativeModel, source_class: str, source_weights: dict[str, torch.Tensor]
) -> list[tuple[str, str]]:
    """(source prefix, target prefix) for each network of ``model`` that the checkpoint
    holds a network of the same role for: the one of the same name if it is there (a
    GAN's EMA generator from the source's EMA generator), else the source's first."""
    held = {key.split(".", 1)[0] for key in source_weights}
    source_roles = roles_of(source_class)
    mapping = []
    for target, role in model.network_roles.items():
        candidates = [n for n, r in source_roles.items() if r == role and n in held]
        if candidates:
            source = target if target in candidates else candidates[0]
            mapping.append((f"{source}.", f"{target}."))
    return mapping


def _match(
    model: GenerativeModel,
    mapping: list[tuple[str, str]],
    source_weights: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """(tensors to load, mismatches, a line per mapped network)."""
    target_weights = model.state_dict()
    target_class = type(model).__name__
    updates: dict[str, torch.Tensor] = {}
    mismatched, loaded_prefixes = [], []
    for source_prefix, target_prefix in mapping:
        if not any(k.startswith(target_prefix) for k in target_weights):
            continue  # a network this configuration does not have (a GAN without EMA)
        matched = 0
        for key, value in source_weights.items():
            if not key.startswith(source_prefix):
                continue
            target_key = target_prefix + key[len(source_prefix) :]
            if target_key not in target_weights:
                mismatched.append(f"{target_key}: not in this {target_class}")
            elif target_weights[target_key].shape != value.shape:
                mismatched.append(
                    f"{target_key}: this model {tuple(target_weights[target_key].shape)}, "
                    f"checkpoint {key} {tuple(value.shape)}"
                )
            else:
                updates[target_key] = value
                matched += 1
        missing = [
            k
            for k in target_weights
            if k.startswith(target_prefix)
            and source_prefix + k[len(target_prefix) :] not in source_weights
        ]
        mismatched += [f"{k}: not in the checkpoint" for k in missing]
        loaded_prefixes.append(f"{source_prefix}* -> {target_prefix}* ({matched} tensors)")
    # Shape clashes first: they name the setting that differs (a latent size, a width),
    # while the absent tensors that follow them are often just a norm layer more or less.
    mismatched.sort(key=lambda line: "checkpoint " not in line.split(": ", 1)[1][:40])
    return updates, mismatched, loaded_prefixes


def fixing_overrides(
    model: GenerativeModel,
    mapping: list[tuple[str, str]],
    source_weights: dict[str, torch.Tensor],
    source_cfg: dict[str, Any] | None,
) -> list[str]:
    """The ``model.<key>=<source value>`` overrides that make ``model`` fit the source.

    Candidates are the knobs both model configs have and set differently (a VAE trained
    with ``encoder_norm=none`` and a VAE-GAN with ``encoder_norm=batch``); each is kept
    only if building this model with the source's value removes mismatches, and the set
    is returned only if together they remove all of them. Knobs that do not change any
    shape (``beta``) never qualify.
    """
    cfg = getattr(model, "cfg", None)
    if source_cfg is None or cfg is None:
        return []
    try:
        target = asdict(cfg)
    except TypeError:
        return []

    def mismatches(**changes: Any) -> int | None:
        try:
            trial = build_model(
                replace(cfg, **changes), model.image_shape, model.num_classes or None
            )
        except Exception:  # the source's value is not valid for this model
            return None
        return len(_match(trial, mapping, source_weights)[1])

    now = len(_match(model, mapping, source_weights)[1])
    changes = {}
    for key, value in source_cfg.items():
        if key == "name" or key not in target or target[key] == value:
            continue
        count = mismatches(**{key: value})
        if count is not None and count < now:
            changes[key] = value
    if not changes or mismatches(**changes) != 0:
        return []
    return [f"model.{key}={_override_value(value)}" for key, value in changes.items()]


def _override_value(value: Any) -> str:
    """``value`` as Hydra's command line reads it back."""
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else str(value)
