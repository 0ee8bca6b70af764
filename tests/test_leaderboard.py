"""Leaderboard: per-cell bootstrap intervals, utility tiers and the ranking, every render format, the compact
board and the plots, on hand-built tables and on the committed entries."""

import io
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from benchmark.cli import main
from benchmark.columns import RESULT_COLUMNS, SCORE_COLUMNS, metric_range
from benchmark.errors import BenchmarkError
from leaderboard.plots import family_of, plot_recovery_vs_rounds, plot_success_vs_utility
from leaderboard.render import BOARD_WIDTH, default_columns, render
from leaderboard.submission import load_entries, results_frame
from leaderboard.summary import (
    CHANCE_ACCURACY,
    RANKING_RULE,
    SUMMARY_SCORES,
    summarize,
    summarize_cells,
    zeros_baseline,
)

NAN_WORD = re.compile(r"\bnan\b", re.IGNORECASE)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ENTRIES = Path(__file__).resolve().parents[1] / "leaderboard" / "entries"


def task(defense: str, seed: int, status: str = "ok", cell: str = "a", **scores: float) -> dict[str, object]:
    row: dict[str, object] = {
        "defense": defense,
        "suite": "tiny",
        "scenario": cell,
        "seed": seed,
        "n_users": 10,
        "n_rounds": 20,
        "window": 1,
        "participation": 0.5,
        "status": status,
    }
    row.update({score: math.nan for score in SCORE_COLUMNS})
    row.update({"test_accuracy": 0.9, "test_accuracy_undefended": 0.9, "attack_seconds": 1.0, "attack": "static",
                "lpips": "not computed: test", "utility_task": "test", "epsilon_level": "user", "epsilon_accounting": "test"})
    row.update(scores)
    return row


@pytest.fixture
def results() -> pd.DataFrame:
    """"none": 3 seeds in cell a, 2 in cell b, + a failed task; "dp_sgd": one seed; "all_fail": nothing ok."""
    rows = [
        task("none", 0, attack_success=0.9),
        task("none", 1, attack_success=0.8),
        task("none", 2, attack_success=0.7),
        task("none", 0, cell="b", attack_success=0.2),
        task("none", 1, cell="b", attack_success=0.4),
        task("none", 2, cell="b", status="failed: solver timeout", attack_success=0.0, test_accuracy=0.0),
        task("dp_sgd", 0, attack_success=0.1, test_accuracy=0.7, epsilon=8.0),
        task("dp_sgd", 0, cell="b", attack_success=0.3, test_accuracy=0.7, epsilon=4.0),
        task("all_fail", 0, status="failed: out of memory"),
    ]
    frame = pd.DataFrame(rows).reindex(columns=list(RESULT_COLUMNS))
    frame["unknown_extra"] = "ignored"
    return frame


@pytest.fixture
def summary(results: pd.DataFrame) -> pd.DataFrame:
    return summarize(results)


def row_of(table: pd.DataFrame, defense: str, cell: str | None = None) -> pd.Series:
    if cell is None:
        return table.set_index("defense").loc[defense]
    return table.set_index(["defense", "cell"]).loc[(defense, cell)]


def test_per_cell_means_and_bootstrap_intervals(results: pd.DataFrame) -> None:
    cells = summarize_cells(results)
    a = row_of(cells, "none", "a")
    assert a["attack_success"] == pytest.approx(0.8) and a["seeds"] == 3
    # With 2 or 3 seeds every value has a >= 1/27 chance of filling a resample, so the 95% percentile
    # interval of the bootstrap mean is exactly [min, max] of the seeds.
    assert (a["attack_success_low"], a["attack_success_high"]) == pytest.approx((0.7, 0.9))
    b = row_of(cells, "none", "b")
    assert b["attack_success"] == pytest.approx(0.3) and (b["tasks"], b["failed"], b["seeds"]) == (2, 1, 2)
    assert (b["attack_success_low"], b["attack_success_high"]) == pytest.approx((0.2, 0.4))
    dp = row_of(cells, "dp_sgd", "a")
    assert dp["attack_success"] == pytest.approx(0.1)
    assert math.isnan(dp["attack_success_low"]) and math.isnan(dp["attack_success_high"])  # one seed: no interval


