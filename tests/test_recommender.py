"""The hybrid recommender through the service: scoring paths, calibration, fallbacks, artifacts."""
from __future__ import annotations

import joblib
import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from artifacts import ARTIFACT_FILE, save_artifacts
from batch import all_scores
from feature_engineer import CustomerInputs, ProductDesign
from recommendation_service import RecommendationService
from recommender import RISK_BASE_POINTS, HybridRecommender


def test_compiled_forest_gives_scikit_learns_decision_function(trained_service):
    """Every modelled product, on real customers, through both designs the service evaluates: one
    product for many customers (batch, training) and all products for each customer (a request)."""
    model, base = trained_service.model, trained_service.base
    assert len(model.estimators_) >= 3, "the small bank should give some products enough take-ups for a model"
    assert set(model.estimators_) == set(np.flatnonzero(model.forest_.has_model))
    inputs = CustomerInputs.of(base.tabular, base.signals, np.arange(200))
    every_product = model.design.design(inputs)
    for product, classifier in model.estimators_.items():
        one_product = model.design.design(inputs, [product])
        expected = classifier.decision_function(one_product[:, 0])
        assert np.allclose(model.forest_.raw(one_product, [product])[:, 0], expected, atol=1e-6)
        assert np.allclose(model.forest_.raw(every_product)[:, product],
                           classifier.decision_function(every_product[:, product]), atol=1e-6)


def test_variants_walk_only_the_trees_they_change_and_score_as_every_tree_would(trained_service, known_customer):
    """The bias check's counterfactuals (the customer with one protected attribute changed) are
    scored by re-walking only the trees that split on a changed feature; the scores are those of
    walking every tree, for real variants, for a variant equal to the customer and for one that
    shares nothing with them."""
    model, service = trained_service.model, trained_service
    state = service.customers.known(service.customers.row_of(known_customer))
    other = service.customers.known((service.customers.row_of(known_customer) + 1) % len(service.base.view))
    _, with_variants = service.design_with_variants(state)
    assert len(with_variants) > 1, "the default bank's model should read at least one protected attribute's column"
    design = np.concatenate([with_variants, model.design.design(state.inputs(state.tabular[None])),
                             model.design.design(other.inputs(other.tabular[None]))])
    assert np.allclose(model.forest_.raw_of_variants(design), model.forest_.raw(design), rtol=0, atol=1e-12)
    assert np.array_equal(model.predict_proba(design, variants_of=np.zeros(len(design), dtype=np.intp))[-2],
                          model.predict_proba(design)[0])


def test_answers_from_the_start_up_scores_are_those_of_scoring_per_request(trained_service, monkeypatch):
    """The server scores its known customers (and their counterfactual variants) at start-up in blocks;
    a request from those scores must be the request that scores the customer alone, to the bit, for
    customers covered by a batch's subset too, and a customer the subset leaves out is scored per
    request."""
    service = trained_service
    customers = [str(customer) for customer in service.base.view.index[::40]]
    assert service.known_scores is not None and len(customers) >= 10
    from_start_up = [service.recommend(customer, 5) for customer in customers]
    subset = service.with_scores_of(np.arange(0, len(service.base.view), 80))  # every other customer above
    from_subset = [subset.recommend(customer, 5) for customer in customers]
    monkeypatch.setattr(service, "known_scores", None)
    per_request = [service.recommend(customer, 5) for customer in customers]
    assert from_start_up == per_request and from_subset == per_request
    assert sum(subset.known_scores.covers(service.customers.row_of(c)) for c in customers) == (len(customers) + 1) // 2


def test_a_request_and_a_batch_score_every_product_alike(trained_service):
    """The serving design (one customer, all products) and the batch design (many customers, one
    product) come from the same function: the same score for every product, held ones included."""
    model = trained_service.model
    rows = np.arange(40)
    batch = all_scores(trained_service, rows)
    for position, row in enumerate(rows):
        state = trained_service.customers.known(int(row))
        served = model.predict_proba(model.design.design(state.inputs(state.tabular[None])))
        assert np.allclose(served[0], batch[position], atol=1e-12)


