"""Differential privacy: noise on each client's update, on every local step (DP-SGD), or on the round's sum."""

import math

import numpy as np

from benchmark.errors import BenchmarkError
from defenses.accounting import gaussian_epsilon, gaussian_epsilons
from defenses.base import Defense


def clip(update: np.ndarray, clip_norm: float) -> np.ndarray:
    norm = float(np.linalg.norm(update))
    return update * min(1.0, clip_norm / norm) if norm > 0 else update


class GaussianDefense(Defense):
    """A Gaussian mechanism of `noise_multiplier` per round a user joins, accounted with opacus (see defenses.accounting)."""

    def __init__(self, noise_multiplier: float = 1.0, clip_norm: float = 1.0) -> None:
        if noise_multiplier < 0 or clip_norm <= 0:
            raise BenchmarkError(f"{self.name} needs noise_multiplier >= 0 and clip_norm > 0")
        self.noise_multiplier = float(noise_multiplier)
        self.clip_norm = float(clip_norm)

    def round_noise_multiplier(self) -> float:
        """The multiplier of the one Gaussian mechanism equivalent to a round's noise."""
        return self.noise_multiplier

    def epsilon(self, n_rounds: int, participation: float, max_participations: int, delta: float) -> float:
        return gaussian_epsilon(self.round_noise_multiplier(), max_participations, delta)

    def epsilons(self, n_rounds: int, participation: float, max_participations: int, delta: float) -> dict[str, float]:
        return gaussian_epsilons(self.round_noise_multiplier(), n_rounds, participation, max_participations, delta)


class DPGaussian(GaussianDefense):
    """Client-level DP: clip each update to `clip_norm`, add N(0, (noise_multiplier * clip_norm)^2) per coordinate."""

    name = "dp-gaussian"

    def public_parameters(self) -> dict:
        return {"update_noise_std": self.noise_multiplier * self.clip_norm, "clip_norm": self.clip_norm}

    def transform_update(self, update: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return clip(update, self.clip_norm) + rng.normal(0.0, self.noise_multiplier * self.clip_norm, size=update.shape)


class AggregateNoise(GaussianDefense):
    """Central DP: clip each update to `clip_norm`, add N(0, (noise_multiplier * clip_norm)^2) to the round's sum."""

    name = "dp-aggregate"

    def public_parameters(self) -> dict:
        return {"aggregate_noise_std": self.noise_multiplier * self.clip_norm, "clip_norm": self.clip_norm}

    def transform_update(self, update: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return clip(update, self.clip_norm)

    def transform_aggregate(self, aggregate: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return aggregate + rng.normal(0.0, self.noise_multiplier * self.clip_norm, size=aggregate.shape)


class DPSGD(GaussianDefense):
    """Example-level DP-SGD in each client: per-example clipping to `clip_norm` and Gaussian noise every local step.

    Its epsilons are example-level (add or remove one training example). An
    example is in one batch per local epoch, so a round is `local_epochs` Gaussian
    steps (one for fedsgd), the same as one step of multiplier z / sqrt(steps).
    The step count is learnt when the clients train: before that, or when no
    client trained (synthetic updates), the epsilons are NaN.
    """

    name = "dp-sgd"

    def __init__(self, noise_multiplier: float = 1.0, clip_norm: float = 1.0) -> None:
        super().__init__(noise_multiplier, clip_norm)
        self.steps_per_round = 0

    def public_parameters(self) -> dict:
        return {"example_noise_multiplier": self.noise_multiplier, "example_clip_norm": self.clip_norm}

    def local_update(self, model, x, y, scenario, rng: np.random.Generator) -> np.ndarray:
        from defenses.private_training import dp_sgd_update  # torch and opacus load only when a client trains

        self.steps_per_round = 1 if scenario.local_training == "fedsgd" else scenario.local_epochs
        return dp_sgd_update(model, x, y, scenario, self.noise_multiplier, self.clip_norm, rng)

    def round_noise_multiplier(self) -> float:
        return self.noise_multiplier / math.sqrt(self.steps_per_round) if self.steps_per_round else math.nan
