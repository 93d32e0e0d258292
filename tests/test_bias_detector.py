"""Tests of the individual counterfactual check and the AIF360 group audit."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bias_detector import (
    CounterfactualResult,
    counterfactual_groups,
    group_audit,
    individual_bias_check,
)
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


@pytest.mark.parametrize("women, men, flagged", [(4, 9, False), (20, 60, True)])
def test_a_gap_outside_the_band_is_flagged_only_when_it_is_unlikely_to_be_chance(women, men, flagged):
    """4 against 9 of 200 each (DI 0.44) could be chance; 20 against 60 (DI 0.33) could not."""
    customers = pd.DataFrame({"customer_type": "individual", "gender": ["F"] * 200 + ["M"] * 200},
                             index=[f"c{i}" for i in range(400)])
    chosen = [f"c{i}" for i in range(women)] + [f"c{200 + i}" for i in range(men)]
    recommended = pd.DataFrame({"customer_id": chosen, "product_id": "card"})
    products = pd.DataFrame({"product_id": ["card"], "segment": ["individual"]})

    (entry,) = group_audit(recommended, recommended.iloc[:0], customers, [GENDER], products).entries

    rates = entry.recommendations
    assert rates.disparate_impact == pytest.approx(women / men) and rates.flagged is flagged
    assert (rates.p_value < 0.05) is flagged
    if not flagged:
        assert entry.status == "insufficient_data" and "could be chance" in rates.note


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
    assert document["criteria"] == {"fairness_band": [0.8, 1.25], "min_group_size": 30, "min_positives": 5}
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
