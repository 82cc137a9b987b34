"""The report page: one Jinja template with its CSS and JavaScript inlined (no network, file:// works).

Kept as Python strings so they ship inside the package without package-data rules. Autoescaping
is on: every value from the model or the data (analyses, code, outputs, step texts) is escaped.
"""

from __future__ import annotations

STYLE = """
:root { --yes: #1a7f37; --yes-bg: #dafbe1; --no: #cf222e; --no-bg: #ffebe9; --grey: #6e7781; --grey-bg: #eaeef2;
        --line: #d0d7de; --mark: #9a6700; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 1rem 1.5rem 4rem; color: #1f2328; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid var(--line); }
h4 { margin: .6rem 0 .2rem; font-size: .85rem; color: var(--grey); }
.muted { color: var(--grey); }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; margin: .8rem 0; }
.facts dt { font-weight: 600; } .facts dd { margin: 0; overflow-wrap: anywhere; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .6rem 0; }
th, td { border: 1px solid var(--line); padding: .25rem .55rem; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
td.best, td.avg { font-weight: 700; } .detail { color: var(--grey); font-size: .8rem; }
img.plot { max-width: 100%; border: 1px solid var(--line); }
.filters { position: sticky; top: 0; background: #fff; padding: .5rem 0; border-bottom: 1px solid var(--line);
           display: flex; gap: 1.5rem; align-items: center; z-index: 1; }
.sample { border: 1px solid var(--line); border-radius: 6px; margin: 1rem 0; padding: .5rem 1rem; }
.sample > h3 { margin: .2rem 0 .4rem; font-size: 1rem; display: flex; gap: .8rem; align-items: center;
               flex-wrap: wrap; }
.badge { border-radius: 1rem; padding: 0 .6rem; font-size: .8rem; font-weight: 600; }
.badge.correct { background: var(--yes-bg); color: var(--yes); }
.badge.wrong { background: var(--no-bg); color: var(--no); }
.steps { list-style: none; padding: 0; margin: .4rem 0; }
.step { border-left: 6px solid var(--grey); background: var(--grey-bg); margin: .45rem 0; padding: .35rem .7rem; }
.step.tone-yes { border-color: var(--yes); background: var(--yes-bg); }
.step.tone-no { border-color: var(--no); background: var(--no-bg); }
.step.tone-absent { opacity: .7; }
.step.predicted, .step.labelled { outline: 2px dashed var(--mark); outline-offset: 1px; }
.step-head { display: flex; gap: .8rem; flex-wrap: wrap; align-items: baseline; font-size: .85rem; }
.mark { color: var(--mark); font-weight: 700; }
.chip { display: inline-block; min-width: 3.2rem; text-align: center; border-radius: 3px; padding: 0 .3rem;
        color: #fff; background: var(--grey); font-variant-numeric: tabular-nums; }
.chip.tone-yes { background: var(--yes); } .chip.tone-no { background: var(--no); }
.text { white-space: pre-wrap; overflow-wrap: anywhere; margin: .3rem 0; }
pre { background: #f6f8fa; border: 1px solid var(--line); padding: .4rem .6rem; overflow-x: auto; margin: .2rem 0;
      white-space: pre-wrap; overflow-wrap: anywhere; }
details.path { background: #fff; border: 1px solid var(--line); border-radius: 4px; margin: .3rem 0;
               padding: .2rem .6rem; }
details.path > summary { cursor: pointer; }
details.path.tone-yes > summary .verdict { color: var(--yes); }
details.path.tone-no > summary .verdict { color: var(--no); }
[hidden] { display: none !important; }
"""

