"""The teacher's critique of one solution: generation with executed code, then the earliest-error index.

The paper's rationale synthesis (§3.3): the teacher critiques the whole solution in one assistant
turn that starts with the released prefill. We generate until a code fence closes or the thinking
ends; a chunk with a python block has it run in the critique's own sandbox namespace (``run_code``,
one :class:`genprm.sandbox.CodeSession` per critique) and its output spliced in the verifier's
``[Code Output]`` format, at most ``max_code_rounds`` times. Then the text is cut at its last
``</verify>``, the fixed "Final Conclusion" text is appended, and ``index_samples`` completions (one
``n``-sample request) each give an earliest-error index; ``agreement`` decides which index the
critique stands for.

``finish`` says how the critique ended:

* ``conclusion``: the teacher closed its thinking (``</think>``), as the released loop expects;
* ``eos``: it ended its turn without ``</think>`` (general models do); concluded the same way;
* ``length``: the ``max_tokens`` budget ran out; concluded from the last complete verification;
* ``code-rounds``: the ``max_code_rounds``-th code block ran; generation stops, concluded likewise;
* ``no-verify``: nothing to conclude from (no ``</verify>`` and no code output): no index is drawn.

The released rule cuts at the last ``</verify>``; a teacher that never closes a verify part (small
models often skip the tags) is cut after its last code output instead, so its index is still read.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, cast

from genprm.engines.base import Engine, GenerationRequest, SamplingParams
from genprm.errors import ConfigError
from genprm.protocol.chat import ChatTemplate
from genprm.protocol.parse import last_code_block
from genprm.protocol.prompts import CODE_BLOCK_END, code_output_block
from genprm.protocol.synthesis import continuation_prompt
from genprm.protocol.teacher import (
    FINAL_CONCLUSION,
    INDEX_STOP,
    NO_ERROR_INDEX,
    TEACHER_PREFILL,
    TEACHER_STOPS,
    THINK_END,
    VERIFY_CLOSE,
    normalise_verdict_case,
    parse_index,
    teacher_messages,
)
from genprm.synthesis.consensus import Vote, voted_index
from genprm.verifier.path import derive_seed
from genprm.verifier.records import CodeRun

AGREEMENT_RULES = ("majority", "all", "any")
"""How the index samples of one critique agree on one index:

* ``majority``: more than half of the samples give the same index (unparseable ones count against);
* ``all``: every sample gives the same index;
* ``any``: the most frequent parsed index; a tie goes to the earliest error (a positive index before
  ``-1``, a smaller one before a larger one), so a doubtful solution is not called correct.
