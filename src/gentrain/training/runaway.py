"""Runaway training noticed: losses exploding, a discriminator saturated or dead, a
generator stuck, a network that stopped learning.

The NaN guard sees only NaN/Inf. The detector reads the window means the trainer already
computes for its log line (so it adds no host sync to the training step) and, for the
terms the model declares (``GenerativeModel.logged_terms``), flags:

- explosion: a watched objective whose window mean is above ``ABSOLUTE_LIMIT``, or
  ``FACTOR`` times the median of its earlier windows;
- saturation: the discriminator's outputs pinned within ``EPS`` of 0/1, D all-winning or
  all-losing, for ``PATIENCE`` windows in a row;
- a stuck generator: a generator loss exactly 0 for ``PATIENCE`` windows in a row;
- a dead network: a ``grad_norm_*`` term at 0, the discriminator's outputs not moving
  at all, or scoring real and generated images alike (within ``UNDECIDED``: a D that no
  longer tells them apart gives G nothing to learn from), for ``PATIENCE`` windows and at
  least ``DEAD_STEPS`` steps in a row: a network that no longer learns, whatever its
  losses say.

``trainer.on_runaway``: ``warn`` (default) logs a line, writes a TensorBoard text entry and
puts ``train/runaway`` (and its first step) into the metrics, so metrics.json and the
sweep summary show it; ``stop`` ends the run with a RunawayTrainingError, without writing
another checkpoint, so the last one saved before it was noticed is kept; ``off``.
"""

from __future__ import annotations

import logging
import math
import statistics
from pathlib import Path

from gentrain.core.errors import GentrainError
from gentrain.core.terms import LoggedTerms
from gentrain.tracking.loggers import Logger, NullLogger

log = logging.getLogger("gentrain")

ACTIONS = ("warn", "stop", "off")
ABSOLUTE_LIMIT = 1e8  # far above any per-image loss of gentrain's models
FACTOR = 1000.0  # a window this many times its term's running median
MIN_HISTORY = 3  # windows before the running median is trusted
PATIENCE = 3  # windows in a row for saturation and a stuck generator
EPS = 1e-3
UNDECIDED = 0.01  # D's outputs on real and generated images this close: it tells them not apart
DEAD_STEPS = 10  # a dead network's streak in steps too: a few overflowed 16-bit steps are not
UNDECIDED_STEPS = 50  # an untrained D is undecided too: it gets this long to learn


class RunawayTrainingError(GentrainError):
    """Training exploded or collapsed and ``trainer.on_runaway=stop``."""


