"""Tests of the individual counterfactual check and the AIF360 group audit."""
from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bias_detector import (
    CounterfactualResult,
    GroupOutcome,
    counterfactual_groups,
    difference_interval,
    group_audit,
    individual_bias_check,
    ratio_interval,
    top_k_change,
)
from business_rules import AdjustedProduct, RuleEffect, RuleOutcome
from settings import ProtectedAttribute

GENDER = ProtectedAttribute(name="gender", column="gender", privileged=["M"])
AGE = ProtectedAttribute(name="age", column="age_band", privileged=["30-44", "45-59"], is_model_input=True)
LOCATION = ProtectedAttribute(name="location", column="location", privileged=["New York", "San Francisco"],
                              is_model_input=True)
ATTRIBUTES = [GENDER, AGE, LOCATION]
AGE_BANDS = ["18-29", "30-44", "45-59", "60+"]
LOCATIONS = ["New York", "San Francisco", "Austin", "Denver"]


# ------------------------------------------------------------------------------------------
# Individual check
# ------------------------------------------------------------------------------------------

ORIGINAL_SCORES = {"mortgage": 0.60, "credit_card": 0.50, "savings": 0.40, "pension": 0.30, "loan": 0.20}
ORIGINAL_RANKED = ["mortgage", "credit_card", "savings"]


def _counterfactual(attribute: str, group: str, changes: dict[str, float], ranked: list[str] | None = None,
                    excluded: tuple[str, ...] = ()) -> CounterfactualResult:
    scores = {product: score + changes.get(product, 0.0) for product, score in ORIGINAL_SCORES.items()
              if product not in excluded}
    return CounterfactualResult(attribute=attribute, group=group, scores=scores, ranked=ranked or ORIGINAL_RANKED)


def test_small_score_changes_within_tolerance_pass():
    check = individual_bias_check(
        ORIGINAL_SCORES, ORIGINAL_RANKED, {"gender": "F"},
        [_counterfactual("gender", "M", {"mortgage": 0.02, "savings": -0.03})], tolerance=0.05)

    assert check.passed
    (gender,) = check.attributes
    assert gender.passed
    assert gender.groups_tested == ["M"]
    assert gender.max_score_change == pytest.approx(0.03)
    assert (gender.worst_group, gender.worst_product) == ("M", "savings")
    assert not gender.top_k_set_changed and not gender.top_k_order_changed


def test_score_change_beyond_tolerance_fails_and_names_the_worst_group_and_product():
    check = individual_bias_check(
        ORIGINAL_SCORES, ORIGINAL_RANKED, {"age": "30-44"},
        [_counterfactual("age", "18-29", {"mortgage": -0.01}), _counterfactual("age", "60+", {"credit_card": -0.08})],
        tolerance=0.05)

    assert not check.passed
    (age,) = check.attributes
    assert not age.passed and not age.top_k_set_changed
    assert age.groups_tested == ["18-29", "60+"]
    assert age.max_score_change == pytest.approx(0.08)
    assert (age.worst_group, age.worst_product) == ("60+", "credit_card")


def test_counterfactual_that_changes_the_top_k_set_fails_and_reports_it():
    changed = _counterfactual("location", "New York", {"pension": 0.12, "savings": -0.01},
                              ranked=["mortgage", "credit_card", "pension"])
    check = individual_bias_check(ORIGINAL_SCORES, ORIGINAL_RANKED, {"location": "Austin"},
                                  [_counterfactual("location", "Denver", {}), changed], tolerance=0.5)

    assert not check.passed
    (location,) = check.attributes
    assert location.top_k_set_changed and location.top_k_order_changed
    assert location.groups_changing_top_k == ["New York"]
    assert not location.passed  # although every score change is within the (large) tolerance
    assert (location.worst_group, location.worst_product) == ("New York", "pension")
    assert location.max_score_change == pytest.approx(0.12)


def test_order_change_within_the_same_set_is_reported_but_passes():
    swapped = _counterfactual("gender", "M", {"credit_card": 0.03, "mortgage": -0.02},
                              ranked=["credit_card", "mortgage", "savings"])
    check = individual_bias_check(ORIGINAL_SCORES, ORIGINAL_RANKED, {"gender": "F"}, [swapped], tolerance=0.05)

    (gender,) = check.attributes
    assert gender.top_k_order_changed and not gender.top_k_set_changed
    assert gender.passed and check.passed


def test_product_excluded_for_the_counterfactual_counts_as_score_zero():
    excluded = _counterfactual("age", "60+", {}, ranked=["credit_card", "savings", "pension"], excluded=("mortgage",))
    check = individual_bias_check(ORIGINAL_SCORES, ORIGINAL_RANKED, {"age": "30-44"}, [excluded], tolerance=0.05)

    (age,) = check.attributes
    assert age.max_score_change == pytest.approx(0.60)
    assert age.worst_product == "mortgage"
    assert not age.passed


SCORED = list(ORIGINAL_SCORES)
PENSION_BOOST = RuleEffect("retirement_planning", "boost", 1.5, "the customer is 55 or older")
TOO_YOUNG = RuleEffect("eligibility.min_age", "exclude", None, "the customer is younger than the minimum age of 21")
CATEGORY_FULL = RuleEffect("diversity.max_per_category", "exclude", None, "2 higher-ranked loans are in the list")


