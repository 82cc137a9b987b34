"""Format adherence: the share of path-steps that closed </analyze>, ran code and reached the verdict."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from genprm.sandbox.messages import NO_CODE_FOUND
from genprm.store import RunStore
from genprm.training.adherence import before_after, count_adherence, main, markdown_table, run_adherence
from genprm.verifier.records import CodeRun, PathStep


def _turn(path=0, *, degraded=None, code=("print(1)",), calls=4, readable=True, cancelled=False, step=0):
    runs = [CodeRun(round=i + 1, code=c, output="1", seconds=0.01) for i, c in enumerate(code)]
    turn = PathStep(path=path, text="...", verdict="Yes", reward=0.9 if readable else None, readable=readable,
                    code_runs=runs, degraded=degraded, engine_calls=calls, cancelled=cancelled)
    return {"step": step, **asdict(turn)}


ADHERENT = _turn()
ANALYSIS_CUT = _turn(degraded="token-budget", code=(), calls=2)  # the analysis never closed
CODE_ROUNDS = _turn(degraded="code-rounds", code=("x=1", "x=2", "x=3"), calls=5)  # code ran, no verdict reached
EOS_IN_VERIFY = _turn(degraded="eos", code=(), calls=3)  # closed the analysis, then stopped writing
NO_CODE = _turn(code=("",), calls=3, readable=False)  # reached the verdict, but its fence held no code
CANCELLED = _turn(cancelled=True, code=(), calls=1)


def test_each_part_is_counted():
    counts = count_adherence([ADHERENT, ANALYSIS_CUT, CODE_ROUNDS, EOS_IN_VERIFY, NO_CODE, CANCELLED])
    assert counts.path_steps == 5, "cancelled path-steps are left out"
    assert counts.adherent == 1
    assert counts.closed_analysis == 4
    assert counts.ran_code == 2
    assert counts.reached_verdict == 2
    assert counts.readable == 4
    assert counts.degraded == {"token-budget": 1, "code-rounds": 1, "eos": 1}
    assert counts.adherence == pytest.approx(0.2)
    assert count_adherence([]).adherence is None


def test_no_code_found_is_not_running_code():
    turn = _turn(code=("",))
    turn["code_runs"][0]["output"] = NO_CODE_FOUND
    assert count_adherence([turn]).ran_code == 0


def _run(folder, paths_by_settings, n, model="m"):
    with RunStore(folder) as store:
        keys = {}
        for name, per_sample in paths_by_settings.items():
            keys[name] = store.register_settings(model, {"name": name})
            for sample, paths in per_sample.items():
                store.put_paths(sample, {"id": sample}, keys[name], paths)
    main_key = keys["main"]
    (folder / "processbench.json").write_text(json.dumps({
        "model": model, "n": n, "settings": main_key, "average": {"Pass@1": 0.25, f"Maj@{n}": 0.5},
    }))
    return main_key


def test_a_run_counts_the_paths_its_figures_rest_on(tmp_path):
    run = tmp_path / "pb"
    _run(run, {
        "main": {"s1": {0: [ADHERENT, _turn(step=1)], 1: [ANALYSIS_CUT, ADHERENT], 2: [ANALYSIS_CUT, ANALYSIS_CUT]},
                 "s2": {0: [CODE_ROUNDS], 1: [ADHERENT]}},
        "other": {"s1": {0: [ANALYSIS_CUT] * 5}},
    }, n=2)
    counts = run_adherence(run)
    assert counts.path_steps == 6, "path 2 (beyond N) and the other settings are left out"
    assert counts.adherent == 4
    assert run_adherence(run, n=3).path_steps == 8
    rows = before_after([run])
    assert rows[0]["f1_maj"] == 0.5 and rows[0]["f1_pass1"] == 0.25
    assert rows[0]["adherence"] == pytest.approx(4 / 6)
    table = markdown_table(rows)
    assert "| 2 | 50.0 | 25.0 |" in table and "66.7" in table


def test_the_command_prints_the_table(tmp_path, capsys):
    run = tmp_path / "pb"
    _run(run, {"main": {"s1": {0: [ADHERENT]}}}, n=1)
    main([str(run)])
    out = capsys.readouterr().out
    assert out.startswith("| run | model |") and "100.0" in out
    main([str(run), "--json"])
    assert json.loads(capsys.readouterr().out)[0]["path_steps"] == 1


def test_a_folder_without_a_store(tmp_path):
    with pytest.raises(FileNotFoundError):
        run_adherence(tmp_path)
