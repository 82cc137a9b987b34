"""What a store key is made of: every setting that can change a result, and nothing else.

A chat template that overrides the model's renders other prompts, so it is in the key; the threshold,
the cascade band and sequential sampling's parameters only steer compute, so they are out of it while
their option is off (a rerun at another ``--threshold`` reuses independent paths).
"""

from __future__ import annotations

import json
import math

import pytest

from genprm.engines.scripted import CHATML, ScriptedEngine
from genprm.evaluation.processbench import evaluate_processbench, load_processbench, stored_figures
from genprm.evaluation.scoring import StoreScorer, path_settings_key
from genprm.store import RunStore
from genprm.verifier import VerifyConfig

REPLY = "<analyze>\nchecked\n</analyze>\n"
OTHER_TEMPLATE = CHATML.replace("<|im_start|>", "<|start|>")


def _engine(calls: list[str] | None = None) -> ScriptedEngine:
    def verdict(prompt: str) -> tuple[float, float]:
        if calls is not None:
            calls.append(prompt)
        p = 0.3 if "WRONG" in prompt.rsplit("user", 1)[-1] else 0.9
        return math.log(p), math.log(1 - p)

    return ScriptedEngine("scripted", respond=lambda prompt, request: REPLY, verdict=verdict)


@pytest.fixture
def samples(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    records = [
        {"id": "e", "problem": "p0", "steps": ["a = 1", "WRONG b = 3"], "label": 1},
        {"id": "c", "problem": "p1", "steps": ["x = 2", "y = 4"], "label": -1},
    ]
    (folder / "gsm8k.json").write_text(json.dumps(records))
    return load_processbench(folder, ["gsm8k"])


@pytest.fixture
def key(tmp_path):
    def settings_of(config: VerifyConfig, template: str | None = None) -> str:
        with RunStore(tmp_path / "keys") as store:
            return StoreScorer(store, _engine(), config, chat_template=template).settings

    return settings_of


def test_an_overriding_chat_template_is_part_of_the_key(key):
    base = VerifyConfig(mode="analyze")
    assert key(base, OTHER_TEMPLATE) != key(base)
    assert key(base, CHATML) == key(base)  # the model's own template, given explicitly, is no override


def test_settings_that_only_steer_compute_are_out_of_the_key_while_their_option_is_off(key):
    base = VerifyConfig(mode="analyze")
    assert key(VerifyConfig(mode="analyze", threshold=0.4)) == key(base)
    assert key(VerifyConfig(mode="analyze", cascade_band=0.1)) == key(base)
    assert key(VerifyConfig(mode="analyze", min_paths=3, adaptive_margin=0.1, adaptive_batch=2)) == key(base)
    # ... and in it once they matter
    early = VerifyConfig(mode="analyze", stop_at_first_error=True)
    assert key(early.model_copy(update={"threshold": 0.4})) != key(early)
    adaptive = VerifyConfig(mode="analyze", n=4, adaptive_n=True)
    assert key(adaptive.model_copy(update={"adaptive_margin": 0.1})) != key(adaptive)
    cascade = VerifyConfig(cascade="direct,analyze")
    assert key(cascade.model_copy(update={"cascade_band": 0.1})) != key(cascade)
    assert key(VerifyConfig(mode="analyze", reward_temperature=0.6)) == key(base)  # raw readings only
    raw = VerifyConfig(mode="analyze", reward="raw")
    assert key(raw.model_copy(update={"reward_temperature": 0.6})) != key(raw)
    assert key(raw) != key(base)
    # settings that change what a path computes stay in
    assert key(VerifyConfig(mode="analyze", temperature=0.7)) != key(base)


def test_another_threshold_reuses_the_stored_paths_and_reads_figures_from_the_store(samples, tmp_path):
    with RunStore(tmp_path / "run") as store:
        evaluate_processbench(samples, StoreScorer(store, _engine(), VerifyConfig(mode="analyze", reward="raw")))
        calls: list[str] = []
        lower = VerifyConfig(mode="analyze", threshold=0.25, reward="raw")
        figures = evaluate_processbench(samples, StoreScorer(store, _engine(calls), lower))
        assert calls == []  # nothing recomputed
        assert figures.results.rows["Pass@1"]["gsm8k"].error_acc == 0.0  # 0.3 is no error at 0.25
        stored = stored_figures(store, samples, VerifyConfig(mode="analyze", threshold=0.4, reward="raw"), "scripted")
        assert stored.stored == 2 and stored.results.rows["Pass@1"]["gsm8k"].f1 == 1.0


def test_keys_carry_a_version_so_runs_stored_before_the_change_are_not_reused():
    config = VerifyConfig()
    key = path_settings_key("m", config)
    from genprm.store import settings_key

    old_style = settings_key("m", config.model_dump(mode="json", exclude_defaults=True))
    assert key != old_style