def test_the_design_zeroes_the_products_own_holding_and_disabled_signals(trained_service):
    model, base = trained_service.model, trained_service.base
    source = model.design
    inputs = CustomerInputs.of(base.tabular, base.signals, np.arange(30))
    design = source.design(inputs)
    held = design[:, :, source.n_tabular:source.n_tabular + source.n_products]
    assert not np.diagonal(held, axis1=1, axis2=2).any(), "a product is scored for a customer who does not hold it"
    others = ~np.eye(source.n_products, dtype=bool)
    assert np.array_equal(held[:, others], np.broadcast_to(inputs.held[:, None, :], held.shape)[:, others])
    assert design[..., -2:].any() and design[..., source.event_columns].any()
    product_names = [name.removeprefix("holds ") for name in source.feature_names if name.startswith("holds ")]
    without_text = ProductDesign(source.specs[:source.n_tabular], product_names, source.event_names, source.event_relevance,
                                 source.policy, frozenset({"text"})).design(inputs)
    assert not without_text[..., -2:].any() and not without_text[..., source.event_columns].any()
    assert np.array_equal(without_text[..., :source.event_columns.start], design[..., :source.event_columns.start])


def test_an_unfitted_recommender_refuses_to_score(trained_service):
    unfitted = HybridRecommender(trained_service.model.design)
    with pytest.raises(NotFittedError, match="HybridRecommender"):
        unfitted.predict_proba(np.zeros((1, 1, len(unfitted.design.feature_names)), dtype=np.float32))


def test_scores_are_probabilities_on_one_scale(trained_service):
    scores = all_scores(trained_service, np.arange(len(trained_service.base.view)))
    assert scores.min() >= 0 and scores.max() <= 1
    assert len(np.unique(scores.round(6))) > 100, "scores must vary by customer and product"


def test_calibration_in_the_large_on_held_out_customers(trained_service, trained_training):
    """Mean predicted take-up matches the observed rate on customers the models never saw, over
    every product (trees blended with the prior, and the prior alone)."""
    model, training = trained_service.model, trained_training
    predicted, observed = [], []
    for product in range(len(model.product_ids_)):
        held_out = np.flatnonzero(training.candidates[:, product] & training.holdout)
        inputs = CustomerInputs.of(training.tabular, training.signals, held_out)
        predicted.append(model.score(inputs, [product]).sum())
        observed.append(training.labels[held_out, product].sum())
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
        has_model = trained_service.model.forest_.has_model

        def raw(self, design, products=None):
            raise MemoryError("simulated")

        def raw_of_variants(self, design, first=None):
            raise MemoryError("simulated")

    monkeypatch.setattr(trained_service.model, "forest_", BrokenForest())
    # at start-up the known customers' scoring fails and is logged; their requests then score themselves
    monkeypatch.setattr(trained_service, "known_scores", trained_service.score_known_customers())
    assert trained_service.known_scores.probabilities_of(trained_service.customers.row_of(known_customer)) is None
    answer = trained_service.recommend(known_customer, 5)
    assert answer.fallback.degraded and answer.fallback.used
    assert "popularity" in answer.fallback.reasons[0] and "MemoryError" in answer.fallback.reasons[0]
    priors = dict(zip(trained_service.product_ids, trained_service.model.prior_))
    assert [item.score for item in answer.recommendations] == pytest.approx(
        [round(priors[item.product_id], 5) for item in answer.recommendations])
    assert all(item.explanation is None for item in answer.recommendations)


def test_the_imbalance_aware_fits_are_made_at_the_chosen_tree_depth_only(refitted_here):
    """The fits run in two steps: the plain trees at every depth, which choose the model's depth, then
    the imbalance-aware candidates at that depth alone (at another they could never be used), which
    then compete with the plain trees of that depth."""
    from recommender import TREE_DEPTHS

    model, steps = refitted_here
    (plain_step, depth_before_plain, _, plain_keys), (aware_step, depth_before_aware, aware, _) = steps
    assert (plain_step, aware_step) == ("fit_plain_candidates", "fit_imbalance_aware")
    assert depth_before_plain is None and depth_before_aware == model.tree_depth_ in TREE_DEPTHS
    assert all(keys == [(depth, "gbm") for depth in TREE_DEPTHS] for keys in plain_keys if keys is not None)
    candidates = {product: candidate for product, candidate in enumerate(aware) if candidate is not None}
    assert candidates and {classifier.max_depth for _, classifier, _ in candidates.values()} == {model.tree_depth_}
    for product, (strategy, _, _) in candidates.items():
        report = model.reports_[product]
        assert report.strategy in {"gbm", strategy, "knowledge_prior"}
        assert not report.strategy_auc or set(report.strategy_auc) == {"gbm", strategy}


def test_products_with_too_few_take_ups_are_scored_by_the_knowledge_prior(fallback_service):
    model = fallback_service.model
    assert not model.forest_.has_model.any() and not model.blend_.tree_weight.any()
    assert {r.strategy for r in model.reports_} == {"knowledge_prior"}
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
