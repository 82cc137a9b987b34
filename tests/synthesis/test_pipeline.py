"""The six stages over the store with scripted models: results, reuse, extension, failures, the funnel."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from tests.synthesis.scripted_models import EASY, PROBLEM, ScriptedRoles, policy_reply

from genprm.engines.scripted import ScriptedEngine
from genprm.evaluation.chat import ChatModel
from genprm.executor import LocalExecutor
from genprm.synthesis.consensus import FilterSettings
from genprm.synthesis.critique import CritiqueSettings
from genprm.synthesis.export_files import read_conversations
from genprm.synthesis.labels import LabelSettings
from genprm.synthesis.pipeline import SynthSettings, run_pipeline
from genprm.synthesis.problems import Skipped
from genprm.synthesis.rollouts import RolloutSettings
from genprm.synthesis.solutions import SolutionSettings
from genprm.synthesis.stages import run_labels, run_rollouts, run_solutions
from genprm.synthesis.stats import funnel, funnel_values
from genprm.synthesis.store import SynthStore
from genprm.synthesis.teacher_stages import run_critiques, run_export, run_filter

SETTINGS = SynthSettings(
    solutions=SolutionSettings(first_draws=4, draws_per_try=4, num_try=1, num_paths=4),
    rollouts=RolloutSettings(ks=(4, 4, 4)),
)
RECORDS = [PROBLEM, EASY, Skipped(2, "x", "no gradable answer", "answer")]


def run_all(run: Path, roles: ScriptedRoles, settings: SynthSettings = SETTINGS, records=RECORDS) -> dict:
    with SynthStore(run) as store:
        reports = list(run_pipeline(store, records, roles, settings, 4, run / "out.jsonl"))
    return {r.stage: r for r in reports}


def generated(engine: ScriptedEngine) -> int:
    return len(engine.calls)


def test_the_whole_pipeline_exports_agreeing_solutions(tmp_path):
    roles = ScriptedRoles()
    reports = run_all(tmp_path, roles)
    assert reports["solutions"].notes["skipped"] == 1
    assert reports["export"].notes["written"] == 4
    rows = read_conversations(tmp_path / "out.jsonl")
    right = [r for r in rows if r["first_error"] == -1]
    wrong = [r for r in rows if r["first_error"] == 1]
    assert len(right) == 2 and len(wrong) == 2
    assert all(len(r["conversations"]) == 1 + 2 * 3 for r in right)  # system + 3 (user, assistant) pairs
    assert all(len(r["conversations"]) == 1 + 2 * 2 for r in wrong)  # ends after the first No turn
    last = wrong[0]["conversations"][-1]["content"]
    assert last.endswith("**Judgement**: $\\boxed{No}$\n</output>\n")
    assert not any(t["content"].startswith("Step ") for r in rows for t in r["conversations"] if t["role"] == "user")
    assert rows[0]["messages"] == rows[0]["conversations"]
    with SynthStore(tmp_path) as store:
        views = list(store.solution_views())
        assert len(views) == 4 and all(v.verdict and v.verdict["kept"] for v in views)
        easy = store.selections(store.stage("solutions").key)
        assert sorted(s.flag for s in easy.values()) == ["easy", "medium"]


def test_a_second_run_computes_nothing_and_changes_nothing(tmp_path):
    roles = ScriptedRoles()
    run_all(tmp_path, roles)
    calls = generated(roles.policy), generated(roles.teacher)
    first = (tmp_path / "out.jsonl").read_bytes()
    again = run_all(tmp_path, roles)
    assert (generated(roles.policy), generated(roles.teacher)) == calls
    assert all(r.computed == 0 and r.failed == 0 for s, r in again.items() if s != "export")
    assert (tmp_path / "out.jsonl").read_bytes() == first


def test_the_k_samples_of_a_prefix_are_one_request_and_a_larger_k_draws_only_the_new_ones(tmp_path):
    roles = ScriptedRoles()
    run_all(tmp_path, roles)
    rollout_calls = [(p, r) for p, r in roles.policy.calls if not p.endswith("<|im_start|>assistant\nStep 1: ")]
    at = 0
    for size in roles.policy.batches:  # every engine call: the n samples of one prompt, seeds seed .. seed+n-1
        batch = roles.policy.calls[at : at + size]
        at += size
        assert size == 4 and len({p for p, _ in batch}) == 1
        seeds = [r.params.seed for _, r in batch]
        assert seeds == list(range(seeds[0], seeds[0] + 4))
    before = len(roles.policy.calls)
    bigger = replace(SETTINGS, rollouts=RolloutSettings(ks=(6, 6, 6)))
    with SynthStore(tmp_path) as store:
        report = run_rollouts(store, roles.chat("completer"), bigger.rollouts, LocalExecutor(4))
        chunks = store.rollout_chunks(store.stage("rollouts").key)
    new = roles.policy.calls[before:]
    assert len(new) == 2 * report.computed and set(roles.policy.batches[-report.computed:]) == {2}
    first_seeds = {r.params.seed for _, r in rollout_calls}
    assert not first_seeds & {r.params.seed for _, r in new}, "samples 0..3 are not drawn again"
    assert all(sum(len(c.correct) for c in found) == 6 for found in chunks.values())


def test_steps_after_a_zero_need_no_rollouts(tmp_path):
    roles = ScriptedRoles()
    run_all(tmp_path, roles)
    with SynthStore(tmp_path) as store:
        chunks = store.rollout_chunks(store.stage("rollouts").key)
        labels = store.labels(store.stage("label").key)
    wrong = [key for key, value in labels.items() if value["first_error"] == 1]
    assert wrong and all((key, 1) in chunks and (key, 2) in chunks for key in wrong)  # step 2 holds the error
    right = [key for key, value in labels.items() if value["first_error"] == -1]
    assert all(labels[key]["mc"] == [1.0, 1.0, 1.0] for key in right)
    assert all(labels[key]["mc"] == [1.0, 0.0, 0.0] for key in wrong)
    assert all(labels[key]["k"] == 4 for key in labels)


def test_all_steps_rolls_out_after_a_zero_too(tmp_path):
    roles = ScriptedRoles()
    with SynthStore(tmp_path) as store:
        run_solutions(store, [PROBLEM], roles.chat("policy"), SETTINGS.solutions, LocalExecutor(2))
        settings = RolloutSettings(ks=(4, 4, 4), skip_after_zero=False)
        report = run_rollouts(store, roles.chat("completer"), settings, LocalExecutor(2))
    assert report.computed == 4 * 2  # every solution, both prefixes


def test_a_failing_unit_is_recorded_the_run_goes_on_and_the_next_run_retries_it(tmp_path):
    def flaky(prompt, request):
        if "2 + 2" in prompt:
            raise RuntimeError("context overflow")
        return policy_reply(prompt, request)

    broken = ChatModel(ScriptedEngine(respond=flaky))
    with SynthStore(tmp_path) as store:
        report = run_solutions(store, [PROBLEM, EASY], broken, SETTINGS.solutions, LocalExecutor(2))
        assert report.failed == 1 and report.computed == 1
        assert store.failures("solutions")[0]["reason"] == "RuntimeError: context overflow"
        assert len(store.selections(store.stage("solutions").key)) == 1
        healthy = ChatModel(ScriptedEngine(respond=policy_reply))
        again = run_solutions(store, [PROBLEM, EASY], healthy, SETTINGS.solutions, LocalExecutor(2))
        assert again.computed == 2 and again.reused == 1  # the easy problem's two rounds
        assert len(store.selections(store.stage("solutions").key)) == 2


def test_more_critiques_compute_only_the_new_ones_and_the_filter_waits_for_all(tmp_path):
    roles = ScriptedRoles()
    run_all(tmp_path, roles)
    with SynthStore(tmp_path) as store:
        before = len(roles.teacher.calls)
        filter_two = FilterSettings(critiques=2)
        waiting = run_filter(store, filter_two)
        assert waiting.notes["pending"] == 4 and waiting.computed == 0
        report = run_critiques(store, roles.chat("teacher"), CritiqueSettings(), 2, LocalExecutor(4))
        assert report.computed == 4 and report.reused == 4
        assert len(roles.teacher.calls) > before
        decided = run_filter(store, filter_two)
        assert decided.computed == 4 and decided.notes["pending"] == 0


def test_mc_s1_from_the_completer_rolls_out_the_empty_prefix(tmp_path):
    roles = ScriptedRoles()
    with SynthStore(tmp_path) as store:
        run_solutions(store, [PROBLEM], roles.chat("policy"), SETTINGS.solutions, LocalExecutor(2))
        settings = RolloutSettings(ks=(4, 4, 4), mc1_source="completer")
        run_rollouts(store, roles.chat("completer"), settings, LocalExecutor(2))
        chunks = store.rollout_chunks(store.stage("rollouts").key)
        assert sum(len(c.correct) for c in chunks[(PROBLEM.key, 0)]) == 4  # as many as stage 1 drew
        run_labels(store, LabelSettings())
        labels = store.labels(store.stage("label").key)
    assert {v["mc_s1"] for v in labels.values()} == {0.5}  # even seeds right: half of the empty-prefix rollouts


def test_label_variants_are_stored_beside_each_other(tmp_path):
    roles = ScriptedRoles()
    run_all(tmp_path, roles)
    with SynthStore(tmp_path) as store:
        rpe = store.stage("label").key
        run_labels(store, LabelSettings(method="hard"))
        hard = store.stage("label").key
        assert hard != rpe and len(store.labels(hard)) == len(store.labels(rpe)) == 4


def test_export_refuses_a_critique_it_cannot_split_and_says_why(tmp_path):
    def no_code_teacher(prompt, request):
        if prompt.endswith("ANSWER: \\boxed"):
            return "{-1}" if "= 70" not in prompt.split("[Solution]")[1].split("Your task")[0] else "{2}"
        return "Fine.\n</analyze>\n<verify>\nNothing to run.\n</verify>\n</think>"

    roles = ScriptedRoles()
    roles.teacher = ScriptedEngine(respond=no_code_teacher)
    reports = run_all(tmp_path, roles)
    assert reports["filter"].computed == 4 and reports["export"].notes["written"] == 0
    assert reports["export"].notes["dropped"] == {"no-code": 4}
    with SynthStore(tmp_path) as store:
        exports = store.exports(store.stage("export").key)
    assert exports and all(not e["kept"] and e["reason"] for e in exports.values())


def test_the_funnel_counts_every_stage(tmp_path):
    run_all(tmp_path, ScriptedRoles())
    with SynthStore(tmp_path) as store:
        sections = {s.title: dict((what, ours) for what, ours, _ in s.rows) for s in funnel(store)}
    assert sections["problems"]["read"] == "3"
    assert sections["problems"]["kept"] == "1" and sections["problems"]["easy (no wrong draw, dropped)"] == "1"
    assert sections["solutions (stage 1)"]["solutions kept"] == "4"
    assert sections["labels (RPE)"]["first error at step"] == "none: 2, 2: 2"
    assert sections["consensus filter"]["kept"] == "4"
    assert sections["consensus filter"]["filter rate (dropped share)"] == "0.000"
    assert sections["export"]["conversations"] == "4"
    assert sections["export"]["mean assistant turns"] == "2.500"


def test_stats_json_gives_the_funnel_as_plain_numbers(tmp_path):
    import json

    from typer.testing import CliRunner

    from genprm.cli.main import app

    run_all(tmp_path, ScriptedRoles())
    result = CliRunner().invoke(app, ["synth", "stats", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    values = json.loads(result.stdout)
    with SynthStore(tmp_path) as store:
        assert values == json.loads(json.dumps(funnel_values(funnel(store))))
    assert values["problems"]["read"] == 3 and values["problems"]["kept"] == 1
    draws = values["solutions (stage 1)"]["draws"]
    assert isinstance(draws, int) and 0 < values["solutions (stage 1)"]["valid"] <= draws
    assert values["labels (RPE)"]["first error at step"] == {"none": 2, "2": 2}
    good_bad = values["labels (RPE)"]["steps good / bad"]
    assert good_bad["good"] > 0 and good_bad["bad"] > 0
    assert values["rollouts (stage 2)"]["dynamic K"]["k"] == list(SETTINGS.rollouts.ks)
    assert values["consensus filter"]["filter rate (dropped share)"] == 0.0
    assert values["export"]["conversations"] == 4 and values["export"]["mean assistant turns"] == 2.5


@pytest.mark.parametrize("stage", ["rollouts", "label"])
def test_a_stage_before_its_inputs_names_what_is_missing(tmp_path, stage):
    from genprm.errors import ConfigError

    with SynthStore(tmp_path) as store, pytest.raises(ConfigError, match="solutions"):
        if stage == "rollouts":
            run_rollouts(store, ScriptedRoles().chat("completer"), RolloutSettings(), LocalExecutor(1))
        else:
            run_labels(store, LabelSettings())


def test_every_stage_alone_reads_the_one_before(tmp_path):
    roles = ScriptedRoles()
    with SynthStore(tmp_path) as store:
        run_solutions(store, [PROBLEM], roles.chat("policy"), SETTINGS.solutions, LocalExecutor(2))
        run_rollouts(store, roles.chat("completer"), SETTINGS.rollouts, LocalExecutor(2))
        run_labels(store, SETTINGS.labels)
        run_critiques(store, roles.chat("teacher"), SETTINGS.critique, 1, LocalExecutor(2))
        run_filter(store, SETTINGS.filter)
        report = run_export(store, SETTINGS.export, tmp_path / "alone.parquet")
    assert report.notes["written"] == 4
    assert len(read_conversations(tmp_path / "alone.parquet")) == 4


def test_the_funnel_says_which_failures_a_later_run_resolved(tmp_path):
    def flaky(prompt, request):
        if "2 + 2" in prompt:
            raise RuntimeError("server down")
        return policy_reply(prompt, request)

    with SynthStore(tmp_path) as store:
        run_solutions(store, [PROBLEM, EASY], ChatModel(ScriptedEngine(respond=flaky)), SETTINGS.solutions,
                      LocalExecutor(2))
        failed = {s.title: s.rows for s in funnel(store)}["failed units"]
        assert failed == [("solutions", "1 recorded, 1 still missing (the next run retries them); "
                           "last: RuntimeError: server down", "")]
        run_solutions(store, [PROBLEM, EASY], ChatModel(ScriptedEngine(respond=policy_reply)), SETTINGS.solutions,
                      LocalExecutor(2))
        assert store.failures("solutions")[0]["resolved"] is True


def test_a_problem_listed_twice_is_drawn_once(tmp_path):
    roles = ScriptedRoles()
    with SynthStore(tmp_path) as store:
        report = run_solutions(store, [PROBLEM, replace(PROBLEM, id="again", position=5)], roles.chat("policy"),
                               SETTINGS.solutions, LocalExecutor(2))
        assert report.computed == 1 and len(store.problems()) == 1


def test_more_problems_compute_only_the_new_ones(tmp_path):
    roles = ScriptedRoles()
    first = run_all(tmp_path, roles, records=[PROBLEM])
    assert first["export"].notes["written"] == 4
    calls = len(roles.policy.calls), len(roles.teacher.calls)
    more = run_all(tmp_path, roles, records=[PROBLEM, EASY])
    assert more["solutions"].computed == 2 and more["solutions"].reused == 1  # the easy problem's two rounds
    assert more["rollouts"].computed == 0 and more["critique"].computed == 0  # easy problems keep nothing
    assert len(roles.policy.calls) == calls[0] + 2 * 4 and len(roles.teacher.calls) == calls[1]
