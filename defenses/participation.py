"""Who takes part and what the server can assume about it: padding, fixed groups, a model that keeps moving."""

import numpy as np

from benchmark.errors import BenchmarkError
from defenses.base import Defense

MASK_RANGE = 2**31  # masks are integers below this: any sum of them is exact in float64


class ParticipationPadding(Defense):
    """With probability `rate`, an unselected user checks in anyway: counted, contributing nothing or (`masked`) a zero-sum mask.

    Masked padded devices each upload a full vector, as under secure aggregation's
    pairwise masks; a round's masks are integers summing to exactly zero, so the
    round's sum is exactly the unpadded one. The cost is bytes and a fixed denominator:
    the server, which cannot count its contributors among the check-ins, divides each
    sum by the cohort its sampling targets (benchmark.protocol.server_divisor).
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
    """Users take part in fixed groups of `group_size`, as in Multi-RoundSecAgg; only group sums are identifiable.

    Groups are drawn at random, independent of the users' data: on a run's first
    round a permutation of the users, from the participation-decision stream, puts
    users perm[k g : (k + 1) g] in group k. The assignment is public (`groups`:
    each user's group index, once a run has drawn it). A group takes part when its
    first member was selected; then all its members contribute and check in.
    """

    name = "structured-participation"

    def __init__(self, group_size: int = 2) -> None:
        if int(group_size) != group_size or group_size < 1:
            raise BenchmarkError("structured-participation needs an integer group_size >= 1")
        self.group_size = int(group_size)
        self.groups: np.ndarray | None = None  # (n,) each user's group; drawn on a run's first round
        self.leaders: np.ndarray | None = None  # (n,) the member whose selection decides each user's group

    def public_parameters(self) -> dict:
        groups = {} if self.groups is None else {"groups": self.groups.tolist()}
        return {"group_size": self.group_size, **groups}

    def choose_participants(self, selected: np.ndarray, round_index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if round_index == 0 or self.groups is None or len(self.groups) != len(selected):
            order = rng.permutation(len(selected))
            self.groups = np.empty(len(selected), dtype=np.int64)
            self.groups[order] = np.arange(len(selected)) // self.group_size
            self.leaders = order[self.groups * self.group_size]
        members = selected[self.leaders]
        return members, members


class ModelRefresh(Defense):
    """Clients refuse a model older than `every` rounds, so the server must apply its aggregates at least that often.

    With `min_relative_change` m > 0 they also refuse a new model w unless ||w - w_last|| >= m ||w_last||
    for the model w_last they last accepted: the server cannot satisfy them with a negligible step.
    """

    name = "model-refresh"

    def __init__(self, every: int = 1, min_relative_change: float = 0.0) -> None:
        if int(every) != every or every < 1:
            raise BenchmarkError("model-refresh needs an integer every >= 1")
        number = isinstance(min_relative_change, (int, float)) and not isinstance(min_relative_change, bool)
        if not (number and 0 <= min_relative_change < float("inf")):
            raise BenchmarkError("model-refresh needs a finite min_relative_change >= 0")
        self.refresh_every, self.min_relative_change = int(every), float(min_relative_change)

    def public_parameters(self) -> dict:
        return {"model_refresh": self.refresh_every, "min_relative_change": self.min_relative_change}