def test_a_defense_is_the_mean_of_its_cells_and_its_worst_cell_never_pooled(summary: pd.DataFrame) -> None:
    none = row_of(summary, "none")
    assert none["attack_success"] == pytest.approx((0.8 + 0.3) / 2)  # pooled tasks would give 3.0 / 5 = 0.6
    assert none["attack_success_worst"] == pytest.approx(0.8) and none["attack_success_worst_cell"] == "a"
    assert (none["attack_success_worst_low"], none["attack_success_worst_high"]) == pytest.approx((0.7, 0.9))
    # The aggregate's interval resamples each cell's seeds on its own: inside [mean of lows, mean of highs].
    assert 0.45 - 1e-12 <= none["attack_success_low"] <= none["attack_success"] <= none["attack_success_high"] <= 0.65
    assert row_of(summary, "dp_sgd")["epsilon"] == pytest.approx(6.0)
    assert math.isnan(row_of(summary, "none")["epsilon"])


def test_failed_tasks_are_counted_marked_and_never_ranked_above_complete_defenses(summary: pd.DataFrame) -> None:
    counts = summary.set_index("defense")[["tasks", "failed", "complete"]].to_dict("index")
    assert counts == {
        "dp_sgd": {"tasks": 2, "failed": 0, "complete": True},
        "none": {"tasks": 5, "failed": 1, "complete": False},
        "all_fail": {"tasks": 0, "failed": 1, "complete": False},
    }
    assert summary["defense"].tolist() == ["dp_sgd", "none", "all_fail"]
    assert summary["rank"].tolist() == [1, 2, 3]
    assert math.isnan(row_of(summary, "all_fail")["attack_success"])
    board = render(summary, "board").splitlines()
    assert re.match(r"\s*2! ", next(line for line in board if " none " in line))
    assert re.match(r"\s*1 ", next(line for line in board if " dp_sgd " in line))


def test_a_defense_with_nothing_to_act_on_is_not_marked_failed_and_says_so() -> None:
    """DP-SGD on synthetic updates is `not applicable`: the board had marked it `!` (failed tasks) with `0/0`, and no
    table said why its row was empty."""
    rows = [task("none", s, attack_success=1.0) for s in (0, 1)]
    rows += [task("dp_sgd", s, status="not applicable: synthetic updates come from no local training") for s in (0, 1)]
    rows += [task("broken", 0, attack_success=0.5), task("broken", 1, status="failed: boom")]
    summary = summarize(pd.DataFrame(rows))
    counts = summary.set_index("defense")[["tasks", "failed", "not_applicable", "complete"]].to_dict("index")
    assert counts["dp_sgd"] == {"tasks": 0, "failed": 0, "not_applicable": 2, "complete": True}
    assert not counts["broken"]["complete"]
    assert summary["defense"].tolist() == ["none", "dp_sgd", "broken"]  # no scores: last of the complete
    board = render(summary, "board").splitlines()
    line = next(line for line in board if " dp_sgd " in line)
    assert re.match(r"\s*2 ", line) and line.rstrip().endswith("0/0 +2 n/a")
    assert re.match(r"\s*3! ", next(line for line in board if " broken " in line))
    assert any(line.startswith("| rank") and "not_applicable" in line for line in render(summary, "markdown").splitlines())


def test_a_complete_defense_outranks_a_better_one_with_a_failed_task() -> None:
    rows = [task("safe_but_failed", s, attack_success=0.0) for s in (0, 1)]
    rows += [task("safe_but_failed", 2, status="failed: boom"), *(task("leaky", s, attack_success=0.9) for s in (0, 1))]
    assert summarize(pd.DataFrame(rows))["defense"].tolist() == ["leaky", "safe_but_failed"]


def utility_rows(defense: str, success: float, drops: tuple[float, ...], undefended: float = 0.9,
                 cell: str = "a") -> list[dict]:
    return [task(defense, seed, cell=cell, attack_success=success, test_accuracy=undefended - drop,
                 test_accuracy_undefended=undefended) for seed, drop in enumerate(drops)]


