"""Leaderboard: summary statistics, every render format, and the PNG plots, on hand-built results."""

import io
import json
import math
import re
from html.parser import HTMLParser

import matplotlib.image
import pandas as pd
import pytest

from benchmark.columns import RESULT_COLUMNS, SCORE_COLUMNS
from benchmark.errors import BenchmarkError
from leaderboard.plots import plot_recovery_vs_rounds, plot_success_vs_utility
from leaderboard.render import DEFAULT_COLUMNS, render
from leaderboard.summary import RANKING_RULE, summarize

T_975_DF2 = 4.302652729911275  # scipy.stats.t.ppf(0.975, 2), the 95% two-sided quantile for 3 seeds
NAN_WORD = re.compile(r"\bnan\b", re.IGNORECASE)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def task(defense: str, seed: int, status: str = "ok", **scores: float) -> dict[str, object]:
    row: dict[str, object] = {
        "defense": defense,
        "suite": "tiny",
        "scenario": f"s{seed}",
        "seed": seed,
        "n_users": 10,
        "n_rounds": 20,
        "window": 1,
        "participation": 0.5,
        "status": status,
    }
    row.update({score: math.nan for score in SCORE_COLUMNS})
    row.update({"test_accuracy": 0.9, "attack_seconds": 1.0, "attack": "static", "lpips": "not computed: test",
                "utility_task": "test", "epsilon_level": "user", "epsilon_accounting": "test"})
    row.update(scores)
    return row


@pytest.fixture
def results() -> pd.DataFrame:
    """"none": 3 seeds x 2 tasks + a failed one; "dp_sgd": one seed, epsilon set; "all_fail": nothing ok."""
    rows = [
        task("none", 0, attack_success=1.0),
        task("none", 0, attack_success=0.8),
        task("none", 1, attack_success=0.9),
        task("none", 1, attack_success=0.7),
        task("none", 2, attack_success=0.6),
        task("none", 2, attack_success=0.8),
        task("none", 2, status="failed: solver timeout", attack_success=0.0, test_accuracy=0.0),
        task("dp_sgd", 0, attack_success=0.1, test_accuracy=0.7, epsilon=8.0),
        task("dp_sgd", 0, attack_success=0.3, test_accuracy=0.7, epsilon=4.0),
        task("all_fail", 0, status="failed: out of memory"),
    ]
    frame = pd.DataFrame(rows)[list(RESULT_COLUMNS)]
    frame["unknown_extra"] = "ignored"
    return frame


@pytest.fixture
def summary(results: pd.DataFrame) -> pd.DataFrame:
    return summarize(results)


def row_of(summary: pd.DataFrame, defense: str) -> pd.Series:
    return summary.set_index("defense").loc[defense]


def test_means_and_ci_match_hand_computation(summary: pd.DataFrame) -> None:
    none = row_of(summary, "none")
    assert none["attack_success"] == pytest.approx(4.8 / 6)  # over tasks, not seed means
    # Seed means 0.9, 0.8, 0.7: sample sd 0.1, n = 3.
    assert none["attack_success_ci"] == pytest.approx(T_975_DF2 * 0.1 / math.sqrt(3))
    assert none["test_accuracy"] == pytest.approx(0.9)
    assert none["test_accuracy_ci"] == pytest.approx(0.0)
    assert math.isnan(none["epsilon"]) and math.isnan(none["epsilon_ci"])

    dp = row_of(summary, "dp_sgd")
    assert dp["attack_success"] == pytest.approx(0.2)
    assert dp["epsilon"] == pytest.approx(6.0)
    assert math.isnan(dp["attack_success_ci"])  # a single seed has no interval


def test_failed_rows_are_excluded_and_counted(summary: pd.DataFrame) -> None:
    counts = summary.set_index("defense")[["tasks", "failed"]].to_dict("index")
    assert counts == {
        "dp_sgd": {"tasks": 2, "failed": 0},
        "none": {"tasks": 6, "failed": 1},
        "all_fail": {"tasks": 0, "failed": 1},
    }
    assert math.isnan(row_of(summary, "all_fail")["attack_success"])


def test_columns_and_ranking(summary: pd.DataFrame) -> None:
    assert list(summary.columns[:4]) == ["rank", "defense", "tasks", "failed"]
    for score in SCORE_COLUMNS:
        assert score in summary.columns and f"{score}_ci" in summary.columns
    assert "unknown_extra" not in summary.columns and "seed" not in summary.columns
    assert summary["defense"].tolist() == ["dp_sgd", "none", "all_fail"]
    assert summary["rank"].tolist() == [1, 2, 3]


