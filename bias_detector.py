"""Bias detection at the two levels of the seed architecture (SPEC section 4).

* The individual check runs on every response: the service re-scores the customer with each
  protected attribute set to the other groups' values (counterfactuals) and this module compares
  those scores and top-k lists with the customer's own. It sits in the request path, so it is
  plain Python over the handful of products in the two top-k lists, without AIF360.
* The group audit runs at start-up and on demand: per product and protected attribute, AIF360's
  disparate impact and statistical parity difference of the recommendations and of the
  historical holdings (so that bias the model learnt from the data can be told from bias it
  introduced), each with its 95% confidence interval, which decides a flag; the exposure of each
  group (where in the lists the product comes, not only whether); the equal opportunity
  difference on held-out take-ups; and the same rates and exposure for every intersection of two
  protected attributes against the rest of the population.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from itertools import combinations
from typing import Any, Callable, Literal

import numpy as np
import pandas as pd
from scipy.stats import fisher_exact, norm

from business_rules import (REBALANCE_RULE, CustomerContext, GroupRebalance, MitigationPair, RuleBook, RuleEffect,
                            RuleOutcome)
from data_loader import is_missing, segment_eligibility
from recommender import risk_level, risk_scores_at_ages
from settings import ProtectedAttribute


@contextmanager
def _root_logger_silenced() -> Iterator[None]:
    """Mute the root logger while AIF360 is imported.

    AIF360 announces every optional extra it lacks (tensorflow, fairlearn, inFairness) with
    ``logging.warning`` on the root logger. Raising the root level drops those lines; the
    temporary NullHandler keeps ``logging.warning`` from calling ``basicConfig`` behind our
    back, which would otherwise turn the service's own logging configuration into a no-op.
    """
    root = logging.getLogger()
    previous_level = root.level
    placeholder = logging.NullHandler()
    root.addHandler(placeholder)
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(previous_level)
        root.removeHandler(placeholder)


with _root_logger_silenced():
    from aif360.datasets import BinaryLabelDataset
    from aif360.metrics import BinaryLabelDatasetMetric, ClassificationMetric


# --------------------------------------------------------------------------------------------
# Individual check: counterfactuals of one customer, on every response
# --------------------------------------------------------------------------------------------

MAX_OTHER_GROUPS = 4
"""Non-privileged groups re-scored per attribute, the most frequent first; bounds the batch."""


@dataclass(frozen=True)
class CounterfactualResult:
    """The recommender's answer for the customer with one protected attribute substituted.

    ``scores`` should cover every product still eligible after the rules, not only ``ranked``:
    a product missing from it counts as excluded (score 0).
    """

    attribute: str
    group: str
    scores: Mapping[str, float]
    ranked: Sequence[str]
    change: TopKChange | None = None  # set when the group's top-k set differs from the customer's


@dataclass(frozen=True)
class TopKChange:
    """How one group's top-k list differs from the customer's, and what made the difference: what
    an analyst needs to tell a bank rule that reads the attribute on purpose (a pension boosted at 55)
    from a model that learned it.

    ``rules``: the bank rules and eligibility checks that treat the group's version of the customer
    differently on the products that entered or left (a boost, a demotion or an exclusion on one side
    only, and which), with their reasons; ``model_score_change``: the largest change of the model's own score
    (before any rule) among those products.
    """

    group: str
    entered: list[str]
    left: list[str]
    rules: list[RuleCause]
    model_score_change: float
    reason: str


@dataclass(frozen=True)
class RuleCause:
    """A rule that fired on one side only: for the ``group`` version of the customer or for the ``customer``."""

    rule: str
    applies_to: Literal["group", "customer"]
    reason: str


@dataclass(frozen=True)
class AttributeCheck:
    """How much the recommendations moved when one protected attribute was changed.

    ``top_k_order_changed`` is true whenever some counterfactual's ranked list differs from the
    original's, so a changed set also counts as a changed order. ``note`` says why an attribute
    passed without being tested.
    """

    attribute: str
    original_group: str | None
    groups_tested: list[str]
    max_score_change: float
    worst_group: str | None
    worst_product: str | None
    top_k_set_changed: bool
    top_k_order_changed: bool
    passed: bool
    groups_changing_top_k: list[str]
    note: str | None = None
    top_k_changes: list[TopKChange] = field(default_factory=list)  # one per group in groups_changing_top_k


@dataclass(frozen=True)
class IndividualBiasCheck:
    """The individual bias check of one response: passed when every attribute passed."""

    passed: bool
    tolerance: float
    attributes: list[AttributeCheck]


def counterfactual_groups(attribute: ProtectedAttribute, observed_values: Sequence[str],
                          original: str | None, max_other_groups: int = MAX_OTHER_GROUPS) -> list[str]:
    """The groups to re-score a customer with for one protected attribute.

    Every group costs a row in the recommender's batch, so the list is bounded: all observed
    privileged groups (the comparison the group audit is about) plus the ``max_other_groups``
    most frequent other groups. ``observed_values`` must come most frequent first, as
    ``Series.value_counts().index`` gives them; for age, pass the band labels, which all fit
    under the bound with the default bands. A customer whose value is unknown gets no
    counterfactual: there is no group of theirs to move away from.
    """
    if not _is_known(original):
        return []
    candidates = [value for value in dict.fromkeys(observed_values) if _is_known(value) and value != original]
    privileged = [value for value in candidates if value in attribute.privileged]
    others = [value for value in candidates if value not in attribute.privileged]
    return privileged + others[:max_other_groups]


def individual_bias_check(original_scores: Mapping[str, float], original_ranked: Sequence[str],
                          original_groups: Mapping[str, str | None],
                          counterfactuals: Sequence[CounterfactualResult], tolerance: float) -> IndividualBiasCheck:
    """Compare a customer's recommendations with those of their counterfactuals.

    ``original_groups`` maps every protected attribute to the customer's group (None when
    unknown); each of them is reported, with or without counterfactuals. Scores are the final
    ones, after business rules, so that a rule keyed on a protected attribute is caught too; they
    should cover every eligible product, so that a product crossing the top-k cut-off counts with
    its real change, not with its whole score.
    """
    results_by_attribute: dict[str, list[CounterfactualResult]] = {name: [] for name in original_groups}
    for result in counterfactuals:
        results_by_attribute.setdefault(result.attribute, []).append(result)
    checks = [_attribute_check(name, original_groups.get(name), results, original_scores, original_ranked, tolerance)
              for name, results in results_by_attribute.items()]
    return IndividualBiasCheck(passed=all(check.passed for check in checks), tolerance=tolerance, attributes=checks)


def _attribute_check(attribute: str, original_group: str | None, results: Sequence[CounterfactualResult],
                     original_scores: Mapping[str, float], original_ranked: Sequence[str],
                     tolerance: float) -> AttributeCheck:
    """One attribute's verdict: fails on a score change beyond tolerance or a changed top-k set."""
    if not results:
        return AttributeCheck(attribute=attribute, original_group=original_group, groups_tested=[],
                              max_score_change=0.0, worst_group=None, worst_product=None, top_k_set_changed=False,
                              top_k_order_changed=False, passed=True, groups_changing_top_k=[],
                              note=_untested_reason(original_group))
    original_list = list(original_ranked)
    original_set = set(original_list)
    max_change, worst_group, worst_product = 0.0, None, None
    groups_changing_top_k: list[str] = []
    order_changed = False
    for result in results:
        change, product = _largest_score_change(original_scores, original_list, result)
        if change > max_change:
            max_change, worst_group, worst_product = change, result.group, product
        if set(result.ranked) != original_set:
            groups_changing_top_k.append(result.group)
        order_changed = order_changed or list(result.ranked) != original_list
    set_changed = bool(groups_changing_top_k)
    return AttributeCheck(attribute=attribute, original_group=original_group,
                          groups_tested=[result.group for result in results], max_score_change=max_change,
                          worst_group=worst_group, worst_product=worst_product, top_k_set_changed=set_changed,
                          top_k_order_changed=order_changed, passed=max_change <= tolerance and not set_changed,
                          groups_changing_top_k=groups_changing_top_k,
                          top_k_changes=[result.change for result in results if result.change is not None])


