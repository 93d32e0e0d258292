"""The hybrid recommender: gradient-boosted propensity models over tabular and text features.

For every product the model estimates the probability that a customer who does not hold it takes it
up within the training horizon. It learns from snapshots of the past: features as of a date, labels
the take-ups in the following window, so that "next" means what it says. Where take-up dates are
unknown (the hackathon format), it learns who holds what instead.

Progressive enhancement, chosen per product from the data:

- enough positives to learn from: a ``HistGradientBoostingClassifier`` with shallow trees
  (additive effects) and with deeper ones (interactions), of which held-out customers choose one
  depth for the model; then, where take-ups are rare, a second fit at that depth that handles the
  imbalance (imbalanced-learn's SMOTE where there are enough positives for it, balanced class
  weights otherwise), against which held-out customers choose the strategy of each product;
- too few to learn from: content similarity times a popularity prior (a logistic model fitted on
  the other products, so its scores sit on the same scale);
- a model that cannot score at all: popularity, flagged as degraded by the caller.

Every score is Platt-calibrated on customers held out from training, so products compare on one
probability scale. At serving time the fitted trees are evaluated from flat numpy arrays
(:class:`CompiledForest`): all products and counterfactual variants of a customer in one pass, and
per-feature contributions along the decision paths for the explanations.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Callable, Mapping, Sequence, TypeVar

import numpy as np
import pandas as pd
from imblearn.over_sampling import SMOTE
from imblearn.pipeline import Pipeline as ImbalancedPipeline
from sklearn.base import BaseEstimator
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.utils.validation import check_is_fitted

from data_loader import BankData, customer_view, profile_text, segment_eligibility
from data_use import SignalView, policy_in_force
from decision_store import FinalOutcome
from feature_engineer import (CustomerFeatures, CustomerInputs, CustomerSignals, ProductDesign, ProfileMatch,
                              customer_signals, event_relevance, events_seen, held_matrix, product_texts,
                              profile_match, without_naming_words)
from feedback_learning import feedback_examples
from knowledge_prior import (KNOWLEDGE_INPUTS, MAX_POOLED_EXAMPLES, EvidenceBlend, KnowledgePrior, blend,
                             knowledge_inputs, prior_columns, sigmoid)
from settings import Settings
from text_models import LifeEventDetector, TextEncoder

logger = logging.getLogger(__name__)

MODEL_VERSION = "2.3.1"
TREE_DEPTHS = (1, 4)  # additive effects only, or interactions: chosen from held-out data
MAX_TREES = 250  # early stopping decides; additive models need more rounds
HOLDOUT_SHARE = 0.2
SMOTE_RATIO = 0.3
COMPILATION_CHECK_ROWS = 200
MAX_HELD_OUT_ROWS = 20_000  # held-out examples that judge trees against the prior and choose the blend
MIN_LEAF_EXAMPLES = 5  # rare signals (a life event few customers show) must be able to split


# --------------------------------------------------------------------------------------------------
# Risk profile
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RiskComponent:
    """One input of the risk profile: its value and the points it added or took away."""

    name: str
    value: float | None
    points: float
    meaning: str


@dataclass(frozen=True)
class RiskProfile:
    """How much investment risk the customer can bear: a score 0-100, a level, and why."""

    level: str
    score: float
    components: tuple[RiskComponent, ...]


RISK_BASE_POINTS = 50.0
RISK_LEVELS = ((40.0, "Low"), (65.0, "Medium"), (float("inf"), "High"))
# What an input the bank does not know counts for: never the most favourable value. A customer new to the
# bank has no spending on record, and suitability cannot assume they spend little and owe nothing (that made
# every young, well-paid cold start High, open to crypto funds): unknown spending, its swings and debt
# repayments each take away half the most they can, so such a customer lands in Medium (products up to risk
# 3: loans, mortgages, index funds) unless their income alone is exceptional. Income and horizon count as a
# quarter of what they can add (a customer gives them when joining, so they are rarely unknown).
UNKNOWN_POINTS = {"income": 5.0, "investment_horizon": 5.0, "spend_to_income": -10.0, "spending_volatility": -5.0,
                  "debt_repayments": -7.5}


def risk_scores(columns: dict[str, np.ndarray], financial_stress: np.ndarray
                ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Risk capacity for many customers at once, from plain arrays (cheap for one row too).

    Points: income and a long investment horizon add capacity; spending most of one's income,
    volatile spending, debt repayments and signs of financial stress in posts take it away.
    Returns the scores, each component's points and each component's input value.
    """
    income = np.asarray(columns["income"], dtype=float)
    age = np.asarray(columns["age"], dtype=float)
    is_org = np.asarray(columns["is_organization"], dtype=bool)
    annual_spend = np.asarray(columns["tx_monthly_mean"], dtype=float) * 12
    volatility = np.asarray(columns["tx_monthly_volatility"], dtype=float)
    debt_share = np.asarray(columns["debt_payment_share"], dtype=float)

    income_scale = np.where(is_org, np.log10(np.fmax(income, 1)) - 6, np.log10(np.fmax(income, 1)) - 4.3)
    unknown = UNKNOWN_POINTS
    points = {
        "income": _or_if_unknown(np.clip(income_scale / 1.5, 0, 1) * 20, unknown["income"]),
        "investment_horizon": np.where(is_org, 5.0, _or_if_unknown(np.clip((67 - age) / 40, 0, 1) * 20,
                                                                   unknown["investment_horizon"])),
        "spend_to_income": _or_if_unknown(-np.clip(annual_spend / np.fmax(income, 1), 0, 1.5) / 1.5 * 20,
                                          unknown["spend_to_income"]),
        "spending_volatility": _or_if_unknown(-np.clip(volatility, 0, 2) / 2 * 10, unknown["spending_volatility"]),
        "debt_repayments": _or_if_unknown(-np.clip(debt_share * 2, 0, 1) * 15, unknown["debt_repayments"]),
        "financial_stress_signals": -np.clip(np.asarray(financial_stress, dtype=float) / 0.7, 0, 1) * 20,
    }
    score = np.clip(RISK_BASE_POINTS + sum(points.values()), 0, 100)
    values = {"income": income, "investment_horizon": np.where(is_org, np.nan, 67 - age),
              "spend_to_income": annual_spend / np.fmax(income, 1), "spending_volatility": volatility,
              "debt_repayments": debt_share, "financial_stress_signals": np.asarray(financial_stress, dtype=float)}
    return score, points, values


