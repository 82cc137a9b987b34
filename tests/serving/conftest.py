"""The serving tests need the serve extra (FastAPI, uvicorn, prometheus-client); CI's setup installs it."""

from __future__ import annotations

import importlib.util

import pytest

_MISSING = [m for m in ("fastapi", "uvicorn", "prometheus_client", "httpx") if importlib.util.find_spec(m) is None]
if _MISSING:
    pytest.skip(f"needs the serve extra ({', '.join(_MISSING)} missing): pip install 'genprm[serve]'",
                allow_module_level=True)