def _largest_score_change(original_scores: Mapping[str, float], original_ranked: Sequence[str],
                          result: CounterfactualResult) -> tuple[float, str | None]:
    """Largest |score change| over both top-k lists, and the product it happened to.

    A product scored on one side only (for instance excluded by an eligibility rule for the
    counterfactual) counts as 0 on the other: dropping it is as big a change as its score.
    """
    largest, product_of_largest = 0.0, None
    for product in (*original_ranked, *result.ranked):
        change = abs(original_scores.get(product, 0.0) - result.scores.get(product, 0.0))
        if change > largest:
            largest, product_of_largest = change, product
    return largest, product_of_largest


def _untested_reason(original_group: str | None) -> str:
    if not _is_known(original_group):
        return "not tested: the customer's value is unknown, so there is no counterfactual"
    return "not tested: no other group to compare with"


def _is_known(value: object) -> bool:
    return not is_missing(value)


# --------------------------------------------------------------------------------------------
# Counterfactual variants: the customer with one protected attribute changed, through model and rules
# --------------------------------------------------------------------------------------------

@dataclass
class Variant:
    """The customer with one protected attribute set to another group's value."""

    attribute: str
    group: str
    profile: dict[str, Any]
    tabular: np.ndarray | None  # None: not a model input, the model's scores are the original's
    age: float | None  # set when the variant changes the age (risk profile and age rules)
    rules_read_it: bool  # some rule or eligibility check reads the changed field


def group_of(profile: Mapping[str, Any], attribute: ProtectedAttribute) -> str | None:
    """The customer's group for a protected attribute; None when unknown."""
    value = profile.get(attribute.column)
    return str(value) if _is_known(value) else None


def observed_groups(counts: Mapping[str, int], attribute: ProtectedAttribute, age_band_labels: Sequence[str]
                    ) -> list[str]:
    """The groups a counterfactual may move a customer to, most frequent first, ties by name, so
    that the order is the data's and not the order of its rows (age: every band)."""
    if attribute.column == "age_band":
        return list(age_band_labels)
    return sorted(counts, key=lambda group: (-counts[group], group))


def group_counts(view: pd.DataFrame, attribute: ProtectedAttribute) -> dict[str, int]:
    """How many customers of ``view`` are in each group of ``attribute``: summed over the shards of a
    bank, they are the whole bank's, which :func:`observed_groups` orders."""
    column = view.get(attribute.column)
    return {} if column is None else {str(group): int(count) for group, count in column.value_counts().items()}


def counterfactual_variants(profile: Mapping[str, Any], tabular: np.ndarray, attributes: Sequence[ProtectedAttribute],
                            observed: Mapping[str, Sequence[str]], patches: Mapping[str, Mapping[str, Any]],
                            rules: RuleBook, band_age: Callable[[str], float]) -> list[Variant]:
    """The customer with each protected attribute set to each other group's value.

    ``patches`` are the fitted features' exact encoded columns of each group (so a variant costs an
    array copy); an attribute the model does not read gets no tabular row and is re-ranked by the
    rules alone, and only where a rule reads it.
    """
    variants = []
    for attribute in attributes:
        changes_age = attribute.column == "age_band"
        rules_read_it = rules.reads(f"customer.{attribute.column}") or (changes_age and rules.reads("customer.age"))
        patch = patches.get(attribute.name, {})
        for group in counterfactual_groups(attribute, observed[attribute.name], group_of(profile, attribute)):
            varied = {**profile, attribute.column: group}
            age = band_age(group) if changes_age else None
            if age is not None:
                varied["age"] = age
            varied_tabular = None
            if group in patch:
                varied_tabular = tabular.copy()
                varied_tabular[patch[group][0]] = patch[group][1]
            variants.append(Variant(attribute.name, group, varied, varied_tabular, age, rules_read_it or changes_age))
    return variants


def counterfactual_results(variants: Sequence[Variant], probabilities: np.ndarray, product_ids: Sequence[str],
                           original: CustomerContext, outcome: RuleOutcome, rules: RuleBook,
                           risk_of_age: Mapping[float, tuple[str, float]], top_k: int) -> list[CounterfactualResult]:
    """Each variant through the model and the rules; rules are re-run only where they could differ.

    ``probabilities`` has the original's scores in row 0 and one row per variant with a tabular
    change, in order. A variant of another age also gets the risk level and score of that age
    (``risk_of_age``, :func:`risk_levels_for_ages`).
    """
    results, row = [], 0
    for variant in variants:
        scored_row = 0
        if variant.tabular is not None:
            row += 1
            scored_row = row
        scores = dict(zip(product_ids, probabilities[scored_row].tolist()))
        if variant.rules_read_it:
            level, score = risk_of_age[variant.age] if variant.age is not None else (original.risk_level,
                                                                                      original.risk_score)
            context = replace(original, profile=variant.profile, risk_level=level, risk_score=score)
            varied = rules.apply(context, scores, top_k, like=outcome)
        elif variant.tabular is not None:
            varied = rules.rescore(outcome, scores, top_k)
        else:
            varied = outcome  # neither the model nor the rules see this attribute
        ranked = [p.product_id for p in varied.ranked]
        change = (top_k_change(variant.group, outcome, varied, probabilities[0], probabilities[scored_row],
                               product_ids, top_k) if varied is not outcome else None)
        results.append(CounterfactualResult(variant.attribute, variant.group, varied.adjusted, ranked, change))
    return results


CONSEQUENCES = frozenset({"diversity.max_per_category"})
"""Effects that follow from the rest of the list, not from the customer: never the cause of a change."""


def top_k_change(group: str, original: RuleOutcome, varied: RuleOutcome, original_model: np.ndarray,
                 varied_model: np.ndarray, product_ids: Sequence[str], top_k: int) -> TopKChange | None:
    """What differs between the customer's top-k set and their ``group`` version's, and why; None when
    the two sets are the same. ``original_model``, ``varied_model``: the model's scores of each side,
    in ``product_ids`` order.

    A product enters a list only by scoring higher or by products above it leaving, so the causes are
    found among the products that entered or left: a rule that fired on one side only, or the model's
    own score.
    """
    before = [item.product_id for item in original.ranked]
    after = [item.product_id for item in varied.ranked]
    entered = [product for product in after if product not in before]
    left = [product for product in before if product not in after]
    if not entered and not left:
        return None
    moved = entered + left
    found: dict[tuple[str, str], RuleCause] = {}
    for product in moved:
        customer_side, group_side = _effects_on(original, product), _effects_on(varied, product)
        differing = {effect for effect in customer_side ^ group_side if effect.rule not in CONSEQUENCES}
        # a product excluded on one side only is out because of the exclusion: what boosted it on the other
        # side did not fire on this one only because the product was gone by then
        differing = {effect for effect in differing if effect.effect == "exclude"} or differing
        for effect in differing:
            side = "group" if effect in group_side else "customer"
            found.setdefault((effect.rule, side), RuleCause(effect.rule, side, effect.reason))
    position = {product: index for index, product in enumerate(product_ids)}
    model_change = max(abs(float(varied_model[position[p]]) - float(original_model[position[p]])) for p in moved)
    causes = [found[key] for key in sorted(found)]
    return TopKChange(group, entered, left, causes, round(model_change, 4),
                      _change_reason(group, entered, left, causes, model_change, top_k))


def _effects_on(outcome: RuleOutcome, product: str) -> set[RuleEffect]:
    """The rules that boosted, demoted or excluded ``product`` in ``outcome``."""
    return {*outcome.rule_effects.get(product, ()), *outcome.excluded.get(product, ())}


