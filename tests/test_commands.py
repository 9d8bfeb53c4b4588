"""gentrain-eval and gentrain-sample on a checkpoint from a few-step run."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from gentrain.cli import evaluate, sample
from gentrain.cli.train import train


def _train_few_steps(out, data_dir, cache_dir, *overrides):
    """A 4-step run without logging or evaluation: just a checkpoint to work on."""
    from conftest import compose_config

    base = ["debug=fast", "device=cpu", "logger=none", "eval.enabled=false"]
    paths = [
        f"paths.data_dir={data_dir}",
        f"paths.cache_dir={cache_dir}",
        f"paths.output_dir={out}",
    ]
    train(compose_config([*base, *overrides, *paths]))
    return out


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory, data_dir, cache_dir):
    return _train_few_steps(tmp_path_factory.mktemp("vae_run"), data_dir, cache_dir)


def test_eval_prints_metrics_with_floor_and_writes_json(vae_run, cache_dir, capsys):
    evaluate.main(
        [
            str(vae_run),
            "--num-samples",
            "64",
            "--nll-samples",
            "4",
            "--nll-images",
            "16",
            "--cache-dir",
            str(cache_dir),
            "--device",
            "cpu",
        ]
    )
    shown = capsys.readouterr().out
    assert "real-data floor" in shown and "val/fid" in shown and "64 generated" in shown
    payload = json.loads((vae_run / "eval.json").read_text())
    metrics = payload["metrics"]
    assert payload["step"] == 4
    assert metrics["eval/num_generated"] == 64 and metrics["eval/nll_k"] == 4
    assert {
        "val/fid",
        "val/kid",
        "val/is",
        "val/precision",
        "val/recall",
        "val/fid_floor",
        "val/recon_mse",
        "val/nll_iwae",
    } <= set(metrics)


@pytest.mark.parametrize(
    ("args", "name", "size"),
    [
        ([], "sample.png", (2 + 8 * 30, 2 + 8 * 30)),
        (["-n", "4", "--interpolate", "5"], "interpolations.png", (2 + 5 * 30, 2 + 4 * 30)),
        (
            ["-n", "4", "--interpolate", "5", "--real"],
            "interpolations.png",
            (2 + 5 * 30, 2 + 4 * 30),
        ),
        (["-n", "16", "--reconstruct"], "reconstructions.png", (2 + 8 * 30, 2 + 4 * 30)),
    ],
)
def test_sample_writes_the_requested_grid(vae_run, args, name, size):
    sample.main([str(vae_run), "--device", "cpu", *args])
    with Image.open(vae_run / "images" / name) as image:
        assert image.size == size


def test_sample_refuses_reconstruction_for_a_gan(tmp_path, data_dir, cache_dir, capsys):
    out = _train_few_steps(tmp_path / "gan", data_dir, cache_dir, "model=gan", "model.width=8")
    with pytest.raises(SystemExit) as info:
        sample.main([str(out), "--reconstruct", "--device", "cpu"])
    assert info.value.code == 2
    assert "gan has no encoder" in capsys.readouterr().err


def test_sample_exports_a_png_per_image_and_an_npz_seeded_and_batched(vae_run, tmp_path):
    import numpy as np

    def npz(name, *extra):
        path = tmp_path / name
        sample.main([str(vae_run), "--device", "cpu", "-n", "10", *extra, "--output", str(path)])
        with np.load(path) as data:
            return data["arr_0"]

    first = npz("a.npz", "--batch-size", "4")  # batches of 4, 4, 2
    assert first.shape == (10, 28, 28, 3) and first.dtype == np.uint8  # NHWC, RGB
    assert (first[..., 0] == first[..., 2]).all() and first.std() > 0  # grey, not blank
    assert np.array_equal(first, npz("b.npz", "--batch-size", "4"))  # same seed, same images
    assert not np.array_equal(first, npz("c.npz", "--batch-size", "4", "--seed", "1"))

    folder = tmp_path / "pngs"
    sample.main(
        [str(vae_run), "--device", "cpu", "-n", "10", "--batch-size", "4"]
        + ["--output", f"{folder}/"]
    )
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == [f"{i:06d}.png" for i in range(10)]
    for index, path in enumerate(files):  # the same images as the array: lossless PNGs
        with Image.open(path) as image:
            assert image.mode == "L" and image.size == (28, 28)
            assert np.array_equal(np.asarray(image), first[index, ..., 0])


def test_sample_export_refuses_grid_options_and_unknown_suffixes(vae_run, tmp_path, capsys):
    for args in (["--reconstruct", "--output", "x.npz"], ["--output", str(tmp_path / "x.jpg")]):
        with pytest.raises(SystemExit) as info:
            sample.main([str(vae_run), "--device", "cpu", *args])
        assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--interpolate and --reconstruct make grids" in err
    assert "expected a .png file, a directory (ending in /) or a .npz file" in err


@pytest.mark.parametrize(
    "command", ["gentrain", "gentrain-eval", "gentrain-sample", "gentrain-compare"]
)
def test_every_help_opens_with_one_proper_sentence(command, capsys):
    """The first line after argparse's usage block (Hydra's gentrain has none) says what
    the command does: it starts with the command's name, reads as a sentence, and the
    sentence ends with a full stop (no cut-off, no leftover markup). Each command is
    installed; gentrain's (Hydra's) help runs as the installed command, the argparse
    commands' in this process, through the function their entry point calls."""
    import re
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from gentrain.cli import compare

    exe = shutil.which(command) or str(Path(sys.executable).parent / command)
    assert Path(exe).is_file(), f"{command} is not installed"
    if command == "gentrain":
        result = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        text = result.stdout
    else:
        entry = {"gentrain-eval": evaluate, "gentrain-sample": sample, "gentrain-compare": compare}
        with pytest.raises(SystemExit) as done:
            entry[command].main(["--help"])
        assert done.value.code == 0
        text = capsys.readouterr().out
    whole = text
    if text.startswith("usage:"):
        text = text.split("\n\n", 1)[1]  # skip the usage block
    description = text.split("\n\n", 1)[0]
    sentence = " ".join(description.split())
    assert sentence.startswith(f"{command}: "), sentence
    assert re.fullmatch(r"[\w-]+: [a-z][^`]*[a-z0-9)]\.", sentence), sentence
    assert "examples" in whole.lower()


