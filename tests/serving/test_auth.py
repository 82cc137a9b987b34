"""Who may call: loopback needs no key; any other address is refused without one; the key is a bearer token."""

from __future__ import annotations

import base64
import subprocess
import sys

import httpx
import pytest
from pydantic import ValidationError

from genprm.serving import ServeConfig, is_loopback
from genprm.serving.gate import authorized

from .support import GatedEngine, running

KEY = "s3cret-key-for-tests"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "::1", "[::1]", "localhost"])
def test_loopback_needs_no_key(host):
    assert is_loopback(host)
    assert ServeConfig(host=host).api_key is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "192.168.0.7", "my-host.example"])
def test_any_other_address_is_refused_without_a_key(host):
    assert not is_loopback(host)
    with pytest.raises(ValidationError, match="needs an API key"):
        ServeConfig(host=host)
    assert ServeConfig(host=host, api_key=KEY).host == host


def test_the_cli_refuses_a_public_bind_without_a_key_before_loading_a_model():
    done = subprocess.run([sys.executable, "-m", "genprm.cli.main", "serve", "--host", "0.0.0.0",
                           "--model", "/nonexistent/model.gguf"], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    assert done.returncode == 2
    assert "needs an API key" in done.stderr and "GENPRM_API_KEY" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_key_is_compared_as_a_bearer_token_or_a_basic_password():
    assert authorized(f"Bearer {KEY}", KEY)
    assert authorized(f"bearer   {KEY}", KEY)
    assert authorized("Basic " + base64.b64encode(f"genprm:{KEY}".encode()).decode(), KEY)
    for wrong in (None, "", KEY, f"Bearer {KEY}x", f"Bearer {KEY[:-1]}", "Token " + KEY, "Basic !!!",
                  "Basic " + base64.b64encode(KEY.encode()).decode()):
        assert not authorized(wrong, KEY), wrong


def test_a_keyed_server_on_any_address_answers_only_with_the_key():
    config = ServeConfig(engine="scripted", host="0.0.0.0", api_key=KEY)
    body = {"problem": "What is 1 + 1?", "steps": ["1 + 1 = 2."]}
    with running(config, GatedEngine()) as url:
        port = url.rsplit(":", 1)[1]
        assert url.bound[0] == "0.0.0.0"  # bound to every address, not loopback only
        missing = httpx.post(f"{url}/v1/verify", json=body)
        wrong = httpx.post(f"{url}/v1/verify", json=body, headers={"Authorization": "Bearer nope-nope-nope"})
        bearer = httpx.post(f"{url}/v1/verify", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
        in_url = httpx.post(f"http://genprm:{KEY}@127.0.0.1:{port}/get_reward", timeout=60, json={
            "query": ["Q: What is 1 + 1?\nA: 2."], "prompts": ["Q: What is 1 + 1?\nA:"]})
        health = httpx.get(f"{url}/health")
        metrics = httpx.get(f"{url}/metrics")
    assert missing.status_code == wrong.status_code == metrics.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert KEY not in missing.text
    assert bearer.status_code == 200 and in_url.status_code == 200, (bearer.text, in_url.text)
    assert health.status_code == 200

