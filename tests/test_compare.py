"""gentrain-compare: planning, up-front checks, the report's numbers, and a tiny real run."""

from __future__ import annotations

import json
import os
import statistics

import pytest
from PIL import Image

from gentrain.cli.compare import main
from gentrain.core.errors import ConfigError
from gentrain.experiments.comparison.arms import load_arms, plan_runs
from gentrain.experiments.comparison.checks import check_runs
from gentrain.experiments.report import build_report


def write_spec(path, arms):
    import yaml

    path.write_text(yaml.safe_dump({"arms": arms}, sort_keys=False))
    return path


def test_arms_subset_brings_its_source_and_bad_names_list_the_valid_ones(tmp_path):
    from gentrain.experiments.comparison.arms import spec_path

    arms = load_arms(spec_path(), ["vae_to_vaegan"])
    assert [a.name for a in arms] == ["vae", "vae_to_vaegan"]
    with pytest.raises(ConfigError, match="unknown arm.*vea.*has: vae, gan, vaegan, vae_to_vaegan"):
        load_arms(spec_path(), ["vea"])
    with pytest.raises(ConfigError, match="sets: default, conditional"):
        load_arms(spec_path(), ["conditionl"])
    # No --arms: the default set; a set's name: its arms, in the file's order.
    assert [a.name for a in load_arms(spec_path(), None)] == [
        "vae",
        "gan",
        "vaegan",
        "vae_to_vaegan",
    ]
    assert [a.name for a in load_arms(spec_path(), ["cvae_to_cvaegan", "gan"])] == [
        "gan",
        "cvae",
        "cvae_to_cvaegan",
    ]
    bad_set = write_spec(tmp_path / "bad_set.yaml", {"a": {"overrides": ["model=vae"]}})
    bad_set.write_text(bad_set.read_text() + "sets:\n  mine: [a, b]\n")
    with pytest.raises(ConfigError, match="set 'mine' names unknown arm\\(s\\) b; arms: a"):
        load_arms(bad_set, ["mine"])
    late = write_spec(
        tmp_path / "late.yaml",
        {
            "b": {"overrides": ["model=vaegan"], "init_from": "a"},
            "a": {"overrides": ["model=vae"]},
        },
    )
    with pytest.raises(ConfigError, match="'b' starts from 'a', which must be an arm listed"):
        load_arms(late, None)


def test_the_commands_differ_only_in_arm_seed_and_directory(tmp_path):
    from gentrain.experiments.comparison.arms import spec_path

    runs = plan_runs(load_arms(spec_path(), None), [0, 1], ["trainer.max_epochs=3"], tmp_path)
    assert [r.key for r in runs[:4]] == [
        "vae/seed_0",
        "gan/seed_0",
        "vaegan/seed_0",
        "vae_to_vaegan/seed_0",
    ]
    vaegan, converted = runs[2], runs[3]
    assert converted.overrides[:-2] == vaegan.overrides[:-2]  # same preset, budget, seed
    args = converted.command(source=runs[0], resume=False)
    assert args[-1] == f"init_from={runs[0].run_dir}"
    resumed = converted.command(source=runs[0], resume=True)
    assert not any(a.startswith("init_from=") for a in resumed)  # resume wins: full state
    assert all(
        "trainer.max_epochs=3" in r.overrides and f"seed={r.seed}" in r.overrides for r in runs
    )


def test_a_warm_start_that_cannot_fit_fails_before_any_training(tmp_path, data_dir):
    spec = write_spec(
        tmp_path / "spec.yaml",
        {
            "vae": {"overrides": ["model=vae", "model.latent_dim=8", "model.encoder_norm=batch"]},
            "vaegan": {"overrides": ["model=vaegan"], "init_from": "vae"},
        },
    )
    common = [f"paths.data_dir={data_dir}", "dataset.download=false", "dataset.limit=64"]
    runs = plan_runs(load_arms(spec, None), [0], common, tmp_path / "out")
    with pytest.raises(ConfigError) as info:
        check_runs(runs)
    message = str(info.value)
    assert "init_from=<arm vae>: the VAE's weights do not fit this VAEGAN" in message
    assert "checkpoint encoder." in message and "checkpoint decoder." in message
    # Both settings the source arm changed, read from its config:
    assert "Fix: add model.latent_dim=8 model.encoder_norm=batch to this command" in message
    assert not (tmp_path / "out").exists()  # nothing ran, nothing written

    with pytest.raises(ConfigError, match="arm vae: unknown config key 'model.nonexistent'"):
        check_runs(
            plan_runs(
                load_arms(spec, None), [0], [*common, "+model.nonexistent=1"], tmp_path / "out"
            )
        )