def _outcome(ranked: list[str], effects: dict[str, list[RuleEffect]] | None = None,
             excluded: dict[str, list[RuleEffect]] | None = None) -> RuleOutcome:
    effects = effects or {}
    return RuleOutcome([AdjustedProduct(p, ORIGINAL_SCORES[p], ORIGINAL_SCORES[p], effects.get(p, [])) for p in ranked],
                       excluded or {}, rule_effects={p: effects.get(p, []) for p in SCORED})


def _model(changes: dict[str, float] | None = None) -> np.ndarray:
    return np.array([ORIGINAL_SCORES[p] + (changes or {}).get(p, 0.0) for p in SCORED])


def test_a_top_k_change_names_the_rule_that_fired_for_the_group_only():
    original = _outcome(ORIGINAL_RANKED)
    older = _outcome(["pension", "mortgage", "credit_card"], {"pension": [PENSION_BOOST]},
                     {"savings": [CATEGORY_FULL]})

    change = top_k_change("60+", original, older, _model(), _model(), SCORED, 3)

    assert (change.entered, change.left) == (["pension"], ["savings"])
    assert [(c.rule, c.applies_to) for c in change.rules] == [("retirement_planning", "group")]  # not the cap
    assert change.model_score_change == 0.0
    assert change.reason == ("As 60+, pension would enter the top 3 and savings would leave it: bank rule "
                             "retirement_planning fires for 60+ only (the customer is 55 or older).")


def test_a_top_k_change_names_an_exclusion_of_the_customer_and_the_model_score_change():
    """The group's mortgage was boosted too; the customer's was not only because it was already out."""
    mortgage_boost = RuleEffect("home_purchase", "boost", 1.3, "the customer posted about buying a home")
    original = _outcome(["credit_card", "savings", "pension"], excluded={"mortgage": [TOO_YOUNG]})
    older = _outcome(ORIGINAL_RANKED, {"mortgage": [mortgage_boost]})

    change = top_k_change("30-44", original, older, _model(), _model({"pension": -0.04}), SCORED, 3)

    assert (change.entered, change.left) == (["mortgage"], ["pension"])
    assert [(c.rule, c.applies_to, c.reason) for c in change.rules] == [
        ("eligibility.min_age", "customer", TOO_YOUNG.reason)]
    assert change.model_score_change == pytest.approx(0.04)
    assert "fires for the customer only" in change.reason and "changes by up to 0.0400" in change.reason


def test_a_change_of_order_only_is_no_top_k_change_and_a_model_only_change_names_no_rule():
    original = _outcome(ORIGINAL_RANKED)
    assert top_k_change("M", original, _outcome(["credit_card", "mortgage", "savings"]), _model(), _model(),
                        SCORED, 3) is None

    change = top_k_change("Austin", original, _outcome(["mortgage", "credit_card", "pension"]), _model(),
                          _model({"pension": 0.15}), SCORED, 3)
    assert change.rules == [] and change.model_score_change == pytest.approx(0.15)
    assert change.reason.endswith(": the model's own score changes by up to 0.1500.")


def test_attribute_without_counterfactual_passes_explicitly():
    check = individual_bias_check(
        ORIGINAL_SCORES, ORIGINAL_RANKED, {"gender": None, "age": "30-44"},
        [_counterfactual("age", "60+", {"savings": 0.01})], tolerance=0.05)

    gender, age = check.attributes
    assert gender.attribute == "gender" and gender.original_group is None
    assert gender.groups_tested == [] and gender.passed
    assert gender.max_score_change == 0.0 and gender.worst_group is None
    assert "unknown" in gender.note
    assert age.note is None and age.passed
    assert check.passed and check.tolerance == 0.05


def test_counterfactual_groups_for_age_are_the_other_bands():
    assert sorted(counterfactual_groups(AGE, AGE_BANDS, "18-29")) == ["30-44", "45-59", "60+"]
    assert counterfactual_groups(AGE, AGE_BANDS, "30-44")[0] == "45-59"  # privileged groups first


def test_counterfactual_groups_for_location_keep_privileged_and_the_most_common_others():
    by_frequency = ["Austin", "Denver", "Boston", "Miami", "Seattle", "Chicago", "San Francisco", "New York", "Tulsa"]
    groups = counterfactual_groups(LOCATION, by_frequency, "Denver")

    assert groups == ["San Francisco", "New York", "Austin", "Boston", "Miami", "Seattle"]


def test_counterfactual_groups_are_empty_for_an_unknown_value_and_skip_missing_values():
    assert counterfactual_groups(GENDER, ["M", "F"], None) == []
    assert counterfactual_groups(GENDER, ["M", "F"], float("nan")) == []
    assert counterfactual_groups(GENDER, ["F", "", None, "M"], "F") == ["M"]


# ------------------------------------------------------------------------------------------
# Group audit: a synthetic bank whose recommendations and holdings are skewed on purpose
# ------------------------------------------------------------------------------------------