# --- conditional models: --label ---------------------------------------------------------------
@pytest.fixture(scope="module")
def cvae_run(tmp_path_factory, data_dir, cache_dir):
    out = tmp_path_factory.mktemp("cvae_run")
    return _train_few_steps(out, data_dir, cache_dir, "model.conditional=true", "model.width=8")


def _spy(monkeypatch, method):
    """Record the labels that ``VAE.<method>`` is called with (and its images)."""
    from gentrain.models.vae import VAE

    calls, original = [], getattr(VAE, method)

    def spy(self, x, labels=None):
        calls.append((x.clone(), None if labels is None else labels.clone()))
        return original(self, x, labels)

    monkeypatch.setattr(VAE, method, spy)
    return calls


def test_sample_label_draws_that_class_by_index_or_name(cvae_run, monkeypatch):
    calls = _spy(monkeypatch, "sample")
    sample.main([str(cvae_run), "--device", "cpu", "-n", "9", "--label", "7"])
    assert Image.open(cvae_run / "images" / "sample_7.png").size == (2 + 3 * 30, 2 + 3 * 30)
    sample.main([str(cvae_run), "--device", "cpu", "-n", "9"])  # no label: each class in turn
    (noise, sevens), (same_noise, default) = calls
    assert sevens.tolist() == [7] * 9 and default.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert torch.equal(noise, same_noise)  # the seed fixes the noise, the label the class