def test_compare_refuses_what_it_sets_itself(capsys):
    with pytest.raises(SystemExit) as info:
        main(["seed=3"])
    assert info.value.code == 2
    assert "sets this itself" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
def fake_run(run_dir, metrics, curve):
    (run_dir / "images").mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / "history.jsonl").write_text(
        "".join(
            json.dumps({"step": i, "train_seconds": t, "val/fid": f}) + "\n"
            for i, (t, f) in enumerate(curve)
        )
    )
    Image.new("RGB", (62, 62), "white").save(run_dir / "images" / "samples.png")


def test_report_numbers_are_the_runs_metrics(tmp_path):
    out = tmp_path / "cmp"
    arms = [
        {"name": "vae", "label": "VAE", "init_from": None},
        {"name": "conv", "label": "VAE→VAE-GAN", "init_from": "vae"},
    ]
    runs, values = {}, {}
    for arm, base in (("vae", 100.0), ("conv", 50.0)):
        for seed in (0, 1):
            run_dir = out / "runs" / arm / f"seed_{seed}"
            metrics = {
                "val/fid": base + 10 * seed,
                "val/kid": 2.0 + seed,
                "val/fid_floor": 4.5,
                "val/kid_floor": 0.25,
                "train/seconds": 60.0 + seed,
                "time/wall_seconds": 90.0,
                "model/parameters": 1234.0,
            }
            if arm == "vae":
                metrics["val/elbo"] = -(120.0 + seed)
            fake_run(run_dir, metrics, [(30.0, base * 2), (60.0 + seed, base + 10 * seed)])
            values[(arm, seed)] = metrics
            runs[f"{arm}/seed_{seed}"] = {
                "arm": arm,
                "label": arm,
                "seed": seed,
                # Relative to the comparison (it may move); absolute paths of old states work.
                "dir": str(run_dir.relative_to(out)) if seed == 0 else str(run_dir),
                "status": "done",
                "command": f"gentrain model={arm} seed={seed}",
            }
    out.mkdir(exist_ok=True)
    state = {"arms": arms, "seeds": [0, 1], "budget": ["trainer.max_epochs=3"], "runs": runs}
    (out / "compare.json").write_text(json.dumps(state))

    build_report(out)
    summary = json.loads((out / "summary.json").read_text())
    header, rows = summary["table"]["header"], summary["table"]["rows"]
    col = {name: i for i, name in enumerate(header)}
    vae, conv, floor = rows
    assert "cond. accuracy ↑" not in header and "intra-FID ↓" not in header  # none is conditional
    fids = [values[("vae", s)]["val/fid"] for s in (0, 1)]
    assert vae[col["FID ↓"]] == f"{statistics.fmean(fids):.1f} ± {statistics.stdev(fids):.1f}"
    assert vae[col["−ELBO (nats) ↓"]] == "120.5 ± 0.7"
    assert conv[col["−ELBO (nats) ↓"]] == "—"  # not defined for that model
    # The converted arm's cost includes the VAE it started from: (60+60, 61+61) seconds.
    assert conv[col["train time (s)"]] == "121.0 ± 1.4"
    assert conv[col["wall time (s)"]] == "180.0 ± 0.0"
    assert floor[col["FID ↓"]] == "4.5" and floor[col["KID ↓"]] == "0.2"
    assert summary["arms"]["conv"]["fid_curve"]["1"] == [[91.0, 100.0], [122.0, 60.0]]
    # summary.json keeps each run's own numbers, and the cumulative cost beside them.
    assert summary["arms"]["conv"]["runs"]["1"]["train/seconds"] == 61.0
    assert summary["arms"]["conv"]["costs"]["1"]["train/seconds"] == 122.0

    markdown = (out / "report.md").read_text()
    assert all("| " + " | ".join(row) + " |" in markdown for row in rows)
    assert "gentrain model=conv seed=1" in markdown
    html = (out / "report.html").read_text()
    assert "55.0 ± 7.1" in html and "fid_vs_time.png" in html
    for name in ("fid_vs_time.png", "samples_seed_0.png", "samples_seed_1.png"):
        assert Image.open(out / name).width > 100
    assert not (out / "reconstructions_seed_0.png").exists()  # no arm had reconstructions
    assert list((out / "tb").glob("events.out.tfevents.*"))

    # Without its source's cost a converted run would look cheaper: it is left out, and said.
    state["runs"]["vae/seed_1"]["status"] = "failed"
    (out / "compare.json").write_text(json.dumps(state))
    build_report(out)
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["arms"]["conv"]["runs"]) == ["0"]
    assert "source run (vae) is not finished" in summary["arms"]["conv"]["status"]["1"]


