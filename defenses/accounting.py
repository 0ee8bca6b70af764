"""(epsilon, delta) of a Gaussian mechanism repeated over rounds: dp-accounting's PLD, opacus' RDP as a cross-check.

Each DP defense is, per round a user (or an example) takes part, a Gaussian
mechanism of noise multiplier z (noise std / clip norm). Three figures:
- `epsilon` (the headline): this adversary learns who took part, so the
  worst-case unit pays for each of its `max_participations` rounds, no
  amplification. Replace-one adjacency (a unit's clipped contribution swapped
  for another's: sensitivity 2C), exact: k Gaussians compose to one of
  multiplier z / sqrt(k), whose privacy-loss distribution dp-accounting gives;
- `epsilon_amplified`: dp-accounting's PLD for Poisson sampling at rate q over
  all `n_rounds` rounds, replace-one; never above `epsilon` (ignoring the
  sampling is a valid account too). Below z = 0.1 its discretisation would
  need gigabytes, so it is `epsilon`, and the accounting text says so;
- `epsilon_rdp`: opacus' RDP accountant for the headline account (sensitivity
  2C is multiplier z / 2 at sample rate 1), a cross-check from another library.
"""

import functools
import math
import warnings

AMPLIFICATION_MIN_MULTIPLIER = 0.1
_PLD_INTERVAL = 1e-2  # value discretisation of the sampled PLD: pessimistic, fast


@functools.lru_cache(maxsize=256)
def _exact(multiplier: float, delta: float) -> float:
    """Smallest epsilon of one Gaussian of multiplier `multiplier`, replace-one, at `delta`: bisection on PLD's delta(epsilon)."""
    from dp_accounting.pld.privacy_loss_mechanism import AdjacencyType, GaussianPrivacyLoss

    loss = GaussianPrivacyLoss(multiplier, sensitivity=1.0, adjacency_type=AdjacencyType.REPLACE)
    if loss.get_delta_for_epsilon(0.0) <= delta:
        return 0.0
    low, high = 0.0, 1.0
    while loss.get_delta_for_epsilon(high) > delta:
        low, high = high, high * 2
        if high > 1e15:
            return math.inf
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if loss.get_delta_for_epsilon(middle) > delta else (low, middle)
        if high - low <= 1e-6 * high:
            break
    return high


@functools.lru_cache(maxsize=256)
def _poisson_pld(multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    import dp_accounting
    from dp_accounting.pld import PLDAccountant

    accountant = PLDAccountant(dp_accounting.NeighboringRelation.REPLACE_ONE, value_discretization_interval=_PLD_INTERVAL)
    accountant.compose(dp_accounting.PoissonSampledDpEvent(sample_rate, dp_accounting.GaussianDpEvent(multiplier)), steps)
    return float(accountant.get_epsilon(delta))


@functools.lru_cache(maxsize=256)
def _rdp(multiplier: float, steps: int, delta: float) -> float:
    from opacus.accountants import RDPAccountant  # pulls in torch: only when epsilon is asked for

    accountant = RDPAccountant()
    accountant.history = [(multiplier / 2, 1.0, steps)]  # replace-one: sensitivity 2C
    with warnings.catch_warnings():
        # At tiny noise the best RDP order is the smallest one opacus tries: the bound is loose but valid.
        warnings.simplefilter("ignore", UserWarning)
        return float(accountant.get_epsilon(delta=delta))


def gaussian_epsilons(
    noise_multiplier: float, n_rounds: int, participation: float, max_participations: int, delta: float
) -> dict[str, float]:
    """`epsilon`, `epsilon_amplified` and `epsilon_rdp` (see the module); NaN for a NaN multiplier, inf for none."""
    z = noise_multiplier
    if math.isnan(z):
        return dict.fromkeys(("epsilon", "epsilon_amplified", "epsilon_rdp"), math.nan)
    if z == 0:
        return dict.fromkeys(("epsilon", "epsilon_amplified", "epsilon_rdp"), math.inf)
    if max_participations == 0:
        return dict.fromkeys(("epsilon", "epsilon_amplified", "epsilon_rdp"), 0.0)
    epsilon = _exact(z / math.sqrt(max_participations), delta)
    amplified = epsilon
    if z >= AMPLIFICATION_MIN_MULTIPLIER and participation < 1.0:
        amplified = min(epsilon, _poisson_pld(z, participation, n_rounds, delta))
    return {"epsilon": epsilon, "epsilon_amplified": amplified, "epsilon_rdp": _rdp(z, max_participations, delta)}


def gaussian_accounting(noise_multiplier: float, participation: float) -> str:
    """How `gaussian_epsilons` counted, for the results table."""
    sampled = (f"Poisson q={participation:g} amplified" if noise_multiplier >= AMPLIFICATION_MIN_MULTIPLIER
               else f"Poisson q={participation:g}, amplification not computed (z < {AMPLIFICATION_MIN_MULTIPLIER:g})")
    return f"PLD, replace-one, no amplification (participation observable); {sampled}; RDP cross-check"

