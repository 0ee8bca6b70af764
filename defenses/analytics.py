"""Coarsened analytics: longer windows, rounded or noised counts, totals only, or nothing per user.

Rounded and noised counts publish no per-round totals: summed over a window,
the totals give back the exact sum of the users' counts.
"""

import math

import numpy as np

from benchmark.errors import BenchmarkError
from benchmark.observation import Analytics, round_totals, window_counts, window_lengths
from defenses.accounting import Privacy
from defenses.base import Defense


def _positive_integer(name: str, key: str, value) -> int:
    if int(value) != value or value < 1:
        raise BenchmarkError(f"{name} needs an integer {key} >= 1")
    return int(value)


class CoarseAnalytics(Defense):
    """Publish participation counts over windows `factor` times longer than the protocol's."""

    name = "coarse-analytics"

    def __init__(self, factor: int = 4) -> None:
        self.factor = _positive_integer(self.name, "factor", factor)

    def public_parameters(self) -> dict:
        return {"window_factor": self.factor}

    def transform_analytics(self, checked_in: np.ndarray, window: int, rng: np.random.Generator) -> Analytics:
        coarse = min(window * self.factor, checked_in.shape[0])
        return Analytics(window_counts(checked_in, coarse), coarse, round_totals(checked_in))


class RoundedCounts(Defense):
    """Publish each count rounded down to a multiple of `bucket`, and no totals."""

    name = "rounded-counts"

    def __init__(self, bucket: int = 2) -> None:
        self.bucket = _positive_integer(self.name, "bucket", bucket)

    def public_parameters(self) -> dict:
        return {"count_bucket": self.bucket}

    def transform_analytics(self, checked_in: np.ndarray, window: int, rng: np.random.Generator) -> Analytics:
        counts = window_counts(checked_in, window)
        return Analytics(counts - counts % self.bucket, window, None)


# Far past any useful noise (a count's window holds at most a few thousand rounds); larger scales overflow the
# adaptive attack's reading of the counts (c +- scale ln 100 as integers).
MAX_SCALE = 1e9


class NoisyCounts(Defense):
    """Publish counts plus discrete Laplace noise of scale `scale`, clipped to [0, window length], and no totals.

    One participation changes one count by 1: (1 / scale)-DP per participation
    (event-level). A user's whole history changes the counts by its number of
    participations P in L1, so the published counts are (P / scale)-DP at user
    level, with P the most any user took part: `epsilon_analytics`.
    """

    name = "noisy-counts"

    def __init__(self, scale: float = 1.0) -> None:
        if not 0 < scale <= MAX_SCALE:
            raise BenchmarkError(f"{self.name} needs 0 < scale <= {MAX_SCALE:.0e}, got {scale!r}")
        self.scale = float(scale)

    def public_parameters(self) -> dict:
        return {"count_noise_scale": self.scale}

    def transform_analytics(self, checked_in: np.ndarray, window: int, rng: np.random.Generator) -> Analytics:
        counts = window_counts(checked_in, window)
        # The difference of two geometric variables has P(k) proportional to exp(-|k| / scale).
        success = -math.expm1(-1.0 / self.scale)
        noise = rng.geometric(success, counts.shape) - rng.geometric(success, counts.shape)
        return Analytics(np.clip(counts + noise, 0, window_lengths(checked_in.shape[0], window)), window, None)

    def privacy(self, n_rounds: int, participation: float, max_participations: int, delta: float) -> Privacy:
        # replace-one, as every epsilon here: one user's participation record for another of at most as many
        # participations moves up to 2 x max participations of window counts (add/remove would claim half)
        return Privacy(epsilon_analytics=2 * max_participations / self.scale, level="user",
                       accounting="discrete Laplace on counts, replace-one: L1 sensitivity = 2 x max participations; "
                                  "updates not DP")


class TotalsOnly(Defense):
    """Publish per-round participant totals only: no per-user counts."""

    name = "totals-only"

    def public_parameters(self) -> dict:
        return {"counts": "none"}

    def transform_analytics(self, checked_in: np.ndarray, window: int, rng: np.random.Generator) -> Analytics:
        return Analytics(None, window, round_totals(checked_in))


class NoAnalytics(Defense):
    """Publish no analytics at all: neither per-user counts nor per-round totals."""

    name = "no-analytics"

    def public_parameters(self) -> dict:
        return {"counts": "none", "totals": "none"}

    def transform_analytics(self, checked_in: np.ndarray, window: int, rng: np.random.Generator) -> Analytics:
        return Analytics(None, window, None)