def test_tiers_use_the_upper_bound_of_the_paired_drop_in_every_cell() -> None:
    rows = [
        *utility_rows("none", 1.0, (0.0, 0.0, 0.0)),
        *utility_rows("chance", 0.0, (0.8, 0.8, 0.8)),  # at chance accuracy: the attack learns nothing
        *utility_rows("zeros", 0.0, (0.8, 0.8, 0.8), cell="b"),
        *utility_rows("zeros", 0.0, (0.0, 0.0, 0.0)),
        *utility_rows("noisy", 0.5, (0.0, 0.02, 0.0)),  # point drop 0.7 points, upper bound 2 points
        *utility_rows("cheap", 0.3, (0.04, 0.05, 0.04)),
        *utility_rows("better", 0.6, (-0.01, 0.0, 0.005)),
    ]
    summary = summarize(pd.DataFrame(rows)).set_index("defense")
    assert summary["tier"].to_dict() == {"better": "<=1", "none": "<=1", "noisy": "<=3", "cheap": "<=5",
                                         "chance": ">5", "zeros": ">5"}
    assert summary.loc["noisy", "utility_drop_worst"] == pytest.approx(0.02 / 3)
    assert summary.loc["noisy", "utility_drop_bound"] == pytest.approx(0.02)
    assert summary.loc["zeros", "utility_drop_worst_cell"] == "b"
    ranked = summary.sort_values("rank").index.tolist()
    assert ranked == ["better", "none", "noisy", "cheap", "chance", "zeros"]
    # No defense whose drop may exceed 5 points sits in the top tier, or above one with no accuracy cost.
    assert (summary.loc[summary["tier"] == "<=1", "utility_drop_bound"] <= 0.01).all()
    assert summary.loc["chance", "rank"] > summary.loc["none", "rank"]


def test_an_unknown_drop_is_its_own_last_tier() -> None:
    rows = [task("known", s, attack_success=0.9) for s in (0, 1)]
    rows += [task("unknown", s, attack_success=0.0, test_accuracy_undefended=math.nan) for s in (0, 1)]
    rows += [task("half_known", s, attack_success=0.0, cell="b", test_accuracy_undefended=math.nan) for s in (0, 1)]
    rows += [task("half_known", s, attack_success=0.0) for s in (0, 1)]
    summary = summarize(pd.DataFrame(rows))
    assert summary[["defense", "tier"]].values.tolist() == [["known", "<=1"], ["half_known", "?"], ["unknown", "?"]]


def test_no_interval_leaves_its_range_even_for_wildly_spread_seeds() -> None:
    """The old t-interval over three seeds gave psnr_recovered 66 +- 433 and property_share 0.67 +- 1.03."""
    rng = np.random.default_rng(0)
    rows = []
    for defense in ("a", "b", "c"):
        for cell in ("x", "y", "z"):
            for seed in range(3):
                extreme = rng.choice([0.0, 1.0], size=4)
                rows.append(task(defense, seed, cell=cell, attack_success=extreme[0], property_share=extreme[1],
                                 psnr_recovered=100 * extreme[2], test_accuracy=extreme[3], ssim_recovered=-1 + 2 * extreme[3],
                                 update_cosine=rng.uniform(-1, 1)))
    check_ranges(summarize(pd.DataFrame(rows)))
    check_ranges(summarize_cells(pd.DataFrame(rows)))


def check_ranges(table: pd.DataFrame) -> None:
    checked = 0
    for column in SUMMARY_SCORES:
        for suffix in ("", "_worst"):
            if f"{column}{suffix}_low" not in table.columns:
                continue
            value, low, high = (table[f"{column}{suffix}{s}"] for s in ("", "_low", "_high"))
            lowest, highest = metric_range(column)
            defined = low.notna()
            assert (high.notna() == defined).all()
            assert (low[defined] >= lowest).all() and (high[defined] <= highest).all(), column
            assert (low[defined] <= value[defined] + 1e-12).all() and (value[defined] <= high[defined] + 1e-12).all()
            checked += int(defined.sum())
    assert checked > 0