INDIVIDUALS_PER_CELL, ORGANIZATIONS_PER_LOCATION = 100, 80
N_INDIVIDUALS = INDIVIDUALS_PER_CELL * 2 * len(AGE_BANDS) * len(LOCATIONS)
N_ORGANIZATIONS = ORGANIZATIONS_PER_LOCATION * len(LOCATIONS)


def _population() -> pd.DataFrame:
    """Individuals in equal cells of gender x age band x location; organizations with a location only.

    Equal cells keep the attributes independent, so a skew injected on one of them leaves the
    disparate impact of the others at exactly 1 instead of at the mercy of sampling noise.
    """
    cells = pd.MultiIndex.from_product([["M", "F"], AGE_BANDS, LOCATIONS], names=["gender", "age_band", "location"])
    individuals = cells.to_frame(index=False).loc[np.repeat(np.arange(len(cells)), INDIVIDUALS_PER_CELL)]
    organizations = pd.DataFrame({"location": np.repeat(LOCATIONS, ORGANIZATIONS_PER_LOCATION),
                                  "gender": None, "age_band": None})
    customers = pd.concat([individuals.assign(customer_type="individual"),
                           organizations.assign(customer_type="organization")], ignore_index=True)
    customers.index = pd.Index([f"c{i:05d}" for i in range(len(customers))], name="customer_id")
    return customers


def _pairs_at_rates(rng: np.random.Generator, customers: pd.DataFrame, product_id: str,
                    rates: dict[str, float], column: str = "gender") -> pd.DataFrame:
    """Give ``product_id`` to exactly round(rate * size) customers, at random, of every cell.

    ``rates`` maps the values of ``column`` to their rate (0 for values not listed).
    """
    chosen = []
    for _, cell in customers.groupby(["customer_type", "gender", "age_band", "location"], dropna=False):
        rate = rates.get(cell[column].iloc[0], 0.0)
        chosen.extend(rng.choice(cell.index.to_numpy(), size=round(rate * len(cell)), replace=False))
    return pd.DataFrame({"customer_id": chosen, "product_id": product_id})


PRODUCTS = pd.DataFrame({
    "product_id": ["biased_card", "fair_savings", "skewed_history", "skewed_everywhere", "women_only_offer",
                   "rare_product", "business_loan"],
    "name": ["Card", "Savings", "History", "Everywhere", "Offer", "Rare", "Loan"],
    "category": ["cards", "savings", "loans", "loans", "cards", "cards", "loans"],
    "segment": ["individual", "both", "individual", "individual", "individual", "individual", "organization"],
})


@pytest.fixture(scope="module")
def bank() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(7)
    customers = _population()
    individuals = customers[customers["customer_type"] == "individual"]
    organizations = customers[customers["customer_type"] == "organization"]
    fair = {"M": 0.2, "F": 0.2}
    skewed = {"M": 0.3, "F": 0.1}
    recommended = pd.concat([
        _pairs_at_rates(rng, individuals, "biased_card", skewed),
        _pairs_at_rates(rng, customers, "fair_savings", {"individual": 0.2, "organization": 0.2}, "customer_type"),
        _pairs_at_rates(rng, individuals, "skewed_history", fair),
        _pairs_at_rates(rng, individuals, "skewed_everywhere", skewed),
        _pairs_at_rates(rng, individuals, "women_only_offer", {"F": 0.1}),
        pd.DataFrame({"customer_id": individuals.index[:3], "product_id": "rare_product"}),
        _pairs_at_rates(rng, organizations, "business_loan", {"organization": 0.3}, "customer_type"),
    ])
    holdings = pd.concat([
        _pairs_at_rates(rng, individuals, "biased_card", fair),
        _pairs_at_rates(rng, individuals, "fair_savings", fair),
        _pairs_at_rates(rng, individuals, "skewed_history", skewed),
        _pairs_at_rates(rng, individuals, "skewed_everywhere", skewed),
        _pairs_at_rates(rng, organizations, "business_loan", {"organization": 0.3}, "customer_type"),
    ])
    return {"customers": customers, "recommended": recommended, "holdings": holdings}


@pytest.fixture(scope="module")
def audit(bank):
    return group_audit(bank["recommended"], bank["holdings"], bank["customers"], ATTRIBUTES, PRODUCTS)


def _entry(audit, product_id: str, attribute: str):
    (entry,) = [e for e in audit.entries if e.product_id == product_id and e.attribute == attribute]
    return entry


def test_injected_bias_against_women_is_flagged_with_disparate_impact_of_one_third(audit):
    entry = _entry(audit, "biased_card", "gender")

    assert entry.status == "flagged"
    assert entry.recommendations.flagged
    assert entry.recommendations.disparate_impact == pytest.approx(1 / 3)
    interval = entry.recommendations.disparate_impact_interval
    assert interval.low < 1 / 3 < interval.high < 0.8  # the whole interval below the band
    parity = entry.recommendations.statistical_parity_interval
    assert parity.low < -0.2 < parity.high < 0
    assert entry.recommendations.statistical_parity_difference == pytest.approx(-0.2)
    assert entry.privileged_groups == ["M"] and entry.unprivileged_groups == ["F"]


