"""Every built-in defense, by name; each family lives in its own module."""

from defenses.analytics import CoarseAnalytics, NoAnalytics, NoisyCounts, RoundedCounts, TotalsOnly
from defenses.base import Defense
from defenses.composition import Composed
from defenses.participation import ModelRefresh, ParticipationPadding, StructuredParticipation
from defenses.privacy import AggregateNoise, DPFedAvg, DPSGD, LDPGaussian


class NoDefense(Defense):
    """No countermeasure: secure aggregation alone."""

    name = "none"


BUILTIN_DEFENSES: dict[str, type[Defense]] = {
    cls.name: cls
    for cls in (
        NoDefense,
        DPFedAvg,
        LDPGaussian,
        DPSGD,
        AggregateNoise,
        CoarseAnalytics,
        RoundedCounts,
        NoisyCounts,
        TotalsOnly,
        NoAnalytics,
        ParticipationPadding,
        StructuredParticipation,
        ModelRefresh,
        Composed,
    )
}

# Old names that still build a defense: dp-gaussian was local DP all along.
ALIASES: dict[str, str] = {"dp-gaussian": "ldp-gaussian"}
