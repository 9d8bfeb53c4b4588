"""Improved precision and recall (Kynkäänniemi et al. 2019, NeurIPS).

Each set's manifold is the union of balls around its points, with radius the distance to
the point's k-th nearest neighbour in the same set. Precision is the share of generated
points inside the real manifold (fidelity); recall the share of real points inside the
generated manifold (coverage). torchmetrics has no implementation, hence this one.
"""

from __future__ import annotations

import torch


def _kth_neighbour_radius(points: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    radii = []
    for start in range(0, len(points), chunk):
        d = torch.cdist(points[start : start + chunk], points)
        # k + 1: the nearest "neighbour" of a point is itself, at distance 0.
        radii.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def _coverage(
    queries: torch.Tensor, support: torch.Tensor, radii: torch.Tensor, chunk: int
) -> float:
    inside = 0
    for start in range(0, len(queries), chunk):
        d = torch.cdist(queries[start : start + chunk], support)
        inside += int((d <= radii.unsqueeze(0)).any(dim=1).sum())
    return inside / len(queries)


@torch.no_grad()
def precision_recall(
    real: torch.Tensor, fake: torch.Tensor, k: int = 3, chunk: int = 1000
) -> tuple[float, float]:
    """(precision, recall) of ``fake`` features against ``real`` features, both (N, D)."""
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision/recall needs more than k={k} points per set")
    real, fake = real.double(), fake.double()
    real_radii = _kth_neighbour_radius(real, k, chunk)
    fake_radii = _kth_neighbour_radius(fake, k, chunk)
    return _coverage(fake, real, real_radii, chunk), _coverage(real, fake, fake_radii, chunk)
