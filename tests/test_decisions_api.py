"""The loop through the API: every answer logged, feedback heard, a decline respected, across restarts.

Each test starts the app on the session's trained service with its own database, as a new deployment
would: the tests taking ``backend`` run once on a SQLite file and once on a real PostgreSQL server.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app import create_app
from settings import Settings
from tests.utils.service import wait_ready


def started(settings: Settings, service) -> TestClient:
    client = TestClient(create_app(settings, factory=lambda _: service))
    client.__enter__()
    wait_ready(client)
    return client


@pytest.fixture
def state_settings(api_settings, tmp_path, backend) -> Settings:
    return api_settings.model_copy(update={"state_dir": tmp_path / "state", "database_url": backend.url,
                                           "answer_cache_size": 1000})


def recommend(client: TestClient, customer_id: str, top_k: int = 5) -> dict:
    response = client.post("/recommend", json={"customer_id": customer_id, "top_k": top_k})
    assert response.status_code == 200, response.text
    return response.json()


def contact_index_lookups(client: TestClient) -> dict[str, float]:
    """The contact index's hits (answers spared a read of the log) and misses, from /metrics."""
    text = client.get("/metrics").text
    return {kind: float(re.search(rf'^cache_{kind}_total{{cache="contact_index"}} (\S+)$', text, re.M).group(1))
            for kind in ("hits", "misses")}


def test_a_declined_offer_is_not_made_again_and_the_history_survives_a_restart(state_settings, trained_service,
                                                                                 known_customer):
    client = started(state_settings, trained_service)
    first = recommend(client, known_customer)
    assert contact_index_lookups(client) == {"hits": 1.0, "misses": 0.0}, "a new customer's answer reads no history"
    declined = first["recommendations"][0]["product_id"]
    response = client.post("/feedback", json={"request_id": first["request_id"], "customer_id": known_customer,
                                              "product_id": declined, "outcome": "declined"})
    assert response.status_code == 200 and response.json()["outcome"] == "declined"

    second = recommend(client, known_customer)
    assert contact_index_lookups(client) == {"hits": 1.0, "misses": 1.0}, "the second answer reads the history"
    assert declined not in [item["product_id"] for item in second["recommendations"]]
    assert {"product_id": declined, "policy": "contact_policy.suppress_after_decline",
            "reason": "the customer declined it within the last 30 days"} in second["suppressed"]
    client.__exit__(None, None, None)  # graceful shutdown flushes the log

    restarted = started(state_settings, trained_service)
    history = restarted.get(f"/customers/{known_customer}/decisions").json()["decisions"]
    assert [d["request_id"] for d in history[:2]] == [second["request_id"], first["request_id"]]
    offered_first = {offer["product_id"]: offer for offer in history[1]["offers"]}
    assert [o["outcome"] for o in offered_first[declined]["outcomes"]] == ["declined"]
    assert declined in [s["product_id"] for s in recommend(restarted, known_customer)["suppressed"]]
    restarted.__exit__(None, None, None)