def risk_scores_at_ages(inputs: Mapping[str, np.ndarray], financial_stress: np.ndarray, ages: Sequence[float]
                        ) -> np.ndarray:
    """(customers, ages): each customer's risk score were they each of ``ages`` old (the bias check's
    counterfactual ages), everything else theirs, in one vectorised pass."""
    customers, count = len(financial_stress), len(ages)
    at_ages = {name: np.repeat(values, count) for name, values in inputs.items()}
    at_ages["age"] = np.tile(np.asarray(ages, dtype=float), customers)
    return risk_scores(at_ages, np.repeat(financial_stress, count))[0].reshape(customers, count)


def _or_if_unknown(points: np.ndarray, default: float) -> np.ndarray:
    """``points`` with a missing input's NaN replaced by ``default``. Clipped points are never
    infinite, so this is np.nan_to_num's result, on the one-row arrays of a request at 1.4 us a call
    against its 8.2 us (timeit; pyinstrument had put nan_to_num at about 40% of the risk profile's time)."""
    return np.where(np.isnan(points), default, points)


def risk_level(score: float) -> str:
    return next(label for bound, label in RISK_LEVELS if score < bound)


RISK_MEANINGS = {
    "income": "annual income (or revenue): more room to absorb losses",
    "investment_horizon": "years until 67: a longer horizon can ride out market falls",
    "spend_to_income": "yearly card and account spending as a share of income",
    "spending_volatility": "how much monthly spending swings (std / mean)",
    "debt_repayments": "share of spending that repays loans, mortgages or credit",
    "financial_stress_signals": "recent posts about money worries, or new spending that shows them (overdraft fees)",
}

def risk_inputs(view: pd.DataFrame) -> dict[str, np.ndarray]:
    """The view columns the risk profile reads, as arrays (missing columns count as unknown)."""
    def column(name: str) -> np.ndarray:
        return pd.to_numeric(view[name], errors="coerce").to_numpy(dtype=float) if name in view else np.full(len(view), np.nan)

    return {"income": column("income"), "age": column("age"), "tx_monthly_mean": column("tx_monthly_mean"),
            "tx_monthly_volatility": column("tx_monthly_volatility"),
            "debt_payment_share": column("debt_payment_share"),
            "is_organization": (view.get("customer_type", pd.Series("", index=view.index)) == "organization").to_numpy()}


def risk_profile_at(inputs: dict[str, np.ndarray], stress: np.ndarray, row: int) -> RiskProfile:
    """The risk profile of one customer, with every component it was computed from."""
    score, points, values = risk_scores({k: v[row:row + 1] for k, v in inputs.items()}, stress[row:row + 1])
    return risk_profile_of(float(score[0]), {name: float(p[0]) for name, p in points.items()},
                           {name: float(v[0]) for name, v in values.items()}, bool(inputs["is_organization"][row]))


def risk_profile_of(score: float, points: Mapping[str, float], values: Mapping[str, float],
                    organization: bool) -> RiskProfile:
    """A risk profile from one customer's row of :func:`risk_scores`: its level, and each component's
    input and points (a component the bank does not know says so)."""
    components = []
    for name, component_points in points.items():
        raw = values[name]
        unknown = math.isnan(raw) and name in UNKNOWN_POINTS and not (name == "investment_horizon" and organization)
        meaning = RISK_MEANINGS[name] + (f"; not known to the bank: counted as {UNKNOWN_POINTS[name]:+g} points"
                                         if unknown else "")
        components.append(RiskComponent(name, None if math.isnan(raw) else round(raw, 4), round(component_points, 2),
                                        meaning))
    return RiskProfile(risk_level(score), round(score, 1), tuple(components))


# --------------------------------------------------------------------------------------------------
# Compiled trees
# --------------------------------------------------------------------------------------------------

