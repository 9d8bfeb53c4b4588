"""InfoGAN's categorical code (``model.code_classes``): the noise-to-code map is uniform,
keeps the noise standard normal and is inverted exactly by ``noise_for_codes``; the code
reaches G and D's auxiliary head; bad settings fail before training."""

from __future__ import annotations

import pytest
import torch

from gentrain.core.errors import ConfigError
from gentrain.data import Batch
from gentrain.models.gan import GAN, GANConfig
from gentrain.models.latent_code import noise_for_codes, split_code
from gentrain.training.optim import OptimizerConfig, OptimizerFactory

SHAPE = (1, 16, 16)


def test_codes_are_uniform_and_the_remapped_noise_is_standard_normal_and_independent():
    torch.manual_seed(0)
    noise = torch.randn(200_000, 4)
    codes, rest = split_code(noise, 10)
    counts = torch.bincount(codes, minlength=10).float() / len(codes)
    assert torch.allclose(counts, torch.full((10,), 0.1), atol=0.003)
    first = rest[:, 0]
    assert abs(first.mean()) < 0.01 and abs(first.std() - 1) < 0.01
    # Independent of the code: every code's share has the same distribution.
    for c in (0, 4, 9):
        part = first[codes == c]
        assert abs(part.mean()) < 0.03 and abs(part.std() - 1) < 0.03
    assert torch.equal(rest[:, 1:], noise[:, 1:])  # the other coordinates are untouched


def test_noise_for_codes_is_the_inverse_of_split_code():
    torch.manual_seed(1)
    noise = torch.randn(500, 3)
    wanted = torch.randint(7, (500,))
    codes, rest = split_code(noise_for_codes(noise, wanted, 7), 7)
    assert torch.equal(codes, wanted)
    assert torch.allclose(rest, noise, atol=1e-4)


def tiny_infogan(**overrides) -> GAN:
    torch.manual_seed(0)
    # One update per batch: the tests compare single D and G steps.
    arch = {"width": 4, "latent_dim": 3, "code_classes": 4, "updates_per_batch": 1}
    model = GAN(GANConfig(**arch, **overrides), SHAPE)
    model.configure_optimizers(OptimizerFactory(OptimizerConfig(name="sgd", lr=0.1), 10))
    return model


def test_the_code_reaches_the_generator_and_the_info_loss_trains_both_players():
    model = tiny_infogan()
    assert not model.conditional  # no labels are read
    torch.manual_seed(2)
    logs = model.training_step(Batch(torch.rand(8, *SHAPE)))
    assert logs["info_loss"].item() > 0
    # The same style with two codes gives two images: G reads the code.
    model.eval()
    noise = torch.randn(2, 3).repeat(2, 1)
    images = model.sample(noise_for_codes(noise, torch.tensor([0, 0, 3, 3]), 4))
    assert not torch.allclose(images[:2], images[2:])

    # The info term's weight changes D's and G's losses, so both players see it.
    heavy, light = tiny_infogan(info_weight=5.0), tiny_infogan(info_weight=0.0)
    x = torch.rand(8, *SHAPE)
    torch.manual_seed(3)
    a = heavy.training_step(Batch(x))
    torch.manual_seed(3)
    b = light.training_step(Batch(x))
    assert torch.equal(a["info_loss"], b["info_loss"])  # same first D step's inputs
    assert a["loss_d"] > b["loss_d"] and a["loss_g"] > b["loss_g"]


def test_the_previews_hold_a_grid_with_one_row_per_code():
    model = tiny_infogan().eval()
    grids = model.previews(torch.randn(9, 3), Batch(torch.rand(4, *SHAPE)))
    images, columns = grids["codes"]
    assert columns == 3 and images.shape == (12, *SHAPE)
    assert "samples" in grids


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"code_classes": 1}, "code with one value"),
        ({"code_classes": -2}, "code_classes"),
        ({"code_classes": 10, "conditional": True}, "set one of them"),
        ({"code_classes": 10, "info_weight": -1.0}, "info_weight"),
    ],
)
def test_bad_code_settings_are_refused_with_the_fix(overrides, message):
    with pytest.raises(ConfigError, match=message):
        GANConfig(**overrides)
