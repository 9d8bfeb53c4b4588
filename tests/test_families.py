"""Network families and training recipes: shapes, one step, warm start, resume, the maths."""

from __future__ import annotations

import math

import pytest
import torch

from gentrain.cli.train import train
from gentrain.core.errors import ConfigError
from gentrain.data import Batch
from gentrain.models.adversarial import r1_penalty
from gentrain.models.augment import augment, cutout, parse_policy, translation
from gentrain.models.gan import GAN, GANConfig
from gentrain.models.likelihoods import discretized_logistic_nll
from gentrain.models.nets import FAMILIES, ImageDecoder, ImageEncoder
from gentrain.models.vae import VAE, VAEConfig, free_bits_kl
from gentrain.models.vaegan import VAEGAN, VAEGANConfig
from gentrain.training.optim import OptimizerConfig, OptimizerFactory
from gentrain.training.warm_start import warm_start

CONV_FAMILIES = [f for f in FAMILIES if f != "mlp"]


@pytest.mark.parametrize("family", CONV_FAMILIES)
@pytest.mark.parametrize(("shape", "sides"), [((1, 28, 28), [14, 7]), ((3, 32, 32), [16, 8, 4])])
def test_every_conv_family_maps_images_to_vectors_and_back(family, shape, sides):
    encoder = ImageEncoder(shape, 8, 5, norm="batch", spectral_norm=True, family=family, depth=1)
    decoder = ImageDecoder(shape, 8, 3, family=family, depth=1)
    x = torch.rand(2, *shape)
    assert encoder(x).shape == (2, 5)
    assert encoder.num_blocks == len(sides)
    for layer, side in enumerate(sides, start=1):
        _, features = encoder.forward_with_features(x, layer)
        assert features.shape[-2:] == (side, side)
    assert decoder(torch.randn(2, 3)).shape == (2, *shape)


@pytest.mark.parametrize("num_classes", [0, 10])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_the_mlp_has_depth_plus_one_hidden_layers_of_16_width_units(shape, num_classes):
    labels = torch.arange(2) if num_classes else None
    conditioning = "projection" if num_classes else "concat"
    encoder = ImageEncoder(
        shape,
        4,
        5,
        "batch",
        True,
        "mlp",
        depth=2,
        num_classes=num_classes,
        conditioning=conditioning,
    )
    decoder = ImageDecoder(shape, 4, 3, "batch", "mlp", depth=2, num_classes=num_classes)
    x = torch.rand(2, *shape)
    assert encoder(x, labels).shape == (2, 5)
    assert encoder.num_blocks == 3
    for layer in (1, 2, 3):
        assert encoder.forward_with_features(x, layer, labels)[1].shape == (2, 64)
    assert decoder(torch.randn(2, 3), labels).shape == (2, *shape)
    hidden = [m for m in decoder.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in hidden] == [64, 64, 64, math.prod(shape)]


def test_64px_images_get_four_levels_in_the_resnet():
    encoder = ImageEncoder((3, 64, 64), 8, 1, family="resnet", depth=0)
    assert encoder.num_blocks == 4
    assert ImageDecoder((3, 64, 64), 8, 4, family="resnet", depth=0)(torch.randn(1, 4)).shape == (
        1,
        3,
        64,
        64,
    )


@pytest.mark.parametrize("family", ["dcgan_deep", "resnet", "mlp"])
def test_depth_adds_layers(family):
    def count(depth):
        return sum(
            p.numel()
            for p in ImageDecoder((1, 28, 28), 8, 4, family=family, depth=depth).parameters()
        )

    assert count(0) < count(1) < count(2)


def test_unknown_family_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="available: dcgan, dcgan_deep, resnet, mlp"):
        GANConfig(family="stylegan")
    with pytest.raises(ConfigError, match="model.depth must be >= 0"):
        VAEConfig(depth=-1)


def _optimised(model):
    model.configure_optimizers(OptimizerFactory(OptimizerConfig(name="adam", lr=1e-3), 10))
    return model