def test_the_committed_entries_have_intervals_inside_every_range() -> None:
    table = results_frame(load_entries(ENTRIES))
    summary = summarize(table)
    check_ranges(summary)
    check_ranges(summarize_cells(table))
    assert (summary.loc[summary["tier"] == "<=1", "utility_drop_bound"] <= 0.01).all()
    assert set(summary["defense"]) == {path.stem for path in ENTRIES.glob("*.json")}


def test_intervals_are_seeded_and_independent_of_row_order(results: pd.DataFrame) -> None:
    first = summarize(results)
    shuffled = summarize(results.sample(frac=1.0, random_state=7))
    pd.testing.assert_frame_equal(first, shuffled)


def test_the_strongest_horizon_is_scored_per_cell_and_shown() -> None:
    rows = []
    for horizon, success in ((1, 0.2), (4, 0.9), (8, 0.6)):
        for seed in (0, 1):
            rows.append(task("none", seed, horizon=horizon, attack_success=success, attributed_success=success / 3,
                             anonymous_success=2 * success / 3))
            rows.append(task("none", seed, cell="b", horizon=horizon, attack_success=1 - success))
    summary = summarize(pd.DataFrame(rows))
    cells = summarize_cells(pd.DataFrame(rows))
    assert row_of(cells, "none", "a")["horizon"] == 4 and row_of(cells, "none", "b")["horizon"] == 1
    assert row_of(cells, "none", "a")["tasks"] == 6  # every horizon's task is counted
    none = row_of(summary, "none")
    assert none["attack_success_worst"] == pytest.approx(0.9) and none["horizon"] == 4
    assert none["attack_success"] == pytest.approx(0.85)  # (0.9 + 0.8) / 2: each cell at its own strongest horizon
    assert none["attributed_success_worst"] == pytest.approx(0.3)
    line = next(line for line in render(summary, "board").splitlines() if " none " in line)
    assert "0.30/0.60" in line and re.search(r"\s4\s", line)
    assert {"horizon", "attributed_success"} <= set(default_columns(summary))


def test_optional_columns_are_nan_and_hidden_when_the_table_lacks_them(summary: pd.DataFrame) -> None:
    for column in ("utility_drop", "attributed_success", "anonymous_success", "epsilon_rdp"):
        assert column in summary.columns
    assert math.isnan(row_of(summary, "none")["attributed_success"])
    assert row_of(summary, "dp_sgd")["utility_drop"] == pytest.approx(0.2)  # computed from the two accuracies
    shown = default_columns(summary)
    assert "horizon" not in shown and "attributed_success" not in shown and "utility_drop" in shown


def test_zeros_baseline_is_undefended_accuracy_minus_chance(results: pd.DataFrame) -> None:
    rows = utility_rows("none", 1.0, (0, 0), undefended=0.9) + utility_rows("none", 1.0, (0, 0), 0.6, cell="b")
    assert zeros_baseline(pd.DataFrame(rows)) == pytest.approx(
        {"attack_success": 0.0, "utility_drop": 0.75 - CHANCE_ACCURACY, "utility_drop_worst": 0.9 - CHANCE_ACCURACY})


def test_board_fits_120_columns_with_long_names_and_huge_numbers(summary: pd.DataFrame) -> None:
    rows = [task("d" * 70 + "(z=0.001)", s, attack_success=0.123, epsilon=1.5e9, overhead_checkins=12.5,
                 test_accuracy=0.05) for s in (0, 1)]
    rows += [task(f"short-{i}", s, attack_success=i / 10, test_accuracy=0.9 - i / 50) for i in range(12) for s in (0, 1)]
    for table in (summarize(pd.DataFrame(rows)), summary):
        board = render(table, "board")
        assert max(len(line) for line in board.splitlines()) <= BOARD_WIDTH
        assert board.splitlines()[0].split()[:3] == ["rank", "tier", "defense"]
        assert NAN_WORD.search(board) is None
    assert "\u2026" in render(summarize(pd.DataFrame(rows)), "board")  # the long name was cut


