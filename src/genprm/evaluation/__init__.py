"""Evaluation as the paper reports it: ProcessBench, Best-of-N and critique-refine, resumable."""

from genprm.evaluation.bon import BonProblem, BonResults, evaluate_bon, load_bon
from genprm.evaluation.metrics import SubsetScore, average_f1, processbench_score
from genprm.evaluation.processbench import (
    ProcessBenchResults,
    ProcessBenchSample,
    evaluate_processbench,
    load_processbench,
)
from genprm.evaluation.refine import Refiner, RefineSettings
from genprm.evaluation.refine_data import load_problems
from genprm.evaluation.refine_results import evaluate_refine
from genprm.evaluation.scoring import StoreScorer

__all__ = [
    "BonProblem",
    "BonResults",
    "RefineSettings",
    "Refiner",
    "evaluate_bon",
    "evaluate_refine",
    "load_bon",
    "load_problems",
    "ProcessBenchResults",
    "ProcessBenchSample",
    "StoreScorer",
    "SubsetScore",
    "average_f1",
    "evaluate_processbench",
    "load_processbench",
    "processbench_score",
]
