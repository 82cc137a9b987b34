"""One failing sample costs only itself: runs record failures and go on, a path whose prompt no longer
fits the context is recorded as unreadable (reason ``context``), an unreadable verdict does not enter
later history as an invented "No", and shards writing figures at once do not race.
"""

from __future__ import annotations

import json
import math
import threading

import pytest

from genprm.engines.scripted import ScriptedEngine
from genprm.errors import ContextOverflowError, EngineError
from genprm.evaluation.processbench import evaluate_processbench, load_processbench
from genprm.evaluation.scoring import FAILED_KIND, StoreScorer
from genprm.io import validate_record, write_json_atomic
from genprm.protocol import prompts as P
from genprm.store import RunStore
from genprm.verifier import SolutionVerifier, VerifyConfig, verify
from genprm.verifier.records import SolutionFailure
from genprm.verifier.scheduler import Scheduler

REPLY = "fine\n</analyze>\n"


def _verdict(p_yes: float):
    return lambda prompt: (math.log(p_yes), math.log(1 - p_yes))


class Exploding(ScriptedEngine):
    """Raises ``error`` for any prompt containing BOOM."""

    def __init__(self, error: Exception, **kwargs) -> None:
        super().__init__(respond=lambda prompt, request: REPLY, verdict=_verdict(0.9), **kwargs)
        self.error = error

    def generate(self, requests):
        if any("BOOM" in self._text(r.prompt) for r in requests):
            raise self.error
        return super().generate(requests)


class SmallContext(ScriptedEngine):
    """A context of ``limit`` tokens (one per character), enforced like the real engines do."""

    def __init__(self, limit: int, **kwargs) -> None:
        kwargs.setdefault("respond", lambda prompt, request: REPLY)
        kwargs.setdefault("verdict", _verdict(0.9))
        super().__init__(**kwargs)
        self.limit = limit
        self.attempts: list[int] = []

    def _check(self, prompts):
        for prompt in prompts:
            if len(prompt) > self.limit:
                raise ContextOverflowError(len(prompt), self.limit)

    def generate(self, requests):
        self.attempts.append(len(requests))
        self._check([self._text(r.prompt) for r in requests])
        return super().generate(requests)

    def next_token_logprobs(self, requests):
        self._check([r.prompt for r in requests])
        return super().next_token_logprobs(requests)


RECORDS = [{"id": f"r{i}", "problem": f"What is {i}?", "steps": [f"{i} is {i}.", "Done."]} for i in range(5)]
CONFIG = VerifyConfig(mode="analyze", n=2, reward="raw", max_step_tokens=200)


def test_the_scheduler_keeps_every_finished_result_when_one_solution_fails():
    records = [dict(r) for r in RECORDS]
    records[1]["steps"] = ["BOOM", "Done."]
    items = [validate_record(r, position=i) for i, r in enumerate(records)]
    engine = Exploding(RuntimeError("backend bug"))
    results, failures = [], []
    scheduler = Scheduler(SolutionVerifier(engine, CONFIG), concurrency=4)
    try:
        scheduler.run(items, results.append, on_failure=failures.append)
    finally:
        scheduler.close()
    assert sorted(r.record["id"] for r in results) == ["r0", "r2", "r3", "r4"]
    assert [f.record["id"] for f in failures] == ["r1"]
    assert failures[0].reason == "error" and "backend bug" in failures[0].error and not failures[0].transient


def test_verify_writes_a_failed_record_and_goes_on_and_a_rerun_retries_only_transient_failures(tmp_path):
    records = [dict(r) for r in RECORDS[:3]]
    records[1]["steps"] = ["BOOM", "Done."]
    out = tmp_path / "out.jsonl"
    for concurrency in (1, 3):
        out.unlink(missing_ok=True)
        done = verify(records, model=Exploding(ValueError("bad")), config=CONFIG, out=out, concurrency=concurrency)
        assert sorted(r.record["id"] for r in done) == ["r0", "r2"]
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        failed = [line for line in lines if "failed" in line]
        assert [f["id"] for f in failed] == ["r1"] and failed[0]["failed"]["reason"] == "error"
    assert verify(records, model=Exploding(ValueError("bad")), config=CONFIG, out=out) == []  # not retried
    again = verify(records, model=ScriptedEngine(respond=lambda p, r: REPLY), config=CONFIG, out=out, retry_failed=True)
    assert [r.record["id"] for r in again] == ["r1"]

    out.unlink()
    verify(records, model=Exploding(EngineError("server down", status=503)), config=CONFIG, out=out)
    retried = verify(records, model=ScriptedEngine(respond=lambda p, r: REPLY), config=CONFIG, out=out)
    assert [r.record["id"] for r in retried] == ["r1"]  # a transient failure is retried on resume


