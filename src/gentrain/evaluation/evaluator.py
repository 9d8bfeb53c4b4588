"""Sample-quality and likelihood metrics, computed the standard way, offline.

FID and KID come from torchmetrics (``torchmetrics.image.fid`` / ``.kid``), the Inception
Score from ``torchmetrics.image.inception``; all three in the feature space of a domain
classifier (see ``classifier.py``) unless ``eval.features=inception``. Features are
extracted once per image set and fed to the metrics through an identity module, so each
image passes through the feature network once (torchmetrics is imported then, not when a
command starts). Every number is reported with the counts it was computed from, and the
real-data floor (the same metric between the real train and test splits) beside it.

A conditional model is sampled in the training split's class proportions (on a balanced
set: labels 0..K-1 in turn), so that its samples hold the classes as the real images they
are compared with do (an own folder is rarely balanced), and it is scored also by
its *conditional accuracy* (the share of samples the domain classifier assigns to the
class they were drawn for) and its *intra-class FID* (the mean over classes of the FID
between a class's samples and that class's test images; Miyato & Koyama 2018).

Under data-parallel training every rank evaluates: each generates and embeds its share of
the batches (``World.share``), the features are gathered in rank order, and rank 0
computes the figures from exactly the features one process would hold; the others
receive them. The metrics never synchronise by themselves (``sync_on_compute=False``).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gentrain.core.errors import ConfigError, require_at_least
from gentrain.data import Batch, ImageData
from gentrain.evaluation.classifier import Features, Logits, load_or_train_classifier
from gentrain.evaluation.precision_recall import precision_recall
from gentrain.training.data_parallel import World

log = logging.getLogger("gentrain")

FEATURES = ("classifier", "inception")


@dataclass
class EvalConfig:
    """``configs/eval/*.yaml``."""

    enabled: bool = True
    every_n_epochs: int = 1  # also after the last epoch
    features: str = "classifier"  # classifier (trained once, cached) | inception
    num_samples: int = 10_000  # generated images; real test images are capped at the split
    batch_size: int = 500
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    pr_k: int = 3  # k of the k-NN manifolds for precision/recall
    is_splits: int = 10
    nll_samples: int = 100  # k of the importance-weighted NLL bound (VAE, at the end); 0: off
    nll_images: int = 1000  # test images the NLL is averaged over
    min_accuracy: float | None = None  # None: the dataset's default (MNIST 0.99, ...)
    seed: int = 1234  # noise for generated images: the same at every evaluation

    def __post_init__(self) -> None:
        if self.features not in FEATURES:
            raise ConfigError(
                f"unknown eval.features {self.features!r}; available: {', '.join(FEATURES)}"
            )
        require_at_least(
            self,
            "eval",
            1,
            "every_n_epochs",
            "num_samples",
            "batch_size",
            "kid_subsets",
            "kid_subset_size",
            "pr_k",
            "is_splits",
            "nll_images",
        )
        require_at_least(self, "eval", 0, "nll_samples")
        if self.num_samples <= self.pr_k:
            raise ConfigError(f"eval.num_samples must exceed eval.pr_k ({self.pr_k})")


class Precomputed(nn.Module):
    """Identity "feature extractor": lets torchmetrics take features we computed once."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def inception_features() -> tuple[nn.Module, nn.Module]:
    """Inception-v3 (torch-fidelity's FID weights) pool features and logits, if installed."""
    import importlib.util

    # torchmetrics defines NoTrainInceptionV3 either way; it needs torch-fidelity to work.
    if importlib.util.find_spec("torch_fidelity") is None:
        raise ConfigError(
            "eval.features=inception needs torch-fidelity (pip install 'gentrain[inception]') "
            "and its Inception weights, which are downloaded on first use; offline, use "
            "eval.features=classifier"
        )

    from torchmetrics.image.fid import NoTrainInceptionV3

    class Inception(nn.Module):
        def __init__(self, output: str) -> None:
            super().__init__()
            self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=[output])
            self.num_features = 2048 if output == "2048" else 1008

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            return self.net((x.clamp(0, 1) * 255).to(torch.uint8))

    try:
        return Inception("2048"), Inception("logits_unbiased")
    except Exception as exc:  # weights missing and no network
        raise ConfigError(
            f"could not load the Inception weights ({exc}); use eval.features=classifier"
        ) from None


def labels_in_proportion(train_labels: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` class labels in the proportions of ``train_labels`` (largest remainders),
    spread evenly: a class's j-th of k draws sits at j/k of the way, ties in class order,
    so a balanced set gives 0, 1, ..., K-1, 0, 1, ..."""
    counts = torch.bincount(train_labels.cpu()).double()
    quota = counts / counts.sum() * n
    draws = quota.floor().long()
    left = n - int(draws.sum())
    draws[torch.argsort(quota - draws, descending=True, stable=True)[:left]] += 1
    classes = torch.repeat_interleave(torch.arange(len(draws)), draws)
    position = torch.cat([torch.arange(int(k)) / int(k) for k in draws if k > 0])
    order = np.lexsort((classes.numpy(), position.numpy()))
    return classes[torch.from_numpy(order)]


class Evaluator:
    """Computes ``val/*`` metrics of a model against a dataset's test split."""

    def __init__(
        self,
        cfg: EvalConfig,
        data: ImageData,
        device: torch.device,
        cache_dir: Path,
        world: World | None = None,
    ) -> None:
        self.cfg = cfg
        self.data = data
        self.device = device
        self.world = world or World(device=device)  # the ranks that share the work
        self.cache_dir = cache_dir
        self._features: nn.Module | None = None
        self._logits: nn.Module | None = None
        self._real: dict[str, torch.Tensor] = {}
        self.info: dict[str, float] = {}

    @classmethod
    def before_training(
        cls,
        cfg: EvalConfig,
        data: ImageData,
        device: torch.device,
        cache_dir: Path,
        world: World | None = None,
    ) -> Evaluator | None:
        """The run's evaluator with its feature networks ready (the domain classifier
        trained or read from the cache, Inception's weights loaded), or None, with the
        reason said, where this run cannot or should not measure: settled before the first
        step. On every rank: each evaluates its share of the samples."""
        if not cfg.enabled:
            return None
        if cfg.features == "classifier" and data.train_labels is None:
            log.warning(
                "dataset %r has no class labels, so no domain classifier can be trained for "
                "FID/KID/IS (eval.features=classifier): this run trains without them "
                "(validation losses and grids are still logged). To measure it, use "
                "eval.features=inception (pip install 'gentrain[inception]'; downloads "
                "Inception's weights once), or give the folder one subfolder per class",
                data.name,
            )
            return None
        evaluator = cls(cfg, data, device, cache_dir, world)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            evaluator._networks()  # a cached classifier's construction draws no training noise
        return evaluator

    # --- feature space -----------------------------------------------------------------
    def _networks(self) -> tuple[nn.Module, nn.Module]:
        if self._features is None or self._logits is None:
            # Rank 0 trains (or downloads) once into the cache; the others then read it.
            if self.cfg.features == "inception":
                self._features, self._logits = self.world.main_first(
                    inception_features, "waiting for rank 0's Inception weights"
                )
            else:
                classifier, acc = self.world.main_first(
                    lambda: load_or_train_classifier(
                        self.data, self.cache_dir, self.device, self.cfg.min_accuracy
                    ),
                    "waiting for rank 0's feature classifier",
                )
                self._features, self._logits = Features(classifier), Logits(classifier)
                self.info["eval/classifier_accuracy"] = acc
            self._features.to(self.device).eval()
            self._logits.to(self.device).eval()
        return self._features, self._logits

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, logits) of float images in [0, 1] or uint8 images; each rank embeds
        its share of the batches, and every rank gets all rows."""
        return self._gather(*self._embed_local(images[self._my_rows(len(images))]))

    def _my_rows(self, count: int) -> slice:
        """This rank's rows of ``count``: its share of the whole batches."""
        mine = self._my_batches(count, self.cfg.batch_size)
        return slice(mine.start, min(mine.stop, count))

    @torch.no_grad()
    def _embed_local(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features_net, logits_net = self._networks()
        feats, logits = [], []
        for start in range(0, len(images), self.cfg.batch_size) or [0]:  # 0 rows: empty sets
            x = images[start : start + self.cfg.batch_size].to(self.device)
            x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
            if isinstance(features_net, Features):  # one pass: the logits are the head's
                f = features_net(x)
                feats.append(f.cpu())
                logits.append(features_net.classifier.head(f).cpu())
            else:
                feats.append(features_net(x).cpu())
                logits.append(logits_net(x).cpu())
        return torch.cat(feats).double(), torch.cat(logits).double()

    def _gather(
        self, feats: torch.Tensor, logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            self.world.gather_rows(feats, "gathering the evaluation's features"),
            self.world.gather_rows(logits, "gathering the evaluation's logits"),
        )

    def _real_sets(self) -> dict[str, torch.Tensor]:
        """Features of the real test images and of a train subset (for the floor), once."""
        if not self._real:
            n = min(self.cfg.num_samples, len(self.data.val))
            self._real["test"], _ = self.embed(self.data.val[:n])
            generator = torch.Generator().manual_seed(self.cfg.seed)
            index = torch.randperm(len(self.data.train), generator=generator)[:n]
            self._real["train"], _ = self.embed(self.data.train[index])
        return self._real

    # --- metrics -------------------------------------------------------------------------
    def distances(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
        """FID and KID (torchmetrics) between two feature sets."""
        dim = real.shape[1]
        subset = min(self.cfg.kid_subset_size, len(real), len(fake))
        with warnings.catch_warnings():  # "saves all features": we pass them precomputed
            warnings.simplefilter("ignore", UserWarning)
            from torchmetrics.image.kid import KernelInceptionDistance

            kid = KernelInceptionDistance(
                feature=Precomputed(dim),
                subsets=self.cfg.kid_subsets,
                subset_size=subset,
                sync_on_compute=False,
            )
        kid.update(real, real=True)
        kid.update(fake, real=False)
        kid_mean, kid_std = kid.compute()
        return {"fid": self._fid(real, fake), "kid": float(kid_mean), "kid_std": float(kid_std)}

    def inception_score(self, logits: torch.Tensor) -> tuple[float, float]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            from torchmetrics.image.inception import InceptionScore

            score = InceptionScore(
                feature=Precomputed(logits.shape[1]),
                splits=self.cfg.is_splits,
                sync_on_compute=False,
            )
        score.update(logits)
        mean, std = score.compute()
        return float(mean), float(std)

    @torch.no_grad()
    def generate(self, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This rank's share of ``num_samples`` images from the same seeded noise at every
        evaluation, and the class each of all of them was drawn for (in the training
        split's proportions; None for an unconditional model). Every rank draws every
        batch's noise, so its share is what one process draws at those rows."""
        generator = torch.Generator().manual_seed(self.cfg.seed)
        labels = None
        if model.conditional:
            labels = labels_in_proportion(self.data.train_labels, self.cfg.num_samples)
        mine = self._my_rows(self.cfg.num_samples)
        images = [torch.empty(0, *self.data.image_shape)]
        for start in range(0, self.cfg.num_samples, self.cfg.batch_size):
            n = min(self.cfg.batch_size, self.cfg.num_samples - start)
            noise = model.sample_noise(n, generator)
            if not mine.start <= start < mine.stop:
                continue
            noise = noise.to(self.device)
            if labels is None:
                images.append(model.sample(noise).clamp(0, 1).cpu())
            else:
                drawn_for = labels[start : start + n].to(self.device)
                images.append(model.sample(noise, drawn_for).clamp(0, 1).cpu())
        return torch.cat(images), labels

    def floor(self) -> dict[str, float]:
        """FID/KID between real train and real test images: the best a model can hope for."""
        if "val/fid_floor" not in self.info:
            real = self._real_sets()
            with torch.random.fork_rng():
                torch.manual_seed(self.cfg.seed)
                d = self.distances(real["test"], real["train"])
            self.info.update({"val/fid_floor": d["fid"], "val/kid_floor": d["kid"]})
        return {k: v for k, v in self.info.items() if k.endswith("_floor")}

    @torch.no_grad()
    def __call__(self, model: nn.Module, final: bool = True) -> dict[str, float]:
        """All metrics of ``model``; the costly NLL estimate only when ``final``. Under
        data parallel, call it on every rank: each does its share, all get the figures."""
        start = time.perf_counter()
        was_training = model.training
        model.eval()
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.cfg.seed)
            images, labels = self.generate(model)
            feats, logits = self._gather(*self._embed_local(images))
            metrics = self._score_features(feats, logits, labels)
            metrics.update(self._likelihood_metrics(model, with_nll=final))
        model.train(was_training)
        metrics.update({k: v for k, v in self.info.items() if k.startswith("eval/")})
        metrics["eval/seconds"] = time.perf_counter() - start
        return metrics

    @torch.no_grad()
    def score_images(
        self, images: torch.Tensor, labels: torch.Tensor | None = None
    ) -> dict[str, float]:
        """FID, KID, IS, precision and recall of any image set against the test images,
        with the floor beside them: a model's samples, or a reference such as blurred
        real digits (scripts/benchmark_quality.py). With ``labels`` (the class each image
        should show), conditional accuracy and intra-class FID too."""
        return self._score_features(*self.embed(images), labels)

    def _score_features(
        self, feats: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor | None
    ) -> dict[str, float]:
        """The figures of a generated set's features, computed on rank 0 alone."""
        real = self._real_sets()  # every rank embeds its share of the real images

        def compute() -> dict[str, float]:
            torch.manual_seed(self.cfg.seed)  # KID's subsets
            metrics = {} if labels is None else self.class_metrics(feats, logits, labels)
            metrics.update({f"val/{k}": v for k, v in self.distances(real["test"], feats).items()})
            metrics["val/is"], metrics["val/is_std"] = self.inception_score(logits)
            precision, recall = precision_recall(real["test"], feats, self.cfg.pr_k)
            metrics["val/precision"], metrics["val/recall"] = precision, recall
            metrics.update(self.floor())
            metrics["eval/num_generated"] = float(len(feats))
            metrics["eval/num_real"] = float(len(real["test"]))
            return metrics

        metrics = self.world.computed_on_main(compute, "sharing the evaluation's figures")
        self.info.update({k: v for k, v in metrics.items() if k.endswith("_floor")})
        return metrics

    def class_metrics(
        self, feats: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, float]:
        """Conditional accuracy and intra-class FID of images drawn for classes ``labels``."""
        if self.data.val_labels is None:
            raise ConfigError(f"dataset {self.data.name!r} has no labels to score classes by")
        labels = labels.cpu()
        accuracy = (logits.argmax(1) == labels).double().mean()
        real = self._real_sets()["test"]
        real_labels = self.data.val_labels[: len(real)]
        per_class = []
        for c in range(self.data.num_classes or int(self.data.val_labels.max()) + 1):
            fake_c, real_c = feats[labels == c], real[real_labels == c]
            if len(fake_c) > 1 and len(real_c) > 1:  # FID needs two images a side
                per_class.append(self._fid(real_c, fake_c))
        return {
            "val/cond_accuracy": float(accuracy),
            "val/intra_fid": sum(per_class) / len(per_class) if per_class else math.nan,
            "eval/intra_fid_classes": float(len(per_class)),
        }

    @staticmethod
    def _fid(real: torch.Tensor, fake: torch.Tensor) -> float:
        from torchmetrics.image.fid import FrechetInceptionDistance

        fid = FrechetInceptionDistance(
            feature=Precomputed(real.shape[1]), sync_on_compute=False
        ).double()
        fid.update(real, real=True)
        fid.update(fake, real=False)
        return float(fid.compute())

    def _likelihood_metrics(self, model: nn.Module, with_nll: bool) -> dict[str, float]:
        out: dict[str, float] = {}
        n = min(self.cfg.nll_images, len(self.data.val))
        images = self.data.val[:n]
        conditional = getattr(model, "conditional", False)
        all_labels = self.data.val_labels[:n] if conditional else None

        def labels_of(rows: slice) -> torch.Tensor | None:
            return None if all_labels is None else all_labels[rows].to(self.device)

        world = self.world
        if getattr(model, "has_encoder", False):
            squared = 0.0
            for start in self._my_batches(n, self.cfg.batch_size):
                rows = slice(start, start + self.cfg.batch_size)
                x = images[rows].to(self.device).float() / 255
                recon = model.reconstruct(x, labels_of(rows))
                squared += float((recon - x).pow(2).flatten(1).sum(1).sum())
            out["val/recon_mse"] = world.total(squared, "summing the reconstruction error") / n
        estimate = getattr(model, "importance_weighted_nll", None)
        if estimate is not None and self.cfg.nll_samples > 0 and with_nll:
            total, elbo = 0.0, 0.0
            for start in self._my_batches(n, 100):
                rows = slice(start, start + 100)
                x = images[rows].to(self.device).float() / 255
                # The same seed before both, so that a model which binarises its input
                # scores the NLL and the ELBO on the same draw (else -ELBO >= NLL fails).
                torch.manual_seed(self.cfg.seed + start)
                total += float(estimate(x, self.cfg.nll_samples, labels_of(rows)).sum())
                torch.manual_seed(self.cfg.seed + start)
                terms = model.validation_step(Batch(x, labels_of(rows)))
                elbo += float(terms.get("elbo", math.nan)) * len(x)
            out["val/nll_iwae"] = world.total(total, "summing the NLL estimate") / n
            elbo = world.total(elbo, "summing the ELBO")
            # The ELBO of the same images, beside the NLL (-ELBO >= NLL); its own key, since
            # val/elbo is the validation set's, logged every epoch.
            if math.isfinite(elbo):
                out["val/elbo_nll_images"] = elbo / n
            out["eval/nll_k"] = float(self.cfg.nll_samples)
            out["eval/nll_images"] = float(n)
        return out

    def _my_batches(self, count: int, size: int) -> range:
        """The first rows of this rank's share of the batches of ``size`` over ``count``."""
        mine = self.world.share(math.ceil(count / size))
        return range(mine.start * size, mine.stop * size, size)