def _change_reason(group: str, entered: Sequence[str], left: Sequence[str], causes: Sequence[RuleCause],
                   model_change: float, top_k: int) -> str:
    """The change in one sentence, its causes named: "As 60+, retirement_pension would enter the top 3 and
    cashback_card would leave it: bank rule retirement_planning fires for 60+ only (the customer is 55 or
    older ...)"."""
    moves = ([f"{', '.join(entered)} would enter the top {top_k}"] if entered else []) + \
            ([f"{', '.join(left)} would leave it" if entered else f"{', '.join(left)} would leave the top {top_k}"]
             if left else [])
    because = [f"bank rule {cause.rule} fires for {group if cause.applies_to == 'group' else 'the customer'} only "
               f"({cause.reason})" for cause in causes] + \
              ([f"the model's own score changes by up to {model_change:.4f}"] if model_change > 0 else [])
    return f"As {group}, {' and '.join(moves)}: {' and '.join(because) or 'their scores after the rules differ'}."


def risk_levels_for_ages(risk_inputs: Mapping[str, np.ndarray], stress: np.ndarray,
                         ages: Sequence[float]) -> dict[float, tuple[str, float]]:
    """Risk level and score of one customer at each counterfactual age, in one vectorised pass."""
    return risk_at_ages(ages, risk_scores_at_ages(risk_inputs, stress, ages)[0])


def risk_at_ages(ages: Sequence[float], scores: Sequence[float]) -> dict[float, tuple[str, float]]:
    """Each age's risk level and score, from the customer's risk ``scores`` at those ages."""
    return {age: (risk_level(float(score)), float(score)) for age, score in zip(ages, scores)}


# --------------------------------------------------------------------------------------------
# Group audit with AIF360: per product and protected attribute, at start-up and on demand
# --------------------------------------------------------------------------------------------

AuditStatus = Literal["ok", "flagged", "inconclusive", "insufficient_data"]
BiasSource = Literal["data", "model", "both"]
Outcome = Literal["recommended", "held"]

MIN_POSITIVES = 5
"""Fewer customers than this with the product make a rate ratio noise, not evidence."""
CONFIDENCE_LEVEL = 0.95
"""Of every interval of the audit. A figure is flagged only when its whole interval lies outside the
fairness band, so 9 against 4 recommendations among 200 customers each (disparate impact 0.44,
interval 0.14-1.42) is inconclusive, not an alarm, while 60 against 20 (0.33, interval 0.21-0.53) is
flagged."""
INTERVAL_METHODS = ("ratios (disparate impact, exposure disparity): log interval by the delta method, Katz's for "
                    "rates; differences (statistical parity): Newcombe's hybrid score interval")
TOP_SLOTS = 3
"""The first places of a list, the ones a customer reads: the exposure block's ``top_3`` figures."""

_Z = float(norm.ppf(0.5 + CONFIDENCE_LEVEL / 2))
_SEGMENTS_BY_TYPE = ("individual", "organization")
_PRIVILEGED, _UNPRIVILEGED = 1.0, 0.0


@dataclass(frozen=True)
class Interval:
    """A confidence interval at CONFIDENCE_LEVEL.

    ``low`` and ``high`` are None where the data set no bound, and ``note`` says why: a ratio whose
    reference group has no positive has no upper bound, one where neither group has any has no
    interval at all.
    """

    low: float | None
    high: float | None
    note: str | None = None

    def shown(self) -> str:
        """'[0.14, 1.42]' for the notes of the audit; an open upper bound reads 'inf'."""
        high = "inf" if self.high is None else f"{self.high:.2f}"
        return f"[{self.low:.2f}, {high}]" if self.low is not None else "undefined"


@dataclass(frozen=True)
class GroupRates:
    """How often each group receives (or holds) a product, and the comparisons of the two: AIF360's in
    the single-attribute entries, the same figures counted with numpy in the intersections.

    ``disparate_impact`` is None when it is not a finite number (``note`` says why). Each comparison
    carries its interval, and the disparate impact's decides: ``flagged`` when the whole interval lies
    outside the fairness band, ``inconclusive`` when the estimate does but the interval reaches into the
    band (the gap could be chance), ``insufficient_data`` when a group is below the minimum size or too
    few customers have the product, whatever the figures say. ``p_value`` (Fisher's exact test) is a
    second reading of the single-attribute entries; it no longer decides.
    """

    n_positives: int
    rate_privileged: float | None
    rate_unprivileged: float | None
    disparate_impact: float | None
    disparate_impact_interval: Interval
    statistical_parity_difference: float | None
    statistical_parity_interval: Interval
    flagged: bool
    status: AuditStatus
    note: str | None = None
    p_value: float | None = None


@dataclass(frozen=True)
class Placement:
    """Where one group's customers find a product in their lists.

    The shares are of the product's first places (``rank_1_share``) and of its places in the top
    three (``top_3_share``) across the population compared, None when it has none; they read against
    ``population_share``. ``mean_exposure`` averages each customer's position discount (0 when the
    product is not in their list).
    """

    population_share: float
    rank_1_share: float | None
    top_3_share: float | None
    mean_exposure: float


@dataclass(frozen=True)
class Exposure:
    """Where the recommendations put a product for each group, not only whether they give it.

    A customer's exposure to a product is 1/log2(rank + 1) when it is in their list (1 first, 0.63
    second, 0.5 third: the discount of DCG) and 0 otherwise. ``disparity`` is the unprivileged group's
    mean exposure over the privileged group's, a disparate impact weighted by position: a product given
    to both groups alike but always first to one and third to the other reads 0.5. It is judged as a
    disparate impact is, by its interval against the same band, with the same minimums counted on the
    customers recommended the product.
    """

    rank_1_slots: int
    top_3_slots: int
    privileged: Placement
    unprivileged: Placement
    disparity: float | None
    disparity_interval: Interval
    flagged: bool
    status: AuditStatus
    note: str | None = None


@dataclass(frozen=True)
class FairnessEntry:
    """The audit of one product for one protected attribute.

    ``source_of_bias``: ``model`` when only the recommendations are flagged, by their rates or by
    their exposure (the model introduced the skew), ``data`` when only the historical holdings are
    (the model did not carry it over), ``both`` when both are (the model reproduces the data's skew).
    A block with insufficient data or an inconclusive gap counts as not flagged. ``exposure`` is
    None when the recommendations came without ranks or a group is empty.
    """

    product_id: str
    attribute: str
    privileged_groups: list[str]
    unprivileged_groups: list[str]
    n_privileged: int
    n_unprivileged: int
    recommendations: GroupRates
    holdings: GroupRates
    exposure: Exposure | None
    equal_opportunity_difference: float | None
    held_out_positives: int | None
    status: AuditStatus
    source_of_bias: BiasSource | None


@dataclass(frozen=True)
class IntersectionEntry:
    """One product for one intersection of two protected attributes (say women aged 18-29), compared
    with the rest of the product's population: everyone else in its segment whose two values are known.

    The rest, not the most favoured intersection, is the reference: it is large, so its rate is steady,
    and it is fixed before the rates are seen, while the highest of dozens of small cells would be
    picked partly for its noise and make every other cell look disadvantaged. In the blocks the
    "unprivileged" figures are the intersection's and the "privileged" ones the rest's: a disparate
    impact below the band says the intersection gets the product less often than everyone else, above
    it more often. A small cell is ``insufficient_data``, never flagged. There is no equal opportunity
    difference (too few held-out take-ups per cell) and no Fisher p-value (milliseconds a test, seconds
    over the thousands of cells); the interval decides, as in the entries.
    """

    product_id: str
    group: dict[str, str]
    n_group: int
    n_rest: int
    recommendations: GroupRates
    holdings: GroupRates
    exposure: Exposure | None
    status: AuditStatus
    source_of_bias: BiasSource | None


