"""``logger=tensorboard``: event files in the run directory, with gentrain's dashboard."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gentrain.core.registry import LOGGERS
from gentrain.core.terms import LoggedTerms
from gentrain.tracking.dashboard import (
    facts_table,
    hparams_for,
    is_fact,
    metric_order,
    scalar_layout,
)
from gentrain.tracking.hparams_table import in_group
from gentrain.tracking.loggers.base import Backend, Logger, RunSummary


def _shown(value: Any) -> Any:
    """An HParams value as TensorBoard should show it: it prints every number with five
    significant digits (a seed of 0 as 0.0000, true as 1.0000), so whole numbers and
    booleans go in as text, which it shows as written and filters by value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return value


def wait_for_a_later_file_name(log_dir: Path) -> None:
    """TensorBoard reads a run's event files in name order, and a name starts with the
    second it was made in, then the host and PID. A resumed process whose file shared its
    second with the killed one's could be read first, and the killed process's events
    would then overrule the resumed ones; so the new file waits (under a second) until
    its name sorts after every file already there."""
    seconds = []
    for path in log_dir.glob("events.out.tfevents.*"):
        stamp = path.name.split(".")[3]
        if stamp.isdigit():
            seconds.append(int(stamp))
    delay = max(seconds, default=0) + 1 - time.time()
    if delay > 0:
        time.sleep(delay)


@dataclass
class TensorBoardConfig:
    """TensorBoard has nothing to set: it writes into the run directory itself, so that
    ``tensorboard --logdir outputs`` names the run after it."""


@LOGGERS.register("tensorboard")
class TensorBoardLogger(Backend):
    """Writes event files into the run directory itself, so that TensorBoard names the run
    after it; only the main process writes.

    Curves are what changes: run facts (``eval/*``: the feature classifier's accuracy,
    sample counts) go once into a text table, not into flat scalar cards. See
    ``gentrain.tracking.dashboard`` for the Custom Scalars layout and the HParams columns.
    """

    Config = TensorBoardConfig

    def __init__(self, log_dir: Path, purge_step: int | None = None) -> None:
        """``purge_step``: a resumed run's first step; TensorBoard hides the events at and
        after it that an earlier process wrote, since this one writes them again."""
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = log_dir
        if purge_step is not None:
            wait_for_a_later_file_name(log_dir)
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)
        self.tags: set[str] = set()  # every scalar tag written: what the layout charts
        self.facts: dict[str, float] = {}
        self.last_step = purge_step - 1 if purge_step else 0
        self._layout: dict[str, Any] = {}

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        self.last_step = max(self.last_step, step)
        facts = {k: v for k, v in values.items() if is_fact(k)}
        if facts:
            self._log_facts(facts, step)
        for tag, value in values.items():
            if tag not in facts:
                self.writer.add_scalar(tag, value, step)
                self.tags.add(tag)

    def _log_facts(self, facts: dict[str, float], step: int) -> None:
        timing = {k for k in facts if k.endswith("seconds")}  # changes every time: not news
        changed = any(self.facts.get(k) != v for k, v in facts.items() if k not in timing)
        self.facts.update(facts)
        if changed:
            self.writer.add_text("evaluation", facts_table(self.facts), step)

    def log_image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        self.writer.add_image(tag, grid, step)

    def log_text(self, tag: str, text: str, step: int = 0) -> None:
        self.writer.add_text(tag, text, step)

    def log_layout(self, networks: list[str], terms: LoggedTerms) -> None:
        """The Custom Scalars layout, from the tags logged so far, again whenever it grew
        (the trainer calls this after each validation; TensorBoard uses the latest)."""
        layout = scalar_layout(self.tags, networks, terms)
        if layout and layout != self._layout:
            from torch.utils.tensorboard.summary import custom_scalars

            self.writer.file_writer.add_summary(custom_scalars(layout), self.last_step)
            self._layout = layout

    def log_hparams(self, summary: RunSummary) -> None:
        """One HParams row: the config (``hparams``, flattened), led by the values that
        distinguish runs (see ``dashboard.hparams_for``), and the final ``metrics``,
        ``first_metric`` first. Each network's learning rate also goes into the facts
        table (a constant rate is not logged as a curve). A run of a sweep or comparison
        leaves the columns to its group (``tracking.hparams_table``)."""
        hparams, metrics, first_metric = summary.hparams, summary.metrics, summary.first_metric
        changed_knobs, learning_rates = summary.changed_knobs, summary.learning_rates
        from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        values, leading = hparams_for(hparams, metrics, changed_knobs, learning_rates)
        if learning_rates:
            self._log_facts({f"lr/{n}": r for n, r in learning_rates.items()}, self.last_step)
        names = metric_order(metrics, first_metric)
        for name in names:  # HParams reads a metric's last scalar: log the ones not yet seen
            if name not in self.tags:
                self.writer.add_scalar(name, metrics[name], self.last_step)
                self.tags.add(name)
        values = {name: _shown(value) for name, value in values.items()}
        experiment, start, end = hparams_summaries(values, {k: metrics[k] for k in names})
        plugin_data = experiment.value[0].metadata.plugin_data
        content = HParamsPluginData.FromString(plugin_data.content)
        for info in content.experiment.hparam_infos:
            info.differs = info.name in leading
        plugin_data.content = content.SerializeToString()
        # A sweep's or comparison's runs share one column list, written at its root.
        summaries = (start, end) if in_group() else (experiment, start, end)
        for summary in summaries:
            self.writer.file_writer.add_summary(summary)

    def close(self) -> None:
        self.writer.close()

    @classmethod
    def start(cls, settings: Any, output_dir: Path, resume_step: int | None) -> Logger:
        return cls(output_dir, None if resume_step is None else resume_step + 1)
