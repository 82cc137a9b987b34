"""The report page of a ``genprm synth`` run: every solution with its steps, MC scores, labels, the
teacher's critiques (code and outputs) and the consensus verdict, with a filter for dropped ones.

It reads the run through :class:`~genprm.synthesis.store.SynthStore`'s read API (``solution_views``
joins what every stage stored under the keys it last ran with) and never writes to the store. Static
HTML like the evaluation page (inline CSS and JavaScript, opens from disk); every text from a model or
the data is escaped by the template. Steps are numbered from 1 here, as the teacher's paragraphs are.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from jinja2 import DictLoader, Environment, StrictUndefined
from markupsafe import Markup

from genprm.report.templates import STYLE
from genprm.store.sqlite import STORE_FILE
from genprm.synthesis.store import STAGES, SolutionView, SynthStore

Status = Literal["kept", "dropped", "pending"]


def is_synthesis_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a synthesis run (its store has a solutions stage); never creates a store."""
    if not (Path(run_dir) / STORE_FILE).is_file():
        return False
    with SynthStore(run_dir) as store:
        return store.stage("solutions") is not None


@dataclass(frozen=True)
class StepRow:
    number: int
    text: str
    mc: float | None
    progress: float | None
    label: int | None
    tone: str
    labelled_error: bool
    teacher_error: bool


@dataclass(frozen=True)
class CodeRow:
    round: int
    code: str
    output: str
    seconds: float


@dataclass(frozen=True)
class CritiqueRow:
    number: int
    index: int | None
    samples: list[int | None]
    finish: str
    tokens: int
    seconds: float
    text: str
    code: list[CodeRow]
    agrees: bool


@dataclass(frozen=True)
class SolutionRow:
    key: str
    problem_id: str
    problem: str
    gold: str
    correct: bool
    mc_s1: float | None
    steps: list[StepRow]
    critiques: list[CritiqueRow]
    status: Status
    reason: str
    """``kept``, ``exported``, a drop reason, or what the solution waits for."""
    stage: str
    """The stage that decided the status (``filter``, ``export``) or that is still to run."""
    label_index: int | None
    teacher_index: int | None
    turns: int | None


def solution_rows(store: SynthStore) -> list[SolutionRow]:
    """One row per selected solution, in problem order."""
    return [_row(view) for view in store.solution_views()]


def _row(view: SolutionView) -> SolutionRow:
    labels = view.labels or {}
    verdict, export = view.verdict, view.export
    first = labels.get("first_error")
    teacher = verdict.get("teacher_index") if verdict else None
    mc, progress, marks = labels.get("mc") or [], labels.get("progress") or [], labels.get("labels") or []
    steps = [
        StepRow(
            number=k,
            text=text,
            mc=_at(mc, k - 1),
            progress=_at(progress, k - 1),
            label=_at(marks, k - 1),
            tone=_tone(_at(marks, k - 1), k - 1, first),
            labelled_error=first is not None and first == k - 1,
            teacher_error=teacher == k,
        )
        for k, text in enumerate(view.solution.steps, start=1)
    ]
    agreeing = set(verdict.get("agreeing", [])) if verdict else set()
    critiques = [_critique(number, value, number in agreeing) for number, value in sorted(view.critiques.items())]
    status, reason, stage = _status(view)
    return SolutionRow(
        key=view.solution.key, problem_id=view.problem.id, problem=view.problem.problem, gold=view.problem.gold,
        correct=view.solution.correct, mc_s1=view.mc_s1, steps=steps, critiques=critiques, status=status,
        reason=reason, stage=stage, label_index=verdict.get("label_index") if verdict else None,
        teacher_index=teacher, turns=export.get("turns") if export else None,
    )


def _at(values: list[Any], i: int) -> Any:
    return values[i] if i < len(values) else None


def _tone(label: int | None, i: int, first_error: int | None) -> str:
    """Green good, red bad, grey after the first error (the labels there carry no training signal)."""
    if label is None:
        return "absent"
    if first_error is not None and 0 <= first_error < i:
        return "absent"
    return "yes" if label else "no"


def _status(view: SolutionView) -> tuple[Status, str, str]:
    if view.labels is None:
        return "pending", "waiting for labels", "label"
    if view.verdict is None:
        return "pending", "waiting for the critiques and the filter", "filter"
    if not view.verdict.get("kept"):
        return "dropped", str(view.verdict.get("reason", "?")), "filter"
    if view.export is None:
        return "kept", "kept (not exported yet)", "export"
    if not view.export.get("kept"):
        return "dropped", str(view.export.get("reason", "?")), "export"
    return "kept", "exported", "export"


