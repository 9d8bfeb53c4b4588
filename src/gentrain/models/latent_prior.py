"""The distribution an autoencoder's samples are drawn from: N(0, I), or a Gaussian mixture
fitted to the encoder after training (ex-post density estimation).

A VAE's decoder only ever sees codes from q(z|x). Where the aggregated posterior leaves
holes in N(0, I), the decoder was never trained, and prior samples there are not digits:
on MNIST after one epoch, a VAE-GAN's N(0, I) samples score FID 630, the same decoder on
codes from a 10-component mixture fitted to its posterior means 138 (docs/benchmarks.md).
Ghosh et al. 2020 ("From Variational to Deterministic Autoencoders", ICLR, section 4) fit
such a mixture to the training set's posterior means; the likelihood, the ELBO and
training are unchanged (they keep N(0, I)), only sampling moves.

The mixture is a deterministic map of standard normal noise, so fixed noise, seeds, the
comparison's shared noise and class grids work as with N(0, I).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gentrain.core.errors import ConfigError, require_at_least
from gentrain.models.noise_bins import pick_bin


class LatentPrior(nn.Module):
    """``forward(noise, labels)``: codes to decode. N(0, I) noise itself until ``fit``, then
    a ``components``-component full-covariance Gaussian mixture; with ``classes`` > 1 (a
    conditional model) one mixture per class, p(z | y), since the posterior means of a
    class's images do not spread like those of all images. Its parameters are buffers, so
    checkpoints carry them; a checkpoint written without them loads as unfitted."""

    def __init__(
        self, latent_dim: int, components: int, fit_images: int = 20_000, classes: int = 1
    ) -> None:
        super().__init__()
        self.components = components
        self.fit_images = fit_images  # training images whose posterior means it is fitted to
        shape = (max(1, classes), components)
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.register_buffer("weights", torch.full(shape, 1.0 / components))
        self.register_buffer("means", torch.zeros(*shape, latent_dim))
        self.register_buffer("scale_tril", torch.eye(latent_dim).expand(*shape, -1, -1).clone())
        self.register_load_state_dict_post_hook(_unfitted_if_absent)

    @property
    def classes(self) -> int:
        return self.weights.shape[0]

    @torch.no_grad()
    def fit(self, codes: torch.Tensor, labels: torch.Tensor | None = None, seed: int = 0) -> None:
        """Fit the mixture (of each class) to ``codes`` (N, latent_dim) by EM
        (scikit-learn's ``GaussianMixture``, k-means initialised, seeded: the same codes give
        the same fit). A class with fewer codes than components gets one per code; a class
        with none, the mixture of all codes."""
        from sklearn.mixture import GaussianMixture

        codes = codes.cpu().double()  # float64 on the CPU: MPS has no float64
        for c in range(self.classes):
            own = codes if self.classes == 1 else codes[labels.cpu() == c]
            own = own if len(own) else codes  # a class absent from the fit images: all codes
            k = min(self.components, len(own))
            mixture = GaussianMixture(
                k, covariance_type="full", reg_covar=1e-4, random_state=seed
            ).fit(own.numpy())
            self.weights[c].zero_()  # components beyond k keep weight 0: never drawn
            self.weights[c, :k] = torch.from_numpy(mixture.weights_)
            self.means[c, :k] = torch.from_numpy(mixture.means_)
            self.scale_tril[c, :k] = torch.linalg.cholesky(torch.from_numpy(mixture.covariances_))
        self.fitted.fill_(True)

    def forward(self, noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Standard normal ``noise`` (N, latent_dim) to codes (of classes ``labels``). With
        the mixture: the first coordinate's CDF u picks component k (inverse CDF over the
        weights); u's position inside k's interval is uniform and independent of k, and
        becomes that coordinate again; then z = mean_k + L_k noise. An exact sample."""
        if not bool(self.fitted):  # sampling only, never in a training step
            return noise
        # The component, in float64 on the CPU (MPS has no float64)
        rows = torch.zeros(len(noise), dtype=torch.long)
        if self.classes > 1:
            rows = labels.cpu()
        weights = self.weights.cpu().double()[rows]  # (N, K)
        upper = weights.cumsum(1)
        upper = upper / upper[:, -1:]  # exactly 1 at the end: no draw falls past it
        k, first = pick_bin(noise[:, 0].cpu().double(), upper)
        eps = torch.cat([first.unsqueeze(1).to(noise), noise[:, 1:]], dim=1)
        rows, k = rows.to(noise.device), k.to(noise.device)
        tril = self.scale_tril[rows, k]
        return self.means[rows, k] + (tril @ eps.unsqueeze(-1)).squeeze(-1)


def latent_prior_for(cfg: Any, num_classes: int = 0) -> LatentPrior | None:
    """The model's ``LatentPrior`` from its ``prior_components`` / ``prior_fit_images``,
    one mixture per class for a conditional model (None: samples from N(0, I))."""
    if not cfg.prior_components:
        return None
    return LatentPrior(cfg.latent_dim, cfg.prior_components, cfg.prior_fit_images, num_classes)


def check_prior_config(cfg: Any) -> None:
    """``prior_components`` >= 0 and enough fit images for the mixture, as config errors."""
    require_at_least(cfg, "model", 0, "prior_components")
    if cfg.prior_components and cfg.prior_fit_images < cfg.prior_components:
        raise ConfigError(
            f"model.prior_fit_images={cfg.prior_fit_images} must be at least "
            f"model.prior_components={cfg.prior_components} (one image per component)"
        )


def _unfitted_if_absent(module: nn.Module, incompatible: Any) -> None:
    """Checkpoints from before the mixture existed load, and sample from N(0, I)."""
    names = {name for name, _ in module.named_buffers()}
    missing = incompatible.missing_keys
    own = [
        key
        for key in missing
        if key.rpartition(".")[0].endswith("latent_prior") and key.rpartition(".")[2] in names
    ]
    if len(own) == len(names):
        for key in own:
            missing.remove(key)


@torch.no_grad()
def posterior_means(
    model: Any,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    max_images: int,
    batch_size: int = 500,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The encoder's means of up to ``max_images`` uint8 training ``images`` (a seeded
    subset, drawn without touching the global random state), in eval mode, and their
    ``labels`` (None without)."""
    index = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:max_images]
    index = index.to(images.device)
    chosen = None if labels is None else labels[index]
    was_training = model.training
    model.eval()
    codes = []
    for start in range(0, len(index), batch_size):
        rows = index[start : start + batch_size]
        x = images[rows].float() / 255
        codes.append(model.encode(x, None if labels is None else labels[rows])[0])
    model.train(was_training)
    return torch.cat(codes), chosen
