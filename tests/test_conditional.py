"""Conditional models (``model.conditional=true``): labels reach every network, the class
metrics score a known case right, resume stays bit-identical, the class grid has its
layout, and warm starts between conditional models work."""

from __future__ import annotations

import json

import pytest
import torch

from gentrain.data import Batch
from gentrain.models.gan import GAN, GANConfig
from gentrain.models.vae import VAE, VAEConfig
from gentrain.models.vaegan import VAEGAN, VAEGANConfig
from gentrain.training.optim import OptimizerConfig, OptimizerFactory

SHAPE = (1, 16, 16)
CLASSES = 3

# The loss term each model's training step reports that depends on the real images' labels.
MODELS = {
    "vae": (VAE, VAEConfig, {}, "loss"),
    "gan": (GAN, GANConfig, {"conditioning": "projection"}, "d_real"),
    "gan_acgan": (GAN, GANConfig, {"conditioning": "acgan"}, "d_class_loss"),
    "vaegan": (VAEGAN, VAEGANConfig, {}, "prior"),
}


def tiny(name: str, conditional: bool = True, seed: int = 0):
    """A width-4 model with SGD optimisers, seeded so that two calls build the same one."""
    cls, config, extra, _ = MODELS[name]
    torch.manual_seed(seed)
    cfg = config(width=4, latent_dim=3, conditional=conditional, **extra)
    model = cls(cfg, SHAPE, CLASSES) if conditional else cls(cfg, SHAPE)
    model.configure_optimizers(OptimizerFactory(OptimizerConfig(name="sgd", lr=0.1), 10))
    return model


def step(model, batch: Batch, seed: int = 1) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return model.training_step(batch)


@pytest.mark.parametrize("name", list(MODELS))
def test_labels_reach_every_conditional_model(name):
    x = torch.rand(6, *SHAPE)
    labels, others = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([2, 0, 1, 1, 2, 0])
    term = MODELS[name][3]
    logs = step(tiny(name), Batch(x, labels))
    relabelled = step(tiny(name), Batch(x, others))
    again = step(tiny(name), Batch(x, labels))
    assert torch.equal(logs[term], again[term])  # seeded: only the labels differ...
    assert not torch.equal(logs[term], relabelled[term])  # ...and they change the loss

    model = tiny(name).eval()
    noise = torch.randn(6, 3)
    assert not torch.allclose(model.sample(noise, labels), model.sample(noise, others))
    assert torch.equal(model.sample(noise, labels), model.sample(noise, labels))
    if model.has_encoder:  # the encoder and decoder read them too
        assert not torch.allclose(model.reconstruct(x, labels), model.reconstruct(x, others))

    with pytest.raises(ValueError, match=f"the conditional {type(model).__name__} needs a batch"):
        tiny(name).training_step(Batch(x))
    with pytest.raises(ValueError, match="needs a batch with labels"):
        tiny(name).validation_step(Batch(x))


@pytest.mark.parametrize("name", ["vae", "gan", "vaegan"])
def test_an_unconditional_model_ignores_labels(name):
    x = torch.rand(6, *SHAPE)
    without = step(tiny(name, conditional=False), Batch(x))
    labelled = step(tiny(name, conditional=False), Batch(x, torch.tensor([0, 1, 2, 0, 1, 2])))
    assert without.keys() == labelled.keys()
    assert all(torch.equal(without[k], labelled[k]) for k in without), name
    model = tiny(name, conditional=False).eval()
    noise = torch.randn(6, 3)
    assert torch.equal(model.sample(noise), model.sample(noise, torch.tensor([2] * 6)))


# --- the class metrics on real images, whose answer is known ---------------------------------
@pytest.fixture(scope="module")
def mnist_evaluator(data_dir, cache_dir):
    """The debug=fast evaluation's classifier (512 MNIST images, cached for the session)."""
    from gentrain.data import DatasetConfig, build_dataset
    from gentrain.evaluation import EvalConfig, Evaluator

    data = build_dataset(DatasetConfig(name="mnist", root=str(data_dir), download=False, limit=512))
    cfg = EvalConfig(num_samples=512, kid_subsets=10, kid_subset_size=64, min_accuracy=0.0)
    return Evaluator(cfg, data, torch.device("cpu"), cache_dir), data


