"""The HTTP API through the real app: every endpoint, every error path, the content of the answers."""
from __future__ import annotations

import json
import threading
import uuid

import pytest
from fastapi.testclient import TestClient

from app import create_app
from tests.utils.service import wait_ready


def test_health_is_503_while_starting_then_200(api_settings, trained_service):
    release = threading.Event()

    def slow_start(settings):
        release.wait(10)
        return trained_service

    with TestClient(create_app(api_settings, factory=slow_start)) as client:
        starting = client.get("/health")
        assert starting.status_code == 503
        assert starting.json()["status"] == "starting" and starting.json()["ready"] is False
        assert client.post("/recommend", json={"customer_id": "C000001"}).status_code == 503
        release.set()
        wait_ready(client)
        ready = client.get("/health")
        assert ready.status_code == 200 and ready.json()["model_version"] == trained_service.model.version_


def test_failed_start_reports_the_reason_and_never_serves(api_settings):
    reasons = []

    def broken(settings):
        raise ValueError("rules file: rule 'x' uses unknown operator '=~'")

    with TestClient(create_app(api_settings, factory=broken, on_failure=reasons.append)) as client:
        for _ in range(250):
            if reasons and client.get("/health").json()["status"] == "failed":
                break
            threading.Event().wait(0.02)
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "failed"
        assert "unknown operator" in health.json()["detail"] and "unknown operator" in reasons[0]


def test_recommend_known_customer_carries_everything(client, known_customer):
    response = client.post("/recommend", json={"customer_id": known_customer, "top_k": 3})
    assert response.status_code == 200
    body = response.json()
    assert body["customer_id"] == known_customer and body["cold_start"] is False
    assert response.headers["x-request-id"] == body["request_id"]
    assert 1 <= len(body["recommendations"]) <= 3
    scores = [item["adjusted_score"] for item in body["recommendations"]]
    assert scores == sorted(scores, reverse=True)
    for rank, item in enumerate(body["recommendations"], start=1):
        assert item["rank"] == rank and 0 <= item["score"] <= 1
        assert item["explanation"]["summary"] and item["explanation"]["factors"]
        assert any(f["kind"] == "risk_suitability" for f in item["explanation"]["factors"])
    assert body["risk_profile"]["level"] in {"Low", "Medium", "High"}
    assert {c["name"] for c in body["risk_profile"]["components"]} >= {"income", "financial_stress_signals"}
    assert {a["attribute"] for a in body["bias_check"]["attributes"]} == {"gender", "age", "location"}
    assert body["model_version"] and isinstance(body["fallback"]["reasons"], list)


def test_explanations_can_be_left_out(client, known_customer):
    body = client.post("/recommend", json={"customer_id": known_customer, "include_explanation": False}).json()
    assert all(item["explanation"] is None for item in body["recommendations"])


def test_unknown_customer_is_404_with_a_clear_message(client):
    response = client.post("/recommend", json={"customer_id": "NOBODY-123"})
    assert response.status_code == 404
    assert "NOBODY-123" in response.json()["error"] and "profile" in response.json()["error"]
    assert client.get("/customers/NOBODY-123").status_code == 404
    unknown_product = client.post("/recommend", json={"customer_id": "NEW-1", "profile": {"held_products": ["gold_bars"]}})
    assert unknown_product.status_code == 404
    assert "profile.held_products" in unknown_product.json()["error"] and "gold_bars" in unknown_product.json()["error"]


@pytest.mark.parametrize("body, field", [
    ({"customer_id": "C000001", "top_k": 0}, "top_k"),
    ({"customer_id": "C000001", "top_k": 21}, "top_k"),
    ({"customer_id": "C000001", "top_k": "many"}, "top_k"),
    ({"customer_id": "bad id with spaces"}, "customer_id"),
    ({"customer_id": "x" * 65}, "customer_id"),
    ({"top_k": 3}, "customer_id"),
    ({"customer_id": "C000001", "surprise": 1}, "surprise"),
    ({"customer_id": "NEW-1", "profile": {"age": 7}}, "profile.age"),
])
def test_invalid_body_is_422_naming_the_field(client, body, field):
    response = client.post("/recommend", json=body)
    assert response.status_code == 422
    assert field in response.json()["error"]
    assert "Traceback" not in response.text


def test_cold_start_from_a_profile(client):
    profile = {"customer_type": "individual", "age": 33, "gender": "F", "location": "Austin", "income": 85000,
               "occupation": "Teacher", "interests": "hiking, home improvement",
               "posts": ["Considering a mortgage for my first home"], "held_products": ["current_account"]}
    response = client.post("/recommend", json={"customer_id": "NEW-0001", "top_k": 5, "profile": profile})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["cold_start"] is True and body["fallback"]["used"] is True
    assert any("cold start" in reason for reason in body["fallback"]["reasons"])
    offered = [item["product_id"] for item in body["recommendations"]]
    assert "current_account" not in offered
    assert "first_home_mortgage" in offered


def test_oversize_body_is_413(client):
    response = client.post("/recommend", content=b'{"customer_id": "' + b"a" * 70_000 + b'"}',
                           headers={"content-type": "application/json"})
    assert response.status_code == 413 and "larger than" in response.json()["error"]


