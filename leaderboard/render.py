"""Leaderboard tables as Markdown, LaTeX, CSV, JSON or a static sortable HTML page.

CSV and JSON go through pandas and keep raw numbers; the three human formats are
built here from one list of display cells, so no templating dependency is needed.
"""

import html
import json
import math
import numbers
from collections.abc import Callable, Sequence
from pathlib import PurePosixPath, PureWindowsPath
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from benchmark.errors import BenchmarkError
from leaderboard.summary import HORIZON, OPTIONAL_SCORES, RANKING_RULE, SUMMARY_SCORES, UNKNOWN_TIER

# The full leaderboard: the ranking's keys (tier, worst-cell attack success and utility drop), then means over
# cells of what the recovered updates reveal, utility, privacy accounting and overhead; every other score column
# stays in the results table. Wall-clock columns never show: a resumed run must print the same table as an
# uninterrupted one. Optional columns (written by newer scoring code) show only when the table has values.
LEADERBOARD_SCORES = (
    "attack_success_worst",
    "attributed_success",
    "anonymous_success",
    "horizon",
    "psnr_share_worst",
    "utility_drop_worst",
    "attack_success",
    "exact_column_rate",
    "psnr_recovered",
    "psnr_share",
    "label_share",
    "property_share",
    "test_accuracy",
    "test_accuracy_undefended",
    "utility_drop",
    "epsilon",
    "epsilon_level",
    "epsilon_utility",
    "epsilon_amplified",
    "overhead_checkins",
    "overhead_upload_bytes",
)
DEFAULT_COLUMNS = ("rank", "tier", "defense", *LEADERBOARD_SCORES, "tasks", "failed", "not_applicable")
OPTIONAL_COLUMNS = (*OPTIONAL_SCORES, *(f"{c}_worst" for c in OPTIONAL_SCORES), HORIZON, "epsilon_level")
# One line per column of the short tables (README, board), for their legends.
COLUMN_NOTES = {
    "rank": "order by the ranking rule (caption); complete defenses first",
    "tier": "utility tier: the upper 95% bound of the utility drop is <= 1, 3 or 5 accuracy points in every cell; "
            ">5 otherwise; ? unknown",
    "defense": "the defense (entry name, or the suite's label)",
    "attack_success_worst": "share of users whose update the strongest attack recovered, in the defense's worst cell",
    "attributed_success_worst": "of those users, the share recovered and named (same cell)",
    "anonymous_success_worst": "the share recovered without a name (same cell)",
    "horizon": "rounds per user the server kept the model frozen, where attack success is highest (worst cell)",
    "utility_drop_worst": "undefended minus defended test accuracy, same seed, a fraction; the cell with the largest "
                          "upper bound",
    "psnr_share_worst": "what inverting the recovered updates reveals, as a share of what each user's true update "
                        "reveals (PSNR; 0 = no more than the round sums, 1 = as much), in the cell where it is highest "
                        "among those where the true updates reveal more than the sums (each cell at its longest "
                        "horizon): group sums can give images away where no single update is recovered",
    "test_accuracy": "test accuracy of the defended model, mean over cells",
    "test_accuracy_undefended": "test accuracy without the defense, same seeds and cells",
    "epsilon": "headline epsilon (dp-accounting's PLD, replace-one adjacency, no amplification: this adversary sees "
               "who took part), mean over cells; \u2014 = no DP guarantee. A central-DP epsilon (dp-fedavg) binds "
               "whoever sees the trained models, not the server, which adds that noise after it has the sum",
    "epsilon_level": "what one epsilon protects: a user's data (user), one example (example) or one participation "
                     "(event); /-joined where its rows differ",
    "epsilon_utility": "the same epsilon for the utility task's training run, whose accuracy gives utility_drop "
                       "(its rounds, sampling and busiest client), mean over cells",
    "overhead_checkins": "padded check-ins that contribute nothing, per contribution",
    "tasks": "tasks that ran (ok)",
    "failed": "tasks that failed (counted, never dropped)",
    "not_applicable": "tasks where the defense has nothing to act on (such as DP-SGD on synthetic updates): no scores, "
                      "their rows say why",
}

SIGNIFICANT = 3
MISSING = "\u2014"
PLUS_MINUS = "\u00b1"
PAGE_TITLE = "DisaggBench leaderboard"

