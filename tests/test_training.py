"""End-to-end training on real MNIST subsets: outputs, checkpoints, resume, failures."""

from __future__ import annotations

import json
import math
import os
import signal

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gentrain.cli.train import TrainingInterrupted, train
from gentrain.core.errors import ConfigError, TrainingDivergedError
from gentrain.models.gan import GAN
from gentrain.models.vae import VAE


def test_few_steps_write_scalars_images_checkpoint_and_metrics(make_config, tmp_path):
    out = tmp_path / "run"
    metrics = train(make_config("optimizer.scheduler=cosine", output_dir=out))  # lr/* varies

    assert metrics["step"] == 4
    assert {
        "val/loss",
        "val/nll",
        "val/kl",
        "train/images_per_sec",
        "val/fid",
        "val/kid",
        "val/is",
        "val/precision",
        "val/recall",
        "val/fid_floor",
        "val/nll_iwae",
        "eval/num_generated",
    } <= set(metrics)
    assert json.loads((out / "metrics.json").read_text()) == pytest.approx(metrics)

    events = EventAccumulator(str(out), size_guidance={"images": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {
        "train/loss",
        "train/nll",
        "train/kl",
        "train/images_per_sec",
        "lr/vae",
        "val/loss",
        "val/fid",
        "val/recon_mse",
    } <= scalars
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
    assert {"samples", "reconstructions"} <= set(events.Tags()["images"])
    assert "config/text_summary" in events.Tags()["tensors"]

    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["step"] == 4 and state["model_class"] == "VAE"
    assert state["fixed_noise"].shape == (16, 32)  # the default latent size
    assert {"python", "numpy", "torch"} <= set(state["rng"])
    assert "vae" in state["optimizers"]["optimizers"]
    assert "name: vae" in state["config"]  # what gentrain-eval rebuilds the model from
    assert not list((out / "checkpoints").glob("*.tmp"))  # atomic writes leave no debris


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("model", ["vae", "gan", "vaegan"])
def test_two_epochs_equal_one_epoch_plus_resume(make_config, tmp_path, model):
    common = [
        f"model={model}",
        "model.width=8",
        "dataset.limit=128",
        "trainer.max_steps=null",
        "trainer.checkpoint_every_n_steps=3",
    ]
    straight, first = tmp_path / "straight", tmp_path / "first"
    train(make_config(*common, "trainer.max_epochs=2", output_dir=straight))
    train(make_config(*common, "trainer.max_epochs=1", output_dir=first))
    after_one = _weights(first / "checkpoints" / "last.ckpt")
    resumed = train(
        make_config(
            *common,
            "trainer.max_epochs=2",
            f"trainer.resume={first / 'checkpoints' / 'last.ckpt'}",
            output_dir=tmp_path / "new",
        )
    )
    assert resumed["step"] == 8 and resumed["epoch"] == 2
    # It continued in place: the run's own directory, none for the new process.
    assert not (tmp_path / "new").exists()
    history = [json.loads(line) for line in (first / "history.jsonl").open()]
    assert [(r["step"], r["epoch"]) for r in history] == [(4, 1), (8, 2)]
    assert 0 < history[0]["train_seconds"] < history[1]["train_seconds"]
    assert all("val/fid" in r for r in history)
    _assert_same(
        _weights(straight / "checkpoints" / "last.ckpt"),
        _weights(first / "checkpoints" / "last.ckpt"),
    )
    # The resumed run really continued: its weights differ from where it started.
    key = next(k for k in after_one if k.endswith("weight"))
    assert not torch.equal(after_one[key], _weights(straight / "checkpoints" / "last.ckpt")[key])


def test_resume_from_the_middle_of_an_epoch(make_config, tmp_path):
    common = ["dataset.limit=128", "trainer.max_epochs=1"]
    straight, part = tmp_path / "straight", tmp_path / "part"
    train(make_config(*common, "trainer.max_steps=null", output_dir=straight))
    first = train(make_config(*common, "trainer.max_steps=3", output_dir=part))
    with (part / "history.jsonl").open("a") as f:
        f.write('{"step": 3, "val/fi')  # a write cut short (disk full, power): skipped
    # A new run over a run's checkpoint would overwrite it: refused, with the way out.
    with pytest.raises(ConfigError, match="already holds a run .*trainer.resume=auto"):
        train(make_config(*common, "trainer.max_steps=null", output_dir=part))
    # resume=auto picks up the run directory's own checkpoint.
    resumed = train(
        make_config(*common, "trainer.max_steps=null", "trainer.resume=auto", output_dir=part)
    )
    _assert_same(
        _weights(straight / "checkpoints" / "last.ckpt"),
        _weights(part / "checkpoints" / "last.ckpt"),
    )
    # The resumed run's times and speed are the whole run's, not its last process's.
    assert resumed["time/wall_seconds"] > first["time/wall_seconds"]
    assert resumed["train/seconds"] > first["train/seconds"]
    assert resumed["train/fit_seconds"] > first["train/fit_seconds"] > 0  # both prior fits
    stepping = resumed["train/seconds"] - resumed["train/fit_seconds"]  # the steps' time
    assert resumed["train/images_per_sec"] == pytest.approx(resumed["step"] * 32 / stepping)
    history = [json.loads(line) for line in (part / "history.jsonl").open()]
    assert [r["step"] for r in history] == [3, 4]


def test_a_fresh_run_starts_a_fresh_learning_curve(make_config, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "history.jsonl").write_text('{"step": 99, "val/fid": 1.0}\n')  # a killed run's
    train(make_config("dataset.limit=128", output_dir=out))
    assert [json.loads(line)["step"] for line in (out / "history.jsonl").open()] == [4]


def test_time_budget_stops_mid_epoch_and_still_evaluates(make_config, tmp_path):
    out = tmp_path / "run"
    metrics = train(
        make_config(
            "dataset.limit=128",
            "trainer.max_steps=null",
            "trainer.max_epochs=3",
            "trainer.max_seconds=1e-9",  # spent by the first step
            output_dir=out,
        )
    )
    assert metrics["step"] == 1 and metrics["epoch"] == 0
    assert "val/fid" in metrics and metrics["train/seconds"] > 0
    assert metrics["model/parameters"] > 1000 and metrics["time/wall_seconds"] > 0
    history = [json.loads(line) for line in (out / "history.jsonl").open()]
    assert [r["step"] for r in history] == [1]
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["step"] == 1


def test_nan_loss_stops_with_step_and_term_and_keeps_last_checkpoint(
    make_config, tmp_path, monkeypatch
):
    original = VAE.losses

    def losses(self, x, beta, labels=None):
        terms = original(self, x, beta, labels)
        if int(self.steps_done) >= 2:  # the third step diverges
            terms["kl"] = terms["kl"] * float("nan")
            terms["loss"] = terms["nll"] + terms["kl"]
        return terms

    monkeypatch.setattr(VAE, "losses", losses)
    out = tmp_path / "run"
    with pytest.raises(TrainingDivergedError) as info:
        train(make_config(output_dir=out))
    message = str(info.value)
    assert "'loss'" in message and "'kl'" in message and "step 3" in message
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["step"] == 2


def test_nan_between_log_steps_is_named_at_its_step_and_never_saved(
    make_config, tmp_path, monkeypatch
):
    """The finite check reads its device-side flags only at log steps and before saves,
    yet still names the first bad step, and no checkpoint is written after it."""
    original = VAE.losses

    def losses(self, x, beta, labels=None):
        terms = original(self, x, beta, labels)
        if int(self.steps_done) == 1:  # only the second step is NaN
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(VAE, "losses", losses)
    out = tmp_path / "run"
    overrides = ("trainer.log_every_n_steps=50", "trainer.checkpoint_every_n_steps=100")
    with pytest.raises(TrainingDivergedError, match=r"'loss'.* at step 2 "):
        train(make_config(*overrides, output_dir=out))
    assert not (out / "checkpoints" / "last.ckpt").exists()


def test_sigterm_finishes_the_step_saves_and_exits(make_config, tmp_path, monkeypatch):
    original = VAE.training_step

    def training_step(self, x):
        logs = original(self, x)
        if int(self.steps_done) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return logs

    monkeypatch.setattr(VAE, "training_step", training_step)
    out = tmp_path / "run"
    with pytest.raises(TrainingInterrupted) as info:
        train(make_config("trainer.checkpoint_every_n_steps=100", output_dir=out))
    assert info.value.exit_code == 143
    assert "trainer.resume=" in str(info.value)
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["step"] == 2
    assert json.loads((out / "metrics.json").read_text())["step"] == 2


@pytest.mark.parametrize(
    ("model", "scalars", "images"),
    [
        (
            "gan",
            {
                "train/loss_d",
                "train/loss_g",
                "train/d_real",
                "train/d_fake",
                "train/grad_norm_d",
                "train/grad_norm_g",
                "lr/generator",
                "lr/discriminator",
                "val/loss_d",
                "val/d_fake",
            },
            {"samples"},
        ),
        ("gan model.loss=wgan_gp model.d_norm=none", {"train/gradient_penalty"}, {"samples"}),
        (
            "vaegan model.equilibrium_gate=true",
            {
                "train/prior",
                "train/llike",
                "train/gan_d",
                "train/gan_dec",
                "train/d_real",
                "train/d_recon",
                "train/d_prior",
                "train/gate_d",
                "train/gate_dec",
                "train/grad_norm_encoder",
                "train/grad_norm_decoder",
                "train/grad_norm_discriminator",
                "lr/encoder",
                "lr/decoder",
                "lr/discriminator",
                "val/loss",
                "val/recon_mse",
            },
            {"samples", "reconstructions"},
        ),
    ],
)
def test_adversarial_models_log_what_practitioners_read(
    make_config, tmp_path, model, scalars, images
):
    out = tmp_path / "run"
    overrides = [*f"model={model}".split(), "model.width=8", "optimizer.scheduler=cosine"]
    train(make_config(*overrides, output_dir=out))
    events = EventAccumulator(str(out), size_guidance={"images": 0}).Reload()
    assert scalars <= set(events.Tags()["scalars"])
    assert set(events.Tags()["images"]) == images
    assert (out / "images" / "samples.png").is_file()


def test_learning_rate_schedules_count_training_steps_not_updates(make_config, tmp_path):
    """n_critic D updates and updates_per_batch slices per step still move the cosine
    schedule once per step: it ends at the run's last step, for D as for G."""
    out = tmp_path / "run"
    overrides = ["model=gan", "model.width=8", "model.n_critic=2", "model.updates_per_batch=2"]
    train(make_config(*overrides, "optimizer.scheduler=cosine", output_dir=out))
    events = EventAccumulator(str(out)).Reload()
    base = GAN.optimizer_defaults["lr"]  # the GAN's recommended Adam lr
    expected = [base * 0.5 * (1 + math.cos(math.pi * step / 4)) for step in (1, 2, 3)]
    for network in ("generator", "discriminator"):
        logged = [e.value for e in events.Scalars(f"lr/{network}")][:3]
        assert logged == pytest.approx(expected, rel=1e-4), network


def test_exploding_discriminator_is_a_clear_error(make_config, tmp_path, monkeypatch):
    original = GAN.discriminator_losses

    def exploding(self, real, fake, *labels):
        loss, logs = original(self, real, fake, *labels)
        return loss * float("inf"), logs

    monkeypatch.setattr(GAN, "discriminator_losses", exploding)
    with pytest.raises(TrainingDivergedError, match=r"'loss_d'.*step 1"):
        train(make_config("model=gan", "model.width=8", output_dir=tmp_path / "run"))


def _folder(root, count, classes):
    """``count`` random RGB images, in ``classes`` subfolders (0: directly in the folder)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        sub = root / f"class{i % classes}" if classes else root
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(sub / f"{i}.png")
    return root


def _train_on_folder(make_config, tmp_path, caplog, folder):
    """A 32-px run on ``folder`` as typed (evaluation on): its metrics and log messages."""
    overrides = ["dataset=image_folder", f"dataset.path={folder}", "dataset.image_size=32"]
    with caplog.at_level("INFO", logger="gentrain"):
        metrics = train(make_config(*overrides, "trainer.batch_size=8", output_dir=tmp_path / "r"))
    return metrics, [r.getMessage() for r in caplog.records]


def _first(messages, text):
    return next(i for i, m in enumerate(messages) if text in m)


def test_an_unlabelled_folder_says_before_the_first_step_that_it_trains_unmeasured(
    make_config, tmp_path, caplog
):
    """The choice is said before training, and the run completes."""
    folder = _folder(tmp_path / "faces", 48, classes=0)
    metrics, messages = _train_on_folder(make_config, tmp_path, caplog, folder)
    said = _first(messages, "has no class labels")
    assert said < _first(messages, "training VAE") and "eval.features=inception" in messages[said]
    assert metrics["step"] == 4 and "val/fid" not in metrics and "val/loss" in metrics
    assert (tmp_path / "r" / "checkpoints" / "last.ckpt").is_file()


def test_a_labelled_folder_trains_its_classifier_before_the_first_step(
    make_config, tmp_path, caplog
):
    folder = _folder(tmp_path / "pets", 60, classes=3)
    metrics, messages = _train_on_folder(make_config, tmp_path, caplog, folder)
    assert _first(messages, "image_folder feature classifier") < _first(messages, "training VAE")
    assert "val/fid" in metrics and 0.0 <= metrics["eval/classifier_accuracy"] <= 1.0
    split = messages[_first(messages, "image folder ")]
    assert "54 training and 6 validation images in 3 classes" in split


def test_a_run_trains_the_same_whether_its_feature_classifier_was_cached_or_not(
    make_config, tmp_path
):
    """The classifier is settled before the first step: training it, or building it to load
    the cache, must draw nothing from the run's random numbers."""
    cache = f"paths.cache_dir={tmp_path / 'fresh_cache'}"
    runs = [tmp_path / "cold", tmp_path / "warm"]  # the first trains and caches, the second loads
    for run in runs:
        train(make_config("trainer.max_steps=1", "dataset.limit=128", cache, output_dir=run))
    cold, warm = (torch.load(r / "checkpoints" / "last.ckpt", weights_only=True) for r in runs)
    assert all(torch.equal(cold["model"][k], warm["model"][k]) for k in cold["model"])
