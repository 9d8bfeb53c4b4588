"""Model maths: losses, gradient isolation in the VAE-GAN, the equilibrium gate."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gentrain.core.errors import ConfigError
from gentrain.core.registry import MODELS
from gentrain.data import Batch
from gentrain.models.adversarial import GAN_LOSSES, gradient_penalty
from gentrain.models.gan import GAN, GANConfig
from gentrain.models.likelihoods import reconstruction_nll
from gentrain.models.vae import VAE, VAEConfig, gaussian_kl
from gentrain.models.vaegan import VAEGAN, VAEGANConfig
from gentrain.training.optim import OptimizerConfig, OptimizerFactory

SHAPE = (1, 16, 16)


def _with_optimizers(model, name="sgd", lr=0.1):
    model.configure_optimizers(OptimizerFactory(OptimizerConfig(name=name, lr=lr), 10))
    return model


def test_gaussian_kl_matches_torch_distributions():
    mu, logvar = torch.randn(5, 3), torch.randn(5, 3)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    expected = torch.distributions.kl_divergence(q, p).sum(1)
    assert torch.allclose(gaussian_kl(mu, logvar), expected, atol=1e-5)


def test_reconstruction_nll_is_summed_per_image_with_constants():
    x = torch.rand(2, 1, 4, 4)
    logits = torch.randn(2, 1, 4, 4)
    bern = reconstruction_nll(logits, x, "bernoulli", 0.1)
    assert bern.shape == (2,)
    summed = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    assert torch.allclose(bern.sum(), summed)
    gauss = reconstruction_nll(logits, x, "gaussian", 0.1)
    mean = torch.sigmoid(logits)
    expected = -torch.distributions.Normal(mean, 0.1).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(gauss, expected, atol=1e-4)
    lap = reconstruction_nll(logits, x, "laplace", 0.1)
    expected = -torch.distributions.Laplace(mean, 0.1).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(lap, expected, atol=1e-4)


def test_vae_kl_warmup_ramps_beta():
    model = _with_optimizers(VAE(VAEConfig(width=4, latent_dim=3, kl_warmup_steps=4), SHAPE))
    x = torch.rand(8, *SHAPE)
    betas = [float(model.training_step(Batch(x))["beta"]) for _ in range(6)]
    assert betas == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]


@pytest.mark.parametrize(
    ("kind", "real", "fake", "d_expected", "g_expected"),
    [
        ("nonsaturating", 0.0, 0.0, 2 * math.log(2), math.log(2)),
        ("saturating", 0.0, 0.0, 2 * math.log(2), -math.log(2)),
        ("hinge", 1.0, -1.0, 0.0, 1.0),
        ("lsgan", 1.0, 0.0, 0.0, 0.5),
        ("wgan_gp", 2.0, -1.0, -3.0, 1.0),
    ],
)
def test_adversarial_losses_at_known_points(kind, real, fake, d_expected, g_expected):
    r, f = torch.full((4,), real), torch.full((4,), fake)
    assert float(GAN_LOSSES[kind].discriminator(r, f)) == pytest.approx(d_expected, abs=1e-6)
    assert float(GAN_LOSSES[kind].generator(f)) == pytest.approx(g_expected, abs=1e-6)


def test_gradient_penalty_is_zero_for_a_unit_lipschitz_linear_critic():
    weight = torch.zeros(1, 1, 4, 4)
    weight[0, 0, 0, 0] = 1.0  # ||grad_x D|| = 1 everywhere

    def critic(x):
        return (x * weight).flatten(1).sum(1)

    penalty = gradient_penalty(critic, torch.rand(8, 1, 4, 4), torch.rand(8, 1, 4, 4))
    assert float(penalty) == pytest.approx(0.0, abs=1e-10)
    assert float(
        gradient_penalty(lambda x: 3 * critic(x), torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4))
    ) == pytest.approx(4.0)


def test_wgan_gp_with_batchnorm_in_d_is_refused():
    with pytest.raises(ConfigError, match="d_norm=none"):
        GANConfig(loss="wgan_gp", d_norm="batch")


def _larsen_losses(
    model: VAEGAN,
    x: torch.Tensor,
    gamma: float,
    beta: float,
    pixel_weight: float = 0.0,
    y: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The paper's losses, written out independently of VAEGAN.losses; with labels ``y``
    (the conditional model) every network reads them, prior samples drawn for them too."""
    mu, logvar = model.encoder(x, y).chunk(2, dim=1)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
    logits_tilde = model.decoder(z, y)
    x_tilde = torch.sigmoid(logits_tilde)
    x_p = torch.sigmoid(model.decoder(torch.randn_like(mu), y))

    def dis(v):
        logit, feats = model.discriminator.forward_with_features(2 * v - 1, model.layer, y)
        return logit.squeeze(1), feats

    (l_x, f_x), (l_t, f_t), (l_p, _) = dis(x), dis(x_tilde), dis(x_p)

    def bce(logit, target):
        return F.binary_cross_entropy_with_logits(logit, torch.full_like(logit, target))

    prior = (0.5 * (mu**2 + logvar.exp() - 1 - logvar)).sum(1).mean()
    llike = (0.5 * (f_x - f_t) ** 2).sum(dim=(1, 2, 3)).mean()
    pixel = F.binary_cross_entropy_with_logits(logits_tilde, x, reduction="sum") / len(x)
    return {
        "encoder": beta * prior + llike + pixel_weight * pixel,
        "decoder": gamma * llike + pixel_weight * pixel + bce(l_t, 1.0) + bce(l_p, 1.0),
        "discriminator": bce(l_x, 1.0) + bce(l_t, 0.0) + bce(l_p, 0.0),
    }