# A display cell: the text shown, and the raw number the HTML sorter orders by (None for text).
Cell = tuple[str, float | None]


def _format_number(value: float, decimals: int) -> str:
    if math.isinf(value):
        return "\u221e" if value > 0 else "-\u221e"
    return f"{round(value, decimals) + 0.0:.{decimals}f}"  # + 0.0 turns -0.0 into 0.0


def _decimals(*values: float) -> int:
    """Decimals that show SIGNIFICANT digits of the largest finite magnitude among `values`."""
    magnitude = max((abs(v) for v in values if math.isfinite(v)), default=0.0)
    if magnitude == 0:
        return 0
    return max(0, SIGNIFICANT - 1 - math.floor(math.log10(magnitude)))


def _is_missing(value: object) -> bool:
    return pd.api.types.is_scalar(value) and bool(pd.isna(value))


def _number_cell(value: float, low: float = math.nan, high: float = math.nan) -> Cell:
    """`mean [low, high]` with all three rounded to the same decimal place; the interval left out when NaN."""
    decimals = _decimals(value, low, high)
    text = _format_number(value, decimals)
    if not (math.isnan(low) or math.isnan(high)):
        text += f" [{_format_number(low, decimals)}, {_format_number(high, decimals)}]"
    return text, value


def _float(value: object) -> float:
    return math.nan if _is_missing(value) else float(value)


def _cell(value: object, low: object = math.nan, high: object = math.nan) -> Cell:
    if _is_missing(value):
        return MISSING, None
    if isinstance(value, bool | np.bool_):
        return str(value), None
    if isinstance(value, numbers.Integral):
        return str(int(value)), float(value)
    if isinstance(value, numbers.Real):
        return _number_cell(float(value), _float(low), _float(high))
    return " ".join(str(value).split()), None


def _display_rows(summary: pd.DataFrame, columns: Sequence[str]) -> list[list[Cell]]:
    """Cells built column by column, so integer columns stay integers (iterrows would upcast them)."""
    nan_column = [math.nan] * len(summary)

    def bound(column: str, side: str) -> list:
        return summary[f"{column}_{side}"].tolist() if f"{column}_{side}" in summary.columns else nan_column

    by_column = [
        [_cell(*values) for values in zip(summary[c].tolist(), bound(c, "low"), bound(c, "high"))]
        for c in columns
    ]
    return [list(row) for row in zip(*by_column)]


def _numeric(rows: list[list[Cell]], n_columns: int) -> list[bool]:
    """Per column: whether every non-missing cell is a number (for right alignment)."""
    return [all(row[i][1] is not None or row[i][0] == MISSING for row in rows) for i in range(n_columns)]


