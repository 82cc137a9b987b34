"""genprm: generative process reward models (GenPRM, arXiv 2504.00891).

A verifier model checks a math solution step by step: it writes an analysis, writes Python that
tests the step (run in a sandbox, its output spliced back), then judges Yes or No. The step's
reward is P(Yes) at the verdict token, averaged over N sampled paths.

    from genprm import verify, VerifyConfig
    results = verify("solutions.jsonl", model="smollm2-135m-instruct", config=VerifyConfig(n=4))
"""

from genprm.errors import ConfigError, EngineError, GenPRMError, InputError, SandboxUnavailableError
from genprm.verifier import SolutionResult, SolutionVerifier, VerifyConfig, verify

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "EngineError",
    "GenPRMError",
    "InputError",
    "SandboxUnavailableError",
    "SolutionResult",
    "SolutionVerifier",
    "VerifyConfig",
    "__version__",
    "verify",
]