class CompiledForest:
    """All products' boosted trees as flat arrays, evaluated for many (customer, product) rows at once.

    Gives scikit-learn's ``decision_function`` (checked at compile time) but with one numpy pass
    over every tree of every product instead of a Python call per product, and able to return the
    Saabas contributions of each feature along the decision paths.
    """

    def __init__(self, models: dict[int, HistGradientBoostingClassifier], n_products: int, n_features: int):
        feature, threshold, children, value, expected, tree_product, tree_start = [], [], [], [], [], [], []
        offset = 0
        self.baseline = np.zeros(n_products)
        self.has_model = np.zeros(n_products, dtype=bool)
        for product, model in sorted(models.items()):
            trees = _FittedTrees(model)
            self.baseline[product] = trees.baseline
            self.has_model[product] = True
            for nodes in trees.nodes:
                if nodes["is_categorical"].any():
                    raise ValueError("categorical splits are not supported by the compiled forest")
                leaf = nodes["is_leaf"].astype(bool)
                own = np.arange(len(nodes)) + offset
                left = np.where(leaf, own, nodes["left"] + offset)
                right = np.where(leaf, own, nodes["right"] + offset)
                feature.append(np.where(leaf, 0, nodes["feature_idx"]))
                threshold.append(np.where(leaf, np.inf, nodes["num_threshold"]))
                children.append(np.stack([right, left], axis=1).ravel())  # index 2*node + went_left
                value.append(nodes["value"])
                expected.append(_expected_values(nodes))
                tree_product.append(product)
                tree_start.append(offset)
                offset += len(nodes)
        self.feature = np.concatenate(feature).astype(np.intp) if feature else np.zeros(0, np.intp)
        self.threshold = np.concatenate(threshold) if threshold else np.zeros(0)
        self.children = np.concatenate(children).astype(np.intp) if children else np.zeros(0, np.intp)
        self.value = np.concatenate(value) if value else np.zeros(0)
        self.expected = np.concatenate(expected) if expected else np.zeros(0)
        self.tree_product = np.asarray(tree_product, dtype=np.intp)
        self.tree_start = np.asarray(tree_start, dtype=np.intp)
        self.n_products, self.n_features = n_products, n_features
        self.depth = max((model.max_depth for model in models.values()), default=0)
        self.trees_of_product = [np.flatnonzero(self.tree_product == p) for p in range(n_products)]

    def raw_of_variants(self, design: np.ndarray, first: np.ndarray | None = None) -> np.ndarray:
        """Raw log-odds, (rows, products), of customers and variants of them (a customer with a few
        inputs changed, as the bias check's counterfactuals are). ``first[r]`` is the row of the
        customer that row ``r`` is a variant of (``r`` itself for a customer); default: row 0 is the
        customer of every other row.

        A tree's answer depends only on the features it splits on, so a variant walks only the trees
        that split on a feature where it differs from its customer, and takes the customer's leaf
        from every other tree: about a fifth of the walks of :meth:`raw` over all rows. The sums are
        the same for one customer alone as in a block of many, bit for bit (each slot adds its trees
        in the same order).
        """
        rows, width = design.shape[:2]
        first = np.zeros(rows, dtype=np.intp) if first is None else np.asarray(first, dtype=np.intp)
        own = np.flatnonzero(first == np.arange(rows))
        trees = len(self.tree_product)
        flat = np.ascontiguousarray(design, dtype=np.float32).reshape(-1)
        slots = np.repeat(own * width, trees) + np.tile(self.tree_product, len(own))  # every customer, every tree
        leaves = self._leaves(flat, slots * self.n_features, np.tile(self.tree_start, len(own)))
        leaves = leaves.reshape(len(own), trees)
        customer_totals = np.bincount((np.arange(len(own))[:, None] * width + self.tree_product).ravel(),
                                      weights=self.value[leaves].ravel(), minlength=len(own) * width)
        position = np.empty(rows, dtype=np.intp)
        position[own] = np.arange(len(own))
        totals = customer_totals.reshape(len(own), width)[position[first]]
        row, tree = self.variant_walks(design, first)
        if len(tree):
            column = self.tree_product[tree]
            walked = self._leaves(flat, (row * width + column) * self.n_features, self.tree_start[tree])
            customer_leaf = leaves[position[first[row]], tree]
            totals += np.bincount(row * width + column, weights=self.value[walked] - self.value[customer_leaf],
                                  minlength=rows * width).reshape(rows, width)
        return totals + self.baseline

    def variant_walks(self, design: np.ndarray, first: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The (row, tree) pairs :meth:`raw_of_variants` walks, in that order: each variant row with every
        tree that splits on a feature where it differs from its customer's row ``first[row]``."""
        rows = design.shape[0]
        first = np.zeros(rows, dtype=np.intp) if first is None else np.asarray(first, dtype=np.intp)
        variants = np.flatnonzero(first != np.arange(rows))
        changed = (design[variants] != design[first[variants]]).any(axis=1)  # (variants, features): a few each
        needed = np.zeros((len(changed), len(self.tree_product)), dtype=bool)
        for row, features in enumerate(changed):  # faster than a matrix product: a few features a row
            needed[row] = self.splits_on[features].any(axis=0)
        index, tree = np.nonzero(needed)
        return variants[index], tree

    @cached_property
    def splits_on(self) -> np.ndarray:
        """(features, trees): True where the tree splits on the feature (computed on first use, so that
        forests saved before it existed load as they are)."""
        uses = np.zeros((self.n_features, len(self.tree_product)), dtype=bool)
        tree_of_node = np.repeat(np.arange(len(self.tree_start)), np.diff(np.append(self.tree_start, len(self.feature))))
        split = self.children[0::2] != np.arange(len(self.feature))  # a leaf's children are itself
        uses[self.feature[split], tree_of_node[split]] = True
        return uses

    def raw(self, design: np.ndarray, products: Sequence[int] | None = None) -> np.ndarray:
        """Raw log-odds, (customers, products), of a design built for ``products`` (default: all);
        a product without trees gets 0."""
        customers, width = design.shape[:2]
        if products is None:
            trees, column = np.arange(len(self.tree_product)), self.tree_product
        else:
            trees, column = self._trees_of(products)
        slot = np.repeat(np.arange(customers), len(trees)) * width + np.tile(column, customers)
        flat = np.ascontiguousarray(design, dtype=np.float32).reshape(-1)
        leaves = self._leaves(flat, slot * self.n_features, np.tile(self.tree_start[trees], customers))
        totals = np.bincount(slot, weights=self.value[leaves], minlength=customers * width)
        baseline = self.baseline if products is None else self.baseline[np.asarray(products, dtype=np.intp)]
        return totals.reshape(customers, width) + baseline

    def contributions(self, design: np.ndarray, products: Sequence[int]) -> np.ndarray:
        """Per-feature contributions to the log-odds, (len(products), n_features), for one customer.

        ``design`` is the customer's input for each of ``products``, (len(products), features), in
        that order. Along each tree's path, the change in the node's expected value is credited to
        the feature that was split on (Saabas).
        """
        trees, row = self._trees_of(products)
        node = self.tree_start[trees]
        x = design[row]
        slots, pushes = [], []
        for _ in range(self.depth):
            feature = self.feature[node]
            child = self.children[2 * node + (x[np.arange(len(trees)), feature] <= self.threshold[node])]
            slots.append(row * self.n_features + feature)
            pushes.append(self.expected[child] - self.expected[node])
            node = child
        if not slots:  # no trees at all
            return np.zeros((len(products), self.n_features))
        return np.bincount(np.concatenate(slots), weights=np.concatenate(pushes),  # in the order np.add.at would add
                           minlength=len(products) * self.n_features).reshape(len(products), self.n_features)

    def expected_raw(self, product: int) -> float:
        """The log-odds before any feature is known (training-weighted mean over each tree's leaves):
        with :meth:`contributions` of a row, it adds up to the row's raw log-odds."""
        trees = self.trees_of_product[product]
        return float(self.baseline[product] + self.expected[self.tree_start[trees]].sum())

    def _trees_of(self, products: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """The trees of ``products``, product by product in the order given, and for each tree its
        product's position in ``products``."""
        trees = [self.trees_of_product[p] for p in products]
        return (np.concatenate(trees or [np.zeros(0, np.intp)]),
                np.repeat(np.arange(len(products)), [len(t) for t in trees]))

    def _leaves(self, flat: np.ndarray, base: np.ndarray, node: np.ndarray) -> np.ndarray:
        """Walks every (row, tree) slot down to its leaf: a split sends a value <= threshold left."""
        for _ in range(self.depth):
            node = self.children[2 * node + (flat[base + self.feature[node]] <= self.threshold[node])]
        return node


class _FittedTrees:
    """The one reader of scikit-learn's private fitted state: a binary classifier's baseline
    log-odds and the node arrays of its trees, in boosting order.

    scikit-learn has no public access to a fitted tree's nodes; whatever reads them is checked
    against its public ``decision_function`` each time a forest is compiled (:func:`_check_compilation`).
    """

    def __init__(self, classifier: HistGradientBoostingClassifier):
        self.baseline = float(np.ravel(classifier._baseline_prediction)[0])
        self.nodes = [predictor.nodes for iteration in classifier._predictors for predictor in iteration]


def _expected_values(nodes: np.ndarray) -> np.ndarray:
    """Each node's training-weighted mean leaf value (children before parents in HGB's layout)."""
    expected = nodes["value"].astype(float).copy()
    for index in range(len(nodes) - 1, -1, -1):
        if not nodes["is_leaf"][index]:
            left, right = nodes["left"][index], nodes["right"][index]
            counts = nodes["count"][left] + nodes["count"][right]
            expected[index] = (expected[left] * nodes["count"][left] + expected[right] * nodes["count"][right]) / max(counts, 1)
    return expected


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------

@dataclass
class TrainingSet:
    """Examples of (customer, product) at one or more snapshots, with their labels."""

    tabular: np.ndarray
    signals: CustomerSignals
    labels: np.ndarray  # (n, P) took up (or holds) the product
    candidates: np.ndarray  # (n, P) the product could be taken up: eligible by segment and not held
    holdout: np.ndarray  # (n,) customer held out for calibration and offline metrics
    latest_rows: int  # the first rows are the most recent snapshot


@dataclass
class ProductReport:
    """How one product was modelled and how well, on held-out customers."""

    product_id: str
    strategy: str
    positives: int
    examples: int
    holdout_positives: int
    auc: float | None = None  # of the final score
    brier: float | None = None
    prior_auc: float | None = None  # of the knowledge prior alone, on the same customers
    trees_auc: float | None = None  # of the calibrated trees alone
    tree_weight: float = 0.0  # how far the final score moves from the prior towards the trees
    strategy_auc: dict[str, float] = field(default_factory=dict)  # held-out AUC of each fit that competed


@dataclass(frozen=True)
class PlattScaling:
    """Per product, the logistic map from the trees' raw log-odds to a calibrated probability."""

    slope: np.ndarray  # (P,)
    intercept: np.ndarray  # (P,)

    def log_odds(self, raw: np.ndarray, products: np.ndarray | slice) -> np.ndarray:
        return self.slope[products] * raw + self.intercept[products]


class HybridRecommender(BaseEstimator):
    """Propensity models for every product, calibrated to one scale (scikit-learn's estimator contract).

    ``design`` lays out what the model reads (and zeroes the signals an ablation disabled); the
    other parameters say how much data a product needs for trees and resampling. :meth:`fit`
    learns from a :class:`TrainingSet`; :meth:`predict_proba` scores any design built by
    ``design.design``, so training, serving and batch scoring read the same input. A product's score
    is its :class:`~knowledge_prior.KnowledgePrior` moved towards its trees as far as its take-ups
    warrant (:class:`~knowledge_prior.EvidenceBlend`). Learned state: ``estimators_``
    (scikit-learn's fitted trees per modelled product) and ``forest_`` (the same trees compiled for
    serving), ``calibration_``, ``prior_`` (take-up rates), ``knowledge_``, ``blend_``,
    ``reports_`` and what the data decided (``tree_depth_``, ``label_scheme_``).
    """

    def __init__(self, design: ProductDesign, min_positives_for_model: int = 15, min_positives_for_smote: int = 40,
                 max_negatives_per_product: int = 60_000):
        self.design = design
        self.min_positives_for_model = min_positives_for_model
        self.min_positives_for_smote = min_positives_for_smote
        self.max_negatives_per_product = max_negatives_per_product

    def fit(self, training: TrainingSet, features: CustomerFeatures, product_ids: Sequence[str],
            label_scheme: str = "next_takeup", fit_products: ProductFitter | None = None) -> "HybridRecommender":
        """Fits, per product, the strongest strategy its data supports, then calibrates and compiles.

        ``fit_products`` runs each step of the products' candidate fits (the plain trees at every
        depth, then the imbalance-aware fits at the depth they chose), whose products do not depend
        on each other: one after another here by default, or as parallel tasks (``ray_engine``).
        """
        started = time.perf_counter()
        self.features_, self.product_ids_, self.label_scheme_ = features, list(product_ids), label_scheme
        self.version_ = MODEL_VERSION
        self.prior_ = _take_up_rates(training)
        self.knowledge_ = _fit_knowledge_prior(training, self.design, self.prior_)
        fit_each = fit_products or fit_each_product_here
        self.reports_, candidates = [], {}
        for product, (report, fits) in enumerate(fit_each(fit_plain_candidates, training, self)):
            self.reports_.append(report)
            if fits is not None:
                candidates[product] = fits
        self.tree_depth_ = _chosen_depth(candidates)
        for product, candidate in enumerate(fit_each(fit_imbalance_aware, training, self)):
            if candidate is not None:
                candidates[product].add(self.tree_depth_, candidate)
        self.estimators_, holdout_raw = _chosen_strategies(self.reports_, candidates, self.tree_depth_)
        self.calibration_ = _calibrate(holdout_raw, len(self.product_ids_))
        self.forest_ = self._compiled(training)
        held_out = _held_out_log_odds(training, self)
        weak = _weaker_than_prior(self.reports_, held_out)
        if weak:
            self.estimators_ = {p: c for p, c in self.estimators_.items() if p not in weak}
            self.forest_ = self._compiled(training)
        take_ups = np.array([report.positives for report in self.reports_], dtype=float)
        self.blend_ = EvidenceBlend.chosen(*held_out, take_ups, self.forest_.has_model)
        _score_holdout(self.reports_, held_out, self.blend_)
        self.training_seconds_ = round(time.perf_counter() - started, 2)
        logger.info("recommender fitted", extra={"products": len(self.product_ids_),
                                                  "with_model": len(self.estimators_),
                                                  "seconds": self.training_seconds_})
        return self

    def _compiled(self, training: TrainingSet) -> CompiledForest:
        """The fitted trees as one flat forest, checked against scikit-learn on training examples."""
        forest = CompiledForest(self.estimators_, len(self.product_ids_), len(self.design.feature_names))
        sample = np.arange(min(COMPILATION_CHECK_ROWS, len(training.labels)))
        for product, classifier in self.estimators_.items():
            _check_compilation(forest, classifier, _examples(training, self.design, product, sample)[0], product)
        return forest

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "forest_")

    @property
    def strategies(self) -> np.ndarray:
        check_is_fitted(self)
        return np.array([r.strategy for r in self.reports_])

    def predict_proba(self, design: np.ndarray, products: Sequence[int] | None = None,
                      variants_of: np.ndarray | None = None) -> np.ndarray:
        """Take-up probabilities, (customers, products), of a design built for ``products`` (default:
        all): the knowledge prior moved towards the product's calibrated trees by its tree weight.
        ``variants_of[r]``: the row of the customer that row ``r`` is a variant of (``r`` for a
        customer; all products), which the trees score faster (:meth:`CompiledForest.raw_of_variants`)."""
        return sigmoid(self.log_odds(design, products, variants_of))

    def log_odds(self, design: np.ndarray, products: Sequence[int] | None = None,
                 variants_of: np.ndarray | None = None) -> np.ndarray:
        check_is_fitted(self)
        chosen = slice(None) if products is None else np.asarray(products, dtype=np.intp)
        weight = self.blend_.tree_weight[chosen]
        prior = self.prior_log_odds(design, products)
        if not weight.any():
            return prior
        raw = (self.forest_.raw_of_variants(design, variants_of) if variants_of is not None and products is None
               else self.forest_.raw(design, products))
        return blend(prior, self.calibration_.log_odds(raw, chosen), weight)

    def prior_log_odds(self, design: np.ndarray, products: Sequence[int] | None = None) -> np.ndarray:
        """The knowledge prior's log-odds, (customers, products): words, events and popularity."""
        chosen = slice(None) if products is None else np.asarray(products, dtype=np.intp)
        return self.knowledge_.log_odds(knowledge_inputs(self.design, design, self.prior_[chosen]))

    def knowledge_summary(self) -> dict[str, object]:
        """The prior's weights by input and the blend's strength, for the model card."""
        check_is_fitted(self)
        return {"fitted": self.knowledge_.fitted,
                "weights": dict(zip(KNOWLEDGE_INPUTS, np.round(self.knowledge_.weights, 4).tolist())),
                "blend_strength_take_ups": self.blend_.strength,
                "held_out_ndcg@5_by_strength": self.blend_.held_out_ndcg}

    def contributions(self, design: np.ndarray, products: Sequence[int]) -> np.ndarray:
        """Per-feature pushes on one customer's final log-odds, (len(products), features): the trees'
        (Saabas, on the calibrated scale) and the prior's (popularity, no column, left out), each
        weighted as the blend weights them. ``design`` is the customer's input for each of
        ``products``, (len(products), features), in that order."""
        check_is_fitted(self)
        products = list(products)
        weight = self.blend_.tree_weight[products][:, None]
        prior = np.zeros((len(products), len(self.design.specs)))
        pushes = self.knowledge_.contributions(knowledge_inputs(self.design, design[None], self.prior_[products]))[0]
        prior[:, prior_columns(self.design)] = pushes[:, 1:]
        rows = [row for row, product in enumerate(products) if self.forest_.has_model[product]]
        trees = np.zeros_like(prior)
        if rows:
            modelled = [products[row] for row in rows]
            slope = self.calibration_.slope[modelled][:, None]
            trees[rows] = self.forest_.contributions(design[rows], modelled) * slope
        return (1 - weight) * prior + weight * trees

    def score(self, inputs: CustomerInputs, products: Sequence[int] | None = None) -> np.ndarray:
        """Calibrated probabilities of customers' inputs: the design, then :meth:`predict_proba`."""
        return self.predict_proba(self.design.design(inputs, products), products)


def _examples(training: TrainingSet, design: ProductDesign, product: int, which: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """The (customers, 1, features) design and the labels of one product's examples at ``which``.

    Built only for the examples asked for: on a large bank the full matrix of every snapshot is
    hundreds of megabytes per product.
    """
    inputs = CustomerInputs.of(training.tabular, training.signals, which)
    return design.design(inputs, [product]), training.labels[which, product]


@dataclass
class ProductExamples:
    """One product's training rows (every take-up, a bounded sample of the rest) and the customers
    whose raw scores judge its candidate fits."""

    rows: np.ndarray
    labels: np.ndarray
    judging_rows: np.ndarray
    judging_labels: np.ndarray
    judged: bool  # the judging customers are held out, with enough take-ups to compare fits

    @property
    def imbalanced(self) -> bool:
        """Take-ups rarer than SMOTE_RATIO to the rest: an imbalance-aware fit competes."""
        positives = int(self.labels.sum())
        return positives / max(len(self.labels) - positives, 1) < SMOTE_RATIO


@dataclass
class ProductFits:
    """The competing fits of one product and their raw scores on the customers used to judge them."""

    fits: dict[tuple[int, str], HistGradientBoostingClassifier]  # (tree depth, strategy) -> fitted trees
    raw: dict[tuple[int, str], np.ndarray]
    labels: np.ndarray
    judged: bool  # the raw scores are of held-out customers with enough take-ups to compare fits

    def add(self, depth: int, candidate: ImbalanceAwareFit) -> None:
        """Enters the imbalance-aware candidate, fitted once the depth was chosen, into the competition."""
        strategy, classifier, raw = candidate
        self.fits[depth, strategy], self.raw[depth, strategy] = classifier, raw


ImbalanceAwareFit = tuple[str, HistGradientBoostingClassifier, np.ndarray]
"""A product's imbalance-aware candidate: its strategy, its trees, their raw scores on the judging customers."""

StepResult = TypeVar("StepResult")
ProductStep = Callable[[TrainingSet, "HybridRecommender", int], StepResult]
"""One step of one product's fits (:func:`fit_plain_candidates`, :func:`fit_imbalance_aware`)."""
ProductFitter = Callable[[ProductStep[StepResult], TrainingSet, "HybridRecommender"], list[StepResult]]
"""Runs a step for every product of a model, results in catalogue order: here one after another
(:func:`fit_each_product_here`) or as parallel tasks (``ray_engine.RayTraining.fit_products``)."""


def fit_each_product_here(step: ProductStep[StepResult], training: TrainingSet, model: HybridRecommender
                          ) -> list[StepResult]:
    """A step of every product's fits, one product after another in this process."""
    return [step(training, model, product) for product in range(len(model.product_ids_))]


def _product_examples(training: TrainingSet, model: HybridRecommender, product: int
                     ) -> tuple[ProductReport, ProductExamples | None]:
    """The product's report so far and its examples; None where there are too few take-ups to fit
    trees (or nothing but take-ups). Seeded: every step of the fits sees the same rows."""
    candidates = training.candidates[:, product]
    labels = training.labels[:, product]
    held_out = candidates & training.holdout
    train = _with_negatives_bounded(candidates & ~training.holdout, labels, model.max_negatives_per_product)
    positives = int(labels[train].sum())
    report = ProductReport(model.product_ids_[product], "knowledge_prior", positives, int(train.sum()),
                           int(labels[held_out].sum()))
    if positives < model.min_positives_for_model or positives == train.sum():
        return report, None
    design, train_labels = _examples(training, model.design, product, np.flatnonzero(train))
    judged = bool(labels[held_out].sum() >= 3)
    judging = held_out if judged else candidates & ~training.holdout
    judging_design, judging_labels = _examples(training, model.design, product, np.flatnonzero(judging))
    return report, ProductExamples(design[:, 0], train_labels, judging_design[:, 0], judging_labels,
                                   judged and judging_labels.min() != judging_labels.max())


def fit_plain_candidates(training: TrainingSet, model: HybridRecommender, product: int
                         ) -> tuple[ProductReport, ProductFits | None]:
    """The product's plain boosted trees at each tree depth: what chooses the model's depth.

    Shallow trees (additive effects) compete with deeper ones (interactions); see :func:`_chosen_depth`.
    """
    report, examples = _product_examples(training, model, product)
    if examples is None:
        return report, None
    fits = {(depth, "gbm"): _boosted_trees(depth).fit(examples.rows, examples.labels) for depth in TREE_DEPTHS}
    raw = {key: classifier.decision_function(examples.judging_rows) for key, classifier in fits.items()}
    return report, ProductFits(fits, raw, examples.judging_labels, examples.judged)


def fit_imbalance_aware(training: TrainingSet, model: HybridRecommender, product: int) -> ImbalanceAwareFit | None:
    """Where take-ups are rare, the product's imbalance-aware candidate at the model's chosen depth
    (``tree_depth_``): SMOTE where there are enough take-ups to interpolate between, balanced class
    weights otherwise. Resampling often helps a rare product's recall yet blurs the probabilities
    that rank products against each other: the plain trees compete (:func:`_chosen_strategies`).

    Fitted at the chosen depth only: the depth is chosen from the plain fits, so a resampled fit at
    another depth could never be used (at 15,000 customers those were a quarter of training's time).
    """
    report, examples = _product_examples(training, model, product)
    if examples is None or not examples.imbalanced:
        return None
    strategy, classifier = _imbalance_aware_fit(examples.rows, examples.labels,
                                                report.positives >= model.min_positives_for_smote, model.tree_depth_)
    return strategy, classifier, classifier.decision_function(examples.judging_rows)


def _chosen_depth(candidates: dict[int, ProductFits]) -> int:
    """One tree depth for the whole model, by the take-up-weighted mean held-out AUC of the plain
    fits of all judged products pooled, which one product's few held-out take-ups could not decide
    reliably."""
    judged = [fits for fits in candidates.values() if fits.judged]
    if not judged:
        return TREE_DEPTHS[-1]
    depth_auc = {depth: float(np.average([roc_auc_score(f.labels, f.raw[depth, "gbm"]) for f in judged],
                                         weights=[f.labels.sum() for f in judged]))
                 for depth in TREE_DEPTHS}
    return max(depth_auc, key=depth_auc.get)


def _chosen_strategies(reports: list[ProductReport], candidates: dict[int, ProductFits], depth: int
                       ) -> tuple[dict[int, HistGradientBoostingClassifier], dict[int, tuple[np.ndarray, np.ndarray]]]:
    """Each product's strategy at the chosen depth, by held-out AUC; a product too thin to judge
    keeps the imbalance-aware fit. Returns the chosen trees and their held-out raw scores."""
    chosen, held_out_raw = {}, {}
    for product, fits in candidates.items():
        strategies = [strategy for (d, strategy) in fits.fits if d == depth]
        report = reports[product]
        if fits.judged:
            report.strategy_auc = {s: round(float(roc_auc_score(fits.labels, fits.raw[depth, s])), 4) for s in strategies}
            report.strategy = max(report.strategy_auc, key=report.strategy_auc.get)
        else:
            report.strategy = strategies[-1]  # the imbalance-aware fit where there is one
        chosen[product] = fits.fits[depth, report.strategy]
        held_out_raw[product] = (fits.raw[depth, report.strategy], fits.labels)
    return chosen, held_out_raw


def _boosted_trees(depth: int) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(max_iter=MAX_TREES, max_depth=depth, learning_rate=0.1,
                                          l2_regularization=1.0, min_samples_leaf=MIN_LEAF_EXAMPLES,
                                          early_stopping=True, validation_fraction=0.15, n_iter_no_change=8,
                                          random_state=0)


def _imbalance_aware_fit(rows: np.ndarray, labels: np.ndarray, enough_for_smote: bool, depth: int
                         ) -> tuple[str, HistGradientBoostingClassifier]:
    """SMOTE then trees where there are enough take-ups, else trees with balanced class weights."""
    if enough_for_smote:
        classifier = _boosted_trees(depth)
        if _fitted_with_smote(classifier, rows, labels):
            return "smote+gbm", classifier
    return "balanced_gbm", _boosted_trees(depth).set_params(class_weight="balanced").fit(rows, labels)


def _with_negatives_bounded(train: np.ndarray, labels: np.ndarray, limit: int) -> np.ndarray:
    """The training mask with every take-up and at most ``limit`` randomly chosen examples without one.

    Trees learn a product from its take-ups; past some tens of thousands of non-take-ups, more
    add fitting time, not ranking quality. The scores stay on the true scale because Platt
    scaling is fitted on held-out customers, who are never subsampled.
    """
    negatives = np.flatnonzero(train & (labels == 0))
    if len(negatives) <= limit:
        return train
    bounded = train & (labels == 1)
    bounded[np.random.default_rng(0).choice(negatives, size=limit, replace=False)] = True
    return bounded


def _fitted_with_smote(classifier: HistGradientBoostingClassifier, rows: np.ndarray, labels: np.ndarray) -> bool:
    """SMOTE up to SMOTE_RATIO, then the trees; False (nothing fitted) where SMOTE refuses the data."""
    pipeline = ImbalancedPipeline([("smote", SMOTE(sampling_strategy=SMOTE_RATIO, k_neighbors=5, random_state=0)),
                                   ("gbm", classifier)])
    try:
        pipeline.fit(rows, labels)
    except ValueError as error:
        logger.warning("SMOTE refused the data; using balanced class weights", extra={"error": str(error)[:120]})
        return False
    return True


def _calibrate(holdout_raw: dict[int, tuple[np.ndarray, np.ndarray]], n_products: int) -> PlattScaling:
    """Platt scaling per product on customers the trees never saw: one probability scale for all."""
    slope, intercept = np.ones(n_products), np.zeros(n_products)
    for product, (raw, labels) in holdout_raw.items():
        if labels.min() == labels.max():
            continue
        platt = LogisticRegression(C=1.0).fit(raw.reshape(-1, 1), labels)
        slope[product], intercept[product] = platt.coef_[0, 0], platt.intercept_[0]
    return PlattScaling(slope, intercept)


def _take_up_rates(training: TrainingSet) -> np.ndarray:
    """Smoothed share of candidates who took each product up: the popularity prior."""
    candidates = training.candidates & ~training.holdout[:, None]
    positives = (training.labels * candidates).sum(axis=0)
    return (positives + 1.0) / (candidates.sum(axis=0) + 50.0)


def _fit_knowledge_prior(training: TrainingSet, design: ProductDesign, popularity: np.ndarray) -> KnowledgePrior:
    """The prior's five weights, fitted on the training customers' candidates of all products pooled."""
    rows, cols = np.nonzero(training.candidates & ~training.holdout[:, None])
    sample = np.random.default_rng(0).permutation(len(rows))[:MAX_POOLED_EXAMPLES]
    rows, cols = rows[sample], cols[sample]
    inputs = np.empty((len(rows), len(KNOWLEDGE_INPUTS)))
    for product in np.unique(cols):
        pairs = np.flatnonzero(cols == product)
        examples = _examples(training, design, int(product), rows[pairs])[0]
        inputs[pairs] = knowledge_inputs(design, examples, popularity[[product]])[:, 0]
    return KnowledgePrior.fit(inputs, training.labels[rows, cols].astype(int))


def _held_out_log_odds(training: TrainingSet, model: HybridRecommender
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Prior and calibrated-trees log-odds, candidates and labels, (customers, P), of held-out
    customers: what judges the trees against the prior and chooses the blend."""
    rows = np.flatnonzero(training.holdout)
    rows = rows[np.random.default_rng(0).permutation(len(rows))[:MAX_HELD_OUT_ROWS]]
    prior = np.zeros((len(rows), len(model.product_ids_)))
    trees = np.zeros_like(prior)
    inputs = CustomerInputs.of(training.tabular, training.signals, rows)
    for product in range(len(model.product_ids_)):
        design = model.design.design(inputs, [product])
        prior[:, product] = model.prior_log_odds(design, [product])[:, 0]
        if model.forest_.has_model[product]:
            trees[:, product] = model.calibration_.log_odds(model.forest_.raw(design, [product]), [product])[:, 0]
    return prior, trees, training.candidates[rows], training.labels[rows].astype(bool)


def _weaker_than_prior(reports: list[ProductReport], held_out: tuple[np.ndarray, ...]) -> set[int]:
    """Products whose trees rank held-out customers worse than the knowledge prior: the prior alone.

    Progressive enhancement decided by the data: a product's trees earn a place only where they
    beat what words, events and popularity say, on customers they never saw.
    """
    prior, trees, candidates, labels = held_out
    weak = set()
    for product, report in enumerate(reports):
        rows = candidates[:, product]
        truth = labels[rows, product]
        if report.strategy == "knowledge_prior" or truth.min(initial=0) == truth.max(initial=0):
            continue
        report.prior_auc = round(float(roc_auc_score(truth, prior[rows, product])), 4)
        report.trees_auc = round(float(roc_auc_score(truth, trees[rows, product])), 4)
        if report.trees_auc < report.prior_auc:
            report.strategy = "knowledge_prior"
            weak.add(product)
    return weak


def _score_holdout(reports: list[ProductReport], held_out: tuple[np.ndarray, ...], chosen: EvidenceBlend) -> None:
    """Each product's final AUC and Brier score on held-out customers, and its tree weight."""
    prior, trees, candidates, labels = held_out
    final = blend(prior, trees, chosen.tree_weight)
    for product, report in enumerate(reports):
        report.tree_weight = round(float(chosen.tree_weight[product]), 4)
        rows = candidates[:, product]
        if not rows.any():
            continue
        truth, scores = labels[rows, product], final[rows, product]
        report.brier = round(float(brier_score_loss(truth, sigmoid(scores))), 5)
        if truth.min() != truth.max():
            report.auc = round(float(roc_auc_score(truth, scores)), 4)
            report.prior_auc = round(float(roc_auc_score(truth, prior[rows, product])), 4)


def _check_compilation(forest: CompiledForest, classifier: HistGradientBoostingClassifier, design: np.ndarray,
                       product: int) -> None:
    """The flat trees must give scikit-learn's own log-odds (its public ``decision_function``) on a
    (customers, 1, features) design of the product; anything else is a bug, not noise."""
    expected = classifier.decision_function(design[:, 0])
    if not np.allclose(forest.raw(design, [product])[:, 0], expected, atol=1e-6):
        raise RuntimeError(f"compiled trees disagree with scikit-learn for product #{product}")


# --------------------------------------------------------------------------------------------------
# From data to training examples and to the serving state
# --------------------------------------------------------------------------------------------------

def label_scheme_of(holdings: pd.DataFrame) -> str:
    """'next_takeup' when most holdings are dated (learn what comes next), else 'holds'."""
    if holdings.empty:
        return "holds"
    return "next_takeup" if holdings["start_date"].notna().mean() >= 0.5 else "holds"


def snapshot_dates(holdings: pd.DataFrame, end: pd.Timestamp, horizon_days: int, count: int) -> list[pd.Timestamp]:
    """Training snapshots before ``end``, each followed by a window of take-ups to learn from."""
    horizon = pd.Timedelta(days=horizon_days)
    first_holding = holdings["start_date"].min()
    dates = [end - horizon * i for i in range(1, count + 1)]
    return [d for d in dates if pd.notna(first_holding) and d > first_holding] or [end - horizon]


def customer_hash_holdout(customer_ids: np.ndarray, share: float = HOLDOUT_SHARE) -> np.ndarray:
    """A stable split by customer id: the same customer is held out in every snapshot and run."""
    hashed = pd.util.hash_array(np.asarray(customer_ids, dtype=object).astype(str)) % 10_000
    return hashed < share * 10_000


@dataclass
class CustomerBase:
    """Everything known about the customers at serving time, computed once at start-up."""

    as_of: pd.Timestamp
    view: pd.DataFrame
    tabular: np.ndarray
    signals: CustomerSignals
    risk: dict[str, np.ndarray]
    stress: np.ndarray
    segment_ok: np.ndarray
    posts: pd.DataFrame  # post_id, customer_id, content, timestamp: the customers' words behind the evidence


def snapshot_signals(data: BankData, as_of: pd.Timestamp, encoder: TextEncoder, detector: LifeEventDetector,
                     profiles: ProfileMatch | None = None, spend_categories: Sequence[str] | None = None
                     ) -> tuple[pd.DataFrame, CustomerSignals, pd.DataFrame]:
    """The view and text-derived signals of every customer using only what was known before ``as_of``;
    ``profiles``: the customers' :func:`profiles_of`, when the caller reads several snapshots;
    ``spend_categories``: those of the model that will score the view (see :func:`customer_view`)."""
    past = data.as_of(as_of)
    view = customer_view(past, as_of=as_of, spend_categories=spend_categories)
    posts = past.social_posts[past.social_posts["customer_id"].isin(view.index)].reset_index(drop=True)
    signals = customer_signals(view, posts, past.holdings, past.interests, data.products, as_of, encoder, detector,
                               past.transactions, profiles)
    return view, signals, posts


def profiles_of(data: BankData, encoder: TextEncoder) -> ProfileMatch:
    """The customers' profiles matched with the products, for every snapshot of the data: a profile
    is not dated, so each snapshot's view holds the same customers with the same profile texts."""
    return profile_match(profile_text(data.customers.set_index("customer_id")), data.products,
                         encoder.encode(product_texts(data.products)), encoder)


def stress_evidence(signals: CustomerSignals, event_names: Sequence[str], view: SignalView) -> np.ndarray:
    """Recency-weighted evidence of money worries in posts and new spending, for the risk profile.

    The risk profile decides which products suit the customer, credit among them, so it reads
    only what every product may read (the data-use policy's common view): under a policy that
    keeps social media out of credit, money worries count only when the spending shows them.
    """
    columns = [event_names.index(e) for e in ("financial_stress", "cash_flow_stress") if e in event_names]
    if not columns:
        return np.zeros(len(signals.customer_ids))
    return events_seen(signals.events, view, event_names)[:, columns].max(axis=1)


def build_customer_base(data: BankData, model: HybridRecommender, as_of: pd.Timestamp, encoder: TextEncoder,
                        detector: LifeEventDetector) -> CustomerBase:
    view, signals, posts = snapshot_signals(data, as_of, encoder, detector,
                                            spend_categories=model.features_.spend_categories)
    return CustomerBase(as_of, view, model.features_.transform(view), signals, risk_inputs(view),
                        stress_evidence(signals, detector.events, model.design.policy.common_view),
                        segment_eligibility(view["customer_type"], data.products["segment"]),
                        posts[["post_id", "customer_id", "content", "timestamp"]])


def build_training_set(data: BankData, end: pd.Timestamp, settings: Settings, encoder: TextEncoder,
                       detector: LifeEventDetector, scheme: str, profiles: ProfileMatch
                       ) -> tuple[list[pd.DataFrame], list[CustomerSignals], list[np.ndarray], list[np.ndarray]]:
    """Views, signals, labels and candidate masks of every training snapshot before ``end``."""
    products = data.products["product_id"].tolist()
    if scheme == "holds":
        view, signals, posts = snapshot_signals(data, end, encoder, detector, profiles)
        labels = (signals.held + signals.asked > 0)  # what customers have or asked for: no take-up dates to learn from
        named = (pd.concat([data.interests, data.holdings], ignore_index=True)
                 .drop_duplicates(["customer_id", "product_id"]))  # the customer's own words first
        signals = without_naming_words(signals, view, posts, named, data.products, end, encoder, detector)
        return [view], [signals], [labels], [segment_eligibility(view["customer_type"], data.products["segment"])]
    views, all_signals, labels, candidates = [], [], [], []
    for start in snapshot_dates(data.holdings, end, settings.training_horizon_days, settings.training_snapshots):
        view, signals, _ = snapshot_signals(data, start, encoder, detector, profiles)
        window = data.holdings[(data.holdings["start_date"] >= start)
                               & (data.holdings["start_date"] < start + pd.Timedelta(days=settings.training_horizon_days))
                               & (data.holdings["start_date"] < end)]
        took_up = held_matrix(window, view.index.to_numpy(), products).astype(bool)
        views.append(view)
        all_signals.append(signals)
        labels.append(took_up)
        candidates.append(segment_eligibility(view["customer_type"], data.products["segment"]) & (signals.held == 0))
    return views, all_signals, labels, candidates


def _stack_signals(signals: Sequence[CustomerSignals]) -> CustomerSignals:
    return CustomerSignals(
        np.concatenate([s.customer_ids for s in signals]), np.vstack([s.held for s in signals]),
        np.vstack([s.events for s in signals]), np.vstack([s.text_match for s in signals]),
        np.vstack([s.best_text_match for s in signals]), np.vstack([s.best_text_source for s in signals]),
        pd.DataFrame(), np.vstack([s.asked for s in signals]), np.vstack([s.recent_post_match for s in signals]))


def make_training_set(data: BankData, end: pd.Timestamp, settings: Settings, encoder: TextEncoder,
                      detector: LifeEventDetector, features: CustomerFeatures | None = None,
                      outcomes: Sequence[FinalOutcome] = ()) -> tuple[TrainingSet, CustomerFeatures, str]:
    """The stacked training examples before ``end``, with the feature pipeline fitted on them (or given).
    Offers the customers accepted or declined (``outcomes``) are examples too, as of ``end``."""
    scheme = label_scheme_of(data.holdings)
    profiles = profiles_of(data, encoder)
    views, signals, labels, candidates = build_training_set(data, end, settings, encoder, detector, scheme, profiles)
    if outcomes:
        view, answered, _ = snapshot_signals(data, end, encoder, detector, profiles)
        rows, took_up, taught = feedback_examples(answered.customer_ids, data.products["product_id"].tolist(), outcomes)
        views.append(view.iloc[rows])
        signals.append(_signal_rows(answered, rows))
        labels.append(took_up)
        candidates.append(taught)
    stacked_view = pd.concat(views)
    features = features or CustomerFeatures(settings.protected_attributes, settings.age_bands).fit(stacked_view)
    stacked = _stack_signals(signals)
    training = TrainingSet(features.transform(stacked_view), stacked, np.vstack(labels), np.vstack(candidates),
                           customer_hash_holdout(stacked.customer_ids), len(views[0]))
    return training, features, scheme


def _signal_rows(signals: CustomerSignals, rows: np.ndarray) -> CustomerSignals:
    """The signals of some customers (the event posts, for explanations only, are left out as in a stack)."""
    return CustomerSignals(**{f.name: pd.DataFrame() if f.name == "event_posts" else getattr(signals, f.name)[rows]
                              for f in fields(CustomerSignals)})


def train(data: BankData, end: pd.Timestamp, settings: Settings, encoder: TextEncoder, detector: LifeEventDetector,
          disabled: frozenset[str] = frozenset(), outcomes: Sequence[FinalOutcome] = (),
          fit_products: ProductFitter | None = None) -> tuple[HybridRecommender, TrainingSet]:
    """Fits the feature pipeline and the recommender on everything known before ``end``, and on the
    offers customers accepted or declined (``outcomes``, from the decision log); ``fit_products``
    as :meth:`HybridRecommender.fit` takes it."""
    training, features, scheme = make_training_set(data, end, settings, encoder, detector, outcomes=outcomes)
    design = ProductDesign(features.feature_specs_, data.products["name"].tolist(), detector.events,
                           event_relevance(encoder, detector, data.products),
                           policy_in_force(settings, data.products), disabled)
    model = HybridRecommender(design, settings.min_positives_for_model, settings.min_positives_for_smote,
                              settings.max_negatives_per_product)
    return model.fit(training, features, data.products["product_id"].tolist(), scheme, fit_products), training