@pytest.mark.parametrize("classes", [0, 3], ids=["unconditional", "conditional"])
def test_vaegan_updates_each_network_from_its_own_loss_only(classes):
    gamma, beta, pixel_weight = 0.5, 2.0, 0.7
    torch.manual_seed(0)
    cfg = VAEGANConfig(
        width=4,
        latent_dim=3,
        gamma=gamma,
        beta=beta,
        pixel_weight=pixel_weight,
        equilibrium_gate=False,
        # Spectral norm's power iteration moves its estimate on every training forward,
        # so separate passes would differ by ~1e-3 for a reason other than leakage.
        spectral_norm=False,
        conditional=classes > 0,
        updates_per_batch=1,  # one update, whose gradients are compared below
    )
    model = _with_optimizers(VAEGAN(cfg, SHAPE, classes))
    x = torch.rand(6, *SHAPE)
    y = torch.tensor([0, 1, 2, 2, 1, 0]) if classes else None
    nets = {
        "encoder": model.encoder,
        "decoder": model.decoder,
        "discriminator": model.discriminator,
    }

    expected = {}
    for name, net in nets.items():  # each gradient from a fresh forward: truly isolated
        torch.manual_seed(1)
        loss = _larsen_losses(model, x, gamma, beta, pixel_weight, y)[name]
        expected[name] = torch.autograd.grad(loss, list(net.parameters()))

    torch.manual_seed(1)
    model.training_step(Batch(x, y))
    for name, net in nets.items():
        got = [p.grad for p in net.parameters()]
        assert _relative_error(got, expected[name]) < 1e-4, name

    # The check can fail: one backward of the summed losses (the known bug) gives the
    # decoder a different gradient, because -L_GAN's gradient leaks into it.
    torch.manual_seed(1)
    total = sum(_larsen_losses(model, x, gamma, beta, pixel_weight, y).values())
    torch.manual_seed(1)
    fresh = _larsen_losses(model, x, gamma, beta, pixel_weight, y)["decoder"]
    leaked = torch.autograd.grad(total, list(model.decoder.parameters()))
    clean = torch.autograd.grad(fresh, list(model.decoder.parameters()))
    assert _relative_error(leaked, clean) > 1e-2


def _relative_error(got, want) -> float:
    """||got - want|| / ||want|| over a whole network's gradient (biases feeding BatchNorm
    have a true gradient of zero, so per-tensor tolerances would only compare noise)."""
    got, want = torch.cat([g.flatten() for g in got]), torch.cat([w.flatten() for w in want])
    return float((got - want).norm() / want.norm())


def test_vaegan_gate_pauses_one_side_never_both():
    model = VAEGAN(VAEGANConfig(width=4, latent_dim=3, equilibrium_gate=True), SHAPE)

    def terms(real, prior):
        return {"bce_real": torch.tensor(real), "bce_prior": torch.tensor(prior)}

    assert model.gate(terms(0.7, 0.7)) == (True, True)
    assert model.gate(terms(0.1, 0.7)) == (False, True)  # D winning: pause D
    assert model.gate(terms(1.5, 0.7)) == (True, False)  # D losing: pause decoder's GAN term
    assert model.gate(terms(0.1, 1.5)) == (True, True)  # would pause both: pause neither
    ungated = VAEGAN(VAEGANConfig(width=4, latent_dim=3, equilibrium_gate=False), SHAPE)
    assert ungated.gate(terms(0.1, 0.7)) == (True, True)


def test_vaegan_gate_really_skips_the_discriminator(monkeypatch):
    torch.manual_seed(0)
    model = _with_optimizers(
        VAEGAN(VAEGANConfig(width=4, latent_dim=3, equilibrium_gate=True), SHAPE)
    )
    monkeypatch.setattr(VAEGAN, "gate", lambda self, terms: (False, True))
    before = [p.clone() for p in model.discriminator.parameters()]
    logs = model.training_step(Batch(torch.rand(6, *SHAPE)))
    assert float(logs["gate_d"]) == 0.0 and float(logs["gate_dec"]) == 1.0
    assert all(torch.equal(a, b) for a, b in zip(before, model.discriminator.parameters()))


def test_vaegan_feature_layer_out_of_range_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="has 2 blocks; use 1..2"):
        VAEGAN(VAEGANConfig(width=4, latent_dim=3, feature_layer=4), SHAPE)


