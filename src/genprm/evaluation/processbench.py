"""ProcessBench evaluation: data, scoring into the store, and the paper's table.

``evaluate_processbench`` scores what the store lacks, then computes every figure from saved
rewards: Pass@1 (path 0) and Maj@k for every k <= N, per subset and Avg, a threshold sweep,
and the critic baseline when asked. ``matrices_from_store`` reads saved rewards back without a model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from genprm.errors import ConfigError, InputError
from genprm.evaluation.critic import Critic, CriticSettings
from genprm.evaluation.metrics import SubsetScore, average_f1, predicted_first_error, processbench_score
from genprm.evaluation.scoring import (
    RewardMatrix,
    StoreScorer,
    complete,
    path_settings_key,
    reward_matrix,
    stored_compute,
    stored_failure,
)
from genprm.io import SolutionInput, validate_record, write_json_atomic
from genprm.store import RunStore
from genprm.verifier.config import VerifyConfig
from genprm.verifier.records import ComputeUsage

SUBSETS = ("gsm8k", "math", "olympiadbench", "omnimath")
DEFAULT_DATA = Path("../shared/data/processbench")
RESULT_FILE = "processbench.json"


@dataclass(frozen=True)
class PublishedRow:
    """A published ProcessBench F1 Avg, shown beside ours for orientation only."""

    name: str
    pass1: float | None
    maj8: float | None = None


PUBLISHED = (
    PublishedRow("GenPRM-1.5B", 57.3, 63.4),
    PublishedRow("GenPRM-7B", 75.2, 80.5),
    PublishedRow("GenPRM-32B", 77.6, 82.6),
    PublishedRow("Qwen2.5-Math-PRM-7B", 73.5),
    PublishedRow("Qwen2.5-Math-PRM-72B", 78.3),
    PublishedRow("GPT-4o (critic)", 61.9),
)


@dataclass(frozen=True)
class ProcessBenchSample:
    subset: str
    label: int
    item: SolutionInput

    @property
    def id(self) -> str:
        return str(self.item.record.get("id", self.item.key))


def load_processbench(
    data_dir: str | Path, subsets: Sequence[str] = SUBSETS, limit: int | None = None
) -> list[ProcessBenchSample]:
    """Read the subsets' JSON files; ``limit`` K takes per subset the first ceil(K/2) samples with an
    error and the first floor(K/2) without, in file order (the files are sorted by label, so the
    first K alone would have no correct samples and no F1).
    """
    unknown = [s for s in subsets if s not in SUBSETS]
    if unknown:
        raise InputError(f"unknown subset(s) {unknown}; choose from {list(SUBSETS)}", field="subsets")
    samples: list[ProcessBenchSample] = []
    for subset in subsets:
        path = Path(data_dir) / f"{subset}.json"
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError("no such file (pass --data with the ProcessBench JSON files)", path=str(path)) from None
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"cannot read: {exc}", path=str(path)) from None
        if not isinstance(records, list):
            raise InputError("expected a JSON list of samples", path=str(path))
        parsed = [_sample(subset, obj, i, str(path)) for i, obj in enumerate(records)]
        samples.extend(_balanced(parsed, limit))
    return samples


def _sample(subset: str, obj: Any, position: int, path: str) -> ProcessBenchSample:
    item = validate_record(obj, position=position, path=path)
    label = obj.get("label")
    if not isinstance(label, int) or isinstance(label, bool) or not -1 <= label < len(item.steps):
        raise InputError(
            f"must be -1 or a step index below {len(item.steps)}, got {label!r}", path=path, record=position,
            field="label",
        )
    return ProcessBenchSample(subset, label, item)


def _balanced(samples: list[ProcessBenchSample], limit: int | None) -> list[ProcessBenchSample]:
    if limit is None or limit >= len(samples):
        return samples
    wrong = [s for s in samples if s.label != -1][: math.ceil(limit / 2)]
    right = [s for s in samples if s.label == -1][: limit // 2]
    chosen = {id(s) for s in wrong + right}
    return [s for s in samples if id(s) in chosen]


@dataclass
class ProcessBenchResults:
    """Every figure of one evaluation; ``to_json`` is what ``RUN/processbench.json`` holds."""

    model: str
    n: int
    threshold: float
    settings: str
    subsets: list[str]
    rows: dict[str, dict[str, SubsetScore]]
    """Method ("Pass@1", "Maj@2", ..., "Critic") -> subset -> score."""
    sweep: list[tuple[float, float | None]]
    """(threshold, Avg F1 at Maj@N) computed from the saved rewards."""
    samples: list[dict[str, Any]] = field(default_factory=list)
    critic_settings: str | None = None
    paths_dependent: bool = False
    """Adaptive options or early stopping: paths depend on each other, so only the run's own Maj@N."""
    compute: dict[str, Any] | None = None
    """With ``paths_dependent``: path-steps run against fixed N on the same steps, and tokens."""
    failed: dict[str, str] = field(default_factory=dict)
    """Sample key -> why its verification failed; such a sample counts as wrong in every row."""

    def average(self, method: str) -> float | None:
        return average_f1(list(self.rows[method].values()))

    def averaged_subsets(self, method: str) -> list[str]:
        """The subsets ``average(method)`` rests on: those with an F1 (a subset without erroneous or
        without correct samples has none).
        """
        return [s for s, score in self.rows[method].items() if score.f1 is not None]

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": "processbench",
            "model": self.model,
            "n": self.n,
            "threshold": self.threshold,
            "settings": self.settings,
            "critic_settings": self.critic_settings,
            "subsets": self.subsets,
            "rows": {m: {s: asdict(v) for s, v in per.items()} for m, per in self.rows.items()},
            "average": {m: self.average(m) for m in self.rows},
            "average_of": {m: self.averaged_subsets(m) for m in self.rows},
            "failed": len(self.failed),
            "sweep": [{"threshold": t, "f1_avg": f} for t, f in self.sweep],
            "paths_dependent": self.paths_dependent,
            "compute": self.compute,
            "published": [asdict(p) for p in PUBLISHED],
            "samples": self.samples,
        }


