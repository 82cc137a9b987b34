"""genprm report on a synthesis run: a real SynthStore filled through its own API (solutions, labels,
critiques, the consensus filter's ``decide`` and the export's ``build_conversation``), checked as HTML
and in headless Chromium.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_html_report import browser, visible_samples  # noqa: F401  (the shared headless Chromium fixture)
from typer.testing import CliRunner

from genprm.cli.main import app
from genprm.report import write_report
from genprm.report.synthesis import is_synthesis_run, solution_rows
from genprm.synthesis.consensus import decide
from genprm.synthesis.conversation import ConversationError, ExportSettings, build_conversation
from genprm.synthesis.critique import TeacherCritique
from genprm.synthesis.problems import Problem
from genprm.synthesis.solutions import Selection, Solution
from genprm.synthesis.store import StageRecord, SynthStore
from genprm.verifier.records import CodeRun

HOSTILE = '<script>window.__pwned = true;</script><img src="x" onerror="window.__pwned = true">'
OUT = "[Code Output]\n\n```\n{}\n```\n"
CONCLUSION = (
    "</verify>\n### Final Conclusion\n\nAccording to the requirement, I need to return the **index of the paragraph "
    "where the earliest error occurs**. Otherwise, return the **index of -1 (which typically denotes \"not found\")**."
    "\n\nANSWER: \\boxed"
)


def section(k: int, code: str, output: str) -> str:
    head = "" if k == 1 else f"### Paragraph {k}\n<analyze>\n"
    return f"{head}Paragraph {k} checked.\n</analyze>\n<verify>\n```python\n{code}\n```\n" + OUT.format(output) + "Seen.\n"


GOOD_TEXT = "<think>\n### Paragraph 1\n<analyze>\n" + section(1, "x = 2 * 3\nprint(x)", "6") + "</verify>\n" + section(
    2, 'print(x + 1 < 8 and "a&b")', "a&b") + CONCLUSION
NO_CODE_TEXT = "<think>\n### Paragraph 1\n<analyze>\nIt is wrong.\n</analyze>\n<verify>\nNo code.\n" + CONCLUSION

# (problem id, steps, correct, labels, mc, critique index, critique text); None labels: not labelled yet.
CASES: list[tuple[str, list[str], bool, list[int] | None, list[float], int, str]] = [
    ("gsm-A", ["Step 1: 2 * 3 = 6.", f"Step 2: So 7 {HOSTILE}."], False, [1, 0], [0.75, 0.0], 2, GOOD_TEXT),
    ("gsm-B", ["Step 1: 5 + 5 = 10.", "Step 2: The answer is 10."], True, [1, 1], [1.0, 1.0], 1, GOOD_TEXT),
    ("gsm-C", ["Step 1: 4 - 1 = 2.", "Step 2: The answer is 2."], False, [0, 0], [0.0, 0.0], 1, NO_CODE_TEXT),
    ("gsm-D", ["Step 1: 9 / 3 = 3.", "Step 2: The answer is 3."], True, None, [], -1, GOOD_TEXT),
]


def critique(index: int, text: str) -> dict[str, Any]:
    runs = [CodeRun(1, "x = 2 * 3\nprint(x)", "6", 0.01), CodeRun(2, 'print(x + 1 < 8 and "a&b")', "a&b", 0.02)]
    return TeacherCritique(text, runs, [index] * 4, index, "eos", 321, 4.5).to_dict()


def build_run(folder: Path) -> Path:
    with SynthStore(folder) as store:
        store.set_stage("solutions", StageRecord("sel", {"num_paths": 4}, model="policy.gguf"))
        store.set_stage("label", StageRecord("lab", {"method": "ratio", "threshold": 0.8}))
        store.set_stage("critique", StageRecord("tea", {"index_samples": 4}, model="teacher.gguf"))
        store.set_stage("filter", StageRecord("fil", {"critiques": 1, "vote": "majority"}))
        store.set_stage("export", StageRecord("exp", {"after_first_error": "end"}))
        for position, (pid, steps, correct, labels, mc, index, text) in enumerate(CASES):
            problem = Problem(pid, f"Problem {pid}: what is it?", "6", position)
            solution = Solution(f"sol-{pid}", steps, correct, "0:0")
            store.put_problem(problem)
            store.put_selection(problem.key, "sel", Selection("medium", 0.5, 8, 8, 4, 1, [solution]))
            if labels is None:
                continue
            first = labels.index(0) if 0 in labels else -1
            store.put_labels(solution.key, "lab", {"problem": problem.key, "k": 8, "mc_s1": 0.5, "mc": mc,
                                                   "progress": mc, "labels": labels, "first_error": first})
            store.put_critique(solution.key, "tea", 0, critique(index, text))
            verdict = decide(first, len(steps), [index], "majority")
            store.put_verdict(solution.key, "fil", verdict.to_dict())
            if not verdict.kept:
                continue
            judged = labels[: first + 1] if first >= 0 else labels
            try:
                turns = (len(build_conversation(problem.problem, steps, text, judged, ExportSettings())) - 1) // 2
                store.put_export(solution.key, "exp", {"kept": True, "reason": "kept", "turns": turns})
            except ConversationError as exc:
                store.put_export(solution.key, "exp", {"kept": False, "reason": exc.reason, "detail": str(exc)})
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_run(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="module")
def page(run_dir: Path) -> Path:
    return write_report(run_dir)


def test_rows_join_every_stage(run_dir: Path) -> None:
    with SynthStore(run_dir) as store:
        rows = {row.problem_id: row for row in solution_rows(store)}
    assert {k: (r.status, r.reason, r.stage) for k, r in rows.items()} == {
        "gsm-A": ("kept", "exported", "export"),
        "gsm-B": ("dropped", "teacher-earlier", "filter"),
        "gsm-C": ("dropped", "no-code", "export"),
        "gsm-D": ("pending", "waiting for labels", "label"),
    }
    a = rows["gsm-A"]
    assert a.turns == 2 and (a.label_index, a.teacher_index) == (2, 2)
    assert [(s.mc, s.label, s.tone, s.labelled_error, s.teacher_error) for s in a.steps] == [
        (0.75, 1, "yes", False, False), (0.0, 0, "no", True, True)]
    assert [run.output for run in a.critiques[0].code] == ["6", "a&b"] and a.critiques[0].agrees


def test_page_is_the_synthesis_page_and_escapes_model_text(page: Path, run_dir: Path) -> None:
    assert page == run_dir / "report" / "index.html"
    html = page.read_text(encoding="utf-8")
    assert "genprm synthesis report" in html
    assert html.count('class="sample"') == 4
    assert "&lt;script&gt;window.__pwned = true;&lt;/script&gt;" in html
    assert "<script>window.__pwned" not in html and 'onerror="window' not in html
    assert "print(x + 1 &lt; 8 and &#34;a&amp;b&#34;)" in html
    assert "teacher.gguf" in html and "teacher-earlier" in html
    assert '<tr><td>dropped</td><td>2</td></tr>' in html


def test_limit_caps_solutions_not_counts(run_dir: Path, tmp_path: Path) -> None:
    html = write_report(run_dir, tmp_path / "small", limit=1).read_text(encoding="utf-8")
    assert html.count('class="sample"') == 1 and "Showing 1 of 4 solutions" in html
    assert '<tr><td>all</td><td>4</td></tr>' in html


def test_only_synthesis_folders_get_the_page(tmp_path: Path) -> None:
    assert not is_synthesis_run(tmp_path)
    assert list(tmp_path.iterdir()) == []  # no store was created by asking
    with SynthStore(tmp_path):
        pass
    assert not is_synthesis_run(tmp_path)  # a store without a solutions stage


def test_cli_writes_the_page(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["report", str(run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out / "index.html")


def test_filters_for_dropped_solutions_in_the_browser(browser: Any, page: Path) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(page.as_uri())
    assert browser.execute_script("return window.__pwned") is None
    assert visible_samples(browser) == {"gsm-A", "gsm-B", "gsm-C", "gsm-D"}
    assert browser.find_element(By.ID, "shown").text == "4 of 4 solutions shown"
    browser.find_element(By.ID, "dropped-only").click()
    assert visible_samples(browser) == {"gsm-B", "gsm-C"}
    Select(browser.find_element(By.ID, "reason")).select_by_value("no-code")
    assert visible_samples(browser) == {"gsm-C"}
    browser.find_element(By.ID, "dropped-only").click()
    Select(browser.find_element(By.ID, "reason")).select_by_value("")
    assert browser.find_element(By.ID, "shown").text == "4 of 4 solutions shown"

    critique = browser.find_element(By.CSS_SELECTOR, "#solution-0 details.critique")
    assert not critique.find_element(By.CSS_SELECTOR, "pre.code").is_displayed()  # collapsed until opened
    critique.find_element(By.TAG_NAME, "summary").click()
    assert critique.find_element(By.CSS_SELECTOR, "pre.output").text == "6"
    step = browser.find_element(By.CSS_SELECTOR, '#solution-0 [data-step="2"] .text')
    assert step.get_attribute("textContent").endswith(HOSTILE + ".")
    assert browser.find_elements(By.CSS_SELECTOR, "#solutions script, #solutions img") == []
    assert browser.execute_script("return window.__pwned") is None
