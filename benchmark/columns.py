"""The columns of the results table, in order: the contract between scoring and the leaderboard."""

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

ID_COLUMNS = (
    "defense",
    "suite",
    "scenario",
    "seed",
    "n_users",
    "n_rounds",
    "horizon",  # rounds per user, n_rounds / n_users: the server's choice among the horizons a cell offers
    "window",
    "participation",
)

# Inference quantities come as _recovered (from the recovered updates), _ceiling (the same inference on
# the true updates), _aggregate (on round sums only: the floor) and a share, (recovered - floor) /
# (ceiling - floor). Rows also carry `lpips`, text: a number, or "not computed: <reason>".
# Every epsilon is at the level `epsilon_level` says (user, example, event; "—": no DP) and counted as
# `epsilon_accounting` says (accountant, adjacency, sampling); delta = benchmark.scoring.DELTA. A defense
# reports them all through its one `privacy` hook: defenses.accounting.Privacy.columns() writes these columns.
EPSILON_COLUMNS = (
    "epsilon",  # dp-accounting PLD, replace-one, no subsampling amplification (this adversary learns who took part)
    "epsilon_amplified",  # the same with amplification by Poisson sampling at the participation rate; <= epsilon
    "epsilon_rdp",  # opacus' RDP accountant for the headline account: a cross-check
    "epsilon_analytics",  # of noisy published counts (noisy-counts: max participations / scale)
)
EPSILON_TEXT_COLUMNS = ("epsilon_level", "epsilon_accounting")

SCORE_COLUMNS = (
    "attack_success",  # worst case over the attacks: users whose own update was recovered, named or not
    "attributed_success",  # the same with the right name (exact column); of the strongest attack
    "anonymous_success",  # recovered but not attributed to the user
    "attack_success_static",  # each attack's own attack_success; NaN where it did not run
    "attack_success_adaptive",
    "attack_success_anonymous",
    "attack_success_prefix",
    "attack_success_ceiling",  # the same for least-squares updates from the true participants: what any attack could reach
    "exact_column_rate",  # linkability: users whose participation column the attack names exactly
    "entry_accuracy",
    "update_cosine",
    "unique_rate",
    "psnr_recovered",
    "psnr_ceiling",
    "psnr_aggregate",
    "psnr_share",
    "ssim_recovered",
    "ssim_ceiling",
    "ssim_aggregate",
    "ssim_share",
    "label_accuracy_recovered",
    "label_accuracy_ceiling",
    "label_accuracy_aggregate",
    "label_share",
    "property_auc_recovered",
    "property_auc_ceiling",
    "property_auc_aggregate",
    "property_auc_chance",
    "property_share",
    "property_accuracy_recovered",
    "property_accuracy_ceiling",
    "property_accuracy_aggregate",
    "property_accuracy_chance",
    "property_accuracy_share",
    "test_accuracy",  # of the utility task (the suite's [utility] table) trained under the defense
    "test_accuracy_undefended",  # the same task and seed, no defense
    "utility_drop",  # test_accuracy_undefended - test_accuracy, paired by seed
    *EPSILON_COLUMNS,
    "epsilon_utility",  # `epsilon` of the utility task's training run (the run behind test_accuracy), same level
    "overhead_checkins",  # padded check-ins that contribute nothing, per contribution
    "overhead_upload_bytes",  # bytes uploaded per round by devices that contribute nothing
    "attack_seconds",
    "clock_limited",  # 1 where a clock safety net (time_limit, budget) stopped some attack work: rerun scores may differ
)

# Text columns: which attack was strongest (static, adaptive or anonymous), LPIPS as a number or "not computed: <reason>",
# the utility task trained (or why none was), and how the epsilons were counted.
# `inversion` says which recovered updates the inversion columns come from (all, or a seeded sample), or why none ran.
TEXT_COLUMNS = ("attack", "lpips", "inversion", "utility_task", *EPSILON_TEXT_COLUMNS)

RESULT_COLUMNS = ID_COLUMNS + SCORE_COLUMNS + TEXT_COLUMNS + ("status",)