def test_conditional_accuracy_of_real_images_is_the_classifiers_and_chance_when_shuffled(
    mnist_evaluator,
):
    evaluator, data = mnist_evaluator
    feats, logits = evaluator.embed(data.val)
    accuracy = evaluator.info["eval/classifier_accuracy"]  # on these very test images
    assert accuracy > 0.5  # a classifier to speak of: else "chance" would say nothing
    true = evaluator.class_metrics(feats, logits, data.val_labels)
    assert true["val/cond_accuracy"] == pytest.approx(accuracy, abs=0.01)
    shuffle = torch.randperm(len(data.val_labels), generator=torch.Generator().manual_seed(0))
    shuffled = evaluator.class_metrics(feats, logits, data.val_labels[shuffle])
    assert shuffled["val/cond_accuracy"] == pytest.approx(0.10, abs=0.03)

    # Intra-class FID of real *train* images (not the test images it compares with): small
    # with their true classes, large when each class holds a mix of digits.
    feats, logits = evaluator.embed(data.train)
    true = evaluator.class_metrics(feats, logits, data.train_labels)
    shuffled = evaluator.class_metrics(feats, logits, data.train_labels[shuffle])
    assert true["eval/intra_fid_classes"] == shuffled["eval/intra_fid_classes"] == 10
    assert 0 < true["val/intra_fid"] < shuffled["val/intra_fid"] / 4


def test_score_images_adds_class_metrics_only_with_labels(mnist_evaluator):
    evaluator, data = mnist_evaluator
    plain = evaluator.score_images(data.train[:128])
    assert "val/cond_accuracy" not in plain and "val/intra_fid" not in plain
    labelled = evaluator.score_images(data.train[:128], data.train_labels[:128])
    assert labelled["val/cond_accuracy"] > 0.5 and labelled["val/intra_fid"] > 0
    assert labelled["val/fid"] == pytest.approx(plain["val/fid"])


# --- the class grid ---------------------------------------------------------------------------
def test_class_grid_is_one_row_per_class_and_one_column_per_noise_row(monkeypatch):
    model = tiny("gan").eval()
    noise = torch.randn(4, 3)
    calls = []
    original = type(model).sample

    def spy(self, noise, labels=None):
        calls.append((noise.clone(), labels.clone()))
        return original(self, noise, labels)

    monkeypatch.setattr(type(model), "sample", spy)
    images, per_row = model.class_grid(noise)
    assert per_row == 4 and images.shape == (CLASSES * 4, *SHAPE)
    (drawn, labels), *_ = calls
    assert labels.view(CLASSES, 4).tolist() == [[c] * 4 for c in range(CLASSES)]  # row r: class r
    assert all(torch.equal(row, noise) for row in drawn.view(CLASSES, 4, 3))  # column j: noise j
    # And the images are those draws: row r, column j is class r from noise row j.
    for r in range(CLASSES):
        for j in range(4):
            alone = original(model, noise[j : j + 1], torch.tensor([r]))
            assert torch.allclose(images[r * 4 + j], alone[0].clamp(0, 1), atol=1e-6)


# --- training runs on real MNIST: resume, the grid, warm starts --------------------------------
def _weights(run):
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["model"]


@pytest.mark.parametrize("model", ["gan", "vae"])
def test_a_resumed_conditional_run_is_bit_identical(make_config, tmp_path, model):
    common = [
        f"model={model}",
        "model.conditional=true",
        "model.width=8",
        "dataset.limit=128",
        "trainer.max_steps=null",
        "trainer.checkpoint_every_n_steps=3",
        "eval.nll_samples=0",  # the VAE's NLL bound: not what this test is about
    ]
    straight, first, resumed = tmp_path / "straight", tmp_path / "first", tmp_path / "resumed"
    expected = train_run(make_config(*common, "trainer.max_epochs=2", output_dir=straight))
    train_run(make_config(*common, "trainer.max_epochs=1", output_dir=first))
    after_one = _weights(first)
    got = train_run(
        make_config(
            *common,
            "trainer.max_epochs=2",
            f"trainer.resume={first / 'checkpoints' / 'last.ckpt'}",
            output_dir=resumed,
        )
    )
    assert got["step"] == 8
    a, b = _weights(straight), _weights(first)  # resumed in place
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    key = next(k for k in a if k.endswith("weight"))
    assert not torch.equal(after_one[key], a[key])  # the resumed run really trained on
    # The class metrics of the same weights, from the same seeded noise: the same numbers.
    for key in ("val/cond_accuracy", "val/intra_fid"):
        assert got[key] == expected[key], key
    history = [json.loads(line) for line in (first / "history.jsonl").open()]
    assert all("val/cond_accuracy" in r for r in history)


def train_run(cfg):
    from gentrain.cli.train import train

    return train(cfg)