class RunawayDetector:
    """Fed the logged window means at each log step; acts once per kind of runaway."""

    def __init__(
        self, action: str = "warn", logger: Logger | None = None, terms: LoggedTerms | None = None
    ) -> None:
        self.action = action
        self.terms = terms or LoggedTerms()  # the model's: which are objectives, D's outputs
        self.logger = logger or NullLogger()
        self.history: dict[str, list[float]] = {}
        self.streaks = {"saturated": 0, "stuck": 0}
        self.dead_since: dict[str, int] = {}  # term -> first step of its dead streak
        self.dead_windows: dict[str, int] = {}
        self.previous_outputs: dict[str, float] = {}
        self.reasons: dict[str, str] = {}  # kind -> what was seen
        self.first_step: int | None = None

    def findings(self, means: dict[str, float], step: int = 0) -> dict[str, str]:
        """The runaways ``means`` (one window, ending at ``step``) shows, by kind; updates
        the history."""
        found: dict[str, str] = {}
        for name in self.terms.watched:
            if name not in means or not math.isfinite(means[name]):
                continue
            value, past = abs(means[name]), self.history.setdefault(name, [])
            median = statistics.median(past) if len(past) >= MIN_HISTORY else None
            if value > ABSOLUTE_LIMIT:
                found["explosion"] = f"{name}={means[name]:.4g} exploded (above {ABSOLUTE_LIMIT:g})"
            elif median is not None and value > FACTOR * max(median, EPS):
                found["explosion"] = (
                    f"{name}={means[name]:.4g} exploded ({value / max(median, EPS):.3g} times "
                    f"its running median {median:.4g})"
                )
            past.append(value)
        outputs = {k: means[k] for k in self.terms.discriminator_outputs if k in means}
        pinned = all(min(v, abs(1 - v)) < EPS for v in outputs.values())
        saturated = bool(outputs) and pinned and any(v > 0.5 for v in outputs.values())
        self.streaks["saturated"] = self.streaks["saturated"] + 1 if saturated else 0
        if self.streaks["saturated"] >= PATIENCE:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in outputs.items())
            found["saturation"] = (
                f"the discriminator's outputs are saturated at 0/1 ({shown}) for "
                f"{self.streaks['saturated']} log windows"
            )
        dead = self._dead_terms(means, step)
        if dead:
            found["dead"] = "; ".join(dead)
        zero = [k for k in self.terms.generator_losses if means.get(k) == 0.0]
        self.streaks["stuck"] = self.streaks["stuck"] + 1 if zero else 0
        if self.streaks["stuck"] >= PATIENCE:
            found["stuck"] = (
                f"the generator's loss {zero[0]} is exactly 0 for {self.streaks['stuck']} "
                "log windows"
            )
        return found

    def _dead_terms(self, means: dict[str, float], step: int) -> list[str]:
        """What has stopped learning for long enough: gradient norms at 0, and the
        discriminator's outputs frozen at the same values."""
        outputs = {k: means[k] for k in self.terms.discriminator_outputs if k in means}
        frozen = bool(outputs) and outputs.keys() == self.previous_outputs.keys()
        frozen = frozen and all(
            abs(v - self.previous_outputs[k]) < 1e-7 for k, v in outputs.items()
        )
        self.previous_outputs = outputs
        signals = {k: means[k] < 1e-12 for k in means if k.startswith("grad_norm")}
        signals["outputs"] = frozen
        spread = max(outputs.values()) - min(outputs.values()) if len(outputs) > 1 else 1.0
        signals["undecided"] = spread < UNDECIDED
        said = []
        for name, now_dead in signals.items():
            if not now_dead:
                self.dead_since.pop(name, None)
                self.dead_windows.pop(name, None)
                continue
            since = self.dead_since.setdefault(name, step)
            windows = self.dead_windows[name] = self.dead_windows.get(name, 0) + 1
            enough = UNDECIDED_STEPS if name == "undecided" else DEAD_STEPS
            if windows >= PATIENCE and step - since + 1 >= enough:
                shown = ", ".join(f"{k}={v:.4g}" for k, v in outputs.items())
                if name == "undecided":
                    said.append(
                        f"the discriminator no longer tells real from generated images "
                        f"({shown}) since step {since}"
                    )
                elif name == "outputs":
                    said.append(
                        f"the discriminator stopped learning: its outputs ({shown}) "
                        f"have not moved since step {since}"
                    )
                else:
                    said.append(f"a network stopped learning: {name} is 0 since step {since}")
        return said

    def check(self, step: int, means: dict[str, float], checkpoint: Path) -> None:
        """Look at one window's means; warn, or raise RunawayTrainingError (``stop``)."""
        if self.action == "off":
            return
        new = {k: v for k, v in self.findings(means, step).items() if k not in self.reasons}
        if not new:
            return
        self.reasons.update(new)
        self.first_step = self.first_step if self.first_step is not None else step
        what = "; ".join(new.values())
        fix = "lower optimizer.lr, or set trainer.gradient_clip_norm"
        if self.action == "stop":
            kept = (
                f"the last checkpoint, {checkpoint}, was written before this was noticed"
                if checkpoint.is_file()
                else "no checkpoint had been written"
            )
            raise RunawayTrainingError(
                f"training ran away at step {step}: {what}. Stopped (trainer.on_runaway=stop); "
                f"{kept}. Fix: {fix}"
            )
        message = f"runaway training at step {step}: {what}. Training goes on; {fix}"
        log.warning(message)
        self.logger.log_text("runaway", message, step)

    def metrics(self) -> dict[str, float]:
        """``train/runaway`` (1.0) and the step it was first seen, if it was."""
        if self.first_step is None:
            return {}
        return {"train/runaway": 1.0, "train/runaway_step": float(self.first_step)}
