"""The planned runs, one ``gentrain`` child process after another, kept in ``compare.json``."""

from __future__ import annotations

import signal
import sys
import time

from gentrain.core.child_process import ChildProcess
from gentrain.core.paths import last_checkpoint
from gentrain.experiments.comparison.arms import PlannedRun, display
from gentrain.experiments.comparison.state import CompareState
from gentrain.tracking.console import console
from gentrain.tracking.hparams_table import GROUP_ENV


def execute(runs: list[PlannedRun], state: CompareState) -> int:
    """Run what is not done yet, in order; return how many runs failed or were skipped."""
    by_key = {r.key: r for r in runs}
    problems = 0
    root = state.out.resolve()
    for index, run in enumerate(runs, start=1):
        record = state.record(run.key)
        record.update(
            arm=run.arm.name,
            label=run.arm.label,
            seed=run.seed,
            dir=str(run.run_dir.relative_to(root)),  # relative: the directory may move
        )
        source = by_key.get(f"{run.arm.init_from}/seed_{run.seed}") if run.arm.init_from else None
        record["source"] = source.key if source else None
        if record["status"] != "done" or "command" not in record:
            record["command"] = run.reproduce(source)
        if record["status"] == "done" and (run.run_dir / "metrics.json").is_file():
            console.print(f"[dim][{index}/{len(runs)}] {run.key}: done, kept[/dim]")
            continue
        if source is not None and state.record(source.key)["status"] != "done":
            record.update(status="skipped", error=f"its source run {source.key} did not finish")
            problems += 1
            state.save()
            continue
        resume = last_checkpoint(run.run_dir).is_file()
        args = run.command(source, resume)
        console.rule(f"[{index}/{len(runs)}] {run.arm.label}, seed {run.seed}")
        console.print(display(args), highlight=False, soft_wrap=True)
        record.update(status="running", started=time.time())
        state.save()
        # One HParams table for the comparison, at its root (tracking.hparams_table).
        child = ChildProcess([sys.executable, "-m", "gentrain", *args], env={GROUP_ENV: "1"})
        code = child.run()
        if code == 0:
            record.update(status="done", returncode=0, error=None)
        else:
            record.update(status="failed", returncode=code, error=f"exit code {code}")
            problems += 1
        state.save()
        # The user stopped it (whatever the child managed to exit with: 130/143 after a clean
        # save, -2/-15 if the signal came during start-up or a second Ctrl-C): stop here.
        if child.stopped_by or code in (130, 143, -signal.SIGINT, -signal.SIGTERM):
            raise KeyboardInterrupt
    return problems
