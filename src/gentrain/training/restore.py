"""Rebuild a trained model, its config and its data from a checkpoint alone.

Every ``last.ckpt`` carries the resolved config it was trained with, so the evaluation and
sampling commands need nothing but the path (a run directory or the ``.ckpt`` file).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from gentrain.core.checkpoint import load_checkpoint
from gentrain.core.config import DeviceConfig, RunConfig, validate_config
from gentrain.core.errors import GentrainError
from gentrain.core.paths import checkpoint_path
from gentrain.core.runtime import resolve_device
from gentrain.data import ImageData, build_dataset
from gentrain.models import GenerativeModel, build_model


@dataclass
class TrainedRun:
    path: Path  # the checkpoint
    run_dir: Path
    config: RunConfig
    model: GenerativeModel
    data: ImageData
    device: torch.device
    fixed_noise: torch.Tensor
    step: int


def load_trained_run(
    path: str | Path, device: str | torch.device = "auto", data_dir: str | None = None
) -> TrainedRun:
    """Model (weights loaded, eval mode), validated config and dataset of a checkpoint.

    The data directory is, in order: ``data_dir``, ``$GENTRAIN_DATA_DIR``, the one the run
    was trained with.
    """
    ckpt = checkpoint_path(path)
    state = load_checkpoint(ckpt)
    if not state.get("config"):
        raise GentrainError(f"{ckpt} carries no config (written by an older gentrain)")
    cfg = OmegaConf.create(state["config"])
    data_dir = data_dir or os.environ.get("GENTRAIN_DATA_DIR")
    if data_dir:
        cfg.paths.data_dir = data_dir
        cfg.dataset.root = data_dir
    cfg.dataset.download = False if data_dir else cfg.dataset.download
    run = validate_config(cfg)
    resolved = device if isinstance(device, torch.device) else resolve_device(DeviceConfig(device))
    data = build_dataset(run.dataset)
    model = build_model(run.model, data.image_shape, data.num_classes, data.name)
    model.load_state_dict(state["model"])
    model.to(resolved).eval()
    return TrainedRun(
        path=ckpt,
        run_dir=ckpt.parent.parent,
        config=run,
        model=model,
        data=data,
        device=resolved,
        fixed_noise=state["fixed_noise"],
        step=int(state["step"]),
    )
