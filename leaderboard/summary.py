"""Per-cell and per-defense estimates with bootstrap intervals over seeds, utility tiers and the ranking.

A cell is one scenario of a suite (the `scenario` column). Seeds are the independent samples: every
interval is a seeded bootstrap percentile interval over a cell's seeds, and cells are never pooled
before an interval. A defense's summary over cells is the mean of its per-cell estimates (its interval
resamples the seeds of each cell independently), and the ranking uses its worst cell.
"""

import math
import warnings
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd

from benchmark.columns import RANGE_SLACK, SCORE_COLUMNS, WALL_CLOCK_COLUMNS, failed, inapplicable, metric_range, status_problem
from benchmark.errors import BenchmarkError

CONFIDENCE = 0.95
BOOTSTRAP_SAMPLES = 2000
# One fixed stream per (cell, number of seeds): the same table always gives the same intervals, and defenses
# run on the same seeds of a cell are resampled alike (paired).
BOOTSTRAP_SEED = 20211
TIE_DIGITS = 9  # attack success rounded to this many digits before ranking: shares equal but for float rounding tie
CHANCE_ACCURACY = 0.1  # 1 / 10 classes: every built-in dataset but femnist (62 classes)

# Scores the leaderboard uses when the results table has them (written by newer scoring code).
OPTIONAL_SCORES = (
    "utility_drop",  # undefended minus defended test accuracy, same seed and task, a fraction
    "attributed_success",  # users whose update was recovered and named
    "anonymous_success",  # users whose update was recovered but not named
    "epsilon_rdp",
    "epsilon_utility",
)
HORIZON = "horizon"  # rounds per user the server kept the model frozen; several rows per task, one per horizon

# Utility tiers by the paired utility drop (a fraction; the labels are accuracy points).
TIERS = ((0.01, "<=1"), (0.03, "<=3"), (0.05, "<=5"), (math.inf, ">5"))
UNKNOWN_TIER = "?"
TIER_ORDER = {label: i for i, (_, label) in enumerate(TIERS)} | {UNKNOWN_TIER: len(TIERS)}

# Where each score lives; anything not listed is a rate or share in [0, 1].
RANKING_RULE = (
    "Defenses are grouped into utility tiers by their paired utility drop (undefended minus defended test accuracy, "
    "same seed and cell): a defense is in tier <=1 (<=3, <=5 accuracy points) only if the upper 95% bound of its drop "
    "is <= 1 (3, 5) points in every cell, else >5; ? = drop unknown in some cell. Within a tier, ranked by attack success in the "
    "worst cell (share of users whose update the strongest attack recovered, at the horizon where it recovers most; "
    "lower = better), then by utility drop. A defense with failed tasks is marked and ranked below every complete one. "
    "Values are means over seeds per cell; a defense's value is the mean over its cells, except attack_success_worst "
    "and utility_drop_worst (its worst cell); [low, high] is a 95% bootstrap percentile interval over seeds "
    f"({BOOTSTRAP_SAMPLES} resamples, seeded), never pooled across cells. A *_share is (recovered - floor) / "
    "(ceiling - floor) per task, clipped to [0, 1]: 0 = what the round sums alone reveal, 1 = what each user's true "
    "update reveals."
)

_REQUIRED = ("defense", "seed", "status", "attack_success")


def tier_of(drop_bound: float) -> str:
    """The tier of an upper bound on the utility drop (a fraction); unknown when NaN.

    The limits allow 1e-9 of floating-point rounding (0.9 - 0.85 is 0.05000000000000004)."""
    if math.isnan(drop_bound):
        return UNKNOWN_TIER
    return next(label for limit, label in TIERS if drop_bound <= limit + 1e-9)


def _clip(scores: list[str], *arrays: np.ndarray) -> list[np.ndarray]:
    """Means and bounds clipped to each score's range: only floating-point rounding (a cosine of
    1.0000000000000004) can put a mean of in-range values outside it."""
    lowest, highest = np.array([metric_range(s) for s in scores]).T
    return [np.clip(array, lowest, highest) for array in arrays]


