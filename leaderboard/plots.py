"""Leaderboard plots as PNG files, written atomically so a reader never sees half a file."""

import math
import os
import re
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.figure import Figure  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmark.errors import BenchmarkError  # noqa: E402
from leaderboard.summary import ok_results, require_columns, summarize  # noqa: E402

RATE_LIMITS = (-0.05, 1.05)
_STRENGTH = re.compile(r"\([^()]*\)$")


def _save_atomically(figure: Figure, path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".png")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            figure.savefig(handle, format="png", dpi=150, bbox_inches="tight")
        os.chmod(temporary, 0o644)  # mkstemp makes it owner-only; the plot is meant to be published
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise
    finally:
        plt.close(figure)
    return target


def family_of(defense: str) -> str:
    """A defense label without its strength: "dp-gaussian(z=0.1)" -> "dp-gaussian"."""
    return _STRENGTH.sub("", str(defense)).strip() or str(defense)


def _errors(rows: pd.DataFrame, column: str, scale: float = 1.0) -> np.ndarray:
    """Error bar lengths below and above each point, 0 where the interval is undefined."""
    value = rows[column] * scale
    low = (value - rows[f"{column}_low"] * scale).fillna(0).clip(lower=0)
    high = (rows[f"{column}_high"] * scale - value).fillna(0).clip(lower=0)
    return np.vstack([low.to_numpy(), high.to_numpy()])


def frontier_points(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary's defenses that have both a worst-cell attack success and a utility drop (a suite without a
    utility task has none)."""
    return summary.dropna(subset=["attack_success_worst", "utility_drop_worst"])


def plot_success_vs_utility(results: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """One panel per defense family: its frontier over strengths, attack success (y) against utility drop in
    accuracy points (x), both in the defense's worst cell with 95% intervals, every entry labelled; and the
    trivial baselines: `none` (when the table has it) and a defense that uploads zeros (attack success 0,
    utility drop the undefended accuracy minus chance, computed from the table)."""
    require_columns(results, ("defense", "seed", "status", "attack_success"))
    summary = summarize(results)
    drawn = frontier_points(summary)
    if drawn.empty:
        raise BenchmarkError("no defense has both attack_success and a utility drop to plot")
    drawn = drawn.assign(family=drawn["defense"].map(family_of))
    families = list(dict.fromkeys(f for f in drawn["family"] if f != "none")) or ["none"]
    none = drawn[drawn["defense"] == "none"]
    zeros = summary.attrs["zeros"]
    columns = min(3, len(families))
    rows = math.ceil(len(families) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.4 * columns, 3.6 * rows), squeeze=False, layout="constrained")
    for axis, family in zip(axes.flat, families):
        members = drawn[drawn["family"] == family].sort_values("utility_drop_worst", kind="mergesort")
        axis.errorbar(members["utility_drop_worst"] * 100, members["attack_success_worst"],
                      xerr=_errors(members, "utility_drop_worst", 100), yerr=_errors(members, "attack_success_worst"),
                      marker="o", capsize=2, label=family)
        for _, row in members.iterrows():
            axis.annotate(str(row["defense"]), (row["utility_drop_worst"] * 100, row["attack_success_worst"]),
                          textcoords="offset points", xytext=(4, 4), fontsize=7)
        if len(none) and family != "none":
            axis.scatter(none["utility_drop_worst"] * 100, none["attack_success_worst"], marker="x", color="black",
                         label="none (no defense)")
        if not math.isnan(zeros["utility_drop_worst"]):
            axis.scatter([zeros["utility_drop_worst"] * 100], [0.0], marker="s", color="gray",
                         label="zeros (uploads nothing)")
        axis.set_title(family, fontsize=9)
        axis.set_ylim(*RATE_LIMITS)
        axis.set_xlabel("utility drop, worst cell (accuracy points)", fontsize=8)
        axis.set_ylabel("attack success, worst cell", fontsize=8)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=6, loc="center right")
    for axis in list(axes.flat)[len(families):]:
        axis.set_visible(False)
    figure.suptitle("Attack success vs. utility drop per defense family (lower left is better)", fontsize=10)
    return _save_atomically(figure, path)


def plot_recovery_vs_rounds(results: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Mean exact column rate against rounds per user (n_rounds / n_users), one line per window, ok tasks only."""
    ok = ok_results(results, ("status", "n_rounds", "n_users", "window", "exact_column_rate"))
    numeric = ok[["n_rounds", "n_users", "window"]].apply(pd.to_numeric, errors="coerce")
    ok["rounds_per_user"] = numeric["n_rounds"] / numeric["n_users"]
    ok["window"] = numeric["window"]
    curves = (
        ok.dropna(subset=["rounds_per_user", "window", "exact_column_rate"])
        .groupby(["window", "rounds_per_user"])["exact_column_rate"]
        .mean()
    )
    if curves.empty:
        raise BenchmarkError("no ok task has n_rounds, n_users, window and exact_column_rate to plot")
    figure, axes = plt.subplots(figsize=(6, 4.5))
    for window, curve in curves.groupby(level="window"):
        rounds = curve.index.get_level_values("rounds_per_user")
        axes.plot(rounds, curve.to_numpy(), marker="o", label=f"{window:g}")
    axes.set_xlabel("rounds per user (n_rounds / n_users)")
    axes.set_ylabel("mean exact column rate")
    axes.set_ylim(*RATE_LIMITS)
    axes.set_title("Recovery vs. observed rounds")
    axes.legend(title="window (rounds)")
    axes.grid(alpha=0.3)
    return _save_atomically(figure, path)


def plot_reconstructions(
    true: np.ndarray,
    recovered: np.ndarray,
    aggregate: np.ndarray,
    path: str | os.PathLike[str],
    ceiling: np.ndarray | None = None,
    users: int = 8,
) -> Path:
    """A grid per scenario: true inputs, inversions of the recovered updates, of the true updates (the
    oracle ceiling, when given) and of round sums.

    `true`, `recovered` and `ceiling` are (n, C, H, W) (first sample of each user), `aggregate`
    (R, C, H, W); at most `users` columns are drawn. The tiles go into one image in one axes: a figure of a
    subplot per tile took 0.5 s a task, drawn for every task a suite runs.
    """
    columns = min(users, len(true))
    rows = [("true input", true), ("from recovered update", recovered)]
    if ceiling is not None:
        rows.append(("from true update", ceiling))
    rows.append(("from a round's sum", aggregate))
    channels, height, width = true.shape[1:]
    gap = max(1, height // 8)
    canvas = np.ones((len(rows) * (height + gap) - gap, columns * (width + gap) - gap, channels))  # white between tiles
    for row, (_, images) in enumerate(rows):
        for column in range(min(columns, len(images))):
            top, left = row * (height + gap), column * (width + gap)
            canvas[top : top + height, left : left + width] = np.clip(images[column].transpose(1, 2, 0), 0.0, 1.0)
    figure, axes = plt.subplots(figsize=(1.2 * columns, 1.3 * len(rows)))
    axes.imshow(canvas[..., 0] if channels == 1 else canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes.set_xticks([])
    axes.set_yticks([row * (height + gap) + height / 2 for row in range(len(rows))], [label for label, _ in rows], fontsize=6)
    axes.tick_params(length=0)
    for side in axes.spines.values():
        side.set_visible(False)
    return _save_atomically(figure, path)