def test_feedback_errors_name_what_is_wrong(state_settings, trained_service, known_customer):
    client = started(state_settings, trained_service)
    answer = recommend(client, known_customer, top_k=2)
    offered = answer["recommendations"][0]["product_id"]
    feedback = {"request_id": answer["request_id"], "customer_id": known_customer, "product_id": offered}
    assert client.post("/feedback", json={**feedback, "outcome": "clicked"}).status_code == 200
    assert client.post("/feedback", json={**feedback, "outcome": "accepted"}).status_code == 200
    conflict = client.post("/feedback", json={**feedback, "outcome": "declined"})
    assert conflict.status_code == 409
    assert client.post("/feedback", json={**feedback, "request_id": "no-such-request",
                                          "outcome": "shown"}).status_code == 404
    not_offered = client.post("/feedback", json={**feedback, "product_id": "no_such_product", "outcome": "shown"})
    assert not_offered.status_code == 404
    bad = client.post("/feedback", json={**feedback, "outcome": "loved it"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "outcome"
    far = client.get(f"/customers/{known_customer}/decisions", params={"offset": 2 ** 63})  # found by the fuzzer
    assert far.status_code == 422 and far.json()["detail"][0]["field"] == "query.offset"
    assert offered not in [i["product_id"] for i in recommend(client, known_customer)["recommendations"]], \
        "an accepted offer counts as held"
    client.__exit__(None, None, None)


def test_answers_from_the_cache_are_logged_too(state_settings, trained_service, known_customer):
    client = started(state_settings, trained_service)
    requests = [recommend(client, known_customer, top_k=3)["request_id"] for _ in range(3)]
    client.__exit__(None, None, None)
    restarted = started(state_settings, trained_service)
    logged = restarted.get(f"/customers/{known_customer}/decisions", params={"limit": 3}).json()["decisions"]
    assert [d["request_id"] for d in logged] == requests[::-1]
    assert [d["cached"] for d in logged] == [True, True, False]
    assert all("profile" not in d and "posts" not in d for d in logged)
    restarted.__exit__(None, None, None)


@pytest.mark.parametrize("mode", ["best_effort", "required"])
def test_a_lost_database_degrades_in_best_effort_and_refuses_in_required(state_settings, backend, trained_service,
                                                                         known_customer, mode):
    """The SQLite file moved away, or the PostgreSQL server stopped, while serving."""
    client = started(state_settings.model_copy(update={"decision_log": mode}), trained_service)
    assert recommend(client, known_customer)["recommendations"]
    backend.break_()
    try:
        response = client.post("/recommend", json={"customer_id": known_customer, "top_k": 5})
        if mode == "best_effort":
            assert response.status_code == 200
            client.post("/recommend", json={"customer_id": known_customer, "top_k": 4})
            client.app.state.service_state.interactions.log.flush(15)  # the writer has tried (and failed)
            health = client.get("/health").json()
            assert health["ready"] and "decision log (best_effort) unhealthy" in health["detail"]
            assert health["decision_log"]["dropped"] >= 1
            assert "decision_log_dropped" in client.get("/metrics").text
        else:
            assert response.status_code == 503 and "decision log unavailable" in response.json()["error"]
    finally:
        backend.restore()
    client.__exit__(None, None, None)


def test_with_the_log_off_nothing_is_recorded_and_feedback_says_why(api_settings, trained_service, known_customer,
                                                                   tmp_path):
    settings = api_settings.model_copy(update={"state_dir": tmp_path / "state", "decision_log": "off"})
    client = started(settings, trained_service)
    answer = recommend(client, known_customer)
    refused = client.post("/feedback", json={"request_id": answer["request_id"], "customer_id": known_customer,
                                             "product_id": answer["recommendations"][0]["product_id"],
                                             "outcome": "declined"})
    assert refused.status_code == 503 and "DECISION_LOG=off" in refused.json()["error"]
    assert client.get(f"/customers/{known_customer}/decisions").status_code == 503
    assert client.get("/health").json()["decision_log"]["mode"] == "off"
    assert not (tmp_path / "state").exists(), "the log off creates no database"
    client.__exit__(None, None, None)


def test_the_migrate_command_creates_the_default_database(tmp_path):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "STATE_DIR": str(tmp_path / "state")}
    for _ in range(2):  # the second run finds the schema up to date
        done = subprocess.run([sys.executable, "cli.py", "migrate"], cwd=root, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    assert (tmp_path / "state" / "decisions.sqlite3").is_file()
    bad = subprocess.run([sys.executable, "cli.py", "migrate"], cwd=root, capture_output=True, text=True, timeout=300,
                         env={**env, "DECISION_LOG": "sometimes"})
    assert bad.returncode != 0 and "DECISION_LOG" in bad.stderr


def test_required_mode_acknowledges_an_answer_only_once_it_is_written(api_settings, trained_service,
                                                                      known_customer, tmp_path):
    settings = api_settings.model_copy(update={"state_dir": tmp_path / "state", "decision_log": "required"})
    client = started(settings, trained_service)
    answer = recommend(client, known_customer)
    store = client.app.state.service_state.interactions.store
    assert answer["request_id"] in [h.decision.request_id for h in store.decisions_of(known_customer)]
    client.__exit__(None, None, None)


def test_a_killed_server_in_required_mode_loses_no_acknowledged_decision(api_settings, trained_service,
                                                                        known_customer, tmp_path):
    """kill -9 right after the answers: every request id the client got back is in the database."""
    import signal

    import httpx

    from decision_store import DecisionStore
    from tests.utils.service import served

    state_dir = tmp_path / "state"
    with served(api_settings, state_dir, DECISION_LOG="required") as (server, url):
        acknowledged = []
        for top_k in (1, 2, 3, 4, 5):
            response = httpx.post(f"{url}/recommend", json={"customer_id": known_customer, "top_k": top_k}, timeout=30)
            assert response.status_code == 200
            acknowledged.append(response.json()["request_id"])
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
    store = DecisionStore(f"sqlite:///{state_dir / 'decisions.sqlite3'}")
    logged = {h.decision.request_id for h in store.decisions_of(known_customer, limit=50)}
    store.close()
    assert set(acknowledged) <= logged