def require_columns(results: pd.DataFrame, columns: Iterable[str]) -> None:
    """Raise BenchmarkError naming every column of `columns` that `results` lacks."""
    missing = [column for column in columns if column not in results.columns]
    if missing:
        raise BenchmarkError(f"results table lacks column(s): {', '.join(missing)}")


# ID columns a task writes, with the values a cell can take: (low, high, low included)
_ID_RANGES = {"n_users": (2, math.inf, True), "n_rounds": (1, math.inf, True), "window": (1, math.inf, True),
              "participation": (0.0, 1.0, False)}


def check_table(results: pd.DataFrame, origin: str) -> None:
    """BenchmarkError naming the first problem of a stored results table a run cannot have written: a score column
    that is not numeric (it was read as NaN) or leaves its range, or a task (defense, cell, seed, horizon) twice.

    A category-typed column (as pandas may store one) is first turned, in place, into its plain values."""
    for column in [c for c in results.columns if isinstance(results[c].dtype, pd.CategoricalDtype)]:
        results[column] = np.asarray(results[column])
    require_columns(results, _REQUIRED)
    seeds = results["seed"]
    if not pd.api.types.is_integer_dtype(seeds) or pd.api.types.is_bool_dtype(seeds) or (seeds < 0).any():
        raise BenchmarkError(f"results table {origin}: column seed holds {seeds.dtype} values, not integers >= 0")
    for column in ("defense", "scenario"):
        if column in results.columns and not results[column].map(lambda v: isinstance(v, str) and v != "").all():
            raise BenchmarkError(f"results table {origin}: column {column} holds values that are not names")
    problems = [p for p in map(status_problem, results["status"]) if p is not None]
    if problems:
        raise BenchmarkError(f"results table {origin}: {problems[0]}")
    for column, (low, high, closed) in _ID_RANGES.items():  # what a cell can declare (benchmark/scenario.py)
        if column in results.columns:
            values = pd.to_numeric(results[column], errors="coerce")
            inside = values.between(low, high) & (values > low if not closed else True)
            if not inside.all():
                raise BenchmarkError(f"results table {origin}: column {column} holds {results[column][~inside].iloc[0]}, "
                                     f"not a number in {'[' if closed else '('}{low}, {high}]")
    if "horizon" in results.columns:
        horizons = pd.to_numeric(results["horizon"], errors="coerce")  # missing (NaN) is allowed, text is not
        if horizons.isna().sum() > results["horizon"].isna().sum() or (horizons <= 0).any():
            raise BenchmarkError(f"results table {origin}: column horizon holds values that are not positive numbers")
    for column in (c for c in SCORE_COLUMNS if c in results.columns):
        values = results[column]
        if values.dtype == object and values.map(lambda v: v is None or isinstance(v, float)).all():
            values = values.astype(float)  # a column that is all None: NaN
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            raise BenchmarkError(f"results table {origin}: column {column} holds {values.dtype} values, not numbers")
        low, high = metric_range(column)
        outside = values.notna() & ~values.between(low - RANGE_SLACK, high + RANGE_SLACK)
        if outside.any():
            raise BenchmarkError(f"results table {origin}: {column} = {float(values[outside].iloc[0])} lies outside [{low}, {high}]")
    keys = [c for c in ("defense", "scenario", "seed", "horizon") if c in results.columns]
    twice = results.duplicated(subset=keys)
    if twice.any():
        row = results.loc[twice].iloc[0]
        raise BenchmarkError(f"results table {origin}: the task ({', '.join(f'{k} {row[k]}' for k in keys)}) appears twice")


# The scores a summary carries (NaN where a table lacks one): every score but the wall-clock ones, and the optional.
# The horizon is a key (one value per cell, the strongest), never averaged, even if the contract lists it as a score.
SUMMARY_SCORES = tuple(
    c for c in dict.fromkeys([*SCORE_COLUMNS, *OPTIONAL_SCORES]) if c not in WALL_CLOCK_COLUMNS and c != HORIZON
)


