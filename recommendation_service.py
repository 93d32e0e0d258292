"""The recommendation process of the seed, for one customer.

Customer request → feature transformation → model prediction → business-rules adjustment →
bias check → explanation generation → final recommendation.

Everything that does not depend on the request was done at start-up (:mod:`artifacts`): the data
loaded, the models fitted or reloaded, every known customer's features, text signals and risk
inputs computed (:mod:`customer_state`), and what the model and the risk profile make of every
known customer and of their counterfactual variants (:class:`KnownScores`). A known customer's
request then starts at the rules, which run once per variant that a rule could see differently, and
ends with the explanations of the listed products. A cold start is scored per request: the customer
and all of their counterfactual variants in one pass of the compiled trees.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from artifacts import (ARTIFACT_FILE, Artifacts, ServiceError, check_data_use_policy, ensure_data, load_data,
                       load_or_train, load_rules, save_artifacts)
from bias_detector import (IndividualBiasCheck, Variant, counterfactual_results, counterfactual_variants, group_counts,
                           group_of, individual_bias_check, observed_groups, rebalances_in_force, risk_at_ages,
                           risk_levels_for_ages)
from business_rules import (CONTACT_POLICY_RULES, AdjustedProduct, ContactHistory, CustomerContext, RuleBook,
                            RuleEffect)
from customer_state import CustomerState, CustomerStates, SeenCustomer, UnknownCustomer, UnknownReference
from data_loader import BankData
from data_use import SignalView
from explanations import Explanation, explain_recommendations
from feature_engineer import CustomerInputs
from feedback_learning import SEGMENT_COLUMN, FeedbackEvidence
from recommender import RiskProfile, risk_profile_at, risk_profile_of, risk_scores, risk_scores_at_ages
from settings import Settings
from caches import CacheStats
from text_models import LifeEventDetector

logger = logging.getLogger(__name__)

__all__ = ["RecommendationService", "Recommendation", "RecommendedProduct", "Fallback", "ServiceError",
           "UnknownCustomer", "UnknownReference"]


@dataclass(frozen=True)
class RecommendedProduct:
    product_id: str
    name: str
    category: str
    risk_level: int
    rank: int
    score: float
    adjusted_score: float
    scored_by: str
    rules: tuple[RuleEffect, ...]
    explanation: Explanation | None
    withheld_signals: tuple[str, ...] = ()  # what the data-use policy kept out of this product's score and explanation


@dataclass(frozen=True)
class Fallback:
    used: bool
    degraded: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class DataUse:
    """Which data-use policy this answer was computed under, and whether the customer's posts were read."""

    policy: str
    posts_read: bool
    note: str | None = None


@dataclass(frozen=True)
class Recommendation:
    customer_id: str
    cold_start: bool
    recommendations: tuple[RecommendedProduct, ...]
    risk_profile: RiskProfile
    bias_check: IndividualBiasCheck
    model_version: str
    fallback: Fallback
    excluded_count: int
    suppressed: tuple[Suppressed, ...] = ()  # by the contact policy
    data_use: DataUse | None = None


@dataclass(frozen=True)
class Suppressed:
    """A product the contact policy held back from this answer, and the policy that did."""

    product_id: str
    policy: str
    reason: str