def test_report_shows_conditional_metrics_when_a_run_has_them(tmp_path):
    out = tmp_path / "cmp"
    arms = [
        {"name": "gan", "label": "GAN", "init_from": None},
        {"name": "cgan", "label": "cGAN", "init_from": None},
    ]
    runs = {}
    for arm in ("gan", "cgan"):
        for seed in (0, 1):
            run_dir = out / "runs" / arm / f"seed_{seed}"
            metrics = {"val/fid": 40.0, "val/fid_floor": 2.0, "eval/classifier_accuracy": 0.9876}
            if arm == "cgan":
                metrics.update({"val/cond_accuracy": 0.8 + 0.1 * seed, "val/intra_fid": 60.0})
            fake_run(run_dir, metrics, [(10.0, 40.0)])
            runs[f"{arm}/seed_{seed}"] = {
                "arm": arm,
                "seed": seed,
                "dir": str(run_dir.relative_to(out)),
                "status": "done",
                "command": f"gentrain {arm}",
            }
    state = {"arms": arms, "seeds": [0, 1], "budget": ["trainer.max_epochs=3"], "runs": runs}
    (out / "compare.json").write_text(json.dumps(state))
    build_report(out)
    summary = json.loads((out / "summary.json").read_text())
    header, rows = summary["table"]["header"], summary["table"]["rows"]
    gan, cgan, floor = (dict(zip(header, row, strict=True)) for row in rows)
    # Beside the other sample-quality columns, before the likelihood ones.
    assert (
        header.index("recall ↑") < header.index("cond. accuracy ↑") < header.index("NLL (nats) ↓")
    )
    assert cgan["cond. accuracy ↑"] == "0.850 ± 0.071" and cgan["intra-FID ↓"] == "60.0 ± 0.0"
    assert gan["cond. accuracy ↑"] == "—" and gan["intra-FID ↓"] == "—"
    # Real test images with their true labels score the classifier's accuracy: the best case.
    assert floor["cond. accuracy ↑"] == "0.988" and floor["intra-FID ↓"] == "—"
    markdown = (out / "report.md").read_text()
    assert "| cond. accuracy ↑ | intra-FID ↓ |" in markdown
    assert "intra-FID is the mean over classes" in markdown
    html = (out / "report.html").read_text()
    assert "<th>cond. accuracy ↑</th>" in html and "0.850 ± 0.071" in html


