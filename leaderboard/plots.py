"""Leaderboard plots as PNG files, written atomically so a reader never sees half a file."""

import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.figure import Figure  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmark.errors import BenchmarkError  # noqa: E402
from leaderboard.summary import ok_results  # noqa: E402

RATE_LIMITS = (-0.05, 1.05)


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


def plot_success_vs_utility(results: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """One labelled point per defense: mean test accuracy (x) against mean attack success, worst case over the attacks (y), ok tasks only."""
    ok = ok_results(results, ("defense", "status", "test_accuracy", "attack_success"))
    means = ok.groupby("defense")[["test_accuracy", "attack_success"]].mean().dropna()
    if means.empty:
        raise BenchmarkError("no defense has both test_accuracy and attack_success to plot")
    figure, axes = plt.subplots(figsize=(6, 4.5))
    axes.scatter(means["test_accuracy"], means["attack_success"])
    for defense, row in means.iterrows():
        axes.annotate(
            str(defense),
            (row["test_accuracy"], row["attack_success"]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=8,
        )
    axes.set_xlabel("test accuracy (utility, higher is better)")
    axes.set_ylabel("attack success (worst case over the attacks)")
    axes.set_ylim(*RATE_LIMITS)
    axes.set_title("Attack success vs. utility")
    axes.grid(alpha=0.3)
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
    (R, C, H, W); at most `users` columns are drawn.
    """
    columns = min(users, len(true))
    rows = [("true input", true), ("from recovered update", recovered)]
    if ceiling is not None:
        rows.append(("from true update", ceiling))
    rows.append(("from a round's sum", aggregate))
    figure, axes = plt.subplots(len(rows), columns, figsize=(1.2 * columns, 1.3 * len(rows)), squeeze=False)
    for row, (label, images) in enumerate(rows):
        for column in range(columns):
            axis = axes[row][column]
            axis.set_xticks([])
            axis.set_yticks([])
            if column < len(images):
                image = images[column].transpose(1, 2, 0)
                axis.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
            if column == 0:
                axis.set_ylabel(label, fontsize=6)
    return _save_atomically(figure, path)