@dataclass(frozen=True)
class FairnessAudit:
    """The group audit of all products; ``to_dict()`` is JSON-ready (no NaN or infinity)."""

    generated_at: str
    fairness_band: tuple[float, float]
    min_group_size: int
    min_positives: int
    exposure_measured: bool
    entries: list[FairnessEntry]
    intersections: list[IntersectionEntry]

    def summary(self) -> dict[str, Any]:
        """What an analyst reads first: how many pairs are flagged, by source and attribute."""
        flagged = [entry for entry in self.entries if entry.status == "flagged"]
        return {
            "entries": len(self.entries),
            "flagged": len(flagged),
            "inconclusive": sum(entry.status == "inconclusive" for entry in self.entries),
            "insufficient_data": sum(entry.status == "insufficient_data" for entry in self.entries),
            "exposure_flagged": sum(entry.exposure is not None and entry.exposure.flagged for entry in self.entries),
            "flagged_by_source": dict(Counter(entry.source_of_bias for entry in flagged)),
            "flagged_by_attribute": dict(Counter(entry.attribute for entry in flagged)),
            "flagged_pairs": [{"product_id": entry.product_id, "attribute": entry.attribute,
                               "source_of_bias": entry.source_of_bias,
                               "recommendations_disparate_impact": entry.recommendations.disparate_impact,
                               "holdings_disparate_impact": entry.holdings.disparate_impact,
                               "exposure_disparity": entry.exposure.disparity if entry.exposure else None}
                              for entry in flagged],
            "intersections": self._intersections_summary(),
        }

    def _intersections_summary(self) -> dict[str, Any]:
        statuses = Counter(entry.status for entry in self.intersections)
        flagged = [entry for entry in self.intersections if entry.status == "flagged"]
        return {"entries": len(self.intersections), "flagged": statuses["flagged"],
                "inconclusive": statuses["inconclusive"], "insufficient_data": statuses["insufficient_data"],
                "flagged_by_source": dict(Counter(entry.source_of_bias for entry in flagged)),
                "flagged_by_attributes": dict(Counter(" x ".join(entry.group) for entry in flagged))}

    def to_dict(self) -> dict[str, Any]:
        return {
            "generated_at": self.generated_at,
            "criteria": {"fairness_band": list(self.fairness_band), "min_group_size": self.min_group_size,
                         "min_positives": self.min_positives, "confidence_level": CONFIDENCE_LEVEL,
                         "interval_methods": INTERVAL_METHODS,
                         "exposure": ("1/log2(rank + 1) per customer, 0 when not recommended" if self.exposure_measured
                                      else "not measured: the recommendations came without ranks")},
            "summary": self.summary(),
            "entries": [asdict(entry) for entry in self.entries],
            "intersections": [asdict(entry) for entry in self.intersections],
        }


@dataclass(frozen=True)
class _AuditCriteria:
    fairness_band: tuple[float, float]
    min_group_size: int
    min_positives: int


@dataclass(frozen=True)
class _Outcomes:
    """Customer x product matrices, rows in the order of ``protected``'s index.

    ``ranks`` holds each recommendation's place in the customer's list (1 first, 0 where the product
    is not in it); None when the recommendations came without a ``rank`` column.
    """

    recommended: np.ndarray
    held: np.ndarray
    ranks: np.ndarray | None
    held_out_took_up: np.ndarray | None
    held_out_recommended: np.ndarray | None


@dataclass(frozen=True)
class GroupOutcome:
    """One group's outcome on one product: its customers, and the sum and sum of squares of the
    outcome (1 or 0 for a rate, the position discount for exposure), all a mean's interval needs."""

    customers: int
    total: float
    total_squared: float

    @property
    def mean(self) -> float:
        return self.total / self.customers

    def log_mean_variance(self) -> float:
        """Variance of log(mean) by the delta method, var(x) / (n mean²); 1/k - 1/n for a rate (Katz)."""
        variance = max(self.total_squared / self.customers - self.mean ** 2, 0.0)
        return variance / (self.customers * self.mean ** 2)

    def half_corrected(self) -> "GroupOutcome":
        """Haldane and Anscombe's correction: half a customer with the outcome (at rank 1), half without."""
        return GroupOutcome(self.customers + 1, self.total + 0.5, self.total_squared + 0.5)


def ratio_interval(compared: GroupOutcome, reference: GroupOutcome, z: float = _Z) -> Interval:
    """Interval of mean(compared) / mean(reference) by the delta method on the log of the ratio.

    For a rate this is Katz's log interval of the risk ratio. It is preferred to a bootstrap because
    it is deterministic (the same audit twice gives the same intervals, with no seed to carry), costs
    microseconds over the thousands of product x group cells of the audit, and behaves where a
    percentile bootstrap breaks down: a group with no positive has none in every resample, so the
    bootstrap "interval" of an infinite ratio is [inf, inf] however small the groups, and 5 against 0
    of 100 customers would be flagged. Here a zero total gets the Haldane-Anscombe half count for the
    bound the data can set, and the bound on its own side is 0, or none above, as an exact interval's
    would be. Exposure takes each group's own variance in the same formula.
    """
    compared_has_none, reference_has_none = compared.total == 0, reference.total == 0
    if compared_has_none and reference_has_none:
        return Interval(None, None, "undefined: neither group has any")
    if compared_has_none or reference_has_none:
        compared, reference = compared.half_corrected(), reference.half_corrected()
    log_ratio = math.log(compared.mean / reference.mean)
    spread = z * math.sqrt(compared.log_mean_variance() + reference.log_mean_variance())
    low = 0.0 if compared_has_none else math.exp(log_ratio - spread)
    if reference_has_none:
        return Interval(low, None, "no upper bound: the reference group has none")
    return Interval(low, math.exp(log_ratio + spread))


def difference_interval(compared: GroupOutcome, reference: GroupOutcome, z: float = _Z) -> Interval:
    """Interval of rate(compared) - rate(reference): Newcombe's hybrid score interval, built from each
    rate's Wilson interval. Unlike Wald's it stays within [-1, 1] and keeps a width at rates of 0 or 1."""
    compared_low, compared_high = _wilson_interval(compared, z)
    reference_low, reference_high = _wilson_interval(reference, z)
    difference = compared.mean - reference.mean
    return Interval(difference - math.hypot(compared.mean - compared_low, reference_high - reference.mean),
                    difference + math.hypot(compared_high - compared.mean, reference.mean - reference_low))


def _wilson_interval(group: GroupOutcome, z: float) -> tuple[float, float]:
    n, rate = group.customers, group.mean
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half_width = z / (1 + z * z / n) * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n))
    return centre - half_width, centre + half_width


def position_discount(ranks: np.ndarray) -> np.ndarray:
    """1/log2(rank + 1) at ranks 1, 2, 3...; 0 at rank 0 (not recommended): the discount of DCG."""
    with np.errstate(divide="ignore"):
        return np.where(ranks > 0, 1.0 / np.log2(ranks + 1.0), 0.0)


@dataclass(frozen=True)
class _PlacementTally:
    """Per product, over a group: lists with the product first, in the top slots, and its exposure."""

    rank_1: np.ndarray
    top_3: np.ndarray
    exposure: np.ndarray
    exposure_squared: np.ndarray

    @classmethod
    def of(cls, ranks: np.ndarray) -> "_PlacementTally":
        exposure = position_discount(ranks)
        return cls(rank_1=(ranks == 1).sum(axis=0), top_3=((ranks >= 1) & (ranks <= TOP_SLOTS)).sum(axis=0),
                   exposure=exposure.sum(axis=0), exposure_squared=(exposure ** 2).sum(axis=0))

    def __sub__(self, other: "_PlacementTally") -> "_PlacementTally":
        return _PlacementTally(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)})


