"""Run independent units of work with a bounded number in flight; results come back as they finish.

A pipeline stage splits its work into units (a problem's draws, a solution's rollout prefix, one
teacher critique, one sample's verification), hands them to an :class:`Executor` with a picklable
work function of (the worker's :class:`Resources`, the unit), and stores each :class:`Outcome` as
it arrives, from one thread (the driver), so the store has a single writer. Failures are data: an
``Outcome`` carries the error text instead of raising, and the stage records it and goes on.

:class:`LocalExecutor` runs units on threads of this process over the models the caller holds
(:class:`HeldModels`, or :class:`Roles` loaded from :class:`RoleSpec`). :mod:`genprm.executor.ray`
runs them on Ray actors, one per engine replica, each holding its own models (``genprm[ray]``).
"""

from genprm.executor.base import Executor, NoResources, Outcome, Resources, UnitRun, Work
from genprm.executor.local import LocalExecutor
from genprm.executor.roles import HeldModels, Roles, RoleSpec

__all__ = [
    "Executor",
    "HeldModels",
    "LocalExecutor",
    "NoResources",
    "Outcome",
    "Resources",
    "RoleSpec",
    "Roles",
    "UnitRun",
    "Work",
]