def test_tiny_comparison_end_to_end(tmp_path, data_dir, cache_dir, monkeypatch, capsys):
    monkeypatch.setenv("GENTRAIN_DATA_DIR", str(data_dir))
    out = tmp_path / "cmp"
    args = [
        "--out",
        str(out),
        "--seeds",
        "0",
        "--arms",
        "vae_to_vaegan",
        "debug=fast",
        "model.width=8",
        f"paths.cache_dir={cache_dir}",
        "dataset.download=false",
    ]
    main(args)
    state = json.loads((out / "compare.json").read_text())
    assert {k: r["status"] for k, r in state["runs"].items()} == {
        "vae/seed_0": "done",
        "vae_to_vaegan/seed_0": "done",
    }
    vae_dir, conv_dir = out / "runs" / "vae" / "seed_0", out / "runs" / "vae_to_vaegan" / "seed_0"
    log = (conv_dir / "train.log").read_text()
    assert f"warm start from {vae_dir / 'checkpoints' / 'last.ckpt'} (a VAE at step 4)" in log
    assert "Fresh: discriminator" in log

    summary = json.loads((out / "summary.json").read_text())
    vae_metrics = json.loads((vae_dir / "metrics.json").read_text())
    assert summary["arms"]["vae"]["runs"]["0"]["val/fid"] == vae_metrics["val/fid"]
    row = summary["table"]["rows"][0]
    assert row[summary["table"]["header"].index("FID ↓")] == f"{vae_metrics['val/fid']:.1f}"
    assert "the same noise in every arm" in (out / "report.md").read_text()
    assert (out / "reconstructions_seed_0.png").is_file()

    # Again: finished runs are kept, not retrained.
    stamp = (vae_dir / "metrics.json").stat().st_mtime_ns
    capsys.readouterr()
    main(args)
    assert "done, kept" in capsys.readouterr().out
    assert (vae_dir / "metrics.json").stat().st_mtime_ns == stamp

    # The report is a function of the run directories: rebuilt, it is the same.
    report = (out / "report.md").read_text()
    (out / "report.md").unlink()
    main(["--report-only", "--out", str(out)])
    assert (out / "report.md").read_text() == report

    # Other settings in the same directory would mix incomparable runs: refused.
    with pytest.raises(SystemExit) as info:
        main([*args, "optimizer.lr=1e-2"])
    assert info.value.code == 2
    assert "would not be comparable" in capsys.readouterr().err  # errors go to stderr


def test_every_arm_takes_the_command_line_dataset_and_shares_one_latent_size(tmp_path):
    from conftest import compose_config

    from gentrain.experiments.comparison.arms import read_spec, spec_path

    arms = load_arms(spec_path(), list(read_spec(spec_path())[1]))  # every set's arms
    assert len(arms) == len(read_spec(spec_path())[0])
    runs = plan_runs(arms, [0], ["dataset=fashion_mnist"], tmp_path)
    for run in runs:
        overrides = [o for o in run.overrides if not o.startswith("hydra.")]
        cfg = compose_config([*overrides, f"paths.output_dir={run.run_dir}"])
        assert cfg.dataset.name == "fashion_mnist", run.key
        assert cfg.model.latent_dim == 32, run.key  # the grids' shared noise needs this


def test_the_conditional_set_is_checked_and_planned_without_training(tmp_path, data_dir, capsys):
    out = tmp_path / "cmp"
    common = [f"paths.data_dir={data_dir}", "dataset.download=false", "dataset.limit=64"]
    main(["--out", str(out), "--seeds", "0", "--arms", "conditional", "--dry-run", *common])
    printed = capsys.readouterr().out
    commands = [line for line in printed.splitlines() if line.startswith("gentrain ")]
    assert [c.split()[1] for c in commands] == [
        "experiment=cvae_mnist",
        "experiment=cgan_mnist",
        "experiment=cgan_mnist",
        "experiment=cvaegan_mnist",
        "experiment=cvaegan_mnist",
    ]
    assert "model.conditioning=acgan" in commands[2]
    assert "model.conditioning" not in commands[1]  # the preset's: projection
    assert commands[4].endswith("'init_from=<cvae/seed_0>'")  # its shapes checked already
    assert "latent sizes differ" not in printed  # one noise for every arm's class grid
    assert not out.exists()  # planned, nothing run or written


def test_a_cell_says_how_many_seeds_it_averages():
    from gentrain.experiments.report import cell

    assert cell([1.0, 3.0], 1) == "2.0 ± 1.4"
    assert cell([1.0, float("nan"), 3.0], 1) == "2.0 ± 1.4 (n=2 of 3)"
    assert cell([float("inf")], 1) == "not finite"
    assert cell([None, None], 1) == "—"
    assert cell([1234.0, 1236.0], 0) == "1,235 ± 1"


def _arm(name, overrides, init_from=None):
    from gentrain.experiments.comparison.arms import Arm

    return Arm(name, name.upper(), overrides, init_from)