@pytest.mark.parametrize("loss", ["nonsaturating", "hinge", "lsgan", "wgan_gp"])
def test_gan_step_trains_both_networks_and_the_ema(loss):
    torch.manual_seed(0)
    d_norm = "none" if loss == "wgan_gp" else "batch"
    cfg = GANConfig(
        width=4,
        latent_dim=3,
        loss=loss,
        d_norm=d_norm,
        n_critic=2,
        ema_decay=0.5,
        updates_per_batch=1,  # one update: the EMA arithmetic below is for a single step
    )
    model = _with_optimizers(GAN(cfg, SHAPE), name="adam", lr=1e-2)
    g0 = [p.clone() for p in model.generator.parameters()]
    d0 = [p.clone() for p in model.discriminator.parameters()]
    ema0 = [p.clone() for p in model.generator_ema.parameters()]
    logs = model.training_step(Batch(torch.rand(6, *SHAPE)))
    assert {"loss_d", "loss_g", "d_real", "d_fake", "grad_norm_d", "grad_norm_g"} <= set(logs)
    assert ("gradient_penalty" in logs) == (loss == "wgan_gp")
    assert all(torch.isfinite(v) for v in logs.values())
    for before, net in (
        (g0, model.generator),
        (d0, model.discriminator),
        (ema0, model.generator_ema),
    ):
        assert not all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    # First step: the warmed-up decay is min(0.5, 1/10) = 0.1.
    assert float(model.ema_decay_now()) == pytest.approx(min(0.5, 2 / 11))
    first = next(model.generator_ema.parameters())
    assert torch.allclose(first, 0.1 * g0[0] + 0.9 * next(model.generator.parameters()))


def test_gan_generator_step_leaves_discriminator_untouched(monkeypatch):
    torch.manual_seed(0)
    cfg = GANConfig(width=4, latent_dim=3, ema_decay=None, updates_per_batch=3)
    model = _with_optimizers(GAN(cfg, SHAPE))
    calls = []
    original = GAN.update

    def spy(self, losses, skip=frozenset()):
        calls.append(sorted(losses))
        return original(self, losses, skip)

    monkeypatch.setattr(GAN, "update", spy)
    model.training_step(Batch(torch.rand(6, *SHAPE)))
    assert calls == [["discriminator"], ["generator"]] * 3  # D then G, on each slice


@pytest.mark.parametrize("name", MODELS.names())
def test_model_preset_defaults_match_the_dataclass(name):
    """``model=<name>`` composes to <Model>.Config's defaults: configs/model/<name>.yaml
    extends the dataclass's schema and changes none of it (the presets are the defaults)."""
    import dataclasses

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from gentrain.core.paths import config_dir
    from gentrain.core.registry import MODELS

    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        cfg = compose(config_name="train", overrides=[f"model={name}"])
    values = OmegaConf.to_container(cfg.model)
    defaults = {
        f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default
        for f in dataclasses.fields(MODELS.get(name).Config)
    }
    assert values == defaults


def test_the_vaegan_trains_its_autoencoder_faster_than_its_discriminator_unless_told():
    def lrs(**settings):
        model = VAEGAN(VAEGANConfig(width=4, latent_dim=3), SHAPE)
        model.configure_optimizers(OptimizerFactory(OptimizerConfig(**settings), 10))
        return {name: o.param_groups[0]["lr"] for name, o in model.optimizers.items()}

    assert lrs() == {"encoder": 1e-3, "decoder": 1e-3, "discriminator": 2e-4}
    assert lrs(lr=5e-4) == {"encoder": 5e-4, "decoder": 5e-4, "discriminator": 5e-4}
    one = lrs(per_network={"decoder": {"lr": 3e-4}})
    assert one == {"encoder": 1e-3, "decoder": 3e-4, "discriminator": 2e-4}


@pytest.mark.parametrize("config", [GANConfig(), VAEGANConfig()], ids=["gan", "vaegan"])
def test_the_memory_check_sizes_a_spectral_norm_model_as_it_is_built(config):
    """The check builds its meta model without spectral norm's power iterations: the
    parameters it counts are the real model's, and a model too large is still refused."""
    import dataclasses

    from gentrain.models import build_model
    from gentrain.training.memory import _sized_alike, check_model_fits

    assert config.spectral_norm
    with torch.device("meta"):
        real = build_model(config, (1, 28, 28), 10, "mnist")
        sized = build_model(_sized_alike(config), (1, 28, 28), 10, "mnist")

    def shapes(model):  # a parametrised weight is listed after its bias
        return sorted(tuple(p.shape) for p in model.parameters())

    assert shapes(sized) == shapes(real)
    huge = dataclasses.replace(config, width=20000)
    with pytest.raises(ConfigError, match="M parameters: .* Fix: lower model.width"):
        check_model_fits(huge, (1, 28, 28), 10, "mnist", torch.device("cpu"))