def test_aif360_numbers_match_a_hand_computation(audit, bank):
    customers, recommended = bank["customers"], bank["recommended"]
    individuals = customers[customers["customer_type"] == "individual"]
    got_card = individuals.index.isin(recommended.loc[recommended["product_id"] == "biased_card", "customer_id"])
    is_man, is_woman = (individuals["gender"] == "M").to_numpy(), (individuals["gender"] == "F").to_numpy()
    rate_men, rate_women = got_card[is_man].mean(), got_card[is_woman].mean()

    entry = _entry(audit, "biased_card", "gender")
    assert (entry.n_privileged, entry.n_unprivileged) == (is_man.sum(), is_woman.sum())
    assert entry.recommendations.n_positives == got_card.sum()
    assert entry.recommendations.rate_privileged == pytest.approx(rate_men, abs=1e-12)
    assert entry.recommendations.rate_unprivileged == pytest.approx(rate_women, abs=1e-12)
    assert entry.recommendations.disparate_impact == pytest.approx(rate_women / rate_men, abs=1e-12)
    assert entry.recommendations.statistical_parity_difference == pytest.approx(rate_women - rate_men, abs=1e-12)


SKEWED_ON_PURPOSE = {"biased_card", "skewed_history", "skewed_everywhere", "women_only_offer"}


def test_only_the_injected_skews_are_flagged(audit):
    for entry in audit.entries:
        skewed = entry.attribute == "gender" and entry.product_id in SKEWED_ON_PURPOSE
        assert (entry.status == "flagged") == skewed, (entry.product_id, entry.attribute)
        assert (entry.source_of_bias is not None) == skewed
    fair = _entry(audit, "fair_savings", "gender")
    assert fair.status == "ok" and fair.recommendations.disparate_impact == pytest.approx(1.0)
    assert _entry(audit, "biased_card", "location").recommendations.disparate_impact == pytest.approx(1.0)


def test_model_bias_and_data_bias_are_told_apart(audit):
    model = _entry(audit, "biased_card", "gender")
    data = _entry(audit, "skewed_history", "gender")
    both = _entry(audit, "skewed_everywhere", "gender")

    assert model.source_of_bias == "model" and not model.holdings.flagged
    assert model.holdings.disparate_impact == pytest.approx(1.0)
    assert data.source_of_bias == "data" and data.status == "flagged"
    assert not data.recommendations.flagged and data.holdings.flagged
    assert data.holdings.disparate_impact == pytest.approx(1 / 3)
    assert both.source_of_bias == "both"


def test_too_few_positives_is_insufficient_data_not_flagged(audit):
    entry = _entry(audit, "rare_product", "gender")

    assert entry.recommendations.n_positives == 3
    assert entry.status == "insufficient_data" and not entry.recommendations.flagged
    assert "too few" in entry.recommendations.note


def test_small_groups_are_insufficient_data_not_flagged():
    customers = pd.DataFrame({"customer_type": "individual", "gender": ["F"] * 20 + ["M"] * 100},
                             index=[f"s{i}" for i in range(120)])
    recommended = pd.DataFrame({"customer_id": [f"s{i}" for i in range(1)] + [f"s{i}" for i in range(20, 50)],
                                "product_id": "card"})
    products = pd.DataFrame({"product_id": ["card"], "segment": ["individual"]})

    audit = group_audit(recommended, recommended.iloc[:0], customers, [GENDER], products, min_group_size=30)

    (entry,) = audit.entries
    assert (entry.n_privileged, entry.n_unprivileged) == (100, 20)
    assert entry.recommendations.disparate_impact == pytest.approx((1 / 20) / (30 / 100))
    assert entry.status == "insufficient_data" and not entry.recommendations.flagged
    assert "too small" in entry.recommendations.note


def _women_and_men(women: int, men: int) -> pd.DataFrame:
    """Individuals c0... (women first, then men), indexed by customer_id as the audit wants them."""
    return pd.DataFrame({"customer_type": "individual", "gender": ["F"] * women + ["M"] * men},
                        index=[f"c{i}" for i in range(women + men)])


def _card_audit(customers: pd.DataFrame, recommended: pd.DataFrame, **criteria):
    products = pd.DataFrame({"product_id": ["card"], "segment": ["individual"]})
    return group_audit(recommended, recommended.iloc[:0, :2], customers, [GENDER], products, **criteria)


def _chosen(first: int, count: int) -> list[str]:
    return [f"c{i}" for i in range(first, first + count)]


@pytest.mark.parametrize("women, men, status", [(4, 9, "inconclusive"), (20, 60, "flagged")])
def test_a_gap_outside_the_band_is_flagged_only_when_its_whole_interval_is(women, men, status):
    """4 against 9 of 200 each (DI 0.44) could be chance; 20 against 60 (DI 0.33) could not."""
    recommended = pd.DataFrame({"customer_id": _chosen(0, women) + _chosen(200, men), "product_id": "card"})

    (entry,) = _card_audit(_women_and_men(200, 200), recommended).entries

    rates = entry.recommendations
    assert rates.disparate_impact == pytest.approx(women / men)
    assert entry.status == rates.status == status and rates.flagged is (status == "flagged")
    interval = rates.disparate_impact_interval
    assert interval.low < rates.disparate_impact < interval.high
    assert (interval.high < 0.8) is (status == "flagged")
    assert (rates.p_value < 0.05) is (status == "flagged")  # Fisher's test, kept alongside, agrees here
    if status == "inconclusive":
        assert "could be chance" in rates.note and "[0.14, 1.42]" in rates.note