def test_board_through_the_cli(tmp_path: Path, capsys) -> None:
    rows = utility_rows("none", 1.0, (0.0, 0.0)) + utility_rows("dp-gaussian(z=1)", 0.0, (0.3, 0.2))
    (tmp_path / "tiny").mkdir()
    pd.DataFrame(rows).to_parquet(tmp_path / "tiny" / "results.parquet")
    assert main(["leaderboard", "--suite", "tiny", "--results", str(tmp_path), "--format", "board"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= BOARD_WIDTH
    assert lines[1].split()[:4] == ["1", "<=1", "none", "1.00"]
    assert lines[2].split()[:3] == ["2", ">5", "dp-gaussian(z=1)"] and "+25.0 [+20.0, +30.0]" in lines[2]
    assert "zeros (uploads nothing; computed, not run): success 0, drop +80.0 pts" in "\n".join(lines)


@pytest.mark.parametrize("fmt", ["board", "markdown", "latex", "csv", "json", "html"])
def test_every_format_contains_every_defense_and_no_nan(summary: pd.DataFrame, fmt: str) -> None:
    text = render(summary, fmt)
    for defense in ("none", "dp_sgd", "all_fail"):
        expected = defense.replace("_", r"\_") if fmt == "latex" else defense
        assert expected in text
    assert NAN_WORD.search(text) is None


def markdown_row(lines: list[str], columns: list[str], defense: str) -> dict[str, str]:
    line = next(line for line in lines if f"| {defense} |" in line)
    return dict(zip(columns, (cell.strip() for cell in line.strip("|").split("|")), strict=True))

def test_every_epsilon_shown_names_what_it_protects() -> None:
    rows = [task("dp-sgd(z=1)", s, attack_success=0.1, epsilon=40.0, epsilon_level="example") for s in (0, 1)]
    rows += [task("dp-fedavg(z=1)", s, attack_success=0.2, epsilon=40.0, epsilon_level="user") for s in (0, 1)]
    rows += [task("composed", s, cell=c, attack_success=0.3, epsilon=9.0, epsilon_level=level)
             for s in (0, 1) for c, level in (("a", "user"), ("b", "event/user"))]
    rows += [task("noisy-counts", s, attack_success=0.4, epsilon_analytics=26.0, epsilon_level="user") for s in (0, 1)]
    summary = summarize(pd.DataFrame(rows))
    levels = summary.set_index("defense")["epsilon_level"]
    assert levels[["dp-sgd(z=1)", "dp-fedavg(z=1)", "composed"]].tolist() == ["example", "user", "event/user"]
    assert pd.isna(levels["noisy-counts"])  # no headline epsilon: its counts' epsilon does not cover the sums
    board = {line.split()[2]: line for line in render(summary, "board").splitlines()[1:5]}
    assert "40.0 example" in board["dp-sgd(z=1)"] and "40.0 user" in board["dp-fedavg(z=1)"]
    assert "9.00 event/user" in board["composed"] and " user " not in board["noisy-counts"]
    columns = default_columns(summary)
    assert columns[columns.index("epsilon") + 1] == "epsilon_level"
    assert markdown_row(render(summary, "markdown").splitlines(), columns, "dp-sgd(z=1)")["epsilon_level"] == "example"



def test_markdown_cells(summary: pd.DataFrame) -> None:
    lines = render(summary, "markdown").splitlines()
    columns = default_columns(summary)
    assert lines[0] == RANKING_RULE
    assert lines[2] == "| " + " | ".join(columns) + " |"
    none = markdown_row(lines, columns, "none")
    assert none["rank"] == "2" and none["tier"] == "<=1"
    assert none["attack_success_worst"] == "0.800 [0.700, 0.900]"
    assert none["epsilon"] == "\u2014"
    assert none["tasks"] == "5" and none["failed"] == "1"
    dp = markdown_row(lines, columns, "dp_sgd")
    assert dp["attack_success_worst"] == "0.300"  # single seed: no interval
    assert dp["epsilon"] == "6.00"


def test_number_formatting_keeps_three_significant_digits() -> None:
    frame = pd.DataFrame(
        {
            "defense": ["a|b", "c"],
            "psnr_recovered": [23.456, math.inf],
            "psnr_recovered_low": [22.2, math.nan],
            "psnr_recovered_high": [24.71, math.nan],
            "attack_seconds": [1234.4, -0.0001],
        }
    )
    text = render(frame, "markdown", columns=["defense", "psnr_recovered", "attack_seconds"])
    assert "| a\\|b | 23.5 [22.2, 24.7] | 1234 |" in text
    assert "| c | \u221e | -0.000100 |" in text


def test_latex_is_escaped_booktabs(summary: pd.DataFrame) -> None:
    latex = render(summary, "latex")
    assert latex.startswith("\\begin{table}")
    assert "\\caption{" in latex and "exact\\_column\\_rate" in latex and "dp\\_sgd" in latex
    assert all(rule in latex for rule in ("\\toprule", "\\midrule", "\\bottomrule"))
    assert re.search(r"(?<!\\)_", latex) is None
    assert "0.800 [0.700, 0.900]" in latex


def test_csv_and_json_keep_raw_numbers_and_intervals(summary: pd.DataFrame) -> None:
    table = pd.read_csv(io.StringIO(render(summary, "csv")))
    assert list(table.columns[:3]) == ["rank", "tier", "defense"]
    none = table.set_index("defense").loc["none"]
    assert none["attack_success_worst_low"] == pytest.approx(0.7) and none["attack_success_worst_cell"] == "a"
    assert math.isnan(none["epsilon"])

    document = json.loads(render(summary, "json", columns=["defense", "epsilon"]))
    assert document["caption"] == RANKING_RULE
    assert document["rows"][0] == {"defense": "dp_sgd", "epsilon": 6.0, "epsilon_low": None, "epsilon_high": None}
    assert [row["defense"] for row in document["rows"]] == ["dp_sgd", "none", "all_fail"]


class StrictParser(HTMLParser):
    """Checks that every non-void tag closes in order; collects cells, scripts and image sources."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.cells: dict[str, list[str]] = {"th": [], "td": [], "caption": [], "script": []}
        self.images: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "img":
            self.images.append(attributes["src"] or "")
        if tag == "link" or (tag == "script" and "src" in attributes):
            self.links.append(tag)
        if tag not in self.VOID:
            self.stack.append(tag)
            if tag in self.cells:
                self.cells[tag].append("")

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        open_cells = [tag for tag in self.stack if tag in self.cells]
        if open_cells:
            self.cells[open_cells[-1]][-1] += data


def test_html_page_is_well_formed_sortable_and_escaped(summary: pd.DataFrame) -> None:
    summary = summary.assign(defense=summary["defense"].replace("none", "<b>none & co</b>"))
    plots = ["plots/success vs utility.png", "a&b.png"]
    page = render(summary, "html", plots=plots)
    parser = StrictParser()
    parser.feed(page)
    parser.close()
    assert parser.stack == []
    assert parser.cells["th"] == default_columns(summary)
    assert parser.cells["caption"] == [RANKING_RULE]
    assert "<b>none & co</b>" in parser.cells["td"] and "<b>none" not in page
    assert "0.800 [0.700, 0.900]" in parser.cells["td"]
    assert parser.images == plots
    assert parser.links == []  # self-contained: no external scripts or stylesheets
    assert "http" not in page
    (script,) = parser.cells["script"]
    assert "addEventListener" in script and "click" in script and ".sort(" in script


def test_render_rejects_bad_requests(summary: pd.DataFrame) -> None:
    with pytest.raises(BenchmarkError, match="unknown leaderboard format 'xlsx'"):
        render(summary, "xlsx")
    with pytest.raises(BenchmarkError, match="no_such_column"):
        render(summary, "markdown", columns=["defense", "no_such_column"])
    with pytest.raises(BenchmarkError, match="relative"):
        render(summary, "html", plots=["https://cdn.example/plot.png"])
    with pytest.raises(BenchmarkError, match="relative"):
        render(summary, "html", plots=["/tmp/plot.png"])
    with pytest.raises(BenchmarkError, match="tasks"):
        render(summary.drop(columns="tasks"), "board")


def test_summarize_rejects_bad_tables(results: pd.DataFrame) -> None:
    with pytest.raises(BenchmarkError, match="attack_success"):
        summarize(results.drop(columns="attack_success"))
    with pytest.raises(BenchmarkError):
        summarize(results.iloc[0:0])


def assert_png(path: object) -> None:
    with open(path, "rb") as handle:
        assert handle.read(8) == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_family_strips_the_strength() -> None:
    assert family_of("dp-gaussian(z=0.1)") == "dp-gaussian"
    assert family_of("dp-gaussian+rounded-counts") == "dp-gaussian+rounded-counts"


def test_success_vs_utility_plot_has_a_panel_per_family(tmp_path) -> None:
    rows = utility_rows("none", 1.0, (0.0, 0.0))
    for z, drop in (("0.1", 0.01), ("1", 0.2)):
        rows += utility_rows(f"dp-gaussian(z={z})", 0.5 - float(z) / 2, (drop, drop + 0.01))
    rows += utility_rows("rounded-counts(b=2)", 0.9, (0.0, 0.0))
    target = tmp_path / "success.png"
    assert plot_success_vs_utility(pd.DataFrame(rows), target) == target
    assert_png(target)
    assert [p.name for p in tmp_path.iterdir()] == ["success.png"]  # no temporary file left behind
    two_panels = matplotlib.image.imread(target).shape[1]
    plot_success_vs_utility(pd.DataFrame(utility_rows("none", 1.0, (0.0, 0.0))), tmp_path / "one.png")
    assert matplotlib.image.imread(tmp_path / "one.png").shape[1] < two_panels


def test_recovery_vs_rounds_plot(tmp_path) -> None:
    rows = [
        task("none", seed, n_rounds=rounds, window=window, exact_column_rate=rounds / 100 / window)
        for seed in (0, 1)
        for rounds in (10, 20, 40)
        for window in (1, 5)
    ]
    target = tmp_path / "recovery.png"
    assert plot_recovery_vs_rounds(pd.DataFrame(rows), target) == target
    assert_png(target)
    assert [p.name for p in tmp_path.iterdir()] == ["recovery.png"]


def test_plots_refuse_tables_without_ok_tasks(tmp_path) -> None:
    frame = pd.DataFrame([task("all_fail", 0, status="failed: boom", exact_column_rate=0.5)])
    with pytest.raises(BenchmarkError):
        plot_success_vs_utility(frame, tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_per_cell_table_through_the_cli(tmp_path: Path, capsys) -> None:
    rows = utility_rows("none", 1.0, (0.0, 0.0)) + utility_rows("none", 0.5, (0.0, 0.1), cell="b")
    (tmp_path / "tiny").mkdir()
    pd.DataFrame(rows).to_parquet(tmp_path / "tiny" / "results.parquet")
    args = ["leaderboard", "--suite", "tiny", "--results", str(tmp_path), "--cells"]
    assert main([*args, "--format", "csv"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert table[["defense", "cell", "seeds"]].values.tolist() == [["none", "a", 2], ["none", "b", 2]]
    assert table[["utility_drop", "utility_drop_low", "utility_drop_high"]].values.tolist()[1] == pytest.approx([0.05, 0.0, 0.1])
    assert main([*args, "--format", "board"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_the_board_marks_a_zero_the_true_participants_would_beat() -> None:
    """A success below what least squares from the true columns gives in some cell or horizon is the attack's
    shortfall, not the defense's strength: the board says so with '*', and only there."""
    rows = []
    for seed in (0, 1):
        rows += [task("shortfall", seed, cell="a", horizon=3, attack_success=0.0, attack_success_ceiling=0.0),
                 task("shortfall", seed, cell="a", horizon=12, attack_success=0.0, attack_success_ceiling=1.0),
                 task("noise", seed, cell="a", horizon=12, attack_success=0.0, attack_success_ceiling=0.0),
                 task("broken", seed, cell="a", horizon=12, attack_success=1.0, attack_success_ceiling=1.0)]
    summary = summarize(pd.DataFrame(rows))
    assert row_of(summary, "shortfall")["attack_success_ceiling_worst"] == 1.0  # its best horizon, not the strongest
    lines = {line.split()[2]: line.split()[3] for line in render(summary, "board").splitlines()[1:4]}
    assert lines == {"shortfall": "0.00*", "noise": "0.00", "broken": "1.00"}


def test_the_board_shows_what_inversion_reveals_beside_attack_success() -> None:
    """Fixed groups stop the attack from recovering any user's own update, yet inverting a group's sum can still give
    images away: the board shows that share next to attack success, so a low success does not read as safety."""
    rows = [task("groups", s, cell=c, attack_success=0.1, psnr_share=share, psnr_ceiling=ceiling, psnr_aggregate=7.0)
            for s in (0, 1) for c, share, ceiling in (("a", 0.6, 14.0), ("b", 0.2, 14.0), ("c", 1.0, 5.5))]
    rows += [task("dp", s, attack_success=0.0, psnr_share=0.0, psnr_ceiling=14.0, psnr_aggregate=7.0) for s in (0, 1)]
    board = render(summarize(pd.DataFrame(rows)), "board").splitlines()
    header = board[0]
    assert header.index("hzn") < header.index("inv") < header.index("drop pts")
    lines = {line.split()[2]: line for line in board[1:3]}
    column = slice(header.index("inv") - 1, header.index("inv") + len("inv"))  # right-aligned under a 3-letter head
    # the worst cell, not the mean; and not cell c, whose true updates invert worse than the sums (a share of 1 there
    # says only that the attack got as little as the true update gives)
    assert lines["groups"][column].strip() == "0.60" and lines["dp"][column].strip() == "0.00"
    assert max(len(line) for line in board) <= BOARD_WIDTH


def test_equal_attack_success_ties_whatever_the_float_rounding_and_the_drop_decides() -> None:
    # Both sum to 0.84 over five seeds, so both means are 0.168; summed in these orders one came out
    # 0.16799999999999998 and ranked first despite the larger utility drop.
    rows = [task("p", seed, attack_success=s, test_accuracy=0.898, test_accuracy_undefended=0.9)
            for seed, s in enumerate((0.28, 0.06, 0.04, 0.17, 0.29))]
    rows += [task("q", seed, attack_success=s, test_accuracy=0.891, test_accuracy_undefended=0.9)
             for seed, s in enumerate((0.23, 0.01, 0.24, 0.10, 0.26))]
    summary = summarize(pd.DataFrame(rows))
    assert summary["tier"].tolist() == ["<=1", "<=1"] and summary["defense"].tolist() == ["p", "q"]


def test_a_cell_without_an_upper_bound_on_its_drop_leaves_the_drop_unknown() -> None:
    rows = utility_rows("known", 0.5, (0.0, 0.0), cell="c1")
    rows += [task("known", s, cell="c2", attack_success=0.5, test_accuracy_undefended=math.nan) for s in (0, 1)]
    rows += utility_rows("one_seed", 0.5, (0.009,))  # one seed: a point, no 95% bound
    rows += utility_rows("one_of_five", 0.5, (0.009,))
    rows += [task("one_of_five", s, attack_success=0.5, test_accuracy_undefended=math.nan) for s in range(1, 5)]
    summary = summarize(pd.DataFrame(rows)).set_index("defense")
    assert (summary["tier"] == "?").all()
    assert summary[["utility_drop_worst", "utility_drop_worst_low", "utility_drop_worst_high"]].isna().all().all()
    assert summary["utility_drop_worst_cell"].isna().all()


def test_the_mean_over_cells_keeps_every_cell_in_each_bootstrap_replicate() -> None:
    # epsilon in cell a for every seed, in cell b for one seed of five: resamples that missed it had averaged cell
    # a alone, and the interval [0.0012, 5.0015] sat below its own point estimate 5.001.
    rows = [task("d", s, cell="a", attack_success=0.0, epsilon=0.001 * s) for s in range(5)]
    rows += [task("d", s, cell="b", attack_success=0.0, epsilon=10.0 if s == 0 else math.nan) for s in range(5)]
    row = summarize(pd.DataFrame(rows)).iloc[0]
    assert row["epsilon_low"] <= row["epsilon"] <= row["epsilon_high"]
    assert row["epsilon_low"] > 5.0 and row["epsilon_high"] < 5.003


def test_every_share_lies_in_zero_to_one() -> None:
    assert {metric_range(column) for column in SCORE_COLUMNS if column.endswith("_share")} == {(0.0, 1.0)}
