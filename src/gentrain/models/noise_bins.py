"""A discrete choice read from one standard normal noise coordinate, and that coordinate
made fresh again.

InfoGAN's code (``latent_code``) and the fitted mixture prior (``latent_prior``) both
choose one of K bins with given shares from the first noise coordinate: its normal CDF u
falls in bin k's share of [0, 1), and u's position inside that share, uniform and
independent of k, becomes a standard normal coordinate again. The draw is exact, and a
fixed noise vector keeps meaning the same sample.
"""

from __future__ import annotations

import torch


def pick_bin(first: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(bins, remapped) for standard normal ``first`` (N,). ``upper`` (N, K) holds each
    row's cumulative shares and reaches exactly 1; bins after the first 1 have share 0 and
    are never picked. Compute in float64 where the device has it: the CDF saturates early
    in float32."""
    u = torch.special.ndtr(first).unsqueeze(1)
    last = (upper < 1).sum(1, keepdim=True)  # the bin whose share ends at 1
    bins = torch.minimum(torch.searchsorted(upper, u, right=True), last)
    lower = torch.cat([torch.zeros_like(upper[:, :1]), upper[:, :-1]], dim=1).gather(1, bins)
    inside = _away_from_edges((u - lower) / (upper.gather(1, bins) - lower))
    return bins.squeeze(1), torch.special.ndtri(inside).squeeze(1)


def place_in_bin(bins: torch.Tensor, first: torch.Tensor, classes: int) -> torch.Tensor:
    """The inverse of ``pick_bin`` for ``classes`` equal shares: the standard normal
    coordinate that lands in ``bins`` where ``first`` (standard normal) says inside it."""
    inside = _away_from_edges(torch.special.ndtr(first))
    return torch.special.ndtri((bins.to(inside.dtype) + inside) / classes)


def _away_from_edges(u: torch.Tensor) -> torch.Tensor:
    """``u`` in (0, 1) kept off 0 and 1, so that its normal quantile stays finite."""
    edge = 1e-12 if u.dtype == torch.float64 else 1e-6
    return u.clamp(edge, 1.0 - edge)
