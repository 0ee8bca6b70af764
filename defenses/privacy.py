"""Differential privacy: central DP-FedAvg, local DP on every update, DP-SGD in each client, noise on the round's sum.

Epsilons come from defenses.accounting (replace-one, participation observable),
at each defense's `level` (user or example).
"""

import math
from dataclasses import replace

import numpy as np

from benchmark.errors import BenchmarkError
from defenses.accounting import Privacy, gaussian_privacy
from defenses.base import Defense


def clip(update: np.ndarray, clip_norm: float) -> np.ndarray:
    norm = float(np.linalg.norm(update))
    return update * min(1.0, clip_norm / norm) if norm > 0 else update


class GaussianDefense(Defense):
    """A Gaussian mechanism of `noise_multiplier` per round a user joins (user-level)."""

    level = "user"

    def __init__(self, noise_multiplier: float = 1.0, clip_norm: float = 1.0) -> None:
        if not (noise_multiplier >= 0 and clip_norm > 0):
            raise BenchmarkError(f"{self.name} needs noise_multiplier >= 0 and clip_norm > 0")
        self.noise_multiplier = float(noise_multiplier)
        self.clip_norm = float(clip_norm)

    def round_noise_multiplier(self) -> float:
        """The multiplier of the one Gaussian mechanism equivalent to a round's noise."""
        return self.noise_multiplier

    def privacy(self, n_rounds: int, participation: float, max_participations: int, delta: float) -> Privacy:
        return gaussian_privacy(self.round_noise_multiplier(), self.level, n_rounds, participation, max_participations, delta)