def test_a_directory_grows_by_seeds_and_arms_but_keeps_its_definitions(tmp_path):
    from gentrain.experiments.comparison.state import CompareState

    out = tmp_path / "cmp"
    order = ["vae", "gan", "conv"]
    state = CompareState(out)
    state.merge_plan([_arm("gan", ["model=gan"])], order, [1], ["trainer.max_epochs=3"], [])
    state.save()
    state = CompareState(out)
    state.merge_plan(
        [_arm("vae", ["model=vae"]), _arm("conv", ["model=vaegan"], "vae")],
        order,
        [0],
        ["trainer.max_epochs=3"],
        [],
    )
    # A later call with a subset adds to the plan: the report keeps every arm and seed.
    assert [a["name"] for a in state.data["arms"]] == ["vae", "gan", "conv"]
    assert state.data["seeds"] == [0, 1]
    with pytest.raises(ConfigError, match="arm 'gan' was .*model=gan.* now.*would not"):
        state.merge_plan(
            [_arm("gan", ["model=gan", "model.width=8"])], order, [0], ["trainer.max_epochs=3"], []
        )
    with pytest.raises(ConfigError, match="budget .*max_epochs=3.*would not be comparable"):
        state.merge_plan([], order, [0], ["trainer.max_epochs=4"], [])


def test_one_compare_at_a_time_in_a_directory(tmp_path):
    import fcntl

    from gentrain.experiments.comparison.state import CompareState

    out = tmp_path / "cmp"
    out.mkdir()
    with (out / ".lock").open("a+") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        other.write("pid 4242\n")
        other.flush()
        busy = pytest.raises(ConfigError, match="in use by another gentrain-compare \\(pid 4242\\)")
        with busy, CompareState(out).locked():
            pass
        fcntl.flock(other, fcntl.LOCK_UN)
    state = CompareState(out)  # read while another process still ran...
    (out / "compare.json").write_text(json.dumps({"runs": {"vae/seed_0": {"status": "done"}}}))
    with state.locked():  # free again
        assert (out / ".lock").read_text() == f"pid {os.getpid()}\n"
        # ...and read again once the lock is ours: what that process finished is kept.
        assert state.data["runs"]["vae/seed_0"]["status"] == "done"


def test_a_signal_to_compare_reaches_the_training_child_once(tmp_path):
    """SIGTERM to gentrain-compare must let the run save its checkpoint, not orphan it."""
    import signal
    import sys
    import threading
    import time

    from gentrain.core.child_process import ChildProcess

    marker = tmp_path / "signals"
    child = (
        "import signal, sys, time\n"
        f"path = {str(marker)!r}\n"
        "def stop(signum, frame):\n"
        "    open(path, 'a').write(signal.Signals(signum).name + '\\n')\n"
        "    sys.exit(143)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        f"open({str(tmp_path / 'ready')!r}, 'w').close()\n"
        "time.sleep(30)\n"
    )

    def send_when_ready():
        while not (tmp_path / "ready").exists():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=send_when_ready, daemon=True).start()
    started = time.perf_counter()
    run = ChildProcess([sys.executable, "-c", child])
    assert run.run() == 143 and run.stopped_by == "SIGTERM"
    assert time.perf_counter() - started < 20
    assert marker.read_text() == "SIGTERM\n"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # our handler is gone again


def test_a_training_run_stops_if_gentrain_compare_is_gone():
    """compare's runs get SIGTERM when compare dies (Linux); if it died before they could
    ask for that, they stop at once rather than train unwatched."""
    import subprocess
    import sys

    code = (
        "from gentrain.core.child_process import stop_with_parent; "
        "stop_with_parent(); print('training')"
    )

    def run(parent_pid):
        env = {**os.environ, "GENTRAIN_PARENT_PID": str(parent_pid)}
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)

    alive = run(os.getpid())
    assert alive.returncode == 0 and alive.stdout.strip() == b"training"
    if sys.platform.startswith("linux"):
        gone = run(os.getpid() + 1_000_000)  # not its parent: compare is gone
        assert gone.returncode == 143 and gone.stdout == b""


def test_epochs_and_seconds_together_bound_each_run_by_whichever_ends_first():
    from gentrain.cli.compare import budget_overrides

    assert budget_overrides(None, None) == ["trainer.max_epochs=3"]
    assert budget_overrides(None, 10.0) == ["trainer.max_epochs=100000", "trainer.max_seconds=10"]
    assert budget_overrides(1, 10.0) == ["trainer.max_epochs=1", "trainer.max_seconds=10"]