def test_customer_view_products_model_fairness_metrics(client, known_customer):
    view = client.get(f"/customers/{known_customer}").json()
    assert view["customer_id"] == known_customer and "tx_count" in view["profile"]
    products = client.get("/products").json()
    assert len(products) >= 20 and {"product_id", "risk_level", "segment"} <= set(products[0])
    card = client.get("/model").json()
    assert card["model_version"] and card["data_fingerprint"] and card["offline_metrics"]["per_product"]
    assert "tables" in card["data_quality"] or card["data_quality"]
    assert card["skipped_rules"] == []  # the shipped rules fit the shipped catalogue
    audit = client.get("/fairness").json()
    assert audit["entries"] and "summary" in audit
    client.post("/recommend", json={"customer_id": known_customer})
    assert cache_figures(client)[("cache_entries", "answers")] >= 1
    rerun = client.post("/fairness/run").json()
    assert rerun["generated_at"] >= audit["generated_at"]
    # the re-run calibrates the mitigation's boosts again, and answers carry them: none is served from before
    assert cache_figures(client)[("cache_entries", "answers")] == 0
    client.post("/recommend", json={"customer_id": known_customer})
    metrics = client.get("/metrics").text
    assert 'http_requests_total{endpoint="/recommend",method="POST",status="200"}' in metrics
    assert "recommendations_served_total" in metrics


def cache_figures(client) -> dict[tuple[str, str], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {(sample.name, sample.labels["cache"]): sample.value
            for family in text_string_to_metric_families(client.get("/metrics").text)
            for sample in family.samples if sample.name.startswith("cache_")}


def test_metrics_show_every_cache_a_request_can_grow(api_settings, trained_service, known_customer):
    """Size against bound, hits and misses, for the answer cache and the text caches cold starts grow. Without
    the decision log, so that the contact policy (offers counted per customer by other tests) keeps one key."""
    with TestClient(create_app(api_settings.model_copy(update={"decision_log": "off"}),
                               factory=lambda _: trained_service)) as client:
        wait_ready(client)
        check_cache_metrics(client, known_customer)


def check_cache_metrics(client: TestClient, known_customer: str) -> None:
    client.post("/recommend", json={"customer_id": known_customer, "top_k": 2})
    before = cache_figures(client)
    client.post("/recommend", json={"customer_id": known_customer, "top_k": 2})
    posts = [f"metrics check {uuid.uuid4()}: we just bought our first home" for _ in range(2)]
    cold = client.post("/recommend", json={"customer_id": "NEW-METRICS", "profile": {"age": 30, "posts": posts}})
    assert cold.status_code == 200
    after = cache_figures(client)
    assert after[("cache_hits_total", "answers")] == before[("cache_hits_total", "answers")] + 1
    # the posts' BERT pass analyses them (two misses) and hands their embeddings to the encoder's cache
    # (before the first cold start the text models may still be loading in the background: no text caches yet)
    assert after[("cache_misses_total", "post_analyses")] >= before.get(("cache_misses_total", "post_analyses"), 0) + 2
    assert after[("cache_entries", "text_embeddings")] >= before.get(("cache_entries", "text_embeddings"), 0) + 2
    for cache in ("text_embeddings", "post_analyses"):
        assert 2 <= after[("cache_entries", cache)] <= after[("cache_capacity_entries", cache)]
    assert after[("cache_capacity_entries", "answers")] == client.app.state.settings.answer_cache_size


def test_api_keys_are_required_when_configured(api_settings, trained_service):
    settings = api_settings.model_copy(update={"api_keys": ["secret-1", "secret-2"]})
    with TestClient(create_app(settings, factory=lambda s: trained_service)) as client:
        wait_ready(client)
        assert client.get("/health").status_code == 200
        assert client.get("/metrics").status_code == 200
        assert client.get("/products").status_code == 401
        assert client.get("/products", headers={"X-API-Key": "wrong"}).status_code == 403
        assert client.get("/products", headers={"X-API-Key": "secret-2"}).status_code == 200


def test_answer_bodies_are_the_public_schemas_json(trained_service, known_customer, monkeypatch):
    """Answers are serialised straight from the service's dataclasses: for every kind of answer the
    bytes must read as the public schema (``RecommendResponse``) validates and writes them."""
    from types import SimpleNamespace

    from app import answer_body
    from business_rules import ContactHistory
    from schemas import RecommendResponse

    service = trained_service
    first = service.recommend(known_customer, 5).recommendations[0].product_id
    answers = [service.recommend(known_customer, 5), service.recommend(known_customer, 3, include_explanation=False),
               service.recommend(known_customer, 5, contact=ContactHistory(declined_recently=frozenset({first}))),
               service.recommend_for_profile("NEW-0002", {"customer_type": "individual", "age": 41, "income": 52000,
                                                          "financial_needs": "saving for retirement"},
                                             ["current_account"], ["Our second child was born last week!"], 5)]
    answers.append(next(answer for answer in (service.recommend(str(c), 10) for c in service.base.view.index[:500])
                        if any(check.top_k_changes for check in answer.bias_check.attributes)))
    monkeypatch.setattr(service, "known_scores", None)  # scored per request, by a model that fails: degraded
    monkeypatch.setattr(service.model, "predict_proba", lambda *args, **kwargs: 1 / 0)
    answers.append(service.recommend(known_customer, 5))
    assert answers[2].suppressed and answers[3].cold_start and answers[5].fallback.degraded
    for answer in answers:
        public = RecommendResponse.model_validate(SimpleNamespace(**vars(answer), request_id=""))
        assert json.loads(answer_body(answer)) == public.model_dump(mode="json", exclude={"request_id"})
