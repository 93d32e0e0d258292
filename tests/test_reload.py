"""Hot reload through the API: new rules swapped in while serving, a broken file refused with the reason."""
from __future__ import annotations

import time

import pytest
import yaml
from fastapi.testclient import TestClient

from app import create_app
from recommendation_service import RecommendationService
from settings import PROJECT_ROOT
from tests.utils.service import wait_ready

ADMIN = {"X-API-Key": "reload-admin"}
READER = {"X-API-Key": "reload-reader"}


@pytest.fixture(scope="module")
def reloadable(api_settings, trained_service, tmp_path_factory):
    """An app whose rules file the test may edit; its service starts from the saved models."""
    rules_file = tmp_path_factory.mktemp("rules") / "business_rules.yaml"
    rules_file.write_text((PROJECT_ROOT / "config" / "business_rules.yaml").read_text())
    settings = api_settings.model_copy(update={"rules_file": rules_file, "decision_log": "off",
                                               "api_keys": ["reload-admin:admin", "reload-reader:read"]})
    with TestClient(create_app(settings, factory=RecommendationService.start)) as client:
        wait_ready(client, seconds=600)
        yield client, rules_file


def finished_reload(client: TestClient) -> dict:
    started = client.post("/admin/reload", headers=ADMIN)
    assert started.status_code == 202 and started.json()["state"] == "running"
    assert client.post("/admin/reload", headers=ADMIN).status_code == 409  # one at a time (loading takes seconds)
    deadline = time.monotonic() + 600
    while (status := client.get("/admin/reload", headers=ADMIN).json())["state"] == "running":
        assert time.monotonic() < deadline, "the reload did not finish"
        time.sleep(0.2)
    return status


def first_offer(client: TestClient, customer: str, top_k: int = 3) -> dict:
    answer = client.post("/recommend", json={"customer_id": customer, "top_k": top_k}, headers=READER)
    assert answer.status_code == 200
    return answer.json()


def test_reload_needs_an_admin_key(reloadable):
    client, _ = reloadable
    assert client.post("/admin/reload", headers=READER).status_code == 403
    assert client.get("/admin/reload", headers=READER).status_code == 403
    assert client.get("/admin/reload", headers=ADMIN).json()["state"] == "none"


def test_new_rules_are_swapped_in_and_a_broken_file_keeps_the_old_ones(reloadable, known_customer):
    client, rules_file = reloadable
    before = first_offer(client, known_customer, top_k=1)  # one offer: no category's cap pushes another out
    offered = before["recommendations"][0]["product_id"]
    old_service = client.app.state.service_state.service

    rules = yaml.safe_load(rules_file.read_text())
    rules["rules"].append({"name": "reload_check", "kind": "exclude", "reason": "Withdrawn for a reload test.",
                           "target": {"products": [offered]}})
    rules_file.write_text(yaml.safe_dump(rules))
    status = finished_reload(client)
    assert status["state"] == "succeeded" and status["model_version"] == before["model_version"]
    assert client.app.state.service_state.service is not old_service
    after = first_offer(client, known_customer, top_k=1)  # not the cached answer of the old rules
    assert offered not in [item["product_id"] for item in after["recommendations"]]
    assert after["excluded_count"] == before["excluded_count"] + 1

    rules_file.write_text("rules: [{name: Not Snake Case, kind: boost}]\n")
    serving = client.app.state.service_state.service
    status = finished_reload(client)
    assert status["state"] == "failed"
    assert "invalid rules file" in status["reason"] and str(rules_file) in status["reason"]
    assert client.app.state.service_state.service is serving  # the last good rules keep serving
    again = first_offer(client, known_customer)
    assert offered not in [item["product_id"] for item in again["recommendations"]]
