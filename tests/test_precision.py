"""trainer.precision / channels_last / compile (gentrain.training.throughput)."""

from __future__ import annotations

import copy

import pytest
import torch

from gentrain.cli.train import train
from gentrain.core.config import validate_config
from gentrain.core.errors import ConfigError
from gentrain.data import Batch
from gentrain.models.vaegan import VAEGAN, VAEGANConfig
from gentrain.training.optim import OptimizerConfig, OptimizerFactory
from gentrain.training.throughput import Throughput

SHAPE = (1, 16, 16)


class Switches:
    def __init__(self, precision="32", channels_last=False, compile=False):
        self.precision, self.channels_last, self.compile = precision, channels_last, compile


def _one_step(model, switches, x):
    """A copy of ``model`` after one training step under ``switches``: its weight change."""
    model = copy.deepcopy(model)
    model.configure_optimizers(OptimizerFactory(OptimizerConfig(name="sgd", lr=0.1), 10))
    speed = Throughput(switches, torch.device("cpu"))
    speed.prepare(model)
    for scaler in model.grad_scalers.values():  # a scale this tiny model cannot overflow
        scaler._init_scale = 1024.0
    before = [p.detach().clone() for p in model.parameters()]
    torch.manual_seed(1)
    draw = torch.randn_like  # the same noise in every precision, rounded to it
    with speed.autocast(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "randn_like", lambda t: draw(t, dtype=torch.float32).to(t.dtype))
        model.training_step(speed.batch(Batch(x)))
    return model, [p.detach() - b for p, b in zip(model.parameters(), before)]


@pytest.mark.parametrize("precision", ["bf16", "16-mixed"])
def test_mixed_precision_steps_match_float32_to_its_rounding(precision):
    """Autocast really runs (the steps differ from float32's), and the 16-bit gradients
    are unscaled before each network's step: the step is float32's, not 1024 times it,
    nor skipped. (Noise drawn in 16 bits differs from float32's: directions agree to
    about 0.95, not to rounding.)"""
    torch.manual_seed(0)
    model = VAEGAN(VAEGANConfig(width=4, latent_dim=3, updates_per_batch=1), SHAPE)  # one step
    x = torch.rand(8, *SHAPE)
    _, full = _one_step(model, Switches(), x)
    mixed_model, mixed = _one_step(model, Switches(precision), x)
    assert sorted(mixed_model.grad_scalers) == (
        ["decoder", "discriminator", "encoder"] if precision == "16-mixed" else []
    )
    assert any(not torch.equal(a, b) for a, b in zip(full, mixed))
    names = [name.split(".")[0] for name, _ in model.named_parameters()]
    for network in ("encoder", "decoder", "discriminator"):
        a, b = (
            torch.cat([d.flatten() for d, n in zip(s, names) if n == network])
            for s in (full, mixed)
        )
        assert 0.7 < float(b.norm() / a.norm()) < 1.4, network
    a, b = torch.cat([d.flatten() for d in full]), torch.cat([d.flatten() for d in mixed])
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.9


def test_channels_last_changes_only_the_memory_order():
    torch.manual_seed(0)
    model = VAEGAN(VAEGANConfig(width=4, latent_dim=3, updates_per_batch=1), SHAPE)  # one step
    x = torch.rand(8, *SHAPE)
    _, plain = _one_step(model, Switches(), x)
    nhwc_model, nhwc = _one_step(model, Switches(channels_last=True), x)
    conv = next(m for m in nhwc_model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(plain, nhwc):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_sixteen_bit_run_checkpoints_its_scalers_and_resumes(make_config, tmp_path):
    out = tmp_path / "run"
    switches = ["trainer.precision=16-mixed", "trainer.channels_last=true", "eval.enabled=false"]
    switches.append("model.width=8")  # float16 convolutions are slow on a CPU
    train(make_config(*switches, "dataset.limit=128", output_dir=out))
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["optimizers"]["grad_scalers"]["vae"]["scale"] <= 2.0**16
    resumed = train(
        make_config(
            *switches,
            "dataset.limit=128",
            "trainer.max_epochs=2",
            "trainer.max_steps=6",
            "trainer.resume=auto",
            output_dir=out,
        )
    )
    assert resumed["step"] == 6


def test_precision_names_are_checked(compose_only):
    assert validate_config(compose_only("trainer.precision=32")).trainer.precision == "32"
    with pytest.raises(ConfigError, match="unknown trainer.precision 'fp8'; available: 32, bf16"):
        validate_config(compose_only("trainer.precision=fp8"))
