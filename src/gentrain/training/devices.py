"""Keeps what a model returns on the model's device.

A loss term built with ``torch.tensor(value)`` lands on the CPU: harmless on a CPU run,
but on a GPU the trainer's ``torch.stack`` of the terms fails. ``check_on_device`` names
such a term in one line; the trainer calls it on every step (it reads only tensor
metadata, no host sync), and tests run each model's steps with the default device set to
``meta`` so that a CPU-built term shows up on a CPU-only machine (tests/test_devices.py).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from gentrain.core.errors import GentrainError


def same_device(a: torch.device, b: torch.device) -> bool:
    """``cuda`` and ``cuda:0`` are the same device when one of them names no index."""
    a, b = torch.device(a), torch.device(b)
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def check_on_device(terms: Mapping[str, torch.Tensor], device: torch.device, where: str) -> None:
    """Raise if a tensor in ``terms`` is not on ``device``; ``where`` names the producer."""
    wrong = [
        f"{name!r} on {value.device}"
        for name, value in terms.items()
        if isinstance(value, torch.Tensor) and not same_device(value.device, device)
    ]
    if wrong:
        raise GentrainError(
            f"{where} returned {', '.join(wrong)}, not on the model's device {device}. "
            "Fix: build logged values from a tensor of the step, e.g. x.new_tensor(value), "
            "not torch.tensor(value)"
        )
