"""Offline evaluation: does the recommender find the products customers take up next?

Time split (SPEC section 6): the model learns from the holdings, transactions and posts before the
cut-off and is scored on the take-ups after it, against a popularity baseline that obeys the same
business rules. Ablations (no text at all, no life events) retrain without a signal, so what each
part adds is measured rather than claimed.

Data whose holdings carry no dates (the hackathon format, where holdings are the products a
customer is seen paying for) is evaluated by leave-one-out instead: one product per customer among
those they hold or asked for is hidden, together with the words that asked for it, and the model
must find it again; the customers are split into folds so that each is scored by a model that saw
the others' products complete.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier

from artifacts import AUDIT_TOP_K, Artifacts, holdout_recommendations, load_data, load_rules
from batch import (ScoredCustomers, batch_recommendations, calibrate_mitigation, eligible_by_score,
                   knowledge_only_recommendations, popularity_recommendations, run_audit)
from bias_detector import rebalances_in_force
from data_loader import BankData, data_now
from recommendation_service import RecommendationService
from recommender import TrainingSet, build_customer_base, label_scheme_of, train
from settings import Settings
from text_models import LifeEventDetector, get_text_encoder

logger = logging.getLogger(__name__)

MITIGATED = "model_with_mitigation"
ABLATIONS = {"without_text": frozenset({"text"}), "without_life_events": frozenset({"events"})}
LEAVE_ONE_OUT_SEED = 0
LEAVE_ONE_OUT_FOLDS = 5
TABULAR_MIN_POSITIVES = 5


def ranking_metrics(ranked: dict[str, list[str]], truth: dict[str, set[str]], ks: Sequence[int]) -> dict[str, float]:
    """precision, recall, NDCG, MAP and hit rate at each k, averaged over customers with a truth."""
    customers = [c for c, items in truth.items() if items]
    metrics: dict[str, float] = {}
    for k in ks:
        precision, recall, ndcg, average_precision, hits = [], [], [], [], []
        for customer in customers:
            relevant = truth[customer]
            top = ranked.get(customer, [])[:k]
            gains = np.array([1.0 if item in relevant else 0.0 for item in top])
            found = gains.sum()
            precision.append(found / k)
            recall.append(found / len(relevant))
            hits.append(float(found > 0))
            discounts = 1 / np.log2(np.arange(2, k + 2))
            ideal = discounts[:min(k, len(relevant))].sum()
            ndcg.append(float((gains * discounts[:len(gains)]).sum() / ideal))
            cumulative = np.cumsum(gains) / np.arange(1, len(gains) + 1) if len(gains) else np.zeros(0)
            average_precision.append(float((cumulative * gains).sum() / min(k, len(relevant))))
        for name, values in (("precision", precision), ("recall", recall), ("ndcg", ndcg), ("map", average_precision),
                             ("hit_rate", hits)):
            metrics[f"{name}@{k}"] = round(float(np.mean(values)), 4) if values else 0.0
    return metrics


@dataclass
class Split:
    """What the model may learn from, and what it must then find."""

    past: BankData
    truth: dict[str, set[str]]
    end: pd.Timestamp
    audience: list[str] | None  # customers whose recommendations count in the fairness audit (None: everyone)


def evaluate(settings: Settings, cutoff: pd.Timestamp, ks: Sequence[int] = (1, 3, 5),
             ablations: bool = True) -> dict[str, Any]:
    """The JSON of SPEC section 6 for the data directory in ``settings``."""
    started = time.perf_counter()
    data = load_data(settings)
    rules = load_rules(settings, data)
    if label_scheme_of(data.holdings) == "next_takeup":
        protocol, splits = "time_split", [_time_split(data, cutoff)]
    else:
        protocol, splits = "leave_one_out", _leave_one_out(data, cutoff)
    truth = {customer: items for split in splits for customer, items in split.truth.items() if items}
    if not truth:
        raise ValueError(f"nothing to evaluate: no customer has a product to find after the split at {cutoff.date()}")
    detector = LifeEventDetector(get_text_encoder(settings))
    k_max = max(ks)
    variants = {"model": frozenset(), **(ABLATIONS if ablations else {})}
    ranked: dict[str, dict[str, list[str]]] = {name: {} for name in [*variants, *BASELINES]}
    recommended: list[pd.DataFrame] = []
    services = []
    for split in splits:
        for name, disabled in variants.items():
            service, training = _fitted_service(settings, split.past, rules, split.end, detector, disabled)
            rows = _rows_of(service, split.truth)
            ranked[name].update(_ranked(batch_recommendations(service, k_max, rows)))
            if name == "model":
                for baseline, recommend in BASELINES.items():
                    ranked[baseline].update(_ranked(recommend(service, training, k_max, rows)))
                if rules.fairness_mitigation:
                    ranked.setdefault(MITIGATED, {}).update(_ranked(_mitigated_recommendations(service, k_max, rows)))
                audience = None if split.audience is None else _rows_of(service, dict.fromkeys(split.audience))
                recommended.append(batch_recommendations(service, k_max, audience))
                services.append(service)
    result: dict[str, Any] = {"protocol": protocol, "cutoff": cutoff.date().isoformat(),
                              "customers_evaluated": len(truth),
                              "products_to_find": int(sum(len(t) for t in truth.values())),
                              "trainings": len(splits)}
    result["model"] = ranking_metrics(ranked["model"], truth, ks)
    for baseline in BASELINES:
        result[baseline] = ranking_metrics(ranked[baseline], truth, ks)
    result["fairness"] = _fairness(services[0], pd.concat(recommended), truth)
    if MITIGATED in ranked:
        result["mitigation"] = _mitigation_trade_off(result["model"], ranking_metrics(ranked[MITIGATED], truth, ks),
                                                     result["fairness"]["mitigation"], ks)
    model = services[0].model
    result["model_card"] = {"products_modelled": int(model.forest_.has_model.sum()),
                            "strategies": pd.Series(model.strategies).value_counts().to_dict(),
                            "knowledge_prior": model.knowledge_summary(),
                            "training_seconds": model.training_seconds_}
    if ablations:
        result["ablations"] = {name: ranking_metrics(ranked[name], truth, ks) for name in ABLATIONS}
    result["summary"] = _summary(result, f"ndcg@{k_max}")
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def _mitigated_recommendations(service: RecommendationService, top_k: int, rows: np.ndarray) -> pd.DataFrame:
    """The evaluated customers' lists once the rules file's fairness mitigation is calibrated on every
    known customer (as the audit does when serving) and put in force in ``service``'s rules."""
    mitigation = calibrate_mitigation(service, ScoredCustomers.of(service))
    service.rules = service.rules.rebalanced(rebalances_in_force(mitigation))
    return batch_recommendations(service, top_k, rows)