def methods(n: int, *, paths_dependent: bool = False) -> list[tuple[str, int]]:
    """Pass@1 is path 0 alone; Maj@k averages paths 0..k-1.

    When paths depend on each other (adaptive options, early stopping) the first k paths are not a
    run with k paths, so only the run's own figure is a method: the mean of the paths it ran.
    """
    if paths_dependent:
        return [("Pass@1", 1)] if n <= 1 else [(f"Maj@{n}", n)]
    return [("Pass@1", 1)] + [(f"Maj@{k}", k) for k in range(2, n + 1)]


def sweep_thresholds(threshold: float, step: float, *, config: VerifyConfig | None = None) -> list[float]:
    """Thresholds at which saved rewards give exact figures.

    Fixed N: all of them. Early stopping: those at or above the run's (a solution stopped at its
    first error below ``threshold`` has its first error below any higher one on the steps it ran).
    Adaptive options: none (how many paths and which mode ran depended on the run's threshold).
    """
    grid = [round(i * step, 4) for i in range(1, round(1 / step))]
    if config is None or config.paths_independent:
        return grid
    if config.adaptive:
        return []
    return [t for t in grid if t >= threshold]


def compute_results(
    samples: Sequence[ProcessBenchSample],
    matrices: dict[str, RewardMatrix],
    *,
    model: str,
    n: int,
    threshold: float,
    settings: str,
    critic: dict[str, int | None] | None = None,
    critic_settings: str | None = None,
    sweep_step: float = 0.05,
    config: VerifyConfig | None = None,
    compute: dict[str, Any] | None = None,
    failed: dict[str, str] | None = None,
) -> ProcessBenchResults:
    """All figures from saved rewards: ``matrices[sample key]`` is ``[step][path]``.

    ``config`` (the verifier's) says whether paths depend on each other, which limits the methods
    and the sweep to what the saved rewards determine exactly. ``failed`` (sample key -> reason)
    names samples whose verification failed: they have no matrix and count as wrong.
    """
    dependent = config is not None and not config.paths_independent
    chosen = methods(n, paths_dependent=dependent)
    subsets = list(dict.fromkeys(s.subset for s in samples))
    rows: dict[str, dict[str, SubsetScore]] = {}
    failures = failed or {}

    def predict(s: ProcessBenchSample, k: int, t: float) -> int | None:
        return None if s.item.key in failures else predicted_first_error(matrices[s.item.key], k, t)

    def maj(k: int, t: float) -> dict[str, SubsetScore]:
        return _score_by_subset(samples, subsets, lambda s: predict(s, k, t))

    for name, k in chosen:
        rows[name] = maj(k, threshold)
    if critic is not None:
        rows["Critic"] = _score_by_subset(samples, subsets, lambda s: critic.get(s.item.key))
    sweep = [(t, average_f1(list(maj(n, t).values()))) for t in sweep_thresholds(threshold, sweep_step, config=config)]
    per_sample = [
        {
            "key": s.item.key,
            "id": s.id,
            "subset": s.subset,
            "label": s.label,
            "steps": len(s.item.steps),
            "predictions": {name: predict(s, k, threshold) for name, k in chosen},
            **({"critic": critic.get(s.item.key)} if critic is not None else {}),
            **({"failed": failures[s.item.key]} if s.item.key in failures else {}),
        }
        for s in samples
    ]
    return ProcessBenchResults(
        model, n, threshold, settings, subsets, rows, sweep, per_sample, critic_settings, dependent, compute, failures
    )


def _score_by_subset(
    samples: Sequence[ProcessBenchSample], subsets: list[str], predict: Callable[[ProcessBenchSample], int | None]
) -> dict[str, SubsetScore]:
    scores = {}
    for subset in subsets:
        chosen = [s for s in samples if s.subset == subset]
        scores[subset] = processbench_score([predict(s) for s in chosen], [s.label for s in chosen])
    return scores


