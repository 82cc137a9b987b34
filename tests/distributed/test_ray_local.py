"""The Ray executor on a real (private, 2-CPU) Ray instance: results equal a local run's on the
deterministic scripted engine, and faults (a replica killed, one whose restarts are used up, a unit
that kills every replica it runs on, the driver killed with kill -9) lose and duplicate nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.distributed import ray_fixtures, scripted
from tests.distributed.driver import CONCURRENCY, CONFIG, verify
from tests.distributed.faults import sabotaged_run, store_failures
from tests.synthesis.scripted_models import EASY, PROBLEM, policy_reply, teacher_reply

from genprm.cli.cluster import Cluster, replica_executor
from genprm.evaluation.processbench import evaluate_processbench, load_processbench
from genprm.evaluation.scoring import StoreScorer
from genprm.executor import Resources, Roles, RoleSpec
from genprm.executor.ray import ReplicaPool, ReplicaSettings
from genprm.store import RunStore
from genprm.synthesis.export_files import read_conversations
from genprm.synthesis.pipeline import SynthSettings, local_executor, run_pipeline
from genprm.synthesis.rollouts import RolloutSettings
from genprm.synthesis.solutions import SolutionSettings
from genprm.synthesis.stats import funnel
from genprm.synthesis.store import SynthStore

pytestmark = ray_fixtures.needs_ray
local_ray, data, local_run = ray_fixtures.local_ray, ray_fixtures.data, ray_fixtures.local_run  # fixtures
ROOT = Path(__file__).resolve().parents[2]
TWO = Cluster("auto", replicas=2)


def test_a_processbench_slice_on_two_replicas_equals_the_local_run(local_ray, data, local_run, tmp_path):
    figures = verify(data, tmp_path, TWO)
    assert scripted.stored_paths(tmp_path) == scripted.stored_paths(local_run[0])
    assert scripted.path_rows(tmp_path) == 8 * CONFIG.n
    assert figures.results == local_run[1].results


def test_replicas_killed_mid_run_lose_and_duplicate_no_record(local_ray, data, local_run, tmp_path, monkeypatch):
    monkeypatch.setattr(scripted, "DELAY_S", 0.03)  # units still run when the replicas are killed

    def kill_for_good(pool: ReplicaPool) -> None:
        local_ray.kill(pool.actors[0], no_restart=True)

    def kill_once(pool: ReplicaPool) -> None:  # Ray restarts it (max_restarts) and it takes units again
        local_ray.kill(pool.actors[1], no_restart=False)

    figures, executor, failures = sabotaged_run(tmp_path, data, {2: kill_for_good, 4: kill_once},
                                                ReplicaSettings(replicas=2, max_concurrency=8))
    assert failures == {}
    assert scripted.stored_paths(tmp_path) == scripted.stored_paths(local_run[0])
    assert scripted.path_rows(tmp_path) == 8 * CONFIG.n
    assert figures.results == local_run[1].results
    assert executor.runs[0].resubmitted >= 1  # the killed replicas held units, handed out again


def test_a_unit_that_kills_every_replica_it_runs_on_is_recorded_as_failed(local_ray, data, tmp_path):
    def respond(prompt: str, request: Any) -> str:
        if "What is 3 * (1 + 1)?" in prompt:
            os._exit(3)  # a crash no exception handler sees (a segfault in an engine, an OOM kill)
        return scripted.respond(prompt, request)

    spec = {"verifier": scripted.verifier_spec(respond=respond)}
    settings = ReplicaSettings(replicas=2, unit_attempts=2, max_restarts=4, max_concurrency=8)
    samples = load_processbench(data, ["gsm8k", "math"])
    with ReplicaPool(spec, settings) as pool, RunStore(tmp_path) as store:
        scorer = StoreScorer(store, pool.engine("verifier"), CONFIG, concurrency=CONCURRENCY,
                             executor=pool.executor(1))
        evaluate_processbench(samples, scorer)
        failures = store_failures(store)
        poisoned = [s.item.key for s in samples if s.item.record["problem"] == "What is 3 * (1 + 1)?"]
        assert sorted(failures) == sorted(poisoned) and len(poisoned) == 2
        assert all(f["reason"] == "replica" and not f["transient"] for f in failures.values())
        assert "failed 2 times" in next(iter(failures.values()))["error"]
        assert scripted.path_rows(tmp_path) == (len(samples) - 2) * CONFIG.n
        # a resumed run does not retry it (the hardening rule: it would fail the same way)
        scorer.score([s.item for s in samples])
        assert store_failures(store) == failures


def test_a_driver_killed_with_kill_9_resumes_from_the_store(local_ray, data, local_run, tmp_path):
    address = local_ray.get_runtime_context().gcs_address
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    driver = subprocess.Popen(
        [sys.executable, "-m", "tests.distributed.driver", str(data), str(tmp_path), address, "0.05"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert driver.stdout is not None
        for line in driver.stdout:  # "verify DONE/TOTAL" per stored sample
            if line.startswith("verify ") and int(line.split()[1].split("/")[0]) >= 2:
                break
        os.kill(driver.pid, signal.SIGKILL)
    finally:
        driver.kill()
        driver.wait(30)
    stored = scripted.path_rows(tmp_path)
    assert 2 * CONFIG.n <= stored < 8 * CONFIG.n  # killed mid-run, what finished is stored
    figures = verify(data, tmp_path, TWO)  # needs both CPUs: the dead driver's replicas are gone
    assert scripted.stored_paths(tmp_path) == scripted.stored_paths(local_run[0])
    assert figures.results == local_run[1].results


SYNTH = SynthSettings(
    solutions=SolutionSettings(first_draws=4, draws_per_try=4, num_try=1, num_paths=4),
    rollouts=RolloutSettings(ks=(4, 4, 4)),
)
SYNTH_SPECS = {
    "policy": RoleSpec("scripted", "policy", (("respond", policy_reply),)),
    "completer": RoleSpec("scripted", "policy", (("respond", policy_reply),)),
    "teacher": RoleSpec("scripted", "teacher", (("respond", teacher_reply),)),
}


def _synthesize(run: Path, roles: Resources, executor_for: Any) -> dict[str, Any]:
    with SynthStore(run) as store:
        reports = {r.stage: (r.computed, r.failed, r.reused) for r in run_pipeline(store, [PROBLEM, EASY], roles, SYNTH, 4, run / "out.jsonl",
                                                          executor_for=executor_for)}
        found = {"reports": reports, "funnel": funnel(store), "rows": read_conversations(run / "out.jsonl")}
    return json.loads(json.dumps(found, default=repr).replace(str(run), "RUN"))  # the folders' names differ


def test_the_synthesis_stages_on_two_replicas_equal_a_local_run(local_ray, tmp_path):
    with Roles(SYNTH_SPECS) as roles:
        local = _synthesize(tmp_path / "local", roles, local_executor)
    with ReplicaPool(SYNTH_SPECS, ReplicaSettings(replicas=2, max_concurrency=12)) as pool:
        remote = _synthesize(tmp_path / "ray", pool, replica_executor(pool))
    assert len(local["rows"]) == 4
    assert remote == local


def test_the_driver_s_engine_proxy_spreads_a_batch_over_the_replicas_and_keeps_its_order(local_ray):
    from genprm.engines.base import GenerationRequest, LogprobRequest, SamplingParams

    spec = scripted.verifier_spec()
    requests = [GenerationRequest(f"{i} step by step: ", SamplingParams(seed=i)) for i in range(7)]
    with Roles({"verifier": spec}) as roles:
        here = roles.engine("verifier")
        expected = ([g.text for g in here.generate(requests)], here.tokenize("abc"), here.model_id)
        asks = [LogprobRequest(here.tokenize(str(r.prompt)), tuple(here.tokenize("YN"))) for r in requests]
        verdicts = here.next_token_logprobs(asks)
    with ReplicaPool({"verifier": spec}, ReplicaSettings(replicas=2, max_concurrency=4)) as pool:
        engine = pool.engine("verifier")
        got = ([g.text for g in engine.generate(requests)], engine.tokenize("abc"), engine.model_id)
        assert engine.max_batch == 2 * engine.per_replica_batch
        assert engine.next_token_logprobs(asks) == verdicts
    assert got == expected
