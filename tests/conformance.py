"""What every registered model must do, as checks that take a model's registry name.

``tests/test_conformance.py`` runs them over every model in the registry (so a model added
to ``gentrain.models`` is checked without being listed anywhere), and
``tests/test_new_model.py`` runs them over the model it defines in one file.
"""

from __future__ import annotations

import dataclasses
import io

import torch
from torch import nn

from gentrain.core.config import OptimizerConfig
from gentrain.core.registry import MODELS
from gentrain.data import Batch
from gentrain.models import GenerativeModel, build_model
from gentrain.training.optim import OptimizerFactory

SHAPE = (1, 16, 16)
SMALL = {"width": 4, "latent_dim": 3}  # for the models that have these knobs


def tiny(name: str, seed: int = 0) -> GenerativeModel:
    """``name``'s model at its defaults, made small, with its optimisers."""
    schema = MODELS.get(name).Config
    fields = {f.name for f in dataclasses.fields(schema)}
    cfg = schema(**{k: v for k, v in SMALL.items() if k in fields})
    torch.manual_seed(seed)
    model = build_model(cfg, SHAPE, None)
    model.configure_optimizers(OptimizerFactory(OptimizerConfig(name="adam", lr=1e-3), 10))
    return model


def batch(seed: int = 1) -> Batch:
    return Batch(torch.rand(8, *SHAPE, generator=torch.Generator().manual_seed(seed)))


def check_declares_what_it_logs_and_trains(name: str) -> None:
    """Its logged terms name its networks and appear in its steps' outputs; each training
    step updates every network it declares, and returns finite scalars."""
    model = tiny(name)
    terms = model.logged_terms
    networks = model.networks()
    assert set(terms.by_network) <= set(networks), (name, terms.by_network, list(networks))
    before = {n: [p.detach().clone() for p in m.parameters()] for n, m in networks.items()}
    out = model.training_step(batch())
    for term in {t for ts in terms.by_network.values() for t in ts} | set(terms.watched):
        assert term in out, f"{name}: declared term {term!r} not in {sorted(out)}"
    assert all(torch.isfinite(v).all() and v.dim() == 0 for v in out.values()), name
    for network, params in before.items():
        after = list(networks[network].parameters())
        assert any(not torch.equal(a, b) for a, b in zip(params, after)), f"{name}.{network}"
    model.eval()
    assert set(model.validation_step(batch())) >= set(terms.watched), name


def check_roles_name_its_networks(name: str) -> None:
    """``network_roles`` (what warm start matches by) names modules of the model."""
    model = tiny(name)
    for network, role in model.network_roles.items():
        assert isinstance(getattr(model, network, None), nn.Module), (name, network)
        assert role in ("encoder", "decoder", "discriminator"), (name, role)


def check_seeded_and_restorable(name: str) -> None:
    """Same seed, same step: the same terms. A checkpointed model and its optimisers,
    restored into a fresh one, take the next step exactly as the original does."""
    a, b = tiny(name), tiny(name)
    torch.manual_seed(5)
    first = a.training_step(batch())
    torch.manual_seed(5)
    assert {k: v.item() for k, v in b.training_step(batch()).items()} == {
        k: v.item() for k, v in first.items()
    }, name
    buffer = io.BytesIO()
    torch.save({"model": a.state_dict(), "optimizers": a.optimizer_state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    restored = tiny(name, seed=99)  # other initial weights: all must come from the state
    restored.load_state_dict(state["model"])
    restored.load_optimizer_state_dict(state["optimizers"])
    torch.manual_seed(6)
    expected = a.training_step(batch(2))
    torch.manual_seed(6)
    got = restored.training_step(batch(2))
    assert {k: v.item() for k, v in got.items()} == {k: v.item() for k, v in expected.items()}
    noise = torch.randn(4, restored.latent_dim)
    a.eval(), restored.eval()
    assert torch.equal(a.sample(noise), restored.sample(noise)), name


def check_samples_are_images(name: str) -> None:
    """Samples from noise are images of the data's shape in [0, 1]."""
    model = tiny(name).eval()
    samples = model.sample(torch.randn(5, model.latent_dim))
    assert samples.shape == (5, *SHAPE) and samples.min() >= 0 and samples.max() <= 1, name


CHECKS = [
    check_declares_what_it_logs_and_trains,
    check_roles_name_its_networks,
    check_seeded_and_restorable,
    check_samples_are_images,
]
