"""Many customers at once: batch scoring, the popularity baseline and the group fairness audit.

A request scores one customer with all of their counterfactual variants; a batch scores many
customers product by product through the same design function the model was trained on, then
runs each customer through the same business rules as a request. Evaluation, the audit and
(next) the nightly scoring of every customer all start here.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd

from artifacts import AUDIT_TOP_K
from bias_detector import (ExposureMitigation, FairnessAudit, Group, exposure_disparity, exposure_population,
                           group_audit, least_rebalancing_factor, mitigation_report, rebalances_in_force)
from business_rules import CustomerContext, GroupRebalance, RuleBook
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


@dataclass(frozen=True)
class ScoredCustomers:
    """Known customers ready for the rules: their ids, rule contexts and model scores (customers x
    ``product_ids``). Built once, so the mitigation's calibration can re-rank them many times at the
    cost of the rules alone; the scores stay one array, not a mapping per customer, to bound the memory."""

    customer_ids: list[str]
    contexts: list[CustomerContext]
    product_ids: list[str]
    scores: np.ndarray

    @classmethod
    def of(cls, service: RecommendationService, rows: np.ndarray | None = None) -> "ScoredCustomers":
        rows = np.arange(len(service.base.view)) if rows is None else np.asarray(rows)
        scores = all_scores(service, rows)
        states = [service.customers.known(int(row)) for row in rows]
        return cls([state.customer_id for state in states], [service.context(state) for state in states],
                   service.product_ids, scores)

    def ranked(self, rules: RuleBook, top_k: int, positions: Iterable[int] | None = None) -> list[list[str]]:
        """Each customer's list (at ``positions``, default all) as ``rules`` rank it."""
        chosen = range(len(self.customer_ids)) if positions is None else positions
        return [[item.product_id for item in
                 rules.apply(self.contexts[p], dict(zip(self.product_ids, self.scores[p].tolist())), top_k).ranked]
                for p in chosen]

    def recommendations(self, rules: RuleBook, top_k: int) -> pd.DataFrame:
        """customer_id, product_id, rank of every customer's list under ``rules``."""
        rows = [(customer, product, rank) for customer, products in zip(self.customer_ids, self.ranked(rules, top_k))
                for rank, product in enumerate(products, start=1)]
        return pd.DataFrame(rows, columns=["customer_id", "product_id", "rank"])

    def product_ranks(self, rules: RuleBook, top_k: int, product_id: str, positions: np.ndarray) -> np.ndarray:
        """The product's place in the lists of the customers at ``positions``, 0 where it is not in one."""
        return np.array([products.index(product_id) + 1 if product_id in products else 0
                         for products in self.ranked(rules, top_k, positions.tolist())], dtype=np.int32)


def batch_recommendations(service: RecommendationService, top_k: int, rows: np.ndarray | None = None) -> pd.DataFrame:
    """Top-k of known customers (default: all) after the business rules, as a request would rank them."""
    return ScoredCustomers.of(service, rows).recommendations(service.rules, top_k)


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


def calibrate_mitigation(service: RecommendationService, customers: ScoredCustomers,
                         top_k: int = AUDIT_TOP_K) -> tuple[ExposureMitigation, ...]:
    """The least boost of each ``fairness_mitigation`` pair that brings its exposure disparity, over
    ``customers`` (all known ones: what the audit reports), inside the fairness band.

    Every trial re-ranks the boosted group's lists through the rules themselves, so eligibility,
    the other rules and the diversity caps hold as they will when serving. Pairs are calibrated in
    the file's order, each with the boosts found before it in place.
    """
    unmitigated = service.rules.rebalanced(())
    protected = _protected(service)
    attributes = {attribute.name: attribute for attribute in service.settings.protected_attributes}
    segments = dict(zip(service.product_ids, service.products["segment"]))
    found: list[ExposureMitigation] = []
    for pair in unmitigated.fairness_mitigation:
        attribute = attributes[pair.attribute]
        population = exposure_population(protected, attribute, segments[pair.product_id])
        in_force = rebalances_in_force(found)

        def boosted(group: Group, factor: float) -> GroupRebalance:
            return GroupRebalance(pair, frozenset(attribute.privileged), group, factor)

        start = customers.product_ranks(unmitigated.rebalanced(in_force), top_k, pair.product_id, population.rows)

        def disparity_with(group: Group, factor: float) -> float | None:
            ranks = start.copy()
            if factor != 1.0:
                members = population.members(group)
                ranks[members] = customers.product_ranks(unmitigated.rebalanced((*in_force, boosted(group, factor))),
                                                         top_k, pair.product_id, population.rows[members])
            return exposure_disparity(ranks, population.privileged)

        search = least_rebalancing_factor(disparity_with, service.settings.fairness_band)
        rebalance = None if search.factor is None else boosted(search.boosted, search.factor)
        found.append(ExposureMitigation(pair, search, rebalance))
    return tuple(found)


def _protected(service: RecommendationService) -> pd.DataFrame:
    """The protected attributes and customer type of every known customer, by customer_id."""
    view = service.base.view
    protected = pd.DataFrame({a.column: view[a.column] for a in service.settings.protected_attributes},
                             index=view.index)
    protected["customer_type"] = view["customer_type"]
    return protected


def _group_audit(service: RecommendationService, recommended: pd.DataFrame) -> FairnessAudit:
    return group_audit(recommended, service.data.holdings[["customer_id", "product_id"]], _protected(service),
                       service.settings.protected_attributes, service.products, service.artifacts.holdout,
                       service.settings.fairness_band, service.settings.min_group_size)


def run_audit(service: RecommendationService) -> dict[str, Any]:
    """The AIF360 group audit of the current recommendations, holdings and held-out take-ups.

    With ``fairness_mitigation`` pairs in the rules file, it first calibrates their boosts, puts them
    in force in the service's rules (the same factors on every run while the model and data are the
    same) and reports the audited pairs without and with them under ``mitigation``.
    """
    with _AUDIT_LOCK:
        customers = ScoredCustomers.of(service)
        mitigation = calibrate_mitigation(service, customers)
        rules = service.rules.rebalanced(rebalances_in_force(mitigation))
        audit = _group_audit(service, customers.recommendations(rules, AUDIT_TOP_K))
        report = audit.to_dict()
        if mitigation:
            without = _group_audit(service, customers.recommendations(rules.rebalanced(()), AUDIT_TOP_K))
            report["mitigation"] = mitigation_report(mitigation, without, audit)
        service.rules = rules
        service.artifacts.mitigation = mitigation
        service.artifacts.audit = report
        return report
