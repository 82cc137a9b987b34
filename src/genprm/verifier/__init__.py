"""Step-by-step verification: the GenPRM protocol driven against an engine and a sandbox."""

from genprm.verifier.api import Progress, verify
from genprm.verifier.config import VerifyConfig
from genprm.verifier.records import CodeRun, PathStep, SolutionResult, StepResult
from genprm.verifier.solution import SolutionVerifier

__all__ = [
    "CodeRun",
    "PathStep",
    "Progress",
    "SolutionResult",
    "SolutionVerifier",
    "StepResult",
    "VerifyConfig",
    "verify",
]