@dataclass(frozen=True)
class KnownScores:
    """What the model and the risk profile make of known customers, computed many customers at a time
    (:meth:`RecommendationService.score_known_customers`): at start-up for the whole customer base,
    in a batch run for the customers of a chunk or a shard.

    Nothing in them depends on a request: they are functions of the customer's data and the model,
    as fixed between reloads as the customer base they come from. A request of a customer they
    cover reads them and starts at the rules; any other scores itself.

    ``slot[row]``: the customer's place in these arrays, -1 for a customer not covered. Probabilities:
    rows ``start[k]:start[k + 1]`` are the customer of slot ``k`` and then each of their variants the
    model sees differently, in the order of :func:`counterfactual_variants`; none (``start[k] ==
    start[k + 1]``) for a customer the model could not score there, whose request scores them itself
    and degrades as it would. Risk: each customer's :func:`risk_scores` row, and their risk score at
    each counterfactual age (``ages``).
    """

    slot: np.ndarray  # (customers of the base,)
    start: np.ndarray  # (covered + 1,)
    probabilities: np.ndarray  # (rows, products)
    risk_score: np.ndarray  # (covered,)
    risk_points: np.ndarray  # (covered, components)
    risk_values: np.ndarray  # (covered, components)
    organization: np.ndarray  # (covered,)
    components: tuple[str, ...]
    ages: dict[float, int]  # counterfactual age -> column of risk_at_age
    risk_at_age: np.ndarray  # (covered, ages)

    @classmethod
    def of(cls, slot: np.ndarray, start: np.ndarray, probabilities: np.ndarray, risk: Mapping[str, np.ndarray],
           stress: np.ndarray, ages: Sequence[float]) -> "KnownScores":
        """``risk`` and ``stress``: the risk inputs of the covered customers, in slot order."""
        score, points, values = risk_scores(risk, stress)
        return cls(slot, start, probabilities, score, np.column_stack(list(points.values())),
                   np.column_stack(list(values.values())), np.asarray(risk["is_organization"], dtype=bool),
                   tuple(points), {age: column for column, age in enumerate(ages)},
                   risk_scores_at_ages(risk, stress, ages))

    def covers(self, row: int) -> bool:
        return self.slot[row] >= 0

    def probabilities_of(self, row: int) -> np.ndarray | None:
        begin, end = self.start[self.slot[row]], self.start[self.slot[row] + 1]
        return self.probabilities[begin:end] if end > begin else None

    def risk_profile(self, row: int) -> RiskProfile:
        slot = self.slot[row]
        points = dict(zip(self.components, self.risk_points[slot].tolist()))
        values = dict(zip(self.components, self.risk_values[slot].tolist()))
        return risk_profile_of(float(self.risk_score[slot]), points, values, bool(self.organization[slot]))

    def risk_of_age(self, row: int, ages: Sequence[float]) -> dict[float, tuple[str, float]]:
        return risk_at_ages(ages, self.risk_at_age[self.slot[row], [self.ages[age] for age in ages]])

    @property
    def megabytes(self) -> float:
        arrays = (self.slot, self.start, self.probabilities, self.risk_score, self.risk_points, self.risk_values,
                  self.risk_at_age)
        return round(sum(a.nbytes for a in arrays) / 2 ** 20, 1)


SCORING_BLOCK = 256
"""Known customers scored together at start-up: about 2,300 rows of the design with their variants,
a few tens of MB of it at a time."""


