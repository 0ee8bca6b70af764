"""Several defenses applied together, each hook in the order given."""

import math
from dataclasses import replace

import numpy as np

from benchmark.errors import BenchmarkError
from benchmark.observation import Analytics
from defenses.accounting import NO_DP, Privacy
from defenses.base import Defense


def _changes_analytics(defense: Defense) -> bool:
    if isinstance(defense, Composed):
        return any(_changes_analytics(part) for part in defense.parts)
    return type(defense).transform_analytics is not Defense.transform_analytics


class Composed(Defense):
    """Apply `defenses` (a list of {name, ...parameters}) in order; at most one of them may change the analytics.

    choose_participants: each part gets the previous part's contributing mask;
    the checked-in mask is the union of the parts'. Updates and sums pass through
    every part in order; local_update and padded_uploads come from the first part
    that returns one. Public parameters merge; a key published twice with
    different values is an error. Epsilons: every DP part alone bounds the whole
    pipeline (the other parts are pre- or post-processing), so each figure is the
    smallest of the parts' (NaN ignored). With a dp-sgd part they are example-level.
    """

    name = "composed"
    nested_defenses = ("defenses",)  # the registry builds these parameters' {name, ...} entries into defenses

    def __init__(self, defenses: list[Defense]) -> None:
        if not defenses or not all(isinstance(part, Defense) for part in defenses):
            raise BenchmarkError("composed needs defenses = [{name = ..., ...parameters}, ...], at least one")
        self.parts = list(defenses)
        self.refresh_every = min((part.refresh_every for part in self.parts if part.refresh_every), default=0)
        self.min_relative_change = max(part.min_relative_change for part in self.parts)
        analytics = [part for part in self.parts if _changes_analytics(part)]
        if len(analytics) > 1:
            raise BenchmarkError(f"composed: {' and '.join(p.name for p in analytics)} both change the analytics; keep one")
        self.analytics = analytics[0] if analytics else Defense()
        self.public_parameters()

    def public_parameters(self) -> dict:
        merged: dict = {}
        for part in self.parts:
            for key, value in part.public_parameters().items():
                if key in merged and merged[key] != value:
                    raise BenchmarkError(f"composed: public parameter {key!r} is both {merged[key]!r} and {value!r}")
                merged[key] = value
        return merged

    def choose_participants(self, selected: np.ndarray, round_index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        contributing, checked_in = selected, np.zeros_like(selected)
        for part in self.parts:
            contributing, counted = part.choose_participants(contributing, round_index, rng)
            checked_in = checked_in | counted
        return contributing, checked_in

    def local_update(self, model, x, y, scenario, rng: np.random.Generator) -> np.ndarray | None:
        return next((u for p in self.parts if (u := p.local_update(model, x, y, scenario, rng)) is not None), None)

    def transform_update(self, update: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for part in self.parts:
            update = part.transform_update(update, rng)
        return update

    def padded_uploads(self, count: int, dim: int, rng: np.random.Generator) -> np.ndarray | None:
        return next((u for p in self.parts if (u := p.padded_uploads(count, dim, rng)) is not None), None)

    def transform_aggregate(self, aggregate: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for part in self.parts:
            aggregate = part.transform_aggregate(aggregate, rng)
        return aggregate

    def transform_step(self, aggregate: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for part in self.parts:
            aggregate = part.transform_step(aggregate, rng)
        return aggregate

    def transform_analytics(self, checked_in: np.ndarray, window: int, rng: np.random.Generator) -> Analytics:
        return self.analytics.transform_analytics(checked_in, window, rng)

    def privacy(self, n_rounds: int, participation: float, max_participations: int, delta: float) -> Privacy:
        """Each figure the smallest of the parts'; the one DP part's level and accounting, or all of theirs joined."""
        parts = [part.privacy(n_rounds, participation, max_participations, delta) for part in self.parts]
        figures = {key: _smallest([part.figures[key] for part in parts]) for key in Privacy().figures}
        private = [part for part in parts if part.level != NO_DP]
        if len(private) == 1:
            return replace(private[0], **figures)
        if not private:
            return Privacy(**figures)
        return Privacy(**figures, level="/".join(sorted({part.level for part in private})),
                       accounting="smallest of: " + " | ".join(part.accounting for part in private))


def _smallest(values: list[float]) -> float:
    known = [float(value) for value in values if not math.isnan(value)]
    return min(known) if known else math.nan
