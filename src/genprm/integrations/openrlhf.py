"""OpenRLHF talks to ``genprm serve`` by URL alone: this gives the flags to pass.

OpenRLHF's ``--reward.remote_url`` (``--remote_rm_url`` in older releases) POSTs ``{"query", "prompts",
"labels"}`` to the URL, one sample per request, and reads ``rewards``, ``scores`` and ``extra_logs``
from the answer; it sends no headers of its own, so a key travels in the URL
(``http://genprm:KEY@host:port/get_reward``), which its HTTP client sends as Basic credentials.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit


def reward_url(url: str = "http://127.0.0.1:8000", api_key: str | None = None) -> str:
    """The ``/get_reward`` URL to give OpenRLHF, the key (if any) in its credentials part."""
    parts = urlsplit(url.rstrip("/"))
    netloc = parts.netloc.rpartition("@")[2]
    if api_key:
        netloc = f"genprm:{quote(api_key, safe='')}@{netloc}"
    path = parts.path if parts.path.endswith("/get_reward") else parts.path + "/get_reward"
    return urlunsplit((parts.scheme, netloc, path, "", ""))


def openrlhf_flags(url: str = "http://127.0.0.1:8000", api_key: str | None = None, *,
                   label_key: str | None = None, legacy: bool = False) -> list[str]:
    """Command-line flags for ``openrlhf.cli.train_ppo_ray``: the reward URL, and the dataset's label key
    (only needed when the server mixes in the outcome). ``legacy``: the flag names of older releases.
    """
    flags = ["--remote_rm_url" if legacy else "--reward.remote_url", reward_url(url, api_key)]
    if label_key is not None:
        flags += ["--label_key" if legacy else "--data.label_key", label_key]
    return flags