def test_katz_interval_of_the_risk_ratio_against_a_hand_computation():
    """20 of 200 against 60 of 200: log RR +- 1.96 * sqrt(1/20 - 1/200 + 1/60 - 1/200)."""
    spread = 1.959964 * math.sqrt(1 / 20 - 1 / 200 + 1 / 60 - 1 / 200)

    interval = ratio_interval(GroupOutcome(200, 20, 20), GroupOutcome(200, 60, 60))

    assert interval.low == pytest.approx(math.exp(math.log(1 / 3) - spread), rel=1e-5)
    assert interval.high == pytest.approx(math.exp(math.log(1 / 3) + spread), rel=1e-5)
    assert interval.note is None


@pytest.mark.parametrize("compared, reference, expected", [((56, 70), (48, 80), (0.0524, 0.3339)),
                                                           ((9, 10), (3, 10), (0.1705, 0.8090))])
def test_newcombe_interval_of_the_difference_matches_the_published_examples(compared, reference, expected):
    """Newcombe (1998), Statistics in Medicine 17:873, method 10 (hybrid score)."""
    (a, n), (b, m) = compared, reference

    interval = difference_interval(GroupOutcome(n, a, a), GroupOutcome(m, b, b))

    assert (interval.low, interval.high) == pytest.approx(expected, abs=5e-5)


@pytest.mark.parametrize("compared, reference", [((1, 40), (39, 40)), ((3, 1000), (900, 1000)), ((5, 5), (1, 5)),
                                                 ((17, 2900), (33, 2900)), ((0, 50), (7, 50)), ((7, 50), (0, 50))])
def test_intervals_cover_their_point_estimate(compared, reference):
    (a, n), (b, m) = compared, reference
    compared_sample, reference_sample = GroupOutcome(n, a, a), GroupOutcome(m, b, b)

    ratio = ratio_interval(compared_sample, reference_sample)
    difference = difference_interval(compared_sample, reference_sample)

    rate_ratio = a / n / (b / m) if b else math.inf
    assert ratio.low <= rate_ratio and (ratio.high is None or rate_ratio <= ratio.high)
    assert ratio.high is not None or b == 0
    assert difference.low <= a / n - b / m <= difference.high
    assert -1 <= difference.low and difference.high <= 1


def test_a_gap_on_groups_that_are_too_small_is_never_flagged():
    """2 of 40 women against 8 of 40 men (DI 0.25) is inconclusive; the same shares among 25 of each,
    below the minimum group size, are insufficient data."""
    recommended = pd.DataFrame({"customer_id": _chosen(0, 2) + _chosen(40, 8), "product_id": "card"})
    (just_enough,) = _card_audit(_women_and_men(40, 40), recommended).entries
    recommended = pd.DataFrame({"customer_id": _chosen(0, 2) + _chosen(25, 8), "product_id": "card"})
    (too_small,) = _card_audit(_women_and_men(25, 25), recommended).entries

    assert just_enough.recommendations.disparate_impact == pytest.approx(0.25)
    assert just_enough.status == "inconclusive" and not just_enough.recommendations.flagged
    assert just_enough.recommendations.disparate_impact_interval.high > 0.8
    assert too_small.status == "insufficient_data" and not too_small.recommendations.flagged
    assert "too small" in too_small.recommendations.note
    assert too_small.recommendations.disparate_impact_interval.high is not None  # reported all the same


def test_no_privileged_holder_leaves_the_interval_open_above_and_flags_only_a_clear_gap():
    """5 of 100 women against no man: an infinite DI whose interval reaches down to 0.62, inconclusive;
    50 of 500 against none is flagged."""
    few = _card_audit(_women_and_men(100, 100), pd.DataFrame({"customer_id": _chosen(0, 5), "product_id": "card"}))
    many = _card_audit(_women_and_men(500, 500), pd.DataFrame({"customer_id": _chosen(0, 50), "product_id": "card"}))

    for audit, status in ((few, "inconclusive"), (many, "flagged")):
        rates = audit.entries[0].recommendations
        assert rates.disparate_impact is None and rates.status == status
        assert rates.disparate_impact_interval.high is None
        assert "no upper bound" in rates.disparate_impact_interval.note
    assert few.entries[0].recommendations.disparate_impact_interval.low == pytest.approx(0.616, abs=1e-3)
    assert many.entries[0].recommendations.disparate_impact_interval.low > 1.25


def test_products_are_audited_over_their_own_segment(audit, bank):
    customers = bank["customers"]
    individual_product = _entry(audit, "biased_card", "location")
    organization_product = _entry(audit, "business_loan", "location")
    open_product = _entry(audit, "fair_savings", "location")

    assert individual_product.n_privileged + individual_product.n_unprivileged == N_INDIVIDUALS
    assert organization_product.n_privileged + organization_product.n_unprivileged == N_ORGANIZATIONS
    assert open_product.n_privileged + open_product.n_unprivileged == len(customers)
    organizations_gender = _entry(audit, "business_loan", "gender")
    assert organizations_gender.n_privileged == organizations_gender.n_unprivileged == 0
    assert organizations_gender.status == "insufficient_data"
    assert organizations_gender.recommendations.disparate_impact is None