@dataclass(frozen=True)
class _Tally:
    """Per-product totals over one group of customers: the sufficient statistics of every figure of
    the audit, so that a group's rest is a subtraction rather than another pass over the customers."""

    customers: int
    recommended: np.ndarray
    held: np.ndarray
    placements: _PlacementTally | None  # None when the recommendations came without ranks

    @classmethod
    def of(cls, outcomes: _Outcomes, rows: np.ndarray) -> "_Tally":
        placements = None if outcomes.ranks is None else _PlacementTally.of(outcomes.ranks[rows])
        return cls(len(rows), outcomes.recommended[rows].sum(axis=0), outcomes.held[rows].sum(axis=0), placements)

    def __sub__(self, other: "_Tally") -> "_Tally":
        placements = None if self.placements is None else self.placements - other.placements
        return _Tally(self.customers - other.customers, self.recommended - other.recommended,
                      self.held - other.held, placements)

    def rate_outcome(self, outcome: Outcome, position: int) -> GroupOutcome:
        positives = float(getattr(self, outcome)[position])
        return GroupOutcome(self.customers, positives, positives)

    def exposure_outcome(self, position: int) -> GroupOutcome:
        return GroupOutcome(self.customers, float(self.placements.exposure[position]),
                            float(self.placements.exposure_squared[position]))


@dataclass(frozen=True)
class _Comparison:
    """The two groups a figure compares, tallied: the reference (the privileged group, or the rest of
    the population for an intersection) and the compared group (the unprivileged, or the intersection)."""

    reference: _Tally
    compared: _Tally

    def rate_outcomes(self, outcome: Outcome, position: int) -> tuple[GroupOutcome, GroupOutcome]:
        return self.reference.rate_outcome(outcome, position), self.compared.rate_outcome(outcome, position)

    def has_both_groups(self) -> bool:
        return self.reference.customers > 0 and self.compared.customers > 0


@dataclass(frozen=True)
class _Estimates:
    """The point estimates of one rate comparison; the disparate impact may be NaN or infinite here."""

    rate_reference: float
    rate_compared: float
    disparate_impact: float
    statistical_parity_difference: float

    @classmethod
    def counted(cls, reference: GroupOutcome, compared: GroupOutcome) -> "_Estimates":
        return cls(reference.mean, compared.mean, _ratio(compared.mean, reference.mean),
                   compared.mean - reference.mean)


@dataclass(frozen=True)
class _Population:
    """The customers a product is audited over for one attribute: in its segment, value known.

    ``dataset`` holds their privileged (1) / unprivileged (0) codes once; each product's outcome
    is swapped in as the label of a shallow copy. None when a group is empty, as AIF360's
    ratios are then meaningless. ``privileged`` marks the privileged among ``rows``.
    """

    attribute: str
    rows: np.ndarray
    privileged: np.ndarray
    privileged_groups: list[str]
    unprivileged_groups: list[str]
    n_privileged: int
    n_unprivileged: int
    dataset: BinaryLabelDataset | None

    def comparison(self, outcomes: _Outcomes) -> _Comparison:
        return _Comparison(reference=_Tally.of(outcomes, self.rows[self.privileged]),
                           compared=_Tally.of(outcomes, self.rows[~self.privileged]))


@dataclass(frozen=True)
class _Cell:
    """One intersection of two attributes' values, and the rows of its customers."""

    group: dict[str, str]
    rows: np.ndarray


def group_audit(recommended: pd.DataFrame, holdings: pd.DataFrame, protected: pd.DataFrame,
                attributes: Sequence[ProtectedAttribute], products: pd.DataFrame,
                held_out: pd.DataFrame | None = None, fairness_band: tuple[float, float] = (0.8, 1.25),
                min_group_size: int = 30, min_positives: int = MIN_POSITIVES) -> FairnessAudit:
    """Audit every catalogue product for every protected attribute, and every pair of attributes.

    ``protected`` is indexed by customer_id and holds, per attribute, a column named as the
    attribute's ``column`` (as in the customer view) or else as its ``name``, plus
    ``customer_type``: a product is audited over the customers of its segment only, since
    organizations (no gender, no age) would otherwise distort the individual products' rates.
    A customer of unknown type is kept in every segment. ``recommended`` lists (customer, product)
    pairs, with the place in the customer's list as ``rank`` for the exposure figures (without it
    they are not measured). ``held_out`` lists (customer, product) pairs with ``recommended`` and
    ``took_up``; pairs it does not list count as neither, which leaves the equal opportunity
    difference (computed over take-ups only) unchanged.
    """
    criteria = _audit_criteria(fairness_band, min_group_size, min_positives)
    _require_columns(protected, ["customer_type"], "protected")
    _require_columns(products, ["product_id", "segment"], "products")
    customers = protected.index
    product_ids = pd.Index(products["product_id"].astype(str))
    if not customers.is_unique or not product_ids.is_unique:
        raise ValueError("protected's index (customer_id) and products' product_id must not have duplicates")
    segments = [_normalised_segment(segment) for segment in products["segment"]]
    outcomes = _outcomes(recommended, holdings, held_out, customers, product_ids)
    values = {attribute.name: _known_values(protected, attribute) for attribute in attributes}
    members = {segment: _segment_members(protected["customer_type"], segment) for segment in set(segments)}
    populations = {(attribute.name, segment): _population(values[attribute.name], attribute, members[segment])
                   for attribute in attributes for segment in members}
    comparisons = {key: population.comparison(outcomes) for key, population in populations.items()}
    entries = [_audit_entry(product_id, position, populations[(attribute.name, segment)],
                            comparisons[(attribute.name, segment)], outcomes, criteria)
               for position, (product_id, segment) in enumerate(zip(product_ids, segments))
               for attribute in attributes]
    return FairnessAudit(generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         fairness_band=criteria.fairness_band, min_group_size=min_group_size,
                         min_positives=min_positives, exposure_measured=outcomes.ranks is not None, entries=entries,
                         intersections=_intersection_entries(values, members, attributes, product_ids, segments,
                                                             outcomes, criteria))


def _audit_criteria(fairness_band: tuple[float, float], min_group_size: int, min_positives: int) -> _AuditCriteria:
    low, high = fairness_band
    if not 0 < low <= 1 <= high:
        raise ValueError(f"fairness_band must satisfy 0 < low <= 1 <= high, not {fairness_band}")
    if min_group_size < 1 or min_positives < 1:
        raise ValueError(f"min_group_size and min_positives must be >= 1, not {min_group_size}, {min_positives}")
    return _AuditCriteria((float(low), float(high)), min_group_size, min_positives)


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}; has {list(frame.columns)}")


def _normalised_segment(segment: object) -> str:
    """'individual', 'organization' or 'both'; anything else is open to every customer."""
    text = str(segment).strip().lower() if _is_known(segment) else "both"
    return text if text in _SEGMENTS_BY_TYPE else "both"


def _outcomes(recommended: pd.DataFrame, holdings: pd.DataFrame, held_out: pd.DataFrame | None,
              customers: pd.Index, product_ids: pd.Index) -> _Outcomes:
    _require_columns(recommended, ["customer_id", "product_id"], "recommended")
    _require_columns(holdings, ["customer_id", "product_id"], "holdings")
    held_out_took_up = held_out_recommended = None
    if held_out is not None:
        _require_columns(held_out, ["customer_id", "product_id", "recommended", "took_up"], "held_out")
        held_out_took_up = _pair_matrix(held_out[held_out["took_up"].eq(True)], customers, product_ids)
        held_out_recommended = _pair_matrix(held_out[held_out["recommended"].eq(True)], customers, product_ids)
    ranks = _rank_matrix(recommended, customers, product_ids) if "rank" in recommended.columns else None
    return _Outcomes(_pair_matrix(recommended, customers, product_ids), _pair_matrix(holdings, customers, product_ids),
                     ranks, held_out_took_up, held_out_recommended)


def _pair_matrix(pairs: pd.DataFrame, customers: pd.Index, product_ids: pd.Index,
                 values: np.ndarray | None = None) -> np.ndarray:
    """Which customer has which product, as a dense boolean matrix built in one vectorised pass;
    with ``values`` (one per pair), the matrix holds them instead, 0 where there is no pair.

    Pairs naming a customer without protected data or a product outside the catalogue are
    dropped: they belong to no group or no segment.
    """
    matrix = np.zeros((len(customers), len(product_ids)), dtype=bool if values is None else values.dtype)
    rows = customers.get_indexer(pairs["customer_id"])
    columns = product_ids.get_indexer(pairs["product_id"].astype(str))
    known = (rows >= 0) & (columns >= 0)
    matrix[rows[known], columns[known]] = True if values is None else values[known]
    return matrix


