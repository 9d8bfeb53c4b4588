"""init_from: a new run starting from another model's weights (not resume)."""

from __future__ import annotations

import pytest
import torch

from gentrain.cli.train import train
from gentrain.core.errors import ConfigError
from gentrain.models.gan import GAN, GANConfig
from gentrain.models.vaegan import VAEGAN, VAEGANConfig
from gentrain.training.warm_start import warm_start


def tiny_run(out, data_dir, cache_dir, *overrides):
    """A few steps of a width-8 model, no evaluation: a checkpoint to start from."""
    from conftest import compose_config

    common = ["debug=fast", "device=cpu", "logger=none", "eval.enabled=false", "model.width=8"]
    paths = [f"paths.data_dir={data_dir}", f"paths.cache_dir={cache_dir}"]
    train(compose_config([*common, *paths, f"paths.output_dir={out}", *overrides]))
    return out


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory, data_dir, cache_dir):
    out = tmp_path_factory.mktemp("vae")
    return tiny_run(out, data_dir, cache_dir, "model.latent_dim=4")


def _vae_weights(run):
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["model"]


def test_vaegan_takes_encoder_and_decoder_and_keeps_a_fresh_discriminator(vae_run):
    torch.manual_seed(0)
    model = VAEGAN(VAEGANConfig(width=8, latent_dim=4), (1, 28, 28))
    fresh_d = {k: v.clone() for k, v in model.discriminator.state_dict().items()}
    summary = warm_start(model, vae_run)
    source = _vae_weights(vae_run)
    for key, value in model.state_dict().items():
        if key.startswith(("encoder.", "decoder.")):
            assert torch.equal(value, source[key]), key
    for key, value in model.discriminator.state_dict().items():
        assert torch.equal(value, fresh_d[key])
    assert "a VAE at step 4" in summary and "Fresh: discriminator" in summary


def test_gan_takes_the_decoder_as_generator_and_ema(vae_run):
    model = GAN(GANConfig(width=8, latent_dim=4), (1, 28, 28))
    warm_start(model, vae_run)
    source = _vae_weights(vae_run)
    for key, value in model.generator.state_dict().items():
        assert torch.equal(value, source[f"decoder.{key}"])
        assert torch.equal(model.generator_ema.state_dict()[key], value)


def test_mismatched_shapes_are_listed_before_anything_changes(vae_run):
    model = VAEGAN(VAEGANConfig(width=8, latent_dim=8), (1, 28, 28))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError) as info:
        warm_start(model, vae_run)
    message = str(info.value)
    assert (
        "encoder.head.weight: this model (16, 784), checkpoint encoder.head.weight (8, 784)"
        in message
    )
    assert "model.latent_dim" in message
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_networks_are_matched_by_role_and_a_source_sharing_none_is_refused():
    from gentrain.models.gan import GAN, GANConfig
    from gentrain.models.vae import VAE, VAEConfig
    from gentrain.training.warm_start import plan_warm_start, role_mapping

    gan = GAN(GANConfig(width=4, latent_dim=4), (1, 28, 28)).state_dict()
    no_ema = {k: v for k, v in gan.items() if not k.startswith("generator_ema.")}
    vae = VAE(VAEConfig(width=4, latent_dim=4), (1, 28, 28))
    # A VAE from a GAN: its decoder from the generator; nothing plays the encoder's role.
    assert role_mapping(vae, "GAN", gan) == [("generator.", "decoder.")]
    # A GAN from a GAN: each network from its namesake, the EMA copy from the generator
    # when the source kept none.
    target = GAN(GANConfig(width=4, latent_dim=4), (1, 28, 28))
    assert role_mapping(target, "GAN", gan) == [
        ("generator.", "generator."),
        ("generator_ema.", "generator_ema."),
        ("discriminator.", "discriminator."),
    ]
    assert ("generator.", "generator_ema.") in role_mapping(target, "GAN", no_ema)
    with pytest.raises(ConfigError, match="a VAE cannot start from a Classifier: they share no"):
        plan_warm_start(vae, "Classifier", {"trunk.weight": torch.zeros(1)}, "<run>")


def test_train_with_init_from_runs_and_refuses_resume_too(vae_run, make_config, tmp_path):
    metrics = train(
        make_config(
            "model=vaegan",
            "model.width=8",
            "model.latent_dim=4",
            "eval.enabled=false",
            f"init_from={vae_run}",
        )
    )
    assert metrics["step"] == 4
    with pytest.raises(ConfigError, match="pick one"):
        train(
            make_config(
                "model=vaegan",
                "model.width=8",
                "model.latent_dim=4",
                f"init_from={vae_run}",
                f"trainer.resume={vae_run}",
                output_dir=tmp_path / "other",
            )
        )


def test_a_warm_start_that_would_load_nothing_is_refused(vae_run):
    from gentrain.training.warm_start import plan_warm_start

    source = torch.load(vae_run / "checkpoints" / "last.ckpt", weights_only=True)["model"]
    model = VAEGAN(VAEGANConfig(width=8, latent_dim=4), (1, 28, 28))
    model.network_roles = {"no_such_network": "encoder"}
    with pytest.raises(ConfigError, match="nothing would be loaded"):
        plan_warm_start(model, "VAE", source, "<run>")


def test_a_refusal_names_the_override_that_fixes_it_and_that_override_works(
    tmp_path, data_dir, cache_dir, make_config
):
    """VAE -> VAE-GAN with different encoder norms, both set explicitly: the message says
    exactly what to add, derived from the two configs, and adding it makes the run start."""
    source = tiny_run(
        tmp_path / "vae", data_dir, cache_dir, "model.latent_dim=4", "model.encoder_norm=none"
    )
    common = ["model=vaegan", "model.width=8", "model.latent_dim=4", "eval.enabled=false"]
    with pytest.raises(ConfigError) as info:
        train(make_config(*common, "model.encoder_norm=batch", f"init_from={source}"))
    message = str(info.value)
    assert "num_batches_tracked: not in the checkpoint" in message
    assert "Fix: add model.encoder_norm=none to this command" in message
    assert "model.beta" not in message and "model.width" not in message  # shape-neutral
    metrics = train(
        make_config(
            *common,
            "model.encoder_norm=none",
            f"init_from={source}",
            output_dir=tmp_path / "fixed",
        )
    )
    assert metrics["step"] == 4


def test_a_refusal_without_a_single_fixing_knob_keeps_the_general_advice(vae_run):
    from gentrain.training.warm_start import plan_warm_start

    source = torch.load(vae_run / "checkpoints" / "last.ckpt", weights_only=True)["model"]
    model = VAEGAN(VAEGANConfig(width=8, latent_dim=4), (1, 32, 32))  # another image size
    with pytest.raises(ConfigError, match="Fix: use the same image size") as info:
        plan_warm_start(model, "VAE", source, "<run>", {"name": "vae", "beta": 2.0})
    assert "model.beta" not in str(info.value)