def _raw_columns(summary: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """Each requested column followed by its interval (`_low`, `_high`) and worst cell where the summary has them."""
    expanded = []
    for column in columns:
        expanded.append(column)
        expanded += [f"{column}{s}" for s in ("_low", "_high", "_cell") if f"{column}{s}" in summary.columns]
    return list(dict.fromkeys(expanded))


def _markdown(summary: pd.DataFrame, columns: Sequence[str]) -> str:
    rows = _display_rows(summary, columns)

    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("|", "\\|")

    numeric = _numeric(rows, len(columns))
    lines = [
        RANKING_RULE,
        "",
        "| " + " | ".join(escape(c) for c in columns) + " |",
        "| " + " | ".join("---:" if is_num else ":---" for is_num in numeric) + " |",
    ]
    lines += ["| " + " | ".join(escape(text) for text, _ in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    PLUS_MINUS: r"$\pm$",
    MISSING: "---",
    "\u221e": r"$\infty$",
}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(char, char) for char in text)


def _latex(summary: pd.DataFrame, columns: Sequence[str]) -> str:
    rows = _display_rows(summary, columns)
    align = "".join("r" if is_num else "l" for is_num in _numeric(rows, len(columns)))
    lines = [
        r"\begin{table}",
        r"\centering",
        rf"\caption{{{_latex_escape(RANKING_RULE)}}}",
        rf"\begin{{tabular}}{{{align}}}",
        r"\toprule",
        " & ".join(_latex_escape(c) for c in columns) + r" \\",
        r"\midrule",
        *(" & ".join(_latex_escape(text) for text, _ in row) + r" \\" for row in rows),
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def _csv(summary: pd.DataFrame, columns: Sequence[str]) -> str:
    return summary[_raw_columns(summary, columns)].to_csv(index=False)


def _json(summary: pd.DataFrame, columns: Sequence[str]) -> str:
    records = json.loads(summary[_raw_columns(summary, columns)].to_json(orient="records"))
    return json.dumps({"caption": RANKING_RULE, "rows": records}, indent=2, ensure_ascii=False) + "\n"


_SORTER = """
document.querySelectorAll("table.leaderboard").forEach(function (table) {
  var headers = table.tHead.rows[0].cells;
  function key(cell) {
    var raw = cell.getAttribute("data-value");
    if (raw !== null) { return {missing: false, number: Number(raw)}; }
    var text = cell.textContent.trim();
    if (text === "" || text === "\\u2014") { return {missing: true}; }
    var number = Number(text);
    return isNaN(number) ? {missing: false, text: text} : {missing: false, number: number};
  }
  Array.prototype.forEach.call(headers, function (header, column) {
    header.addEventListener("click", function () {
      var ascending = header.getAttribute("aria-sort") !== "ascending";
      Array.prototype.forEach.call(headers, function (h) { h.removeAttribute("aria-sort"); });
      header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = key(a.cells[column]), y = key(b.cells[column]);
        if (x.missing || y.missing) { return (x.missing ? 1 : 0) - (y.missing ? 1 : 0); }
        var order;
        if (x.number !== undefined && y.number !== undefined) {
          order = x.number < y.number ? -1 : x.number > y.number ? 1 : 0;
        } else {
          order = String(x.text !== undefined ? x.text : x.number)
            .localeCompare(String(y.text !== undefined ? y.text : y.number));
        }
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; }
table.leaderboard { border-collapse: collapse; }
table.leaderboard caption { caption-side: top; text-align: left; padding-bottom: 0.5em; }
table.leaderboard th, table.leaderboard td { padding: 0.25em 0.75em; border-bottom: 1px solid #ccc; }
table.leaderboard th { cursor: pointer; user-select: none; }
table.leaderboard th[aria-sort="ascending"]::after { content: " \\25B2"; }
table.leaderboard th[aria-sort="descending"]::after { content: " \\25BC"; }
table.leaderboard td.number { text-align: right; white-space: nowrap; }
figure img { max-width: 100%; }
"""


def _check_plot_path(path: str) -> None:
    """The page must work offline and when moved with its plots, so only relative file paths are allowed."""
    if urlsplit(path).scheme or PurePosixPath(path).is_absolute() or PureWindowsPath(path).is_absolute():
        raise BenchmarkError(f"plot path must be a relative file path, got {path!r}")


def _sort_value(value: float) -> str:
    return repr(value) if math.isfinite(value) else ("Infinity" if value > 0 else "-Infinity")


def _html(summary: pd.DataFrame, columns: Sequence[str], plots: Sequence[str]) -> str:
    for plot in plots:
        _check_plot_path(plot)
    esc = html.escape
    rows = _display_rows(summary, columns)
    body_rows = []
    for row in rows:
        cells = []
        for text, value in row:
            if value is None:
                cells.append(f"<td>{esc(text)}</td>")
            else:
                cells.append(f'<td class="number" data-value="{_sort_value(value)}">{esc(text)}</td>')
        body_rows.append("<tr>" + "".join(cells) + "</tr>")
    header = "".join(f'<th scope="col">{esc(c)}</th>' for c in columns)
    figures = [
        f'<figure><img src="{esc(plot)}" alt="{esc(plot)}"><figcaption>{esc(plot)}</figcaption></figure>'
        for plot in plots
    ]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f"<title>{esc(PAGE_TITLE)}</title>",
            f"<style>{_STYLE}</style>",
            "</head>",
            "<body>",
            f"<h1>{esc(PAGE_TITLE)}</h1>",
            '<table class="leaderboard">',
            f"<caption>{esc(RANKING_RULE)}</caption>",
            f"<thead><tr>{header}</tr></thead>",
            "<tbody>",
            *body_rows,
            "</tbody>",
            "</table>",
            *figures,
            f"<script>{_SORTER}</script>",
            "</body>",
            "</html>",
        ]
    ) + "\n"