def ok_results(results: pd.DataFrame, columns: Iterable[str] = _REQUIRED) -> pd.DataFrame:
    """The rows whose status is "ok", score columns as floats (missing ones NaN), `utility_drop` filled in.

    `utility_drop` is computed from the two accuracies of the same row where the table has no value.
    """
    require_columns(results, columns)
    ok = results.loc[results["status"].eq("ok")].copy()
    for column in [*SUMMARY_SCORES, *(c for c in SCORE_COLUMNS if c in WALL_CLOCK_COLUMNS)]:
        ok[column] = pd.to_numeric(ok[column], errors="coerce").astype(float) if column in ok else math.nan
    paired = ok["test_accuracy_undefended"] - ok["test_accuracy"]
    ok["utility_drop"] = ok["utility_drop"].fillna(paired)
    return ok


def _cells(frame: pd.DataFrame) -> pd.Series:
    return frame["scenario"].astype(str) if "scenario" in frame.columns else pd.Series("all", index=frame.index)


INFERENCE_SCORES = tuple(c for c in SUMMARY_SCORES if c.startswith(("psnr_", "ssim_", "label_", "property_")))


def strongest_horizon(ok: pd.DataFrame) -> pd.DataFrame:
    """Per (defense, cell), only the rows of the horizon where mean attack success over seeds is highest.

    Ties go to the shortest horizon. Without a horizon column (or with no horizon set) rows are kept as they are.
    Where that horizon ran no inversion (a suite with `invert_at = "longest-horizon"`), the inference scores
    come from the same seeds at the longest horizon that did.
    """
    kept = _strongest_rows(ok)
    if HORIZON not in ok.columns or ok[HORIZON].isna().all():
        return kept
    inference = [c for c in INFERENCE_SCORES if c in ok.columns]
    inverted = ok.assign(cell=_cells(ok), **{HORIZON: pd.to_numeric(ok[HORIZON], errors="coerce")})
    inverted = inverted.loc[inverted[inference].notna().any(axis=1)]
    keys = ["defense", "cell", "seed"]
    kept = kept.assign(cell=_cells(kept))
    missing = ~kept[inference].notna().any(axis=1)
    if inverted.empty or not missing.any():
        return kept.drop(columns="cell")
    longest = inverted.sort_values(HORIZON, kind="mergesort").drop_duplicates(keys, keep="last")[[*keys, *inference]]
    filled = kept.loc[missing].drop(columns=inference).merge(longest, on=keys, how="left")
    return pd.concat([kept.loc[~missing], filled], ignore_index=True).drop(columns="cell")


def _strongest_rows(ok: pd.DataFrame) -> pd.DataFrame:
    if HORIZON not in ok.columns or ok[HORIZON].isna().all():
        return ok.assign(**{HORIZON: math.nan})
    ok = ok.assign(cell=_cells(ok), **{HORIZON: pd.to_numeric(ok[HORIZON], errors="coerce")})
    means = ok.groupby(["defense", "cell", HORIZON], dropna=False)["attack_success"].mean().reset_index()
    means = means.sort_values(["defense", "cell", "attack_success", HORIZON], ascending=[True, True, False, True],
                              na_position="last", kind="mergesort")
    best = means.drop_duplicates(["defense", "cell"])[["defense", "cell", HORIZON]]
    kept = ok.merge(best, on=["defense", "cell", HORIZON], how="inner")
    return kept.drop(columns="cell")


def _generator(*key: object) -> np.random.Generator:
    return np.random.default_rng([BOOTSTRAP_SEED, zlib.crc32(repr(key).encode())])


