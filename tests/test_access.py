"""Key scopes, constant-time key checks, rate limits and draining on SIGTERM, through the public surface."""
from __future__ import annotations

import hmac
import signal
import threading

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

import access
from access import RateLimiter, find_key, parse_api_keys
from app import create_app
from settings import Settings
from tests.utils.service import served, wait_ready

READ_KEY, ADMIN_KEY, PLAIN_KEY = "reader-secret", "admin-secret", "plain-secret"


@pytest.fixture(scope="module")
def keyed_client(api_settings, trained_service):
    settings = api_settings.model_copy(update={"api_keys": [f"{READ_KEY}:read", f"{ADMIN_KEY}:admin", PLAIN_KEY],
                                               "decision_log": "off"})
    with TestClient(create_app(settings, factory=lambda _: trained_service)) as client:
        wait_ready(client)
        yield client


def test_a_read_key_reads_but_cannot_use_admin_routes(keyed_client):
    for key in (READ_KEY, PLAIN_KEY):  # a key configured without a scope reads only
        assert keyed_client.get("/products", headers={"X-API-Key": key}).status_code == 200
        refused = keyed_client.post("/fairness/run", headers={"X-API-Key": key})
        assert refused.status_code == 403
        assert "admin key" in refused.json()["error"]
        assert key not in refused.text  # a secret is never echoed


def test_an_admin_key_reads_and_runs_the_audit(keyed_client):
    assert keyed_client.get("/products", headers={"X-API-Key": ADMIN_KEY}).status_code == 200
    audit = keyed_client.post("/fairness/run", headers={"X-API-Key": ADMIN_KEY})
    assert audit.status_code == 200
    assert audit.json()["entries"]


def test_bad_scopes_refuse_to_start_naming_the_entry_not_the_key():
    with pytest.raises(ValidationError) as refused:
        Settings(api_keys="k1:read,very-secret-value:superuser")
    assert "entry 2" in str(refused.value) and "superuser" in str(refused.value)
    assert "very-secret-value" not in str(refused.value)
    with pytest.raises(ValidationError, match="entry 1: the key before ':admin' is empty"):
        Settings(api_keys=":admin")


def test_every_key_is_compared_whichever_matches(monkeypatch):
    """Constant time: the number and length of comparisons do not depend on which key matches, if any."""
    keys = parse_api_keys(["first:read", "second:admin", "third"])
    compared: list[tuple[int, int]] = []
    compare = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append((len(a), len(b)))
        return compare(a, b)

    monkeypatch.setattr(access.hmac, "compare_digest", counting)
    for presented, expected in (("first", keys[0]), ("third", keys[2]), ("f", None), ("x" * 1000, None)):
        compared.clear()
        assert find_key(keys, presented) == expected
        assert compared == [(32, 32)] * 3


def test_the_rate_limit_answers_429_with_retry_after_per_key(api_settings, trained_service):
    settings = api_settings.model_copy(update={"api_keys": [f"{READ_KEY}:read", f"{ADMIN_KEY}:admin"],
                                               "rate_limit_per_minute": 3, "decision_log": "off"})
    with TestClient(create_app(settings, factory=lambda _: trained_service)) as client:
        wait_ready(client)
        answers = [client.get("/products", headers={"X-API-Key": READ_KEY}) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert int(answers[-1].headers["Retry-After"]) >= 1
        assert "3 requests per minute" in answers[-1].json()["error"]
        assert client.get("/products", headers={"X-API-Key": ADMIN_KEY}).status_code == 200  # its own bucket
        assert client.get("/health").status_code == 200  # probes are never limited


def test_a_bucket_refills_with_time():
    now = [0.0]
    limiter = RateLimiter(per_minute=60, clock=lambda: now[0])
    assert all(limiter.wait_seconds("k") == 0 for _ in range(60))
    assert limiter.wait_seconds("k") == 1
    now[0] += 1.0  # one token back per second at 60 a minute
    assert limiter.wait_seconds("k") == 0
    assert limiter.wait_seconds("k") == 1
    assert RateLimiter(per_minute=0).wait_seconds("k") == 0  # 0: no limit


def test_sigterm_lets_the_request_in_flight_finish_then_exits_zero(api_settings, trained_service, tmp_path):
    with served(api_settings, tmp_path / "state") as (server, url):
        answers: list[httpx.Response] = []
        in_flight = threading.Thread(target=lambda: answers.append(httpx.post(f"{url}/fairness/run", timeout=120)))
        in_flight.start()
        threading.Event().wait(0.5)  # the audit takes seconds: the request is in flight when the signal comes
        server.send_signal(signal.SIGTERM)
        in_flight.join(timeout=120)
        assert server.wait(timeout=60) == 0
    assert answers and answers[0].status_code == 200
    assert answers[0].json()["entries"]