class LDPGaussian(GaussianDefense):
    """Local DP: clip each update to `clip_norm` and add N(0, (noise_multiplier * clip_norm)^2) per coordinate on every client.

    Every client's own noise protects it even from the sum's other terms; the sum
    carries cohort times the variance of central DP-FedAvg at the same epsilon.
    """

    name = "ldp-gaussian"

    def public_parameters(self) -> dict:
        return {"update_noise_std": self.noise_multiplier * self.clip_norm, "clip_norm": self.clip_norm}

    def transform_update(self, update: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return clip(update, self.clip_norm) + rng.normal(0.0, self.noise_multiplier * self.clip_norm, size=update.shape)


class AggregateNoise(GaussianDefense):
    """Distributed DP: clip each update to `clip_norm`; the round's sum carries N(0, (noise_multiplier * clip_norm)^2).

    The clients' noise shares add up to that Gaussian inside secure aggregation,
    so the server only ever sees the noised sum: simulated as noise on the sum.
    """

    name = "dp-aggregate"

    def public_parameters(self) -> dict:
        return {"aggregate_noise_std": self.noise_multiplier * self.clip_norm, "clip_norm": self.clip_norm}

    def transform_update(self, update: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return clip(update, self.clip_norm)

    def transform_aggregate(self, aggregate: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return aggregate + rng.normal(0.0, self.noise_multiplier * self.clip_norm, size=aggregate.shape)


class DPFedAvg(GaussianDefense):
    """Central DP-FedAvg (McMahan et al., 2018): clip each update; the server averages the clipped updates and adds
    Gaussian noise of std z C / noise_cohort to the average before its model step.

    Central: the server receives the clipped sum and adds the noise itself (`transform_step`), so the noise
    hides nothing from the server, the adversary this benchmark scores: it sees every clipped sum whole. The
    epsilon binds whoever sees the trained models, and says so. Noise the server never sees is `dp-aggregate`
    (distributed DP: the clients' noise shares add up inside secure aggregation).
    `noise_cohort` (0: the round's own cohort) calibrates the noise for a realistic cohort while a smaller one
    is simulated, as pfl-research does: the step's sum of the m simulated updates gets std z C m / noise_cohort,
    so its average has the noise of a noise_cohort-client deployment, whose epsilon is reported. m is the number
    of updates clipped into the last sum.
    """

    name = "dp-fedavg"

    def __init__(self, noise_multiplier: float = 1.0, clip_norm: float = 1.0, noise_cohort: int = 0) -> None:
        super().__init__(noise_multiplier, clip_norm)
        if int(noise_cohort) != noise_cohort or noise_cohort < 0:
            raise BenchmarkError("dp-fedavg needs an integer noise_cohort >= 0 (0: the simulated cohort)")
        self.noise_cohort = int(noise_cohort)
        self.clipped = self.summed = 0

    def public_parameters(self) -> dict:
        # No noise in what the server receives: the adaptive attacker has nothing to read but the clipping.
        return {"central_noise_std": self.noise_multiplier * self.clip_norm, "clip_norm": self.clip_norm,
                "noise_cohort": self.noise_cohort}

    def transform_update(self, update: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        self.clipped += 1
        return clip(update, self.clip_norm)

    def transform_aggregate(self, aggregate: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        self.summed, self.clipped = self.clipped, 0  # the server receives the clipped sum of `summed` updates
        return aggregate

    def transform_step(self, aggregate: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        scale = self.summed / self.noise_cohort if self.noise_cohort else 1.0
        return aggregate + rng.normal(0.0, self.noise_multiplier * self.clip_norm * scale, size=aggregate.shape)

    def privacy(self, n_rounds: int, participation: float, max_participations: int, delta: float) -> Privacy:
        guarantee = super().privacy(n_rounds, participation, max_participations, delta)
        central = "; central: the server adds the noise after it has the sum, so the epsilon binds the models' observers, not the server"
        calibrated = f"; noise calibrated for a cohort of {self.noise_cohort}, a smaller one simulated" if self.noise_cohort else ""
        return replace(guarantee, accounting=guarantee.accounting + central + calibrated, binds_server=False)


class DPSGD(GaussianDefense):
    """Example-level DP-SGD in each client: per-example clipping to `clip_norm` and Gaussian noise every local step.

    Its epsilons are example-level (replace one training example). An example is
    in one batch per local epoch, so a round is `local_epochs` Gaussian steps (one
    for fedsgd), the same as one step of multiplier z / sqrt(steps). The step
    count is learnt when the clients train: before that, or when no client
    trained (synthetic updates), the epsilons are NaN.
    """

    name = "dp-sgd"
    level = "example"

    def __init__(self, noise_multiplier: float = 1.0, clip_norm: float = 1.0) -> None:
        super().__init__(noise_multiplier, clip_norm)
        self.steps_per_round = 0
        self._first_steps: dict = {}  # clipped first-step sums per client, for the current global model

    @property
    def example_dp(self) -> tuple[float, float]:
        """(noise_multiplier, clip_norm): lets the utility track run this local training batched over a cohort."""
        return self.noise_multiplier, self.clip_norm

    def public_parameters(self) -> dict:
        return {"example_noise_multiplier": self.noise_multiplier, "example_clip_norm": self.clip_norm}

    def count_steps(self, scenario) -> None:
        """Learn how many Gaussian steps an example takes a round under `scenario`'s local training."""
        self.steps_per_round = 1 if scenario.local_training == "fedsgd" else scenario.local_epochs

    def local_update(self, model, x, y, scenario, rng: np.random.Generator) -> np.ndarray:
        from defenses.private_training import dp_sgd_update  # torch and opacus load only when a client trains

        self.count_steps(scenario)
        return dp_sgd_update(model, x, y, scenario, self.noise_multiplier, self.clip_norm, rng)

    def local_updates(self, model, x, y, scenario, rng: np.random.Generator) -> np.ndarray:
        """local_update of a round's k clients at once, x (k, S, ...), y (k, S): the same draws, batched."""
        from defenses.private_training import dp_sgd_updates

        self.count_steps(scenario)
        return dp_sgd_updates(model, x, y, scenario, self.noise_multiplier, self.clip_norm, rng, self._first_steps)

    def round_noise_multiplier(self) -> float:
        return self.noise_multiplier / math.sqrt(self.steps_per_round) if self.steps_per_round else math.nan