def _rank_matrix(recommended: pd.DataFrame, customers: pd.Index, product_ids: pd.Index) -> np.ndarray:
    """Each recommendation's place in its customer's list, 0 where the product is not in it."""
    ranks = pd.to_numeric(recommended["rank"], errors="coerce")
    if ranks.isna().any() or (ranks < 1).any() or (ranks % 1 != 0).any():
        raise ValueError("recommended: rank must be a whole number from 1 (the top of the list)")
    return _pair_matrix(recommended, customers, product_ids, ranks.to_numpy(dtype=np.int32))


def _protected_values(protected: pd.DataFrame, attribute: ProtectedAttribute) -> pd.Series:
    """The attribute's values, by ``column`` first: in the full customer view ``age`` holds raw
    ages and ``age_band`` the groups, while a frame built for the audit may be keyed by name."""
    for key in (attribute.column, attribute.name):
        if key in protected.columns:
            return protected[key]
    raise ValueError(f"protected: no column {attribute.column!r} or {attribute.name!r} for attribute "
                     f"{attribute.name!r}; has {list(protected.columns)}")


def _known_values(protected: pd.DataFrame, attribute: ProtectedAttribute) -> pd.Series:
    """The attribute's values as text, missing (NA) where unknown or blank."""
    values = _protected_values(protected, attribute).astype("string").str.strip()
    return values.where(values.fillna("").ne(""))


def _population(values: pd.Series, attribute: ProtectedAttribute, segment_members: np.ndarray) -> _Population:
    """``values`` are the attribute's known values of every customer; ``segment_members`` marks the segment's."""
    rows = np.flatnonzero(values.notna().to_numpy(dtype=bool) & segment_members)
    in_population = values.iloc[rows]
    privileged = in_population.isin(attribute.privileged).to_numpy(dtype=bool)
    n_privileged = int(privileged.sum())
    n_unprivileged = len(privileged) - n_privileged
    has_both_groups = n_privileged > 0 and n_unprivileged > 0
    codes = np.where(privileged, _PRIVILEGED, _UNPRIVILEGED)
    return _Population(attribute=attribute.name, rows=rows, privileged=privileged,
                       privileged_groups=list(attribute.privileged),
                       unprivileged_groups=sorted(set(in_population[~privileged])),
                       n_privileged=n_privileged, n_unprivileged=n_unprivileged,
                       dataset=_protected_dataset(attribute.name, codes) if has_both_groups else None)


def _segment_members(customer_types: pd.Series, segment: str) -> np.ndarray:
    """Customers a product of ``segment`` can be offered to (the one segment rule of the data layer)."""
    return segment_eligibility(customer_types, [segment])[:, 0]


def _protected_dataset(attribute: str, codes: np.ndarray) -> BinaryLabelDataset:
    """AIF360 needs numbers: the attribute coded 1 privileged / 0 unprivileged, a dummy label."""
    frame = pd.DataFrame({attribute: codes, "label": np.zeros(len(codes))})
    return BinaryLabelDataset(df=frame, label_names=["label"], protected_attribute_names=[attribute],
                              favorable_label=1.0, unfavorable_label=0.0,
                              privileged_protected_attributes=[np.array([_PRIVILEGED])],
                              unprivileged_protected_attributes=[np.array([_UNPRIVILEGED])])


def _with_labels(dataset: BinaryLabelDataset, labels: np.ndarray) -> BinaryLabelDataset:
    """The population with one product's outcome as label: AIF360's own idiom for predictions,
    and far cheaper than building a dataset per product."""
    relabelled = dataset.copy()
    relabelled.labels = labels.astype(np.float64).reshape(-1, 1)
    return relabelled


def _groups(attribute: str) -> dict[str, list[dict[str, float]]]:
    return {"privileged_groups": [{attribute: _PRIVILEGED}], "unprivileged_groups": [{attribute: _UNPRIVILEGED}]}


def _audit_entry(product_id: str, position: int, population: _Population, comparison: _Comparison,
                 outcomes: _Outcomes, criteria: _AuditCriteria) -> FairnessEntry:
    rows = population.rows
    recommendations = _group_rates(population, comparison, "recommended", outcomes.recommended[rows, position],
                                   position, criteria)
    holdings = _group_rates(population, comparison, "held", outcomes.held[rows, position], position, criteria)
    exposure = _exposure(comparison, position, criteria)
    equal_opportunity, held_out_positives = None, None
    if outcomes.held_out_took_up is not None and outcomes.held_out_recommended is not None:
        took_up = outcomes.held_out_took_up[rows, position]
        held_out_positives = int(took_up.sum())
        equal_opportunity = _equal_opportunity_difference(population, took_up,
                                                          outcomes.held_out_recommended[rows, position])
    return FairnessEntry(product_id=product_id, attribute=population.attribute,
                         privileged_groups=population.privileged_groups,
                         unprivileged_groups=population.unprivileged_groups,
                         n_privileged=population.n_privileged, n_unprivileged=population.n_unprivileged,
                         recommendations=recommendations, holdings=holdings, exposure=exposure,
                         equal_opportunity_difference=equal_opportunity, held_out_positives=held_out_positives,
                         status=_entry_status(recommendations, holdings, exposure),
                         source_of_bias=_source_of_bias(recommendations, holdings, exposure))


def _group_rates(population: _Population, comparison: _Comparison, outcome: Outcome, has_product: np.ndarray,
                 position: int, criteria: _AuditCriteria) -> GroupRates:
    """AIF360's rates, disparate impact and statistical parity for one product and attribute,
    judged by their intervals; Fisher's p-value alongside."""
    reference, compared = comparison.rate_outcomes(outcome, position)
    if population.dataset is None:
        return _rates_without_both_groups(reference, compared)
    metric = BinaryLabelDatasetMetric(_with_labels(population.dataset, has_product), **_groups(population.attribute))
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 and x/0 are handled by the judgement
        disparate_impact = float(metric.disparate_impact())
    estimates = _Estimates(float(metric.base_rate(privileged=True)), float(metric.base_rate(privileged=False)),
                           disparate_impact, float(metric.statistical_parity_difference()))
    return _judged_rates(estimates, reference, compared, criteria, _chance_of_difference(reference, compared))


def _counted_rates(comparison: _Comparison, outcome: Outcome, position: int, criteria: _AuditCriteria) -> GroupRates:
    """The same figures and judgement as ``_group_rates``, counted with numpy: AIF360 costs milliseconds
    a metric, and the intersections have thousands of product x cell comparisons."""
    reference, compared = comparison.rate_outcomes(outcome, position)
    if not comparison.has_both_groups():
        return _rates_without_both_groups(reference, compared)
    return _judged_rates(_Estimates.counted(reference, compared), reference, compared, criteria, p_value=None)


def _judged_rates(estimates: _Estimates, reference: GroupOutcome, compared: GroupOutcome, criteria: _AuditCriteria,
                  p_value: float | None) -> GroupRates:
    n_positives = round(reference.total + compared.total)
    interval = ratio_interval(compared, reference)
    shortfall = _data_shortfall(reference.customers, compared.customers, n_positives, criteria)
    status, doubt = _judgement(estimates.disparate_impact, interval, shortfall, criteria, n_positives)
    return GroupRates(n_positives=n_positives, rate_privileged=estimates.rate_reference,
                      rate_unprivileged=estimates.rate_compared,
                      disparate_impact=_finite_or_none(estimates.disparate_impact), disparate_impact_interval=interval,
                      statistical_parity_difference=estimates.statistical_parity_difference,
                      statistical_parity_interval=difference_interval(compared, reference),
                      flagged=status == "flagged", status=status,
                      note=doubt or _undefined_ratio_reason(estimates.disparate_impact, "disparate impact"),
                      p_value=None if p_value is None else round(p_value, 4))


