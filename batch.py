"""Many customers at once: batch scoring, the popularity baseline and the group fairness audit.

A request scores one customer with all of their counterfactual variants; a batch scores many
customers product by product through the same design function the model was trained on, then
runs each customer through the same business rules as a request. Evaluation, the audit and
(next) the nightly scoring of every customer all start here.
"""
from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pandas as pd

from artifacts import AUDIT_TOP_K
from bias_detector import group_audit
from feature_engineer import CustomerInputs
from recommendation_service import RecommendationService

_AUDIT_LOCK = threading.Lock()  # one audit at a time: each one replaces the service's latest audit


def all_scores(service: RecommendationService, rows: np.ndarray) -> np.ndarray:
    """Calibrated scores of the known customers at ``rows`` for every product, product by product
    (one product's design for many customers at a time bounds the memory on a large bank)."""
    inputs = CustomerInputs.of(service.base.tabular, service.base.signals, rows)
    scores = np.zeros((len(rows), len(service.product_ids)))
    for product in range(len(service.product_ids)):
        scores[:, product] = service.model.score(inputs, [product])[:, 0]
    return scores


def batch_recommendations(service: RecommendationService, top_k: int, rows: np.ndarray | None = None) -> pd.DataFrame:
    """Top-k of known customers (default: all) after the business rules, as a request would rank them."""
    rows = np.arange(len(service.base.view)) if rows is None else np.asarray(rows)
    scores = all_scores(service, rows)
    ranked = []
    for position, row in enumerate(rows):
        state = service.customers.known(int(row))
        outcome = service.rules.apply(service.context(state), dict(zip(service.product_ids, scores[position].tolist())),
                                      top_k)
        ranked += [(state.customer_id, item.product_id, rank) for rank, item in enumerate(outcome.ranked, start=1)]
    return pd.DataFrame(ranked, columns=["customer_id", "product_id", "rank"])


def eligible_by_score(service: RecommendationService, scores: np.ndarray, top_k: int,
                      rows: np.ndarray | None = None) -> pd.DataFrame:
    """Top-k of each customer by a baseline's ``scores`` (rows, products), among the products the
    customer is eligible for and does not hold; no boosts, no diversity cap. The baselines of the
    evaluation meet the same eligibility and suitability as the model."""
    rows = np.arange(len(service.base.view)) if rows is None else np.asarray(rows)
    ranked = []
    for position, row in enumerate(rows):
        state = service.customers.known(int(row))
        eligible = service.rules.eligible(service.context(state))
        order = np.argsort(-scores[position], kind="stable")
        chosen = [service.product_ids[i] for i in order if service.product_ids[i] in eligible][:top_k]
        ranked += [(state.customer_id, product, rank) for rank, product in enumerate(chosen, start=1)]
    return pd.DataFrame(ranked, columns=["customer_id", "product_id", "rank"])


def popularity_recommendations(service: RecommendationService, top_k: int,
                               rows: np.ndarray | None = None) -> pd.DataFrame:
    """The most popular products each customer is eligible for and does not hold."""
    rows = np.arange(len(service.base.view)) if rows is None else np.asarray(rows)
    return eligible_by_score(service, np.tile(service.model.prior_, (len(rows), 1)), top_k, rows)


def knowledge_only_recommendations(service: RecommendationService, top_k: int,
                                   rows: np.ndarray | None = None) -> pd.DataFrame:
    """A ranking with no training at all: each customer's posts of the last 180 days against each
    product's name and description (MiniLM), the best-matching post per product; popularity only
    breaks ties (customers with no recent post get the popularity order)."""
    rows = np.arange(len(service.base.view)) if rows is None else np.asarray(rows)
    closeness = service.base.signals.recent_post_match[rows].astype(float).round(4)
    popularity_rank = np.argsort(np.argsort(-service.model.prior_, kind="stable"), kind="stable")
    tie_break = (len(popularity_rank) - popularity_rank) / (len(popularity_rank) + 1) * 1e-5
    return eligible_by_score(service, closeness + tie_break, top_k, rows)


def run_audit(service: RecommendationService) -> dict[str, Any]:
    """The AIF360 group audit of the current recommendations, holdings and held-out take-ups."""
    with _AUDIT_LOCK:
        recommended = batch_recommendations(service, AUDIT_TOP_K)
        view = service.base.view
        attributes = service.settings.protected_attributes
        protected = pd.DataFrame({a.column: view[a.column] for a in attributes}, index=view.index)
        protected["customer_type"] = view["customer_type"]
        audit = group_audit(recommended, service.data.holdings[["customer_id", "product_id"]], protected, attributes,
                            service.products, service.artifacts.holdout, service.settings.fairness_band,
                            service.settings.min_group_size)
        service.artifacts.audit = audit.to_dict()
        return service.artifacts.audit
