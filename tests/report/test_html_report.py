"""genprm report: the page of a real run folder (a RunStore and processbench.json written through the
evaluation's own functions, from hand-made path trajectories), checked as HTML and in headless Chromium.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from genprm.cli.main import app
from genprm.errors import InputError
from genprm.evaluation.processbench import (
    ProcessBenchSample,
    compute_results,
    matrices_from_store,
    write_results,
)
from genprm.io import validate_record
from genprm.protocol import prompts
from genprm.report import write_report
from genprm.report.run import load_run
from genprm.report.samples import sample_views
from genprm.store import RunStore
from genprm.verifier.records import CodeRun, PathStep

N = 3
HOSTILE = '<script>window.__pwned = true;</script><img src="x" onerror="window.__pwned = true"> & done'
CODE = 'total = 3 * 4\nprint(total < 13 and "a&b")'

# (id, subset, label, rewards[step][path]); None is an unreadable verdict.
CASES = [
    ("gsm8k-A", "gsm8k", 1, [[0.9, 0.8, 0.7], [0.2, 0.1, 0.3], [0.7, 0.9, 0.8]]),  # predicted 1: right
    ("gsm8k-B", "gsm8k", -1, [[0.9, 0.95, 0.9], [0.8, 0.7, 0.9], [0.6, 0.2, 0.1]]),  # Maj@3 predicts 2: wrong
    ("math-C", "math", 0, [[0.9, 0.6, 0.8], [0.8, None, 0.7]]),  # predicted -1: wrong
    ("math-D", "math", -1, [[0.9, 0.9, 0.8], [0.6, 0.7, 0.9]]),  # predicted -1: right
]
WRONG = {"gsm8k-B", "math-C"}
STEPS = sum(len(rewards) for *_, rewards in CASES)


def turn(k: int, analysis: str, verdict: str) -> str:
    """A full assistant turn in the protocol's exact layout, with one executed code block."""
    return (
        prompts.ANALYZE_PREFIX.format(k=k + 1) + analysis + "\n" + prompts.ANALYZE_END
        + prompts.VERIFY_PREFIX + CODE + prompts.CODE_BLOCK_END + prompts.CODE_OUTPUT_BLOCK.format(output="a&b")
        + prompts.VERIFY_END + prompts.OUTPUT_PREFIX + prompts.VERDICT_CLOSE.format(verdict=verdict)
    )


def path_step(path: int, k: int, reward: float | None, analysis: str) -> dict:
    verdict = "?" if reward is None else ("Yes" if reward >= 0.5 else "No")
    return asdict(
        PathStep(
            path=path, text=turn(k, analysis, verdict), verdict=verdict, reward=reward, readable=reward is not None,
            p_yes=reward, p_no=None if reward is None else 1 - reward,
            unreadable_reason=None if reward is not None else "verdict token not found",
            code_runs=[CodeRun(round=1, code=CODE, output="a&b", seconds=0.01)],
        )
    )


def trajectories(sample_id: str, rewards: list[list[float | None]]) -> dict[int, list[dict]]:
    def analysis(k: int, j: int) -> str:
        return HOSTILE if (sample_id, k, j) == ("gsm8k-B", 0, 0) else f"Paragraph {k + 1} of {sample_id} checks out."

    return {j: [path_step(j, k, row[j], analysis(k, j)) for k, row in enumerate(rewards)] for j in range(N)}


def build_run(folder: Path, *, cases: list | None = None, bon: bool = True, refine: bool = True) -> Path:
    """A run folder as `genprm eval processbench` leaves it, plus bon.json / refine.json of the documented shape."""
    samples = []
    with RunStore(folder) as store:
        settings = store.register_settings("demo-model", {"n": N, "max_step_tokens": 128})
        for position, (sample_id, subset, label, rewards) in enumerate(CASES if cases is None else cases):
            record = {
                "id": sample_id, "problem": f"What is 3 * 4? ({sample_id}) <b>not bold</b>",
                "steps": [f"Step {k} of {sample_id}: 3 * 4 = 12 & 12 < 13." for k in range(len(rewards))],
                "label": label,
            }
            item = validate_record(record, position=position)
            samples.append(ProcessBenchSample(subset, label, item))
            store.put_paths(item.key, item.record, settings, trajectories(sample_id, rewards))
        matrices = matrices_from_store(store, samples, settings, N)
        write_results(store, compute_results(samples, matrices, model="demo-model", n=N, threshold=0.5,
                                             settings=settings))
    if bon:
        (folder / "bon.json").write_text(json.dumps(BON), encoding="utf-8")
    if refine:
        (folder / "refine.json").write_text(json.dumps(REFINE), encoding="utf-8")
    return folder