SCRIPT = """
(function () {
  "use strict";
  var wrongOnly = document.getElementById("wrong-only");
  var subset = document.getElementById("subset");
  var shown = document.getElementById("shown");
  var samples = Array.prototype.slice.call(document.querySelectorAll(".sample"));
  function apply() {
    var visible = 0;
    samples.forEach(function (sample) {
      var hide = (wrongOnly.checked && sample.dataset.correct === "true")
        || (subset.value !== "" && sample.dataset.subset !== subset.value);
      sample.hidden = hide;
      if (!hide) { visible += 1; }
    });
    shown.textContent = visible + " of " + samples.length + " samples shown";
  }
  if (wrongOnly && subset && shown) {
    wrongOnly.addEventListener("change", apply);
    subset.addEventListener("change", apply);
    apply();
  }
})();
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>genprm report: {{ run_name }}</title>
<style>{{ style }}</style>
</head>
<body>
<header>
  <h1>genprm report</h1>
  <div class="muted">{{ run_dir }}</div>
  <dl class="facts">
  {% for name, value in facts %}<dt>{{ name }}</dt><dd>{{ value }}</dd>
  {% endfor %}
  </dl>
</header>
{% if pb %}{% include "processbench" %}{% endif %}
{% if bon %}{% include "bon" %}{% endif %}
{% if refine %}{% include "refine" %}{% endif %}
{% if pb %}{% include "samples" %}{% endif %}
<script>{{ script }}</script>
</body>
</html>
"""

PROCESSBENCH = """
<section id="processbench">
  <h2>ProcessBench</h2>
  <p class="muted">F1 in %, then (accuracy on erroneous / on correct samples); threshold {{ pb.threshold }}.</p>
  <div class="scroll"><table id="processbench-table">
    <tr><th>method</th>{% for s in pb.subsets %}<th>{{ s }}</th>{% endfor %}<th>Avg</th></tr>
    {% for method, per in pb.rows.items() %}
    <tr><td>{{ method }}</td>
      {% for s in pb.subsets %}{% set score = per[s] %}
      <td>{{ score.f1 | pct }} <span class="detail">({{ score.error_acc | pct }} / {{ score.correct_acc | pct }},
        n={{ score.n_error }}+{{ score.n_correct }})</span></td>
      {% endfor %}
      <td class="avg">{{ pb.average[method] | pct }}</td></tr>
    {% endfor %}
  </table></div>
  {% if pb.get("published") %}
  <details><summary>Published F1 Avg (full benchmark, for orientation)</summary>
  <table>
    <tr><th>model</th><th>Pass@1 / single</th><th>Maj@8</th></tr>
    {% for row in pb.published %}
    <tr><td>{{ row.name }}</td><td>{{ row.pass1 | number(1) }}</td><td>{{ row.maj8 | number(1) }}</td></tr>
    {% endfor %}
  </table></details>
  {% endif %}
  {% if plots.get("f1_vs_n") %}
  <h3>F1 against the number of paths</h3>
  <img class="plot" id="plot-f1" src="{{ plots.f1_vs_n }}" alt="ProcessBench F1 against N">
  {% endif %}
  {% if pb.get("sweep") %}
  <h3>Threshold sweep (Avg F1 at {{ method }}, from the saved rewards)</h3>
  <div class="scroll"><table id="sweep-table">
    <tr><th>threshold</th>{% for point in pb.sweep %}<th>{{ point.threshold | number(2) }}</th>{% endfor %}</tr>
    <tr><td>Avg F1</td>{% for point in pb.sweep %}
      <td{% if point.threshold == best_threshold %} class="best"{% endif %}>{{ point.f1_avg | pct }}</td>
    {% endfor %}</tr>
  </table></div>
  {% endif %}
</section>
"""

BON = """
<section id="bon">
  <h2>Best-of-N</h2>
  {% set agreement = bon.get("agreement") or {} %}
  <p class="muted">Accuracy in % per response budget; method = step-reward aggregation / selection.
  {% if agreement.get("total") %}Grading agrees with the data's labels on
  {{ agreement.matches }}/{{ agreement.total }} responses.{% endif %}</p>
  {% if plots.get("bon_vs_budget") %}
  <img class="plot" id="plot-bon" src="{{ plots.bon_vs_budget }}" alt="Best-of-N accuracy against budget">
  {% endif %}
  <div class="scroll"><table id="bon-table">
    <tr><th>method</th>{% for b in budgets %}<th>{{ b }}</th>{% endfor %}</tr>
    {% for method, per in bon.methods.items() %}
    <tr><td>{{ method }}</td>{% for b in budgets %}<td>{{ per.get(b) | pct }}</td>{% endfor %}</tr>
    {% endfor %}
  </table></div>
</section>
"""

