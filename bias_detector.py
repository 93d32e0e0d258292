"""Bias detection at the two levels of the seed architecture (SPEC section 4).

* The individual check runs on every response: the service re-scores the customer with each
  protected attribute set to the other groups' values (counterfactuals) and this module compares
  those scores and top-k lists with the customer's own. It sits in the request path, so it is
  plain Python over the handful of products in the two top-k lists, without AIF360.
* The group audit runs at start-up and on demand: per product and protected attribute, AIF360's
  disparate impact and statistical parity difference of the recommendations and of the
  historical holdings (so that bias the model learnt from the data can be told from bias it
  introduced), and the equal opportunity difference on held-out take-ups.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from typing import Any, Callable, Literal

import numpy as np
import pandas as pd
from scipy.stats import fisher_exact

from business_rules import CustomerContext, RuleBook, RuleOutcome
from data_loader import is_missing, segment_eligibility
from recommender import risk_level, risk_scores
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
                          groups_changing_top_k=groups_changing_top_k)


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


def observed_groups(view: pd.DataFrame, attribute: ProtectedAttribute, age_band_labels: Sequence[str]) -> list[str]:
    """The groups a counterfactual may move a customer to, most frequent first (age: every band)."""
    if attribute.column == "age_band":
        return list(age_band_labels)
    column = view.get(attribute.column)
    return [] if column is None else [str(v) for v in column.value_counts().index]


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
                           risk_inputs: Mapping[str, np.ndarray], stress: np.ndarray,
                           top_k: int) -> list[CounterfactualResult]:
    """Each variant through the model and the rules; rules are re-run only where they could differ.

    ``probabilities`` has the original's scores in row 0 and one row per variant with a tabular
    change, in order. A variant of another age also gets the risk profile of that age.
    """
    ages = [v.age for v in variants if v.age is not None]
    risk_of_age = dict(zip(ages, risk_levels_for_ages(risk_inputs, stress, ages)))
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
            varied = rules.apply(context, scores, top_k)
        elif variant.tabular is not None:
            varied = rules.rescore(outcome, scores, top_k)
        else:
            varied = outcome  # neither the model nor the rules see this attribute
        results.append(CounterfactualResult(variant.attribute, variant.group, varied.adjusted,
                                            [p.product_id for p in varied.ranked]))
    return results


def risk_levels_for_ages(risk_inputs: Mapping[str, np.ndarray], stress: np.ndarray,
                         ages: Sequence[float]) -> list[tuple[str, float]]:
    """Risk level and score of the customer at each counterfactual age, in one vectorised pass."""
    if not ages:
        return []
    inputs = {k: np.repeat(v, len(ages)) for k, v in risk_inputs.items()}
    inputs["age"] = np.asarray(ages, dtype=float)
    scores, _, _ = risk_scores(inputs, np.repeat(stress, len(ages)))
    return [(risk_level(float(s)), float(s)) for s in scores]


# --------------------------------------------------------------------------------------------
# Group audit with AIF360: per product and protected attribute, at start-up and on demand
# --------------------------------------------------------------------------------------------

AuditStatus = Literal["ok", "flagged", "insufficient_data"]
BiasSource = Literal["data", "model", "both"]

MIN_POSITIVES = 5
"""Fewer customers than this with the product make a rate ratio noise, not evidence."""
SIGNIFICANCE_LEVEL = 0.05
"""A rate ratio outside the band is flagged only when it is also unlikely to be chance: the
four-fifths rule read together with statistical significance, as employment-discrimination
practice reads it, so 9 against 4 recommendations among 200 customers each is not an alarm."""

_SEGMENTS_BY_TYPE = ("individual", "organization")
_PRIVILEGED, _UNPRIVILEGED = 1.0, 0.0


@dataclass(frozen=True)
class GroupRates:
    """How often each group receives (or holds) a product, with AIF360's comparisons of the two.

    ``disparate_impact`` is None when it is not a finite number (``note`` says why);
    ``flagged`` only when both groups are large enough, enough customers have the product and the
    gap is unlikely to be chance (``p_value`` below SIGNIFICANCE_LEVEL).
    """

    n_positives: int
    rate_privileged: float | None
    rate_unprivileged: float | None
    disparate_impact: float | None
    statistical_parity_difference: float | None
    flagged: bool
    status: AuditStatus
    note: str | None = None
    p_value: float | None = None  # Fisher's exact test of the two groups' rates


@dataclass(frozen=True)
class FairnessEntry:
    """The audit of one product for one protected attribute.

    ``source_of_bias``: ``model`` when only the recommendations are flagged (the model
    introduced the skew), ``data`` when only the historical holdings are (the model did not
    carry it over), ``both`` when both are (the model reproduces the data's skew). A block with
    insufficient data counts as not flagged.
    """

    product_id: str
    attribute: str
    privileged_groups: list[str]
    unprivileged_groups: list[str]
    n_privileged: int
    n_unprivileged: int
    recommendations: GroupRates
    holdings: GroupRates
    equal_opportunity_difference: float | None
    held_out_positives: int | None
    status: AuditStatus
    source_of_bias: BiasSource | None


@dataclass(frozen=True)
class FairnessAudit:
    """The group audit of all products; ``to_dict()`` is JSON-ready (no NaN or infinity)."""

    generated_at: str
    fairness_band: tuple[float, float]
    min_group_size: int
    min_positives: int
    entries: list[FairnessEntry]

    def summary(self) -> dict[str, Any]:
        """What an analyst reads first: how many pairs are flagged, by source and attribute."""
        flagged = [entry for entry in self.entries if entry.status == "flagged"]
        return {
            "entries": len(self.entries),
            "flagged": len(flagged),
            "insufficient_data": sum(entry.status == "insufficient_data" for entry in self.entries),
            "flagged_by_source": dict(Counter(entry.source_of_bias for entry in flagged)),
            "flagged_by_attribute": dict(Counter(entry.attribute for entry in flagged)),
            "flagged_pairs": [{"product_id": entry.product_id, "attribute": entry.attribute,
                               "source_of_bias": entry.source_of_bias,
                               "recommendations_disparate_impact": entry.recommendations.disparate_impact,
                               "holdings_disparate_impact": entry.holdings.disparate_impact}
                              for entry in flagged],
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "generated_at": self.generated_at,
            "criteria": {"fairness_band": list(self.fairness_band), "min_group_size": self.min_group_size,
                         "min_positives": self.min_positives},
            "summary": self.summary(),
            "entries": [asdict(entry) for entry in self.entries],
        }


@dataclass(frozen=True)
class _AuditCriteria:
    fairness_band: tuple[float, float]
    min_group_size: int
    min_positives: int


@dataclass(frozen=True)
class _Population:
    """The customers a product is audited over for one attribute: in its segment, value known.

    ``dataset`` holds their privileged (1) / unprivileged (0) codes once; each product's outcome
    is swapped in as the label of a shallow copy. None when a group is empty, as AIF360's
    ratios are then meaningless.
    """

    attribute: str
    rows: np.ndarray
    privileged_groups: list[str]
    unprivileged_groups: list[str]
    n_privileged: int
    n_unprivileged: int
    dataset: BinaryLabelDataset | None


@dataclass(frozen=True)
class _Outcomes:
    """Customer x product boolean matrices, rows in the order of ``protected``'s index."""

    recommended: np.ndarray
    held: np.ndarray
    held_out_took_up: np.ndarray | None
    held_out_recommended: np.ndarray | None


def group_audit(recommended: pd.DataFrame, holdings: pd.DataFrame, protected: pd.DataFrame,
                attributes: Sequence[ProtectedAttribute], products: pd.DataFrame,
                held_out: pd.DataFrame | None = None, fairness_band: tuple[float, float] = (0.8, 1.25),
                min_group_size: int = 30, min_positives: int = MIN_POSITIVES) -> FairnessAudit:
    """Audit every catalogue product for every protected attribute with AIF360.

    ``protected`` is indexed by customer_id and holds, per attribute, a column named as the
    attribute's ``column`` (as in the customer view) or else as its ``name``, plus
    ``customer_type``: a product is audited over the customers of its segment only, since
    organizations (no gender, no age) would otherwise distort the individual products' rates.
    A customer of unknown type is kept in every segment. ``held_out`` lists (customer, product)
    pairs with ``recommended`` and ``took_up``; pairs it does not list count as neither, which
    leaves the equal opportunity difference (computed over take-ups only) unchanged.
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
    populations = {(attribute.name, segment): _population(protected, attribute, segment)
                   for attribute in attributes for segment in set(segments)}
    entries = [_audit_entry(product_id, position, populations[(attribute.name, segment)], outcomes, criteria)
               for position, (product_id, segment) in enumerate(zip(product_ids, segments))
               for attribute in attributes]
    return FairnessAudit(generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         fairness_band=criteria.fairness_band, min_group_size=min_group_size,
                         min_positives=min_positives, entries=entries)


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
    return _Outcomes(_pair_matrix(recommended, customers, product_ids), _pair_matrix(holdings, customers, product_ids),
                     held_out_took_up, held_out_recommended)


def _pair_matrix(pairs: pd.DataFrame, customers: pd.Index, product_ids: pd.Index) -> np.ndarray:
    """Which customer has which product, as a dense boolean matrix built in one vectorised pass.

    Pairs naming a customer without protected data or a product outside the catalogue are
    dropped: they belong to no group or no segment.
    """
    matrix = np.zeros((len(customers), len(product_ids)), dtype=bool)
    rows = customers.get_indexer(pairs["customer_id"])
    columns = product_ids.get_indexer(pairs["product_id"].astype(str))
    known = (rows >= 0) & (columns >= 0)
    matrix[rows[known], columns[known]] = True
    return matrix


def _protected_values(protected: pd.DataFrame, attribute: ProtectedAttribute) -> pd.Series:
    """The attribute's values, by ``column`` first: in the full customer view ``age`` holds raw
    ages and ``age_band`` the groups, while a frame built for the audit may be keyed by name."""
    for key in (attribute.column, attribute.name):
        if key in protected.columns:
            return protected[key]
    raise ValueError(f"protected: no column {attribute.column!r} or {attribute.name!r} for attribute "
                     f"{attribute.name!r}; has {list(protected.columns)}")


def _population(protected: pd.DataFrame, attribute: ProtectedAttribute, segment: str) -> _Population:
    values = _protected_values(protected, attribute).astype("string").str.strip()
    known = values.fillna("").ne("").to_numpy(dtype=bool)
    rows = np.flatnonzero(known & _segment_members(protected["customer_type"], segment))
    in_population = values.iloc[rows]
    codes = np.where(in_population.isin(attribute.privileged).to_numpy(dtype=bool), _PRIVILEGED, _UNPRIVILEGED)
    n_privileged = int(codes.sum())
    n_unprivileged = len(codes) - n_privileged
    has_both_groups = n_privileged > 0 and n_unprivileged > 0
    return _Population(attribute=attribute.name, rows=rows, privileged_groups=list(attribute.privileged),
                       unprivileged_groups=sorted(set(in_population[codes == _UNPRIVILEGED])),
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


def _audit_entry(product_id: str, position: int, population: _Population, outcomes: _Outcomes,
                 criteria: _AuditCriteria) -> FairnessEntry:
    rows = population.rows
    recommendations = _group_rates(population, outcomes.recommended[rows, position], criteria)
    holdings = _group_rates(population, outcomes.held[rows, position], criteria)
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
                         recommendations=recommendations, holdings=holdings,
                         equal_opportunity_difference=equal_opportunity, held_out_positives=held_out_positives,
                         status=_entry_status(recommendations, holdings),
                         source_of_bias=_source_of_bias(recommendations, holdings))


def _group_rates(population: _Population, has_product: np.ndarray, criteria: _AuditCriteria) -> GroupRates:
    """AIF360's rates, disparate impact and statistical parity for one product and attribute."""
    n_positives = int(has_product.sum())
    if population.dataset is None:
        return GroupRates(n_positives, None, None, None, None, False, "insufficient_data",
                          note="one of the two groups has no customers in this product's segment")
    metric = BinaryLabelDatasetMetric(_with_labels(population.dataset, has_product), **_groups(population.attribute))
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 and x/0 are handled below
        disparate_impact = float(metric.disparate_impact())
    rate_privileged, rate_unprivileged = float(metric.base_rate(privileged=True)), float(metric.base_rate(privileged=False))
    p_value = _chance_of_difference(population, rate_privileged, rate_unprivileged)
    outside = _outside_band(disparate_impact, criteria.fairness_band)
    shortfall = _data_shortfall(population, n_positives, criteria)
    if shortfall is None and outside and p_value >= SIGNIFICANCE_LEVEL:
        shortfall = (f"outside the fairness band, but a difference this size could be chance "
                     f"(Fisher exact p = {p_value:.2f}, {n_positives} customers with the product)")
    flagged = shortfall is None and outside
    status: AuditStatus = "flagged" if flagged else "insufficient_data" if shortfall else "ok"
    return GroupRates(n_positives=n_positives, rate_privileged=rate_privileged, rate_unprivileged=rate_unprivileged,
                      disparate_impact=disparate_impact if math.isfinite(disparate_impact) else None,
                      statistical_parity_difference=float(metric.statistical_parity_difference()),
                      flagged=flagged, status=status, note=shortfall or _undefined_ratio_reason(disparate_impact),
                      p_value=round(p_value, 4))


def _chance_of_difference(population: _Population, rate_privileged: float, rate_unprivileged: float) -> float:
    """Fisher's exact test of the two groups' rates: how likely a gap at least this large is by chance."""
    privileged = round(rate_privileged * population.n_privileged)
    unprivileged = round(rate_unprivileged * population.n_unprivileged)
    table = [[privileged, population.n_privileged - privileged], [unprivileged, population.n_unprivileged - unprivileged]]
    return float(fisher_exact(table).pvalue)


def _data_shortfall(population: _Population, n_positives: int, criteria: _AuditCriteria) -> str | None:
    """Why the numbers cannot support a flag, or None when they can."""
    smaller_group = min(population.n_privileged, population.n_unprivileged)
    if smaller_group < criteria.min_group_size:
        return (f"groups too small to judge: {population.n_privileged} privileged, "
                f"{population.n_unprivileged} unprivileged (minimum {criteria.min_group_size})")
    if n_positives < criteria.min_positives:
        return f"too few customers with the product to judge: {n_positives} (minimum {criteria.min_positives})"
    return None


def _outside_band(disparate_impact: float, band: tuple[float, float]) -> bool:
    """Outside the four-fifths band; infinity (only the unprivileged get it) is outside too."""
    low, high = band
    return not math.isnan(disparate_impact) and not low <= disparate_impact <= high


def _undefined_ratio_reason(disparate_impact: float) -> str | None:
    if math.isnan(disparate_impact):
        return "disparate impact undefined: no customer in either group has the product"
    if math.isinf(disparate_impact):
        return "disparate impact infinite: no privileged customer has the product"
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


def _entry_status(recommendations: GroupRates, holdings: GroupRates) -> AuditStatus:
    """Flagged when either block is; otherwise whether the recommendations could be judged."""
    if recommendations.flagged or holdings.flagged:
        return "flagged"
    return recommendations.status


def _source_of_bias(recommendations: GroupRates, holdings: GroupRates) -> BiasSource | None:
    sources: dict[tuple[bool, bool], BiasSource] = {(True, False): "model", (False, True): "data", (True, True): "both"}
    return sources.get((recommendations.flagged, holdings.flagged))
