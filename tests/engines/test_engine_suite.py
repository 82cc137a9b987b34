"""The shared engine suite against every engine: llama.cpp in process, an OpenAI-compatible server, vLLM.

The first two run the demo model; the OpenAI engine talks to a real ``llama_cpp.server`` on loopback,
and its results must agree with the in-process engine (the reference). The vLLM engine runs the
Hugging Face folder named by ``GENPRM_VLLM_MODEL`` (a ChatML model such as Qwen2.5) and skips where
vLLM is not importable; it has no reference here, because the only other engine of the same model
runs it quantised (``test_vllm_engine.py`` compares the two within a tolerance). In vLLM's venv:

    GENPRM_VLLM_MODEL=/path/to/hf-folder python -m pytest -q tests/engines -k vllm

To run the suite against another OpenAI-compatible server too (vLLM, SGLang; a ChatML model), set
``GENPRM_TEST_OPENAI_URL=http://host:port``: it is added as one more engine, without a reference.
"""

from __future__ import annotations

import os

import pytest

from .engine_suite import *  # noqa: F403  (the shared test functions)

pytestmark = pytest.mark.e2e

EXTERNAL_URL = os.environ.get("GENPRM_TEST_OPENAI_URL")
BACKENDS = ["llamacpp", "openai", "vllm"] + (["external"] if EXTERNAL_URL else [])


@pytest.fixture(scope="module", params=BACKENDS)
def engine_and_reference(request):
    if request.param == "llamacpp":
        return request.getfixturevalue("inprocess_engine"), None
    if request.param == "openai":
        return request.getfixturevalue("openai_engine"), request.getfixturevalue("inprocess_engine")
    if request.param == "vllm":
        return request.getfixturevalue("vllm_engine"), None
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