def test_ties_broken_by_test_accuracy() -> None:
    frame = pd.DataFrame(
        [
            task("low_utility", 0, attack_success=0.5, test_accuracy=0.6),
            task("high_utility", 0, attack_success=0.5, test_accuracy=0.8),
            task("leaky", 0, attack_success=0.9, test_accuracy=0.99),
        ]
    )
    assert summarize(frame)["defense"].tolist() == ["high_utility", "low_utility", "leaky"]


def test_summarize_rejects_bad_tables(results: pd.DataFrame) -> None:
    with pytest.raises(BenchmarkError, match="attack_success"):
        summarize(results.drop(columns="attack_success"))
    with pytest.raises(BenchmarkError):
        summarize(results.iloc[0:0])


@pytest.mark.parametrize("fmt", ["markdown", "latex", "csv", "json", "html"])
def test_every_format_contains_every_defense_and_no_nan(summary: pd.DataFrame, fmt: str) -> None:
    text = render(summary, fmt)
    for defense in ("none", "dp_sgd", "all_fail"):
        expected = defense.replace("_", r"\_") if fmt == "latex" else defense
        assert expected in text
    assert NAN_WORD.search(text) is None


def markdown_row(lines: list[str], defense: str) -> dict[str, str]:
    line = next(line for line in lines if f"| {defense} |" in line)
    return dict(zip(DEFAULT_COLUMNS, (cell.strip() for cell in line.strip("|").split("|")), strict=True))


def test_markdown_cells(summary: pd.DataFrame) -> None:
    lines = render(summary, "markdown").splitlines()
    assert lines[0] == RANKING_RULE
    assert lines[2] == "| " + " | ".join(DEFAULT_COLUMNS) + " |"
    none = markdown_row(lines, "none")
    assert none["rank"] == "2"
    assert none["attack_success"] == "0.800 \u00b1 0.248"
    assert none["epsilon"] == "\u2014"
    assert none["tasks"] == "6" and none["failed"] == "1"
    dp = markdown_row(lines, "dp_sgd")
    assert dp["attack_success"] == "0.200"  # single seed: no "± nan"
    assert dp["epsilon"] == "6.00"


def test_number_formatting_keeps_three_significant_digits() -> None:
    frame = pd.DataFrame(
        {
            "defense": ["a|b", "c"],
            "psnr_recovered": [23.456, math.inf],
            "psnr_recovered_ci": [1.2, math.nan],
            "attack_seconds": [1234.4, -0.0001],
        }
    )
    text = render(frame, "markdown", columns=["defense", "psnr_recovered", "attack_seconds"])
    assert "| a\\|b | 23.5 \u00b1 1.2 | 1234 |" in text
    assert "| c | \u221e | -0.000100 |" in text


def test_latex_is_escaped_booktabs(summary: pd.DataFrame) -> None:
    latex = render(summary, "latex")
    assert latex.startswith("\\begin{table}")
    assert "\\caption{" in latex and "exact\\_column\\_rate" in latex and "dp\\_sgd" in latex
    assert all(rule in latex for rule in ("\\toprule", "\\midrule", "\\bottomrule"))
    assert re.search(r"(?<!\\)_", latex) is None
    assert "0.800 $\\pm$ 0.248" in latex


def test_csv_and_json_keep_raw_numbers(summary: pd.DataFrame) -> None:
    table = pd.read_csv(io.StringIO(render(summary, "csv")))
    assert list(table.columns[:4]) == ["rank", "defense", "attack_success", "attack_success_ci"]
    none = table.set_index("defense").loc["none"]
    assert none["attack_success_ci"] == pytest.approx(T_975_DF2 * 0.1 / math.sqrt(3))
    assert math.isnan(none["epsilon"])

    document = json.loads(render(summary, "json", columns=["defense", "epsilon"]))
    assert document["caption"] == RANKING_RULE
    assert document["rows"] == [
        {"defense": "dp_sgd", "epsilon": 6.0, "epsilon_ci": None},
        {"defense": "none", "epsilon": None, "epsilon_ci": None},
        {"defense": "all_fail", "epsilon": None, "epsilon_ci": None},
    ]


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
    assert parser.cells["th"] == list(DEFAULT_COLUMNS)
    assert parser.cells["caption"] == [RANKING_RULE]
    assert "<b>none & co</b>" in parser.cells["td"] and "<b>none" not in page
    assert "0.800 \u00b1 0.248" in parser.cells["td"]
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


def assert_png(path: object) -> None:
    with open(path, "rb") as handle:
        assert handle.read(8) == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_success_vs_utility_plot(results: pd.DataFrame, tmp_path) -> None:
    target = tmp_path / "success.png"
    assert plot_success_vs_utility(results, target) == target
    assert_png(target)
    assert [p.name for p in tmp_path.iterdir()] == ["success.png"]  # no temporary file left behind


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
