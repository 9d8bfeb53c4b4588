"""A real (tiny) multirun: named job dirs, summary files, HParams, a job failing on purpose."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def test_multirun_summarises_jobs_and_survives_a_failing_one(
    data_dir, cache_dir, tmp_path, gentrain_main
):
    sweep_dir = tmp_path / "sweep"
    code, output = gentrain_main(
        *["-m", "debug=fast", "device=cpu", "eval.enabled=false"],
        *["optimized_metric=val/d_real", "model=gan,vaegan", "model.width=8"],
        *["optimizer.lr=0.001,-1", f"paths.data_dir={data_dir}", f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path,
        env={"GENTRAIN_CACHE_DIR": str(cache_dir)},
    )
    assert code == 0, output
    names = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    assert names == [  # readable: the job number, then the overrides that vary between jobs
        "0_model=gan,optimizer.lr=0.001",
        "1_model=gan,optimizer.lr=-1",
        "2_model=vaegan,optimizer.lr=0.001",
        "3_model=vaegan,optimizer.lr=-1",
    ]
    with open(sweep_dir / "summary.csv") as f:
        rows = {row["job"]: row for row in csv.DictReader(f)}
    assert [rows[n]["status"] for n in names] == ["completed", "failed", "completed", "failed"]
    assert "optimizer.lr must be positive" in rows[names[1]]["error"]
    assert float(rows[names[0]]["val/d_real"]) >= 0 and rows[names[1]]["val/d_real"] == ""
    assert float(rows[names[2]]["wall_seconds"]) > 0
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert len(summary["jobs"]) == 4 and summary["optimized_metric"] == "val/d_real"
    assert "2 of 4 jobs failed" in output

    for name in (names[0], names[2]):  # HParams: one row per job in TensorBoard
        events = EventAccumulator(str(sweep_dir / name)).Reload()
        tags = events.PluginTagToContent("hparams")
        assert "_hparams_/session_start_info" in tags
        assert "_hparams_/experiment" not in tags  # the sweep's table is the one
    # One column list for the sweep, at its root: both models' knobs are columns.
    from tensorboard.plugins.hparams import metadata

    root = EventAccumulator(str(sweep_dir)).Reload()
    content = root.PluginTagToContent("hparams")["_hparams_/experiment"]
    columns = {i.name: i for i in metadata.parse_experiment_plugin_data(content).hparam_infos}
    assert {"model.n_critic", "model.pixel_weight", "model", "seed"} <= set(columns)
    assert columns["model"].differs and columns["seed"].differs  # they lead every table
    assert not columns["model.pixel_weight"].differs  # one value among the runs that have it
    batch = columns["trainer.batch_size"]  # an integer: shown as written, 32
    assert [v.string_value for v in batch.domain_discrete.values] == ["32"]
    assert columns["optimizer.lr"].HasField("domain_interval")  # a float: a range


def test_seeds_are_aggregated_for_otherwise_identical_overrides():
    from gentrain.experiments.sweep import aggregate_over_seeds

    def row(overrides, value, status="completed"):
        return {"_overrides": overrides, "status": status, "val/fid": value}

    rows = [  # trainer.max_steps=9 is every job's: the groups are named without it
        row(["model=vae", "seed=0", "trainer.max_steps=9"], 10.0),
        row(["model=vae", "seed=1", "trainer.max_steps=9"], 14.0),
        row(["model=gan", "seed=0", "trainer.max_steps=9"], 30.0),
        row(["model=gan", "seed=1", "trainer.max_steps=9"], None, "failed"),
    ]
    by_seed = {r["overrides"]: r for r in aggregate_over_seeds(rows, "val/fid")}
    assert by_seed["model=vae"]["seeds"] == 2 and by_seed["model=vae"]["val/fid mean"] == 12.0
    assert by_seed["model=vae"]["val/fid std"] == pytest.approx(2.8284, abs=1e-4)
    assert by_seed["model=gan"]["seeds"] == 1


def test_conditional_metrics_are_columns_only_when_a_job_has_them(tmp_path):
    from gentrain.experiments.sweep import jobs_table, shown_metrics, write_summary_files

    def row(job, **metrics):
        overrides = [f"model={job}", "seed=0"]
        return {
            "job": f"0_{job}",
            "overrides": " ".join(overrides),
            "status": "completed",
            "error": "",
            "_overrides": overrides,
            **metrics,
        }

    plain = [row("gan", **{"val/fid": 40.0}), row("vae", **{"val/fid": 90.0})]
    assert shown_metrics(plain, ["val/fid"]) == ["val/fid"]
    mixed = [
        *plain,
        row("cgan", **{"val/fid": 30.0, "val/cond_accuracy": 0.97, "val/intra_fid": 55.0}),
    ]
    metrics = shown_metrics(mixed, ["val/fid"])
    assert metrics == ["val/fid", "val/cond_accuracy", "val/intra_fid"]
    assert shown_metrics(mixed, ["val/intra_fid"]) == ["val/intra_fid", "val/cond_accuracy"]

    write_summary_files(tmp_path, mixed, metrics, "val/fid", [], set())
    with open(tmp_path / "summary.csv") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames[3:6] == metrics  # beside the optimised metric
        cells = [(r["val/cond_accuracy"], r["val/intra_fid"]) for r in reader]
    assert cells == [("", ""), ("", ""), ("0.97", "55.0")]
    assert json.loads((tmp_path / "summary.json").read_text())["metrics"] == metrics
    table = {c.header: list(c.cells) for c in jobs_table(tmp_path, mixed, metrics, set()).columns}
    assert table["val/cond_accuracy"] == ["-", "-", "0.97"] and table["val/intra_fid"][2] == "55"
    plain_table = jobs_table(tmp_path, plain, shown_metrics(plain, ["val/fid"]), set())
    assert [c.header for c in plain_table.columns] == [
        "job",
        "overrides (varying)",
        "status",
        "val/fid",
        "wall s",
    ]


def _sweep(gentrain_main, data_dir, cache_dir, tmp_path, *overrides):
    sweep_dir = tmp_path / "sweep"
    code, output = gentrain_main(
        *[o for o in overrides if o.startswith("-")],
        *["debug=fast", "device=cpu", "eval.enabled=false", "logger=none"],
        "optimized_metric=val/loss",
        *[o for o in overrides if not o.startswith("-")],
        *[f"paths.data_dir={data_dir}", f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path,
        env={"GENTRAIN_CACHE_DIR": str(cache_dir)},
    )
    assert code == 0, output
    with open(sweep_dir / "summary.csv") as f:
        return sweep_dir, list(csv.DictReader(f))


def test_optuna_search_runs_its_trials_and_a_relaunch_continues_its_study(
    data_dir, cache_dir, tmp_path, gentrain_main
):
    search = ["hparams_search=vae_optuna", "hydra.sweeper.sampler.n_startup_trials=1"]
    sweep_dir, rows = _sweep(
        gentrain_main, data_dir, cache_dir, tmp_path, *search, "hydra.sweeper.n_trials=1"
    )
    assert len(rows) == 1 and rows[0]["status"] == "completed"
    # The default storage lives in the sweep directory. Relaunched against it with
    # n_trials=2 (here into another directory), the study runs one more trial, not two.
    storage = f"sqlite:///{sweep_dir / 'optuna.db'}"
    (tmp_path / "again").mkdir()
    sweep_dir, rows = _sweep(
        gentrain_main,
        data_dir,
        cache_dir,
        tmp_path / "again",
        *search,
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.n_trials=2",
    )
    assert len(rows) == 1 and rows[0]["status"] == "completed"
    best = (sweep_dir / "optimization_results.yaml").read_text()
    assert "best_value" in best and "optimizer.lr" in best
    import optuna

    study = optuna.load_study(study_name="vae_search", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 2
    assert study.best_value == pytest.approx(float(best.split("best_value:")[1].split()[0]))


def test_a_killed_sweep_relaunched_finishes_its_jobs_without_retraining(
    data_dir, cache_dir, tmp_path, gentrain_main
):
    command = [
        *[sys.executable, "-m", "gentrain", "-m", "debug=fast", "device=cpu"],
        *["dataset.download=false", f"paths.data_dir={data_dir}", "seed=0,1,2,3"],
    ]
    env = {**os.environ, "GENTRAIN_CACHE_DIR": str(cache_dir)}
    root = tmp_path / "outputs" / "multirun"
    first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(list(root.glob("*/*/*/status.json"))) < 2:
        assert first.poll() is None and time.monotonic() < deadline, "the sweep ended early"
        time.sleep(0.05)
    first.kill()  # kill -9 while the third job starts or trains
    first.wait()
    (sweep_dir,) = root.glob("*/*")
    kept = {
        status.parent.name: (status.parent / "checkpoints" / "last.ckpt").stat().st_mtime_ns
        for status in sweep_dir.glob("*/status.json")
    }
    assert 2 <= len(kept) < 4 and not (sweep_dir / "summary.csv").exists()  # killed mid-sweep

    # The relaunch, as typed again (in this process: the kill above is the CLI's part).
    code, output = gentrain_main(*command[3:], cwd=tmp_path, env=env)
    assert code == 0, output
    assert f"continuing the unfinished sweep {sweep_dir.relative_to(tmp_path)}" in output
    assert list(root.glob("*/*")) == [sweep_dir]  # the same sweep, no second one
    with open(sweep_dir / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["job"] for r in rows) == [f"{i}_seed={i}" for i in range(4)]
    assert all(r["status"] == "completed" and float(r["val/fid"]) > 0 for r in rows)
    for job, mtime in kept.items():  # the finished jobs were not trained again
        assert (sweep_dir / job / "checkpoints" / "last.ckpt").stat().st_mtime_ns == mtime
    assert json.loads((sweep_dir / "sweep.json").read_text())["launches"] == 2


def test_parallel_local_launcher_runs_jobs(data_dir, cache_dir, tmp_path, gentrain_main):
    _, rows = _sweep(
        gentrain_main,
        *(data_dir, cache_dir, tmp_path),
        *("-m", "launcher=local_parallel", "model.latent_dim=4,8"),
    )
    assert [r["status"] for r in rows] == ["completed", "completed"]
    latent = {o for r in rows for o in r["overrides"].split() if o.startswith("model.latent")}
    assert latent == {"model.latent_dim=4", "model.latent_dim=8"}


@pytest.mark.parametrize(
    ("override", "target"),
    [
        ("launcher=slurm", "SlurmLauncher"),
        ("launcher=local_parallel", "JoblibLauncher"),
        ("hparams_search=gan_optuna", "OptunaSweeper"),
    ],
)
def test_launcher_and_search_presets_compose(override, target):
    from hydra import compose, initialize_config_dir

    from gentrain.core.paths import config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        cfg = compose(config_name="train", overrides=[override], return_hydra_config=True)
    node = cfg.hydra.sweeper if "Sweeper" in target else cfg.hydra.launcher
    assert node._target_.endswith(target)
    if override == "launcher=slurm":
        assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.device.name == "cuda"


def test_job_names_keep_what_varies_and_stay_one_directory(monkeypatch):
    from gentrain.experiments.sweep import FIXED_KEYS_ENV, job_name, remember_fixed_keys

    monkeypatch.delenv(FIXED_KEYS_ENV, raising=False)
    remember_fixed_keys(["-m", "model=vae,gan", "trainer.max_steps=9", "+experiment=x", "seed=0"])
    task = ["model=gan", "trainer.max_steps=9", "+experiment=x", "seed=0", "paths.data_dir=/d"]
    assert job_name(task) == "model=gan"
    # Optuna's sampled values are not on the command line: they vary.
    assert job_name([*task, "optimizer.lr=0.003"]) == "model=gan,optimizer.lr=0.003"
    # Nothing varies (a one-job multirun): all overrides but paths, never a slash.
    remember_fixed_keys(["-m", "model=vae", "dataset=image_folder", "dataset.path=/a/b"])
    assert job_name(["model=vae", "dataset.path=/a/b", "dataset=image_folder"]) == (
        "dataset=image_folder,model=vae"
    )
    assert (
        job_name(["optimizer.lr=1e-3", "dataset.root=x/y"]) == "dataset.root=x_y,optimizer.lr=1e-3"
    )
