"""A new model is one module: this file defines one and trains it through ``train``.

No YAML, no import list, no drift-test entry: ``@MODELS.register`` puts the model's
``Config`` into Hydra's ConfigStore, so ``model=tiny_decoder`` composes, validates with
the usual messages, trains, evaluates and checkpoints. (docs/architecture.md, "Add a model")
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gentrain.cli.train import train
from gentrain.core.config import validate_config
from gentrain.core.errors import ConfigError, require_at_least
from gentrain.core.registry import MODELS
from gentrain.core.terms import LoggedTerms
from gentrain.data import Batch
from gentrain.models import GenerativeModel


@dataclass
class TinyDecoderConfig:
    name: str = "tiny_decoder"
    latent_dim: int = 8

    def __post_init__(self) -> None:
        require_at_least(self, "model", 1, "latent_dim")


class TinyDecoder(GenerativeModel):
    """A linear decoder whose samples learn the data's mean image: the least a model does."""

    Config = TinyDecoderConfig
    optimizer_defaults = {"lr": 1e-2}
    # Its own term names: the progress line, the dashboard and the runaway watch read them
    # from here, not from lists of the built-in models' terms.
    logged_terms = LoggedTerms(by_network={"decoder": ("fit",)}, watched=("fit",), first=("fit",))
    network_roles = {"decoder": "decoder"}  # what init_from matches networks by

    def __init__(self, cfg: TinyDecoderConfig, image_shape: tuple[int, int, int]) -> None:
        super().__init__(image_shape, cfg.latent_dim)
        self.decoder = nn.Linear(cfg.latent_dim, math.prod(image_shape))

    def networks(self) -> dict[str, nn.Module]:
        return {"decoder": self.decoder}

    def generate(self, noise: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(noise)).view(-1, *self.image_shape)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        fake = self.generate(torch.randn(len(x), self.latent_dim, device=x.device))
        return F.mse_loss(fake.mean(0), x.mean(0))

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        loss = self.loss(batch.images)
        norms = self.update({"decoder": loss})
        return {"grad_norm_decoder": norms["decoder"], "fit": loss.detach()}

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {"fit": self.loss(batch.images)}

    @torch.no_grad()
    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        return self.generate(noise)


@pytest.fixture
def tiny_decoder():
    """Registered for this test only: the registry lists exactly the shipped models else."""
    MODELS.register("tiny_decoder")(TinyDecoder)
    yield TinyDecoder
    MODELS.unregister("tiny_decoder")


def test_a_model_defined_in_one_file_trains_through_the_entry_point(
    tiny_decoder, make_config, tmp_path
):
    out = tmp_path / "run"
    metrics = train(make_config("model=tiny_decoder", "model.latent_dim=4", output_dir=out))

    assert metrics["step"] == 4 and math.isfinite(metrics["val/fit"])
    assert "val/fid" in metrics  # evaluated like any model
    assert (out / "images" / "samples.png").is_file()
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["model_class"] == "TinyDecoder" and state["step"] == 4
    assert state["model"]["decoder.weight"].shape == (28 * 28, 4)
    group = state["optimizers"]["optimizers"]["decoder"]["param_groups"][0]
    assert group["lr"] == pytest.approx(1e-2)  # the model's optimizer_defaults


def test_a_new_model_gets_the_usual_config_errors(tiny_decoder, compose_only):
    with pytest.raises(ConfigError, match="model.latent_dim must be >= 1, got 0"):
        validate_config(compose_only("model=tiny_decoder", "model.latent_dim=0"))
    with pytest.raises(ConfigError, match="unknown config key 'model.latnt_dim'"):
        validate_config(compose_only("model=tiny_decoder", "+model.latnt_dim=3"))
    with pytest.raises(ConfigError, match="did you mean 'tiny_decoder'"):
        validate_config(compose_only("model=vae", "model.name=tiny_decoderr"))


def test_the_command_line_accepts_a_model_without_a_preset(tiny_decoder):
    from gentrain.cli.overrides import check_overrides
    from gentrain.core.paths import config_dir

    check_overrides(["model=tiny_decoder"], config_dir())  # no configs/model/*.yaml needed
    with pytest.raises(ConfigError, match="did you mean 'tiny_decoder'"):
        check_overrides(["model=tiny_decoderr"], config_dir())


def test_a_new_models_own_terms_lead_the_progress_line_get_a_chart_and_are_watched(tiny_decoder):
    from gentrain.tracking.dashboard import scalar_layout
    from gentrain.training.runaway import RunawayDetector

    terms = TinyDecoder.logged_terms
    assert list(terms.ordered({"grad_norm_decoder": 2.0, "fit": 0.1})) == [
        "fit",
        "grad_norm_decoder",
    ]
    layout = scalar_layout({"train/fit", "val/fit"}, ["decoder"], terms)
    assert layout["losses by network"]["fit (decoder)"] == ["Multiline", ["^(train/fit|val/fit)$"]]
    watch = RunawayDetector("warn", terms=terms)
    for step in range(1, 5):
        assert watch.findings({"fit": 0.1, "grad_norm_decoder": 2.0}, step) == {}
    assert (
        "fit=1e+09 exploded"
        in watch.findings({"fit": 1e9, "grad_norm_decoder": 2.0}, 5)["explosion"]
    )


def test_the_new_model_passes_every_conformance_check(tiny_decoder):
    from conformance import CHECKS

    for check in CHECKS:
        check("tiny_decoder")
