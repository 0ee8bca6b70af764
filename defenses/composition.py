"""Several defenses applied together, each hook in the order given."""

import math
from dataclasses import replace

import numpy as np

from benchmark.errors import BenchmarkError
from benchmark.observation import Analytics
from defenses.accounting import LEVELS, NO_DP, Privacy
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
    different values is an error. Epsilons: a DP part whose noise the server never
    sees through alone bounds the whole pipeline (the other parts are pre- or
    post-processing), at its own level; see `privacy` for which part's figures head the row.
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
        """The figures of one DP part, at one level: among the parts with a headline epsilon, those that bind the
        server (central DP binds only the models' observers) if any do, at the strongest level they reach (user
        implies example and event; example and event imply neither each other nor user), the smallest epsilon.
        A minimum across levels held at none of them (dp-sgd's example-level 8.4 beside dp-aggregate's user-level
        52.8 had read "8.4 example/user"). epsilon_analytics: the smallest of the parts' (one part publishes
        counts)."""
        parts = [part.privacy(n_rounds, participation, max_participations, delta) for part in self.parts]
        names = {id(guarantee): part.name for guarantee, part in zip(parts, self.parts)}
        analytics = _smallest([part.epsilon_analytics for part in parts])
        rated = [part for part in parts if part.level != NO_DP and not math.isnan(part.epsilon)]
        rated = [part for part in rated if math.isfinite(part.epsilon)] or rated  # an infinite one guarantees nothing
        if not rated:
            counted = [part for part in parts if part.level != NO_DP]
            return replace(counted[0], epsilon_analytics=analytics) if len(counted) == 1 else \
                Privacy(epsilon_analytics=analytics, level=NO_DP if math.isnan(analytics) else "user",
                        accounting="counts noised; updates not DP" if not math.isnan(analytics) else "no DP guarantee")
        binding = [part for part in rated if part.binds_server] or rated
        # LEVELS runs from the strongest; a plugin's joined level ("example/user") holds at each level it names
        holds = (lambda part, level: level in part.level.split("/"))
        level = next((level for level in LEVELS if any(holds(part, level) for part in binding)), None)
        best = min((part for part in binding if level is None or holds(part, level)), key=lambda part: part.epsilon)
        others = [f"{names[id(part)]} ({part.level}, epsilon {part.epsilon:.4g}"
                  + ("" if part.binds_server else ", not binding the server") + ")" for part in rated if part is not best]
        accounting = f"{names[id(best)]}: {best.accounting}" + (f"; the other DP parts: {', '.join(others)}" if others else "")
        if not math.isnan(analytics) and math.isnan(best.epsilon_analytics):
            accounting += "; epsilon_analytics: the counts' noise"
        return replace(best, epsilon_analytics=analytics, accounting=accounting, level=level or best.level)


def _smallest(values: list[float]) -> float:
    known = [float(value) for value in values if not math.isnan(value)]
    return min(known) if known else math.nan
