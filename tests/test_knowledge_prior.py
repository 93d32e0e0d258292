"""The knowledge prior every product has, and the blend that moves it towards the trees."""
from __future__ import annotations

import numpy as np
import pytest

from batch import all_scores
from knowledge_prior import BLEND_STRENGTHS, EvidenceBlend, KnowledgePrior, logit, mean_ndcg


def test_with_no_take_ups_the_prior_ranks_by_the_closest_recent_post_then_popularity():
    prior = KnowledgePrior.knowledge_only()
    popularity = logit(np.array([0.30, 0.05, 0.05]))
    recent_post = np.array([0.0, 0.45, 0.20])  # the customer wrote about the second product lately
    inputs = np.column_stack([popularity, np.zeros((3, 3)), recent_post])
    assert np.argsort(-prior.log_odds(inputs)).tolist() == [1, 2, 0]
    no_words = np.column_stack([popularity, np.zeros((3, 4))])
    assert prior.log_odds(no_words).argmax() == 0


def test_a_fitted_prior_learns_which_words_predict_take_up():
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(4000, 5))
    labels = (rng.random(4000) < 1 / (1 + np.exp(-(2.0 * inputs[:, 4] - 2)))).astype(int)
    prior = KnowledgePrior.fit(inputs, labels)
    assert prior.fitted and prior.weights[4] > 1.5 and np.abs(prior.weights[:4]).max() < 0.3
    contributions = prior.contributions(inputs[:3])
    assert np.allclose(prior.intercept + contributions.sum(axis=1), prior.log_odds(inputs[:3]))


def test_the_trees_weight_grows_with_take_ups():
    take_ups = np.array([0, 20, 200, 2000], dtype=float)
    weights = EvidenceBlend.weights(take_ups, np.array([False, True, True, True]), strength=100.0)
    assert weights[0] == 0 and 0 < weights[1] < weights[2] < weights[3] < 1
    assert weights[1] == pytest.approx(20 / 120)
    assert not EvidenceBlend.weights(take_ups, np.ones(4, bool), np.inf).any()


@pytest.mark.parametrize("trees_know", [True, False])
def test_held_out_customers_choose_how_far_the_trees_move_the_prior(trees_know):
    """Trees that know the truth outweigh the prior; trees of noise are never trusted (K = inf)."""
    rng = np.random.default_rng(1)
    labels = rng.random((300, 6)) < 0.15
    prior = rng.normal(size=(300, 6)) + 0.8 * labels  # the prior knows a little
    trees = 5.0 * labels if trees_know else rng.normal(size=(300, 6))
    chosen = EvidenceBlend.chosen(prior, trees, np.ones((300, 6), bool), labels, np.full(6, 50.0), np.ones(6, bool))
    if trees_know:
        assert chosen.held_out_ndcg[str(chosen.strength)] == 1.0 and chosen.tree_weight.min() > 0.5
    else:
        assert chosen.strength == np.inf and not chosen.tree_weight.any()
    assert set(chosen.held_out_ndcg) == {str(k) for k in BLEND_STRENGTHS}


def test_ndcg_of_a_perfect_and_of_a_reversed_ranking():
    relevant = np.array([[True, False, False, False, False, False]])
    assert mean_ndcg(np.array([[6, 5, 4, 3, 2, 1.0]]), relevant, 5) == pytest.approx(1.0)
    assert mean_ndcg(np.array([[1, 2, 3, 4, 5, 6.0]]), relevant, 5) == 0.0


def test_an_explanation_rests_on_the_pushes_that_make_the_score(fallback_service, trained_service):
    """Per product, the prior's pushes over the design plus popularity's and the intercept give the
    log-odds served; where trees share the score, the blend of both pushes moves it the same way."""
    for service in (fallback_service, trained_service):
        model = service.model
        customer = service.customers.known(0)
        design = model.design.design(customer.inputs(customer.tabular[None]))[0]
        products = list(range(len(model.product_ids_)))
        pushes = model.contributions(design[products], products)
        log_odds = model.log_odds(design[None])[0]
        prior_only = model.blend_.tree_weight == 0
        popularity = model.knowledge_.contributions(
            np.column_stack([logit(model.prior_), np.zeros((len(products), 4))]))[:, 0]
        assert np.allclose((model.knowledge_.intercept + popularity + pushes.sum(axis=1))[prior_only],
                           log_odds[prior_only], atol=1e-4)
    assert prior_only.sum() < len(products), "the trained bank must have products with trees"


def test_the_blend_is_reported_for_every_product(trained_service):
    model = trained_service.model
    summary = model.knowledge_summary()
    assert summary["fitted"] and set(summary["weights"]) >= {"closest recent post", "popularity"}
    assert [r.tree_weight for r in model.reports_] == pytest.approx(model.blend_.tree_weight.round(4).tolist())
    scores = all_scores(trained_service, np.arange(20))
    assert 0 < scores.min() and scores.max() < 1
