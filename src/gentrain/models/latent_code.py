"""InfoGAN's categorical latent code, read from the generator's standard normal noise.

An unconditional GAN must map one connected noise space onto the data's separate modes
(MNIST's ten digits), so some of its samples fall between modes. InfoGAN (Chen et al.
2016) gives G a categorical code c ~ Cat(K) beside z and makes c recoverable from
G(z, c) by an auxiliary head Q on D, trained with the cross-entropy (a lower bound on the
mutual information I(c; G(z, c))); on MNIST the code learns the digit classes without
labels, and G gets a discrete choice of mode.

The code is a deterministic function of the noise, not a second input: the first noise
coordinate's normal CDF picks c, and its position inside c's share of [0, 1) becomes that
coordinate again. So c is uniform, the remapped noise is still standard normal and
independent of c, and fixed noise, seeds, ``gentrain-compare``'s shared noise and the
sampling commands keep their meaning for a model with a code.
"""

from __future__ import annotations

import torch

from gentrain.models.noise_bins import pick_bin, place_in_bin


def _exact(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float64 for the CDF arithmetic, float32 where the device has no float64."""
    return t.float() if t.device.type == "mps" else t.double()


def split_code(noise: torch.Tensor, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, noise'): the code in 0..classes-1 that each row of standard normal ``noise``
    stands for, and the noise with its first coordinate remapped to be independent of it."""
    first = _exact(noise[:, 0])
    shares = torch.arange(1, classes + 1, dtype=first.dtype, device=first.device) / classes
    codes, remapped = pick_bin(first, shares.repeat(len(noise), 1))
    rest = noise.clone()
    rest[:, 0] = remapped.to(noise.dtype)
    return codes, rest


def noise_for_codes(noise: torch.Tensor, codes: torch.Tensor, classes: int) -> torch.Tensor:
    """Noise that ``split_code`` reads as (``codes``, ``noise``): the inverse map, so a
    code grid holds each column's style fixed while the code changes."""
    out = noise.clone()
    first = _exact(noise[:, 0])
    out[:, 0] = place_in_bin(codes.to(first.device), first, classes).to(noise.dtype)
    return out