"""

FINISHES = ("conclusion", "eos", "length", "code-rounds", "no-verify")


@dataclass(frozen=True)
class CritiqueSettings:
    """How the teacher critiques; defaults are the released code's (index agreement is not published)."""

    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 40
    max_code_rounds: int = 64
    max_tokens: int = 8192
    """Generated tokens per critique, every chunk together (the index completions not included)."""
    index_samples: int = 4
    agreement: str = "majority"
    code_timeout_s: float = 5.0
    index_max_tokens: int = 16
    """Tokens per index completion (``{12}`` is a few; a model that rambles is cut and unparseable)."""

    def __post_init__(self) -> None:
        if self.agreement not in AGREEMENT_RULES:
            raise ConfigError("agreement", self.agreement, f"choose one of {', '.join(AGREEMENT_RULES)}")
        for name in ("max_code_rounds", "max_tokens", "index_samples", "index_max_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(name, getattr(self, name), "must be at least 1")
        if self.code_timeout_s <= 0:
            raise ConfigError("code_timeout_s", self.code_timeout_s, "must be positive")
        SamplingParams(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)  # validates them


@dataclass
class TeacherCritique:
    """One critique of one solution, as the store keeps it."""

    text: str
    """The assistant text from the prefill on: code outputs spliced, cut at the last ``</verify>``,
    the Final Conclusion text appended (ends with ``\\boxed``), verdict casing normalised."""
    code_runs: list[CodeRun]
    index_samples: list[int | None]
    """Each completion's earliest-error index: 1-based paragraph, -1 none, None unparseable."""
    index: int | None
    """The index the samples agree on under the settings' rule; None when they do not."""
    finish: str
    generated_tokens: int
    seconds: float
    index_texts: list[str] = field(default_factory=list)
    """The raw index completions (``{3}``), for the report."""
    agreement: str = "majority"

    @property
    def concluded(self) -> bool:
        """Whether the critique reached the Final Conclusion (every finish but ``no-verify``)."""
        return self.finish != "no-verify"

    @property
    def unanimous(self) -> bool:
        """Every index sample parsed and gave the same index."""
        return bool(self.index_samples) and None not in self.index_samples and len(set(self.index_samples)) == 1

    def step_labels(self, steps: int) -> list[int] | None:
        """The labels the index implies: 1 before it, 0 at it (then stop); all 1 for -1; None without one."""
        if self.index is None:
            return None
        if self.index == NO_ERROR_INDEX:
            return [1] * steps
        return [1] * (self.index - 1) + [0]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> TeacherCritique:
        data = dict(value)
        data["code_runs"] = [CodeRun(**run) for run in data.get("code_runs", [])]
        return cls(**data)


def agreed_index(samples: Sequence[int | None], rule: str) -> int | None:
    """The index ``samples`` agree on under ``rule`` (see :data:`AGREEMENT_RULES`); None when they do not."""
    if rule not in AGREEMENT_RULES:
        raise ConfigError("agreement", rule, f"choose one of {', '.join(AGREEMENT_RULES)}")
    if rule in ("majority", "all"):
        return voted_index(samples, cast(Vote, rule))  # the consensus filter's vote over critiques, here over samples
    counts = Counter(s for s in samples if s is not None)
    if not counts:
        return None
    top = max(counts.values())
    tied = [s for s, c in counts.items() if c == top]
    return min(tied, key=lambda s: (s == NO_ERROR_INDEX, s))


def agreement_rate(critiques: Iterable[TeacherCritique]) -> float | None:
    """The share of concluded critiques whose index samples agreed on an index (None: none concluded)."""
    concluded = [c for c in critiques if c.concluded]
    if not concluded:
        return None
    return sum(c.index is not None for c in concluded) / len(concluded)


def critique_solution(
    engine: Engine,
    chat: ChatTemplate,
    problem: str,
    steps: Sequence[str],
    settings: CritiqueSettings,
    *,
    seed: int,
    run_code: Callable[[str], str],
) -> TeacherCritique:
    """Critique ``steps`` (with their ``Step k: `` prefixes, stripped here) of ``problem``.

    ``run_code`` runs model-written code in one persistent sandbox namespace for this critique (the
    caller opens and closes the session). Engine errors propagate: the caller records the unit failed.
    """
    started = time.perf_counter()
    prompt = continuation_prompt(chat, teacher_messages(problem, steps), "")
    draft = _think(engine, prompt, settings, seed, run_code)
    cut = draft.conclusion_cut()
    if cut is None:
        return TeacherCritique(
            normalise_verdict_case(draft.text), draft.runs, [], None, "no-verify", draft.generated,
            time.perf_counter() - started, agreement=settings.agreement,
        )
    concluded = draft.text[:cut] + FINAL_CONCLUSION
    params = _params(settings, settings.index_max_tokens, (INDEX_STOP,), derive_seed(seed, "index"),
                     n=settings.index_samples)
    [draws] = engine.sample([GenerationRequest(prompt + concluded, params)])
    samples = [parse_index(d.text, len(steps)) for d in draws]
    return TeacherCritique(
        text=normalise_verdict_case(concluded),
        code_runs=draft.runs,
        index_samples=samples,
        index=agreed_index(samples, settings.agreement),
        finish=draft.finish,
        generated_tokens=draft.generated + sum(d.completion_tokens for d in draws),
        seconds=time.perf_counter() - started,
        index_texts=[d.text for d in draws],
        agreement=settings.agreement,
    )


@dataclass
class _Draft:
    """The critique as generated, before its conclusion."""

    text: str = TEACHER_PREFILL
    runs: list[CodeRun] = field(default_factory=list)
    finish: str = ""
    generated: int = 0
    output_end: int | None = None
    """Where the last spliced code output ends in ``text``."""

    def conclusion_cut(self) -> int | None:
        """Where the Final Conclusion goes: at the last ``</verify>`` (the released rule); a teacher that
        never closes a verify part (small models skip the tags) is cut after its last code output.
        """
        at = self.text.rfind(VERIFY_CLOSE)
        return at if at >= 0 else self.output_end


def _think(
    engine: Engine, prompt: str, settings: CritiqueSettings, seed: int, run_code: Callable[[str], str]
) -> _Draft:
    """Generate the critique chunk by chunk, running code, until it ends (see the module docstring)."""
    draft, calls = _Draft(), 0
    while True:
        remaining = settings.max_tokens - draft.generated
        if remaining <= 0:
            draft.finish = "length"
            return draft
        params = _params(settings, remaining, TEACHER_STOPS, derive_seed(seed, "chunk", calls))
        [out] = engine.generate([GenerationRequest(prompt + draft.text, params)])
        calls += 1
        draft.generated += out.completion_tokens
        draft.text += out.text
        if out.stop_string == THINK_END:
            draft.finish = "conclusion"
            return draft
        if out.stop_string != CODE_BLOCK_END:
            draft.finish = "length" if out.finish_reason == "length" else "eos"
            return draft
        code = last_code_block(out.text)
        if code is None:
            continue  # a fence of something other than a python block (the teacher quoting output)
        clock = time.perf_counter()
        output = run_code(code)
        draft.runs.append(CodeRun(len(draft.runs) + 1, code, output, time.perf_counter() - clock))
        draft.text += code_output_block(output)
        draft.output_end = len(draft.text)
        if len(draft.runs) >= settings.max_code_rounds:
            draft.finish = "code-rounds"
            return draft


def _params(
    settings: CritiqueSettings, max_tokens: int, stop: tuple[str, ...], seed: int, n: int = 1
) -> SamplingParams:
    return SamplingParams(
        max_tokens=max_tokens, temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k,
        stop=stop, seed=seed, n=n,
    )
