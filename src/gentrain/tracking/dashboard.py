"""What TensorBoard shows first: the Custom Scalars layout, the HParams columns, run facts.

TensorBoard's Time Series tab lists every scalar alphabetically; the Custom Scalars tab
shows the charts a practitioner reads first, built here from the tags a run actually
logged: each network's losses (train and validation on one chart), the discriminator's
outputs, FID and KID against their real-data floor (a conditional model's intra-class FID
beside FID, its conditional accuracy below), learning rates and gradient norms.
"""

from __future__ import annotations

import re
from typing import Any

from gentrain.core.terms import LoggedTerms

FLOORED = (("FID", "val/fid"), ("KID", "val/kid"))
# A conditional model's intra-class FID, on its FID chart (the same feature space and scale).
BESIDE = {"val/fid": ("val/intra_fid",)}

# Logged once as a text table (they do not change during a run), not as scalar curves.
FACT_PREFIXES = ("eval/",)


def is_fact(tag: str) -> bool:
    return tag.startswith(FACT_PREFIXES)


def _either(tags: list[str]) -> str:
    return "^(" + "|".join(re.escape(t) for t in tags) + ")$"


def scalar_layout(
    tags: set[str], networks: list[str], terms: LoggedTerms
) -> dict[str, dict[str, list[Any]]]:
    """The Custom Scalars layout (``SummaryWriter.add_custom_scalars``'s dict) for a run
    of a model with ``networks`` and ``terms`` (what the model says its terms are) that
    logged ``tags``: only charts with something in them.

    One chart per loss term, train and validation together (terms differ in scale by
    orders of magnitude: one chart per network would flatten the small ones), titled by
    the networks that minimise it, in the networks' order.
    """
    layout: dict[str, dict[str, list[Any]]] = {}

    def chart(category: str, title: str, shown: list[str]) -> None:
        if shown:
            layout.setdefault(category, {})[title] = ["Multiline", [_either(shown)]]

    owners: dict[str, list[str]] = {}
    for network in networks:
        for term in terms.by_network.get(network, ()):
            owners.setdefault(term, []).append(network)
    for term, by in owners.items():
        shown = [t for t in (f"train/{term}", f"val/{term}") if t in tags]
        chart("losses by network", f"{term} ({', '.join(by)})", shown)
    for split in ("train", "val"):
        shown = [f"{split}/{d}" for d in terms.discriminator_outputs if f"{split}/{d}" in tags]
        chart("discriminator outputs", split, shown)
    for title, tag in FLOORED:
        if tag in tags:
            beside = (tag, f"{tag}_floor", *BESIDE.get(tag, ()))
            chart("FID vs floor", title, [t for t in beside if t in tags])
    shown = [t for t in ("val/precision", "val/recall") if t in tags]
    chart("FID vs floor", "precision, recall", shown)
    shown = [t for t in ("val/cond_accuracy",) if t in tags]
    chart("FID vs floor", "conditional accuracy", shown)
    chart("learning rates", "lr", sorted(t for t in tags if t.startswith("lr/")))
    chart("gradient norms", "train", sorted(t for t in tags if t.startswith("train/grad_norm_")))
    return layout


# HParams columns that lead every table: what a reader asks of any run first.
ALWAYS_LEADING = ("model", "optimizer.lr", "trainer.batch_size", "seed")


def hparams_for(
    flat: dict[str, Any],
    metrics: dict[str, float],
    changed_knobs: list[str] | None = None,
    learning_rates: dict[str, float] | None = None,
) -> tuple[dict[str, Any], set[str]]:
    """(HParams values, the names that lead the table) from the flattened config.

    Names are the command-line overrides (``optimizer.lr``), the model's name is ``model``.
    The leading ones are what distinguish runs: the model, the model knobs set away from
    the model's defaults (``changed_knobs``; else ``model.latent_dim``), the learning
    rate, batch size and seed. TensorBoard sorts the columns by "differs" and then by
    name and shows the first five, so these are marked as differing
    (``hparam_infos[].differs``). ``optimizer.lr`` is the rate the networks got
    (``learning_rates``: network -> rate; null in the config means the model's choice).
    """
    values = {name.replace("/", "."): value for name, value in flat.items()}
    rates = sorted(set((learning_rates or {}).values()))
    if len(rates) == 1:
        values["optimizer.lr"] = rates[0]
    elif rates:  # per-network rates: say which is which
        values["optimizer.lr"] = ", ".join(f"{n} {r:g}" for n, r in learning_rates.items())
    values["model"] = values.pop("model.name", values.get("model"))
    values["dataset"] = values.pop("dataset.name", values.get("dataset"))
    if "model/parameters" in metrics:
        values["model.parameters"] = int(metrics["model/parameters"])
    knobs = [f"model.{k}" for k in changed_knobs or []] or ["model.latent_dim"]
    leading = {*ALWAYS_LEADING, *knobs}
    return values, leading & set(values)


def metric_order(metrics: dict[str, float], first: str) -> list[str]:
    """The HParams metric columns: the optimised metric, the other validation metrics,
    then time and throughput. Run facts (``eval/*``) and floors are left out."""
    keys = [k for k in metrics if "/" in k and not is_fact(k) and not k.endswith("_floor")]
    # model/parameters is a column of the hparams; time/* would open the Time Series tab
    # (alphabetically first) on a one-point card.
    keys = [k for k in keys if k != "model/parameters" and not k.startswith("time/")]
    rank = {"val": 0, "train": 1}
    keys.sort(key=lambda k: (k != first, rank.get(k.split("/")[0], 3)))
    return keys


def facts_table(facts: dict[str, float]) -> str:
    """Markdown table of a run's constants, for TensorBoard's Text tab."""
    rows = "\n".join(f"| {k} | {v:g} |" for k, v in sorted(facts.items()))
    return "| fact | value |\n|---|---|\n" + rows