def _mitigation_trade_off(without: dict[str, float], with_it: dict[str, float], audited: dict[str, Any],
                          ks: Sequence[int]) -> dict[str, Any]:
    """The price of the fairness mitigation in one place: each pair's exposure disparity without and
    with it (the audit of the first training's customers), every metric with it, and the NDCG it
    costs (positive: the mitigation loses that much NDCG)."""
    return {"pairs": audited["pairs"], "model_with_mitigation": with_it,
            "ndcg_cost": {f"ndcg@{k}": round(without[f"ndcg@{k}"] - with_it[f"ndcg@{k}"], 4) for k in ks}}


def _summary(result: dict[str, Any], ndcg: str) -> dict[str, Any]:
    """The model's NDCG against each baseline: the ratio to popularity, the difference to the others."""
    model = result["model"][ndcg]
    popularity = result["popularity_baseline"][ndcg]
    mitigation_cost = ({f"{ndcg}_cost_of_fairness_mitigation": result["mitigation"]["ndcg_cost"][ndcg]}
                       if "mitigation" in result else {})
    return {**mitigation_cost, f"{ndcg}_lift_over_popularity": round(model / popularity, 3) if popularity else None,
            f"{ndcg}_minus_knowledge_only": round(model - result["knowledge_only_baseline"][ndcg], 4),
            f"{ndcg}_minus_tabular_gbm": round(model - result["tabular_gbm_baseline"][ndcg], 4)}


def _fitted_service(settings: Settings, data: BankData, rules, end: pd.Timestamp, detector: LifeEventDetector,
                    disabled: frozenset[str]) -> tuple[RecommendationService, TrainingSet]:
    model, training = train(data, end, settings, detector.encoder, detector, disabled)
    base = build_customer_base(data, model, end, detector.encoder, detector)
    artifacts = Artifacts("evaluation", model, base, holdout_recommendations(model, training, AUDIT_TOP_K), "")
    return RecommendationService(settings, data, rules, artifacts), training


