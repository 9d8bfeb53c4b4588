"""Data-parallel training: 2 gloo ranks on CPU against one process with the same global
batch, resume, stops, a dead, a raising and a hanging rank, and evaluation shared by the
ranks (gentrain.training.data_parallel).

Each test starts its ranks with ``multiprocessing`` (a fork server), the way torchrun would
start them, and every rank calls ``gentrain.cli.train.train``: the code path of the CLI. Evaluation
is on, as a user runs it.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import queue
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from conftest import compose_config, smoke_overrides

from gentrain.cli.train import train
from gentrain.core.errors import ConfigError
from gentrain.data import DeviceTensorLoader
from gentrain.training.data_parallel import TIMEOUT_ENV, World, timeout

TINY = [
    "model.width=8",
    "dataset.limit=128",
    "logger=none",
    "trainer.batch_size=32",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sigterm_on_rank_1_at_step_3(rank):
    from gentrain.models.vae import VAE

    original = VAE.training_step

    def training_step(self, x):
        logs = original(self, x)
        if rank == 1 and int(self.steps_done) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return logs

    VAE.training_step = training_step


def _rank_1_dies_at_step_2(rank):
    from gentrain.models.vae import VAE

    original = VAE.training_step

    def training_step(self, x):
        if rank == 1 and int(self.steps_done) == 2:
            os._exit(3)  # a crash: no exception, no goodbye to the other rank
        return original(self, x)

    VAE.training_step = training_step


def _rank_1_raises_in_evaluation(rank, marker):
    from pathlib import Path

    from gentrain.evaluation import Evaluator

    original = Evaluator.generate

    def generate(self, model):
        if rank == 1:
            time.sleep(1)  # rank 0 is waiting in a collective by now
            Path(marker).write_text(str(time.time()))
            raise RuntimeError("injected failure on rank 1")
        return original(self, model)

    Evaluator.generate = generate


def _rank_1_hangs_in_evaluation(rank):
    from gentrain.evaluation import Evaluator

    original = Evaluator.generate

    def generate(self, model):
        if rank == 1:
            time.sleep(5)  # past the 3 s timeout the test sets
        return original(self, model)

    Evaluator.generate = generate


def _rank(rank, size, port, jobs, patch, results, timeout_s="60"):
    """One rank: join the group, then train each config of ``jobs`` in turn (or run
    ``gentrain-eval`` for a job that is a list of its arguments)."""
    import torch.distributed as dist

    from gentrain.cli.train import TrainingInterrupted
    from gentrain.cli.train import train as train_rank
    from gentrain.core.errors import GentrainError

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(size),
        LOCAL_RANK=str(rank),
    )
    os.environ[TIMEOUT_ENV] = timeout_s
    torch.set_num_threads(1)
    if patch is not None:
        patch(rank)
    # kept over the jobs (train() leaves a caller's group)
    dist.init_process_group("gloo", timeout=timeout())
    for cfg in jobs:
        try:
            if isinstance(cfg, list):
                from gentrain.cli.evaluate import evaluate, parse_args

                results.put((rank, "eval", evaluate(parse_args(cfg))))
                continue
            metrics = train_rank(cfg)
            results.put((rank, "ok", metrics["step"]))
        except TrainingInterrupted as exc:
            results.put((rank, "interrupted", exc.exit_code))
        except GentrainError as exc:
            results.put((rank, type(exc).__name__, str(exc), time.time()))
            return


#: what gentrain imports only once a run needs it (grids, metrics, the latent prior)
RUN_TIME_IMPORTS = ["torchvision.utils", "torchmetrics.image.fid", "sklearn.mixture"]


def _run_ranks(jobs, patch=None, size=2, timeout=240, timeout_s="60"):
    """Start ``size`` ranks on ``jobs``; return what each reported, by rank."""
    # A fork server that has imported torch and gentrain once starts each rank in a fork of
    # itself (no distributed state, no threads yet): the ranks skip seconds of imports,
    # those a run makes when it first draws a grid, evaluates or fits a prior included.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(
        ["torch", "gentrain.cli.train", "gentrain.cli.evaluate", *RUN_TIME_IMPORTS]
    )
    results = context.Queue()
    port = _free_port()
    procs = [
        context.Process(target=_rank, args=(r, size, port, jobs, patch, results, timeout_s))
        for r in range(size)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
    reports: dict[int, list] = {r: [] for r in range(size)}
    while True:
        try:
            rank, *report = results.get(timeout=1)
        except queue.Empty:
            break
        reports[rank].append(tuple(report))
    assert not hung, f"ranks {hung} still running after {timeout} s: {reports}"
    return reports, [p.exitcode for p in procs]


def _weights(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["model"]


# the conditional GAN: labels split with their images, drawn labels and conditional
# BatchNorm over the global batch. The adversarial models update once per batch: with
# updates_per_batch k > 1, each rank's k-th slice joins the others' into a global slice
# that holds other images than one process's k-th slice (the same recipe, not the same
# arithmetic).
MODELS = [
    "vae",
    "gan model.updates_per_batch=1",
    "vaegan model.equilibrium_gate=true model.updates_per_batch=1",
    "gan model.conditional=true model.updates_per_batch=1",
]


# The healthy 2-rank cases share one pair of rank processes (each start imports torch and
# joins a group): the ranks run these jobs in turn, and the tests below read the results.
# NCHW: its CPU kernels round alike at local batch 16 and global batch 32; channels_last's
# blocked kernels do not, and three SGD steps of the VAE amplify that rounding past any
# tolerance (the layouts' agreement to rounding is test_precision's).
SAME_AS_ONE = [*TINY, "optimizer=sgd", "optimizer.lr=0.01", "trainer.channels_last=false"]
RESUMED = [*TINY, "trainer.checkpoint_every_n_steps=2"]
EVALUATED = [*TINY, "model.conditional=true", "eval.batch_size=64", "trainer.max_steps=2"]
EVAL_ARGS = ["--device", "cpu", "--num-samples", "150", "--nll-images", "150"]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, data_dir, cache_dir):
    """One process's runs, then one 2-rank session over the same jobs: the equivalence
    runs of every model, a run stopped and resumed, and gentrain-eval of one checkpoint."""
    from gentrain.cli.evaluate import evaluate, parse_args

    root = tmp_path_factory.mktemp("two_ranks")

    def config(*overrides, output_dir):
        return compose_config([*smoke_overrides(data_dir, cache_dir, output_dir), *overrides])

    same = {m: [*f"model={m}".split(), *SAME_AS_ONE, "trainer.max_steps=3"] for m in MODELS}
    for i, common in enumerate(same.values()):
        train(config(*common, output_dir=root / f"one{i}"))
    train(config(*EVALUATED, output_dir=root / "evaluated"))
    one_eval = evaluate(
        parse_args([str(root / "evaluated"), *EVAL_ARGS, "--output", str(root / "one.json")])
    )
    jobs = [config(*c, output_dir=root / f"two{i}") for i, c in enumerate(same.values())]
    jobs += [
        config(*RESUMED, "trainer.max_steps=4", output_dir=root / "straight"),
        config(*RESUMED, "trainer.max_steps=2", output_dir=root / "part"),
        config(*RESUMED, "trainer.max_steps=4", "trainer.resume=auto", output_dir=root / "part"),
        [str(root / "evaluated"), *EVAL_ARGS, "--output", str(root / "two.json")],
    ]
    reports, codes = _run_ranks(jobs)
    return root, same, one_eval, reports, codes


def test_two_ranks_train_the_same_model_as_one_process(two_ranks, make_config):
    """Same global batch of 32, 3 steps: the weights, BatchNorm statistics included, agree to
    float rounding, for each model. SGD, because Adam turns the rounding noise of gradients
    that are zero in exact arithmetic (a bias before BatchNorm) into whole steps of lr."""
    root, same, _, reports, codes = two_ranks
    n = len(MODELS)
    assert reports[0][:n] == reports[1][:n] == [("ok", 3.0)] * n and codes == [0, 0]
    for i, model in enumerate(MODELS):
        a, b = _weights(root / f"one{i}"), _weights(root / f"two{i}")
        assert a.keys() == b.keys()  # synchronised BatchNorm keeps the checkpoint's keys
        for key in a:
            if key.startswith("latent_prior."):  # refit by EM from the weights, which turns
                continue  # their rounding differences into larger ones: not a weight
            torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-4, msg=f"{model} {key}")
    # The weights moved well beyond the tolerance from one step to three: the check has teeth.
    first = root / "first"
    train(make_config(*same["vae"][:-1], "trainer.max_steps=1", output_dir=first))
    a, moved = _weights(root / "one0"), _weights(first)
    assert any((moved[k].float() - a[k].float()).abs().max() > 1e-3 for k in a)


def test_two_rank_resume_is_bit_identical(two_ranks):
    root, _, _, reports, _ = two_ranks
    n = len(MODELS)
    assert reports[0][n : n + 3] == reports[1][n : n + 3] == [("ok", 4.0), ("ok", 2.0), ("ok", 4.0)]
    a, b = _weights(root / "straight"), _weights(root / "part")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_two_ranks_evaluate_a_run_as_one_process_does(two_ranks):
    """gentrain-eval of one conditional VAE checkpoint: 150 samples in batches of 64 (one
    batch on rank 0, two on rank 1), reconstruction and NLL over 150 test images: the
    figures, conditional ones included, equal one process's."""
    _, _, one, reports, codes = two_ranks
    assert codes == [0, 0]
    (_, two), (_, two_on_rank_1) = reports[0][-1], reports[1][-1]
    two_on_rank_1.pop("eval/seconds")
    assert two_on_rank_1.items() <= two.items()  # rank 0's figures, handed to rank 1
    figures = [k for k in one if k.startswith("val/")]
    for key in ("val/fid", "val/kid", "val/is", "val/precision", "val/cond_accuracy"):
        assert key in figures
    for key in ("val/intra_fid", "val/recon_mse", "val/nll_iwae", "val/fid_floor"):
        assert key in figures
    for key in figures:
        assert two[key] == pytest.approx(one[key], rel=1e-6, abs=1e-9), key
    assert two["eval/num_generated"] == one["eval/num_generated"] == 150


