"""Stage 2: Monte-Carlo rollouts, MC(s_t, a_t) for every step of every kept solution.

For step t of a solution (t from 1) the completer continues the policy's conversation with the
assistant turn holding steps 1..t joined by a blank line, then ``\\n\\nStep {t+1}: ``; MC(s_t, a_t)
is the share of K continuations whose final step reaches the gold answer. The last step needs no
rollouts (its score is the solution's own correctness). K follows the paper's dynamic rule on the
problem's MC(s_1): 128 below 0.1, 64 up to 0.9, 32 above (edges and Ks are settings; the released
code computed these buckets and then ignored them).

The K samples of one prefix are one engine request with ``n = K`` (vLLM and servers share the
prefix among them; llama.cpp draws them back to back from its prefix cache), and many prefixes of
many solutions are in flight at once. With ``skip_after_zero`` (default) a solution's steps go in
order and stop at the first step scoring 0: zero propagation makes every later score 0 anyway.

Each request's samples are stored as a chunk ``t:start`` (sample ``i`` seeded ``seed + i``), so a
larger K later draws only samples ``K_old .. K_new - 1``. ``mc1_source = "completer"`` first rolls
out the empty prefix (t = 0, as many samples as stage 1 drew) and uses that pass@1 as MC(s_1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from genprm.engines.base import SamplingParams
from genprm.errors import ConfigError
from genprm.synthesis.labels import DynamicK
from genprm.synthesis.store import RolloutChunk
from genprm.verifier.path import derive_seed

Mc1Source = Literal["policy", "completer"]
MC1_SOURCES: tuple[str, ...] = ("policy", "completer")


@dataclass(frozen=True)
class RolloutSettings:
    """The completer's sampling (the paper: temperature 0.7) and the dynamic-K rule."""

    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 2048
    seed: int = 0
    k_edges: tuple[float, float] = (0.1, 0.9)
    ks: tuple[int, int, int] = (128, 64, 32)
    mc1_source: Mc1Source = "policy"
    """MC(s_1) from stage 1's draws (the policy's pass@1) or from completer rollouts of the empty prefix."""
    skip_after_zero: bool = True

    def __post_init__(self) -> None:
        if self.mc1_source not in MC1_SOURCES:
            raise ConfigError("mc1-source", self.mc1_source, f"choose one of {', '.join(MC1_SOURCES)}")
        self.dynamic_k()
        self.sampling(1, 0)

    def dynamic_k(self) -> DynamicK:
        return DynamicK(tuple(self.k_edges), tuple(self.ks))  # type: ignore[arg-type]

    def sampling(self, n: int, seed: int) -> SamplingParams:
        return SamplingParams(max_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p,
                              top_k=self.top_k, seed=seed, n=n)

    def completer_fields(self, system_prompt: str) -> dict[str, Any]:
        """What shapes one rollout sample (not K, not the order): the completer's store key."""
        return {"stage": "rollouts", "system_prompt": system_prompt, "temperature": self.temperature,
                "top_p": self.top_p, "top_k": self.top_k, "max_tokens": self.max_tokens, "seed": self.seed}

    def k_fields(self) -> dict[str, Any]:
        """What decides how many samples each prefix needs (part of the label key)."""
        return {"k_edges": list(self.k_edges), "ks": list(self.ks), "mc1_source": self.mc1_source}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prefix_seed(settings: RolloutSettings, sample_key: str, t: int) -> int:
    """Sample ``i`` of prefix ``t`` is seeded ``prefix_seed + i`` (any chunking draws the same samples)."""
    return derive_seed(settings.seed, "synth-rollouts", sample_key, t)


def samples_of(chunks: Sequence[RolloutChunk]) -> list[int]:
    """The contiguous samples ``0 .. n-1`` the chunks hold (a gap ends them)."""
    samples: list[int] = []
    for chunk in sorted(chunks, key=lambda c: c.start):
        if chunk.start != len(samples):
            if chunk.start > len(samples):
                break
            chunk_samples = chunk.correct[len(samples) - chunk.start :]
        else:
            chunk_samples = chunk.correct
        samples.extend(chunk_samples)
    return samples


def mc_score(chunks: Sequence[RolloutChunk], k: int) -> float | None:
    """MC over the first ``k`` samples; ``None`` while fewer than ``k`` are stored."""
    samples = samples_of(chunks)
    return sum(samples[:k]) / k if len(samples) >= k else None


def mc_scores(
    chunks: Mapping[int, Sequence[RolloutChunk]], n_steps: int, k: int, final_correct: bool
) -> list[float] | None:
    """MC(s_t, a_t) for t = 1..n_steps (the last: the solution's own correctness); a step after one
    scoring 0 counts as 0 without rollouts. ``None`` while a needed step lacks its K samples.
    """
    scores: list[float] = []
    for t in range(1, n_steps):
        if scores and scores[-1] == 0.0:
            scores.append(0.0)
            continue
        score = mc_score(chunks.get(t, ()), k)
        if score is None:
            return None
        scores.append(score)
    scores.append(1.0 if final_correct else 0.0)
    return scores


def next_prefixes(
    chunks: Mapping[int, Sequence[RolloutChunk]], n_steps: int, k: int, skip_after_zero: bool
) -> list[tuple[int, int]]:
    """The prefixes still missing samples, as ``(t, samples stored)``: with ``skip_after_zero`` only
    the first one (none after a step scoring 0), else all.
    """
    missing: list[tuple[int, int]] = []
    for t in range(1, n_steps):
        have = len(samples_of(chunks.get(t, ())))
        if have < k:
            missing.append((t, have))
            if skip_after_zero:
                return missing
        elif skip_after_zero and mc_score(chunks.get(t, ()), k) == 0.0:
            return missing
    return missing
