"""Run independent units of work with a bounded number in flight; results come back as they finish.

A pipeline stage splits its work into units (a problem's draws, a solution's rollout prefix, one
teacher critique), hands them to an :class:`Executor`, and stores each :class:`Outcome` as it
arrives, from one thread (the driver), so the store has a single writer. Failures are data: an
``Outcome`` carries the error text instead of raising, and the stage records it and goes on.

:class:`LocalExecutor` runs units on threads of this process over engines the work function closes
over (vLLM batches concurrent calls; llama.cpp serialises them). A distributed implementation
(Ray actors each holding an engine) implements the same two methods.
"""

from genprm.executor.base import Executor, Outcome, UnitRun
from genprm.executor.local import LocalExecutor

__all__ = ["Executor", "LocalExecutor", "Outcome", "UnitRun"]