def test_a_signal_to_one_rank_stops_all_after_the_same_step(make_config, tmp_path):
    out = tmp_path / "run"
    cfg = make_config(*TINY, "trainer.max_steps=8", "trainer.log_every_n_steps=2", output_dir=out)
    reports, _ = _run_ranks([cfg], patch=_sigterm_on_rank_1_at_step_3)
    # Rank 1 got SIGTERM during step 3; the ranks agree at the next logging step, 4.
    assert reports == {0: [("interrupted", 143)], 1: [("interrupted", 143)]}
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["step"] == 4


def test_a_dead_rank_makes_the_others_stop_with_a_clear_error(make_config, tmp_path):
    cfg = make_config(*TINY, "trainer.max_steps=8", output_dir=tmp_path / "run")
    reports, codes = _run_ranks([cfg], patch=_rank_1_dies_at_step_2, timeout=120)
    assert codes[1] == 3 and reports[1] == []
    [(kind, message, _)] = reports[0]
    assert kind == "DataParallelError"
    assert (
        "rank 0/2" in message and "died, raised or hung" in message and "trainer.resume" in message
    )


def test_a_rank_that_raises_in_evaluation_stops_the_other_within_seconds(make_config, tmp_path):
    cfg = make_config(*TINY, "trainer.max_steps=2", output_dir=tmp_path / "run")
    patch = functools.partial(_rank_1_raises_in_evaluation, marker=str(tmp_path / "raised_at"))
    reports, codes = _run_ranks([cfg], patch=patch, timeout_s="600")
    assert codes[1] != 0 and reports[1] == []  # rank 1's own traceback is its own log
    [(kind, message, stopped_at)] = reports[0]
    assert kind == "DataParallelError" and "\n" not in message
    assert message.startswith("rank 0/2: ") and "during evaluation at step 2" in message
    # Within seconds of rank 1's failure, not after the 600 s collective timeout.
    assert stopped_at - float((tmp_path / "raised_at").read_text()) < 10


