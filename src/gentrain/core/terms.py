"""What a model's logged terms mean, declared by the model (``GenerativeModel.logged_terms``).

The progress line, the dashboard and the runaway watch read this declaration instead of
lists of the built-in models' term names, so a new model's terms get their place on the
progress line, their charts and their watch like the built-in ones'.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LoggedTerms:
    #: network -> the terms it minimises (one dashboard chart each, titled by its networks)
    by_network: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: the objectives watched for explosion (not the parts, such as a KL starting near 0)
    watched: tuple[str, ...] = ()
    #: D's outputs in [0, 1]: charted together, watched for saturation and for a D that
    #: scores real and generated images alike
    discriminator_outputs: tuple[str, ...] = ()
    #: a generator's losses: exactly 0 for long means it is stuck
    generator_losses: tuple[str, ...] = ()
    #: the progress line's first terms, in order (the rest follow in the model's order)
    first: tuple[str, ...] = ()

    def ordered(self, values: dict[str, float]) -> dict[str, float]:
        """``values`` with the ``first`` terms first."""
        head = {k: values[k] for k in self.first if k in values}
        return {**head, **{k: v for k, v in values.items() if k not in head}}
