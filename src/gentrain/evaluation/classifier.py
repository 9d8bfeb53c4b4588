"""A small domain classifier whose features replace Inception's on MNIST-like data.

Inception weights cannot be downloaded everywhere, and ImageNet features are a poor metric
for 28x28 digits anyway; Bińkowski et al. (2018, "Demystifying MMD GANs") computed FID/KID
on MNIST from a LeNet's penultimate layer. This module trains such a CNN on a dataset's
train split the first time it is needed (seeded), checks its test accuracy, and caches it
on disk keyed by dataset, image shape and a hash of this file's network and recipe, so
every run compares against the same feature space.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from filelock import FileLock
from torch import nn

from gentrain.core.checkpoint import atomic_write, check_writable
from gentrain.core.errors import ConfigError, GentrainError
from gentrain.data import ImageData

log = logging.getLogger("gentrain")

#: Test accuracy a classifier must reach before its features are trusted.
MIN_ACCURACY = {"mnist": 0.99, "fashion_mnist": 0.90, "cifar10": 0.70}
RECIPE = {"epochs": 4, "batch_size": 128, "lr": 2e-3, "seed": 0}
VERSION = 1
CACHE_FIX = "(GENTRAIN_CACHE_DIR or paths.cache_dir), then run again"


class DomainClassifier(nn.Module):
    """Two conv blocks and a 128-unit penultimate layer (the feature space)."""

    num_features = 128

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int = 10) -> None:
        super().__init__()
        channels, height, width = image_shape
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * (height // 4) * (width // 4), self.num_features),
            nn.ReLU(),
        )
        self.head = nn.Linear(self.num_features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x * 2.0 - 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Features(nn.Module):
    """``images in [0, 1] -> penultimate features``, the interface torchmetrics expects."""

    def __init__(self, classifier: DomainClassifier) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x.float())


class Logits(nn.Module):
    """``images in [0, 1] -> class logits``, for the Inception Score."""

    def __init__(self, classifier: DomainClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x.float())


def cache_key(dataset: str, image_shape: tuple[int, int, int], num_train: int) -> str:
    """Dataset, shape, train-set size and a hash of the network's layers, the recipe and
    ``VERSION``: any change gives a new classifier instead of silently reusing a stale one
    (bump ``VERSION`` when changing ``forward``; reformatting the code changes nothing)."""
    definition = f"{DomainClassifier(image_shape)!r}{sorted(RECIPE.items())!r}v{VERSION}"
    digest = hashlib.sha256(definition.encode()).hexdigest()[:12]
    return f"{dataset}-{'x'.join(map(str, image_shape))}-n{num_train}-{digest}"


@torch.no_grad()
def accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device
) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(images), 1000):
        x = images[start : start + 1000].to(device).float().div_(255.0)
        correct += int((model(x).argmax(1).cpu() == labels[start : start + 1000]).sum())
    return correct / len(images)


@torch.enable_grad()  # evaluation runs under no_grad; training this net needs gradients
def train_classifier(
    data: ImageData, device: torch.device, epochs: int = RECIPE["epochs"]
) -> tuple[DomainClassifier, float]:
    """Train on the train split with a fixed seed; return the net and its test accuracy."""
    assert data.train_labels is not None and data.val_labels is not None
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(RECIPE["seed"])
        model = DomainClassifier(data.image_shape, int(data.train_labels.max()) + 1).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=RECIPE["lr"])
        images, labels = data.train.to(device), data.train_labels.to(device)
        batch = min(RECIPE["batch_size"], len(labels))  # a small folder: one batch of all
        steps = epochs * (len(labels) // batch)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, RECIPE["lr"], total_steps=steps)
        for epoch in range(epochs):
            model.train()
            generator = torch.Generator().manual_seed(RECIPE["seed"] * 7919 + epoch)
            order = torch.randperm(len(labels), generator=generator).to(device)
            for start in range(0, len(order) - batch + 1, batch):
                index = order[start : start + batch]
                x = images.index_select(0, index).float().div_(255.0)
                loss = F.cross_entropy(model(x), labels.index_select(0, index))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
    return model.eval(), accuracy(model, data.val, data.val_labels, device)


def load_or_train_classifier(
    data: ImageData,
    cache_dir: Path,
    device: torch.device,
    min_accuracy: float | None = None,
    epochs: int = RECIPE["epochs"],
) -> tuple[DomainClassifier, float]:
    """The cached classifier for ``data``, training (and caching) it on first use."""
    if data.train_labels is None or data.val_labels is None:
        raise ConfigError(
            f"dataset {data.name!r} has no class labels, so no domain classifier can be trained "
            "for eval.features=classifier; use eval.features=inception (needs its weights) "
            "or eval.enabled=false"
        )
    required = MIN_ACCURACY.get(data.name, 0.0) if min_accuracy is None else min_accuracy
    key = cache_key(data.name, data.image_shape, len(data.train))
    path = cache_dir / "classifiers" / f"{key}.pt"
    if path.is_file():
        return _load(path, data, device)
    check_writable(path, CACHE_FIX)  # before the training, not after it
    # Runs started together on a new data set (a sweep's parallel jobs) train it once: the
    # first takes the lock and trains, the others wait and load what it cached.
    with FileLock(path.with_name(f"{path.name}.lock")):
        if path.is_file():
            return _load(path, data, device)
        log.info("training the %s feature classifier (once; cached in %s)", data.name, path)
        model, acc = train_classifier(data, device, epochs)
        log.info("feature classifier test accuracy on %s: %.4f", data.name, acc)
        if acc < required:
            raise GentrainError(
                f"the {data.name} feature classifier reached {acc:.4f} test accuracy, below "
                f"the {required:.2f} its metrics need; not caching it. This is a bug or a "
                "changed dataset: check the data directory"
            )
        state = {
            "model": model.state_dict(),
            "accuracy": acc,
            "num_classes": model.head.out_features,
            "dataset": data.name,
        }
        atomic_write(path, lambda f: torch.save(state, f), then=CACHE_FIX)
    return model, acc


def _load(path: Path, data: ImageData, device: torch.device) -> tuple[DomainClassifier, float]:
    state = torch.load(path, map_location=device, weights_only=True)
    model = DomainClassifier(data.image_shape, state["num_classes"]).to(device)
    model.load_state_dict(state["model"])
    log.info("feature classifier: %s (test accuracy %.4f)", path, state["accuracy"])
    return model.eval(), float(state["accuracy"])
