"""The shared engine suite against the in-process llama.cpp engine and the OpenAI-compatible engine.

Both run the demo model; the OpenAI engine talks to a real ``llama_cpp.server`` on loopback, and its
results must agree with the in-process engine (the reference). To run the suite against another
OpenAI-compatible server too (vLLM, SGLang; a model with a ChatML vocabulary such as Qwen's), set
``GENPRM_TEST_OPENAI_URL=http://host:port``: it is added as a third engine, without a reference.
"""

from __future__ import annotations

import os

import pytest

from .engine_suite import *  # noqa: F403  (the shared test functions)

pytestmark = pytest.mark.e2e

EXTERNAL_URL = os.environ.get("GENPRM_TEST_OPENAI_URL")
BACKENDS = ["llamacpp", "openai"] + (["external"] if EXTERNAL_URL else [])


@pytest.fixture(scope="module", params=BACKENDS)
def engine_and_reference(request):
    if request.param == "llamacpp":
        return request.getfixturevalue("inprocess_engine"), None
    if request.param == "openai":
        return request.getfixturevalue("openai_engine"), request.getfixturevalue("inprocess_engine")
    from genprm.engines.openai_compat import OpenAIEngine

    external = OpenAIEngine(base_url=EXTERNAL_URL, timeout_s=300)
    request.addfinalizer(external.close)
    return external, None


@pytest.fixture(scope="module")
def engine(engine_and_reference):
    return engine_and_reference[0]


@pytest.fixture(scope="module")
def reference(engine_and_reference):
    return engine_and_reference[1]
