"""Property attribution (the paper's anonymity result): which users hold a sample of the lower half of the classes.

The property of a user is "holds a sample whose label is below n_classes // 2": balanced when labels
are, and readable from an update alone. For softmax cross-entropy the last layer's bias gradient is
sum(softmax - one-hot), positive at every class no sample holds and negative at the held ones (the
label-inference rule). A user's score is minus the smallest bias entry over the lower-half classes,
so it is positive exactly when some lower-half class carries a negative entry; the prediction is
score > 0, for an update and a round's sum alike.
"""

from dataclasses import dataclass

import numpy as np

from benchmark.observation import window_sums


@dataclass(frozen=True)
class PropertyGuess:
    scores: np.ndarray  # (n,) larger = more likely to hold the property
    predictions: np.ndarray  # (n,) bool


def lower_half(n_classes: int) -> int:
    """Classes below this index define the property."""
    return n_classes // 2


def holds_property(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(n,) bool from (n, s) labels: whether each user holds a lower-half sample."""
    return (labels < lower_half(n_classes)).any(axis=1)


def property_scores(bias_gradients: np.ndarray) -> np.ndarray:
    """(k,) scores from (k, n_classes) last-layer bias gradients (of updates or of round sums)."""
    return -bias_gradients[:, : lower_half(bias_gradients.shape[1])].min(axis=1)


def guess(scores: np.ndarray) -> PropertyGuess:
    return PropertyGuess(scores, scores > 0)


def window_weighted_scores(round_scores: np.ndarray, counts: np.ndarray, window: int) -> np.ndarray:
    """The aggregate-only baseline: each user's count-weighted mean of the mean round score of its windows.

    Without disaggregation the server knows the round sums and each user's window counts only;
    a user counted in no window (negative noised counts count as none) scores the mean over all windows.
    """
    per_window = window_sums(round_scores, window) / window_sums(np.ones(len(round_scores)), window)
    weights = np.maximum(counts, 0).astype(np.float64)
    totals = weights.sum(axis=1)
    weights[totals == 0] = 1.0
    return weights @ per_window / weights.sum(axis=1)
