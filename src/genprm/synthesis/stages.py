"""The policy-side stages as store-backed drivers: solutions, rollouts and labels.

Each driver reads what earlier stages stored (under the keys they recorded), queues the units whose
results are missing on an :class:`~genprm.executor.Executor`, and stores every outcome as it
arrives, from the calling thread: that thread is the store's only writer, and it grades answers
with math-verify in place (whose timeouts need the main thread). A unit's work is a picklable
object (:class:`DrawWork`, :class:`RollWork`) that finds its model by role in the worker's
resources, so the same stage runs on local threads or on Ray replicas. A failed unit is recorded
with its reason and retried by the next run; the stage goes on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from genprm.engines.base import Generation, GenerationRequest
from genprm.errors import ConfigError
from genprm.evaluation.chat import ChatModel
from genprm.evaluation.grading import grade_all
from genprm.executor import Executor, HeldModels, Resources
from genprm.protocol.synthesis import (
    STEP_PREFILL,
    continuation_prompt,
    final_step,
    policy_messages,
    rollout_prefix,
)
from genprm.synthesis import keys
from genprm.synthesis.labels import LabelSettings, label_steps
from genprm.synthesis.problems import Problem, Skipped
from genprm.synthesis.rollouts import (
    RolloutSettings,
    mc_score,
    mc_scores,
    next_prefixes,
    prefix_seed,
    samples_of,
)
from genprm.synthesis.solutions import (
    Draw,
    Selection,
    SolutionSettings,
    draw_of,
    needs_more,
    round_seed,
    select,
)
from genprm.synthesis.store import RolloutChunk, StageRecord, SynthStore

ProgressFn = Callable[[str, int, int], None]


def _quiet(phase: str, done: int, total: int) -> None:
    """The default progress callback: nothing."""


@dataclass
class StageReport:
    """What one run of a stage did: units computed and failed, and items already stored."""

    stage: str
    computed: int = 0
    failed: int = 0
    reused: int = 0
    notes: dict[str, Any] = field(default_factory=dict)


def required_stage(store: SynthStore, name: str, needed_by: str) -> StageRecord:
    record = store.stage(name)
    if record is None:
        raise ConfigError("run", str(store.run_dir), f"has no '{name}' stage yet: run it before '{needed_by}'")
    return record


# -- stage 1: solutions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DrawUnit:
    problem: Problem
    round: int


@dataclass(frozen=True)
class DrawWork:
    """One round of a problem's draws from the policy (picklable: it runs where the policy is)."""

    settings: SolutionSettings

    def __call__(self, resources: Resources, unit: DrawUnit) -> list[Generation]:
        policy = resources.chat("policy")
        prompt = continuation_prompt(policy.template, policy_messages(self.settings.system_prompt,
                                                                      unit.problem.problem), STEP_PREFILL)
        seed = round_seed(self.settings, unit.problem.key, unit.round)
        return policy.engine.sample([GenerationRequest(prompt, self.settings.sampling(unit.round, seed))])[0]


def run_solutions(
    store: SynthStore,
    records: Iterable[Problem | Skipped],
    policy: ChatModel,
    settings: SolutionSettings,
    executor: Executor,
    on_progress: ProgressFn = _quiet,
) -> StageReport:
    """Draw, grade and balance solutions for every problem without a stored selection."""
    draws_key, chosen_key = keys.draw_key(policy, settings), keys.selection_key(policy, settings)
    store.set_stage("solutions", StageRecord(chosen_key, settings.selection_fields(), {"draws": draws_key},
                                             policy.engine.model_id))
    report = StageReport("solutions")
    problems: dict[str, Problem] = {}
    for record in records:
        if isinstance(record, Skipped):
            store.put_skipped(record)
        elif record.key not in problems:  # a problem listed twice is one problem
            store.put_problem(record)
            problems[record.key] = record
    report.notes["skipped"] = len(store.skipped())
    done = store.selections(chosen_key)
    stored = store.draw_rounds(draws_key)
    rounds: dict[str, list[list[Draw]]] = {}
    units: list[DrawUnit] = []
    for problem in problems.values():
        if problem.key in done:
            report.reused += 1
            continue
        found = stored.get(problem.key, {})
        rounds[problem.key] = [found[r]["draws"] for r in range(len(found)) if r in found]
        if needs_more(rounds[problem.key], settings):
            units.append(DrawUnit(problem, len(rounds[problem.key])))
        else:
            store.put_selection(problem.key, chosen_key, select(problem.key, rounds[problem.key], settings))
            report.reused += 1
    total, finished = len(units), 0
    on_progress("solutions", finished, total)
    run = executor.run(DrawWork(settings), units, HeldModels(policy=policy))
    for outcome in run:
        problem, round_ = outcome.unit.problem, outcome.unit.round
        if not outcome.ok or outcome.value is None:
            store.put_failure("solutions", draws_key, f"{problem.key}:{round_}", outcome.error or "no result")
            report.failed += 1
            finished += 1
            on_progress("solutions", finished, total)
            continue
        draws = _graded(problem, [draw_of(g) for g in outcome.value])
        seed = round_seed(settings, problem.key, round_)
        store.put_draws(problem.key, draws_key, round_, {
            "seed": seed, "draws": [d.to_dict() for d in draws],
            "prompt_tokens": sum(g.prompt_tokens for g in outcome.value), "seconds": outcome.seconds,
        })
        report.computed += 1
        rounds[problem.key].append(draws)
        if needs_more(rounds[problem.key], settings):
            run.submit(DrawUnit(problem, round_ + 1))
            continue
        store.put_selection(problem.key, chosen_key, select(problem.key, rounds[problem.key], settings))
        finished += 1
        on_progress("solutions", finished, total)
    return report