MODELS = {
    "vae": lambda family: VAE(
        VAEConfig(
            family=family,
            width=4,
            latent_dim=3,
            likelihood="discretized_logistic",
            binarize=False,
            free_bits=0.1,
        ),
        (1, 16, 16),
    ),
    "gan": lambda family: GAN(
        GANConfig(
            family=family,
            width=4,
            latent_dim=3,
            loss="hinge",
            d_norm="none",
            spectral_norm=True,
            r1_gamma=1.0,
            augment=["translation", "cutout"],
        ),
        (1, 16, 16),
    ),
    "vaegan": lambda family: VAEGAN(
        VAEGANConfig(family=family, width=4, latent_dim=3, spectral_norm=True), (1, 16, 16)
    ),
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", list(MODELS))
def test_one_step_of_every_model_with_every_family(name, family):
    torch.manual_seed(0)
    model = _optimised(MODELS[name](family))
    before = {k: v.clone() for k, v in model.named_parameters()}
    x = torch.rand(8, 1, 16, 16)
    logs = model.training_step(Batch(x))
    for key, value in logs.items():  # scalars on the batch's device, ready to log
        assert value.dim() == 0 and value.device == x.device, key
        assert torch.isfinite(value), key
    moved = [k for k, v in model.named_parameters() if not torch.equal(v, before[k])]
    assert any("decoder" in k or "generator" in k for k in moved)
    if name != "vae":
        assert any(k.startswith("discriminator") for k in moved)
    assert model.sample(torch.randn(4, 3)).shape == (4, 1, 16, 16)


COLOUR_MODELS = {
    "vae": lambda family, c: VAE(
        VAEConfig(family=family, width=4, latent_dim=3, conditional=c, binarize=False),
        (3, 64, 64),
        num_classes=3 if c else 0,
    ),
    "gan": lambda family, c: GAN(
        GANConfig(  # one update a batch and no EMA: the shapes are what is tested here
            family=family,
            width=4,
            latent_dim=3,
            conditional=c,
            augment=["color"],
            updates_per_batch=1,
            ema_decay=None,
        ),
        (3, 64, 64),
        num_classes=3 if c else 0,
    ),
    "vaegan": lambda family, c: VAEGAN(
        VAEGANConfig(family=family, width=4, latent_dim=3, conditional=c),
        (3, 64, 64),
        num_classes=3 if c else 0,
    ),
}


@pytest.mark.parametrize("side", [32, 64])
@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", list(COLOUR_MODELS))
def test_colour_images_of_32_and_64_px_train_every_model_and_family(
    name, family, conditional, side
):
    """RGB at both sizes a user's folder takes, plain and conditional: one step moves the
    networks, and samples come out at the data's shape."""
    torch.manual_seed(0)
    build = COLOUR_MODELS[name]
    model = build(family, conditional)
    if side != 64:  # the same recipe at the other size
        cfg = model.cfg
        model = type(model)(cfg, (3, side, side), num_classes=3 if conditional else 0)
    model = _optimised(model)
    before = {k: v.clone() for k, v in model.named_parameters()}
    labels = torch.arange(8) % 3 if conditional else None
    logs = model.training_step(Batch(torch.rand(8, 3, side, side), labels))
    assert all(torch.isfinite(v) for v in logs.values())
    moved = [k for k, v in model.named_parameters() if not torch.equal(v, before[k])]
    assert any("decoder" in k or "generator" in k for k in moved)
    drawn_for = torch.arange(4) % 3 if conditional else None
    assert model.sample(torch.randn(4, 3), drawn_for).shape == (4, 3, side, side)


def test_r1_penalty_of_a_linear_critic_is_its_squared_weight_norm():
    weight = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    real = torch.rand(5, 1, 2, 2, requires_grad=True)
    scores = (real.squeeze(1) * weight).sum((1, 2))
    assert torch.allclose(r1_penalty(scores, real), weight.pow(2).sum())


def test_r1_is_logged_and_trains_d_towards_a_flat_critic():
    torch.manual_seed(0)
    model = _optimised(
        GAN(GANConfig(width=4, latent_dim=3, d_norm="none", r1_gamma=10.0), (1, 16, 16))
    )
    assert "r1_penalty" in model.training_step(Batch(torch.rand(8, 1, 16, 16)))


def test_diffaugment_translation_moves_whole_pixels_and_passes_gradients():
    torch.manual_seed(0)
    x = torch.arange(1.0, 65.0).view(1, 1, 8, 8).repeat(16, 1, 1, 1).requires_grad_(True)
    shifted = translation(x)
    for image in shifted.detach():
        kept = image[image > 0]
        # Every kept value is an original pixel, and neighbours stay neighbours.
        assert set(kept.tolist()) <= set(range(1, 65))
        assert len(kept) >= 6 * 6  # at most 1 px each way for an 8 px side (1/8)
    shifted.sum().backward()
    assert x.grad is not None and x.grad.sum() > 0
    assert not all(torch.equal(s, x[0]) for s in shifted.detach())  # really random


def test_diffaugment_cutout_zeroes_one_square_of_half_the_side():
    torch.manual_seed(0)
    out = cutout(torch.ones(32, 1, 8, 8))
    zeros = (out == 0).flatten(1).sum(1)
    assert (zeros > 0).all() and (zeros <= 16).all()
    assert (zeros == 16).any()  # a square fully inside is 4 x 4


def test_unknown_augmentation_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="available: color, translation, cutout"):
        parse_policy(["translation", "rotate"])
    assert parse_policy(["translation", "cutout"]) == ("translation", "cutout")
    assert torch.equal(augment(torch.ones(2, 1, 4, 4), ()), torch.ones(2, 1, 4, 4))


