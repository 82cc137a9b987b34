"""The synthesis funnel: how many problems, solutions, steps and conversations each stage kept.

Everything is read from the store under the stage keys the run last used, so ``genprm synth stats``
works on a finished, a running or a killed run alike. The paper's figures stand beside ours: it
discards about 51% of solutions at the consensus filter and keeps about 23K conversations (the
released GenPRM-MATH-Data has 22,557).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from genprm.synthesis.critique import TeacherCritique, agreement_rate
from genprm.synthesis.rollouts import samples_of
from genprm.synthesis.stages import rollout_settings_of
from genprm.synthesis.store import SynthStore

PAPER_FILTER_RATE = 0.51
PAPER_CONVERSATIONS = 22557
MC1_BINS = 10


_SAME = object()


@dataclass
class Section:
    """One part of the funnel: rows of (what, ours, the paper's when it gives one) for the table, and
    the same figures as plain numbers, strings and dicts in ``values`` for ``stats --json``.
    """

    title: str
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)

    def add(self, what: str, ours: Any, paper: str = "", raw: Any = _SAME) -> None:
        """``raw`` is the machine-readable figure where the table shows a formatted one."""
        self.rows.append((what, _text(ours), paper))
        self.values[what] = ours if raw is _SAME else raw


def funnel_values(sections: list[Section]) -> dict[str, dict[str, Any]]:
    """The funnel as ``{section: {what: value}}``: what ``genprm synth stats --json`` prints."""
    return {section.title: dict(section.values) for section in sections}


def _text(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) or "–"
    return str(value)


def _share(part: int, whole: int) -> str:
    return f"{part} ({100 * part / whole:.1f}%)" if whole else str(part)


def mc1_histogram(values: list[float]) -> dict[str, int]:
    """Problems per MC(s_1) decile, ``[0.0,0.1)`` ... ``[0.9,1.0]``."""
    counts = Counter(min(int(v * MC1_BINS), MC1_BINS - 1) for v in values)
    return {f"{b / MC1_BINS:.1f}": counts.get(b, 0) for b in range(MC1_BINS)}


def funnel(store: SynthStore) -> list[Section]:
    """The funnel of the run's latest stage keys, one section per stage that has run."""
    sections: list[Section] = []
    problems = store.problems()
    skipped = store.skipped()
    intake = Section("problems")
    intake.add("read", len(problems) + len(skipped))
    intake.add("skipped", dict(Counter(s.reason for s in skipped)) if skipped else 0)
    sections.append(intake)
    selection = store.stage("solutions")
    if selection is None:
        return sections
    chosen = store.selections(selection.key)
    flags = Counter(s.flag for s in chosen.values())
    intake.add("with solutions drawn", len(chosen))
    intake.add("easy (no wrong draw, dropped)", flags.get("easy", 0))
    intake.add("hard (no correct draw, dropped)", flags.get("hard", 0))
    intake.add("kept", flags.get("medium", 0))
    intake.add("not done yet", len(problems) - len(chosen))
    sections.append(_solutions_section(store, selection.inputs.get("draws", ""), chosen))
    sections.extend(_later_sections(store))
    return sections


def _solutions_section(store: SynthStore, draw_key: str, chosen: dict[str, Any]) -> Section:
    rounds = store.draw_rounds(draw_key)
    draws = [d for found in rounds.values() for r in found.values() for d in r["draws"]]
    valid = [d for d in draws if d.valid]
    section = Section("solutions (stage 1)")
    section.add("draws", len(draws))
    section.add("valid", _share(len(valid), len(draws)), raw=len(valid))
    section.add("correct share of valid", sum(d.correct for d in valid) / len(valid) if valid else None)
    section.add("generated tokens", sum(d.tokens for d in draws))
    section.add("unit seconds (sum)", round(sum(r.get("seconds", 0.0) for f in rounds.values() for r in f.values())))
    kept = [s for s in chosen.values() if s.kept]
    section.add("solutions kept", sum(len(s.solutions) for s in kept))
    section.add("of them correct", sum(sol.correct for s in kept for sol in s.solutions))
    section.add("MC(s_1) histogram (problems)", mc1_histogram([s.mc_s1 for s in chosen.values()
                                                                if s.mc_s1 is not None]))
    return section


def _later_sections(store: SynthStore) -> list[Section]:
    sections: list[Section] = []
    rollouts = store.stage("rollouts")
    if rollouts is not None:
        chunks = store.rollout_chunks(rollouts.key)
        section = Section("rollouts (stage 2)")
        section.add("prefixes rolled out", len(chunks))
        section.add("requests", sum(len(c) for c in chunks.values()))
        section.add("rollouts", sum(len(samples_of(c)) for c in chunks.values()))
        section.add("generated tokens", sum(x.completion_tokens for c in chunks.values() for x in c))
        section.add("cut by the token budget", sum(x.lengths for c in chunks.values() for x in c))
        section.add("unit seconds (sum)", round(sum(x.seconds for c in chunks.values() for x in c)))
        settings = rollout_settings_of(rollouts)
        section.add("dynamic K", f"{settings.ks} at MC(s_1) edges {settings.k_edges}", "(128, 64, 32) at (0.1, 0.9)",
                    raw={"k": list(settings.ks), "mc_s1_edges": list(settings.k_edges)})
        sections.append(section)
    label = store.stage("label")
    if label is not None:
        sections.append(_label_section(store, label.key))
    critique = store.stage("critique")
    if critique is not None:
        sections.append(_critique_section(store, critique.key))
    filter_ = store.stage("filter")
    if filter_ is not None:
        verdicts = store.verdicts(filter_.key)
        kept = sum(v["kept"] for v in verdicts.values())
        section = Section("consensus filter")
        section.add("decided", len(verdicts))
        section.add("kept", kept)
        section.add("dropped", dict(Counter(v["reason"] for v in verdicts.values() if not v["kept"])))
        section.add("filter rate (dropped share)", (len(verdicts) - kept) / len(verdicts) if verdicts else None,
                    f"{PAPER_FILTER_RATE:.2f}")
        sections.append(section)
    export = store.stage("export")
    if export is not None:
        exports = store.exports(export.key)
        written = [e for e in exports.values() if e["kept"]]
        section = Section("export")
        section.add("conversations", len(written), f"{PAPER_CONVERSATIONS:,} (GenPRM-MATH-Data)")
        section.add("mean assistant turns", sum(e["turns"] for e in written) / len(written) if written else None)
        section.add("dropped (unsplittable critique)",
                    dict(Counter(e["reason"] for e in exports.values() if not e["kept"])) or 0)
        section.add("file", export.settings.get("out"))
        sections.append(section)
    failures = store.failures()
    if failures:
        section = Section("failed units")
        for stage in dict.fromkeys(f["stage"] for f in failures):
            of_stage = [f for f in failures if f["stage"] == stage]
            missing = sum(not f["resolved"] for f in of_stage)
            last = of_stage[-1]["reason"]
            section.add(stage, f"{len(of_stage)} recorded, {missing} still missing (the next run retries them); "
                               f"last: {last}", raw={"recorded": len(of_stage), "missing": missing, "last": last})
        sections.append(section)
    return sections


def _label_section(store: SynthStore, key: str) -> Section:
    labels = list(store.labels(key).values())
    steps = [x for v in labels for x in v["labels"]]
    firsts = Counter(v["first_error"] for v in labels)
    section = Section("labels (RPE)")
    section.add("solutions labelled", len(labels))
    good, bad = sum(steps), len(steps) - sum(steps)
    section.add("steps good / bad", f"{good} / {bad}", raw={"good": good, "bad": bad})
    section.add("first error at step", {("none" if k < 0 else str(k + 1)): firsts[k] for k in sorted(firsts)})
    section.add("K used (solutions)", dict(sorted(Counter(v["k"] for v in labels).items())))
    return section


def _critique_section(store: SynthStore, key: str) -> Section:
    found = [TeacherCritique.from_dict(c) for per in store.critiques(key).values() for c in per.values()]
    section = Section("teacher critiques")
    section.add("critiques", len(found))
    section.add("finish", dict(Counter(c.finish for c in found)))
    section.add("index samples agree (rate)", agreement_rate(found))
    section.add("code runs", sum(len(c.code_runs) for c in found))
    section.add("generated tokens", sum(c.generated_tokens for c in found))
    section.add("unit seconds (sum)", round(sum(c.seconds for c in found)))
    return section
