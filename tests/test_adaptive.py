"""Adaptive compute on a scripted engine: the cascade of modes and sequential path sampling."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence

import pytest
from typer.testing import CliRunner

from genprm.cli.main import app
from genprm.cli.summary import ComputeTotals
from genprm.engines.scripted import ScriptedEngine
from genprm.errors import ConfigError
from genprm.io import validate_record
from genprm.protocol import prompts as P
from genprm.verifier import SolutionVerifier, VerifyConfig, verify
from genprm.verifier.path import derive_seed
from genprm.verifier.records import FORMAT_VERSION

Reward = Callable[[int, "int | None", str], "float | None"]
"""``reward(step, path, kind)``: the verdict P(Yes); ``path`` is None in direct mode (nothing generated)."""
Code = Callable[[int, int], "str | None"]

ASSISTANT = "<|im_start|>assistant\n"
TAG = re.compile(r"path (\d+) checks step (\d+)")


def kind_of(prompt: str) -> str:
    """Which mode wrote the turn being judged: direct, analyze, or verify (full / code-no-exec)."""
    if P.DIRECT_SYSTEM_PROMPT in prompt:
        return "direct"
    return "verify" if "<verify>" in prompt.rsplit(ASSISTANT, 1)[1] else "analyze"


def step_of(prompt: str) -> int:
    return prompt.count("<|im_start|>user") - 1


def tagged_engine(
    reward: Reward, *, code: Code | None = None, seed: int = 0, keys: Sequence[str] = ("",), max_batch: int = 1,
    on_verdict: Callable[[str], None] | None = None, on_generate: Callable[[int, int], None] | None = None,
) -> ScriptedEngine:
    """Each path writes its index into its analysis (found from the request's derived seed, for records
    with these ``keys``), so the verdict can depend on (step, path, mode); ``code(step, path)`` is the
    python the path writes.
    """
    paths = {
        derive_seed(derive_seed(seed, key, k, j), c): j
        for key in keys for k in range(8) for j in range(16) for c in range(1, 6)
    }

    def respond(prompt: str, request) -> str:
        j, k = paths[request.params.seed], step_of(prompt)
        if on_generate:
            on_generate(k, j)
        if prompt.endswith("step by step: "):
            return f"path {j} checks step {k}\n</analyze>\n"
        if prompt.endswith("```python\n"):
            block = code(k, j) if code else None
            return f"{block}\n```\n" if block else "nothing to run\n</verify>\n<output>"
        return "done\n</verify>\n<output>"

    def verdict(prompt: str) -> tuple[float | None, float | None]:
        if on_verdict:
            on_verdict(prompt)
        tag = TAG.findall(prompt.rsplit(ASSISTANT, 1)[1])
        p = reward(step_of(prompt), int(tag[0][0]) if tag else None, kind_of(prompt))
        return (None, None) if p is None else (math.log(p), math.log(1 - p))

    return ScriptedEngine(respond=respond, verdict=verdict, max_batch=max_batch)


def transcripts(result):
    return [[(p.path, p.text, p.branched_from) for p in s.paths] for s in result.steps]


# --- cascade -------------------------------------------------------------------------------------

CASCADE_REWARDS = {
    (0, "direct"): 0.95,
    (1, "direct"): 0.55, (1, "analyze"): 0.9,
    (2, "direct"): 0.5, (2, "analyze"): 0.6, (2, "verify"): 0.1,
}


def test_cascade_escalates_only_inside_the_band_and_records_the_deciding_level():
    prompts: list[str] = []
    engine = tagged_engine(lambda k, j, kind: CASCADE_REWARDS[k, kind], on_verdict=prompts.append)
    config = VerifyConfig(n=2, cascade="direct,analyze,full", cascade_band=0.2, reward="raw")
    result = SolutionVerifier(engine, config).verify("p", ["a", "b", "c"])

    assert [s.level for s in result.steps] == [0, 1, 2]
    assert [s.mode for s in result.steps] == ["direct", "analyze", "full"]
    assert [[round(r, 6) for r in s.level_rewards] for s in result.steps] == [[0.95], [0.55, 0.9], [0.5, 0.6, 0.1]]
    assert result.step_rewards == pytest.approx([0.95, 0.9, 0.1])
    assert result.first_error == 2
    usage = result.compute
    assert (usage.path_steps, usage.path_steps_fixed) == (12, 6)
    assert {m: u.path_steps for m, u in usage.by_mode.items()} == {"direct": 6, "analyze": 4, "full": 2}

    # One history per path, holding the turn of the level that decided each step; each level's
    # prompt uses that level's system prompt.
    step3 = [p for p in prompts if step_of(p) == 2]
    for path in (0, 1):
        history = result.steps[0].paths[path].text + "<|im_end|>" + "\n<|im_start|>user\nb<|im_end|>\n" + ASSISTANT
        history += result.steps[1].paths[path].text
        assert sum(history in p for p in step3) == 3
    assert result.steps[0].paths[0].text.startswith(P.OUTPUT_PREFIX + "{")  # a direct turn
    assert all((P.DIRECT_SYSTEM_PROMPT in p) == (kind_of(p) == "direct") for p in prompts)


def test_no_band_never_escalates_and_an_unreadable_level_always_does():
    def reward(k, j, kind):
        return None if kind == "direct" and k == 1 else 0.55

    engine = tagged_engine(reward)
    narrow = SolutionVerifier(engine, VerifyConfig(n=1, cascade="direct,analyze", cascade_band=0.0)).verify(
        "p", ["a", "b"]
    )
    assert [s.mode for s in narrow.steps] == ["direct", "analyze"]
    assert narrow.steps[1].level_rewards[0] is None


def test_a_one_mode_cascade_is_that_mode():
    engine = tagged_engine(lambda k, j, kind: 0.7)
    plain = SolutionVerifier(engine, VerifyConfig(n=2, mode="analyze")).verify("p", ["a", "b"])
    single = SolutionVerifier(engine, VerifyConfig(n=2, cascade="analyze")).verify("p", ["a", "b"])
    assert transcripts(plain) == transcripts(single)


# --- sequential sampling ----------------------------------------------------------------------------

SEQUENTIAL_REWARDS = [
    [0.9] * 6,  # decisive after min_paths
    [0.3, 0.7] * 3,  # mean 0.5: every one of the n paths
    [0.6, 0.6, 0.95, 0.9, 0.9, 0.9],  # (0.6 + 0.6 + 0.95) / 3 >= 0.7: three paths
]


def _sequential(config, **engine_options):
    engine = tagged_engine(lambda k, j, kind: SEQUENTIAL_REWARDS[k][j], **engine_options)
    return SolutionVerifier(engine, config).verify("p", ["a", "b", "c"])


def test_sequential_sampling_stops_when_decisive_and_uses_all_n_when_not():
    config = VerifyConfig(n=6, mode="analyze", adaptive_n=True, min_paths=2, adaptive_margin=0.2, reward="raw")
    result = _sequential(config)
    assert [len(s.paths) for s in result.steps] == [2, 6, 3]
    assert result.step_rewards == pytest.approx([0.9, 0.5, 2.15 / 3])
    assert (result.compute.path_steps, result.compute.path_steps_fixed) == (11, 18)

    # Paths 2..5 first appear at step 1: each takes over path j mod 2's history.
    assert [p.branched_from for p in result.steps[1].paths] == [None, None, 0, 1, 0, 1]
    assert [p.branched_from for p in result.steps[2].paths] == [None, None, None]
    assert result.steps[1].paths[3].text != result.steps[1].paths[1].text  # then goes its own way


def test_sequential_sampling_is_deterministic_and_batches_as_asked():
    config = VerifyConfig(n=6, mode="analyze", adaptive_n=True, min_paths=1, adaptive_batch=2, adaptive_margin=0.25,
                          reward="raw")
    first, second = _sequential(config), _sequential(config)
    assert transcripts(first) == transcripts(second)
    assert first.step_rewards == second.step_rewards
    assert [len(s.paths) for s in first.steps] == [1, 6, 5]  # 1, then 2 at a time (the last round 1 to stay <= n)


def test_late_paths_rebuild_the_code_namespace_of_the_history_they_take_over():
    def code(k, j):
        return f"value = {40 + j}\nprint('set')" if k == 0 else "print(value)"

    def reward(k, j, kind):
        return 0.9 if k == 0 else [0.3, 0.7][j % 2]

    config = VerifyConfig(n=4, adaptive_n=True, min_paths=2)
    engine = tagged_engine(reward, code=code)
    result = SolutionVerifier(engine, config).verify("p", ["a", "b"])
    assert [len(s.paths) for s in result.steps] == [2, 4]
    outputs = [[run.output for run in p.code_runs] for p in result.steps[1].paths]
    assert outputs == [["40"], ["41"], ["40"], ["41"]]  # path j prints what path j mod 2 defined


def test_a_subset_of_paths_is_refused_when_compute_is_adaptive():
    engine = tagged_engine(lambda k, j, kind: 0.9)
    for config in (VerifyConfig(n=4, adaptive_n=True), VerifyConfig(n=4, cascade="direct,analyze")):
        with pytest.raises(ConfigError, match="path_ids"):
            SolutionVerifier(engine, config).verify("p", ["a"], path_ids=[2, 3])


# --- the scheduler ---------------------------------------------------------------------------------

RECORDS = [
    {"id": f"r{i}", "problem": f"What is {i} + {i}?", "steps": [f"{i} + {i} = {2 * i}.", f"So {2 * i}.", "Done."]}
    for i in range(5)
]


def _varied_engine():
    """Replies and verdicts depend on the prompt and seed, so any mix-up between paths shows."""

    def respond(prompt, request):
        seed = request.params.seed % 1000
        if prompt.endswith("step by step: "):
            return f"seed {seed} looks at {len(prompt)} chars\n</analyze>\n"
        if prompt.endswith("```python\n"):
            return f"print({seed} + {len(prompt) % 97})\n```\n"
        return f"fine {seed}\n</verify>\n<output>"

    def verdict(prompt):
        p = (len(prompt) * 7 % 89 + 5) / 100
        return math.log(p), math.log(1 - p)

    return ScriptedEngine(respond=respond, verdict=verdict, max_batch=8)


@pytest.mark.parametrize(
    "options",
    [
        {"cascade": "direct,analyze,full", "cascade_band": 0.25},
        {"mode": "analyze", "adaptive_n": True, "min_paths": 1, "adaptive_margin": 0.3},
        {"cascade": "analyze,full", "adaptive_n": True, "min_paths": 2, "cascade_band": 0.2},
    ],
)
def test_scheduler_gives_the_same_results_as_the_loop_with_adaptive_options(options):
    config = VerifyConfig(n=3, seed=7, **options)
    expected = verify(RECORDS, model=_varied_engine(), config=config)
    got = verify(RECORDS, model=_varied_engine(), config=config, concurrency=8)

    def summary(results):
        return {r.record["id"]: (transcripts(r), r.step_rewards, [s.level for s in r.steps]) for r in results}

    assert summary(got) == summary(expected)
    assert sum(r.compute.path_steps for r in got) < sum(r.compute.path_steps_fixed for r in got) * len(
        VerifyConfig(**options).levels
    )


# --- records and the CLI -----------------------------------------------------------------------------


def test_records_keep_their_layout_and_add_the_new_fields():
    engine = tagged_engine(lambda k, j, kind: 0.9)
    data = SolutionVerifier(engine, VerifyConfig(n=2, cascade="direct,analyze")).verify("p", ["a"]).to_dict()
    assert data["format_version"] == FORMAT_VERSION == 1
    step = data["steps"][0]
    assert {"index", "reward", "status", "paths", "critique"} <= set(step)
    assert (step["mode"], step["level"], step["cancelled_paths"]) == ("direct", 0, 0)
    assert data["compute"]["path_steps"] == data["compute"]["path_steps_fixed"] == 2
    assert data["compute"]["by_mode"] == {"direct": {"path_steps": 2, "generated_tokens": 0}}
    assert data["config"]["cascade"] == ["direct", "analyze"]


def test_compute_totals_line():
    engine = tagged_engine(lambda k, j, kind: SEQUENTIAL_REWARDS[k][j])
    config = VerifyConfig(n=6, mode="analyze", adaptive_n=True)
    totals = ComputeTotals(top_mode="analyze")
    for _ in range(2):
        totals.add(SolutionVerifier(engine, config).verify("p", ["a", "b", "c"]))
    line = totals.line()
    assert line.startswith("compute over 2 solution(s): 22 of 36 path-steps (39% saved);")
    assert "for fixed N in analyze (~39% saved)" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cascade", "full,direct"], "--cascade 'full,direct'"),
        (["--cascade", "direct,bogus"], "unknown mode 'bogus'"),
        (["--mode", "analyze", "--cascade", "direct,full"], "replaces --mode analyze"),
        (["--cascade-band", "2"], "--cascade-band"),
        (["--adaptive-n", "--min-paths", "0"], "--min-paths"),
        (["--adaptive-margin", "-1"], "--adaptive-margin"),
    ],
)
def test_cli_names_the_option_of_a_bad_value(tmp_path, args, message):
    source = tmp_path / "in.json"
    source.write_text('{"problem": "p", "steps": ["a"]}')
    result = CliRunner().invoke(app, ["verify", str(source), *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_cli_help_explains_the_adaptive_options():
    text = " ".join(CliRunner().invoke(app, ["verify", "--help"], terminal_width=200).output.split())
    for option in ("--cascade", "--cascade-band", "--adaptive-n", "--min-paths", "--adaptive-batch", "--adaptive-margin"):
        assert option in text


def test_resuming_an_output_written_before_these_settings_existed(tmp_path):
    """A record whose config lacks the adaptive settings ran with their defaults: it is not redone."""
    out = tmp_path / "out.jsonl"
    records = [{"problem": "p", "steps": ["a"]}]
    engine = tagged_engine(lambda k, j, kind: 0.9, keys=[validate_record(records[0], position=0).key])
    verify(records, model=engine, config=VerifyConfig(mode="analyze"), out=out)
    old = json.loads(out.read_text())
    for name in ("cascade", "cascade_band", "adaptive_n", "min_paths", "adaptive_batch", "adaptive_margin"):
        del old["config"][name]
    out.write_text(json.dumps(old) + "\n")
    assert verify(records, model=engine, config=VerifyConfig(mode="analyze"), out=out) == []
    with pytest.raises(Exception, match="other settings"):
        verify(records, model=engine, config=VerifyConfig(mode="analyze", adaptive_n=True), out=out)


# --- stored results: rewards by step, not by position --------------------------------------------


def test_a_late_path_is_stored_at_the_step_it_verified(tmp_path):
    """Paths 2 and 3 are first drawn at step 1 and judge it wrong: the stored matrix must put their
    rewards at step 1, so the figures from the store agree with the run's own first error."""
    from genprm.evaluation.scoring import StoreScorer
    from genprm.store import RunStore

    def reward(k, j, kind):
        return 0.9 if k == 0 else [0.5, 0.5, 0.1, 0.1][j]

    config = VerifyConfig(n=4, mode="analyze", adaptive_n=True, min_paths=2, adaptive_margin=0.2, reward="raw")
    item = validate_record({"problem": "p", "steps": ["a", "b"]}, position=0)
    engine = tagged_engine(reward, keys=(item.key,))
    own = SolutionVerifier(engine, config).verify(item.problem, item.steps, key=item.key)
    assert [len(s.paths) for s in own.steps] == [2, 4] and own.first_error == 1
    with RunStore(tmp_path / "run") as store:
        scorer = StoreScorer(store, tagged_engine(reward, keys=(item.key,)), config)
        scorer.score([item])
        matrix = scorer.matrix(item)
    assert [[None if r is None else round(r, 6) for r in row] for row in matrix] == [[0.9, 0.9, None, None], [0.5, 0.5, 0.1, 0.1]]
    from genprm.evaluation.metrics import predicted_first_error

    assert predicted_first_error(matrix, 4, config.threshold) == own.first_error == 1