class RecommendationService:
    """Answers recommendation requests from the state computed at start-up."""

    def __init__(self, settings: Settings, data: BankData, rules: RuleBook, artifacts: Artifacts,
                 group_counts_by_attribute: Mapping[str, Mapping[str, int]] | None = None):
        """``group_counts_by_attribute``: the customers of each protected group, when ``artifacts.base``
        holds only some of the bank (a shard): the counterfactual groups are the whole bank's."""
        self.settings = settings
        self.data = data
        self.rules = rules.rebalanced(rebalances_in_force(artifacts.mitigation))
        self.artifacts = artifacts
        self.model = artifacts.model
        self.base = artifacts.base
        self.products = data.products.reset_index(drop=True)
        self.product_ids: list[str] = self.products["product_id"].tolist()
        self.customers = CustomerStates(settings, self.base, self.model, self.products, data.interests)
        self._product_index = {p: i for i, p in enumerate(self.product_ids)}
        self._product_records = self.products.astype(object).where(self.products.notna(), None).to_dict("records")
        counts = group_counts_by_attribute or {a.name: group_counts(self.base.view, a)
                                               for a in settings.protected_attributes}
        self._observed = {a.name: observed_groups(counts[a.name], a, settings.age_band_labels)
                          for a in settings.protected_attributes}
        self.segments: dict[str, str] = self.base.view[SEGMENT_COLUMN].astype(str).to_dict()  # for the feedback
        self.policy = self.model.design.policy
        self._products_by_view = [[p for i, p in enumerate(self.product_ids) if self.policy.product_view[i] == view]
                                  for view in range(len(self.policy.views))]
        self.known_scores: KnownScores | None = None  # all customers' in start(), a batch's in with_scores_of


    @classmethod
    def start(cls, settings: Settings) -> "RecommendationService":
        started = time.perf_counter()
        ensure_data(settings)
        data = load_data(settings)
        rules = load_rules(settings, data)
        check_data_use_policy(settings, data)
        artifacts, trained = load_or_train(data, settings)
        service = cls(settings, data, rules, artifacts)
        service.known_scores = service.score_known_customers()
        if not artifacts.audit or artifacts.mitigated_pairs() != frozenset(rules.fairness_mitigation):
            from batch import run_audit  # the audit scores every customer: the batch path, not a request's

            run_audit(service)
            save_artifacts(artifacts, settings.models_dir / ARTIFACT_FILE)
        logger.info("service ready", extra={"seconds": round(time.perf_counter() - started, 2), "trained": trained,
                                            "customers": len(service.base.view)})
        return service

    def knows(self, customer_id: str) -> bool:
        return self.customers.knows(customer_id)

    def text_models(self) -> LifeEventDetector:
        return self.customers.text_models()

    def text_cache_stats(self) -> dict[str, CacheStats]:
        return self.customers.text_cache_stats()

    # ---------------------------------------------------------------- one customer

    def recommend(self, customer_id: str, top_k: int, include_explanation: bool = True,
                  contact: ContactHistory | None = None, feedback: FeedbackEvidence | None = None) -> Recommendation:
        """A known customer's answer; ``contact`` is their history in the decision log, ``feedback`` the
        customers' answers to offers since training (the decision log's, when the service has one)."""
        state = self.customers.known(self.customers.row_of(customer_id))
        return self._recommend(state, top_k, include_explanation, contact, feedback)

    def recommend_for_profile(self, customer_id: str, profile: Mapping[str, Any], held_products: Sequence[str],
                              posts: Sequence[str], top_k: int, include_explanation: bool = True,
                              contact: ContactHistory | None = None, feedback: FeedbackEvidence | None = None
                              ) -> Recommendation:
        """Cold start: a customer the data does not know, scored from a profile and their words."""
        state = self.customers.cold(customer_id, profile, held_products, posts)
        return self._recommend(state, top_k, include_explanation, contact, feedback)

    def _recommend(self, state: CustomerState, top_k: int, include_explanation: bool,
                   contact: ContactHistory | None, feedback: FeedbackEvidence | None) -> Recommendation:
        """The seed's flow: features → model → rules → bias check → explanation → answer."""
        variants = self._variants(state)
        known = self._known_row(state)
        probabilities = self.known_scores.probabilities_of(known) if known is not None else None
        failure = None
        if probabilities is None:
            probabilities, failure = self._probabilities(self._design(state, variants))
        degraded = failure is not None
        probabilities, shifts = (feedback.adjust(probabilities, str(state.profile.get(SEGMENT_COLUMN)))
                                 if feedback is not None else (probabilities, {}))
        risk = self._risk_profile(state)
        context = self.context(state, risk, contact)
        outcome = self.rules.apply(context, dict(zip(self.product_ids, probabilities[0].tolist())), top_k)
        ages = [v.age for v in variants if v.age is not None]
        risk_of_age = (self.known_scores.risk_of_age(known, ages) if known is not None
                       else risk_levels_for_ages(state.risk, state.stress, ages))
        counterfactuals = counterfactual_results(variants, probabilities, self.product_ids, context, outcome,
                                                 self.rules, risk_of_age, top_k)
        bias = individual_bias_check(
            outcome.adjusted, [p.product_id for p in outcome.ranked],
            {a.name: group_of(state.profile, a) for a in self.settings.protected_attributes},
            counterfactuals, self.settings.bias_tolerance)
        explanations = (explain_recommendations(self.model, self._seen_by_product(state),
                                                state.inputs(state.tabular[None]), outcome.ranked,
                                                self._product_records, risk, self.rules.max_risk_level(risk.level),
                                                context, shifts)
                        if include_explanation and not degraded else [None] * len(outcome.ranked))
        recommended = tuple(self._recommended(rank, item, explanation) for rank, (item, explanation)
                            in enumerate(zip(outcome.ranked, explanations), start=1))
        reasons = self._fallback_reasons(state, recommended, failure)
        suppressed = tuple(Suppressed(product, effect.rule, effect.reason) for product, effects in outcome.excluded.items()
                           for effect in effects if effect.rule in CONTACT_POLICY_RULES)
        return Recommendation(state.customer_id, state.cold_start, recommended, risk, bias, self.model.version_,
                              Fallback(bool(reasons), degraded, tuple(reasons)), len(outcome.excluded), suppressed,
                              self._data_use(state))

    def design_with_variants(self, state: CustomerState) -> tuple[list[Variant], np.ndarray]:
        """The customer's counterfactual variants (one protected attribute changed each) and the model
        input of the customer (row 0) and of every variant the model sees differently, in order: what
        ``predict_proba(..., variants_of=zeros)`` scores."""
        variants = self._variants(state)
        return variants, self._design(state, variants)

    def _variants(self, state: CustomerState) -> list[Variant]:
        return counterfactual_variants(state.profile, state.tabular, self.settings.protected_attributes,
                                       self._observed, self.model.features_.patches_, self.rules,
                                       self.settings.band_age)

    def _design(self, state: CustomerState, variants: Sequence[Variant]) -> np.ndarray:
        return self.model.design.design(state.inputs(_scored_rows(state.tabular, variants)))

    def _known_row(self, state: CustomerState) -> int | None:
        """The customer's row of the base when :attr:`known_scores` covers them; None otherwise (a cold
        start, a customer left out, or none computed)."""
        if state.cold_start or self.known_scores is None:
            return None
        row = self.customers.row_of(state.customer_id)
        return row if self.known_scores.covers(row) else None

    def _risk_profile(self, state: CustomerState) -> RiskProfile:
        known = self._known_row(state)
        return (self.known_scores.risk_profile(known) if known is not None
                else risk_profile_at(state.risk, state.stress, 0))

    def score_known_customers(self, rows: np.ndarray | None = None) -> KnownScores:
        """The known customers at ``rows`` (default: all) and their counterfactual variants through
        the model, a block of ``SCORING_BLOCK`` customers per pass of the compiled trees, and their risk
        profiles: what their requests read instead of computing them one customer per request. A block
        the model cannot score is left out (the first failure logged with its cause, the count of
        customers left out with the summary): its customers' requests score, and degrade, as before."""
        started = time.perf_counter()
        rows = np.arange(len(self.base.view)) if rows is None else np.asarray(rows, dtype=np.intp)
        counts = np.zeros(len(rows), dtype=np.intp)
        blocks = [np.zeros((0, len(self.product_ids)))]
        failed = 0
        for begin in range(0, len(rows), SCORING_BLOCK):
            block = slice(begin, begin + SCORING_BLOCK)
            try:
                probabilities, counts[block] = self._scored_block(rows[block])
            except Exception:  # the requests of these customers score themselves, and say so if they fail
                if not failed:
                    logger.exception("scoring known customers failed; their requests will score them")
                failed += len(rows[block])
                continue
            blocks.append(probabilities)
        slot = np.full(len(self.base.view), -1, dtype=np.intp)
        slot[rows] = np.arange(len(rows))
        scores = KnownScores.of(slot, np.concatenate([[0], np.cumsum(counts)]), np.concatenate(blocks),
                                {name: values[rows] for name, values in self.base.risk.items()},
                                self.base.stress[rows], self._counterfactual_ages())
        logger.info("known customers scored", extra={
            "customers": len(rows), "left_to_requests": failed,
            "rows": len(scores.probabilities), "megabytes": scores.megabytes,
            "seconds": round(time.perf_counter() - started, 2)})
        return scores

    def with_scores_of(self, rows: np.ndarray) -> RecommendationService:
        """This service answering the customers at ``rows`` from their scores computed together (a batch
        run's chunk or shard): the same answers, the model's passes made for many customers at once."""
        scored = copy.copy(self)
        scored.known_scores = self.score_known_customers(rows)
        return scored

    def _counterfactual_ages(self) -> list[float]:
        """The ages the bias check's variants of another age band are given: each observed band's."""
        return sorted({self.settings.band_age(group) for attribute in self.settings.protected_attributes
                       if attribute.column == "age_band" for group in self._observed[attribute.name]})

    def _scored_block(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The probabilities of the customers at ``rows`` and their variants, and each one's row count."""
        tabular, first, counts = [], [], []
        for row in rows:
            state = self.customers.known(int(row))
            scored = _scored_rows(state.tabular, self._variants(state))
            first += [len(tabular)] * len(scored)
            tabular += list(scored)
            counts.append(len(scored))
        inputs = dataclasses.replace(CustomerInputs.of(self.base.tabular, self.base.signals, np.repeat(rows, counts)),
                                     tabular=np.stack(tabular))
        design = self.model.design.design(inputs)
        return self.model.predict_proba(design, variants_of=np.asarray(first)), np.asarray(counts)

    def _seen_by_product(self, state: CustomerState) -> Callable[[int], SeenCustomer]:
        """The customer as each product's data-use view shows them (built once per view)."""
        seen = [state.seen_by(view, self.model.design.event_names) for view in self.policy.views]
        return lambda product: seen[self.policy.product_view[product]]

    def _data_use(self, state: CustomerState) -> DataUse:
        note = None if state.posts_read else "the customer has not consented to the use of their social-media posts: none were read"
        return DataUse(self.policy.name, state.posts_read, note)

    def _probabilities(self, design: np.ndarray) -> tuple[np.ndarray, str | None]:
        """The model's probabilities of one customer (row 0) and their variants; popularity, and the
        failure's name, when the model cannot score."""
        try:
            return self.model.predict_proba(design, variants_of=np.zeros(len(design), dtype=np.intp)), None
        except Exception as error:  # the answer degrades to popularity, and says so
            logger.exception("model scoring failed; answering from popularity")
            return np.tile(self.model.prior_, (design.shape[0], 1)), type(error).__name__

    def context(self, state: CustomerState, risk: RiskProfile | None = None,
                contact: ContactHistory | None = None) -> CustomerContext:
        """What the rules may know about the customer: profile, risk, recent life events, holdings,
        and their history of offers and answers."""
        risk = risk or self._risk_profile(state)
        held = frozenset(self.product_ids[i] for i in np.flatnonzero(state.held))
        events, *seen_by_view = state.recent_events(self.base.as_of, [SignalView(), *self.policy.views])
        by_product = {}
        for seen, products in zip(seen_by_view, self._products_by_view):
            if seen != events:
                by_product.update(dict.fromkeys(products, seen))
        asked = frozenset(p for p in state.stated_needs
                          if p not in self._product_index or self.policy.view_of(self._product_index[p]).reads("profile"))
        return CustomerContext(state.profile, risk.level, risk.score, events, held, asked, contact, by_product)

    def _recommended(self, rank: int, item: AdjustedProduct, explanation: Explanation | None) -> RecommendedProduct:
        index = self._product_index[item.product_id]
        product = self._product_records[index]
        return RecommendedProduct(item.product_id, str(product["name"]), str(product["category"]),
                                  int(product["risk_level"]), rank, round(item.model_score, 5),
                                  round(item.adjusted_score, 5), self.model.reports_[index].strategy,
                                  tuple(item.effects), explanation, self.policy.view_of(index).withheld)

    def _fallback_reasons(self, state: CustomerState, recommended: Sequence[RecommendedProduct],
                          failure: str | None) -> list[str]:
        reasons = []
        if failure:
            reasons.append(f"degraded: the model could not score ({failure}); popularity and rules only")
        if state.cold_start:
            reasons.append("cold start: no history for this customer; scored from the profile and their own words")
        for item in recommended:
            if item.scored_by == "knowledge_prior":
                report = self.model.reports_[self._product_index[item.product_id]]
                why = (f"too few take-ups to learn from ({report.positives})"
                       if report.positives < self.settings.min_positives_for_model
                       else f"its trees did not beat the prior on held-out customers (AUC {report.trees_auc} "
                            f"against {report.prior_auc})")
                reasons.append(f"{item.product_id}: {why}; scored by the knowledge prior (the customer's words, "
                               "life events and popularity)")
        return reasons

    # ---------------------------------------------------------------- analysts

    def customer_view(self, customer_id: str) -> dict[str, Any]:
        state = self.customers.known(self.customers.row_of(customer_id))
        return {"customer_id": customer_id, "profile": state.profile,
                "held_products": [self.product_ids[i] for i in np.flatnonzero(state.held)],
                "life_events": [{**e._asdict(), "post_id": e.post_id or None,  # spending with no id: none
                                 "timestamp": e.timestamp.date().isoformat()} for e in state.detected_events],
                "risk_profile": self._risk_profile(state)}

    def model_card(self, feedback: FeedbackEvidence | None = None) -> dict[str, Any]:
        model = self.model
        reports = [vars(r) for r in model.reports_]
        aucs = [r.auc for r in model.reports_ if r.auc is not None]
        return {
            "model_version": model.version_, "trained_at": self.artifacts.trained_at,
            "data_fingerprint": self.artifacts.fingerprint, "label_scheme": model.label_scheme_,
            "training_seconds": model.training_seconds_, "tree_depth": model.tree_depth_,
            "as_of": self.base.as_of.date().isoformat(),
            "customers": int(len(self.base.view)), "products": len(self.product_ids),
            "offline_metrics": {"mean_holdout_auc": round(float(np.mean(aucs)), 4) if aucs else None,
                                "per_product": reports},
            "fallbacks_in_force": [r.product_id for r in model.reports_ if r.strategy == "knowledge_prior"],
            "knowledge_prior": model.knowledge_summary(),
            "feedback": {"trained_on": self.artifacts.trained_on_feedback,
                         "since_training": feedback.summary() if feedback is not None else None},
            "skipped_rules": [asdict(rule) for rule in self.rules.skipped_rules],
            "data_use_policy": self.policy.describe(),
            "data_quality": self.data.quality.to_dict(),
        }


def _scored_rows(tabular: np.ndarray, variants: Sequence[Variant]) -> np.ndarray:
    """The tabular rows the model scores for a customer: theirs, then each variant's it sees differently."""
    return np.stack([tabular] + [v.tabular for v in variants if v.tabular is not None])