def test_infinite_disparate_impact_is_flagged_as_none_with_a_reason(audit):
    entry = _entry(audit, "women_only_offer", "gender")

    assert entry.recommendations.rate_privileged == 0.0
    assert entry.recommendations.disparate_impact is None
    assert entry.recommendations.flagged and "infinite" in entry.recommendations.note


def test_audit_is_json_without_nan_and_summarises_the_flags(audit):
    document = audit.to_dict()
    json.dumps(document, allow_nan=False)

    summary = document["summary"]
    assert summary["entries"] == len(PRODUCTS) * len(ATTRIBUTES)
    assert summary["flagged"] == 4
    assert summary["flagged_by_source"] == {"model": 2, "data": 1, "both": 1}
    assert {(p["product_id"], p["attribute"]) for p in summary["flagged_pairs"]} == {
        ("biased_card", "gender"), ("skewed_history", "gender"), ("skewed_everywhere", "gender"),
        ("women_only_offer", "gender")}
    assert document["criteria"].items() >= {"fairness_band": [0.8, 1.25], "min_group_size": 30, "min_positives": 5,
                                            "confidence_level": 0.95}.items()
    assert document["criteria"]["exposure"].startswith("not measured")  # this bank's recommendations have no rank
    assert document["entries"][0]["recommendations"].keys() >= {
        "rate_privileged", "rate_unprivileged", "disparate_impact", "statistical_parity_difference", "flagged"}


def test_equal_opportunity_difference_against_a_hand_computed_value():
    customers = pd.DataFrame({"customer_type": "individual", "gender": ["M"] * 40 + ["F"] * 40},
                             index=[f"h{i}" for i in range(80)])
    men, women = list(customers.index[:40]), list(customers.index[40:])
    took_up = men[:10] + women[:8] + women[30:32]  # 10 men and 10 women took the product up
    recommended = men[:8] + women[:5] + men[20:25] + women[20:30]  # 8 of those men, 5 of those women
    pairs = sorted(set(took_up) | set(recommended))
    held_out = pd.DataFrame({"customer_id": pairs, "product_id": "card",
                             "recommended": [c in recommended for c in pairs],
                             "took_up": [c in took_up for c in pairs]})
    products = pd.DataFrame({"product_id": ["card", "loan"], "segment": ["individual", "individual"]})
    held_out_loan = pd.DataFrame({"customer_id": men[:3], "product_id": "loan", "recommended": True,
                                  "took_up": True})

    audit = group_audit(held_out.iloc[:0], held_out.iloc[:0], customers, [GENDER], products,
                        held_out=pd.concat([held_out, held_out_loan]))

    card, loan = audit.entries
    assert card.equal_opportunity_difference == pytest.approx(5 / 10 - 8 / 10)
    assert card.held_out_positives == 20
    assert loan.equal_opportunity_difference is None  # no woman took the loan up: no TPR for women


def test_protected_columns_may_be_named_after_the_attribute(audit, bank):
    by_name = bank["customers"].rename(columns={"age_band": "age"})

    renamed = group_audit(bank["recommended"], bank["holdings"], by_name, ATTRIBUTES, PRODUCTS)

    assert [asdict(e) for e in renamed.entries] == [asdict(e) for e in audit.entries]
    with pytest.raises(ValueError, match="age_band"):
        group_audit(bank["recommended"], bank["holdings"], by_name.drop(columns="age"), ATTRIBUTES, PRODUCTS)


def test_missing_customer_type_is_refused_with_the_column_name(bank):
    with pytest.raises(ValueError, match="customer_type"):
        group_audit(bank["recommended"], bank["holdings"], bank["customers"].drop(columns="customer_type"),
                    ATTRIBUTES, PRODUCTS)


def test_importing_aif360_is_silent_and_leaves_root_logging_unconfigured():
    """A fresh interpreter, since pytest attaches its own handlers to the root logger."""
    probe = "import logging, bias_detector; print(logging.getLogger().handlers, logging.getLogger().level)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, check=True)

    assert "tensorflow" not in done.stderr and "WARNING" not in done.stderr
    assert done.stdout.strip() == f"[] {logging.WARNING}"


# ------------------------------------------------------------------------------------------
# Intersections: every cell of two attributes against the rest of the product's population
# ------------------------------------------------------------------------------------------

def _gender_by_age(cells: dict[tuple[str, str], int]) -> pd.DataFrame:
    """Individuals in the given (gender, age band) cells, customer ids g0... in the cells' order."""
    genders = [gender for (gender, _), size in cells.items() for _ in range(size)]
    ages = [age for (_, age), size in cells.items() for _ in range(size)]
    return pd.DataFrame({"customer_type": "individual", "gender": genders, "age_band": ages},
                        index=[f"g{i}" for i in range(len(genders))])