# `status`: "ok"; "failed: <reason>" (counted against the defense); or "not applicable: <reason>" where the defense
# cannot act in the task's cell (defenses.base.inapplicable): every score NaN, neither a result nor a failure.
NOT_APPLICABLE = "not applicable"


def failed(status: "pd.Series") -> "pd.Series":
    """Which statuses are failures (not "ok", not "not applicable")."""
    return status.astype(str).str.startswith("failed")


def inapplicable(status: "pd.Series") -> "pd.Series":
    """Which statuses are "not applicable" (no scores; neither a result nor a failure)."""
    return status.astype(str).str.startswith(NOT_APPLICABLE)

# Columns that measure the machine, not the defense: kept in results, never ranked, hashed or compared.
WALL_CLOCK_COLUMNS = ("attack_seconds", "task_seconds", "clock_limited")


_UNBOUNDED = (0.0, math.inf)
_RANGES = {
    "utility_drop": (-1.0, 1.0),
    "update_cosine": (-1.0, 1.0),
    "ssim_recovered": (-1.0, 1.0),
    "ssim_ceiling": (-1.0, 1.0),
    "ssim_aggregate": (-1.0, 1.0),
}
_UNBOUNDED_PREFIXES = ("psnr_", "epsilon", "overhead_", "attack_seconds")


# How far past its range a stored score may lie and still be that score: floating-point rounding (a cosine of
# 1.0000000000000004), never a different value.
RANGE_SLACK = 1e-9


def metric_range(column: str) -> tuple[float, float]:
    """The values a score can take; a mean, and so every bootstrap percentile of means, stays inside it."""
    if column in _RANGES:
        return _RANGES[column]
    if column.endswith("_share"):  # (recovered - floor) / (ceiling - floor), clipped: psnr_share too
        return (0.0, 1.0)
    if column.startswith(_UNBOUNDED_PREFIXES):
        return _UNBOUNDED
    return (0.0, 1.0)


def status_problem(status: object) -> str | None:
    """Why `status` is not one a task writes ("ok", "failed: ...", "not applicable: ..."), or None."""
    if isinstance(status, str) and (status == "ok" or status.startswith(("failed", NOT_APPLICABLE))):
        return None
    return f"status must be ok, failed: ... or {NOT_APPLICABLE}: ..., got {status!r}"


def row_problem(row: dict, identity: dict | None = None) -> str | None:
    """Why a stored task row (as JSON holds it) is not one a task writes, or None: every value a scalar, its status
    one a task writes, its defense and scenario text, its seed an integer, every score null, a number inside its
    range, or "inf" where that is unbounded, and an "ok" row's attack_success given; with `identity` (the task's own
    ID columns), those equal too (a row edited or copied from another task is not this task's)."""
    for column, value in row.items():
        if isinstance(value, (dict, list)) or (isinstance(value, int) and not -2**63 <= value < 2**63):
            return f"{column} holds {str(value)[:40]}, not a value a task writes"
    problem = status_problem(row.get("status"))
    if problem is not None:
        return problem
    for column, kind in (("defense", str), ("scenario", str), ("seed", int)):
        value = row.get(column)
        if isinstance(value, bool) or not isinstance(value, kind):
            return f"{column} must be {'an integer' if kind is int else 'text'}, got {value!r}"
    for column, value in (identity or {}).items():
        if row.get(column) != value:
            return f"{column} is {row.get(column)!r}, but the task's is {value!r}"
    if row["status"] == "ok" and row.get("attack_success") is None:
        return "an ok row without attack_success"
    for column in SCORE_COLUMNS:
        value = row.get(column)
        low, high = metric_range(column)
        if value is None or (value == "inf" and high == math.inf):  # how rows store an infinite epsilon or PSNR
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{column} must be a number in [{low}, {high}] or null, got {value!r}"
        if not low - RANGE_SLACK <= value <= high + RANGE_SLACK:
            return f"{column} = {value!r} lies outside its range [{low}, {high}]"
    return None
