"""The executor seam without a cluster: verification as picklable work, the replica object, the
driver's helpers, and the message when Ray is missing."""

from __future__ import annotations

import pickle
import sys

import pytest
from tests.distributed import scripted
from typer.testing import CliRunner

from genprm.cli.main import app
from genprm.engines.base import GenerationRequest, SamplingParams
from genprm.errors import ConfigError, MissingDependencyError
from genprm.evaluation.processbench import evaluate_processbench, load_processbench
from genprm.evaluation.scoring import StoreScorer, VerifyUnit, VerifyWork
from genprm.executor import LocalExecutor, Roles
from genprm.executor.ray import Ledger, ReplicaSettings, portable, require_ray, spread
from genprm.executor.replica import Replica
from genprm.store import RunStore
from genprm.verifier import VerifyConfig


def _score(run, samples, config, executor=None, concurrency=3):
    spec = scripted.verifier_spec()
    with RunStore(run) as store, Roles({"verifier": spec}) as roles:
        scorer = StoreScorer(store, roles.engine("verifier"), config, concurrency=concurrency, executor=executor)
        return evaluate_processbench(samples, scorer)


def test_verification_as_units_of_work_stores_what_the_in_process_scorer_stores(tmp_path):
    samples = load_processbench(scripted.write_processbench(tmp_path / "data", 4), ["gsm8k", "math"])
    config = VerifyConfig(n=3, seed=7)
    direct = _score(tmp_path / "direct", samples, config)
    units = _score(tmp_path / "units", samples, config, executor=LocalExecutor(2))
    assert scripted.stored_paths(tmp_path / "units") == scripted.stored_paths(tmp_path / "direct")
    assert scripted.path_rows(tmp_path / "units") == len(samples) * 3
    assert units.results == direct.results


def test_verify_work_and_its_units_cross_a_process_boundary():
    unit = VerifyUnit(_item(), [0, 2])
    work = VerifyWork(VerifyConfig(n=3), None, 4)
    assert pickle.loads(pickle.dumps(work)) == work
    assert pickle.loads(pickle.dumps(unit)) == unit


def _item():
    from genprm.io import validate_record

    return validate_record({"problem": "What is 1 + 1?", "steps": ["1 + 1 = 2.", "So 2."]}, position=0)


def test_a_replica_loads_its_role_once_describes_it_and_turns_failures_into_results():
    replica = Replica({"verifier": scripted.verifier_spec(), "policy": scripted.verifier_spec()})
    try:
        identity = replica.describe("verifier")
        assert (identity.model_id, identity.max_batch) == ("scripted", 1)
        assert replica.roles.loaded == 1  # the policy is the same model on the same engine
        out = replica.call("verifier", "generate", [GenerationRequest("x step by step: ", SamplingParams(seed=3))])
        assert out[0].text.startswith("seed 3 reads")
        result = replica.run(VerifyWork(VerifyConfig(n=2, mode="analyze")), VerifyUnit(_item(), None))
        assert result.error is None and [len(s.paths) for s in result.value.steps] == [2, 2]
        broken = replica.run(_explode, "unit")
        assert broken.value is None and broken.error == "RuntimeError: engine fell over"
        with pytest.raises(ValueError, match="not an engine operation"):
            replica.call("verifier", "close", None)
        assert replica.ready()["pid"] > 0
    finally:
        replica.close()


def _explode(resources, unit):
    raise RuntimeError("engine fell over")


def test_spread_cuts_a_batch_into_ordered_groups_one_per_replica():
    assert spread([1, 2, 3, 4, 5], 2) == [[1, 2, 3], [4, 5]]
    assert spread([1, 2], 5) == [[1], [2]]
    assert spread([1, 2, 3], 1) == [[1, 2, 3]]
    assert [x for group in spread(list(range(17)), 4) for x in group] == list(range(17))


def test_a_unit_finished_twice_is_delivered_once():
    ledger = Ledger()
    first, second = ledger.issue(), ledger.issue()
    assert first != second
    assert ledger.finish(first) is True
    assert ledger.finish(first) is False
    assert ledger.finish(second) is True


def test_replica_settings_refuse_what_cannot_run():
    with pytest.raises(ConfigError, match="--replicas"):
        ReplicaSettings(replicas=0)
    with pytest.raises(ConfigError, match="whole"):
        ReplicaSettings(gpus_per_replica=1.5)
    ReplicaSettings(gpus_per_replica=0.5)  # several replicas may share a GPU


def test_a_replica_loads_local_model_paths_absolutely_and_splits_vllm_over_its_gpus(tmp_path, monkeypatch):
    from genprm.executor import RoleSpec

    (tmp_path / "m.gguf").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    spec = portable(RoleSpec("llamacpp", "m.gguf", (("n_threads", 1),)), ReplicaSettings())
    assert spec.model == str(tmp_path / "m.gguf") and spec.options == (("n_threads", 1),)
    assert portable(RoleSpec("llamacpp", "smollm2-135m-instruct"), ReplicaSettings()).model == "smollm2-135m-instruct"
    vllm = dict(portable(RoleSpec("vllm", "org/model"), ReplicaSettings(gpus_per_replica=4)).options)
    assert vllm == {"tensor_parallel_size": 4, "distributed_executor_backend": "mp"}
    assert portable(RoleSpec("vllm", "org/model"), ReplicaSettings(gpus_per_replica=1)).options == ()


def test_without_ray_the_commands_say_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    with pytest.raises(MissingDependencyError, match=r"genprm\[ray\]"):
        require_ray()
    data = scripted.write_processbench(tmp_path / "data", 2)
    result = CliRunner().invoke(app, ["eval", "processbench", "--data", str(data), "--subsets", "gsm8k", "--engine",
                                      "scripted", "--model", "m", "--run", str(tmp_path / "run"), "--ray", "auto"])
    assert result.exit_code == 2, result.output
    assert "pip install 'genprm[ray]'" in " ".join(result.output.split())
    assert "Traceback" not in result.output


@pytest.mark.parametrize("option", [["--replicas", "2"], ["--gpus-per-replica", "1"]])
def test_replica_options_need_ray(tmp_path, option):
    data = scripted.write_processbench(tmp_path / "data", 2)
    result = CliRunner().invoke(app, ["eval", "processbench", "--data", str(data), "--subsets", "gsm8k", "--engine",
                                      "scripted", "--model", "m", "--run", str(tmp_path / "run"), *option])
    assert result.exit_code == 2 and "needs --ray" in result.output
