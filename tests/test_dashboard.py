"""What TensorBoard opens on, read back with TensorBoard's own reader: curves of what
changes (no constants), the Custom Scalars layout, HParams columns led by what
distinguishes runs, and run directories named by what they are."""

from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import backend_context
from tensorboard.plugins.hparams import metadata as hparams_metadata

from gentrain.cli.train import train
from gentrain.models.gan import GAN
from gentrain.models.vae import VAE
from gentrain.tracking.dashboard import scalar_layout


@pytest.fixture(scope="module")
def vaegan_events(tmp_path_factory, data_dir, cache_dir):
    from conftest import compose_config

    out = tmp_path_factory.mktemp("vaegan")
    train(
        compose_config(
            [
                "debug=fast",
                "device=cpu",
                "dataset.download=false",
                "model=vaegan",
                "model.width=8",
                f"paths.data_dir={data_dir}",
                f"paths.cache_dir={cache_dir}",
                f"paths.output_dir={out}",
            ]
        )
    )
    return EventAccumulator(str(out), size_guidance={"tensors": 0}).Reload()


def test_constants_are_a_text_table_not_curves(vaegan_events):
    scalars = set(vaegan_events.Tags()["scalars"])
    assert "val/fid" in scalars and "train/llike" in scalars
    assert "epoch" not in scalars
    assert not [t for t in scalars if t.startswith(("lr/", "time/"))]  # constant lr: config
    assert not [t for t in scalars if t.startswith("eval/")], scalars
    table = vaegan_events.Tensors("evaluation/text_summary")
    text = table[-1].tensor_proto.string_val[0].decode()
    assert "| eval/classifier_accuracy |" in text and "| eval/num_generated | 64 |" in text
    assert "| lr/discriminator |" in text  # the constant rates, once


def _layout(events) -> dict[str, dict[str, list[str]]]:
    proto = events.Tensors("custom_scalars__config__")[-1].tensor_proto
    layout = layout_pb2.Layout.FromString(proto.string_val[0])
    return {
        c.title: {chart.title: list(chart.multiline.tag) for chart in c.chart}
        for c in layout.category
    }


def test_custom_scalars_chart_each_network_d_outputs_fid_floor_and_lr(vaegan_events):
    import re

    layout = _layout(vaegan_events)
    assert list(layout) == [
        "losses by network",
        "discriminator outputs",
        "FID vs floor",
        "gradient norms",
    ]  # no "learning rates": this run's rate is constant, so it logged no lr/* curves
    assert list(layout["losses by network"]) == [
        "prior (encoder)",
        "llike (encoder, decoder)",
        "gan_dec (decoder)",
        "gan_d (discriminator)",
    ]
    logged = set(vaegan_events.Tags()["scalars"])

    def charted(category, chart):
        (pattern,) = layout[category][chart]
        return {t for t in logged if re.search(pattern, t)}

    assert charted("losses by network", "gan_d (discriminator)") == {"train/gan_d", "val/gan_d"}
    assert charted("losses by network", "llike (encoder, decoder)") == {
        "train/llike",
        "val/llike",
    }
    assert charted("discriminator outputs", "train") == {
        "train/d_real",
        "train/d_recon",
        "train/d_prior",
    }
    assert charted("FID vs floor", "FID") == {"val/fid", "val/fid_floor"}


def test_layout_has_only_charts_for_logged_tags():
    layout = scalar_layout(
        {"train/loss", "val/loss", "lr/vae", "val/fid"}, ["vae"], VAE.logged_terms
    )
    assert set(layout) == {"losses by network", "FID vs floor", "learning rates"}
    assert layout["losses by network"] == {
        "loss (vae)": ["Multiline", [r"^(train/loss|val/loss)$"]]
    }
    assert layout["learning rates"] == {"lr": ["Multiline", [r"^(lr/vae)$"]]}
    assert layout["FID vs floor"] == {"FID": ["Multiline", [r"^(val/fid)$"]]}


def test_hparams_lead_with_the_model_its_knobs_lr_batch_seed_and_the_optimised_metric(
    vaegan_events,
):
    content = vaegan_events.PluginTagToContent("hparams")
    experiment = hparams_metadata.parse_experiment_plugin_data(content["_hparams_/experiment"])
    # The order the HParams dashboard shows (it sorts the columns itself).
    backend_context._sort_and_reduce_to_hparams_limit(experiment)
    names = [info.name for info in experiment.hparam_infos]
    # The dashboard shows the first five: the model, the knob set away from its default
    # (model.width=8), the learning rate, seed and batch size.
    assert names[:5] == ["model", "model.width", "optimizer.lr", "seed", "trainer.batch_size"]
    assert "dataset" in names and "/" not in "".join(names)  # override names: optimizer.lr
    metrics = [info.name.tag for info in experiment.metric_infos]
    assert metrics[0] == "val/fid"
    assert not [m for m in metrics if m.startswith("eval/") or m.endswith("_floor")]
    start = hparams_metadata.parse_session_start_info_plugin_data(
        content["_hparams_/session_start_info"]
    )
    assert start.hparams["model"].string_value == "vaegan"
    # Whole numbers and booleans as written (TensorBoard prints numbers as 8.0000)
    assert start.hparams["model.width"].string_value == "8"
    assert start.hparams["model.spectral_norm"].string_value == "true"
    assert start.hparams["model.beta"].number_value == 1.0  # a float stays a number
    # optimizer.lr is null in the config (the model's choice): the column shows the rates
    # used, each network's where they differ (the VAE-GAN's autoencoder trains faster)
    shown = start.hparams["optimizer.lr"].string_value
    assert shown == "encoder 0.001, decoder 0.001, discriminator 0.0002"


def test_without_changed_knobs_the_latent_size_leads():
    from gentrain.tracking.dashboard import hparams_for

    flat = {"model/name": "vae", "model/latent_dim": 16, "model/beta": 1.0, "seed": 0}
    flat.update({"optimizer/lr": 2e-4, "trainer/batch_size": 128, "dataset/name": "mnist"})
    values, leading = hparams_for(flat, {"model/parameters": 1234.0})
    assert leading == {"model", "model.latent_dim", "optimizer.lr", "trainer.batch_size", "seed"}
    assert values["model"] == "vae" and values["dataset"] == "mnist"
    assert values["model.parameters"] == 1234
    _, leading = hparams_for(flat, {}, ["beta"])
    assert "model.beta" in leading and "model.latent_dim" not in leading


def test_a_conditional_run_charts_intra_fid_beside_fid_and_its_accuracy():
    tags = {"val/fid", "val/fid_floor", "val/intra_fid", "val/cond_accuracy", "val/precision"}
    charts = scalar_layout(tags, ["generator", "discriminator"], GAN.logged_terms)["FID vs floor"]
    assert charts["FID"] == ["Multiline", [r"^(val/fid|val/fid_floor|val/intra_fid)$"]]
    assert charts["conditional accuracy"] == ["Multiline", [r"^(val/cond_accuracy)$"]]
    assert list(charts) == ["FID", "precision, recall", "conditional accuracy"]