def _critique(number: int, value: dict[str, Any], agrees: bool) -> CritiqueRow:
    runs = [CodeRow(int(r.get("round", 0)), str(r.get("code", "")), str(r.get("output", "")),
                    float(r.get("seconds", 0.0))) for r in value.get("code_runs", [])]
    return CritiqueRow(
        number=number, index=value.get("index"), samples=list(value.get("index_samples", [])),
        finish=str(value.get("finish", "?")), tokens=int(value.get("generated_tokens", 0)),
        seconds=float(value.get("seconds", 0.0)), text=str(value.get("text", "")), code=runs, agrees=agrees,
    )


def write_synthesis_report(run_dir: str | Path, page: Path, *, limit: int | None = None) -> Path:
    """Write the synthesis page of ``run_dir`` to ``page`` (``genprm report`` passes ``RUN/report/index.html``).

    ``limit`` keeps at most that many solutions on the page (the counts always use all).
    """
    page.parent.mkdir(parents=True, exist_ok=True)
    with SynthStore(run_dir) as store:
        html = render_synthesis_page(store, limit=limit)
    tmp = page.with_suffix(".html.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(page)
    return page


def render_synthesis_page(store: SynthStore, *, limit: int | None = None) -> str:
    rows = solution_rows(store)
    shown = rows if limit is None else rows[:limit]
    stages = [(name, record) for name in STAGES if (record := store.stage(name)) is not None]
    counts = Counter(row.status for row in rows)
    reasons = Counter(row.reason for row in rows if row.status == "dropped")
    context = {
        "run_name": store.run_dir.resolve().name,
        "run_dir": str(store.run_dir.resolve()),
        "stages": stages,
        "counts": {status: counts.get(status, 0) for status in ("kept", "dropped", "pending")},
        "total": len(rows),
        "reasons": sorted(reasons.items(), key=lambda item: (-item[1], item[0])),
        "rows": shown,
        "style": Markup(STYLE + EXTRA_STYLE),
        "script": Markup(SCRIPT),
    }
    return _environment().get_template("page").render(**context)


def _score(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _index(value: int | None) -> str:
    """A 1-based earliest-error index as words."""
    if value is None:
        return "none agreed"
    return "no error" if value < 0 else f"step {value}"


def _samples(values: list[int | None]) -> str:
    return ", ".join("?" if v is None else str(v) for v in values) or "none"


@cache
def _environment() -> Environment:
    env = Environment(loader=DictLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined, trim_blocks=True,
                      lstrip_blocks=True)
    env.filters.update(score=_score, index=_index, samples=_samples)
    return env


EXTRA_STYLE = """
.badge.pending { background: var(--grey-bg); color: var(--grey); }
.badge.kept { background: var(--yes-bg); color: var(--yes); }
.badge.dropped { background: var(--no-bg); color: var(--no); }
.step.labelled, .step.teacher { outline: 2px dashed var(--mark); outline-offset: 1px; }
"""

SCRIPT = """
(function () {
  "use strict";
  var droppedOnly = document.getElementById("dropped-only");
  var reason = document.getElementById("reason");
  var shown = document.getElementById("shown");
  var rows = Array.prototype.slice.call(document.querySelectorAll(".sample"));
  function apply() {
    var visible = 0;
    rows.forEach(function (row) {
      var hide = (droppedOnly.checked && row.dataset.status !== "dropped")
        || (reason.value !== "" && row.dataset.reason !== reason.value);
      row.hidden = hide;
      if (!hide) { visible += 1; }
    });
    shown.textContent = visible + " of " + rows.length + " solutions shown";
  }
  if (droppedOnly && reason && shown) {
    droppedOnly.addEventListener("change", apply);
    reason.addEventListener("change", apply);
    apply();
  }
})();
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>genprm synthesis report: {{ run_name }}</title>
<style>{{ style }}</style>
</head>
<body>
<header>
  <h1>genprm synthesis report</h1>
  <div class="muted">{{ run_dir }}</div>
  <dl class="facts">
  {% for name, record in stages %}<dt>{{ name }}</dt><dd>{{ record.model or "" }} · key {{ record.key }} ·
    {% for option, value in record.settings.items() %}{{ option }}={{ value }}{% if not loop.last %}, {% endif %}
    {% endfor %}</dd>
  {% endfor %}
  </dl>
</header>
<section id="funnel">
  <h2>Solutions</h2>
  <table id="status-table">
    <tr><th>status</th><th>solutions</th></tr>
    {% for status, n in counts.items() %}<tr><td>{{ status }}</td><td>{{ n }}</td></tr>{% endfor %}
    <tr><td>all</td><td>{{ total }}</td></tr>
  </table>
  {% if reasons %}
  <table id="reason-table">
    <tr><th>dropped because</th><th>solutions</th></tr>
    {% for reason, n in reasons %}<tr><td>{{ reason }}</td><td>{{ n }}</td></tr>{% endfor %}
  </table>
  {% endif %}
</section>
{% include "solutions" %}
<script>{{ script }}</script>
</body>
</html>
"""

SOLUTIONS = """
<section id="solutions">
  <h2>Solutions, step by step</h2>
  <p class="muted">Steps are numbered from 1, as the teacher's paragraphs are. Colour: the Monte-Carlo label (green
  good, red bad, grey after the first error); dashed outline: the labels' first error or the teacher's index.
  MC is MC(s_t, a_t) after zero propagation; progress is the labelling rule's statistic (P_t for RPE).
  {% if rows | length < total %} Showing {{ rows | length }} of {{ total }} solutions.{% endif %}</p>
  <div class="filters">
    <label><input type="checkbox" id="dropped-only"> only dropped solutions</label>
    <label>reason <select id="reason"><option value="">all</option>
      {% for reason, n in reasons %}<option value="{{ reason }}">{{ reason }} ({{ n }})</option>{% endfor %}
    </select></label>
    <span id="shown" class="muted"></span>
  </div>
  {% for row in rows %}
  <article class="sample" id="solution-{{ loop.index0 }}" data-status="{{ row.status }}" data-reason="{{ row.reason }}">
    <h3><span>{{ row.problem_id }}</span><span class="muted">{{ row.key }}</span>
      <span>answer {{ "correct" if row.correct else "wrong" }}</span>
      <span>MC(s_1) {{ row.mc_s1 | score }}</span>
      <span>labels: {{ row.label_index | index }}</span><span>teacher: {{ row.teacher_index | index }}</span>
      <span class="badge {{ row.status }}">{{ row.status }}: {{ row.reason }}</span>
      {% if row.turns is not none %}<span class="muted">{{ row.turns }} turns</span>{% endif %}</h3>
    <details><summary>problem (gold answer {{ row.gold }})</summary><div class="text">{{ row.problem }}</div></details>
    <ol class="steps">
    {% for step in row.steps %}
      <li class="step tone-{{ step.tone }}{% if step.labelled_error %} labelled{% endif %}
        {%- if step.teacher_error %} teacher{% endif %}" data-step="{{ step.number }}">
        <div class="step-head"><strong>step {{ step.number }}</strong>
          <span>MC {{ step.mc | score }}</span><span>progress {{ step.progress | score }}</span>
          <span>label {{ "–" if step.label is none else step.label }}</span>
          {% if step.labelled_error %}<span class="mark">◀ labels' first error</span>{% endif %}
          {% if step.teacher_error %}<span class="mark">◀ teacher's earliest error</span>{% endif %}
        </div>
        <div class="text">{{ step.text }}</div>
      </li>
    {% endfor %}
    </ol>
    {% for critique in row.critiques %}{% include "critique" %}{% endfor %}
  </article>
  {% endfor %}
</section>
"""

CRITIQUE = """
<details class="path critique tone-{{ 'yes' if critique.agrees else 'no' }}">
  <summary>critique {{ critique.number }}: <span class="verdict">index {{ critique.index | index }}</span>
    · samples {{ critique.samples | samples }}
    · {{ critique.finish }} · {{ critique.tokens }} tokens · {{ critique.seconds | score }} s
    {% if critique.agrees %}· agrees with the labels{% endif %}</summary>
  {% for run in critique.code %}
  <h4>code, round {{ run.round }} ({{ run.seconds | score }} s)</h4>
  <pre class="code">{{ run.code }}</pre>
  <h4>output</h4>
  <pre class="output">{{ run.output }}</pre>
  {% endfor %}
  <details><summary>full critique</summary><pre class="turn">{{ critique.text }}</pre></details>
</details>
"""

TEMPLATES = {"page": PAGE, "solutions": SOLUTIONS, "critique": CRITIQUE}
