"""Terminal output with rich: the config tree, live progress and the results table.

On a terminal the progress is a live bar; when stdout is not a terminal (CI, ``| tee``,
a cluster log) the same information is printed as plain lines, without control codes.
"""

from __future__ import annotations

import logging
import math
import time

from omegaconf import DictConfig, OmegaConf
from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from gentrain.core.ranks import rank_zero_only

log = logging.getLogger("gentrain")
console = Console()
errors = Console(stderr=True)  # where scripts and shells look for what went wrong


def print_error(message: object, label: str = "error") -> None:
    """A user error: one line per line of its text, never hard-wrapped (paths in it stay
    copyable), and not read as rich markup (brackets in it are printed as they are). On
    standard error."""
    errors.print(
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


# Gradient norms and gates come last on the progress line; the model's terms come first,
# in the order its ``logged_terms.first`` gives them (the trainer orders them).
LAST_PREFIXES = ("grad_norm_", "gate_")


def by_importance(values: dict[str, float]) -> list[tuple[str, float]]:
    """``values`` in their order, gradient norms and gates last."""

    def rank(item: tuple[int, str]) -> tuple[int, int]:
        index, name = item
        return (1 if name.startswith(LAST_PREFIXES) else 0), index

    order = sorted(enumerate(values), key=rank)
    return [(name, values[name]) for _, name in order]


def format_losses(values: dict[str, float], limit: int = 6) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in by_importance(values)[:limit])


def clock(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-:--:--"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


MIN_BAR = 10


def progress_lines(
    width: int,
    epoch: str,
    step: int,
    total: int,
    elapsed: float,
    eta: float | None,
    images_per_sec: float | None,
    losses: dict[str, float],
) -> list[Text]:
    """The live progress as one or two lines of at most ``width`` cells.

    The bar, step/total, elapsed time and ETA are always on the first line; images/s and
    the loss terms (most important first: the model's ``logged_terms``) follow on it if
    they all fit, else on a second line holding as many terms as fit.
    """
    head = f"epoch {epoch} "
    tail = f" {step:,}/{total:,} {clock(elapsed)} eta {clock(eta)}"
    extras = [f"{images_per_sec:,.0f} img/s"] if images_per_sec else []
    extras += [f"{k}={v:.4g}" for k, v in by_importance(losses)]
    room = width - len(head) - len(tail)
    if room < MIN_BAR:  # a huge step count in a narrow terminal: shorten the label
        head = f"ep {epoch} "
        room = width - len(head) - len(tail)
    one_line = " " + " ".join(extras) if extras else ""
    bar_width = max(MIN_BAR, min(40, room - len(one_line)))
    if room - len(one_line) >= MIN_BAR:
        return [_bar_line(head, tail + one_line, bar_width, step, total)]
    bar_width = max(MIN_BAR, min(40, room))
    second = Text(no_wrap=True, overflow="crop")
    for index, piece in enumerate(extras):
        more = len(extras) - index - 1
        needed = len(piece) + (1 if second else 0) + (2 if more else 0)  # room for " …"
        if len(second) + needed > width:
            second.append(" …" if second else "…", style="dim")
            break
        if second:
            second.append(" ")
        second.append(piece, style="dim" if piece.endswith("img/s") else "")
    return [_bar_line(head, tail, bar_width, step, total), second]


def _bar_line(head: str, tail: str, bar_width: int, step: int, total: int) -> Text:
    done = round(bar_width * min(step, total) / max(total, 1))
    line = Text(no_wrap=True, overflow="crop")
    line.append(head, style="bold")
    line.append("━" * done, style="bar.complete")
    line.append("━" * (bar_width - done), style="bar.back")
    line.append(tail)
    return line


class _ProgressView:
    """What the live display renders: recomputed at every refresh, for the console's
    current width (a resized terminal re-lays it out) and the current time."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.start = time.perf_counter()
        self.first_step: int | None = None  # step and time of the first update
        self.first_time = self.start
        self.step, self.epoch = 0, ""
        self.images_per_sec: float | None = None
        self.losses: dict[str, float] = {}

    def eta(self) -> float | None:
        if self.first_step is None or self.step <= self.first_step:
            return None
        rate = (time.perf_counter() - self.first_time) / (self.step - self.first_step)
        return rate * max(self.total - self.step, 0)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        elapsed = time.perf_counter() - self.start
        yield from progress_lines(
            options.max_width,
            self.epoch,
            self.step,
            self.total,
            elapsed,
            self.eta(),
            self.images_per_sec,
            self.losses,
        )


class TrainingProgress:
    """A live progress display on a terminal (see ``progress_lines``), plain log lines
    elsewhere."""

    def __init__(self, total_steps: int, enabled: bool = True) -> None:
        self.total = total_steps
        self.live = enabled and console.is_terminal
        self.start = time.perf_counter()
        self._view = _ProgressView(total_steps)
        self._live: Live | None = None
        if self.live:
            self._live = Live(self._view, console=console, refresh_per_second=4)

    def __enter__(self) -> TrainingProgress:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.stop()

    def update(
        self,
        step: int,
        epoch: str,
        images_per_sec: float | None,
        losses: dict[str, float],
        force_line: bool = False,
    ) -> None:
        """``images_per_sec`` None (or 0) until the first window is measured: not shown."""
        view = self._view
        if view.first_step is None:
            view.first_step, view.first_time = step, time.perf_counter()
        view.step, view.epoch, view.losses = step, epoch, losses
        view.images_per_sec = images_per_sec or None
        if self._live is None and force_line:
            elapsed = time.perf_counter() - self.start
            eta = elapsed / max(step, 1) * (self.total - step)
            speed = f"{images_per_sec:,.0f} img/s" if images_per_sec else "- img/s"
            log.info(
                "epoch %s step %d/%d | %s | eta %s | %s",
                epoch,
                step,
                self.total,
                speed,
                clock(eta),
                format_losses(losses),
            )