@dataclass(frozen=True)
class Shard:
    """Part ``index`` (1-based) of ``count``: every count-th sample, so processes sharing one run
    folder (one per GPU, or per core on a CPU) split a benchmark between them.
    """

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"I/K"``, as ``--shard`` spells it."""
        left, _, right = text.partition("/")
        try:
            shard = cls(int(left), int(right))
        except ValueError:
            raise ConfigError("--shard", text, "write it as I/K, e.g. 1/2") from None
        if not 1 <= shard.index <= shard.count:
            raise ConfigError("--shard", text, "needs 1 <= I <= K")
        return shard

    def pick(self, samples: Sequence[ProcessBenchSample]) -> list[ProcessBenchSample]:
        return list(samples[self.index - 1 :: self.count])


def evaluate_processbench(
    samples: Sequence[ProcessBenchSample],
    scorer: StoreScorer,
    *,
    critic: Critic | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
    shard: Shard | None = None,
) -> StoredFigures:
    """Score what the store lacks (verifier, then the critic if given) and compute every figure.

    With ``shard`` only that part of ``samples`` is scored; the figures cover every sample once the
    store holds them all (the shard that finishes last writes ``processbench.json``), and the samples
    stored so far before that. ``on_progress(phase, done, total)`` hears "verify" and "critic".
    """
    items = [s.item for s in (shard.pick(samples) if shard else samples)]
    scorer.score(items, lambda p: on_progress("verify", p.done, p.total) if on_progress else None)
    if critic is not None:
        critic.run(items, lambda done, total: on_progress("critic", done, total) if on_progress else None)
    figures = stored_figures(
        scorer.store, samples, scorer.config, scorer.engine.model_id, critic=critic.settings if critic else None,
        template=scorer.template,
    )
    if figures.complete:
        write_results(scorer.store, figures.results)
    return figures


@dataclass(frozen=True)
class StoredFigures:
    """Figures over the samples a run has stored so far (nothing computed, no model loaded)."""

    results: ProcessBenchResults
    stored: int
    """Samples with every path the settings ask for (the figures rest on these and the failed ones)."""
    total: int
    critic_missing: int
    """Stored samples without a critic judgement (the critic row is left out unless this is 0)."""
    failed: int = 0
    """Samples whose verification failed (counted as wrong; ``--retry-failed`` tries them again)."""

    @property
    def complete(self) -> bool:
        return self.stored + self.failed == self.total and self.critic_missing == 0


def stored_figures(
    store: RunStore,
    samples: Sequence[ProcessBenchSample],
    config: VerifyConfig,
    model_id: str,
    *,
    critic: CriticSettings | None = None,
    template: dict[str, str] | None = None,
) -> StoredFigures:
    """The figures of ``evaluate_processbench`` from what the store holds: for watching a long run
    (SQLite lets a reader in beside the writer) or reading one that was stopped. ``template``: the
    run's chat template override fields (``protocol.chat.template_fields``), if it had one.
    """
    key = path_settings_key(model_id, config, template)
    ready = [s for s in samples if complete(store, s.item, key, config)]
    failures = {s.item.key: f.reason for s in samples if (f := stored_failure(store, s.item, key, config))}
    counted = [s for s in samples if s in ready or s.item.key in failures]
    predictions, missing = None, 0
    reader = Critic(store, None, critic, model_id=model_id, template=template) if critic is not None else None
    if reader is not None:
        judged = reader.stored_predictions([s.item for s in counted])
        missing = len(counted) - len(judged)
        predictions = judged if missing == 0 else None
    usage = None if config.paths_independent else stored_compute(store, [s.item for s in ready], key)
    results = compute_results(
        counted, matrices_from_store(store, ready, key, config.n), model=model_id, n=config.n,
        threshold=config.threshold, settings=key, critic=predictions,
        critic_settings=reader.key if reader else None, config=config,
        compute=_compute_figures(usage, config.n * sum(len(s.item.steps) for s in ready)), failed=failures,
    )
    return StoredFigures(results, len(ready), len(samples), missing, len(failures))


def _compute_figures(usage: ComputeUsage | None, every_step: int) -> dict[str, Any] | None:
    """Path-steps run against fixed N on the steps verified and on every step (early stopping skips some)."""
    if usage is None:
        return None
    return {
        "path_steps": usage.path_steps, "path_steps_fixed": usage.path_steps_fixed,
        "path_steps_every_step": every_step, "generated_tokens": usage.generated_tokens,
        "cancelled_paths": usage.cancelled_paths,
    }


def write_results(store: RunStore, results: ProcessBenchResults) -> Path:
    """Save the figures beside the store, for ``genprm report`` and for people."""
    return write_json_atomic(store.run_dir / RESULT_FILE, results.to_json())


def matrices_from_store(
    store: RunStore, samples: Sequence[ProcessBenchSample], settings: str, n: int
) -> dict[str, RewardMatrix]:
    """Reward matrices of stored samples (for re-scoring at other thresholds without a model)."""
    return {s.item.key: reward_matrix(store.paths(s.item.key, settings, n), len(s.item.steps), n) for s in samples}
