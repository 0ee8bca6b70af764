"""Who takes part and what the server can assume about it: padding, fixed groups, a model that keeps moving."""

import numpy as np

from benchmark.errors import BenchmarkError
from defenses.base import Defense

MASK_RANGE = 2**31  # masks are integers below this: any sum of them is exact in float64


class ParticipationPadding(Defense):
    """With probability `rate`, an unselected user checks in anyway: counted, contributing nothing or (`masked`) a zero-sum mask.

    Masked padded devices each upload a full vector, as under secure aggregation's
    pairwise masks; a round's masks are integers summing to exactly zero, so the
    round's sum is exactly the unpadded one: the cost is bytes, not utility.
    """

    name = "participation-padding"

    def __init__(self, rate: float = 0.1, masked: bool = False) -> None:
        if not 0.0 <= rate <= 1.0 or not isinstance(masked, bool):
            raise BenchmarkError("participation-padding needs a rate in [0, 1] and masked = true or false")
        self.rate, self.masked = float(rate), masked

    def public_parameters(self) -> dict:
        return {"padding_rate": self.rate, "padding_masked": self.masked}

    def choose_participants(self, selected: np.ndarray, round_index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        padding = (rng.random(selected.shape) < self.rate) & ~selected
        return selected, selected | padding

    def padded_uploads(self, count: int, dim: int, rng: np.random.Generator) -> np.ndarray | None:
        if not self.masked:
            return None
        masks = rng.integers(-MASK_RANGE, MASK_RANGE, size=(count, dim)).astype(np.float64)
        masks[-1] = -masks[:-1].sum(axis=0)
        return masks


class StructuredParticipation(Defense):
    """Users take part in fixed public groups of `group_size` (user u in group u // g), as in Multi-RoundSecAgg.

    A group takes part when its first member was selected; then all its members
    contribute and check in, so only group sums are identifiable.
    """

    name = "structured-participation"

    def __init__(self, group_size: int = 2) -> None:
        if int(group_size) != group_size or group_size < 1:
            raise BenchmarkError("structured-participation needs an integer group_size >= 1")
        self.group_size = int(group_size)

    def public_parameters(self) -> dict:
        return {"group_size": self.group_size}

    def choose_participants(self, selected: np.ndarray, round_index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        members = selected[np.arange(len(selected)) // self.group_size * self.group_size]
        return members, members


class ModelRefresh(Defense):
    """Clients refuse a model older than `every` rounds, so the server must apply its aggregates at least that often."""

    name = "model-refresh"

    def __init__(self, every: int = 1) -> None:
        if int(every) != every or every < 1:
            raise BenchmarkError("model-refresh needs an integer every >= 1")
        self.refresh_every = int(every)

    def public_parameters(self) -> dict:
        return {"model_refresh": self.refresh_every}
