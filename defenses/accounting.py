"""(epsilon, delta) of a Gaussian mechanism repeated over rounds, from opacus' RDP and PRV accountants.

Each DP defense is, per round a user takes part, a Gaussian mechanism of
noise multiplier z (noise std / sensitivity). Two accounts:
- without amplification (the headline): this adversary learns who took part,
  so the worst-case user pays for each of its rounds at sample rate 1;
- with amplification: every user is sampled with probability `participation`
  in each of the `n_rounds` rounds (Poisson subsampling).
"""

import math
import warnings

import numpy as np


def _rdp(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    from opacus.accountants import RDPAccountant  # pulls in torch: only when epsilon is asked for

    accountant = RDPAccountant()
    accountant.history = [(noise_multiplier, sample_rate, steps)]
    with warnings.catch_warnings():
        # At tiny noise the best RDP order is the smallest one opacus tries: the bound is loose but valid.
        warnings.simplefilter("ignore", UserWarning)
        return float(accountant.get_epsilon(delta=delta))


def _prv(noise_multiplier: float, sample_rate: float, steps: int, delta: float, rdp_epsilon: float) -> float:
    """PRV upper bound, or NaN where opacus' PRV accountant gives none.

    Its error target is 1% of the RDP epsilon (at least 0.01): a fixed 0.01 makes
    the discretisation grow with epsilon (30 s at z = 0.3, 200 steps). With many
    steps at tiny noise its truncated domain misses the privacy loss and it
    answers inf, which is no bound at all: that case, and an exception, give NaN.
    """
    from opacus.accountants import PRVAccountant

    accountant = PRVAccountant()
    accountant.history = [(noise_multiplier, sample_rate, steps)]
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            epsilon = float(accountant.get_epsilon(delta, eps_error=max(0.01, 0.01 * rdp_epsilon)))
    except (ArithmeticError, ValueError, RuntimeError):
        return math.nan
    return epsilon if math.isfinite(epsilon) else math.nan


def gaussian_epsilon(noise_multiplier: float, max_participations: int, delta: float) -> float:
    """The headline: RDP, no amplification, `max_participations` rounds at sample rate 1; NaN for a NaN multiplier."""
    if math.isnan(noise_multiplier):
        return math.nan
    if noise_multiplier == 0:
        return math.inf
    if max_participations == 0:
        return 0.0
    return _rdp(noise_multiplier, 1.0, max_participations, delta)


def gaussian_epsilons(
    noise_multiplier: float, n_rounds: int, participation: float, max_participations: int, delta: float
) -> dict[str, float]:
    """`epsilon` and `epsilon_prv` without amplification, `epsilon_amplified` and `epsilon_prv_amplified` with it."""
    accounts = {"": (1.0, max_participations), "_amplified": (participation, n_rounds)}
    figures = {}
    for suffix, (rate, steps) in accounts.items():
        if math.isnan(noise_multiplier):
            rdp = prv = math.nan
        elif noise_multiplier == 0:
            rdp = prv = math.inf
        elif steps == 0:
            rdp = prv = 0.0
        else:
            rdp = _rdp(noise_multiplier, rate, steps, delta)
            prv = _prv(noise_multiplier, rate, steps, delta, rdp)
        figures[f"epsilon{suffix}"], figures[f"epsilon_prv{suffix}"] = rdp, prv
    return figures