REFINE = """
<section id="refine">
  <h2>Critique and refine</h2>
  <div class="scroll"><table id="refine-table">
    <tr><th>round</th><th>accuracy (%)</th><th>refined</th><th>wrong → right</th><th>right → wrong</th></tr>
    {% set refined, transitions = refine.get("refined") or {}, refine.get("transitions") or {} %}
    {% for round, accuracy in refine.accuracy.items() %}{% set moved = transitions.get(round, {}) %}
    <tr><td>{{ round }}</td><td>{{ accuracy | pct }}</td><td>{{ refined.get(round, "–") }}</td>
      <td>{{ moved.get("wrong_to_right", "–") }}</td><td>{{ moved.get("right_to_wrong", "–") }}</td></tr>
    {% endfor %}
  </table></div>
</section>
"""

SAMPLES = """
<section id="samples">
  <h2>Samples</h2>
  <p class="muted">Steps are numbered from 0, as ProcessBench labels are. Colour: green reward ≥ threshold,
  red below, grey unreadable or not verified; dashed outline: the predicted ({{ method }}) or labelled first
  error.{% if samples | length < total_samples %} Showing {{ samples | length }} of {{ total_samples }}
  samples.{% endif %}{% if not has_store %} The store is missing: no steps to show.{% endif %}</p>
  <div class="filters">
    <label><input type="checkbox" id="wrong-only"> only wrong predictions</label>
    <label>subset <select id="subset"><option value="">all</option>
      {% for s in pb.subsets %}<option value="{{ s }}">{{ s }}</option>{% endfor %}</select></label>
    <span id="shown" class="muted"></span>
  </div>
  {% for sample in samples %}
  <article class="sample" id="sample-{{ loop.index0 }}" data-subset="{{ sample.subset }}"
           data-correct="{{ 'true' if sample.correct else 'false' }}">
    <h3><span>{{ sample.id }}</span><span class="muted">{{ sample.subset }}</span>
      <span>label: {{ sample.label | first_error }}</span>
      <span>prediction: {{ sample.prediction | first_error }}</span>
      {% if sample.critic is not none %}<span class="muted">critic: {{ sample.critic | first_error }}</span>{% endif %}
      <span class="badge {{ 'correct' if sample.correct else 'wrong' }}">{{ 'correct' if sample.correct
        else 'wrong' }}</span></h3>
    {% if sample.problem %}<details><summary>problem</summary><div class="text">{{ sample.problem }}</div>
    </details>{% endif %}
    <ol class="steps">
    {% for step in sample.steps %}
      <li class="step tone-{{ step.tone }}{% if step.predicted %} predicted{% endif %}
        {%- if step.labelled %} labelled{% endif %}" data-step="{{ step.index }}">
        <div class="step-head"><strong>step {{ step.index }}</strong>
          <span>{{ method }} reward {{ step.reward | number(3) }}</span>
          <span>paths: {% for path in step.paths %}<span class="chip tone-{{ path.tone }}"
            title="path {{ path.index }}">{{ path.reward | number(2) }}</span> {% else %}not verified{% endfor %}
          </span>
          {% if step.predicted %}<span class="mark">◀ predicted first error</span>{% endif %}
          {% if step.labelled %}<span class="mark">◀ labelled first error</span>{% endif %}
        </div>
        <div class="text">{{ step.text }}</div>
        {% for path in step.paths %}{% include "path" %}{% endfor %}
      </li>
    {% endfor %}
    </ol>
  </article>
  {% endfor %}
</section>
"""

PATH = """
<details class="path tone-{{ path.tone }}">
  <summary>path {{ path.index }}: <span class="verdict">P(Yes) {{ path.reward | number(3) }}</span>
    · sampled verdict {{ path.verdict }}{% for note in path.notes %} · {{ note }}{% endfor %}</summary>
  <h4>analysis</h4>
  <div class="text analysis">{{ path.analysis or "(none)" }}</div>
  {% for run in path.code %}
  <h4>code, round {{ run.round }}{% if run.executed %} ({{ run.seconds | number(2) }} s){% endif %}</h4>
  <pre class="code">{{ run.code }}</pre>
  <h4>{{ "output" if run.executed else "output (imagined by the model, not executed)" }}</h4>
  <pre class="output">{{ run.output }}</pre>
  {% endfor %}
  <details><summary>full turn</summary><pre class="turn">{{ path.text }}</pre></details>
</details>
"""

TEMPLATES = {
    "page": PAGE,
    "processbench": PROCESSBENCH,
    "bon": BON,
    "refine": REFINE,
    "samples": SAMPLES,
    "path": PATH,
}
