"""The HTML leaderboard with its plots: written by the CLI, then opened and sorted in headless Chromium."""

import math
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from benchmark.cli import main
from benchmark.columns import RESULT_COLUMNS, SCORE_COLUMNS
from leaderboard.render import DEFAULT_COLUMNS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")

# defense: (attack_success, test_accuracy, epsilon) per seed. The ranking (by attack_success) leaves
# test_accuracy neither ascending nor descending, so a sort by it must move rows.
DEFENSES = {
    "none": ((1.0, 0.80, math.nan), (0.9, 0.82, math.nan)),
    "dp-gaussian": ((0.1, 0.55, 8.0), (0.2, 0.57, 6.0)),
    "coarse-analytics": ((0.6, 0.90, math.nan), (0.5, 0.88, math.nan)),
    "participation-padding": ((0.4, 0.61, math.nan), (0.3, 0.60, math.nan)),
    "plug<in> & \"co\"": ((0.7, 0.30, 2.0), (0.7, 0.33, 2.5)),
}


def results_table() -> pd.DataFrame:
    rows = []
    for defense, seeds in DEFENSES.items():
        for seed, (rate, accuracy, epsilon) in enumerate(seeds):
            for n_users, window in ((10, 2), (5, 4)):
                row = {"defense": defense, "suite": "page", "scenario": f"u{n_users}", "seed": seed, "n_users": n_users,
                       "n_rounds": 20, "window": window, "participation": 0.3, "status": "ok"}
                row.update(dict.fromkeys(SCORE_COLUMNS, 0.5), attack="static", lpips="not computed: test", utility_task="test",
                           epsilon_level="user", epsilon_accounting="test")
                row.update(attack_success=rate * n_users / 10, test_accuracy=accuracy, epsilon=epsilon)
                rows.append(row)
    return pd.DataFrame(rows).reindex(columns=list(RESULT_COLUMNS))


def write_page(results: pd.DataFrame, root: Path) -> tuple[int, Path]:
    (root / "results" / "page").mkdir(parents=True)
    results.to_parquet(root / "results" / "page" / "results.parquet")
    page = root / "site" / "index.html"
    code = main(["leaderboard", "--suite", "page", "--results", str(root / "results"), "--format", "html", "--out", str(page)])
    return code, page


def test_the_page_links_both_plots_written_beside_it(tmp_path: Path) -> None:
    code, page = write_page(results_table(), tmp_path)
    assert code == 0
    names = ["index-success-vs-utility.png", "index-recovery-vs-rounds.png"]
    assert sorted(p.name for p in page.parent.iterdir()) == sorted([*names, "index.html"])
    for name in names:
        assert (page.parent / name).read_bytes().startswith(PNG_SIGNATURE)
        assert f'<img src="{name}"' in page.read_text()


def test_nothing_is_written_when_a_plot_cannot_be_drawn(tmp_path: Path, capsys) -> None:
    results = results_table()
    results["status"] = "failed: out of memory"
    code, page = write_page(results, tmp_path)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "to plot" in err
    assert not page.parent.exists()


def _browser_or_skip() -> tuple[str, str]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("headless browser test needs Debian's chromium and chromium-driver (.ci/run installs them)")
    return chromium, driver


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    chromium, driver = _browser_or_skip()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    try:
        yield chrome
    finally:
        chrome.quit()


def headers(browser: webdriver.Chrome) -> list[str]:
    return [th.text for th in browser.find_elements(By.CSS_SELECTOR, "table.leaderboard thead th")]


def column(browser: webdriver.Chrome, name: str) -> list[tuple[str, float | None]]:
    """(defense, sort value of column `name`) for every body row, in the order shown."""
    index = headers(browser).index(name) + 1
    defense = headers(browser).index("defense") + 1
    pairs = []
    for row in browser.find_elements(By.CSS_SELECTOR, "table.leaderboard tbody tr"):
        raw = row.find_element(By.CSS_SELECTOR, f"td:nth-child({index})").get_attribute("data-value")
        pairs.append((row.find_element(By.CSS_SELECTOR, f"td:nth-child({defense})").text, None if raw is None else float(raw)))
    return pairs


def header(browser: webdriver.Chrome, name: str):
    return browser.find_element(By.XPATH, f"//table[@class='leaderboard']/thead//th[text()='{name}']")


def test_chromium_opens_the_page_shows_every_defense_and_sorts_by_a_clicked_header(tmp_path: Path, browser) -> None:
    code, page = write_page(results_table(), tmp_path)
    assert code == 0
    browser.get(page.as_uri())
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    assert browser.execute_script("return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)") == [True, True]

    assert [h for h in headers(browser) if h in DEFAULT_COLUMNS] == headers(browser)
    cells = browser.find_elements(By.CSS_SELECTOR, f"table.leaderboard tbody td:nth-child({headers(browser).index('defense') + 1})")
    assert all(cell.is_displayed() for cell in cells)
    assert sorted(cell.text for cell in cells) == sorted(DEFENSES)

    ranked = column(browser, "test_accuracy")
    values = [value for _, value in ranked]
    assert values != sorted(values) and values != sorted(values, reverse=True)
    header(browser, "test_accuracy").click()
    ascending = column(browser, "test_accuracy")
    assert [v for _, v in ascending] == sorted(values) and sorted(ascending) == sorted(ranked)
    assert header(browser, "test_accuracy").get_attribute("aria-sort") == "ascending"
    header(browser, "test_accuracy").click()
    assert column(browser, "test_accuracy") == ascending[::-1]
    assert header(browser, "test_accuracy").get_attribute("aria-sort") == "descending"

    # Missing values (no epsilon without DP) stay last in both directions.
    for _ in range(2):
        header(browser, "epsilon").click()
        epsilons = [value for _, value in column(browser, "epsilon")]
        present = [v for v in epsilons if v is not None]
        assert epsilons[len(present):] == [None] * (len(epsilons) - len(present)) and len(present) == 2
    assert present == sorted(present, reverse=True)
    assert [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"] == []
