"""Clients of ``genprm serve`` for the RL frameworks people use (docs/serving.md has the recipes).

- OpenRLHF needs only a URL: :func:`openrlhf.openrlhf_flags`.
- verl: ``genprm/integrations/verl.py`` is a custom reward file (``compute_score``, ``compute_score_async``).
- TRL: :class:`trl.GenPRMReward` is an async ``reward_funcs`` entry for ``GRPOTrainer``.

Each needs only ``httpx`` (the ``serve`` extra, or ``openai``), not the framework itself.
"""

from genprm.integrations.client import GenPRMClient, RewardServerError
from genprm.integrations.openrlhf import openrlhf_flags, reward_url

__all__ = ["GenPRMClient", "RewardServerError", "openrlhf_flags", "reward_url"]