def _rates_without_both_groups(reference: GroupOutcome, compared: GroupOutcome) -> GroupRates:
    undefined = Interval(None, None, "undefined: one of the two groups is empty")
    return GroupRates(n_positives=round(reference.total + compared.total), rate_privileged=None,
                      rate_unprivileged=None, disparate_impact=None, disparate_impact_interval=undefined,
                      statistical_parity_difference=None, statistical_parity_interval=undefined, flagged=False,
                      status="insufficient_data",
                      note="one of the two groups has no customers in this product's segment")


def _exposure(comparison: _Comparison, position: int, criteria: _AuditCriteria) -> Exposure | None:
    """Each group's places in the lists and the position-weighted disparity; None without ranks."""
    reference, compared = comparison.reference, comparison.compared
    if reference.placements is None or not comparison.has_both_groups():
        return None
    reference_exposure, compared_exposure = reference.exposure_outcome(position), compared.exposure_outcome(position)
    disparity = _ratio(compared_exposure.mean, reference_exposure.mean)
    interval = ratio_interval(compared_exposure, reference_exposure)
    n_recommended = int(reference.recommended[position] + compared.recommended[position])
    shortfall = _data_shortfall(reference.customers, compared.customers, n_recommended, criteria)
    status, doubt = _judgement(disparity, interval, shortfall, criteria, n_recommended)
    rank_1_slots = int(reference.placements.rank_1[position] + compared.placements.rank_1[position])
    top_3_slots = int(reference.placements.top_3[position] + compared.placements.top_3[position])
    population = reference.customers + compared.customers
    return Exposure(rank_1_slots=rank_1_slots, top_3_slots=top_3_slots,
                    privileged=_placement(reference, position, population, rank_1_slots, top_3_slots),
                    unprivileged=_placement(compared, position, population, rank_1_slots, top_3_slots),
                    disparity=_finite_or_none(disparity), disparity_interval=interval, flagged=status == "flagged",
                    status=status, note=doubt or _undefined_ratio_reason(disparity, "exposure disparity"))


def _placement(group: _Tally, position: int, population: int, rank_1_slots: int, top_3_slots: int) -> Placement:
    placements = group.placements
    return Placement(population_share=group.customers / population,
                     rank_1_share=_share(int(placements.rank_1[position]), rank_1_slots),
                     top_3_share=_share(int(placements.top_3[position]), top_3_slots),
                     mean_exposure=float(placements.exposure[position]) / group.customers)


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _intersection_entries(values: Mapping[str, pd.Series], members: Mapping[str, np.ndarray],
                          attributes: Sequence[ProtectedAttribute], product_ids: pd.Index, segments: Sequence[str],
                          outcomes: _Outcomes, criteria: _AuditCriteria) -> list[IntersectionEntry]:
    """Every product for every cell of every pair of attributes, products in the catalogue's order.

    ``values`` holds each attribute's known values by name, ``members`` each segment's customers."""
    by_product: dict[int, list[IntersectionEntry]] = {position: [] for position in range(len(product_ids))}
    for first, second in combinations(attributes, 2):
        for segment in sorted(members):
            positions = [position for position, of_product in enumerate(segments) if of_product == segment]
            population_rows, cells = _intersection_cells(values[first.name], values[second.name], members[segment],
                                                         (first.name, second.name))
            population = _Tally.of(outcomes, population_rows)
            for cell in cells:
                in_cell = _Tally.of(outcomes, cell.rows)
                comparison = _Comparison(reference=population - in_cell, compared=in_cell)
                for position in positions:
                    by_product[position].append(_intersection_entry(product_ids[position], position, cell.group,
                                                                    comparison, criteria))
    return [entry for position in sorted(by_product) for entry in by_product[position]]


def _intersection_cells(first_values: pd.Series, second_values: pd.Series, segment_members: np.ndarray,
                        names: tuple[str, str]) -> tuple[np.ndarray, list[_Cell]]:
    """The segment's customers whose two values are known, and their cells, in sorted order."""
    known = first_values.notna().to_numpy(dtype=bool) & second_values.notna().to_numpy(dtype=bool)
    rows = np.flatnonzero(known & segment_members)
    pairs = pd.DataFrame({"first": first_values.iloc[rows].to_numpy(), "second": second_values.iloc[rows].to_numpy()})
    cells = sorted(pairs.groupby(["first", "second"]).indices.items())
    return rows, [_Cell({names[0]: str(first), names[1]: str(second)}, rows[in_cell])
                  for (first, second), in_cell in cells]


def _intersection_entry(product_id: str, position: int, group: dict[str, str], comparison: _Comparison,
                        criteria: _AuditCriteria) -> IntersectionEntry:
    recommendations = _counted_rates(comparison, "recommended", position, criteria)
    holdings = _counted_rates(comparison, "held", position, criteria)
    exposure = _exposure(comparison, position, criteria)
    return IntersectionEntry(product_id=product_id, group=group, n_group=comparison.compared.customers,
                             n_rest=comparison.reference.customers, recommendations=recommendations,
                             holdings=holdings, exposure=exposure,
                             status=_entry_status(recommendations, holdings, exposure),
                             source_of_bias=_source_of_bias(recommendations, holdings, exposure))


def _chance_of_difference(reference: GroupOutcome, compared: GroupOutcome) -> float:
    """Fisher's exact test of the two groups' rates: how likely a gap at least this large is by chance."""
    table = [[round(group.total), group.customers - round(group.total)] for group in (reference, compared)]
    return float(fisher_exact(table).pvalue)


def _data_shortfall(n_reference: int, n_compared: int, n_positives: int, criteria: _AuditCriteria) -> str | None:
    """Why the numbers cannot support a flag, or None when they can."""
    if min(n_reference, n_compared) < criteria.min_group_size:
        return (f"groups too small to judge: {n_reference} against {n_compared} customers "
                f"(minimum {criteria.min_group_size})")
    if n_positives < criteria.min_positives:
        return f"too few customers with the product to judge: {n_positives} (minimum {criteria.min_positives})"
    return None


def _judgement(estimate: float, interval: Interval, shortfall: str | None, criteria: _AuditCriteria,
               n_positives: int) -> tuple[AuditStatus, str | None]:
    """The status of one ratio and why: the interval, not the estimate alone, decides a flag."""
    if shortfall is not None:
        return "insufficient_data", shortfall
    if not _outside_band(estimate, criteria.fairness_band):
        return "ok", None
    if _interval_outside_band(interval, criteria.fairness_band):
        return "flagged", None
    return "inconclusive", (f"outside the fairness band, but its {CONFIDENCE_LEVEL:.0%} interval {interval.shown()} "
                            f"reaches into it: the gap could be chance ({n_positives} customers with the product)")


def _outside_band(ratio: float, band: tuple[float, float]) -> bool:
    """Outside the four-fifths band; infinity (only the compared group has any) is outside too."""
    low, high = band
    return not math.isnan(ratio) and not low <= ratio <= high


def _interval_outside_band(interval: Interval, band: tuple[float, float]) -> bool:
    """The whole interval below or above the band; an open upper bound is infinity."""
    low, high = band
    return (interval.high is not None and interval.high < low) or (interval.low is not None and interval.low > high)


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, infinite over a zero denominator and NaN for 0/0, as AIF360 gives them."""
    if denominator == 0:
        return math.nan if numerator == 0 else math.inf
    return numerator / denominator


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _undefined_ratio_reason(ratio: float, figure: str) -> str | None:
    if math.isnan(ratio):
        return f"{figure} undefined: no customer in either group has the product"
    if math.isinf(ratio):
        return f"{figure} infinite: no privileged customer has the product"
    return None


def _equal_opportunity_difference(population: _Population, took_up: np.ndarray,
                                  recommended: np.ndarray) -> float | None:
    """TPR(unprivileged) - TPR(privileged) of the recommendations over held-out take-ups.

    None when a group has no take-up: its true positive rate does not exist.
    """
    if population.dataset is None:
        return None
    metric = ClassificationMetric(_with_labels(population.dataset, took_up),
                                  _with_labels(population.dataset, recommended), **_groups(population.attribute))
    if metric.num_positives(privileged=True) == 0 or metric.num_positives(privileged=False) == 0:
        return None
    return float(metric.equal_opportunity_difference())


def _entry_status(recommendations: GroupRates, holdings: GroupRates, exposure: Exposure | None) -> AuditStatus:
    """Flagged when any block is; otherwise whether the recommendations' rates could be judged."""
    if recommendations.flagged or holdings.flagged or (exposure is not None and exposure.flagged):
        return "flagged"
    return recommendations.status


