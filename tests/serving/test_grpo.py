"""TRL's GRPOTrainer, 2 steps on this CPU: SmolLM2-135M is the policy, genprm serve (the demo model on
llama.cpp) its reward, through :class:`genprm.integrations.trl.GenPRMReward`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from genprm.serving import ServeConfig
from genprm.verifier import VerifyConfig

from .support import running

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
GGUF_TO_HF = REPO.parent / "shared" / "tools" / "gguf-to-hf"
HF_CACHE = Path(os.environ.get("GENPRM_HF_DIR", Path.home() / ".cache" / "genprm" / "hf"))
NEEDS = ("torch", "transformers", "trl", "datasets", "accelerate", "gguf")
QUESTIONS = ["What is 12 + 30?", "What is 7 times 8?"]


@pytest.fixture(scope="module")
def smollm2_folder(demo_gguf) -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face folder, converted once by ../shared/tools/gguf-to-hf."""
    missing = [m for m in NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs the train extra ({', '.join(missing)} missing)")
    folder = HF_CACHE / "smollm2-135m-instruct"
    if (folder / "config.json").is_file():
        return folder
    if not GGUF_TO_HF.is_file():
        pytest.skip(f"{GGUF_TO_HF} is absent (the shared tools are not on this machine)")
    partial = folder.with_name(folder.name + f".partial-{os.getpid()}")
    subprocess.run([sys.executable, str(GGUF_TO_HF), str(demo_gguf), str(partial)], check=True, capture_output=True,
                   timeout=600)
    partial.rename(folder)
    return folder


class _Recording:
    """The reward function, keeping what it returned per call (to check TRL logged the server's rewards)."""

    def __init__(self, inner):
        self.inner = inner
        self.__name__ = inner.__name__
        self.calls: list[list[float]] = []

    async def __call__(self, prompts, completions, **kwargs):
        rewards = await self.inner(prompts, completions, **kwargs)
        self.calls.append(rewards)
        return rewards


def test_two_grpo_steps_train_on_genprm_rewards(smollm2_folder, demo_gguf, tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from genprm.integrations.trl import GenPRMReward

    config = ServeConfig(model=str(demo_gguf), engine="llamacpp", engine_options={"n_threads": 2},
                         verify=VerifyConfig(n=1, mode="analyze", max_step_tokens=16), concurrency=4)
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": q}]} for q in QUESTIONS])
    with running(config) as url:
        reward = _Recording(GenPRMReward(url))
        args = GRPOConfig(
            output_dir=str(tmp_path / "grpo"), max_steps=2, per_device_train_batch_size=2, num_generations=2,
            max_completion_length=24, learning_rate=1e-6, logging_steps=1, save_strategy="no", report_to=[],
            use_cpu=True, bf16=False, seed=0, dataloader_num_workers=0, temperature=1.0,
        )
        trainer = GRPOTrainer(model=str(smollm2_folder), reward_funcs=[reward], args=args, train_dataset=dataset)
        trainer.train()
        metrics = httpx.get(f"{url}/metrics").text
    assert trainer.state.global_step == 2
    logged = [entry["rewards/genprm/mean"] for entry in trainer.state.log_history if "rewards/genprm/mean" in entry]
    assert len(logged) == 2 and len(reward.calls) == 2
    for mean, rewards in zip(logged, reward.calls):
        assert len(rewards) == 2  # per step: one prompt, num_generations=2 completions
        assert mean == pytest.approx(sum(rewards) / len(rewards), abs=1e-5)
        assert all(0.0 <= r <= 1.0 for r in rewards)
    served = [line for line in metrics.splitlines() if line.startswith('genprm_requests_total{endpoint="/v1/verify"')]
    assert served and sum(float(line.split()[-1]) for line in served) == sum(len(c) for c in reward.calls)
    assert json.dumps(logged)  # plain floats
