"""Evaluation metrics: sanity of FID/KID/precision/recall, the classifier cache, the NLL."""

from __future__ import annotations

import time

import pytest
import torch

from gentrain.core.errors import GentrainError
from gentrain.data import DatasetConfig, ImageData, build_dataset
from gentrain.evaluation import EvalConfig, Evaluator
from gentrain.evaluation import classifier as classifier_module
from gentrain.evaluation.precision_recall import precision_recall
from gentrain.models.vae import VAE, VAEConfig


@pytest.fixture(scope="module")
def small_mnist(data_dir):
    return build_dataset(
        DatasetConfig(name="mnist", root=str(data_dir), download=False, limit=2000)
    )


@pytest.fixture(scope="module")
def evaluator(small_mnist, tmp_path_factory):
    cfg = EvalConfig(
        num_samples=500,
        kid_subsets=20,
        kid_subset_size=200,
        min_accuracy=0.8,
        nll_samples=16,
        nll_images=100,
    )
    return Evaluator(cfg, small_mnist, torch.device("cpu"), tmp_path_factory.mktemp("cache"))


def test_precision_recall_of_identical_and_disjoint_sets():
    points = torch.randn(200, 8)
    assert precision_recall(points, points.clone(), k=3) == (1.0, 1.0)
    assert precision_recall(points, points + 100.0, k=3) == (0.0, 0.0)
    # A generator covering half of the real modes: high precision, low recall.
    real = torch.cat([torch.randn(100, 2) * 0.1, torch.randn(100, 2) * 0.1 + 10])
    fake = torch.randn(200, 2) * 0.1
    precision, recall = precision_recall(real, fake, k=3)
    assert precision > 0.9 and recall < 0.6


def test_fid_kid_are_zero_on_identical_sets_small_between_splits_large_for_noise(
    evaluator, small_mnist
):
    train_feats, _ = evaluator.embed(small_mnist.train[:500])
    test_feats, _ = evaluator.embed(small_mnist.val[:500])
    noise_feats, _ = evaluator.embed(torch.rand(500, 1, 28, 28))
    same = evaluator.distances(test_feats, test_feats.clone())
    between = evaluator.distances(test_feats, train_feats)
    noise = evaluator.distances(test_feats, noise_feats)
    assert same["fid"] == pytest.approx(0.0, abs=1e-6)
    # KID draws random subsets of each set, so on one set it is ~0 only up to its noise.
    assert abs(same["kid"]) < 1e-3 * noise["kid"]
    assert noise["fid"] > 20 * between["fid"] and noise["kid"] > 20 * between["kid"]


def test_the_classifier_is_cached_and_reused(evaluator, small_mnist, monkeypatch):
    evaluator.embed(small_mnist.val[:10])  # trains (or loads) once
    accuracy = evaluator.info["eval/classifier_accuracy"]
    assert accuracy >= 0.8
    cached = list((evaluator.cache_dir / "classifiers").glob("mnist-1x28x28-n2000-*.pt"))
    assert len(cached) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier should have been reused")

    monkeypatch.setattr(classifier_module, "train_classifier", no_training)
    model, again = classifier_module.load_or_train_classifier(
        small_mnist, evaluator.cache_dir, torch.device("cpu"), min_accuracy=0.8
    )
    assert again == accuracy


def test_a_weak_classifier_is_refused_and_not_cached(small_mnist, tmp_path):
    with pytest.raises(GentrainError, match="below the 1.00"):
        classifier_module.load_or_train_classifier(
            small_mnist, tmp_path, torch.device("cpu"), min_accuracy=1.0, epochs=1
        )
    assert not list(tmp_path.rglob("*.pt"))


def test_importance_weighted_nll_is_tighter_than_the_elbo():
    torch.manual_seed(0)
    model = VAE(VAEConfig(width=4, latent_dim=3), (1, 16, 16)).eval()
    x = torch.rand(20, 1, 16, 16).round()
    with torch.no_grad():
        negative_elbo = torch.stack([model.losses(x, 1.0)["loss"] for _ in range(50)]).mean()
        nll = model.importance_weighted_nll(x, k=64).mean()
        nll_k1 = torch.stack([model.importance_weighted_nll(x, k=1).mean() for _ in range(50)])
    assert nll < negative_elbo
    assert float(nll_k1.mean()) == pytest.approx(float(negative_elbo), rel=0.02)


def test_evaluator_reports_every_metric_with_its_counts(evaluator):
    torch.manual_seed(0)
    model = VAE(VAEConfig(width=8, latent_dim=4), (1, 28, 28))
    metrics = evaluator(model)
    for key in (
        "val/fid",
        "val/kid",
        "val/kid_std",
        "val/is",
        "val/precision",
        "val/recall",
        "val/fid_floor",
        "val/kid_floor",
        "val/recon_mse",
        "val/nll_iwae",
        "eval/num_generated",
        "eval/num_real",
        "eval/nll_k",
        "eval/classifier_accuracy",
    ):
        assert key in metrics, key
    assert metrics["eval/num_generated"] == 500 and metrics["eval/nll_k"] == 16
    assert metrics["val/fid"] > metrics["val/fid_floor"]  # an untrained model is worse
    # A tighter bound than the ELBO; an untrained decoder barely uses z, so the two nearly
    # coincide and only sampling noise (a few hundredths of a nat) separates them. A
    # missing log k or a wrong proposal density would be off by nats.
    assert metrics["val/nll_iwae"] < -metrics["val/elbo_nll_images"] + 0.05
    assert metrics["val/nll_iwae"] > -metrics["val/elbo_nll_images"] - 1.0
    assert 1.0 <= metrics["val/is"] <= 10.0
    assert metrics == pytest.approx({**evaluator(model), "eval/seconds": metrics["eval/seconds"]})


def test_inception_features_without_torch_fidelity_say_what_to_install(monkeypatch):
    import importlib.util

    from gentrain.core.errors import ConfigError
    from gentrain.evaluation.evaluator import inception_features

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "torch_fidelity" else real_find_spec(name, *a),
    )
    with pytest.raises(ConfigError, match=r"pip install 'gentrain\[inception\]'.*classifier"):
        inception_features()


def test_runs_started_together_train_a_new_classifier_once(tmp_path, monkeypatch):
    """A sweep's parallel jobs on a new data set: one trains, the others load its cache."""
    import threading

    data = ImageData(
        "toy",
        torch.randint(0, 255, (64, 1, 16, 16), dtype=torch.uint8),
        torch.randint(0, 255, (32, 1, 16, 16), dtype=torch.uint8),
        torch.arange(64) % 2,
        torch.arange(32) % 2,
        ["a", "b"],
    )
    trained = []
    real_training = classifier_module.train_classifier

    def slow_training(*args, **kwargs):
        trained.append(threading.get_ident())
        time.sleep(0.5)  # the others arrive while it trains
        return real_training(*args, **kwargs)

    monkeypatch.setattr(classifier_module, "train_classifier", slow_training)
    accuracies = []

    def job():
        accuracies.append(
            classifier_module.load_or_train_classifier(data, tmp_path, torch.device("cpu"))[1]
        )

    jobs = [threading.Thread(target=job) for _ in range(3)]
    for j in jobs:
        j.start()
    for j in jobs:
        j.join()
    assert len(trained) == 1 and len(accuracies) == 3 and len(set(accuracies)) == 1