BOARD_WIDTH = 120
BOARD_HEADER = ("rank", "tier", "defense", "success [95% CI]", "named/anon", "hzn", "inv", "drop pts [95% CI]",
                "epsilon", "overhead", "tasks")
BOARD_LEGEND = (
    "rank: ! = has failed tasks, ranked below every complete defense. tier: utility drop whose upper 95% bound is <= 1,",
    "  3 or 5 accuracy points in every cell (>5 otherwise, ? unknown); ranked by attack success within a tier.",
    "success: share of users whose update the strongest attack recovered, in the defense's worst cell, at the",
    "  horizon hzn (rounds per user the model stayed frozen) where it recovers most; named/anon: of those, named or not.",
    "  *: the true participant columns would recover more somewhere (attack_success_ceiling): that zero is the attack's.",
    "inv: what inverting the recovered updates reveals, as a share of what the true updates reveal (psnr_share: 0 = no",
    "  more than the round sums, 1 = as much; its worst cell): group sums can leak images where no update is recovered.",
    "drop pts: undefended minus defended test accuracy (same seed), accuracy points, cell with the largest upper bound.",
    "[95% CI]: bootstrap percentile interval over seeds, per cell. epsilon: PLD, replace-one, no amplification (the",
    "  adversary sees who took part), mean over cells, with what it protects: a user, an example or an event;",
    "  dp-fedavg's (central DP) binds those who see the models, not the server, which adds that noise itself.",
    "overhead: padded check-ins per contribution. tasks: ok / run, + those where the defense has nothing to act on",
    "  (n/a: no scores; their rows say why). Full table: --format csv, json, latex, html.",
)


def _fixed(value: object, decimals: int, scale: float = 1.0, sign: bool = False) -> str:
    if _is_missing(value):
        return MISSING
    number = float(value) * scale
    if math.isinf(number):
        return _format_number(number, 0)
    return f"{round(number, decimals) + 0.0:{'+' if sign else ''}.{decimals}f}"


def _interval(summary_row: pd.Series, column: str, decimals: int, scale: float = 1.0, sign: bool = False) -> str:
    text = _fixed(summary_row.get(column), decimals, scale, sign)
    low, high = summary_row.get(f"{column}_low"), summary_row.get(f"{column}_high")
    if text != MISSING and not (_is_missing(low) or _is_missing(high)):
        text += f" [{_fixed(low, decimals, scale, sign)}, {_fixed(high, decimals, scale, sign)}]"
    return text


def _compact(value: object) -> str:
    """Three significant digits in at most 7 characters."""
    if _is_missing(value):
        return MISSING
    number = float(value)
    if math.isfinite(number) and abs(number) >= 1e5:
        return f"{number:.2g}"
    return _format_number(number, _decimals(number))


# The board marks a success this far below what the true participants would give somewhere (attack_success_ceiling).
SHORTFALL = 0.05


def _success(row: pd.Series) -> str:
    """attack_success_worst with its interval; '*' after the value where the true participants would give more."""
    text = _interval(row, "attack_success_worst", 2)
    ceiling, success = row.get("attack_success_ceiling_worst"), row.get("attack_success_worst")
    if not (_is_missing(ceiling) or _is_missing(success)) and float(ceiling) > float(success) + SHORTFALL:
        value, _, rest = text.partition(" ")
        text = f"{value}*" + (f" {rest}" if rest else "")
    return text


def _epsilon(row: pd.Series) -> str:
    """The headline epsilon and its unit: 36.7 of one example and 36.7 of one user are different guarantees."""
    text, level = _compact(row.get("epsilon")), row.get("epsilon_level")
    return text if text == MISSING or _is_missing(level) else f"{text} {level}"


def _board_row(row: pd.Series) -> list[str]:
    complete = bool(row.get("complete", row.get("failed", 0) == 0))
    named = "/".join(_fixed(row.get(f"{c}_worst"), 2) for c in ("attributed_success", "anonymous_success"))
    horizon = row.get("horizon")
    return [
        f"{row['rank']}{'' if complete else '!'}",
        str(row.get("tier", UNKNOWN_TIER)),
        " ".join(str(row["defense"]).split()),
        _success(row),
        MISSING if named == f"{MISSING}/{MISSING}" else named,
        MISSING if _is_missing(horizon) else f"{float(horizon):g}",
        _fixed(row.get("psnr_share_worst"), 2),
        _interval(row, "utility_drop_worst", 1, scale=100, sign=True),
        _epsilon(row),
        _fixed(row.get("overhead_checkins"), 2),
        f"{int(row['tasks'])}/{int(row['tasks']) + int(row['failed'])}" + _inapplicable(row),
    ]