def _given_to(customers: pd.DataFrame, product_id: str, counts: dict[tuple[str, str], int]) -> pd.DataFrame:
    """The first ``count`` customers of each (gender, age band) cell get the product."""
    chosen = [customer for (gender, age), count in counts.items()
              for customer in customers.index[(customers["gender"] == gender) & (customers["age_band"] == age)][:count]]
    return pd.DataFrame({"customer_id": chosen, "product_id": product_id})


@pytest.fixture(scope="module")
def intersections():
    """Women over 60 are a cell of 10 who all get the card (1 in 5 of everyone else does); women aged
    18-29 get the loan at 5% against 23% for everyone else, men at 22.5% against 14%."""
    sizes = {("M", "18-29"): 200, ("M", "60+"): 200, ("F", "18-29"): 200, ("F", "60+"): 10}
    customers = _gender_by_age(sizes)
    recommended = pd.concat([
        _given_to(customers, "card", {("M", "18-29"): 40, ("M", "60+"): 40, ("F", "18-29"): 40, ("F", "60+"): 10}),
        _given_to(customers, "loan", {("M", "18-29"): 45, ("M", "60+"): 45, ("F", "18-29"): 10, ("F", "60+"): 3}),
    ])
    products = pd.DataFrame({"product_id": ["card", "loan"], "segment": ["individual", "individual"]})
    return group_audit(recommended, recommended.iloc[:0], customers, [GENDER, AGE], products)


def _cell(audit, product_id: str, gender: str, age: str):
    (entry,) = [e for e in audit.intersections if e.product_id == product_id and e.group == {"gender": gender,
                                                                                              "age": age}]
    return entry


def test_every_cell_of_the_attribute_pair_is_audited_against_the_rest(intersections):
    cells = {(e.product_id, e.group["gender"], e.group["age"]) for e in intersections.intersections}

    assert cells == {(product, gender, age) for product in ("card", "loan") for gender in "MF"
                     for age in ("18-29", "60+")}
    young_women = _cell(intersections, "loan", "F", "18-29")
    assert (young_women.n_group, young_women.n_rest) == (200, 410)
    assert young_women.recommendations.rate_unprivileged == pytest.approx(10 / 200)
    assert young_women.recommendations.rate_privileged == pytest.approx(93 / 410)
    assert young_women.recommendations.disparate_impact == pytest.approx((10 / 200) / (93 / 410))
    assert young_women.status == "flagged" and young_women.source_of_bias == "model"
    assert young_women.recommendations.disparate_impact_interval.high < 0.8
    assert young_women.recommendations.p_value is None


def test_a_small_intersection_is_insufficient_data_however_large_its_gap(intersections):
    older_women = _cell(intersections, "card", "F", "60+")

    assert older_women.n_group == 10
    assert older_women.recommendations.disparate_impact == pytest.approx(1.0 / (120 / 600))
    assert older_women.status == "insufficient_data" and not older_women.recommendations.flagged
    assert "too small" in older_women.recommendations.note


def test_intersections_are_listed_and_counted_apart_from_the_entries(intersections):
    document = intersections.to_dict()
    json.dumps(document, allow_nan=False)

    assert len(document["entries"]) == 2 * 2 and "group" not in document["entries"][0]
    assert len(document["intersections"]) == 2 * 4
    statuses = {(e["product_id"], e["group"]["gender"], e["group"]["age"]): e["status"]
                for e in document["intersections"]}
    assert statuses == {("card", "F", "18-29"): "ok", ("card", "F", "60+"): "insufficient_data",
                        ("card", "M", "18-29"): "ok", ("card", "M", "60+"): "ok",
                        ("loan", "F", "18-29"): "flagged", ("loan", "F", "60+"): "insufficient_data",
                        ("loan", "M", "18-29"): "inconclusive", ("loan", "M", "60+"): "inconclusive"}
    assert document["summary"]["intersections"] == {
        "entries": 8, "flagged": 1, "inconclusive": 2, "insufficient_data": 2, "flagged_by_source": {"model": 1},
        "flagged_by_attributes": {"gender x age": 1}}


# ------------------------------------------------------------------------------------------
# Exposure: where in the lists a group finds a product
# ------------------------------------------------------------------------------------------

def test_same_rate_but_always_first_against_always_third_is_an_exposure_disparity():
    """50 of 200 women and 50 of 200 men get the card: men first in their lists, women third."""
    recommended = pd.DataFrame({"customer_id": _chosen(0, 50) + _chosen(200, 50), "product_id": "card",
                                "rank": [3] * 50 + [1] * 50})

    (entry,) = _card_audit(_women_and_men(200, 200), recommended).entries

    assert entry.recommendations.disparate_impact == pytest.approx(1.0) and entry.recommendations.status == "ok"
    exposure = entry.exposure
    assert (exposure.privileged.mean_exposure, exposure.unprivileged.mean_exposure) == pytest.approx((0.25, 0.125))
    assert exposure.disparity == pytest.approx(0.5)
    assert exposure.disparity_interval.low < 0.5 < exposure.disparity_interval.high < 0.8
    assert exposure.status == "flagged" and exposure.flagged
    assert entry.status == "flagged" and entry.source_of_bias == "model"
    assert (exposure.rank_1_slots, exposure.top_3_slots) == (50, 100)
    assert (exposure.privileged.rank_1_share, exposure.unprivileged.rank_1_share) == (1.0, 0.0)
    assert (exposure.privileged.top_3_share, exposure.unprivileged.top_3_share) == (0.5, 0.5)