def tabular_gbm_scores(training: TrainingSet, tabular: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """The plain baseline a data scientist would try first: per product, scikit-learn's gradient
    boosting on the tabular features alone (no holdings, words or life events), fitted on the same
    training examples as the model; popularity for a product with too few take-ups to fit."""
    scores = np.tile(prior, (len(tabular), 1))
    for product in range(training.labels.shape[1]):
        candidates = training.candidates[:, product]
        labels = training.labels[candidates, product]
        if labels.sum() < TABULAR_MIN_POSITIVES or labels.all():
            continue
        classifier = HistGradientBoostingClassifier(max_iter=200, early_stopping=True, random_state=0)
        scores[:, product] = classifier.fit(training.tabular[candidates], labels).predict_proba(tabular)[:, 1]
    return scores


def _tabular_gbm(service: RecommendationService, training: TrainingSet, top_k: int, rows: np.ndarray) -> pd.DataFrame:
    scores = tabular_gbm_scores(training, service.base.tabular[rows], service.model.prior_)
    return eligible_by_score(service, scores, top_k, rows)


BASELINES: dict[str, Callable[[RecommendationService, TrainingSet, int, np.ndarray], pd.DataFrame]] = {
    "popularity_baseline": lambda service, training, k, rows: popularity_recommendations(service, k, rows),
    "knowledge_only_baseline": lambda service, training, k, rows: knowledge_only_recommendations(service, k, rows),
    "tabular_gbm_baseline": _tabular_gbm,
}
"""What the model must beat, each ranked under the same eligibility: the most popular products; a
ranking with no training (recent posts against product descriptions); gradient boosting on the
tabular features alone."""


def _time_split(data: BankData, cutoff: pd.Timestamp) -> Split:
    past = data.as_of(cutoff)
    held_before = set(zip(past.holdings["customer_id"], past.holdings["product_id"]))
    future = data.holdings[data.holdings["start_date"] >= cutoff]
    truth: dict[str, set[str]] = {}
    for customer, product in zip(future["customer_id"], future["product_id"]):
        if (customer, product) not in held_before:
            truth.setdefault(str(customer), set()).add(str(product))
    return Split(past, truth, cutoff, None)


def _leave_one_out(data: BankData, cutoff: pd.Timestamp) -> list[Split]:
    """Hides one product of every customer known to have or want two or more (held or asked for),
    and the words that asked for it.

    The customers are split into folds, each evaluated by a model trained with the other folds'
    products complete: hiding every multi-product customer's product at once would remove every
    example of products held together, and the model would learn that they never are.
    """
    past = data.as_of(cutoff)
    known = pd.concat([past.holdings.assign(table="holdings"), past.interests.assign(table="interests")],
                      ignore_index=True).drop_duplicates(["customer_id", "product_id"])
    counts = known.groupby("customer_id")["product_id"].transform("size")
    hidden = known[counts >= 2].groupby("customer_id").sample(n=1, random_state=LEAVE_ONE_OUT_SEED)
    fold = pd.util.hash_array(hidden["customer_id"].astype(str).to_numpy(dtype=object)) % LEAVE_ONE_OUT_FOLDS
    splits = []
    for number in range(LEAVE_ONE_OUT_FOLDS):
        hidden_here = hidden[fold == number]
        if hidden_here.empty:
            continue
        truth = {str(c): {str(p)} for c, p in zip(hidden_here["customer_id"], hidden_here["product_id"])}
        customers = (_without_evidence(past.customers, hidden_here) if "evidence" in hidden_here.columns
                     else past.customers)
        fold_data = replace(past, holdings=_known_as_held(_without(past.holdings, hidden_here),
                                                          _without(past.interests, hidden_here)),
                            interests=past.interests.iloc[:0], customers=customers)
        splits.append(Split(fold_data, truth, data_now(fold_data), list(truth)))
    return splits


def _without(table: pd.DataFrame, hidden: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``table`` whose (customer, product) is not hidden."""
    pairs = pd.MultiIndex.from_frame(table[["customer_id", "product_id"]])
    hidden_pairs = pd.MultiIndex.from_frame(hidden[["customer_id", "product_id"]])
    return table[~pairs.isin(hidden_pairs)].reset_index(drop=True)


def _known_as_held(holdings: pd.DataFrame, interests: pd.DataFrame) -> pd.DataFrame:
    """The products a customer still has or asks for, all as holdings: the hidden product is to be
    found among the others, as a held product is never offered (a stated need would be offered
    first and crowd out the hidden one, which says nothing about the model)."""
    asked = interests[["customer_id", "product_id", "evidence"]].assign(start_date=pd.NaT, source="asked")
    return pd.concat([holdings, asked], ignore_index=True)


def _without_evidence(customers: pd.DataFrame, hidden: pd.DataFrame) -> pd.DataFrame:
    """Removes the phrase that named a hidden product from the customer's own words."""
    customers = customers.copy()
    position = pd.Index(customers["customer_id"]).get_indexer(hidden["customer_id"])
    for row, phrase in zip(position, hidden["evidence"].fillna("").astype(str)):
        if row < 0 or not phrase:
            continue
        for column in ("preferences", "financial_needs", "interests"):
            if column in customers.columns and isinstance(customers.iat[row, customers.columns.get_loc(column)], str):
                text = customers.iat[row, customers.columns.get_loc(column)]
                customers.iat[row, customers.columns.get_loc(column)] = text.replace(phrase, "").strip(" ,;")
    return customers


def _rows_of(service: RecommendationService, truth: dict[str, set[str]]) -> np.ndarray:
    rows = service.base.view.index.get_indexer(list(truth))
    return rows[rows >= 0]


def _ranked(recommendations: pd.DataFrame) -> dict[str, list[str]]:
    ordered = recommendations.sort_values(["customer_id", "rank"])
    return {str(c): list(g) for c, g in ordered.groupby("customer_id")["product_id"]}


def _fairness(service: RecommendationService, recommended: pd.DataFrame, truth: dict[str, set[str]]) -> dict[str, Any]:
    """The AIF360 audit of the evaluated recommendations, with the real take-ups as held-out truth."""
    pairs = set(zip(recommended["customer_id"], recommended["product_id"]))
    rows = [(c, p, (c, p) in pairs, True) for c, items in truth.items() for p in items]
    rows += [(c, p, True, p in truth.get(c, set())) for c, p in pairs if p not in truth.get(c, set())]
    service.artifacts.holdout = pd.DataFrame(rows, columns=["customer_id", "product_id", "recommended", "took_up"])
    return run_audit(service)
