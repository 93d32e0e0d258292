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
from recommendation_service import RecommendationService

_AUDIT_LOCK = threading.Lock()  # one audit at a time: each one replaces the service's latest audit


def all_scores(service: RecommendationService, rows: np.ndarray) -> np.ndarray:
    """Calibrated scores of the known customers at ``rows`` for every product, product by product."""
    base, model = service.base, service.model
    signals = base.signals
    scores = np.zeros((len(rows), len(service.product_ids)))
    for product in range(len(service.product_ids)):
        held = signals.held[rows].copy()
        held[:, product] = 0.0
        design = model.design.rows(base.tabular[rows], held, signals.events[rows], signals.text_match[rows],
                                   signals.best_text_match[rows], product)
        scores[:, product] = model.product_scores(design, product)
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


def popularity_recommendations(service: RecommendationService, top_k: int,
                               rows: np.ndarray | None = None) -> pd.DataFrame:
    """The evaluation's baseline: the most popular products each customer is eligible for and does
    not hold, with no model and no boosts."""
    rows = np.arange(len(service.base.view)) if rows is None else np.asarray(rows)
    popular_first = [service.product_ids[i] for i in np.argsort(-service.model.prior, kind="stable")]
    ranked = []
    for row in rows:
        state = service.customers.known(int(row))
        eligible = service.rules.eligible(service.context(state))
        chosen = [p for p in popular_first if p in eligible][:top_k]
        ranked += [(state.customer_id, product, rank) for rank, product in enumerate(chosen, start=1)]
    return pd.DataFrame(ranked, columns=["customer_id", "product_id", "rank"])


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