def test_discretized_logistic_is_a_distribution_over_the_256_grey_levels():
    levels = torch.arange(256.0).view(256, 1, 1, 1) / 255
    for mean, log_scale in [(0.3, -3.0), (0.999, -6.0), (0.5, 1.0)]:
        logits = torch.full_like(levels, math.log(mean / (1 - mean)))
        nll = discretized_logistic_nll(logits, levels, torch.tensor(log_scale))
        assert torch.isfinite(nll).all()
        assert math.isclose(float((-nll).exp().sum()), 1.0, abs_tol=2e-3)


def test_free_bits_floor_only_the_penalised_kl():
    mu = torch.tensor([[0.0, 3.0], [0.1, 3.0]], requires_grad=True)
    logvar = torch.zeros(2, 2)
    penalised = free_bits_kl(mu, logvar, free_bits=1.0)
    # Dimension 0 carries ~0.0025 nats, under the floor: counted as 1.0, no gradient.
    assert math.isclose(float(penalised.detach()), 1.0 + 4.5, rel_tol=1e-6)
    penalised.backward()
    assert torch.all(mu.grad[:, 0] == 0) and torch.all(mu.grad[:, 1] != 0)


def test_iwae_nll_decodes_in_chunks_without_changing_the_estimate(monkeypatch):
    torch.manual_seed(0)
    model = VAE(VAEConfig(width=4, latent_dim=3), (1, 16, 16)).eval()
    x = torch.rand(3, 1, 16, 16)
    torch.manual_seed(1)
    whole = model.importance_weighted_nll(x, 20)
    monkeypatch.setattr(VAE, "IWAE_IMAGES_PER_PASS", 7)  # chunks of 2 samples of 3 images
    torch.manual_seed(1)
    assert torch.allclose(model.importance_weighted_nll(x, 20), whole, atol=1e-5)


def _tiny(make_config, out, *overrides):
    return train(
        make_config(
            "model.width=4",
            "dataset.limit=128",
            "trainer.max_steps=null",
            "eval.enabled=false",
            *overrides,
            output_dir=out,
        )
    )


@pytest.mark.parametrize("family", ["dcgan_deep", "resnet", "mlp"])
def test_warm_start_between_matching_families(make_config, tmp_path, family):
    arch = [f"model.family={family}", "model.latent_dim=4", "model.encoder_norm=batch"]
    _tiny(make_config, tmp_path / "vae", "model=vae", *arch, "trainer.max_epochs=1")
    model = VAEGAN(
        VAEGANConfig(family=family, width=4, latent_dim=4, encoder_norm="batch"), (1, 28, 28)
    )
    warm_start(model, tmp_path / "vae")
    source = torch.load(tmp_path / "vae" / "checkpoints" / "last.ckpt", weights_only=True)
    for key, value in model.state_dict().items():
        if key.startswith(("encoder.", "decoder.")):
            assert torch.equal(value, source["model"][key]), key
    other = "dcgan" if family == "resnet" else "resnet"
    mismatched = VAEGAN(VAEGANConfig(family=other, width=4, latent_dim=4), (1, 28, 28))
    with pytest.raises(ConfigError):
        warm_start(mismatched, tmp_path / "vae")


