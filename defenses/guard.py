"""Runs a defense's hooks and turns a failure or a malformed output into one line naming the hook."""

import math
from dataclasses import replace
from numbers import Integral, Real

import numpy as np

from benchmark.errors import BenchmarkError, TaskTimeout
from benchmark.observation import MAX_MAGNITUDE, Analytics, window_lengths
from defenses.accounting import LEVELS, NO_DP, Privacy
from defenses.base import Defense


def _integer(value: object, low: int, high: int = 10**9) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool) and low <= value <= high


def _number(value: object, low: float, high: float = math.inf) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and low <= value <= high


# The public parameters the adaptive attack reads (attacks/adaptive.py, attacks/attribution.py): what each must be.
READ_PARAMETERS = {
    "count_bucket": ("an integer in [1, 1e9]", lambda v: _integer(v, 1)),
    "count_noise_scale": ("a number in [0, 1e9]", lambda v: _number(v, 0.0, 1e9)),  # as noisy-counts' own cap
    "padding_rate": ("a number in [0, 1]", lambda v: _number(v, 0.0, 1.0)),
    "window_factor": ("an integer in [1, 1e9]", lambda v: _integer(v, 1)),
    "group_size": ("an integer in [1, 1e9]", lambda v: _integer(v, 1)),
    "groups": ("a list of integers in [0, 1e9]", lambda v: isinstance(v, (list, tuple)) and all(_integer(g, 0) for g in v)),
    "update_noise_std": ("a number >= 0", lambda v: _number(v, 0.0)),
    "aggregate_noise_std": ("a number >= 0", lambda v: _number(v, 0.0)),
    "example_noise_multiplier": ("a number >= 0", lambda v: _number(v, 0.0)),
    "model_refresh": ("an integer in [0, 1e9]", lambda v: _integer(v, 0)),
}


