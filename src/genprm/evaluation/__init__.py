"""Evaluation as the paper reports it: ProcessBench, Best-of-N and critique-refine, resumable."""

from genprm.evaluation.metrics import SubsetScore, average_f1, processbench_score
from genprm.evaluation.processbench import (
    ProcessBenchResults,
    ProcessBenchSample,
    evaluate_processbench,
    load_processbench,
)
from genprm.evaluation.scoring import StoreScorer

__all__ = [
    "ProcessBenchResults",
    "ProcessBenchSample",
    "StoreScorer",
    "SubsetScore",
    "average_f1",
    "evaluate_processbench",
    "load_processbench",
    "processbench_score",
]
