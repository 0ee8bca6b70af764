"""Per-defense means and seed-level confidence intervals over the results table."""

import math
from collections.abc import Iterable

import pandas as pd
from scipy import stats

from benchmark.columns import SCORE_COLUMNS
from benchmark.errors import BenchmarkError

CONFIDENCE = 0.95

RANKING_RULE = (
    "Ranked by attack_success ascending (the share of users whose participation column and own update "
    "the strongest attack, static or adaptive, recovered: lower = better defense), ties broken by "
    "test_accuracy descending; mean \u00b1 95% t-interval half-width over seeds. "
    "A *_share is (recovered - floor) / (ceiling - floor) per task, clipped to [0, 1]: 0 = what the round sums alone reveal, "
    "1 = what each user's true update reveals."
)

_REQUIRED = ("defense", "seed", "status", *SCORE_COLUMNS)


def require_columns(results: pd.DataFrame, columns: Iterable[str]) -> None:
    """Raise BenchmarkError naming every column of `columns` that `results` lacks."""
    missing = [column for column in columns if column not in results.columns]
    if missing:
        raise BenchmarkError(f"results table lacks column(s): {', '.join(missing)}")


def ok_results(results: pd.DataFrame, columns: Iterable[str] = _REQUIRED) -> pd.DataFrame:
    """The rows whose status is "ok", with score columns coerced to floats."""
    require_columns(results, columns)
    ok = results.loc[results["status"].eq("ok")].copy()
    scores = [column for column in SCORE_COLUMNS if column in ok.columns]
    ok[scores] = ok[scores].apply(pd.to_numeric, errors="coerce").astype(float)
    return ok


def _half_width(seed_means: pd.Series) -> float:
    """t-interval half-width over per-seed means; NaN with fewer than two seeds."""
    values = seed_means.dropna()
    n = len(values)
    if n < 2:
        return math.nan
    quantile = stats.t.ppf(0.5 + CONFIDENCE / 2, df=n - 1)
    return float(quantile * values.std(ddof=1) / math.sqrt(n))


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """One ranked row per defense: `tasks` (ok tasks the means are over), `failed`, `<score>`, `<score>_ci`.

    Means are over all ok tasks of a defense; the CI is over per-seed means, so seeds
    (not tasks, which share a seed's randomness) are the independent samples.
    Defenses whose every task failed keep a row with NaN scores, ranked last.
    """
    require_columns(results, _REQUIRED)
    if results.empty:
        raise BenchmarkError("results table is empty")
    if results["defense"].isna().any() or results["seed"].isna().any():
        raise BenchmarkError("results table has rows without a defense or seed")

    scores = list(SCORE_COLUMNS)
    defenses = pd.Index(results["defense"].unique(), name="defense")
    is_ok = results["status"].eq("ok")
    ok = ok_results(results)

    means = ok.groupby("defense")[scores].mean().reindex(defenses)
    seed_means = ok.groupby(["defense", "seed"])[scores].mean()
    half_widths = seed_means.groupby(level="defense").agg(_half_width).reindex(defenses)
    counts = pd.DataFrame(
        {
            "tasks": is_ok.groupby(results["defense"]).sum(),
            "failed": (~is_ok).groupby(results["defense"]).sum(),
        }
    ).reindex(defenses)

    summary = counts.astype(int)
    for score in scores:
        summary[score] = means[score]
        summary[f"{score}_ci"] = half_widths[score]
    summary = summary.reset_index().sort_values(
        ["attack_success", "test_accuracy", "defense"],
        ascending=[True, False, True],
        na_position="last",
        kind="mergesort",
    )
    summary.insert(0, "rank", range(1, len(summary) + 1))
    return summary.reset_index(drop=True)