def test_sample_label_all_is_one_row_per_class(cvae_run, capsys):
    sample.main([str(cvae_run), "--device", "cpu", "-n", "3", "--label", "all"])
    # 10 rows (classes) of 3 columns (styles), 28-px digits with 2-px padding
    assert Image.open(cvae_run / "images" / "classes.png").size == (2 + 3 * 30, 2 + 10 * 30)
    assert "rows, top to bottom: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in capsys.readouterr().out


def test_sample_label_export_and_real_interpolation_stay_in_the_class(
    cvae_run, tmp_path, monkeypatch
):
    import numpy as np

    from gentrain.training.restore import load_trained_run

    calls = _spy(monkeypatch, "sample")
    encodes = _spy(monkeypatch, "encode")
    out = tmp_path / "threes.npz"
    export = ["-n", "6", "--batch-size", "4", "--label", "3", "--output", str(out)]
    sample.main([str(cvae_run), "--device", "cpu", *export])
    assert np.load(out)["arr_0"].shape == (6, 28, 28, 3)
    assert [labels.tolist() for _, labels in calls] == [[3] * 4, [3] * 2]
    decodes = _spy(monkeypatch, "decode")
    walk = ["-n", "2", "--interpolate", "4", "--real", "--label", "3"]
    sample.main([str(cvae_run), "--device", "cpu", *walk])
    [(images, labels)] = encodes
    data = load_trained_run(cvae_run, "cpu").data
    threes = data.val[data.val_labels == 3].float() / 255
    # both ends of each walk are test images of class 3, encoded and decoded as 3s
    assert labels.tolist() == [3] * 4 and decodes[-1][1].tolist() == [3] * 8
    assert all((threes == image).flatten(1).all(1).any() for image in images)


def test_sample_reconstructs_a_conditional_model_with_the_images_labels(cvae_run, monkeypatch):
    calls = _spy(monkeypatch, "reconstruct")
    sample.main([str(cvae_run), "--device", "cpu", "-n", "4", "--reconstruct"])
    sample.main([str(cvae_run), "--device", "cpu", "-n", "4", "--reconstruct", "--label", "5"])
    (_, first), (_, fives) = calls
    from gentrain.training.restore import load_trained_run

    data = load_trained_run(cvae_run, "cpu").data
    assert first.tolist() == data.val_labels[:4].tolist()  # the first test images, their labels
    assert fives.tolist() == [5] * 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--label", "10"],
            "mnist has no such class; available: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, all",
        ),
        (["--label", "seven"], "no such class"),
        (["--label", "all", "--reconstruct"], "--label all draws the class grid"),
        (["--label", "all", "--output", "x.npz"], "--label all draws the class grid"),
    ],
)
def test_sample_refuses_a_label_it_cannot_draw(cvae_run, capsys, args, message):
    with pytest.raises(SystemExit) as info:
        sample.main([str(cvae_run), "--device", "cpu", *args])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_sample_refuses_a_label_for_an_unconditional_model(vae_run, capsys):
    with pytest.raises(SystemExit) as info:
        sample.main([str(vae_run), "--device", "cpu", "--label", "7"])
    assert info.value.code == 2
    assert "is unconditional" in capsys.readouterr().err


def test_numeric_class_names_are_read_as_names_not_indices():
    from types import SimpleNamespace

    from gentrain.core.errors import GentrainError

    # an image_folder with folders 10, 2, 3 (sorted as strings): "2" is index 1
    run = SimpleNamespace(
        model=SimpleNamespace(conditional=True, num_classes=3),
        data=SimpleNamespace(class_names=["10", "2", "3"], name="image_folder"),
        config=None,
    )
    assert sample.parse_label(run, "2") == 1 and sample.parse_label(run, "10") == 0
    with pytest.raises(GentrainError, match="no such class; available: 0 \\(10\\), 1 \\(2\\)"):
        sample.parse_label(run, "1")  # an index that is not a name: refused, not class "2"
    with pytest.raises(GentrainError, match="no such class"):
        sample.parse_label(run, "²")  # a digit to str.isdigit, no number to int()
