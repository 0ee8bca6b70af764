"""The built-in defenses: none, client-level DP, coarse analytics, participation padding."""

import warnings

import numpy as np

from benchmark.errors import BenchmarkError
from defenses.base import Analytics, Defense, window_counts


class NoDefense(Defense):
    name = "none"


class DPGaussian(Defense):
    """Clip each client's update to norm `clip_norm`, then add N(0, (noise_multiplier * clip_norm)^2) per coordinate.

    Epsilon is accounted with opacus' RDP accountant without subsampling
    amplification: this adversary learns who took part, so the worst-case user
    pays for every round it joined.
    """

    name = "dp-gaussian"

    def __init__(self, noise_multiplier: float = 1.0, clip_norm: float = 1.0) -> None:
        if noise_multiplier < 0 or clip_norm <= 0:
            raise BenchmarkError("dp-gaussian needs noise_multiplier >= 0 and clip_norm > 0")
        self.noise_multiplier = float(noise_multiplier)
        self.clip_norm = float(clip_norm)

    def public_parameters(self) -> dict:
        return {"noise_multiplier": self.noise_multiplier, "clip_norm": self.clip_norm}

    def transform_update(self, update: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        norm = float(np.linalg.norm(update))
        clipped = update * min(1.0, self.clip_norm / norm) if norm > 0 else update
        return clipped + rng.normal(0.0, self.noise_multiplier * self.clip_norm, size=update.shape)

    def epsilon(self, n_rounds: int, participation: float, max_participations: int, delta: float) -> float:
        if self.noise_multiplier == 0:
            return float("inf")
        if max_participations == 0:
            return 0.0
        from opacus.accountants import RDPAccountant  # pulls in torch: only when epsilon is asked for

        accountant = RDPAccountant()
        accountant.history = [(self.noise_multiplier, 1.0, max_participations)]
        with warnings.catch_warnings():
            # At tiny noise the best RDP order is the smallest one opacus tries: the bound is loose but valid.
            warnings.simplefilter("ignore", UserWarning)
            return float(accountant.get_epsilon(delta=delta))


class CoarseAnalytics(Defense):
    """Publish participation counts over windows `factor` times longer than the protocol's."""

    name = "coarse-analytics"

    def __init__(self, factor: int = 4) -> None:
        if int(factor) != factor or factor < 1:
            raise BenchmarkError("coarse-analytics needs an integer factor >= 1")
        self.factor = int(factor)

    def public_parameters(self) -> dict:
        return {"factor": self.factor}

    def transform_analytics(self, checked_in: np.ndarray, window: int, rng: np.random.Generator) -> Analytics:
        coarse = min(window * self.factor, checked_in.shape[0])
        return Analytics(window_counts(checked_in, coarse), coarse, checked_in.sum(axis=1).astype(np.int64))


class ParticipationPadding(Defense):
    """With probability `rate`, a user the protocol did not select checks in anyway: counted, contributing zero."""

    name = "participation-padding"

    def __init__(self, rate: float = 0.1) -> None:
        if not 0.0 <= rate <= 1.0:
            raise BenchmarkError("participation-padding needs a rate in [0, 1]")
        self.rate = float(rate)

    def public_parameters(self) -> dict:
        return {"rate": self.rate}

    def choose_participants(self, selected: np.ndarray, round_index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        padding = (rng.random(selected.shape) < self.rate) & ~selected
        return selected, selected | padding


BUILTIN_DEFENSES: dict[str, type[Defense]] = {
    cls.name: cls for cls in (NoDefense, DPGaussian, CoarseAnalytics, ParticipationPadding)
}
