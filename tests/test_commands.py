"""gentrain-eval and gentrain-sample on a checkpoint from a few-step run."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from gentrain import evaluate, sample
from gentrain.train import train


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
    assert "gan has no encoder" in capsys.readouterr().out