def test_a_rank_that_hangs_in_evaluation_times_out_on_every_rank(make_config, tmp_path):
    cfg = make_config(*TINY, "trainer.max_steps=2", output_dir=tmp_path / "run")
    started = time.time()
    reports, _ = _run_ranks([cfg], patch=_rank_1_hangs_in_evaluation, timeout_s="3")
    for rank in (0, 1):  # rank 0 waited 3 s; rank 1 woke to find the group gone
        [(kind, message, stopped_at)] = reports[rank]
        assert kind == "DataParallelError" and "during evaluation" in message, message
        assert f"rank {rank}/2" in message and TIMEOUT_ENV in message
    assert reports[0][0][2] - started < reports[1][0][2] - started  # the timeout ended it


def test_a_slice_of_a_step_draws_its_rows_of_the_global_slice():
    world = World(torch.device("cpu"), rank=1, size=2)
    torch.manual_seed(0)
    whole_step, whole_slice = torch.randn(16, 3), torch.randn(8, 3)
    torch.manual_seed(0)
    with world.global_batch_randomness(8):
        step = torch.randn(8, 3)
        with world.slice_randomness(4):
            part = torch.randn(4, 3)
        after = torch.randn(8, 3)
    assert torch.equal(step, whole_step[8:])
    assert torch.equal(part, whole_slice[4:])  # rank 1's rows, not rank 0's duplicate
    assert after.shape == (8, 3)  # the step's own size again
    with World(torch.device("cpu")).slice_randomness(4):  # one process: nothing to do
        assert torch.randn(4).shape == (4,)