@pytest.fixture
def samples(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    records = [
        {"id": "e", "problem": "p0", "steps": ["a = 1", "BOOM"], "label": 1},
        {"id": "c", "problem": "p1", "steps": ["x = 2", "y = 4"], "label": -1},
        {"id": "c2", "problem": "p2", "steps": ["z = 2"], "label": -1},
    ]
    (folder / "gsm8k.json").write_text(json.dumps(records))
    return load_processbench(folder, ["gsm8k"])


@pytest.mark.parametrize("concurrency", [1, 2])
def test_a_failed_sample_is_stored_counted_as_wrong_and_not_retried_unless_asked(samples, tmp_path, concurrency):
    with RunStore(tmp_path / "run") as store:
        scorer = StoreScorer(store, Exploding(ValueError("broken")), CONFIG, concurrency=concurrency)
        figures = evaluate_processbench(samples, scorer)
        assert figures.complete and figures.failed == 1 and figures.stored == 2
        gsm8k = figures.results.rows["Pass@1"]["gsm8k"]
        assert (gsm8k.n_error, gsm8k.error_acc, gsm8k.correct_acc) == (1, 0.0, 1.0)  # the failed one is wrong
        assert [s.get("failed") for s in figures.results.samples] == ["error", None, None]
        assert store.item(FAILED_KIND, samples[0].item.key, scorer.settings)["error"] == "ValueError: broken"
        saved = json.loads((tmp_path / "run" / "processbench.json").read_text())
        assert saved["failed"] == 1

        engine = ScriptedEngine(respond=lambda p, r: REPLY, verdict=lambda p: (math.log(0.1), math.log(0.9)))
        evaluate_processbench(samples, StoreScorer(store, engine, CONFIG))
        assert engine.calls == []  # a deterministic failure is not retried on resume ...
        retried = evaluate_processbench(samples, StoreScorer(store, engine, CONFIG, retry_failed=True))
        assert engine.calls and retried.failed == 0 and retried.stored == 3  # ... unless asked


def test_a_path_whose_prompt_outgrows_the_context_is_unreadable_and_the_solution_goes_on():
    long_step = "x" * 400
    engine = SmallContext(limit=450)
    result = SolutionVerifier(engine, CONFIG).verify("p", ["short step", long_step, "ok"])
    assert [s.status for s in result.steps] == ["scored", "unreadable", "unreadable"]
    assert all(p.unreadable_reason == "context" and not p.readable for p in result.steps[1].paths)
    assert result.first_error == -1  # unreadable steps are no evidence of an error
    assert result.steps[1].paths[0].text.endswith(P.OUTPUT_PREFIX + P.verdict_close("Yes"))


def test_a_batch_with_one_overflowing_request_answers_the_others():
    from genprm.verifier.driver import drive
    from genprm.verifier.path import verify_step_path

    engine = SmallContext(limit=300, max_batch=4)
    short, long = "CONV|", "CONV|" + "z" * 260
    coroutines = [verify_step_path(CONFIG, conv, 1, j, engine.tokenize, seed=j) for j, conv in enumerate((short, long))]
    first, second = drive(engine, coroutines, [str, str])
    assert first.readable and first.reward == pytest.approx(0.9)
    assert not second.readable and second.unreadable_reason == "context"
    assert engine.attempts[:3] == [2, 1, 1]  # tried together, then one by one


def test_an_unreadable_verdict_enters_the_history_as_the_step_verdict_not_as_no():
    def verdict(prompt):
        turn = prompt.rsplit("<|im_start|>assistant\n", 1)[1]
        if "path-zero" in turn:
            return None, None  # path 0 never reads
        return (math.log(0.2), math.log(0.8)) if "WRONG" in prompt.rsplit("<|im_start|>user", 1)[1] else (
            math.log(0.9), math.log(0.1))

    def respond(prompt, request):
        return ("path-zero" if request.params.seed == seeds[0] else "other") + "\n</analyze>\n"

    from genprm.verifier.path import derive_seed

    seeds = [derive_seed(derive_seed(0, "", k, 0), 1) for k in range(1)]
    engine = ScriptedEngine(respond=respond, verdict=verdict)
    result = SolutionVerifier(engine, CONFIG).verify("p", ["fine", "WRONG"])
    zero = [s.paths[0] for s in result.steps]
    assert not zero[0].readable and zero[0].text.endswith(P.verdict_close("Yes"))  # step 0 judged Yes
    second_prompts = [prompt for prompt, _ in engine.calls if prompt.count("<|im_start|>user") == 2]
    assert any(P.verdict_close("Yes") in prompt for prompt in second_prompts)
    assert result.first_error == 1

    alone = SolutionVerifier(ScriptedEngine(respond=lambda p, r: REPLY, verdict=lambda p: (None, None)),
                             CONFIG.model_copy(update={"n": 1})).verify("p", ["a"])
    assert alone.steps[0].paths[0].text.endswith(P.verdict_close("Yes"))  # no readable path: no error, Yes


def test_figures_written_at_once_by_many_writers_never_collide(tmp_path):
    target = tmp_path / "processbench.json"
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            for _ in range(30):
                write_json_atomic(target, {"writer": i, "pad": "x" * 20000})
        except BaseException as exc:  # noqa: BLE001 - the test reports any failure
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert json.loads(target.read_text())["writer"] in range(6)
    assert [p.name for p in tmp_path.iterdir()] == ["processbench.json"]  # no temporary file left


def test_a_failure_keeps_the_input_record_and_says_why():
    failure = SolutionFailure.of({"id": "x", "problem": "p"}, "k", ContextOverflowError(10, 8))
    assert failure.reason == "context" and not failure.transient
    assert failure.to_dict()["failed"] == {"reason": "context", "transient": False,
                                           "error": "ContextOverflowError: prompt of 10 tokens does not fit the context of 8"}


def test_a_sandbox_refusal_stops_the_verifier_at_once_and_is_not_transient(tmp_path):
    from genprm.errors import SandboxRefusedError, is_transient
    from genprm.sandbox import SandboxConfig

    missing = SandboxConfig(bwrap=str(tmp_path / "no-bwrap"))
    engine = ScriptedEngine(respond=lambda p, r: REPLY)
    with pytest.raises(SandboxRefusedError, match="refusing to run model code without isolation") as refused:
        SolutionVerifier(engine, VerifyConfig(mode="full"), sandbox=missing)
    assert "\n" not in str(refused.value) and not is_transient(refused.value)
    SolutionVerifier(engine, VerifyConfig(mode="analyze"), sandbox=missing)  # no code runs: nothing to refuse
