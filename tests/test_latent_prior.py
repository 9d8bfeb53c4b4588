"""The fitted latent prior (ex-post Gaussian mixture): an exact mixture sample from standard
noise, fitted by the trainer before every evaluation and checkpoint, carried by checkpoints."""

from __future__ import annotations

import pytest
import torch

from gentrain.core.errors import ConfigError
from gentrain.models.latent_prior import LatentPrior
from gentrain.models.vae import VAE, VAEConfig
from gentrain.models.vaegan import VAEGANConfig


def _two_clusters(n: int = 6000) -> torch.Tensor:
    """3-d codes: 30 % around (-4, 0, 0) with a tilted covariance, 70 % around (4, 1, -1)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(int(0.3 * n), 3, generator=g) @ torch.tensor(
        [[1.0, 0.0, 0.0], [0.8, 0.5, 0.0], [0.0, 0.3, 0.2]]
    ).T + torch.tensor([-4.0, 0.0, 0.0])
    b = 0.5 * torch.randn(n - len(a), 3, generator=g) + torch.tensor([4.0, 1.0, -1.0])
    return torch.cat([a, b])


def test_standard_noise_maps_to_an_exact_sample_of_the_fitted_mixture():
    prior = LatentPrior(3, 2)
    prior.fit(_two_clusters())
    z = prior(torch.randn(40_000, 3, generator=torch.Generator().manual_seed(1)))
    left = z[:, 0] < 0
    assert left.double().mean() == pytest.approx(0.3, abs=0.01)  # the mixture's weights
    means, tril = prior.means[0], prior.scale_tril[0]  # the one class's mixture
    k = int(means[:, 0].argmin())
    cov = tril[k] @ tril[k].T
    # within a component: its mean and full covariance, the first coordinate (which also
    # picked the component) included
    torch.testing.assert_close(z[left].mean(0), means[k], atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(z[left].T), cov, atol=0.04, rtol=0)
    true = torch.tensor([[1.0, 0.8, 0.0], [0.8, 0.89, 0.15], [0.0, 0.15, 0.13]])
    torch.testing.assert_close(cov, true, atol=0.06, rtol=0)


def test_a_conditional_prior_draws_each_class_from_its_own_mixture():
    codes = _two_clusters()
    labels = (codes[:, 0] > 0).long()  # class 1: the cluster at x = +4, class 0: at -4
    prior = LatentPrior(3, 2, classes=2)
    prior.fit(codes, labels)
    noise = torch.randn(2000, 3, generator=torch.Generator().manual_seed(2))
    wanted = torch.arange(2000) % 2
    z = prior(noise, wanted)
    assert ((z[:, 0] > 0).long() == wanted).double().mean() > 0.999
    # a class with fewer codes than components: one component per code, the rest unused
    few = LatentPrior(3, 4, classes=2)
    few.fit(codes[:1802], torch.cat([torch.zeros(1800), torch.ones(2)]).long())
    assert (few.weights[1] > 0).tolist() == [True, True, False, False]
    assert float(few.weights[1].sum()) == pytest.approx(1.0)
    drawn = few(noise, torch.ones(2000, dtype=torch.long))
    assert torch.isfinite(drawn).all()
    near = torch.cdist(drawn, codes[1800:1802]).min(1).values  # each draw sits by one code
    assert float(near.max()) < 0.1
    tail = torch.tensor([[9.0, 0.0, 0.0], [-9.0, 0.0, 0.0]])  # past every float CDF bound
    edge = few(tail, torch.ones(2, dtype=torch.long))
    assert float(torch.cdist(edge, codes[1800:1802]).min(1).values.max()) < 0.1
    absent = LatentPrior(3, 2, classes=3)  # class 2 has no codes: it draws from all of them
    absent.fit(codes, labels)
    z = absent(noise, torch.full((2000,), 2))
    assert 0.2 < float((z[:, 0] < 0).double().mean()) < 0.4  # both clusters, 30 % / 70 %


def test_the_prior_is_n01_until_fitted_and_deterministic_after():
    prior = LatentPrior(3, 2)
    noise = torch.randn(50, 3)
    assert torch.equal(prior(noise), noise)
    prior.fit(_two_clusters())
    again = LatentPrior(3, 2)
    again.fit(_two_clusters())
    assert torch.equal(prior(noise), again(noise))  # the same codes, the same fit
    assert not torch.allclose(prior(noise), noise)


def test_a_checkpoint_without_the_prior_loads_unfitted_but_a_partial_one_does_not():
    cfg = VAEConfig(width=4, latent_dim=3)
    model = VAE(cfg, (1, 16, 16))
    old = {k: v for k, v in model.state_dict().items() if not k.startswith("latent_prior.")}
    fresh = VAE(cfg, (1, 16, 16))
    fresh.load_state_dict(old)  # written before the mixture existed: samples from N(0, I)
    assert not bool(fresh.latent_prior.fitted)
    partial = {**old, "latent_prior.fitted": torch.tensor(True)}
    with pytest.raises(RuntimeError, match="latent_prior.means"):
        fresh.load_state_dict(partial)


@pytest.mark.parametrize("schema", [VAEConfig, VAEGANConfig])
def test_prior_config_is_checked(schema):
    with pytest.raises(ConfigError, match="prior_components must be >= 0"):
        schema(prior_components=-1)
    with pytest.raises(ConfigError, match="prior_fit_images=5 must be at least"):
        schema(prior_components=10, prior_fit_images=5)


@pytest.mark.parametrize("model", ["vae", "vaegan"])
def test_training_fits_the_prior_before_evaluation_and_checkpoints_carry_it(
    make_config, tmp_path, monkeypatch, model
):
    from gentrain.cli.train import train
    from gentrain.evaluation import Evaluator
    from gentrain.training.restore import load_trained_run

    seen = []
    original = Evaluator.__call__

    def spy(self, m, final=True):
        seen.append(bool(m.latent_prior.fitted))
        return original(self, m, final)

    monkeypatch.setattr(Evaluator, "__call__", spy)
    overrides = [f"model={model}", "model.width=8", "model.prior_components=3"]
    train(make_config(*overrides, "eval.num_samples=64", "eval.nll_samples=0"))
    assert seen and all(seen)  # every evaluation sampled from the fitted mixture
    run = load_trained_run(tmp_path / "run", "cpu")
    assert bool(run.model.latent_prior.fitted)
    noise = run.fixed_noise[:8]
    assert not torch.allclose(run.model.sample(noise), run.model.decode(noise))
    # and with prior_components=0 the samples are the decoder's of N(0, I) noise itself
    train(make_config(*overrides[:2], "model.prior_components=0", "eval.enabled=false",
                      output_dir=tmp_path / "plain"))  # fmt: skip
    plain = load_trained_run(tmp_path / "plain", "cpu")
    assert plain.model.latent_prior is None
    assert torch.equal(plain.model.sample(noise), plain.model.decode(noise))


def test_the_fit_counts_as_training_time_but_not_in_images_per_second(make_config, monkeypatch):
    import time

    from gentrain.cli.train import train

    monkeypatch.setattr(VAE, "fit_to_data", lambda self, images, labels=None: time.sleep(1.0))
    cfg = make_config("model.width=8", "eval.enabled=false")
    metrics = train(cfg)
    images = metrics["step"] * cfg.trainer.batch_size
    assert metrics["train/seconds"] > 1.0  # time-to-quality: the fit is part of training
    # images/s of the steps alone: as if the second of fitting had not been there
    assert metrics["train/images_per_sec"] > images / (metrics["train/seconds"] - 0.9)
