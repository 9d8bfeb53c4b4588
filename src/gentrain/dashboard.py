"""What TensorBoard shows first: the Custom Scalars layout, the HParams columns, run facts.

TensorBoard's Time Series tab lists every scalar alphabetically; the Custom Scalars tab
shows the charts a practitioner reads first, built here from the tags a run actually
logged: each network's losses (train and validation on one chart), the discriminator's
outputs, FID and KID against their real-data floor, learning rates and gradient norms.
"""

from __future__ import annotations

import re
from typing import Any

# The terms each network minimises, by the network names models give their optimisers
# (VAE: vae; GAN: generator, discriminator; VAE-GAN: encoder, decoder, discriminator).
NETWORK_TERMS = {
    "vae": ("loss", "nll", "kl"),
    "generator": ("loss_g",),
    "discriminator": ("loss_d", "gan_d"),
    "encoder": ("prior", "llike"),
    "decoder": ("llike", "gan_dec"),
}
D_OUTPUTS = ("d_real", "d_fake", "d_recon", "d_prior")
FLOORED = (("FID", "val/fid"), ("KID", "val/kid"))

# Logged once as a text table (they do not change during a run), not as scalar curves.
FACT_PREFIXES = ("eval/",)


def is_fact(tag: str) -> bool:
    return tag.startswith(FACT_PREFIXES)


def _either(tags: list[str]) -> str:
    return "^(" + "|".join(re.escape(t) for t in tags) + ")$"


def scalar_layout(tags: set[str]) -> dict[str, dict[str, list[Any]]]:
    """The Custom Scalars layout (``SummaryWriter.add_custom_scalars``'s dict) for a run
    that logged ``tags``: only charts with something in them."""
    layout: dict[str, dict[str, list[Any]]] = {}

    def chart(category: str, title: str, shown: list[str]) -> None:
        if shown:
            layout.setdefault(category, {})[title] = ["Multiline", [_either(shown)]]

    networks = sorted(t.split("/", 1)[1] for t in tags if t.startswith("lr/"))
    for network in networks:
        terms = NETWORK_TERMS.get(network, ())
        shown = [f"{split}/{term}" for term in terms for split in ("train", "val")]
        chart("losses by network", network, [t for t in shown if t in tags])
    for split in ("train", "val"):
        chart(
            "discriminator outputs",
            split,
            [f"{split}/{d}" for d in D_OUTPUTS if f"{split}/{d}" in tags],
        )
    for title, tag in FLOORED:
        if tag in tags:
            chart("FID vs floor", title, [t for t in (tag, f"{tag}_floor") if t in tags])
    chart(
        "FID vs floor",
        "precision, recall",
        [t for t in ("val/precision", "val/recall") if t in tags],
    )
    chart("learning rates", "lr", sorted(t for t in tags if t.startswith("lr/")))
    chart("gradient norms", "train", sorted(t for t in tags if t.startswith("train/grad_norm_")))
    return layout


def hparams_for(flat: dict[str, Any], metrics: dict[str, float]) -> tuple[dict[str, Any], set[str]]:
    """(HParams values, the names that lead the table) from the flattened config.

    Names are the command-line overrides (``optimizer.lr``), the model's name is ``model``.
    The leading ones are what distinguish runs: the model and all its knobs, its size,
    the learning rate, batch size and seed. TensorBoard sorts the columns by "differs"
    and then by name, so these are marked as differing (``hparam_infos[].differs``).
    """
    values = {name.replace("/", "."): value for name, value in flat.items()}
    values["model"] = values.pop("model.name", values.get("model"))
    values["dataset"] = values.pop("dataset.name", values.get("dataset"))
    if "model/parameters" in metrics:
        values["model.parameters"] = int(metrics["model/parameters"])
    leading = {name for name in values if name == "model" or name.startswith("model.")}
    leading |= {"optimizer.lr", "trainer.batch_size", "seed"} & set(values)
    return values, leading


def metric_order(metrics: dict[str, float], first: str) -> list[str]:
    """The HParams metric columns: the optimised metric, the other validation metrics,
    then time and throughput. Run facts (``eval/*``) and floors are left out."""
    keys = [k for k in metrics if "/" in k and not is_fact(k) and not k.endswith("_floor")]
    keys = [k for k in keys if k != "model/parameters"]
    rank = {"val": 0, "train": 1, "time": 2}
    keys.sort(key=lambda k: (k != first, rank.get(k.split("/")[0], 3)))
    return keys


def facts_table(facts: dict[str, float]) -> str:
    """Markdown table of a run's constants, for TensorBoard's Text tab."""
    rows = "\n".join(f"| {k} | {v:g} |" for k, v in sorted(facts.items()))
    return "| fact | value |\n|---|---|\n" + rows