def _graded(problem: Problem, draws: list[Draw]) -> list[Draw]:
    """The draws with valid ones graded on their final step (math-verify, in this thread)."""
    valid = [i for i, d in enumerate(draws) if d.valid]
    grades = grade_all([(problem.gold, final_step(draws[i].text)) for i in valid])
    out = list(draws)
    for i, (correct, answer) in zip(valid, grades):
        d = draws[i]
        out[i] = Draw(d.text, d.finish, d.tokens, d.valid, correct, answer)
    return out


# -- stage 2: rollouts -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RolloutUnit:
    """``count`` continuations of prefix ``t`` of a solution (``t = 0``: the problem itself)."""

    sample: str
    problem: Problem
    steps: tuple[str, ...]
    t: int
    start: int
    count: int


@dataclass
class _Chain:
    """One solution's rollouts in progress."""

    problem: Problem
    key: str
    steps: tuple[str, ...]
    k: int


@dataclass(frozen=True)
class RollWork:
    """One chunk of a prefix's rollouts from the completer (picklable: it runs where the completer is)."""

    settings: RolloutSettings
    system_prompt: str

    def __call__(self, resources: Resources, unit: RolloutUnit) -> list[Generation]:
        completer = resources.chat("completer")
        messages = policy_messages(self.system_prompt, unit.problem.problem)
        prompt = continuation_prompt(completer.template, messages, rollout_prefix(unit.steps, unit.t))
        params = self.settings.sampling(unit.count, prefix_seed(self.settings, unit.sample, unit.t) + unit.start)
        return completer.engine.sample([GenerationRequest(prompt, params)])[0]


def medium_solutions(store: SynthStore, selection: StageRecord) -> list[tuple[Problem, Selection]]:
    """The stored problems kept by stage 1 under ``selection``'s key, in file order."""
    problems = store.problems()
    chosen = [(problems[key], sel) for key, sel in store.selections(selection.key).items()
              if sel.kept and key in problems]
    return sorted(chosen, key=lambda item: item[0].position)


def rollout_settings_of(record: StageRecord) -> RolloutSettings:
    values = dict(record.settings)
    values["k_edges"], values["ks"] = tuple(values["k_edges"]), tuple(values["ks"])
    return RolloutSettings(**values)


def run_rollouts(
    store: SynthStore,
    completer: ChatModel,
    settings: RolloutSettings,
    executor: Executor,
    on_progress: ProgressFn = _quiet,
) -> StageReport:
    """Roll out every prefix of every kept solution that lacks its K samples."""
    selection = required_stage(store, "solutions", "rollouts")
    system_prompt = str(selection.settings["system_prompt"])
    completer_key = keys.completer_key(completer, settings, system_prompt)
    store.set_stage("rollouts", StageRecord(completer_key, settings.to_dict(), {"solutions": selection.key},
                                            completer.engine.model_id))
    report = StageReport("rollouts")
    chunks: dict[tuple[str, int], list[RolloutChunk]] = defaultdict(list, store.rollout_chunks(completer_key))
    dynamic = settings.dynamic_k()
    chains: dict[str, list[_Chain]] = defaultdict(list)
    units: list[RolloutUnit] = []
    mc1: dict[str, float] = {}
    for problem, chosen in medium_solutions(store, selection):
        if settings.mc1_source == "completer":
            score = mc_score(chunks[(problem.key, 0)], chosen.draws)
            if score is None:
                stored = len(samples_of(chunks[(problem.key, 0)]))
                units.append(RolloutUnit(problem.key, problem, (), 0, stored, chosen.draws - stored))
            else:
                mc1[problem.key] = score
        elif chosen.mc_s1 is not None:
            mc1[problem.key] = chosen.mc_s1
        for solution in chosen.solutions:
            chains[problem.key].append(_Chain(problem, solution.key, tuple(solution.steps), 0))

    def solution_units(chain: _Chain) -> list[RolloutUnit]:
        found = {t: chunks[(chain.key, t)] for t in range(1, len(chain.steps))}
        return [RolloutUnit(chain.key, chain.problem, chain.steps, t, have, chain.k - have)
                for t, have in next_prefixes(found, len(chain.steps), chain.k, settings.skip_after_zero)]

    def start_chains(problem_key: str) -> list[RolloutUnit]:
        started: list[RolloutUnit] = []
        for chain in chains[problem_key]:
            chain.k = dynamic.k_for(mc1[problem_key])
            found = solution_units(chain)
            if not found:
                report.reused += 1
            started.extend(found)
        return started

    for problem_key in list(chains):
        if problem_key in mc1:
            units.extend(start_chains(problem_key))
    by_key = {chain.key: chain for found in chains.values() for chain in found}
    total, finished = len(units), 0
    on_progress("rollouts", finished, total)

    run = executor.run(RollWork(settings, system_prompt), units, HeldModels(completer=completer))
    for outcome in run:
        unit = outcome.unit
        finished += 1
        if not outcome.ok or outcome.value is None:
            store.put_failure("rollouts", completer_key, f"{unit.sample}:{unit.t}:{unit.start}",
                              outcome.error or "no result")
            report.failed += 1
            on_progress("rollouts", finished, total)
            continue
        grades = grade_all([(unit.problem.gold, final_step(g.text)) for g in outcome.value])
        chunk = RolloutChunk(unit.start, [int(correct) for correct, _ in grades],
                             sum(g.completion_tokens for g in outcome.value),
                             sum(g.prompt_tokens for g in outcome.value),
                             sum(g.finish_reason == "length" for g in outcome.value), outcome.seconds)
        store.put_rollouts(unit.sample, completer_key, unit.t, chunk)
        chunks[(unit.sample, unit.t)].append(chunk)
        report.computed += 1
        follow: list[RolloutUnit] = []
        if unit.t == 0:
            score = mc_score(chunks[(unit.sample, 0)], unit.start + unit.count)
            if score is not None:
                mc1[unit.sample] = score
                follow = start_chains(unit.sample)
        elif settings.skip_after_zero:
            follow = solution_units(by_key[unit.sample])
        for more in follow:
            run.submit(more)
        total += len(follow)
        on_progress("rollouts", finished, total)
    report.notes["k"] = dict(sorted(_k_counts(chains).items()))
    return report


