"""The hybrid recommender through the service: scoring paths, calibration, fallbacks, artifacts."""
from __future__ import annotations

import joblib
import numpy as np
import pytest

from artifacts import ARTIFACT_FILE, save_artifacts
from batch import all_scores
from recommendation_service import RecommendationService
from recommender import RISK_BASE_POINTS, product_rows


def test_compiled_trees_equal_scikit_learn(trained_service):
    """The flat-array trees are checked against scikit-learn at fit time; here again, end to end."""
    model = trained_service.model
    modelled = np.flatnonzero(model.forest.has_model)
    assert len(modelled) >= 3, "the small bank should give some products enough take-ups for a model"
    view = trained_service.base
    for product in modelled[:5]:
        rows = model.design.rows(view.tabular[:50], view.signals.held[:50], view.signals.events[:50],
                                 view.signals.text_match[:50], view.signals.best_text_match[:50], product)
        tensor = np.zeros((50, len(model.product_ids), rows.shape[1]), dtype=np.float32)
        tensor[:, product, :] = rows
        assert np.allclose(model.forest.raw(tensor)[:, product], model.forest.raw_for_rows(rows, product))


def test_scores_are_probabilities_on_one_scale(trained_service):
    scores = all_scores(trained_service, np.arange(len(trained_service.base.view)))
    assert scores.min() >= 0 and scores.max() <= 1
    assert len(np.unique(scores.round(6))) > 100, "scores must vary by customer and product"


def test_calibration_in_the_large_on_held_out_customers(trained_service, trained_training):
    """Mean predicted take-up matches the observed rate on customers the models never saw."""
    model, training = trained_service.model, trained_training
    predicted, observed = [], []
    for product in np.flatnonzero(model.forest.has_model):
        held_out = training.candidates[:, product] & training.holdout
        rows, labels = product_rows(training, model, product, np.flatnonzero(held_out))
        predicted.append(model.product_scores(rows, product).sum())
        observed.append(labels.sum())
    assert sum(observed) > 20
    assert abs(sum(predicted) - sum(observed)) / sum(observed) < 0.35


def test_risk_profile_is_the_sum_of_its_components(trained_service, known_customer):
    risk = trained_service.recommend(known_customer, 5).risk_profile
    total = RISK_BASE_POINTS + sum(c.points for c in risk.components)
    assert risk.score == pytest.approx(min(max(total, 0), 100), abs=0.2)
    assert risk.level == ("Low" if risk.score < 40 else "Medium" if risk.score < 65 else "High")


def test_low_risk_customers_never_get_products_above_their_limit(trained_service):
    limit = trained_service.rules.max_risk_level("Low")
    view = trained_service.base.view
    low = [c for c in view.index[:400] if trained_service.recommend(str(c), 10, False).risk_profile.level == "Low"]
    assert low, "the generated bank should have Low risk customers"
    for customer in low:
        assert all(item.risk_level <= limit for item in trained_service.recommend(str(customer), 10, False).recommendations)


def test_degraded_answer_when_the_model_cannot_score(trained_service, known_customer, monkeypatch):
    class BrokenForest:
        has_model = trained_service.model.forest.has_model

        def raw(self, tensor):
            raise MemoryError("simulated")

    monkeypatch.setattr(trained_service.model, "forest", BrokenForest())
    answer = trained_service.recommend(known_customer, 5)
    assert answer.fallback.degraded and answer.fallback.used
    assert "popularity" in answer.fallback.reasons[0] and "MemoryError" in answer.fallback.reasons[0]
    priors = dict(zip(trained_service.product_ids, trained_service.model.prior))
    assert [item.score for item in answer.recommendations] == pytest.approx(
        [round(priors[item.product_id], 5) for item in answer.recommendations])
    assert all(item.explanation is None for item in answer.recommendations)


def test_products_with_too_few_take_ups_fall_back_to_content_times_popularity(fallback_service):
    model = fallback_service.model
    assert not model.forest.has_model.any()
    assert {r.strategy for r in model.reports} == {"content_prior"}
    customer = str(fallback_service.base.view.index[0])
    answer = fallback_service.recommend(customer, 5)
    assert answer.recommendations and answer.fallback.used
    assert all("too few take-ups" in r for r in answer.fallback.reasons)
    for item in answer.recommendations:
        assert any(f.kind == "popularity" for f in item.explanation.factors)
    scores = all_scores(fallback_service, np.arange(50))
    assert 0 < scores.min() and scores.max() < 1


def test_saved_artifacts_reload_to_identical_answers(trained_service, known_customer, tmp_path):
    path = tmp_path / ARTIFACT_FILE
    save_artifacts(trained_service.artifacts, path)
    reloaded = RecommendationService(trained_service.settings, trained_service.data, trained_service.rules,
                                     joblib.load(path))
    before = trained_service.recommend(known_customer, 5)
    after = reloaded.recommend(known_customer, 5)
    assert [(i.product_id, i.score, i.adjusted_score) for i in before.recommendations] == \
           [(i.product_id, i.score, i.adjusted_score) for i in after.recommendations]
    assert before.risk_profile == after.risk_profile


def test_restart_reuses_models_fitted_on_the_same_data(api_settings, trained_service):
    restarted = RecommendationService.start(api_settings)
    assert restarted.artifacts.trained_at == trained_service.artifacts.trained_at
    assert restarted.artifacts.fingerprint == trained_service.artifacts.fingerprint


def test_explanations_differ_between_customers_for_the_same_product(trained_service):
    seen: dict[str, set[str]] = {}
    for customer in trained_service.base.view.index[:200]:
        for item in trained_service.recommend(str(customer), 5).recommendations:
            seen.setdefault(item.product_id, set()).add(item.explanation.summary)
    assert max(len(summaries) for summaries in seen.values()) > 5