@pytest.mark.parametrize(
    "overrides",
    [
        [
            "model=gan",
            "model.family=dcgan_deep",
            "model.d_norm=none",
            "model.spectral_norm=true",
            "model.r1_gamma=1.0",
            "model.augment=[translation,cutout]",
            "model.loss=hinge",
        ],
        [
            "model=vae",
            "model.family=resnet",
            "model.likelihood=discretized_logistic",
            "model.binarize=false",
            "model.free_bits=0.05",
        ],
    ],
    ids=["gan-deep-recipes", "vae-resnet-logistic"],
)
def test_new_families_and_recipes_resume_bit_identically(make_config, tmp_path, overrides):
    common = [*overrides, "trainer.checkpoint_every_n_steps=3"]
    _tiny(make_config, tmp_path / "straight", *common, "trainer.max_epochs=2")
    _tiny(make_config, tmp_path / "first", *common, "trainer.max_epochs=1")
    first = tmp_path / "first" / "checkpoints" / "last.ckpt"
    _tiny(
        make_config,
        tmp_path / "resumed",
        *common,
        "trainer.max_epochs=2",
        f"trainer.resume={first}",
    )
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(first, weights_only=True)  # resumed in place
    assert a["step"] == b["step"] == 8
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_the_ema_generator_samples_with_batchnorm_statistics_of_its_own():
    torch.manual_seed(0)
    model = _optimised(GAN(GANConfig(width=4, latent_dim=3), (1, 16, 16)))
    for _ in range(3):
        model.training_step(Batch(torch.rand(8, 1, 16, 16)))
    model.eval()

    def running_mean(network):
        return next(
            m for m in network.modules() if isinstance(m, torch.nn.BatchNorm2d)
        ).running_mean

    copied = running_mean(model.generator_ema).clone()
    assert torch.equal(copied, running_mean(model.generator))  # ema_update copies the live G's
    noise = torch.randn(6, 3)
    state = torch.random.get_rng_state()
    samples = model.sample(noise)
    assert torch.equal(torch.random.get_rng_state(), state)  # a private, seeded draw
    assert not torch.allclose(running_mean(model.generator_ema), copied)
    # A checkpoint's statistics are recomputed after loading too, to the same values.
    corrupted = {
        key: value + 5.0
        if key.startswith("generator_ema.") and key.endswith("running_mean")
        else value
        for key, value in model.state_dict().items()
    }
    model.load_state_dict(corrupted)
    assert torch.equal(model.sample(noise), samples)


@pytest.mark.parametrize(("make", "config"), [(GAN, GANConfig), (VAEGAN, VAEGANConfig)])
def test_updates_per_batch_steps_on_slices_as_if_they_were_batches(make, config):
    def model(updates):
        torch.manual_seed(0)
        cfg = config(width=4, latent_dim=3, updates_per_batch=updates)
        return _optimised(make(cfg, (1, 16, 16)))

    x = torch.rand(8, 1, 16, 16)
    sliced, one_by_one = model(2), model(1)
    torch.manual_seed(1)
    logs = sliced.training_step(Batch(x))
    torch.manual_seed(1)
    halves = [one_by_one.training_step(Batch(half)) for half in x.split(4)]
    for (key, a), b in zip(sliced.state_dict().items(), one_by_one.state_dict().values()):
        assert torch.equal(a, b), key
    untrained = model(1).state_dict()
    assert any(not torch.equal(v, untrained[k]) for k, v in sliced.state_dict().items())
    for key in ("gan_d", "loss_d"):
        if key in logs:
            assert torch.allclose(logs[key], (halves[0][key] + halves[1][key]) / 2)


def test_a_batch_splits_into_near_equal_slices_with_their_labels():
    batch = Batch(torch.arange(10.0).view(10, 1, 1, 1), torch.arange(10))
    parts = batch.split(4)
    assert [len(p) for p in parts] == [3, 3, 3, 1]
    assert all(torch.equal(p.images.flatten().long(), p.labels) for p in parts)
    assert [len(p) for p in Batch(torch.zeros(2, 1, 1, 1)).split(4)] == [1, 1]


