"""What the server observes: the Observation, the analytics devices publish, and the window arithmetic.

Numpy only, so attacks, defenses and tools import it without pulling torch. Every sum over
analytics windows in the project goes through `window_sums`.
"""

from dataclasses import dataclass, field, replace

import numpy as np

# Largest magnitude accepted in what the server observes (aggregates, and so every update a defense sends): the
# attack multiplies and squares sums of them (norms, T x d products), which stay finite in float64 up to about
# 1e150; a gradient sum is nowhere near either.
MAX_MAGNITUDE = 1e100


def window_lengths(n_rounds: int, window: int) -> np.ndarray:
    """Rounds in each window; the last window may be shorter."""
    n_windows = -(-n_rounds // window)
    lengths = np.full(n_windows, window, dtype=np.int64)
    lengths[-1] = n_rounds - window * (n_windows - 1)
    return lengths


def window_of_round(n_rounds: int, window: int) -> np.ndarray:
    return np.arange(n_rounds) // window


def window_sums(per_round: np.ndarray, window: int) -> np.ndarray:
    """(W, ...) sums over each window of `window` rounds of a (T, ...) array; dtype kept."""
    n_rounds = per_round.shape[0]
    sums = np.zeros((-(-n_rounds // window), *per_round.shape[1:]), dtype=per_round.dtype)
    np.add.at(sums, window_of_round(n_rounds, window), per_round)
    return sums


def window_counts(checked_in: np.ndarray, window: int) -> np.ndarray:
    """(n, ceil(T / window)) participation counts from a (T, n) boolean check-in matrix."""
    return window_sums(checked_in.astype(np.int64), window).T


def expected_contributors(checked_in: np.ndarray, padding_rate: float, n_users: int) -> np.ndarray:
    """Contributors a server can count on behind each round's `checked_in` check-ins (int array): all of them,
    or, where unselected users pad at the public `padding_rate` r (below 1: at 1 everyone checks in and m says
    nothing), the expected (m - r n) / (1 - r), rounded and within [0, m]. The server cannot tell padded devices
    from contributing ones (under secure aggregation a masked padded device uploads like any other), so this
    divides its round's sum, and the attack reads it too."""
    checked_in = np.asarray(checked_in, dtype=np.int64)
    if not 0 < padding_rate < 1:
        return checked_in
    estimate = np.rint((checked_in - padding_rate * n_users) / (1.0 - padding_rate)).astype(np.int64)
    return np.clip(estimate, 0, checked_in)


def round_totals(checked_in: np.ndarray) -> np.ndarray:
    """(T,) users checked in per round."""
    return checked_in.sum(axis=1).astype(np.int64)


@dataclass(frozen=True)
class Analytics:
    """What device analytics publish: per-user counts per window of `window` rounds, and per-round totals."""

    counts: np.ndarray | None  # (n, W) int64, or None when no per-user counts are published
    window: int
    totals: np.ndarray | None  # (T,) int64, or None when not published


@dataclass(frozen=True)
class Observation:
    """Everything the server sees, and nothing else: this is all an attack gets."""

    aggregates: np.ndarray  # (T, d) float64: each round's aggregated update
    n_users: int
    counts: np.ndarray | None  # (n, W) int64: per-user participation counts per analytics window; None if unpublished
    window: int  # rounds per analytics window
    totals: np.ndarray | None  # (T,) participants counted per round
    weights: np.ndarray  # (T, d) the global model each round; (0, 0) for synthetic updates
    model: str
    image_shape: tuple[int, int, int]
    n_classes: int
    samples_per_user: int
    local_training: str
    learning_rate: float
    local_epochs: int  # fedavg: epochs of local SGD
    batch_size: int  # fedavg: local minibatch size
    defense_parameters: dict = field(default_factory=dict)
    # The server's own knowledge of how it moved the model: False when the model never moved, or moved only where
    # no client's update changes (a forced refresh along the logits' common shift, Scenario.server_step).
    updates_drift: bool = True
    # The cohort the server's sampling targets a round (participation x users): its own protocol setting, which
    # stands for a round's contributors where nothing published counts them. NaN: not given.
    cohort: float = float("nan")

    def first_rounds(self, n_rounds: int) -> "Observation":
        """What the server saw in the first `n_rounds` rounds (whole analytics windows): a server may ignore the rest."""
        if n_rounds % self.window or not 0 < n_rounds <= len(self.aggregates):
            raise ValueError(f"first_rounds: {n_rounds} is not a whole number of {self.window}-round windows of the run")
        return replace(
            self,
            aggregates=self.aggregates[:n_rounds],
            counts=None if self.counts is None else self.counts[:, : n_rounds // self.window],
            totals=None if self.totals is None else self.totals[:n_rounds],
            weights=self.weights[:n_rounds] if len(self.weights) else self.weights,
        )
