"""What a defense guarantees (`Privacy`), and the (epsilon, delta) of a Gaussian mechanism repeated over rounds.

The Gaussian account uses dp-accounting's PLD, with opacus' RDP as a cross-check.

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
from dataclasses import dataclass

AMPLIFICATION_MIN_MULTIPLIER = 0.1
_PLD_INTERVAL = 1e-2  # value discretisation of the sampled PLD: pessimistic, fast
NO_DP = "—"
LEVELS = ("user", "example", "event")


@dataclass(frozen=True)
class Privacy:
    """Every privacy figure of a run at delta (NaN: not applicable), its level and how it was counted.

    `level` is user, example or event (a plugin may join them by "/"), or — without a DP guarantee;
    `accounting` names the adjacency, the sampling and the accountant.
    """

    epsilon: float = math.nan  # the headline: no amplification, the adversary learns who took part
    epsilon_amplified: float = math.nan  # with amplification by Poisson sampling at the participation rate
    epsilon_rdp: float = math.nan  # the headline from another accountant: a cross-check
    epsilon_analytics: float = math.nan  # of the published participation counts
    level: str = NO_DP
    accounting: str = "no DP guarantee"
    binds_server: bool = True  # False where the server sees what the noise protects (central DP): not this adversary

    @property
    def figures(self) -> dict[str, float]:
        return {"epsilon": self.epsilon, "epsilon_amplified": self.epsilon_amplified,
                "epsilon_rdp": self.epsilon_rdp, "epsilon_analytics": self.epsilon_analytics}

    def columns(self) -> dict[str, float | str]:
        """The result row's privacy columns (benchmark.columns.EPSILON_COLUMNS and EPSILON_TEXT_COLUMNS)."""
        return {**self.figures, "epsilon_level": self.level, "epsilon_accounting": self.accounting}


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


# Below this multiplier epsilon is infinite in float64 already (1e-8: inf, 1e-6: 8e13 over 40 participations); far
# below it the accountants divide by it and overflow (1e-320: ZeroDivisionError and scipy warnings, not inf).
NEGLIGIBLE_MULTIPLIER = 1e-8
# Above this multiplier opacus' RDP bound no longer moves (its largest order sets a floor: 0.10286725 at 12
# participations, delta 1e-5, from 1e9 to 1e150 alike), and from about 1e155 it overflows: the cross-check uses it.
RDP_MAX_MULTIPLIER = 1e9


def gaussian_privacy(
    noise_multiplier: float, level: str, n_rounds: int, participation: float, max_participations: int, delta: float
) -> Privacy:
    """`epsilon`, `epsilon_amplified` and `epsilon_rdp` (see the module) at `level`; NaN for a NaN multiplier, inf for none."""
    z = noise_multiplier
    sampled = f"Poisson q={participation:g} amplified" if z >= AMPLIFICATION_MIN_MULTIPLIER else \
        f"Poisson q={participation:g}, amplification not computed (" + \
        ("no noise multiplier" if math.isnan(z) else f"noise multiplier per participation {z:.3g} < "
                                                     f"{AMPLIFICATION_MIN_MULTIPLIER:g}") + ")"
    accounting = f"PLD, replace-one, no amplification (participation observable); {sampled}; RDP cross-check"
    if math.isnan(z) or z < NEGLIGIBLE_MULTIPLIER or max_participations == 0:
        same = math.nan if math.isnan(z) else 0.0 if max_participations == 0 else math.inf  # nobody took part: no loss
        return Privacy(same, same, same, level=level, accounting=accounting)
    epsilon = _exact(z / math.sqrt(max_participations), delta)
    amplified = epsilon
    if z >= AMPLIFICATION_MIN_MULTIPLIER and participation < 1.0 and epsilon > 0:  # 0: nothing left to amplify
        amplified = min(epsilon, _poisson_pld(z, participation, n_rounds, delta))
    return Privacy(epsilon, amplified, _rdp(min(z, RDP_MAX_MULTIPLIER), max_participations, delta), level=level,
                   accounting=accounting)