def _inapplicable(row: pd.Series) -> str:
    count = row.get("not_applicable", 0)
    return f" +{int(count)} n/a" if not _is_missing(count) and count else ""


def _board(summary: pd.DataFrame, columns: Sequence[str] = ()) -> str:
    """A plain-text board that fits BOARD_WIDTH columns: the ranking's keys, utility, epsilon, overhead.

    Separators shrink to one space, then the defense name is cut (with an ellipsis), until every line fits.
    """
    rows = [list(BOARD_HEADER)] + [_board_row(row) for _, row in summary.iterrows()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(BOARD_HEADER))]
    text_columns = {1, 2}
    for gap in ("  ", " "):
        if sum(widths) + len(gap) * (len(widths) - 1) <= BOARD_WIDTH:
            break
    over = sum(widths) + len(gap) * (len(widths) - 1) - BOARD_WIDTH
    if over > 0:
        widths[2] = max(len(BOARD_HEADER[2]), widths[2] - over)
        rows = [r[:2] + [r[2] if len(r[2]) <= widths[2] else r[2][: widths[2] - 1] + "\u2026"] + r[3:] for r in rows]
    lines = [
        gap.join(cell.ljust(w) if i in text_columns else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
        .rstrip()
        for r in rows
    ]
    zeros = summary.attrs.get("zeros", {}).get("utility_drop_worst", math.nan)
    baseline = [] if _is_missing(zeros) else [
        f"Baseline zeros (uploads nothing; computed, not run): success 0, drop {zeros * 100:+.1f} pts"
        " (undefended accuracy - chance)."]
    return "\n".join([*lines, "", *baseline, *BOARD_LEGEND]) + "\n"


_RENDERERS: dict[str, Callable[[pd.DataFrame, Sequence[str]], str]] = {
    "board": _board,
    "markdown": _markdown,
    "latex": _latex,
    "csv": _csv,
    "json": _json,
}

FORMATS = tuple(sorted([*_RENDERERS, "html"]))


def default_columns(summary: pd.DataFrame, candidates: Sequence[str] = DEFAULT_COLUMNS) -> list[str]:
    """The candidate columns the summary has, optional ones only where some defense has a value."""
    return [
        c for c in candidates
        if c in summary.columns and not (c in OPTIONAL_COLUMNS and summary[c].isna().all())
    ]


def cell_columns(cells: pd.DataFrame) -> list[str]:
    """The columns of a `summarize_cells` table worth showing: its keys and every score some cell has."""
    keys = ["defense", "cell", "seeds", "tasks", "failed", "not_applicable", HORIZON]
    scores = [c for c in SUMMARY_SCORES if c in cells.columns]
    return [c for c in keys + scores if c in cells.columns and cells[c].notna().any()]


def render(
    summary: pd.DataFrame,
    fmt: str,
    columns: Sequence[str] | None = None,
    plots: Sequence[str] = (),
) -> str:
    """The summary from `summarize` as one table in `fmt`; `plots` (relative image paths) are shown by html only.

    "board" is the compact text board (fixed columns); the other formats show `columns`, by default every
    leaderboard column the summary has.
    """
    if fmt not in FORMATS:
        raise BenchmarkError(f"unknown leaderboard format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "board":
        require = ["rank", "defense", "tasks", "failed"]
        missing = [c for c in require if c not in summary.columns]
        if missing:
            raise BenchmarkError(f"summary lacks board column(s): {', '.join(missing)}")
        return _board(summary)
    columns = default_columns(summary) if columns is None else list(columns)
    if not columns:
        raise BenchmarkError("no leaderboard columns to render")
    missing = [c for c in columns if c not in summary.columns]
    if missing:
        raise BenchmarkError(f"summary lacks leaderboard column(s): {', '.join(missing)}")
    if fmt == "html":
        return _html(summary, columns, plots)
    return _RENDERERS[fmt](summary, columns)