def _source_of_bias(recommendations: GroupRates, holdings: GroupRates, exposure: Exposure | None) -> BiasSource | None:
    """The model's side is its recommendations, by rate or by place in the lists; the data's, the holdings."""
    by_model = recommendations.flagged or (exposure is not None and exposure.flagged)
    sources: dict[tuple[bool, bool], BiasSource] = {(True, False): "model", (False, True): "data", (True, True): "both"}
    return sources.get((by_model, holdings.flagged))


# --------------------------------------------------------------------------------------------
# Mitigation: a product's exposure across an attribute's groups brought into the fairness band
# --------------------------------------------------------------------------------------------

MAX_REBALANCE_FACTOR = 20.0
"""The largest boost the search tries: beyond it the product is not under-ranked but out of reach
(ineligible, or held), and a larger factor would only distort the lists it does reach."""
REBALANCE_PRECISION = 0.005
"""The search stops when the smallest factor known to reach the band is within 0.5% of the largest
known not to: finer steps move a handful of lists, far less than the interval of the disparity."""

Group = Literal["privileged", "unprivileged"]
RebalanceStatus = Literal["within_band", "rebalanced", "out_of_reach", "undefined"]


@dataclass(frozen=True)
class ExposurePopulation:
    """The customers a product's exposure is compared over for one attribute, as in the audit: those
    of the product's segment whose value is known; ``privileged`` marks the privileged among ``rows``."""

    rows: np.ndarray
    privileged: np.ndarray

    def members(self, group: Group) -> np.ndarray:
        return self.privileged if group == "privileged" else ~self.privileged


@dataclass(frozen=True)
class RebalanceSearch:
    """The least boost that brings one product's exposure disparity inside the fairness band.

    ``boosted`` is the group the product under-reaches (None when nothing is boosted), ``factor`` the
    boost (None: none needed, or none within MAX_REBALANCE_FACTOR reaches the band), the disparities
    the audit's point estimates without and with it.
    """

    status: RebalanceStatus
    disparity_before: float | None
    disparity_after: float | None
    boosted: Group | None = None
    factor: float | None = None


def exposure_population(protected: pd.DataFrame, attribute: ProtectedAttribute, segment: object) -> ExposurePopulation:
    """The audit's population of a product of ``segment`` for ``attribute`` (``protected`` as for
    :func:`group_audit`), so that the mitigation aims at the figure the audit reports."""
    members = _segment_members(protected["customer_type"], _normalised_segment(segment))
    population = _population(_known_values(protected, attribute), attribute, members)
    return ExposurePopulation(population.rows, population.privileged)


def exposure_disparity(ranks: np.ndarray, privileged: np.ndarray) -> float | None:
    """The audit's exposure disparity of one product: the unprivileged customers' mean position
    discount over the privileged's (``ranks`` 0 where the product is not in a list); None when a
    group is empty or the ratio is not finite."""
    if privileged.all() or not privileged.any():
        return None
    exposure = position_discount(ranks)
    return _finite_or_none(_ratio(float(exposure[~privileged].mean()), float(exposure[privileged].mean())))


def least_rebalancing_factor(disparity_with: Callable[[Group, float], float | None], band: tuple[float, float],
                             max_factor: float = MAX_REBALANCE_FACTOR,
                             precision: float = REBALANCE_PRECISION) -> RebalanceSearch:
    """The boost closest to 1 (the least change of score) that puts the disparity inside ``band``.

    ``disparity_with(group, factor)`` is the exposure disparity once the product's score is multiplied
    by ``factor`` for ``group``'s customers and every list re-ranked. The under-reached group is boosted:
    the unprivileged one when the disparity is below the band, the privileged one when above. A larger
    boost never lowers the boosted group's exposure, so the search bisects (in log scale) between the
    largest factor known to fall short and the smallest known to reach the band.
    """
    low, high = band
    before = disparity_with("unprivileged", 1.0)
    if before is None:
        return RebalanceSearch("undefined", None, None)
    if low <= before <= high:
        return RebalanceSearch("within_band", before, before)
    boosted: Group = "unprivileged" if before < low else "privileged"

    def reaches(factor: float) -> bool:
        disparity = disparity_with(boosted, factor)
        return disparity is not None and (disparity >= low if boosted == "unprivileged" else disparity <= high)

    if not reaches(max_factor):
        return RebalanceSearch("out_of_reach", before, before, boosted)
    short, enough = 1.0, max_factor
    while enough / short > 1 + precision:
        middle = math.sqrt(short * enough)
        short, enough = (short, middle) if reaches(middle) else (middle, enough)
    after = disparity_with(boosted, enough)
    if after is None or not low <= after <= high:  # one step jumped across the whole band
        return RebalanceSearch("out_of_reach", before, before, boosted)
    return RebalanceSearch("rebalanced", before, after, boosted, enough)


@dataclass(frozen=True)
class ExposureMitigation:
    """What the calibration found for one pair of the rules file's ``fairness_mitigation``, and the
    boost the rules then apply (None when none is needed or none reaches the band)."""

    pair: MitigationPair
    search: RebalanceSearch
    rebalance: GroupRebalance | None

    def report(self, without: FairnessAudit, with_it: FairnessAudit) -> dict[str, Any]:
        """The pair's calibration and its audit entry's exposure and recommendation rates without and
        with the boost: the measured effect, next to the factor that produced it."""
        search = self.search
        return {"product_id": self.pair.product_id, "attribute": self.pair.attribute, "status": search.status,
                "boosted_group": search.boosted, "factor": None if search.factor is None else round(search.factor, 4),
                "disparity_before": search.disparity_before, "disparity_after": search.disparity_after,
                "without": _pair_figures(without, self.pair), "with": _pair_figures(with_it, self.pair)}


def rebalances_in_force(mitigation: Sequence[ExposureMitigation]) -> tuple[GroupRebalance, ...]:
    """The boosts the calibration found, for :meth:`RuleBook.rebalanced`."""
    return tuple(m.rebalance for m in mitigation if m.rebalance is not None)


def _pair_figures(audit: FairnessAudit, pair: MitigationPair) -> dict[str, Any] | None:
    entry = next((e for e in audit.entries if (e.product_id, e.attribute) == (pair.product_id, pair.attribute)), None)
    if entry is None:
        return None
    exposure = entry.exposure
    return {"status": entry.status,
            "exposure_disparity": exposure.disparity if exposure else None,
            "exposure_interval": asdict(exposure.disparity_interval) if exposure else None,
            "exposure_status": exposure.status if exposure else None,
            "disparate_impact": entry.recommendations.disparate_impact,
            "disparate_impact_status": entry.recommendations.status}


def mitigation_report(mitigations: Sequence[ExposureMitigation], without: FairnessAudit,
                      with_it: FairnessAudit) -> dict[str, Any]:
    """The audit's ``mitigation`` block: each pair's factor and figures, and the summary of the audit
    the lists would have had without it, so the trade-off reads in the audit itself."""
    return {"rule": REBALANCE_RULE, "pairs": [m.report(without, with_it) for m in mitigations],
            "summary_without": {key: value for key, value in without.summary().items() if key != "intersections"}}
