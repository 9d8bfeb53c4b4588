"""Terminal output with rich: the config tree, live progress and the results table.

On a terminal the progress is a live bar; when stdout is not a terminal (CI, ``| tee``,
a cluster log) the same information is printed as plain lines, without control codes.
"""

from __future__ import annotations

import logging
import time

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.syntax import Syntax
from rich.table import Table
from rich.tree import Tree

from gentrain.dist import rank_zero_only

log = logging.getLogger("gentrain")
console = Console()


def print_error(message: object, label: str = "error") -> None:
    """A user error: one line per line of its text, never hard-wrapped (paths in it stay
    copyable), and not read as rich markup (brackets in it are printed as they are)."""
    console.print(
        f"[bold red]{label}:[/bold red] {escape(str(message))}", highlight=False, soft_wrap=True
    )


def print_line(text: str) -> None:
    """Plain text with paths in it: not wrapped, not highlighted."""
    console.print(escape(text), highlight=False, soft_wrap=True)


FIRST_SECTIONS = ("model", "dataset", "optimizer", "trainer", "device", "logger", "paths")


@rank_zero_only
def print_config_tree(cfg: DictConfig) -> None:
    tree = Tree("config", guide_style="dim")
    names = [k for k in FIRST_SECTIONS if k in cfg] + [
        k for k in cfg if k not in FIRST_SECTIONS and k != "hydra"
    ]
    for name in names:
        value = cfg[name]
        branch = tree.add(f"[bold]{name}[/bold]")
        text = (
            OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        )
        branch.add(Syntax(text.rstrip(), "yaml", theme="ansi_dark", background_color="default"))
    console.print(tree)


@rank_zero_only
def print_metrics_table(metrics: dict[str, float], title: str = "results") -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.6g}" if isinstance(value, float) else str(value))
    console.print(table)


def format_losses(values: dict[str, float], limit: int = 6) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in list(values.items())[:limit])


class TrainingProgress:
    """A rich progress bar on a terminal, plain log lines elsewhere."""

    def __init__(self, total_steps: int, enabled: bool = True) -> None:
        self.total = total_steps
        self.live = enabled and console.is_terminal
        self.start = time.perf_counter()
        self._progress: Progress | None = None
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[speed]} {task.fields[losses]}"),
                console=console,
                transient=False,
            )
            self._task = self._progress.add_task(
                "train", total=total_steps, epoch="", speed="", losses=""
            )

    def __enter__(self) -> TrainingProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(
        self,
        step: int,
        epoch: str,
        images_per_sec: float,
        losses: dict[str, float],
        force_line: bool = False,
    ) -> None:
        speed = f"{images_per_sec:,.0f} img/s"
        if self._progress is not None:
            self._progress.update(
                self._task, completed=step, epoch=epoch, speed=speed, losses=format_losses(losses)
            )
        elif force_line:
            elapsed = time.perf_counter() - self.start
            eta = elapsed / max(step, 1) * (self.total - step)
            log.info(
                "epoch %s step %d/%d | %s | eta %s | %s",
                epoch,
                step,
                self.total,
                speed,
                time.strftime("%H:%M:%S", time.gmtime(eta)),
                format_losses(losses),
            )