def test_augmentation_reaches_ds_real_and_fake_inputs_alike_and_never_the_samples(monkeypatch):
    """Every image D judges in training (reals and fakes, D's step and G's) goes through the
    policy; what the model samples, grids included, does not."""
    import gentrain.models.gan as gan_module

    seen = []

    def spy(x, policy, p=1.0):
        out = augment(x, policy, p)
        seen.append((x.detach().clone(), out.detach().clone()))
        return out

    monkeypatch.setattr(gan_module, "augment", spy)
    torch.manual_seed(0)
    model = _optimised(
        GAN(GANConfig(width=4, latent_dim=3, augment=["cutout"], updates_per_batch=1), (3, 16, 16))
    )
    real = torch.rand(8, 3, 16, 16)
    model.training_step(Batch(real))
    assert len(seen) == 3  # D's real and fake passes, G's pass
    assert torch.allclose(seen[0][0], real * 2 - 1)  # the reals themselves went in
    for before, after in seen:
        assert all(not torch.equal(b, a) for b, a in zip(before, after))  # each image cut
    seen.clear()
    model.eval()
    noise = torch.randn(4, 3)
    samples = model.sample(noise)
    grids = model.previews(noise, Batch(real[:4]))
    assert seen == [] and samples.shape == (4, 3, 16, 16) and grids


def test_ada_raises_the_strength_while_d_is_sure_of_the_reals_and_lowers_it_after():
    from gentrain.models.augment import AdaptiveStrength

    ada, p = AdaptiveStrength(target=0.6, images_to_full=100), torch.zeros(())
    for _ in range(10):  # D scores 90 % of reals positive: r_t 0.8 > 0.6
        r_t = ada.adjust(p, torch.tensor([1.0] * 9 + [-1.0]))
    assert r_t == pytest.approx(0.8) and p.item() == pytest.approx(1.0)  # 10 x 10/100, capped
    ada.adjust(p, torch.tensor([-1.0, 1.0] * 5))  # r_t 0 < 0.6: back down
    assert p.item() == pytest.approx(0.9)
    strength = torch.tensor(0.0)
    assert torch.equal(
        augment(torch.ones(4, 1, 8, 8), ("cutout",), strength), torch.ones(4, 1, 8, 8)
    )


def test_ada_adapts_in_training_and_its_strength_is_saved_with_the_weights():
    torch.manual_seed(0)
    cfg = GANConfig(width=4, latent_dim=3, augment=["color", "translation"], ada_target=0.6)
    model = _optimised(GAN(cfg, (3, 16, 16)))
    assert model.augment_p.item() == 0.0  # ADA starts unaugmented
    model.augment_p.fill_(0.5)
    logs = model.training_step(Batch(torch.rand(8, 3, 16, 16)))
    assert {"augment_p", "ada_rt"} <= logs.keys()
    assert model.state_dict()["augment_p"].item() not in (0.0, 0.5)  # moved, and saved
    plain = GAN(GANConfig(width=4, latent_dim=3, augment=["color"]), (3, 16, 16))
    assert "augment_p" not in plain.state_dict()  # checkpoints without ADA keep their keys
    with pytest.raises(ConfigError, match="adapts the strength of model.augment"):
        GANConfig(ada_target=0.6)  # no policy to adapt


def test_the_vaegan_augments_x_and_its_reconstruction_alike_so_a_perfect_one_costs_nothing():
    from gentrain.models.augment import augment_alike

    torch.manual_seed(0)
    x = torch.rand(6, 3, 16, 16) * 2 - 1
    policy = ("color", "translation", "cutout")
    start = torch.get_rng_state()
    same, other = augment_alike([x, x.clone()], policy)
    assert torch.equal(same, other) and not torch.equal(same, x)  # one transform, not none
    after = torch.rand(1)
    torch.set_rng_state(start)
    augment(x, policy)
    assert torch.equal(torch.rand(1), after)  # the random stream moved as for one batch

    model = VAEGAN(VAEGANConfig(width=4, latent_dim=3, augment=list(policy)), (3, 16, 16))
    images = torch.rand(6, 3, 16, 16)
    seen_x, seen_tilde, seen_p = model.discriminator_inputs(images, images.clone(), images)
    assert torch.equal(seen_x, seen_tilde)  # X~ = X: the learned similarity sees no gap
    assert not torch.equal(seen_x, seen_p)  # Xp: a transform of its own
    model.eval()  # validation and evaluation see the images as they are
    assert torch.equal(model.discriminator_inputs(images, images, images)[0], images * 2 - 1)
