"""Every tensor a model returns lives on the model's device, checked on a CPU-only machine.

With the default device set to ``meta``, a tensor a step builds without naming a device
(``torch.tensor(beta)``) lands on ``meta`` instead of the CPU: the same mistake that
would put it on the CPU in a CUDA run, where the trainer's ``torch.stack`` then fails.
"""

from __future__ import annotations

import pytest
import torch

from gentrain.core.errors import GentrainError
from gentrain.data import Batch
from gentrain.models.gan import GAN, GANConfig
from gentrain.models.vae import VAE, VAEConfig
from gentrain.models.vaegan import VAEGAN, VAEGANConfig
from gentrain.training.devices import check_on_device, same_device
from gentrain.training.optim import OptimizerConfig, OptimizerFactory

SHAPE = (1, 16, 16)
MODELS = {
    "vae": lambda: VAE(VAEConfig(width=4, latent_dim=3, kl_warmup_steps=5), SHAPE),
    "vae_logistic": lambda: VAE(
        VAEConfig(
            width=4, latent_dim=3, likelihood="discretized_logistic", binarize=False, free_bits=0.1
        ),
        SHAPE,
    ),
    "gan": lambda: GAN(GANConfig(width=4, latent_dim=3, augment=["translation", "cutout"]), SHAPE),
    "gan_wgan_gp_r1": lambda: GAN(
        GANConfig(width=4, latent_dim=3, loss="wgan_gp", r1_gamma=1.0, n_critic=2), SHAPE
    ),
    "vaegan": lambda: VAEGAN(VAEGANConfig(width=4, latent_dim=3), SHAPE),
    "vaegan_gate": lambda: VAEGAN(
        VAEGANConfig(width=4, latent_dim=3, equilibrium_gate=True, margin=0.0), SHAPE
    ),
}


def _returned_by_steps_on_meta_default(model):
    """What ``training_step`` and ``validation_step`` return while factory functions that
    name no device build on ``meta`` (the model and batch stay on the CPU)."""
    model.configure_optimizers(OptimizerFactory(OptimizerConfig(name="adam", lr=1e-3), 10))
    x = torch.rand(6, *SHAPE)
    model.training_step(Batch(x))  # optimiser state is created on the first step, outside meta
    with torch.device("meta"):
        trained = model.training_step(Batch(x))
        validated = model.validation_step(Batch(x))
    return trained, validated


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_logged_tensor_is_on_the_models_device(name):
    torch.manual_seed(0)
    trained, validated = _returned_by_steps_on_meta_default(MODELS[name]())
    assert trained and validated
    check_on_device(trained, torch.device("cpu"), "training_step")
    check_on_device(validated, torch.device("cpu"), "validation_step")


def test_a_term_built_without_a_device_is_caught_on_cpu(monkeypatch):
    """The guard can fail: the bug the issue found (``torch.tensor(beta)``) is named."""
    original = VAE.training_step

    def training_step(self, x):
        logs = original(self, x)
        logs["beta"] = torch.tensor(self.current_beta())  # the old vae.py
        return logs

    monkeypatch.setattr(VAE, "training_step", training_step)
    trained, _ = _returned_by_steps_on_meta_default(MODELS["vae"]())
    with pytest.raises(GentrainError, match=r"training_step returned 'beta' on meta.*new_tensor"):
        check_on_device(trained, torch.device("cpu"), "training_step")


def test_same_device_treats_a_missing_index_as_the_current_device():
    assert same_device(torch.device("cuda"), torch.device("cuda:0"))
    assert not same_device(torch.device("cuda:1"), torch.device("cuda:0"))
    assert not same_device(torch.device("cpu"), torch.device("cuda"))


def test_the_trainer_stops_on_a_term_off_the_models_device(make_config, monkeypatch):
    """In a run, a term on another device (here ``meta``, as the CPU is to a GPU run) stops
    training at once with the term's name, not with torch.stack's device error."""
    from gentrain.cli.train import train

    original = VAE.training_step

    def training_step(self, x):
        logs = original(self, x)
        logs["beta"] = torch.tensor(1.0, device="meta")
        return logs

    monkeypatch.setattr(VAE, "training_step", training_step)
    with pytest.raises(GentrainError, match=r"VAE.training_step returned 'beta' on meta"):
        train(make_config("eval.enabled=false"))
