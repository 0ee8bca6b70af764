"""The Defense base class: hooks that each do nothing until a subclass overrides them."""

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from benchmark.observation import Analytics, round_totals, window_counts
from defenses.accounting import Privacy

if TYPE_CHECKING:  # torch loads only when a task runs
    from torch import Tensor, nn

    from benchmark.scenario import Scenario


class Defense:
    """A countermeasure. Override any hook; the defaults leave the protocol untouched.

    Hooks run in protocol order each round: `choose_participants`, then
    `local_update` and `transform_update` for every contributing client,
    `padded_uploads` for the devices counted without contributing, then
    `transform_aggregate` (the sum as the server receives it) and, where the
    server steps its model, `transform_step`; `transform_analytics` runs once at
    the end on the whole check-in history. Every random choice must come from the
    `rng` passed in.
    """

    name = "none"
    refresh_every: int = 0  # k > 0: the server must move the model at least every k rounds (0: it may freeze it)
    min_relative_change: float = 0.0  # clients refuse a new model w within this ||w - w_last|| / ||w_last|| of theirs

    def public_parameters(self) -> dict:
        """What the server (and so an adaptive attacker) knows about this defense."""
        return {}

    def choose_participants(self, selected: np.ndarray, round_index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """From the users the protocol selected (bool, n), return (contributing, checked_in) masks."""
        return selected, selected

    def local_update(
        self, model: "nn.Module", x: "Tensor", y: "Tensor", scenario: "Scenario", rng: np.random.Generator
    ) -> np.ndarray | None:
        """The update a client computes on its data (x, y) from `model`, which it must leave unchanged.

        None means the protocol's own local training (benchmark.simulation.local_update).
        """
        return None

    def transform_update(self, update: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A client's update before it enters secure aggregation."""
        return update

    def padded_uploads(self, count: int, dim: int, rng: np.random.Generator) -> np.ndarray | None:
        """(count, dim) vectors uploaded by this round's `count` devices counted without contributing; None: nothing."""
        return None

    def transform_aggregate(self, aggregate: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The round's sum, as the server receives it."""
        return aggregate

    def transform_step(self, aggregate: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The sum the server's model step uses, from the sum it received (central DP's noise goes here).

        The server has the received sum before this hook runs, so whatever it adds hides nothing from the
        server, the adversary this benchmark scores; it changes the trained model (utility) only.
        """
        return aggregate

    def transform_analytics(self, checked_in: np.ndarray, window: int, rng: np.random.Generator) -> Analytics:
        """Analytics from the (T, n) check-in matrix; by default exact counts every `window` rounds and totals."""
        return Analytics(window_counts(checked_in, window), window, round_totals(checked_in))

    def privacy(self, n_rounds: int, participation: float, max_participations: int, delta: float) -> Privacy:
        """The run's DP guarantee at `delta` (figures, level, accounting); by default none (NaN figures, level —).

        `max_participations` is the most rounds any user took part in out of `n_rounds`, at sampling rate `participation`.
        """
        return Privacy()


def acting_parts(defense: Defense) -> Iterator[Defense]:
    """The defenses that act, in hook order: guards (`inner`) and compositions (`parts`) looked through."""
    inner = getattr(defense, "inner", None)
    parts = getattr(defense, "parts", None)
    if isinstance(inner, Defense):
        yield from acting_parts(inner)
    elif parts is not None:
        for part in parts:
            yield from acting_parts(part)
    else:
        yield defense


TRAINING_HOOKS = (
    "choose_participants", "local_update", "transform_update", "padded_uploads", "transform_aggregate", "transform_step",
)


def overrides(defense: Defense, hook: str) -> bool:
    """The hook is not the base class's: overridden in a subclass, or replaced on the instance."""
    return getattr(getattr(defense, hook), "__func__", None) is not getattr(Defense, hook)


def trains_like_undefended(defense: Defense) -> bool:
    """True when no hook that shapes training is overridden (wrappers and compositions are looked through)."""
    return not any(overrides(part, hook) for part in acting_parts(defense) for hook in TRAINING_HOOKS)


def local_training_part(defense: Defense) -> Defense | None:
    """The part that provides the defense's local training: the first acting part that overrides local_update."""
    return next((part for part in acting_parts(defense) if overrides(part, "local_update")), None)


def inapplicable(defense: Defense, update_kind: str) -> str | None:
    """Why `defense` cannot act in a cell whose updates are `update_kind`, or None where it can.

    Synthetic updates are fixed vectors, one per user, that no model produces: a defense that acts in the clients'
    local training (DP-SGD) or by moving the model (model refresh) would leave them untouched, and scoring the
    attack there would score a defense that never ran (dp-sgd scored attack success 1.0 there, 0 on every image
    cell). Such a task is reported `not applicable`, never as the defense's result."""
    if update_kind != "synthetic":
        return None
    for part in acting_parts(defense):
        if overrides(part, "local_update"):
            return f"{part.name} acts in the clients' local training, and synthetic updates come from no training"
        if part.refresh_every:
            return f"{part.name} acts by moving the model, and synthetic updates do not depend on it"
    return None


def batched_local_training(defense: Defense) -> Defense | None:
    """The part that provides the defense's local training, if it can also train a round's clients at once: it then
    defines `local_updates(model, x, y, scenario, rng) -> (k, d)`, x (k, S, ...), y (k, S), drawing from `rng`
    what k calls of its local_update would."""
    part = local_training_part(defense)
    return part if callable(getattr(part, "local_updates", None)) else None