def _replicates(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap means (BOOTSTRAP_SAMPLES x metrics) of a seeds x metrics array, seeds resampled with replacement."""
    picks = rng.integers(0, len(values), size=(BOOTSTRAP_SAMPLES, len(values)))
    with _quiet():
        return np.nanmean(values[picks], axis=1)


@contextmanager
def _quiet() -> Iterator[None]:
    """Silences numpy's "mean of empty slice" warning: an all-NaN score is NaN, as it should be."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _percentiles(replicates: np.ndarray, defined: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tail = 100 * (1 - CONFIDENCE) / 2
    with _quiet():
        low, high = np.nanpercentile(replicates, [tail, 100 - tail], axis=0)
    return np.where(defined, low, np.nan), np.where(defined, high, np.nan)


def _count_tasks(results: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    is_ok = results["status"].eq("ok")
    keys = [results[c].astype(str) if c == "scenario" else results[c] for c in by]
    return pd.DataFrame({"tasks": is_ok.groupby(keys).sum(), "failed": failed(results["status"]).groupby(keys).sum(),
                         "not_applicable": inapplicable(results["status"]).groupby(keys).sum()}).astype(int)


def _check(results: pd.DataFrame) -> None:
    require_columns(results, (*_REQUIRED, "scenario"))
    if results.empty:
        raise BenchmarkError("results table is empty")
    if results["defense"].isna().any() or results["seed"].isna().any():
        raise BenchmarkError("results table has rows without a defense or seed")


def _cell_estimates(results: pd.DataFrame) -> tuple[pd.DataFrame, dict[tuple[str, str], np.ndarray]]:
    """Per (defense, cell): seeds, horizon, and per score the mean over seeds with its interval; and each cell's
    bootstrap replicates of those means (for the aggregate over cells)."""
    scores = list(SUMMARY_SCORES)
    ok = strongest_horizon(ok_results(results))
    ok = ok.assign(cell=_cells(ok))
    rows, replicates = [], {}
    for (defense, cell), group in ok.groupby(["defense", "cell"], sort=True):
        per_seed = group.groupby("seed")[scores].mean()  # several rows of one seed (if any) are one sample
        values = per_seed.to_numpy(dtype=float)
        reps = _replicates(values, _generator(cell, len(values)))
        low, high = _percentiles(reps, np.sum(~np.isnan(values), axis=0) >= 2)
        with _quiet():
            means = np.nanmean(values, axis=0)
        means, low, high = _clip(scores, means, low, high)
        row = {"defense": defense, "cell": cell, "seeds": len(per_seed), HORIZON: group[HORIZON].iloc[0]}
        for i, score in enumerate(scores):
            row |= {score: means[i], f"{score}_low": low[i], f"{score}_high": high[i]}
        rows.append(row)
        replicates[(defense, cell)] = reps
    columns = ["defense", "cell", "seeds", HORIZON] + [f"{s}{x}" for s in scores for x in ("", "_low", "_high")]
    return pd.DataFrame(rows, columns=columns), replicates


def summarize_cells(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (defense, cell): `tasks`, `failed`, `not_applicable`, `seeds`, `horizon` (the attack's strongest, NaN when the
    table has none), and per score its mean over seeds with `<score>_low`, `<score>_high` (95% bootstrap percentile
    interval over seeds; NaN with fewer than two seeds)."""
    _check(results)
    cells, _ = _cell_estimates(results)
    counts = _count_tasks(results, ["defense", "scenario"]).rename_axis(["defense", "cell"]).reset_index()
    table = counts.merge(cells, on=["defense", "cell"], how="left")
    table["seeds"] = table["seeds"].fillna(0).astype(int)
    return table.sort_values(["defense", "cell"], kind="mergesort").reset_index(drop=True)


def _mean_over_cells(replicates: np.ndarray, cell_means: np.ndarray) -> np.ndarray:
    """Bootstrap replicates (samples x scores) of the mean over cells of each cell's mean, from each cell's own
    (cells x samples x scores): over the cells whose mean the point estimate averages, every one of them in every
    replicate (NaN where a resample drew none of a cell's scored seeds; nanmean had averaged the other cells
    alone there, an interval around another quantity)."""
    present = ~np.isnan(cell_means)[:, None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(present, replicates, 0.0).sum(axis=0) / present.sum(axis=0)
    means[(np.isnan(replicates) & present).any(axis=0)] = np.nan
    return means


def _worst(cells: pd.DataFrame, score: str, key: pd.Series) -> dict:
    """The cell where `key` is largest: its score, interval and name."""
    if key.isna().all():
        return {f"{score}_worst": math.nan, f"{score}_worst_low": math.nan, f"{score}_worst_high": math.nan,
                f"{score}_worst_cell": None}
    row = cells.loc[key.idxmax()]
    return {f"{score}_worst": row[score], f"{score}_worst_low": row[f"{score}_low"],
            f"{score}_worst_high": row[f"{score}_high"], f"{score}_worst_cell": row["cell"]}


def _revealing(cells: pd.DataFrame) -> pd.Series:
    """Each cell's psnr_share where inverting the true updates beats inverting the round sums (psnr_ceiling above
    psnr_aggregate), NaN elsewhere. Where the true updates reveal no more than the sums (weights the server designed
    to tell users apart invert to noise: 5.5 dB against 6.3 dB from the sums), a share of 1 only says that the
    attack got as little as the true update gives, so such a cell cannot be the one whose inversions reveal most.
    Tasks scored since 2026-12-04 hold NaN there already (benchmark.scoring.share); this keeps the 1.0 of entries
    scored before out as well."""
    if not len(cells) or not {"psnr_share", "psnr_ceiling", "psnr_aggregate"} <= set(cells.columns):
        return pd.Series(np.nan, index=cells.index, dtype=float)
    return cells["psnr_share"].where(cells["psnr_ceiling"] > cells["psnr_aggregate"])


def _ceilings_worst(ok: pd.DataFrame) -> pd.Series:
    """Per defense, the highest attack_success_ceiling over its cells and horizons (mean over seeds): where the true
    participants would give most. Above attack_success_worst, some zero is the attack's, not the defense's."""
    if "attack_success_ceiling" not in ok:  # tables written before the ceiling was scored
        return pd.Series(np.nan, index=pd.Index(ok["defense"].unique(), name="defense"))
    keys = ["defense", "scenario"] + ([HORIZON] if HORIZON in ok and ok[HORIZON].notna().any() else [])
    return ok.groupby(keys, dropna=False)["attack_success_ceiling"].mean().groupby(level="defense").max()


def epsilon_levels(ok: pd.DataFrame) -> pd.Series:
    """Per defense, what its headline epsilons protect (user, example or event; "/"-joined where its rows differ,
    as where a plugin reports a joined level), read from its rows with an epsilon; defenses without one are absent.

    An epsilon means nothing without its unit: dp-sgd's is one example's, dp-fedavg's one user's."""
    if "epsilon_level" not in ok.columns:
        return pd.Series(dtype=object)
    rated = ok.loc[ok["epsilon"].notna() & ok["epsilon_level"].notna()]
    return rated.groupby("defense")["epsilon_level"].agg(
        lambda levels: "/".join(sorted({part for level in levels for part in str(level).split("/")})))


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """One ranked row per defense.

    Columns: `rank`, `tier`, `defense`, `tasks` (ok), `failed`, `not_applicable`, `complete` (no failed task), `cells`; per score
    the mean of its per-cell means with `<score>_low`/`<score>_high` (bootstrap over seeds, each cell resampled on
    its own); `attack_success_worst` (+ `_low`, `_high`, `_cell`) and `horizon`: the cell where the attack
    succeeds most; `attack_success_ceiling_worst`: the highest attack_success_ceiling over cells and horizons;
    `utility_drop_worst` (+ `_low`, `_high`, `_cell`): the cell with the largest upper bound on the
    drop, which sets the tier (unknown, tier ?, if any cell lacks an upper bound: no drop, or one seed with one);
    `psnr_share_worst` (+ `_low`, `_high`, `_cell`): the cell whose inversions reveal most (_revealing);
    `epsilon_level`: what its epsilon protects (epsilon_levels). Defenses whose every task failed keep a row with NaN scores, ranked last.
    """
    _check(results)
    scores = list(SUMMARY_SCORES)
    cells, replicates = _cell_estimates(results)
    counts = _count_tasks(results, ["defense"])
    ok = ok_results(results)
    ceilings, levels = _ceilings_worst(ok), epsilon_levels(ok)
    rows = []
    for defense in pd.unique(results["defense"]):
        mine = cells[cells["defense"] == defense].reset_index(drop=True)
        row = {"defense": defense, "tasks": int(counts.loc[defense, "tasks"]),
               "failed": int(counts.loc[defense, "failed"]),
               "not_applicable": int(counts.loc[defense, "not_applicable"]), "cells": len(mine)}
        if len(mine):
            with _quiet():
                cell_means = mine[scores].to_numpy(dtype=float)
                means = np.nanmean(cell_means, axis=0)
                reps = _mean_over_cells(np.stack([replicates[(defense, c)] for c in mine["cell"]]), cell_means)
            defined = mine[[f"{s}_low" for s in scores]].notna().to_numpy().any(axis=0)
            means, low, high = _clip(scores, means, *_percentiles(reps, defined))
        else:
            means = low = high = np.full(len(scores), np.nan)
        for i, score in enumerate(scores):
            row |= {score: means[i], f"{score}_low": low[i], f"{score}_high": high[i]}
        success = mine["attack_success"] if len(mine) else pd.Series(dtype=float)
        row |= _worst(mine, "attack_success", success)
        worst = success.idxmax() if success.notna().any() else None
        for column in (HORIZON, "attributed_success", "anonymous_success"):
            row[column if column == HORIZON else f"{column}_worst"] = math.nan if worst is None else mine.loc[worst, column]
        row["attack_success_ceiling_worst"] = float(ceilings.get(defense, math.nan))
        row["epsilon_level"] = levels.get(defense, math.nan)
        row |= _worst(mine, "psnr_share", _revealing(mine))  # the cell whose inversions reveal most
        # a cell without an upper bound (one seed with a drop, or none) leaves the drop unknown: no worst cell, tier ?
        bound = mine["utility_drop_high"] if len(mine) else pd.Series(dtype=float)
        known = bool(len(bound)) and bool(bound.notna().all())
        row |= _worst(mine, "utility_drop", bound if known else bound * math.nan)
        row["utility_drop_bound"] = bound.max() if known else math.nan  # every cell
        row["tier"] = tier_of(float(row["utility_drop_bound"]))
        rows.append(row)
    summary = pd.DataFrame(rows)
    # complete: no task failed, and some task ran or was found not to apply (a defense that acts where these cells
    # have nothing to act on scores nothing, which is no failure: it ranks last among the complete, its scores NaN)
    summary["complete"] = summary["failed"].eq(0) & (summary["tasks"].gt(0) | summary["not_applicable"].gt(0))
    summary["_order"] = summary["tier"].map(TIER_ORDER)
    # equal shares of users are equal: 0.16799999999999998 and 0.168 (one sum of five seeds in two orders) tie, and
    # the utility drop decides
    summary["_success"] = summary["attack_success_worst"].round(TIE_DIGITS)
    summary = summary.sort_values(
        ["complete", "_order", "_success", "utility_drop_bound", "defense"],
        ascending=[False, True, True, True, True], na_position="last", kind="mergesort",
    ).drop(columns=["_order", "_success"])
    summary.insert(0, "rank", range(1, len(summary) + 1))
    front = ["rank", "tier", "defense", "tasks", "failed", "not_applicable", "complete", "cells"]
    summary = summary[front + [c for c in summary.columns if c not in front]].reset_index(drop=True)
    summary.attrs["zeros"] = zeros_baseline(results)  # the board prints it beside the ranking
    return summary


def zeros_baseline(results: pd.DataFrame, chance: float = CHANCE_ACCURACY) -> dict[str, float]:
    """The trivial defense that uploads zeros, computed from the table: attack success 0, utility drop the
    undefended accuracy minus chance (mean over cells of each cell's mean over seeds; worst cell as well)."""
    ok = ok_results(results, ("defense", "seed", "status"))
    per_cell = ok.assign(cell=_cells(ok)).groupby("cell")["test_accuracy_undefended"].mean().dropna() - chance
    if per_cell.empty:
        return {"attack_success": 0.0, "utility_drop": math.nan, "utility_drop_worst": math.nan}
    return {"attack_success": 0.0, "utility_drop": float(per_cell.mean()), "utility_drop_worst": float(per_cell.max())}
