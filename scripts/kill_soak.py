"""kill -9 soak: random hard kills during training, then resume, then compare.

For each model (VAE, GAN, VAE-GAN) one short run trains uninterrupted (the reference) and
one is killed with SIGKILL at random moments (a random logged step, then a random delay
of up to ``--max-delay`` s, so kills also land inside checkpoint writes and validation),
``--kills`` times in all, spread over the models. After every kill the run directory's
``last.ckpt`` must load, and the run resumes from it (``trainer.resume=<run dir>``) until
it finishes. At the end each killed run's weights, optimiser states and step must equal
the reference's bit for bit (resume is exact on CPU).

    python scripts/kill_soak.py --kills 6 --out /tmp/soak  # 21 min on 2 busy shared cores
    GENTRAIN_DATA_DIR=/path/to/datasets python scripts/kill_soak.py --kills 30

Prints one line per event and a summary; writes ``<out>/soak.json``; exits 1 on any
corrupt checkpoint, failed resume or mismatch.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

MODELS = ("vae", "gan", "vaegan")


def command(model: str, run_dir: Path, steps: int, resume: bool) -> list[str]:
    args = [
        sys.executable,
        "-m",
        "gentrain",
        f"model={model}",
        "debug=fast",  # 512 images, batch 32: 16 steps an epoch
        "device=cpu",
        "eval.enabled=false",
        "logger=none",
        f"trainer.max_steps={steps}",
        f"trainer.max_epochs={steps}",
        "trainer.checkpoint_every_n_steps=3",
        "trainer.deterministic=true",
        "dataset.download=false",
        f"hydra.run.dir={run_dir}",
    ]
    return [*args, f"trainer.resume={run_dir}"] if resume else args


def train_to_end(model: str, run_dir: Path, steps: int, resume: bool) -> None:
    result = subprocess.run(
        command(model, run_dir, steps, resume), capture_output=True, text=True, timeout=900
    )
    if result.returncode != 0:
        raise RuntimeError(f"{run_dir}: exit {result.returncode}\n{result.stdout[-3000:]}")


def kill_at_random(model: str, run_dir: Path, steps: int, rng: random.Random, delay: float):
    """Start (or resume) the run, SIGKILL it after a random logged step; return what
    happened: ('killed', step seen) or ('finished', None)."""
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    target = rng.randint(1, steps - 1)
    process = subprocess.Popen(
        command(model, run_dir, steps, resume=ckpt.is_file()),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        match = re.search(r"step (\d+)/", line)
        if match and int(match.group(1)) >= target:
            time.sleep(rng.uniform(0, delay))
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            return "killed", int(match.group(1))
    process.wait()
    return "finished", None


def state_of(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)


def same(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--steps", type=int, default=24, help="steps per run (16 an epoch)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay", type=float, default=0.5, help="s after the step")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", type=Path, default=Path("outputs/kill_soak"))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    models = args.models.split(",")
    out = args.out.resolve() / time.strftime("%Y-%m-%d_%H-%M-%S")
    report: dict = {"kills": args.kills, "steps": args.steps, "models": {}}
    problems = 0
    started = time.perf_counter()
    for model in models:
        reference, killed = out / model / "reference", out / model / "killed"
        train_to_end(model, reference, args.steps, resume=False)
        entry = {"kills": 0, "kill_steps": [], "checkpoints_loaded": 0, "finished_early": 0}
        for _ in range(len(range(models.index(model), args.kills, len(models)))):
            what, step = kill_at_random(model, killed, args.steps, rng, args.max_delay)
            if what == "finished":
                entry["finished_early"] += 1
                print(f"{model}: finished before the kill", flush=True)
                break
            entry["kills"] += 1
            entry["kill_steps"].append(step)
            ckpt = killed / "checkpoints" / "last.ckpt"
            leftovers = [p.name for p in ckpt.parent.glob("*.tmp")] if ckpt.parent.is_dir() else []
            if ckpt.is_file():
                try:
                    saved = state_of(killed)["step"]
                    entry["checkpoints_loaded"] += 1
                except Exception as exc:  # a corrupt checkpoint: what the soak looks for
                    problems += 1
                    print(f"{model}: CORRUPT checkpoint after a kill at step {step}: {exc}")
                    saved = None
            else:
                saved = None
            print(
                f"{model}: killed after step {step}; last.ckpt at step {saved}"
                + (f" (temp files left: {leftovers})" if leftovers else ""),
                flush=True,
            )
        train_to_end(model, killed, args.steps, resume=(killed / "checkpoints").is_dir())
        a, b = state_of(reference), state_of(killed)
        identical = {key: same(a[key], b[key]) for key in ("step", "model", "optimizers")}
        entry.update(final_step=int(b["step"]), identical=identical)
        problems += not all(identical.values())
        print(f"{model}: resumed to step {b['step']}; equal to uninterrupted: {identical}")
        report["models"][model] = entry
    report["seconds"] = time.perf_counter() - started
    report["problems"] = problems
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(report, indent=2) + "\n")
    kills = sum(m["kills"] for m in report["models"].values())
    loaded = sum(m["checkpoints_loaded"] for m in report["models"].values())
    print(
        f"{kills} kills, {loaded} checkpoints loaded after them, {problems} problem(s), "
        f"{report['seconds']:.0f} s; report: {out / 'soak.json'}"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