def test_the_samples_grid_of_a_conditional_run_is_classes_by_columns(
    make_config, tmp_path, monkeypatch
):
    from PIL import Image

    from gentrain.cli.train import train
    from gentrain.training.trainer import Trainer

    grids = {}
    original = Trainer._write_final_grids

    def keep(self):
        grids.update(self.grids)
        original(self)

    monkeypatch.setattr(Trainer, "_write_final_grids", keep)
    train(make_config("model=gan", "model.conditional=true", "model.width=8", "eval.enabled=false"))
    # debug=fast: 16 grid images, so 4 columns (sqrt) of 10 classes, 28-px digits, 2-px padding
    size = (10 * 30 + 2, 4 * 30 + 2)
    assert tuple(grids["samples"].shape) == (3, *size)
    assert Image.open(tmp_path / "run" / "images" / "samples.png").size == size[::-1]


# --- warm starts ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cvae_run(tmp_path_factory, data_dir, cache_dir):
    from test_warm_start import tiny_run

    out = tmp_path_factory.mktemp("cvae")
    return tiny_run(out, data_dir, cache_dir, "model.latent_dim=4", "model.conditional=true")


MNIST = (1, 28, 28)


def test_a_cvae_warm_starts_a_cvaegan_and_a_cgan(cvae_run):
    from gentrain.training.warm_start import warm_start

    source = _weights(cvae_run)
    model = VAEGAN(VAEGANConfig(width=8, latent_dim=4, conditional=True), MNIST, 10)
    summary = warm_start(model, cvae_run)
    assert "a VAE at step 4" in summary and "Fresh: discriminator" in summary
    copied = [k for k in model.state_dict() if k.startswith(("encoder.", "decoder."))]
    # the label's parts too: the encoder's one-hot columns, conditional BatchNorm's embeddings
    assert any(".scale." in k for k in copied)
    for key in copied:
        assert torch.equal(model.state_dict()[key], source[key]), key

    gan = GAN(GANConfig(width=8, latent_dim=4, conditional=True), MNIST, 10)
    warm_start(gan, cvae_run)
    for key, value in gan.generator.state_dict().items():
        assert torch.equal(value, source[f"decoder.{key}"]), key
        assert torch.equal(gan.generator_ema.state_dict()[key], value)


def test_an_unconditional_vae_into_a_cvaegan_is_refused_with_the_fix(tmp_path, data_dir, cache_dir):
    from test_warm_start import tiny_run

    from gentrain.core.errors import ConfigError
    from gentrain.training.warm_start import warm_start

    vae = tiny_run(tmp_path / "vae", data_dir, cache_dir, "model.latent_dim=4")
    model = VAEGAN(VAEGANConfig(width=8, latent_dim=4, conditional=True), MNIST, 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError) as info:
        warm_start(model, vae)
    message = str(info.value)
    assert "the VAE's weights do not fit this VAEGAN" in message
    # The label's 10 one-hot inputs are what does not fit, and the one knob that differs:
    assert "encoder.head.weight: this model (8, 794), checkpoint encoder.head.weight (8, 784)" in (
        message
    )
    assert "Fix: add model.conditional=false to this command (the source run's setting)" in message
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_an_unbalanced_set_is_sampled_in_its_own_class_proportions(tmp_path):
    """FID, KID, precision and recall compare the samples with the real images: on a folder
    where one class holds most images (as the emoji folder's people do), the samples
    hold the classes in the training split's proportions; a balanced set in turn."""
    from gentrain.data import ImageData
    from gentrain.evaluation import EvalConfig, Evaluator
    from gentrain.evaluation.evaluator import labels_in_proportion

    assert labels_in_proportion(torch.arange(30) % 3, 7).tolist() == [0, 1, 2, 0, 1, 2, 0]
    train_labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    data = ImageData(
        name="folder",
        train=torch.zeros(100, 1, 28, 28, dtype=torch.uint8),
        val=torch.zeros(10, 1, 28, 28, dtype=torch.uint8),
        train_labels=train_labels,
        val_labels=torch.arange(10) % 3,
        class_names=["people", "objects", "flags"],
    )
    cfg = EvalConfig(num_samples=50, batch_size=20)
    evaluator = Evaluator(cfg, data, torch.device("cpu"), tmp_path)
    model = VAE(VAEConfig(width=8, latent_dim=4, conditional=True), (1, 28, 28), num_classes=3)
    images, labels = evaluator.generate(model.eval())
    assert images.shape == (50, 1, 28, 28)
    assert torch.bincount(labels).tolist() == [30, 15, 5]
    assert labels[:3].tolist() == [0, 1, 2]  # spread over the batches, not sorted by class