def test_each_rank_gets_its_own_rows_of_the_global_batch():
    images = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1)
    labels = torch.arange(40) % 10
    cpu = torch.device("cpu")
    whole = list(DeviceTensorLoader(images, 8, cpu, seed=3, labels=labels).epoch(1))
    parts = [
        list(DeviceTensorLoader(images, 8, cpu, 3, rank=r, world_size=2, labels=labels).epoch(1))
        for r in range(2)
    ]
    assert len(whole) == len(parts[0]) == 5
    for batch, first, second in zip(whole, *parts):
        assert torch.equal(torch.cat([first.images, second.images]), batch.images)
        assert torch.equal(torch.cat([first.labels, second.labels]), batch.labels)


def test_a_global_batch_that_does_not_split_evenly_is_refused():
    with pytest.raises(ConfigError, match="trainer.batch_size=30 .* multiple of 4"):
        World(device=torch.device("cpu"), size=4).local_batch_size(30)


def test_torchrun_writes_one_run_directory_from_rank_0(data_dir, cache_dir, tmp_path):
    """The CLI under torchrun, as a user types it (evaluation on): both ranks train and
    evaluate, rank 0 alone writes the run's files."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", TIMEOUT_ENV: "120"}
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"),
        *("-m", "gentrain", "model=vae", "debug=fast", "device=cpu", "model.width=8"),
        *(f"paths.data_dir={data_dir}", f"paths.cache_dir={cache_dir}", "dataset.download=false"),
    ]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = list((tmp_path / "outputs" / "runs").glob("*/*"))
    assert len(runs) == 1, runs  # the ranks agreed on rank 0's directory
    run = runs[0]
    assert (run / ".hydra" / "config.yaml").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val/fid"] > 0 and metrics["eval/num_generated"] == 64
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["step"] == 4
    assert len(list(run.glob("events.out.tfevents.*"))) == 1  # rank 0's only
    assert "data-parallel: 2 ranks (gloo)" in (run / "train.log").read_text()


SLURM_TASK_1_OF_8 = {
    "SLURM_JOB_ID": "4242",
    "SLURM_NTASKS": "8",
    "SLURM_PROCID": "5",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "1",
    "SLURM_JOB_NUM_NODES": "2",
    "SLURM_JOB_NODELIST": "gpu[07-08]",
    "SUBMITIT_EXECUTOR": "slurm",  # launcher=slurm_ddp: submitit runs each task
}


def test_a_slurm_task_gets_torch_distributed_env_from_slurms(monkeypatch):
    from gentrain.training.data_parallel import export_slurm_env

    exported = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
    for key in (*exported, "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(key, "")  # recorded, so that the test's exports are undone after
        monkeypatch.delenv(key)
    for key, value in SLURM_TASK_1_OF_8.items():
        monkeypatch.setenv(key, value)
    export_slurm_env()
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == (
        "5",
        "8",
        "1",
    )
    assert os.environ["MASTER_ADDR"] == "gpu07" and int(os.environ["MASTER_PORT"]) >= 20000


def test_a_requeued_slurm_job_resumes_from_its_own_checkpoint(tmp_path, monkeypatch):
    from gentrain.training.resume import requeued_checkpoint

    own = tmp_path / "checkpoints" / "last.ckpt"
    own.parent.mkdir()
    own.write_bytes(b"")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    assert requeued_checkpoint(tmp_path) is None  # a first start begins fresh
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert requeued_checkpoint(tmp_path) == own
    assert requeued_checkpoint(tmp_path / "other") is None


def test_the_slurm_ddp_preset_starts_one_task_per_gpu():
    from hydra import compose, initialize_config_dir

    from gentrain.cli.train import config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        cfg = compose(
            config_name="train", overrides=["launcher=slurm_ddp"], return_hydra_config=True
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and cfg.device.name == "cuda"
    assert launcher.tasks_per_node == launcher.gpus_per_node > 1
    assert launcher.max_num_timeout > 0