def test_exposure_shares_of_each_group_add_up_to_the_whole():
    rng = np.random.default_rng(3)
    chosen = rng.choice(1000, size=400, replace=False)
    recommended = pd.DataFrame({"customer_id": [f"c{i}" for i in chosen], "product_id": "card",
                                "rank": rng.integers(1, 6, size=400)})

    (entry,) = _card_audit(_women_and_men(300, 700), recommended).entries

    exposure = entry.exposure
    groups = (exposure.privileged, exposure.unprivileged)
    assert sum(g.population_share for g in groups) == pytest.approx(1.0)
    assert sum(g.rank_1_share for g in groups) == pytest.approx(1.0)
    assert sum(g.top_3_share for g in groups) == pytest.approx(1.0)
    assert exposure.rank_1_slots == (recommended["rank"] == 1).sum()
    assert exposure.top_3_slots == (recommended["rank"] <= 3).sum()
    women = recommended["customer_id"].isin(_chosen(0, 300))
    assert exposure.unprivileged.rank_1_share == pytest.approx((women & (recommended["rank"] == 1)).sum()
                                                               / exposure.rank_1_slots)
    discount = 1 / np.log2(recommended["rank"] + 1)
    assert exposure.unprivileged.mean_exposure == pytest.approx(discount[women].sum() / 300)
    assert exposure.privileged.mean_exposure == pytest.approx(discount[~women].sum() / 700)


def test_recommendations_without_ranks_are_audited_without_exposure(audit):
    assert all(entry.exposure is None for entry in audit.entries)
    assert not audit.exposure_measured


def test_a_rank_that_is_not_a_place_in_a_list_is_refused():
    recommended = pd.DataFrame({"customer_id": ["c0"], "product_id": "card", "rank": [0]})

    with pytest.raises(ValueError, match="rank"):
        _card_audit(_women_and_men(1, 1), recommended)


# ------------------------------------------------------------------------------------------
# The whole document: every figure within its interval, and JSON without NaN or infinity
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ranked_audit(bank):
    """The synthetic bank with a place in the list for every recommendation, so every block is filled,
    including its corner cases: an infinite ratio, empty groups, a product nobody gets, small cells."""
    rng = np.random.default_rng(11)
    recommended = bank["recommended"].assign(rank=lambda frame: rng.integers(1, 6, size=len(frame)))
    products = pd.concat([PRODUCTS, pd.DataFrame({"product_id": ["nobody_gets_it"], "name": ["None"],
                                                  "category": ["cards"], "segment": ["both"]})])
    return group_audit(recommended, bank["holdings"], bank["customers"], ATTRIBUTES, products)


def _ratio_blocks(audit):
    for entry in [*audit.entries, *audit.intersections]:
        yield entry.recommendations.disparate_impact, entry.recommendations.disparate_impact_interval
        yield entry.holdings.disparate_impact, entry.holdings.disparate_impact_interval
        if entry.exposure is not None:
            yield entry.exposure.disparity, entry.exposure.disparity_interval


def test_every_ratio_of_the_audit_lies_within_its_interval(ranked_audit):
    checked = 0
    for estimate, interval in _ratio_blocks(ranked_audit):
        if estimate is not None:
            assert interval.low <= estimate and (interval.high is None or estimate <= interval.high)
            checked += 1
    assert checked > 100
    for entry in ranked_audit.entries:
        rates, interval = entry.recommendations, entry.recommendations.statistical_parity_interval
        if rates.statistical_parity_difference is not None:
            assert interval.low <= rates.statistical_parity_difference <= interval.high


def test_ranked_audit_is_json_without_nan_with_none_and_a_note_where_undefined(ranked_audit):
    document = ranked_audit.to_dict()
    text = json.dumps(document, allow_nan=False)

    assert json.loads(text)["criteria"]["exposure"].startswith("1/log2(rank + 1)")
    offer = next(e for e in document["entries"]
                 if (e["product_id"], e["attribute"]) == ("women_only_offer", "gender"))
    assert offer["recommendations"]["disparate_impact"] is None
    assert offer["recommendations"]["disparate_impact_interval"]["high"] is None
    assert offer["recommendations"]["disparate_impact_interval"]["note"]
    assert offer["exposure"]["disparity"] is None and "infinite" in offer["exposure"]["note"]
    nobody = next(e for e in document["entries"] if (e["product_id"], e["attribute"]) == ("nobody_gets_it", "gender"))
    assert nobody["recommendations"]["disparate_impact_interval"] == {
        "low": None, "high": None, "note": "undefined: neither group has any"}
    assert nobody["exposure"]["privileged"]["rank_1_share"] is None
    loan = next(e for e in document["entries"] if (e["product_id"], e["attribute"]) == ("business_loan", "gender"))
    assert loan["exposure"] is None and loan["recommendations"]["disparate_impact_interval"]["low"] is None
    assert document["intersections"] and document["summary"]["intersections"]["entries"] == len(
        document["intersections"])