def _k_counts(chains: dict[str, list[_Chain]]) -> dict[int, int]:
    counts: dict[int, int] = defaultdict(int)
    for found in chains.values():
        for chain in found:
            if chain.k:
                counts[chain.k] += 1
    return counts


# -- labels ----------------------------------------------------------------------------------------


def problem_mc1(store_chunks: dict[tuple[str, int], list[RolloutChunk]], problem: Problem, chosen: Selection,
                settings: RolloutSettings) -> float | None:
    """The MC(s_1) a problem's rollouts and labels use, under the rollout settings' source."""
    if settings.mc1_source == "completer":
        return mc_score(store_chunks.get((problem.key, 0), []), chosen.draws)
    return chosen.mc_s1


def run_labels(store: SynthStore, settings: LabelSettings, on_progress: ProgressFn = _quiet) -> StageReport:
    """Label every kept solution whose rollouts are complete (a pure function of the stored scores)."""
    selection = required_stage(store, "solutions", "label")
    rollouts = required_stage(store, "rollouts", "label")
    rollout_settings = rollout_settings_of(rollouts)
    key = keys.label_key(selection.key, rollouts.key, rollout_settings, settings)
    store.set_stage("label", StageRecord(key, settings.to_dict(), {"solutions": selection.key,
                                                                   "rollouts": rollouts.key}))
    report = StageReport("label")
    existing = store.labels(key)
    chunks = store.rollout_chunks(rollouts.key)
    dynamic = rollout_settings.dynamic_k()
    chosen = medium_solutions(store, selection)
    total = sum(len(sel.solutions) for _, sel in chosen)
    finished = incomplete = 0
    for problem, selected in chosen:
        mc_s1 = problem_mc1(chunks, problem, selected, rollout_settings)
        for solution in selected.solutions:
            finished += 1
            if solution.key in existing:
                report.reused += 1
                continue
            k = dynamic.k_for(mc_s1) if mc_s1 is not None else 0
            found = {t: chunks.get((solution.key, t), []) for t in range(1, len(solution.steps))}
            scores = mc_scores(found, len(solution.steps), k, solution.correct) if mc_s1 is not None else None
            if scores is None:
                incomplete += 1
                continue
            labels = label_steps(scores, mc_s1 or 0.0, settings)
            store.put_labels(solution.key, key, {"problem": problem.key, "k": k, "mc_s1": mc_s1,
                                                 "raw_mc": scores, **labels.to_dict()})
            report.computed += 1
        on_progress("label", finished, total)
    on_progress("label", total, total)
    report.notes["incomplete"] = incomplete
    return report


def labelled_solutions(store: SynthStore, stage: str) -> list[tuple[Problem, Sequence[str], str, dict[str, Any]]]:
    """``(problem, steps, solution key, labels)`` of every labelled solution, in problem order."""
    label = required_stage(store, "label", stage)
    selection = required_stage(store, "solutions", stage)
    labels = store.labels(label.key)
    return [(problem, solution.steps, solution.key, labels[solution.key])
            for problem, chosen in medium_solutions(store, selection)
            for solution in chosen.solutions if solution.key in labels]