class GuardedDefense(Defense):
    """Wraps a defense: same behaviour, but every hook output is checked (shape, dtype, finiteness)."""

    def __init__(self, inner: Defense) -> None:
        self.inner = inner
        self.name = type(inner).__name__
        self.name = self._read("name", self.name)
        self.refresh_every = self._read("refresh_every", 0)
        if not isinstance(self.refresh_every, int) or isinstance(self.refresh_every, bool) or self.refresh_every < 0:
            raise BenchmarkError(f"defense {self.name!r}: refresh_every must be an integer >= 0")
        self.min_relative_change = self._read("min_relative_change", 0.0)
        if isinstance(self.min_relative_change, bool) or not (
                isinstance(self.min_relative_change, Real) and 0 <= self.min_relative_change < float("inf")):
            raise BenchmarkError(f"defense {self.name!r}: min_relative_change must be a finite number >= 0")

    def _read(self, attribute: str, default):
        """An attribute of the inner defense (a property is user code too)."""
        try:
            return getattr(self.inner, attribute, default)
        except (KeyboardInterrupt, TaskTimeout):  # the user's interrupt, the task's clock: not the defense's failure
            raise
        except BaseException as error:  # noqa: BLE001 - user code: SystemExit and bare BaseException included
            raise BenchmarkError(f"defense {self.name!r}: attribute {attribute} raised {type(error).__name__}: {error}") from None

    def _call(self, hook: str, *args):
        try:
            return getattr(self.inner, hook)(*args)
        except (BenchmarkError, KeyboardInterrupt, TaskTimeout):
            raise
        except BaseException as error:  # noqa: BLE001 - user code: report which hook failed, never a traceback or an exit
            raise BenchmarkError(f"defense {self.name!r}: hook {hook} raised {type(error).__name__}: {error}") from None

    def _fail(self, hook: str, problem: str) -> None:
        raise BenchmarkError(f"defense {self.name!r}: hook {hook} {problem}")

    def public_parameters(self) -> dict:
        parameters = self._call("public_parameters")
        if not isinstance(parameters, dict):
            self._fail("public_parameters", "must return a dict")
        for key, value in parameters.items():
            if not isinstance(key, str):
                self._fail("public_parameters", f"has the key {key!r}: keys are parameter names (text)")
            if isinstance(value, complex) or (isinstance(value, Real) and not math.isfinite(value)):
                self._fail("public_parameters", f"gives {key} = {value!r}: the attacker reads finite real numbers")
            if key in READ_PARAMETERS and not READ_PARAMETERS[key][1](value):
                self._fail("public_parameters", f"gives {key} = {value!r}: the adaptive attack reads it as {READ_PARAMETERS[key][0]}")
        return parameters

    def choose_participants(self, selected, round_index, rng):
        out = self._call("choose_participants", selected, round_index, rng)
        if not (isinstance(out, tuple) and len(out) == 2):
            self._fail("choose_participants", "must return a (contributing, checked_in) pair of masks")
        masks = tuple(np.asarray(mask) for mask in out)
        for mask in masks:
            if mask.shape != selected.shape or mask.dtype != bool:
                self._fail("choose_participants", f"must return boolean masks of shape {selected.shape}")
        if np.any(masks[0] & ~masks[1]):
            self._fail("choose_participants", "lets a user contribute without checking in (contributing must lie within checked_in)")
        return masks

    def local_update(self, model, x, y, scenario, rng):
        if type(self.inner).local_update is Defense.local_update:
            return None  # the base hook trains nothing: no model to check (the simulation's hot path)
        from benchmark.models import get_flat  # torch: only once a client trains

        before = get_flat(model)
        out = self._call("local_update", model, x, y, scenario, rng)
        if not bool((get_flat(model) == before).all()):
            self._fail("local_update", "changed the global model it was given")
        return None if out is None else self._checked("local_update", out, tuple(before.shape))

    def transform_update(self, update, rng):
        return self._checked("transform_update", self._call("transform_update", update, rng), update.shape)

    def padded_uploads(self, count, dim, rng):
        out = self._call("padded_uploads", count, dim, rng)
        if out is None:
            return None
        out = self._checked("padded_uploads", out, (count, dim))
        if count and np.abs(out).sum(axis=0).max() > MAX_MAGNITUDE:  # they are summed into the round's aggregate
            self._fail("padded_uploads", f"returned uploads whose sum lies beyond {MAX_MAGNITUDE:.0e} in magnitude")
        return out

    def transform_aggregate(self, aggregate, rng):
        return self._checked("transform_aggregate", self._call("transform_aggregate", aggregate, rng), aggregate.shape)

    def transform_step(self, aggregate, rng):
        return self._checked("transform_step", self._call("transform_step", aggregate, rng), aggregate.shape)

    def _checked(self, hook: str, value, shape: tuple) -> np.ndarray:
        out = np.asarray(value)
        if out.shape != shape or out.dtype.kind not in "biuf":
            self._fail(hook, f"must return a numeric array of shape {shape}, got {out.dtype} {out.shape}")
        out = out.astype(np.float64)  # a copy, and in float64 the magnitude check cannot overflow (float16 would)
        if not np.all(np.isfinite(out)):
            self._fail(hook, "returned NaN or infinite values")
        if out.size and np.abs(out).max() > MAX_MAGNITUDE:
            self._fail(hook, f"returned values beyond {MAX_MAGNITUDE:.0e} in magnitude, which the sums cannot carry")
        return out

    def transform_analytics(self, checked_in, window, rng) -> Analytics:
        out = self._call("transform_analytics", checked_in, window, rng)
        if not isinstance(out, Analytics):
            self._fail("transform_analytics", "must return defenses.base.Analytics")
        n_rounds, n_users = checked_in.shape
        # a window longer than the rounds is one window of them all (a fixed window passes the short validation
        # run); beyond 10^9 rounds it would overflow the window arithmetic below
        if not _integer(out.window, 1):
            self._fail("transform_analytics", f"must return a window of 1 to 10^9 rounds (an integer), got {out.window!r}")
        n_windows = -(-n_rounds // int(out.window))
        no_counts = np.zeros((n_users, n_windows), dtype=np.int64)  # None (nothing published) always passes
        counts = no_counts if out.counts is None else np.asarray(out.counts)
        if counts.shape != (n_users, n_windows) or not np.issubdtype(counts.dtype, np.integer) or counts.min(initial=0) < 0:
            self._fail("transform_analytics", f"must return non-negative integer counts of shape ({n_users}, {n_windows}) "
                                              f"or None for window {out.window}")
        if np.any(counts > window_lengths(n_rounds, int(out.window))[None, :]):
            self._fail("transform_analytics", f"counts a user more often in a window than the window's {int(out.window)} rounds")
        if out.totals is not None:
            totals = np.asarray(out.totals)
            if totals.shape != (n_rounds,) or not np.issubdtype(totals.dtype, np.integer) or totals.min(initial=0) < 0:
                self._fail("transform_analytics", f"must return non-negative integer totals of shape ({n_rounds},) or None")
            if totals.max(initial=0) > n_users:
                self._fail("transform_analytics", f"counts more participants in a round than the {n_users} users")
        return out

    def privacy(self, n_rounds, participation, max_participations, delta) -> Privacy:
        guarantee = self._call("privacy", n_rounds, participation, max_participations, delta)
        if not isinstance(guarantee, Privacy):
            self._fail("privacy", "must return defenses.accounting.Privacy")
        if not all(isinstance(value, Real) and not isinstance(value, bool) for value in guarantee.figures.values()):
            self._fail("privacy", "must report every epsilon as a number (NaN where not applicable)")
        if not (isinstance(guarantee.level, str) and isinstance(guarantee.accounting, str)):
            self._fail("privacy", "must give its level and accounting as text")
        figures = {key: float(value) for key, value in guarantee.figures.items()}
        if any(value < 0 for value in figures.values()):
            self._fail("privacy", "reports a negative epsilon")
        if math.isnan(figures["epsilon"]) and not (math.isnan(figures["epsilon_amplified"]) and math.isnan(figures["epsilon_rdp"])):
            self._fail("privacy", "reports epsilon_amplified or epsilon_rdp without epsilon (figures of the same account)")
        if figures["epsilon_amplified"] > figures["epsilon"] * (1 + 1e-9):  # amplification never costs privacy
            self._fail("privacy", f"reports epsilon_amplified {figures['epsilon_amplified']:g} above epsilon {figures['epsilon']:g}")
        if guarantee.level != NO_DP and not set(guarantee.level.split("/")) <= set(LEVELS):
            self._fail("privacy", f"level must be {', '.join(LEVELS)} (joined by '/') or {NO_DP}, not {guarantee.level!r}")
        if guarantee.level == NO_DP and not all(math.isnan(value) for value in figures.values()):
            self._fail("privacy", f"reports an epsilon without its level ({', '.join(LEVELS)})")
        return replace(guarantee, **figures)