BON = {
    "benchmark": "bon", "model": "demo-model", "n": 2, "responses": 4, "problems": 3, "settings": "x",
    "methods": {
        "min/argmax": {"1": 0.33, "2": 0.5, "4": 0.67},
        "last/weighted": {"1": 0.33, "2": 0.4, "4": 0.6},
        "Pass@1": {"1": 0.33, "2": 0.33, "4": 0.33},
        "Maj@N": {"1": 0.33, "2": 0.4, "4": 0.5},
        "Pass@N": {"1": 0.33, "2": 0.6, "4": 0.9},
    },
    "agreement": {"matches": 11, "total": 12, "rate": 11 / 12},
    "samples": [],
}
REFINE = {
    "benchmark": "refine", "policy": "policy-model", "verifier": "demo-model", "rounds": 2, "problems": 3,
    "settings": "y", "accuracy": {"0": 0.3, "1": 0.5, "2": 0.6}, "refined": {"1": 2, "2": 1},
    "transitions": {"1": {"wrong_to_right": 1, "right_to_wrong": 0}, "2": {"wrong_to_right": 1, "right_to_wrong": 1}},
    "samples": [],
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def page(run_dir: Path) -> Path:
    return write_report(run_dir)


# -- the page as HTML ------------------------------------------------------------------------------


def test_page_has_every_section_and_plot(page: Path, run_dir: Path) -> None:
    assert page == run_dir / "report" / "index.html"
    html = page.read_text(encoding="utf-8")
    for section in ("processbench-table", "sweep-table", "bon-table", "refine-table", "plot-f1", "plot-bon"):
        assert f'id="{section}"' in html
    for png in ("f1_vs_n.png", "bon_vs_budget.png"):
        assert (page.parent / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'src="{png}"' in html
    assert html.count('class="sample"') == len(CASES)
    assert html.count("data-step=") == STEPS
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "the page must not load anything remote"


def test_model_text_is_escaped(page: Path) -> None:
    html = page.read_text(encoding="utf-8")
    assert "&lt;script&gt;window.__pwned = true;&lt;/script&gt;" in html
    assert "<script>window.__pwned" not in html and 'onerror="window' not in html
    assert html.count("<script") == 1, "only the page's own filter script"
    assert "&lt;b&gt;not bold&lt;/b&gt;" in html and "a&amp;b" in html


def test_steps_carry_verdicts_and_marks(run_dir: Path) -> None:
    results = load_run(run_dir).processbench
    assert results is not None
    with RunStore(run_dir) as store:
        views = {v.id: v for v in sample_views(store, results)}
    assert {v.id for v in views.values() if not v.correct} == WRONG
    b = views["gsm8k-B"]
    assert [s.tone for s in b.steps] == ["yes", "yes", "no"]
    assert [s.predicted for s in b.steps] == [False, False, True] and not any(s.labelled for s in b.steps)
    assert b.steps[0].paths[0].analysis.startswith("<script>")  # raw here; the template escapes it
    assert b.steps[0].paths[0].code[0].output == "a&b"
    c = views["math-C"]
    assert c.steps[0].labelled and c.prediction == -1
    assert [p.tone for p in c.steps[1].paths] == ["yes", "unknown", "yes"]
    assert c.steps[1].reward == pytest.approx(0.75)


def test_limit_keeps_the_first_samples_of_each_subset(run_dir: Path, tmp_path: Path) -> None:
    html = write_report(run_dir, tmp_path, limit=1).read_text(encoding="utf-8")
    assert html.count('class="sample"') == 2 and "Showing 2 of 4" in html


def test_missing_result_files_skip_their_sections(tmp_path: Path) -> None:
    run = build_run(tmp_path / "run", bon=False, refine=False)
    page = write_report(run)
    html = page.read_text(encoding="utf-8")
    assert 'id="processbench-table"' in html and 'id="bon"' not in html and 'id="refine"' not in html
    assert not (page.parent / "bon_vs_budget.png").exists()


def test_a_run_without_any_f1_has_no_f1_plot(tmp_path: Path) -> None:
    run = build_run(tmp_path / "run", cases=[c for c in CASES if c[2] != -1], bon=False, refine=False)
    page = write_report(run)
    html = page.read_text(encoding="utf-8")
    assert not (page.parent / "f1_vs_n.png").exists() and 'id="plot-f1"' not in html
    assert html.count('class="sample"') == 2


def test_bon_only_run_has_no_samples_section(tmp_path: Path) -> None:
    (tmp_path / "bon.json").write_text(json.dumps(BON), encoding="utf-8")
    html = write_report(tmp_path).read_text(encoding="utf-8")
    assert 'id="bon-table"' in html and 'id="samples"' not in html
    assert not (tmp_path / "store.sqlite").exists(), "the report must not create a store"


def test_a_run_without_results_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nothing to report"):
        write_report(tmp_path)
    with pytest.raises(InputError, match="no such run folder"):
        write_report(tmp_path / "absent")


def test_cli_prints_the_page_path(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    result = CliRunner().invoke(app, ["report", str(run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out / "index.html") and (out / "index.html").is_file()
    empty = CliRunner().invoke(app, ["report", str(tmp_path / "empty-run")])
    assert empty.exit_code == 2 and "no such run folder" in empty.output


# -- the page in headless Chromium ----------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path(shutil.which("chromedriver") or "/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.is_file() or not CHROMEDRIVER.is_file():
        pytest.skip("Chromium not installed: `bash scripts/setup` installs the Debian packages chromium and "
                    "chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium missing: pip install -e '.[dev]'")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)))
    yield driver
    driver.quit()


def visible_samples(driver: Any) -> set[str]:
    from selenium.webdriver.common.by import By

    titles = driver.find_elements(By.CSS_SELECTOR, ".sample h3 > span:first-child")
    return {t.text for t in titles if t.is_displayed()}


def test_page_renders_shows_steps_and_filters(browser: Any, page: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(page.as_uri())
    assert browser.execute_script("return document.readyState") == "complete"
    assert "genprm report" in browser.title
    steps = browser.find_elements(By.CSS_SELECTOR, "li.step")
    assert len(steps) == STEPS and all(s.is_displayed() for s in steps)
    assert visible_samples(browser) == {case[0] for case in CASES}
    assert browser.find_element(By.ID, "shown").text == "4 of 4 samples shown"

    browser.find_element(By.ID, "wrong-only").click()
    assert visible_samples(browser) == WRONG
    Select(browser.find_element(By.ID, "subset")).select_by_value("math")
    assert visible_samples(browser) == {"math-C"}
    browser.find_element(By.ID, "wrong-only").click()
    assert visible_samples(browser) == {"math-C", "math-D"}
    assert browser.find_element(By.ID, "shown").text == "2 of 4 samples shown"
    Select(browser.find_element(By.ID, "subset")).select_by_value("")
    assert len(visible_samples(browser)) == len(CASES)

    widths = browser.execute_script(
        "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)"
    )
    assert len(widths) == 2 and all(w > 0 for w in widths)


def test_untrusted_text_stays_text_in_the_browser(browser: Any, page: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.get(page.as_uri())
    assert browser.execute_script("return window.__pwned") is None
    path = browser.find_element(By.CSS_SELECTOR, '[data-step="0"] details.path')
    assert not path.find_element(By.CSS_SELECTOR, ".analysis").is_displayed()  # collapsed until opened
    path.find_element(By.TAG_NAME, "summary").click()
    analyses = browser.find_elements(By.CSS_SELECTOR, "details.path .analysis")
    hostile = [a for a in analyses if "__pwned" in a.get_attribute("textContent")]
    assert len(hostile) == 1 and hostile[0].get_attribute("textContent").startswith("<script>")
    assert browser.find_elements(By.CSS_SELECTOR, "#samples script, #samples img") == []
    assert browser.execute_script("return window.__pwned") is None


def test_percent_plots_span_0_to_100_even_for_a_flat_line_at_0() -> None:
    from genprm.report.plots import PERCENT_AXIS, LinePlot, render

    figure = render(LinePlot("t", "x", "F1 (%)", {"Avg": [(1.0, 0.0), (2.0, 0.0)]}))
    low, high = figure.axes[0].get_ylim()
    assert (low, high) == PERCENT_AXIS and low <= 0 and high >= 100
